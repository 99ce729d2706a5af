#include <framestage/frame_arena.hpp>
#include <framestage/host_backend.hpp>

#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <latch>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace framestage {

// Failures print "grew", not the enum's bytes.
[[maybe_unused]] static void PrintTo(FrameArena::Resize resize, std::ostream* os) {
  constexpr const char* kNames[] = {"none", "grew", "trimmed"};
  *os << kNames[static_cast<int>(resize)];
}

namespace {

using testing::throws_error;
using Resize = FrameArena::Resize;

constexpr std::uint64_t kSeed = 0x6172656e61ULL;  // "arena"
constexpr std::size_t kKiB = std::size_t{1} << 10;
constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::uint32_t kTrimAfter = 3;

// Bytes that differ per allocation (`tag`) and per position, so a shifted, overlapping or lost
// write shows up as a wrong byte.
std::byte pattern(std::uint64_t tag, std::size_t i) {
  return static_cast<std::byte>((tag * 131 + i * 7 + 1) & 0xff);
}

// One allocation a test made, and the tag of the pattern written into it.
struct Written {
  std::byte* host;
  std::byte* device;
  std::size_t bytes;
  std::uint64_t tag;
};

Written write_pattern(FrameArena::Allocation a, std::size_t bytes, std::uint64_t tag) {
  for (std::size_t i = 0; i < bytes; ++i)
    a.host[i] = pattern(tag, i);
  return {a.host, a.device, bytes, tag};
}

::testing::AssertionResult intact(const Written& w) {
  for (std::size_t i = 0; i < w.bytes; ++i) {
    if (w.host[i] != pattern(w.tag, i)) {
      return ::testing::AssertionFailure()
             << "allocation " << w.tag << " (" << w.bytes << " bytes): byte " << i << " is "
             << std::to_integer<int>(w.host[i]) << ", wrote "
             << std::to_integer<int>(pattern(w.tag, i));
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult all_intact(const std::vector<Written>& all) {
  for (const auto& w : all) {
    if (auto r = intact(w); !r) return r;
  }
  return ::testing::AssertionSuccess();
}

// No two host ranges share a byte.
::testing::AssertionResult disjoint(std::vector<Written> all) {
  std::sort(all.begin(), all.end(),
            [](const Written& a, const Written& b) { return a.host < b.host; });
  for (std::size_t i = 1; i < all.size(); ++i) {
    if (all[i - 1].host + all[i - 1].bytes > all[i].host) {
      return ::testing::AssertionFailure()
             << "allocations " << all[i - 1].tag << " and " << all[i].tag << " overlap";
    }
  }
  return ::testing::AssertionSuccess();
}

// locate() finds the allocation, and its device address sits at the same offset in the same
// block's device mirror as its host address in the host block.
::testing::AssertionResult mirrored(const FrameArena& arena, const Written& w) {
  const auto loc = arena.locate(w.host, w.bytes);
  if (!loc) return ::testing::AssertionFailure() << "locate() misses allocation " << w.tag;
  const auto block = arena.block(loc->block);
  if (block.host + loc->offset != w.host || block.device + loc->offset != w.device) {
    return ::testing::AssertionFailure()
           << "allocation " << w.tag << " in block " << loc->block << ": host offset "
           << (w.host - block.host) << ", device offset " << (w.device - block.device)
           << ", locate() offset " << loc->offset;
  }
  return ::testing::AssertionSuccess();
}

bool aligned(const void* p, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

// Either every allocation fits the main block (fail), or a small arena spills into overflow
// blocks (grow): the properties below must hold in both.
struct Setup {
  const char* name;
  OverflowPolicy policy;
  std::size_t capacity_bytes;
};
constexpr Setup kFits{"fail_fits", OverflowPolicy::fail, 4 * kMiB};
constexpr Setup kOverflows{"grow_overflows", OverflowPolicy::grow, 512};
// Big enough for per-thread chunks, with a tail that is handed out exactly.
constexpr Setup kChunked{"fail_chunked", OverflowPolicy::fail, 2304 * 1024};

std::string setup_name(const ::testing::TestParamInfo<Setup>& param_info) {
  return param_info.param.name;
}
void PrintTo(const Setup& setup, std::ostream* os) {
  *os << setup.name;
}

// ---------------------------------------------------------------------------------------------
// Placement: alignment, mirroring, no overlap.

class ArenaAlignment : public ::testing::TestWithParam<std::tuple<Setup, std::size_t>> {
 protected:
  HostBackend backend;
};

TEST_P(ArenaAlignment, HostAndDeviceAddressesAreAlignedAndMirrored) {
  const auto [setup, alignment] = GetParam();
  FrameArena arena(backend, setup.capacity_bytes, setup.policy, "arena", "raise arena_bytes");
  std::vector<Written> all;
  std::uint64_t tag = 0;
  for (std::size_t size : {1, 3, 17, 100, 255, 1, 64, 300, 5, 129, 2, 256, 33, 7, 200, 16}) {
    // A 1-byte, 1-aligned allocation first, so the head never sits on a lucky boundary.
    all.push_back(write_pattern(arena.allocate(1, 1), 1, tag++));
    const auto a = arena.allocate(size, alignment);
    EXPECT_TRUE(aligned(a.host, alignment)) << size << " bytes at host " << a.host;
    EXPECT_TRUE(aligned(a.device, alignment)) << size << " bytes at device " << a.device;
    all.push_back(write_pattern(a, size, tag++));
  }
  for (const auto& w : all)
    EXPECT_TRUE(mirrored(arena, w));
  EXPECT_TRUE(all_intact(all));
  EXPECT_TRUE(disjoint(all));
  EXPECT_EQ(arena.overflowed(), setup.policy == OverflowPolicy::grow);
}

INSTANTIATE_TEST_SUITE_P(Arena, ArenaAlignment,
                         ::testing::Combine(::testing::Values(kFits, kOverflows),
                                            ::testing::Values(1, 2, 4, 8, 16, 32, 64, 128, 256)),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param).name) + "_align" +
                                  std::to_string(std::get<1>(param_info.param));
                         });

class ArenaSetups : public ::testing::TestWithParam<Setup> {
 protected:
  HostBackend backend;
};

TEST_P(ArenaSetups, RandomAllocationsNeverOverlap) {
  const std::uint64_t seed = kSeed;
  SCOPED_TRACE("seed " + std::to_string(seed));
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);
  FrameArena arena(backend, GetParam().capacity_bytes, GetParam().policy, "arena", "-");
  std::vector<Written> all;
  for (std::uint64_t tag = 0; tag < 600; ++tag) {
    const std::size_t bytes = 1 + rng() % 300;
    const std::size_t alignment = std::size_t{1} << (rng() % 9);
    all.push_back(write_pattern(arena.allocate(bytes, alignment), bytes, tag));
  }
  EXPECT_TRUE(all_intact(all));
  EXPECT_TRUE(disjoint(all));
  for (const auto& w : all)
    ASSERT_TRUE(mirrored(arena, w));
}

// 8 threads allocate at once, each writing its own pattern; TSan checks the synchronisation,
// the contents check that no two threads were handed the same bytes.
TEST_P(ArenaSetups, ConcurrentAllocationsAreDistinctAndIntact) {
  constexpr std::size_t kThreads = 8;
  constexpr std::size_t kPerThread = 2000;
  SCOPED_TRACE("seed " + std::to_string(kSeed) + " + thread index");
  RecordProperty("seed", std::to_string(kSeed));
  FrameArena arena(backend, GetParam().capacity_bytes, GetParam().policy, "arena", "-");
  std::vector<std::vector<Written>> per_thread(kThreads);
  std::vector<std::size_t> misses(kThreads, 0);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(kSeed + t);
      auto& mine = per_thread[t];
      mine.reserve(kPerThread);
      start.arrive_and_wait();
      for (std::size_t i = 0; i < kPerThread; ++i) {
        const std::size_t bytes = 1 + rng() % 64;
        const std::size_t alignment = std::size_t{1} << (rng() % 7);  // 1..64: both paths
        mine.push_back(write_pattern(arena.allocate(bytes, alignment), bytes, t * kPerThread + i));
        if (!arena.locate(mine.back().host, bytes)) ++misses[t];
      }
    });
  }
  for (auto& thread : threads)
    thread.join();

  std::vector<Written> all;
  for (std::size_t t = 0; t < kThreads; ++t) {
    EXPECT_EQ(misses[t], 0u) << "thread " << t << ": locate() missed its own allocations";
    all.insert(all.end(), per_thread[t].begin(), per_thread[t].end());
  }
  EXPECT_TRUE(all_intact(all));
  EXPECT_TRUE(disjoint(all));
  for (const auto& w : all)
    ASSERT_TRUE(mirrored(arena, w));
  EXPECT_EQ(arena.overflowed(), GetParam().policy == OverflowPolicy::grow);
}

