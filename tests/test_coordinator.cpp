#include <framestage/coordinator.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/upload_arena.hpp>

#include "support/coordinator_modes.hpp"
#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <barrier>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

namespace framestage {
namespace {

using testing::small_coordinator_config;
using testing::throws_error;

std::byte pattern(std::uint64_t frame, std::size_t i) {
  return static_cast<std::byte>((frame * 131 + i * 7 + 3) & 0xff);
}

class CoordinatorModes : public ::testing::TestWithParam<testing::CompletionMode> {
 protected:
  HostBackend backend{HostBackendOptions{GetParam().deferred}};
  Coordinator coordinator{small_coordinator_config(GetParam().buffering), backend};
};

// Every frame: random uploads (some overlapping, some above the direct threshold) into one
// persistent buffer and a mirrored array; after each frame's ticket, every byte is checked.
TEST_P(CoordinatorModes, RandomFramesArriveByteExact) {
  const std::uint64_t seed = 20261125;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr std::size_t kDestination = 64 << 10;
  DeviceBuffer<std::byte> dst(backend, kDestination);
  std::vector<std::byte> expected(kDestination, std::byte{0});
  coordinator.begin_frame();
  coordinator.upload<std::byte>(dst.data(), expected);  // start from known contents
  coordinator.end_frame().wait();

  for (std::uint64_t f = 0; f < 40; ++f) {
    coordinator.begin_frame();
    const std::size_t uploads = 1 + rng() % 200;
    for (std::size_t u = 0; u < uploads; ++u) {
      const std::size_t bytes = 1 + rng() % (rng() % 8 == 0 ? 20000 : 300);
      const std::size_t offset = rng() % (kDestination - bytes);
      std::vector<std::byte> src(bytes);
      for (auto& b : src)
        b = static_cast<std::byte>(rng());
      coordinator.upload<std::byte>(dst.data() + offset, src);
      std::memcpy(expected.data() + offset, src.data(), bytes);
    }
    auto mirror = coordinator.frame_alloc<std::uint32_t>(1 + rng() % 5000);
    for (std::size_t i = 0; i < mirror.size(); ++i) {
      mirror[i] = static_cast<std::uint32_t>(f * 100003 + i);
    }
    coordinator.stage_for_upload(mirror);
    const FrameTicket ticket = coordinator.end_frame();
    ticket.wait();
    ASSERT_EQ(dst.to_host(), expected) << "frame " << ticket.frame();
    std::vector<std::uint32_t> mirrored(mirror.size());
    backend.read_device(mirrored.data(), coordinator.device_ptr(mirror), mirror.size_bytes());
    ASSERT_TRUE(std::equal(mirrored.begin(), mirrored.end(), mirror.begin()))
        << "frame " << ticket.frame();
  }
}

// Frames never waited on by the test: each writes its own region. If a slot's arena were
// refilled before its pending copies ran, those copies would carry a later frame's bytes.
TEST_P(CoordinatorModes, NoSlotIsReusedBeforeItsCopiesRan) {
  constexpr std::size_t kFrames = 24;
  constexpr std::size_t kRegion = 512;
  DeviceBuffer<std::byte> dst(backend, kFrames * kRegion);
  DeviceBuffer<std::byte> mirror_copies(backend, kFrames * kRegion);
  for (std::uint64_t f = 1; f <= kFrames; ++f) {
    coordinator.begin_frame();
    std::vector<std::byte> src(kRegion);
    for (std::size_t i = 0; i < kRegion; ++i)
      src[i] = pattern(f, i);
    coordinator.upload<std::byte>(dst.data() + (f - 1) * kRegion, src);
    auto mirror = coordinator.frame_alloc<std::byte>(kRegion);
    std::copy(src.begin(), src.end(), mirror.begin());
    coordinator.stage_for_upload(mirror);
    const FrameTicket ticket = coordinator.end_frame();
    // A "kernel" copying the mirror out, in order on the consumer stream.
    backend.copy_async(mirror_copies.data() + (f - 1) * kRegion, coordinator.device_ptr(mirror),
                       kRegion, ticket.stream());
  }
  coordinator.synchronize();
  const auto uploaded = dst.to_host();
  const auto mirrored = mirror_copies.to_host();
  for (std::uint64_t f = 1; f <= kFrames; ++f) {
    for (std::size_t i = 0; i < kRegion; ++i) {
      ASSERT_EQ(uploaded[(f - 1) * kRegion + i], pattern(f, i)) << "upload, frame " << f;
      ASSERT_EQ(mirrored[(f - 1) * kRegion + i], pattern(f, i)) << "mirror, frame " << f;
    }
  }
}

// Ordering rule 2: a kernel of frame N that reads the slot's mirror runs before the mirror is
// overwritten, even when it only runs when the slot is needed again.
TEST_P(CoordinatorModes, MirrorIsNotOverwrittenWhileAKernelMayReadIt) {
  std::vector<std::uint64_t> seen;
  for (std::uint64_t f = 1; f <= 12; ++f) {
    coordinator.begin_frame();
    auto value = coordinator.frame_alloc<std::uint64_t>(1);
    value[0] = f;
    coordinator.stage_for_upload(value);
    const FrameTicket ticket = coordinator.end_frame();
    const std::uint64_t* device = coordinator.device_ptr(value);
    backend.launch_host_task(ticket.stream(), [device, &seen] { seen.push_back(*device); });
  }
  coordinator.synchronize();
  std::vector<std::uint64_t> want(12);
  for (std::uint64_t f = 1; f <= 12; ++f)
    want[f - 1] = f;
  EXPECT_EQ(seen, want);
}

// Ordering rule 3: an upload into a persistent buffer lands after the earlier frames' kernels
// on the consumer stream, so each kernel sees its own frame's value.
TEST_P(CoordinatorModes, PersistentBufferWritesWaitForEarlierKernels) {
  DeviceBuffer<std::uint64_t> state(backend, 1);
  std::vector<std::uint64_t> seen;
  for (std::uint64_t f = 1; f <= 12; ++f) {
    coordinator.begin_frame();
    const std::uint64_t value = f * 11;
    coordinator.upload<std::uint64_t>(state.data(), std::span(&value, 1));
    const FrameTicket ticket = coordinator.end_frame();
    const std::uint64_t* device = state.data();
    backend.launch_host_task(ticket.stream(), [device, &seen] { seen.push_back(*device); });
  }
  coordinator.synchronize();
  std::vector<std::uint64_t> want(12);
  for (std::uint64_t f = 1; f <= 12; ++f)
    want[f - 1] = f * 11;
  EXPECT_EQ(seen, want);
}

TEST_P(CoordinatorModes, ConcurrentStagingFromManyThreads) {
  constexpr std::size_t kThreads = 8;
  constexpr std::size_t kPerThread = 400;
  constexpr std::size_t kItem = 24;
  DeviceBuffer<std::byte> dst(backend, kThreads * kPerThread * kItem);
  for (std::uint64_t f = 1; f <= 6; ++f) {
    coordinator.begin_frame();
    std::vector<FrameSpan<std::uint32_t>> spans(kThreads);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::array<std::byte, kItem> item{};
        for (std::size_t i = 0; i < kPerThread; ++i) {
          const std::size_t slot = t * kPerThread + i;
          for (std::size_t b = 0; b < kItem; ++b)
            item[b] = pattern(f, slot * kItem + b);
          coordinator.upload<std::byte>(dst.data() + slot * kItem, item);
        }
        spans[t] = coordinator.frame_alloc<std::uint32_t>(kPerThread);
        for (std::size_t i = 0; i < kPerThread; ++i) {
          spans[t][i] = static_cast<std::uint32_t>(f << 24 | t << 16 | i);
        }
        coordinator.stage_for_upload(spans[t]);
      });
    }
    for (auto& th : threads)
      th.join();
    coordinator.end_frame().wait();
    const auto got = dst.to_host();
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], pattern(f, i)) << "byte " << i;
    for (std::size_t t = 0; t < kThreads; ++t) {
      std::vector<std::uint32_t> mirrored(kPerThread);
      backend.read_device(mirrored.data(), coordinator.device_ptr(spans[t]), spans[t].size_bytes());
      ASSERT_TRUE(std::equal(mirrored.begin(), mirrored.end(), spans[t].begin())) << t;
    }
  }
}