INSTANTIATE_TEST_SUITE_P(Arena, ArenaSetups, ::testing::Values(kFits, kOverflows, kChunked),
                         setup_name);

// ---------------------------------------------------------------------------------------------
// Accounting and lookup.

class FrameArenaTest : public ::testing::Test {
 protected:
  HostBackend backend;
};

// One thread filling several arenas in turn (the frames of several coordinators) keeps a chunk
// in each, instead of claiming a new chunk at every switch and wasting the arenas.
TEST_F(FrameArenaTest, AThreadAlternatingBetweenArenasKeepsAChunkInEach) {
  FrameArena a(backend, kChunked.capacity_bytes, OverflowPolicy::fail, "a", "-");
  FrameArena b(backend, kChunked.capacity_bytes, OverflowPolicy::fail, "b", "-");
  std::byte* previous_a = nullptr;
  for (int i = 0; i < 500; ++i) {
    std::byte* next_a = a.allocate(16, 16).host;
    if (previous_a != nullptr) {
      ASSERT_EQ(next_a, previous_a + 16) << "allocation " << i;
    }
    previous_a = next_a;
    (void)b.allocate(16, 16);
  }
  EXPECT_LE(a.used_bytes(), FrameArena::kChunkBytes);
  EXPECT_LE(b.used_bytes(), FrameArena::kChunkBytes);
}