// Threads that each sweep a region of their own, their chunks of the upload arena interleaving:
// the arena proves by the threads' ranges that nothing overlaps, and the planner skips looking at
// the descriptors. Every byte must still arrive, over frames that reuse the slots.
TEST(CoordinatorRanges, ThreadsSweepingTheirOwnRegionsInChunksArriveByteExact) {
  constexpr std::size_t kThreads = 8;
  constexpr std::size_t kPerThread = 16 * UploadArena::kChunkDescriptors;
  constexpr std::size_t kItem = 24;
  HostBackend backend;
  Config config = small_coordinator_config(2);
  config.upload_arena_bytes = std::size_t{8} << 20;
  config.max_uploads_per_frame = 65536;
  Coordinator coordinator(config, backend);
  DeviceBuffer<std::byte> dst(backend, kThreads * kPerThread * kItem);
  for (std::uint64_t f = 1; f <= 4; ++f) {
    coordinator.begin_frame();
    std::barrier sync(kThreads);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (std::size_t i = 0; i < kPerThread; ++i) {
          const std::size_t slot = t * kPerThread + i;
          auto item = coordinator.reserve_upload<std::byte>(dst.data() + slot * kItem, kItem);
          for (std::size_t b = 0; b < kItem; ++b)
            item[b] = pattern(f, slot * kItem + b);
          if (i % UploadArena::kChunkDescriptors == 0) sync.arrive_and_wait();
        }
      });
    }
    for (auto& th : threads)
      th.join();
    coordinator.end_frame().wait();
    const FrameStats& last = coordinator.stats().last_frame;
    EXPECT_EQ(last.uploads, kThreads * kPerThread);
    EXPECT_EQ(last.scattered_bytes, kThreads * kPerThread * kItem);
    EXPECT_EQ(last.superseded_uploads + last.merged_overlaps, 0u);
    const auto got = dst.to_host();
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], pattern(f, i)) << "frame " << f << ", byte " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Buffering, CoordinatorModes, testing::all_completion_modes(),
                         testing::completion_mode_name);

class CoordinatorTest : public ::testing::Test {
 protected:
  HostBackend backend;
};

TEST_F(CoordinatorTest, CallsOutOfOrderAreMisuse) {
  Coordinator c(small_coordinator_config(2), backend);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "end_frame without begin_frame",
                           [&] { (void)c.end_frame(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame_alloc outside a frame",
                           [&] { (void)c.frame_alloc<int>(4); }));
  // upload between frames is a one-off frame of its own: test_coordinator_one_off_uploads.
  c.begin_frame();
  EXPECT_TRUE(
      throws_error(ErrorCategory::misuse, "frame 1 is still open", [&] { c.begin_frame(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "between frames",
                           [&] { c.set_consumer_stream(StreamView{}); }));
  (void)c.end_frame();
  EXPECT_FALSE(c.failed());
}

TEST_F(CoordinatorTest, BadArgumentsAreMisuse) {
  Coordinator c(small_coordinator_config(2), backend);
  c.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "count must be > 0",
                           [&] { (void)c.frame_alloc<int>(0); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "fit in size_t", [&] {
    (void)c.frame_alloc<std::uint64_t>(std::numeric_limits<std::size_t>::max() / 4);
  }));
  const int value = 1;
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "null destination",
                           [&] { c.upload<int>(nullptr, std::span(&value, 1)); }));
  std::vector<int> not_from_arena(8);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "not an allocation of frame 1", [&] {
    c.stage_for_upload(FrameSpan<int>(std::span(not_from_arena), c.current_frame()));
  }));
  // A span that runs past the end of what this frame allocated.
  auto span = c.frame_alloc<int>(4);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "not an allocation", [&] {
    c.stage_for_upload(FrameSpan<int>(std::span(span.data(), 4096), span.frame()));
  }));
  (void)c.end_frame();
}