// In an arena large enough for per-thread chunks, a thread's unused chunk bytes are not an
// allocation: staging past what it was handed out stays misuse.
TEST_F(FrameArenaTest, LocateRejectsTheUnusedRestOfTheCallersChunk) {
  FrameArena arena(backend, kChunked.capacity_bytes, OverflowPolicy::fail, "arena", "-");
  const auto a = arena.allocate(32, 16);
  const auto b = arena.allocate(48, 16);
  EXPECT_EQ(b.host, a.host + 32) << "a thread's small allocations follow each other";
  EXPECT_TRUE(arena.locate(a.host, 80).has_value());
  EXPECT_FALSE(arena.locate(a.host, 81).has_value());
  EXPECT_FALSE(arena.locate(b.host + 48, 16).has_value());
  EXPECT_GE(arena.used_bytes(), 80u);
  EXPECT_LE(arena.used_bytes(), FrameArena::kChunkBytes);
  (void)arena.reset(kChunked.capacity_bytes, 16);
  EXPECT_FALSE(arena.locate(a.host, 16).has_value()) << "a reset retires the thread's chunk";
  EXPECT_EQ(arena.allocate(16, 16).host, a.host);
}

TEST_F(FrameArenaTest, UsedAndHighWaterBytesCountGranulesAcrossFrames) {
  FrameArena arena(backend, 4 * kKiB, OverflowPolicy::fail, "arena", "-");
  const std::byte* base = arena.block(0).host;
  EXPECT_EQ(arena.used_bytes(), 0u);
  EXPECT_EQ(arena.allocate(1, 1).host, base);
  EXPECT_EQ(arena.used_bytes(), 16u);  // one granule
  EXPECT_EQ(arena.allocate(20, 16).host, base + 16);
  EXPECT_EQ(arena.used_bytes(), 48u);
  EXPECT_EQ(arena.allocate(8, 64).host, base + 64);
  EXPECT_EQ(arena.used_bytes(), 80u);
  EXPECT_EQ(arena.block(0).used, 80u);
  EXPECT_EQ(arena.high_water_bytes(), 80u);

  EXPECT_EQ(arena.reset(4 * kKiB, kTrimAfter), Resize::none);
  EXPECT_EQ(arena.used_bytes(), 0u);
  EXPECT_EQ(arena.high_water_bytes(), 80u);
  EXPECT_EQ(arena.allocate(32, 16).host, base) << "reset() makes every byte available again";
  EXPECT_EQ(arena.used_bytes(), 32u);
  EXPECT_EQ(arena.high_water_bytes(), 80u);
  (void)arena.allocate(200, 8);
  EXPECT_EQ(arena.used_bytes(), 240u);
  EXPECT_EQ(arena.high_water_bytes(), 240u);
}