TEST_F(CoordinatorTest, SpansOfEarlierFramesAreRejected) {
  Coordinator c(small_coordinator_config(2), backend);
  c.begin_frame();
  auto first = c.frame_alloc<float>(16);
  c.stage_for_upload(first);
  (void)c.end_frame();
  EXPECT_NE(c.device_ptr(first), nullptr);  // frame 1's slot still holds it

  c.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "the span is from frame 1, but frame 2 is open",
                           [&] { c.stage_for_upload(first); }));
  EXPECT_NE(c.device_ptr(first), nullptr);  // double buffering: still valid during frame 2
  (void)c.end_frame();

  c.begin_frame();  // frame 3 reuses frame 1's slot
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame 1 is stale: its slot now holds frame 3",
                           [&] { (void)c.device_ptr(first); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "newest frame is 3", [&] {
    (void)c.device_ptr(FrameSpan<float>(std::span(first.data(), 1), 9));
  }));
  (void)c.end_frame();
}

TEST_F(CoordinatorTest, ArenaOverflowUnderFailKeepsWhatWasStaged) {
  Config config = small_coordinator_config(2);
  config.arena_bytes = 64 << 10;
  Coordinator c(config, backend);
  DeviceBuffer<std::byte> dst(backend, 1024);
  c.begin_frame();
  auto kept = c.frame_alloc<std::byte>(40 << 10);
  std::fill(kept.begin(), kept.end(), std::byte{0x5a});
  c.stage_for_upload(kept);
  std::vector<std::byte> payload(1024, std::byte{0x77});
  c.upload<std::byte>(dst.data(), payload);
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "raise arena_bytes",
                           [&] { (void)c.frame_alloc<std::byte>(32 << 10); }));
  // A request that still fits is served after the failed one.
  auto small = c.frame_alloc<std::byte>(1024);
  EXPECT_EQ(small.size(), 1024u);
  c.end_frame().wait();
  EXPECT_EQ(dst.to_host(), payload);
  std::vector<std::byte> mirrored(kept.size());
  backend.read_device(mirrored.data(), c.device_ptr(kept), kept.size());
  EXPECT_TRUE(std::all_of(mirrored.begin(), mirrored.end(),
                          [](std::byte b) { return b == std::byte{0x5a}; }));
  EXPECT_FALSE(c.failed());
}

TEST_F(CoordinatorTest, DescriptorTableOverflowUnderFailNamesTheLimit) {
  Config config = small_coordinator_config(1);
  config.max_uploads_per_frame = 4;
  Coordinator c(config, backend);
  DeviceBuffer<std::uint32_t> dst(backend, 5);
  c.begin_frame();
  for (std::uint32_t i = 0; i < 4; ++i)
    c.upload<std::uint32_t>(dst.data() + i, std::span(&i, 1));
  const std::uint32_t extra = 99;
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "max_uploads_per_frame (4)",
                           [&] { c.upload<std::uint32_t>(dst.data() + 4, std::span(&extra, 1)); }));
  c.end_frame().wait();
  const auto got = dst.to_host();
  EXPECT_EQ(std::vector<std::uint32_t>(got.begin(), got.begin() + 4),
            (std::vector<std::uint32_t>{0, 1, 2, 3}));
}