TEST_F(FrameArenaTest, LocateFindsAllocationsAndRejectsRangesOutsideThisFramesUse) {
  FrameArena arena(backend, 4 * kKiB, OverflowPolicy::fail, "arena", "-");
  const auto a = arena.allocate(40, 16);  // [0, 48)
  const auto b = arena.allocate(24, 16);  // [48, 80)
  const std::byte* base = arena.block(0).host;
  ASSERT_EQ(b.host, base + 48);

  const auto expect_at = [&](const void* p, std::size_t bytes, std::size_t offset) {
    const auto loc = arena.locate(p, bytes);
    ASSERT_TRUE(loc.has_value()) << "offset " << offset << ", " << bytes << " bytes";
    EXPECT_EQ(loc->block, 0u);
    EXPECT_EQ(loc->offset, offset);
  };
  expect_at(a.host, 40, 0);
  expect_at(b.host, 24, 48);
  expect_at(b.host + 10, 5, 58);
  expect_at(a.host + 40, 40, 40);  // ends exactly at the used end

  std::uint64_t elsewhere = 0;
  EXPECT_FALSE(arena.locate(&elsewhere, sizeof elsewhere)) << "outside the arena";
  EXPECT_FALSE(arena.locate(base + 80, 1)) << "first byte past the used end";
  EXPECT_FALSE(arena.locate(base + 2 * kKiB, 16)) << "inside the block but never allocated";
  EXPECT_FALSE(arena.locate(b.host, 64)) << "straddles the used end";
  EXPECT_FALSE(arena.locate(a.host, 81)) << "longer than everything used";
}

TEST_F(FrameArenaTest, ConstructionRoundsCapacityToGranulesAndRejectsZero) {
  FrameArena arena(backend, 100, OverflowPolicy::fail, "arena", "-");
  EXPECT_EQ(arena.capacity_bytes(), 112u);
  EXPECT_EQ(arena.block_count(), 1u);
  EXPECT_EQ(arena.block(0).capacity, 112u);
  EXPECT_TRUE(aligned(arena.block(0).host, FrameArena::kMaxAlignment));
  EXPECT_TRUE(aligned(arena.block(0).device, FrameArena::kMaxAlignment));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "block 1 of 1", [&] { (void)arena.block(1); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "capacity must be > 0", [&] {
    FrameArena empty(backend, 0, OverflowPolicy::fail, "descriptor table", "-");
  }));
}

// ---------------------------------------------------------------------------------------------
// OverflowPolicy::fail.

// A request that cannot be served, made after 64 bytes of a 256-byte arena are in use.
struct FailingRequest {
  const char* name;
  std::size_t bytes;
  std::size_t alignment;
};

void PrintTo(const FailingRequest& request, std::ostream* os) {
  *os << request.name;
}

class ArenaFailPolicy : public ::testing::TestWithParam<FailingRequest> {
 protected:
  HostBackend backend;
};

TEST_P(ArenaFailPolicy, OverflowThrowsOutOfMemoryAndKeepsEarlierAllocations) {
  const auto request = GetParam();
  const std::string remedy = "raise Config::arena_bytes";
  FrameArena arena(backend, 256, OverflowPolicy::fail, "arena", remedy);
  const Written earlier = write_pattern(arena.allocate(64, 16), 64, 1);

  const auto overflow = [&] { (void)arena.allocate(request.bytes, request.alignment); };
  const std::vector<std::string> fragments{"arena overflow",
                                           std::to_string(request.bytes) + " bytes",
                                           "capacity 256 bytes", "64 used this frame", remedy};
  for (const auto& fragment : fragments) {
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, fragment, overflow));
  }

  EXPECT_TRUE(intact(earlier));
  EXPECT_EQ(arena.used_bytes(), 64u);
  EXPECT_FALSE(arena.overflowed());
  // Everything the failed request did not take is still there, to the last byte.
  const auto rest = arena.allocate(192, 16);
  EXPECT_EQ(rest.host, arena.block(0).host + 64);
  const Written last = write_pattern(rest, 192, 2);
  EXPECT_TRUE(intact(earlier));
  EXPECT_TRUE(intact(last));
  EXPECT_EQ(arena.used_bytes(), 256u);
}