TEST_F(CoordinatorTest, GrowDeliversEveryByteThenTrims) {
  Config config = small_coordinator_config(1);
  config.arena_bytes = 64 << 10;
  config.max_uploads_per_frame = 8;
  config.overflow = OverflowPolicy::grow;
  config.trim_after_frames = 3;
  Coordinator c(config, backend);
  constexpr std::size_t kBig = 300 << 10;  // far beyond the 64 KiB arena
  DeviceBuffer<std::byte> dst(backend, 64 * 1024);
  std::memset(dst.data(), 0, dst.size_bytes());  // host backend: "device" memory is host memory

  c.begin_frame();
  auto big = c.frame_alloc<std::byte>(kBig);
  for (std::size_t i = 0; i < kBig; ++i)
    big[i] = pattern(1, i);
  c.stage_for_upload(big);
  std::vector<std::byte> item(1024);
  std::vector<std::byte> expected(dst.size());
  for (std::size_t u = 0; u < 20; ++u) {  // also overflows the 8-entry descriptor table
    for (std::size_t i = 0; i < item.size(); ++i)
      item[i] = pattern(u, i);
    c.upload<std::byte>(dst.data() + u * 2048, item);
    std::copy(item.begin(), item.end(), expected.begin() + static_cast<std::ptrdiff_t>(u * 2048));
  }
  c.end_frame().wait();
  EXPECT_TRUE(c.stats().last_frame.arena_overflowed);
  EXPECT_EQ(dst.to_host(), expected);
  std::vector<std::byte> mirrored(kBig);
  backend.read_device(mirrored.data(), c.device_ptr(big), kBig);
  for (std::size_t i = 0; i < kBig; ++i)
    ASSERT_EQ(mirrored[i], pattern(1, i)) << i;

  c.begin_frame();  // the slot comes back with one arena large enough
  EXPECT_EQ(c.stats().arena_growths, 1u);
  (void)c.end_frame();
  const std::size_t grown = c.stats().slots[0].arena_capacity_bytes;
  EXPECT_GE(grown, kBig);
  EXPECT_GE(c.stats().slots[0].arena_high_water_bytes, kBig);
  for (int f = 0; f < 3; ++f) {
    c.begin_frame();
    (void)c.frame_alloc<std::byte>(1024);
    (void)c.end_frame();
  }
  EXPECT_EQ(c.stats().arena_trims, 1u);
  EXPECT_LT(c.stats().slots[0].arena_capacity_bytes, grown);
  EXPECT_GE(c.stats().slots[0].arena_capacity_bytes, config.arena_bytes);
  EXPECT_GE(c.stats().slots[0].arena_high_water_bytes, kBig);  // the mark survives the trim
}

TEST_F(CoordinatorTest, SlotTimeoutIsAnErrorAndRecoverable) {
  HostBackend deferred(HostBackendOptions{true});
  Config config = small_coordinator_config(1);
  config.slot_timeout_ms = 1;
  Coordinator c(config, deferred);
  DeviceBuffer<std::uint32_t> dst(deferred, 1);
  c.begin_frame();
  const std::uint32_t value = 42;
  c.upload<std::uint32_t>(dst.data(), std::span(&value, 1));
  (void)c.end_frame();
  deferred.set_stalled(true);  // the device hangs
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, "slot 0 (frame 1) still busy",
                           [&] { c.begin_frame(); }));
  EXPECT_FALSE(c.frame_open());
  EXPECT_FALSE(c.failed());
  deferred.set_stalled(false);
  c.begin_frame();
  EXPECT_EQ(c.current_frame(), 2u);
  EXPECT_EQ(dst.to_host()[0], 42u);
  (void)c.end_frame();
}

// The first copy fails as a sticky CUDA error would (test_fault_injection fails every call).
TEST_F(CoordinatorTest, ABackendFailureLeavesTheCoordinatorFailed) {
  HostBackend inner;
  testing::FaultInjectingBackend failing(inner);
  failing.arm(testing::FaultSite::copy, 1, testing::FaultMode::sticky);
  Coordinator c(small_coordinator_config(2), failing);
  c.begin_frame();
  auto span = c.frame_alloc<int>(8);
  c.stage_for_upload(span);
  EXPECT_TRUE(
      throws_error(ErrorCategory::cuda, "cudaErrorIllegalAddress", [&] { (void)c.end_frame(); }));
  EXPECT_TRUE(c.failed());
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { c.begin_frame(); },
           [&] { (void)c.end_frame(); },
           [&] { (void)c.frame_alloc<int>(1); },
           [&] { c.synchronize(); },
       }) {
    EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "cudaErrorIllegalAddress", call));
  }
}

TEST_F(CoordinatorTest, UploadSliceMakesAFilledBuffer) {
  Coordinator c(small_coordinator_config(3), backend);
  std::vector<double> values(1000);
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = static_cast<double>(i) * 0.5;
  c.begin_frame();
  DeviceBuffer<double> buffer = c.upload_slice<double>(values);
  c.end_frame().wait();
  EXPECT_EQ(buffer.size(), values.size());
  EXPECT_EQ(buffer.to_host(), values);
}

TEST_F(CoordinatorTest, StatsCountWhatTheFrameDidAndSerialise) {
  Config config = small_coordinator_config(2);
  config.direct_copy_threshold_bytes = 4096;
  config.zero_copy_max_bytes = 0;
  Coordinator c(config, backend);
  DeviceBuffer<std::byte> dst(backend, 16384);
  std::vector<std::byte> small(100, std::byte{1});
  std::vector<std::byte> large(8192, std::byte{2});
  c.begin_frame();
  c.upload<std::byte>(dst.data(), small);
  c.upload<std::byte>(dst.data(), small);  // supersedes the first
  c.upload<std::byte>(dst.data() + 8192, large);
  auto mirror = c.frame_alloc<float>(256);
  c.stage_for_upload(mirror);
  c.end_frame().wait();

  const FrameStats& f = c.stats().last_frame;
  EXPECT_EQ(f.frame, 1u);
  EXPECT_EQ(f.uploads, 3u);
  EXPECT_EQ(f.superseded_uploads, 1u);
  EXPECT_EQ(f.direct_copies, 1u);
  EXPECT_EQ(f.direct_bytes, 8192u);
  EXPECT_EQ(f.scattered_bytes, 100u);
  EXPECT_EQ(f.scatter_launches, 1u);
  EXPECT_EQ(f.strategy, UploadStrategy::copy_scatter);
  EXPECT_EQ(f.mirror_bytes, 1024u);
  EXPECT_EQ(f.staged_ranges, 1u);

  const auto json = nlohmann::json::parse(c.stats().to_json());
  EXPECT_EQ(json.at("frames"), 1);
  EXPECT_EQ(json.at("last_frame").at("strategy"), "copy_scatter");
  EXPECT_EQ(json.at("last_frame").at("direct_bytes"), 8192);
  EXPECT_EQ(json.at("slots").size(), 2u);
  // Upload payloads live in the upload arena; the frame_alloc arena holds the mirror only.
  // (A thread claims the arena in chunks, so the unused rest of its chunk counts as used.)
  const auto high_water = json.at("slots").at(0).at("arena_high_water_bytes").get<std::size_t>();
  EXPECT_GE(high_water, 1024u);
  EXPECT_LE(high_water, 1024u + FrameArena::kChunkBytes);
}

// reserve_upload hands out pinned space that is filled in place and delivered like an upload,
// in issue order with the uploads around it.
TEST_F(CoordinatorTest, ReservedUploadsArriveInIssueOrderWithUploads) {
  Coordinator c(small_coordinator_config(2), backend);
  DeviceBuffer<std::uint32_t> dst(backend, 64);
  std::memset(dst.data(), 0, 64 * sizeof(std::uint32_t));
  const std::vector<std::uint32_t> ones(64, 1);
  c.begin_frame();
  c.upload<std::uint32_t>(dst.data(), ones);
  auto reserved = c.reserve_upload(dst.data() + 8, 16);  // overwrites part of the first upload
  EXPECT_EQ(reserved.frame(), 1u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(reserved.data()) % 16, 0u);
  for (std::size_t i = 0; i < reserved.size(); ++i)
    reserved[i] = static_cast<std::uint32_t>(100 + i);
  c.end_frame().wait();
  const auto got = dst.to_host();
  for (std::size_t i = 0; i < 64; ++i) {
    const std::uint32_t want = i >= 8 && i < 24 ? static_cast<std::uint32_t>(100 + i - 8) : 1u;
    ASSERT_EQ(got[i], want) << "element " << i;
  }
}