INSTANTIATE_TEST_SUITE_P(Arena, ArenaFailPolicy,
                         ::testing::Values(FailingRequest{"larger_than_capacity", 1000, 16},
                                           FailingRequest{"larger_than_what_is_left", 200, 8},
                                           FailingRequest{"aligned_past_the_end", 200, 256}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

// Arguments the contract forbids, under either policy.
struct BadRequest {
  const char* name;
  std::size_t bytes;
  std::size_t alignment;
  const char* fragment;
};

void PrintTo(const BadRequest& request, std::ostream* os) {
  *os << request.name;
}

class ArenaMisuse : public ::testing::TestWithParam<BadRequest> {
 protected:
  HostBackend backend;
};

// Alignments that are not powers of two (0, 3, 12 included, which the inlined fast path once
// served) are misuse and take no bytes.
TEST_P(ArenaMisuse, BadArgumentsThrowMisuseAndTakeNothing) {
  const auto request = GetParam();
  for (const auto policy : {OverflowPolicy::fail, OverflowPolicy::grow}) {
    SCOPED_TRACE(std::string("policy ") + std::string(to_string(policy)));
    FrameArena arena(backend, 4 * kKiB, policy, "arena", "-");
    EXPECT_TRUE(throws_error(ErrorCategory::misuse, request.fragment,
                             [&] { (void)arena.allocate(request.bytes, request.alignment); }));
    EXPECT_EQ(arena.used_bytes(), 0u);
    EXPECT_EQ(arena.block_count(), 1u);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Arena, ArenaMisuse,
    ::testing::Values(BadRequest{"zero_bytes", 0, 16, "allocation of 0 bytes"},
                      BadRequest{"zero_bytes_large_alignment", 0, 64, "allocation of 0 bytes"},
                      BadRequest{"alignment_0", 8, 0, "power of two <= 256, got 0"},
                      BadRequest{"alignment_3", 8, 3, "power of two <= 256, got 3"},
                      BadRequest{"alignment_12", 8, 12, "power of two <= 256, got 12"},
                      BadRequest{"alignment_512", 8, 512, "power of two <= 256, got 512"},
                      BadRequest{"alignment_4096", 8, 4096, "power of two <= 256, got 4096"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

// ---------------------------------------------------------------------------------------------
// OverflowPolicy::grow.

TEST_F(FrameArenaTest, GrowServesAnOverflowingFrameAndResetGrowsToFitIt) {
  FrameArena arena(backend, kKiB, OverflowPolicy::grow, "arena", "-");
  std::vector<Written> all;
  for (std::uint64_t tag = 0; tag < 40; ++tag)
    all.push_back(write_pattern(arena.allocate(100, 16), 100, tag));

  EXPECT_TRUE(arena.overflowed());
  EXPECT_GT(arena.block_count(), 1u);
  EXPECT_TRUE(all_intact(all));
  EXPECT_TRUE(disjoint(all));
  std::size_t in_overflow = 0;
  for (const auto& w : all) {
    EXPECT_TRUE(mirrored(arena, w));
    if (const auto loc = arena.locate(w.host, w.bytes); loc && loc->block >= 1) ++in_overflow;
  }
  EXPECT_GT(in_overflow, 0u);
  const std::size_t peak = arena.used_bytes();
  EXPECT_GE(peak, 40u * 112);  // 100 bytes round up to 7 granules

  EXPECT_EQ(arena.reset(kKiB, kTrimAfter), Resize::grew);
  EXPECT_GE(arena.capacity_bytes(), peak);
  EXPECT_EQ(arena.block_count(), 1u);
  EXPECT_FALSE(arena.overflowed());
  EXPECT_EQ(arena.used_bytes(), 0u);
  EXPECT_EQ(arena.high_water_bytes(), peak);

  // The same frame again fits the grown main block.
  all.clear();
  for (std::uint64_t tag = 0; tag < 40; ++tag)
    all.push_back(write_pattern(arena.allocate(100, 16), 100, tag));
  EXPECT_FALSE(arena.overflowed());
  EXPECT_TRUE(all_intact(all));
  EXPECT_EQ(arena.reset(kKiB, kTrimAfter), Resize::none);
}

// Grows the arena with one 1 MiB frame; returns the grown capacity.
std::size_t grow_to_one_mib(FrameArena& arena, std::size_t base_bytes) {
  (void)arena.allocate(kMiB, 16);
  EXPECT_TRUE(arena.overflowed());
  EXPECT_EQ(arena.reset(base_bytes, kTrimAfter), Resize::grew);
  EXPECT_GE(arena.capacity_bytes(), kMiB);
  return arena.capacity_bytes();
}

// A frame that uses `bytes`, checked byte for byte, then reset.
Resize quiet_frame(FrameArena& arena, std::size_t bytes, std::size_t base_bytes) {
  const Written w = write_pattern(arena.allocate(bytes, 16), bytes, bytes);
  EXPECT_TRUE(intact(w));
  EXPECT_FALSE(arena.overflowed());
  return arena.reset(base_bytes, kTrimAfter);
}

// The base capacity passed to reset(): below what the quiet frames need after the trim's
// headroom (64 KiB), and above it, where it is the floor.
class ArenaTrim : public ::testing::TestWithParam<std::size_t> {
 protected:
  HostBackend backend;
};

TEST_P(ArenaTrim, GrownArenaTrimsAfterQuietFramesButNeverBelowTheBase) {
  const std::size_t base = GetParam();
  FrameArena arena(backend, 4 * kKiB, OverflowPolicy::grow, "arena", "-");
  const std::size_t grown = grow_to_one_mib(arena, base);

  for (std::uint32_t frame = 1; frame < kTrimAfter; ++frame) {
    EXPECT_EQ(quiet_frame(arena, kKiB, base), Resize::none) << "quiet frame " << frame;
    EXPECT_EQ(arena.capacity_bytes(), grown);
  }
  EXPECT_EQ(quiet_frame(arena, kKiB, base), Resize::trimmed);
  EXPECT_LT(arena.capacity_bytes(), grown);
  EXPECT_GE(arena.capacity_bytes(), base);
  EXPECT_GE(arena.capacity_bytes(), kKiB);

  // Trimmed to what the quiet frames need (or to the base), it stays there.
  const std::size_t trimmed = arena.capacity_bytes();
  for (std::uint32_t frame = 0; frame < 2 * kTrimAfter; ++frame)
    EXPECT_EQ(quiet_frame(arena, kKiB, base), Resize::none)
        << "frame " << frame << " after the trim";
  EXPECT_EQ(arena.capacity_bytes(), trimmed);
}

INSTANTIATE_TEST_SUITE_P(Arena, ArenaTrim, ::testing::Values(4 * kKiB, 512 * kKiB),
                         [](const auto& param_info) {
                           return "base_" + std::to_string(param_info.param / kKiB) + "KiB";
                         });

// Trimming waits for `trim_after_frames` quiet frames in a row: a frame that fills the grown
// arena restarts the count.
TEST_F(FrameArenaTest, AFrameThatFillsTheArenaRestartsTheTrimCountdown) {
  FrameArena arena(backend, 4 * kKiB, OverflowPolicy::grow, "arena", "-");
  const std::size_t grown = grow_to_one_mib(arena, 4 * kKiB);

  for (std::uint32_t frame = 1; frame < kTrimAfter; ++frame)
    ASSERT_EQ(quiet_frame(arena, kKiB, 4 * kKiB), Resize::none);
  // Fill the main block exactly: no overflow, so this is not growth but a busy frame.
  const Written full = write_pattern(arena.allocate(grown, 16), grown, 7);
  EXPECT_FALSE(arena.overflowed());
  EXPECT_TRUE(intact(full));
  EXPECT_EQ(arena.reset(4 * kKiB, kTrimAfter), Resize::none);
  EXPECT_EQ(arena.capacity_bytes(), grown);

  for (std::uint32_t frame = 1; frame < kTrimAfter; ++frame) {
    EXPECT_EQ(quiet_frame(arena, kKiB, 4 * kKiB), Resize::none)
        << "quiet frame " << frame << " after the full one";
  }
  EXPECT_EQ(quiet_frame(arena, kKiB, 4 * kKiB), Resize::trimmed)
      << kTrimAfter << " quiet frames in a row after the full one";
  EXPECT_LT(arena.capacity_bytes(), grown);
}

// ---------------------------------------------------------------------------------------------
// Ownership: every block goes back to the backend.

enum class Lifetime { one_frame, grown, grown_then_trimmed };

class ArenaLifetime : public ::testing::TestWithParam<Lifetime> {
 protected:
  HostBackend backend;
};

TEST_P(ArenaLifetime, DestroyingTheArenaReturnsEveryBlock) {
  void* unrelated = backend.allocate_pinned(64);  // not the arena's: it stays counted
  const std::size_t before = backend.live_allocations();
  ASSERT_EQ(before, 1u);
  {
    FrameArena arena(backend, 4 * kKiB, OverflowPolicy::grow, "arena", "-");
    EXPECT_EQ(backend.live_allocations(), before + 2) << "one pinned block, one device mirror";
    if (GetParam() == Lifetime::one_frame) {
      (void)arena.allocate(kKiB, 16);
      EXPECT_EQ(arena.reset(4 * kKiB, kTrimAfter), Resize::none);
    } else {
      (void)arena.allocate(kMiB, 16);
      EXPECT_EQ(backend.live_allocations(), before + 4) << "plus one overflow pair";
      EXPECT_EQ(arena.reset(4 * kKiB, kTrimAfter), Resize::grew);
    }
    if (GetParam() == Lifetime::grown_then_trimmed) {
      for (std::uint32_t frame = 1; frame < kTrimAfter; ++frame)
        EXPECT_EQ(quiet_frame(arena, kKiB, 4 * kKiB), Resize::none);
      EXPECT_EQ(quiet_frame(arena, kKiB, 4 * kKiB), Resize::trimmed);
    }
    EXPECT_EQ(backend.live_allocations(), before + 2) << "after reset(), only the main pair";
  }
  EXPECT_EQ(backend.live_allocations(), before);
  backend.free_pinned(unrelated);
  EXPECT_EQ(backend.live_allocations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Arena, ArenaLifetime,
                         ::testing::Values(Lifetime::one_frame, Lifetime::grown,
                                           Lifetime::grown_then_trimmed),
                         [](const auto& param_info) {
                           switch (param_info.param) {
                             case Lifetime::one_frame:
                               return std::string("one_frame");
                             case Lifetime::grown:
                               return std::string("grown");
                             case Lifetime::grown_then_trimmed:
                               return std::string("grown_then_trimmed");
                           }
                           return std::string("unknown");
                         });

}  // namespace
}  // namespace framestage