// Copy-and-scatter frames start their copies before the descriptors are checked. The immediate
// host backend runs those copies at once, so staging holds the table as it was before overlaps
// were resolved; the scatter must read the corrected table, copied after it.
TEST_F(CoordinatorTest, OverlapsResolvedAfterTheCopiesStartedStillLastWriteWins) {
  Config config = small_coordinator_config(2);
  config.strategy = UploadStrategy::copy_scatter;
  Coordinator c(config, backend);
  DeviceBuffer<std::uint8_t> dst(backend, 256);
  std::memset(dst.data(), 0, 256);
  const std::vector<std::uint8_t> a(64, 1), b(64, 2), d(16, 3), e(100, 4);
  c.begin_frame();
  c.upload<std::uint8_t>(dst.data() + 100, e);  // overlaps nothing
  c.upload<std::uint8_t>(dst.data(), a);
  c.upload<std::uint8_t>(dst.data() + 32, b);  // partly over a
  c.upload<std::uint8_t>(dst.data() + 8, d);   // inside a, after a: wins there
  const std::vector<std::uint8_t> x(16, 5), y(20, 6);
  c.upload<std::uint8_t>(dst.data() + 236, x);  // covered by y, issued before it: dropped
  c.upload<std::uint8_t>(dst.data() + 234, y);
  c.end_frame().wait();
  EXPECT_EQ(c.stats().last_frame.strategy, UploadStrategy::copy_scatter);
  EXPECT_GT(c.stats().last_frame.merged_overlaps, 0u);
  EXPECT_EQ(c.stats().last_frame.superseded_uploads, 1u);
  const auto got = dst.to_host();
  for (std::size_t i = 0; i < 256; ++i) {
    std::uint8_t want = 0;
    if (i >= 100 && i < 200) want = 4;
    if (i < 64) want = 1;
    if (i >= 32 && i < 96) want = 2;
    if (i >= 8 && i < 24) want = 3;
    if (i >= 234 && i < 254) want = 6;
    ASSERT_EQ(got[i], want) << "byte " << i;
  }
}

TEST_F(CoordinatorTest, ReserveUploadRejectsBadArguments) {
  Coordinator c(small_coordinator_config(1), backend);
  DeviceBuffer<std::uint32_t> dst(backend, 4);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "reserve_upload outside a frame",
                           [&] { (void)c.reserve_upload(dst.data(), 4); }));
  c.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "null destination",
                           [&] { (void)c.reserve_upload<std::uint32_t>(nullptr, 4); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "count must be > 0",
                           [&] { (void)c.reserve_upload(dst.data(), 0); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "count must be > 0",
                           [&] { (void)c.reserve_upload(dst.data(), std::size_t{1} << 62); }));
  c.end_frame().wait();
}

TEST_F(CoordinatorTest, UserConsumerStreamOrdersAfterItsEarlierWork) {
  HostBackend deferred(HostBackendOptions{true});
  Coordinator c(small_coordinator_config(2), deferred);
  Stream mine(deferred);
  DeviceBuffer<std::uint32_t> dst(deferred, 1);
  *dst.data() = 0;  // host backend: "device" memory is host memory
  std::uint32_t seen_before = 7;
  // Work already on the user's stream must see the buffer before the frame writes it.
  deferred.launch_host_task(mine.view(), [&] { seen_before = *dst.data(); });
  c.set_consumer_stream(mine.view());
  EXPECT_EQ(c.consumer_stream(), mine.view());
  c.begin_frame();
  const std::uint32_t value = 5;
  c.upload<std::uint32_t>(dst.data(), std::span(&value, 1));
  const FrameTicket ticket = c.end_frame();
  EXPECT_EQ(ticket.stream(), mine.view());
  ticket.wait();
  EXPECT_EQ(seen_before, 0u);
  EXPECT_EQ(dst.to_host()[0], 5u);
  c.set_consumer_stream(StreamView{});  // back to its own before `mine` goes away
  c.synchronize();
}

TEST_F(CoordinatorTest, BadConfigIsRejectedAtConstruction) {
  Config config;
  config.buffering = 0;
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, "buffering",
                           [&] { Coordinator c(config, backend); }));
}

TEST_F(CoordinatorTest, DestructionFreesEverything) {
  const std::size_t before = backend.live_allocations();
  {
    Coordinator c(small_coordinator_config(3), backend);
    for (int f = 0; f < 5; ++f) {
      c.begin_frame();
      auto span = c.frame_alloc<int>(100);
      c.stage_for_upload(span);
      (void)c.end_frame();
    }
  }
  EXPECT_EQ(backend.live_allocations(), before);
}

}  // namespace
}  // namespace framestage
