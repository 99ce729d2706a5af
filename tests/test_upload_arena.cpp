// UploadArena::proven_order: what the reservations prove about a frame's destinations, so that
// the planner need not read the descriptor table. A wrong "proven" would skip overlap resolution
// and let the scatter write overlapping targets in any order.
#include <framestage/error.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/upload_arena.hpp>

#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include <barrier>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace framestage {
namespace {

constexpr std::size_t kPayloadBytes = std::size_t{1} << 20;
constexpr std::size_t kDescriptors = 4096;
constexpr std::uint64_t kBase = 0x10000;  // targets are plain numbers: nothing is copied here

class UploadArenaOrderTest : public ::testing::Test {
 protected:
  UploadArena make(OverflowPolicy policy = OverflowPolicy::fail,
                   std::size_t payload = kPayloadBytes, std::size_t descriptors = kDescriptors) {
    return UploadArena(backend, payload, descriptors, policy);
  }
  static void reserve(UploadArena& a, std::uint64_t target, std::size_t bytes) {
    (void)a.reserve(target, bytes);
  }
  // `count` reservations of `bytes` each, `stride` apart, from `first`.
  static void sweep(UploadArena& a, std::uint64_t first, std::size_t count, std::size_t bytes,
                    std::size_t stride) {
    for (std::size_t i = 0; i < count; ++i)
      reserve(a, first + i * stride, bytes);
  }
  // Runs `f` on a thread of its own and waits for it: a thread other than the test's.
  template <class F>
  static void on_other_thread(F&& f) {
    std::thread t(std::forward<F>(f));
    t.join();
  }

  HostBackend backend;
};

TEST_F(UploadArenaOrderTest, AnEmptyFrameIsProvenWithNothingInIt) {
  UploadArena a = make();
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, 0u);
  EXPECT_EQ(order->largest, 0u);
}

TEST_F(UploadArenaOrderTest, OneThreadSweepingUpIsProvenWithExactTotals) {
  UploadArena a = make();
  std::size_t total = 0;
  for (std::size_t i = 0; i < 1000; ++i) {
    const std::size_t bytes = 1 + (i * 37) % 250;  // not granule multiples: totals are unrounded
    reserve(a, kBase + i * 512, bytes);
    total += bytes;
  }
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, total);
  EXPECT_EQ(order->largest, 250u);
}

TEST_F(UploadArenaOrderTest, AdjacentTargetsAreProvenOverlappingOnesAreNot) {
  UploadArena touching = make();
  reserve(touching, kBase, 100);
  reserve(touching, kBase + 100, 100);  // starts where the last ended
  EXPECT_TRUE(touching.proven_order().has_value());

  UploadArena overlapping = make();
  reserve(overlapping, kBase, 100);
  reserve(overlapping, kBase + 99, 100);  // one byte written twice
  EXPECT_FALSE(overlapping.proven_order().has_value());

  UploadArena same = make();
  reserve(same, kBase, 100);
  reserve(same, kBase, 100);
  EXPECT_FALSE(same.proven_order().has_value());
}

TEST_F(UploadArenaOrderTest, ASteppingBackSweepIsNotProvenEvenWithoutOverlap) {
  UploadArena a = make();
  sweep(a, kBase + 4096, 10, 16, 64);
  reserve(a, kBase, 16);  // below everything: no overlap, but out of order
  EXPECT_FALSE(a.proven_order().has_value());
}

TEST_F(UploadArenaOrderTest, ThreadsTakingTurnsInAddressOrderAreProven) {
  UploadArena a = make();
  sweep(a, kBase, 100, 32, 64);
  on_other_thread([&] { sweep(a, kBase + 100 * 64, 100, 48, 64); });
  on_other_thread([&] { sweep(a, kBase + 200 * 64, 100, 16, 64); });
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, 100u * (32 + 48 + 16));
  EXPECT_EQ(order->largest, 48u);
}

// Issue order is each thread's call order, and between threads the order of their chunks: a
// thread that comes back fills the rest of its own chunk, ahead of chunks claimed since.
TEST_F(UploadArenaOrderTest, AThreadComingBackFillsItsOwnChunkFirst) {
  UploadArena a = make();
  reserve(a, kBase, 16);
  on_other_thread([&] { reserve(a, kBase + 64, 16); });
  reserve(a, kBase + 128, 16);
  EXPECT_FALSE(a.proven_order().has_value()) << "kBase + 64 lies within the other thread's range";
  a.pad_unused();
  const UploadArena::BlockView v = a.block(0);
  const auto issued = [&](std::size_t i) { return v.table()[v.descriptors - 1 - i]; };
  ASSERT_EQ(v.descriptors, UploadArena::kChunkDescriptors + 1) << "the last chunk is cut to use";
  EXPECT_EQ(v.reserved, 3u);
  EXPECT_EQ(issued(0).target, kBase);
  EXPECT_EQ(issued(1).target, kBase + 128);
  for (std::size_t i = 2; i < UploadArena::kChunkDescriptors; ++i) {
    EXPECT_EQ(issued(i).bytes, 0u) << "unused entry " << i << " is empty";
    EXPECT_EQ(issued(i).target, kBase + 128 + 16) << "and placed at its thread's last end";
    EXPECT_GE(issued(i).staging_granule, issued(1).staging_granule + 1);
    EXPECT_LE(issued(i).staging_granule, issued(UploadArena::kChunkDescriptors).staging_granule);
  }
  EXPECT_EQ(issued(UploadArena::kChunkDescriptors).target, kBase + 64);
  EXPECT_EQ(a.descriptor_count(), 3u);
}

// Without spare room (a small block) every reservation is claimed on its own: threads taking
// turns call by call make a run per turn, proven while the turns ascend.
TEST_F(UploadArenaOrderTest, ExactReservationsTakingTurnsAreProvenWhileTheyAscend) {
  const auto take_turns = [&](UploadArena& a, std::size_t rounds, bool ascending) {
    std::barrier sync(2);
    std::thread other([&] {
      for (std::size_t i = 0; i < rounds; ++i) {
        sync.arrive_and_wait();
        reserve(a, kBase + (2 * i + 1) * 64, 32);
        sync.arrive_and_wait();
      }
    });
    for (std::size_t i = 0; i < rounds; ++i) {
      reserve(a, kBase + (ascending ? 2 * i : 2 * i + 2) * 64 + (ascending ? 0 : 63), 32);
      sync.arrive_and_wait();
      sync.arrive_and_wait();
    }
    other.join();
  };
  UploadArena a = make(OverflowPolicy::fail, 4096, 64);
  take_turns(a, 3, true);
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value()) << "six runs of one reservation each, in address order";
  EXPECT_EQ(order->bytes, 6u * 32);

  UploadArena b = make(OverflowPolicy::fail, 4096, 64);
  take_turns(b, 3, false);  // each turn of the test thread overlaps the other thread's next
  EXPECT_FALSE(b.proven_order().has_value());

  UploadArena c = make(OverflowPolicy::fail, 4096, 64);
  take_turns(c, UploadArena::kMaxRunsPerThread + 2, true);
  EXPECT_FALSE(c.proven_order().has_value()) << "more runs of one thread than tracked";
}
// Issue order does not matter where nothing overlaps: each thread's range is its own.
TEST_F(UploadArenaOrderTest, ThreadsTakingTurnsOutOfAddressOrderAreProvenByTheirRanges) {
  UploadArena a = make();
  sweep(a, kBase + 100 * 64, 100, 32, 64);
  on_other_thread([&] { sweep(a, kBase, 100, 32, 64); });  // later in issue order, lower targets
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, 200u * 32);
}

// Threads that each sweep a region of their own, their chunks interleaving many times over (far
// more runs each than tracked): proven by ranges, with exact totals.
TEST_F(UploadArenaOrderTest, ThreadsSweepingOwnRegionsWithInterleavedChunksAreProven) {
  constexpr unsigned kThreads = 4;
  constexpr std::size_t kPerThread = 20 * UploadArena::kChunkDescriptors;
  UploadArena a = make(OverflowPolicy::fail, kThreads * kPerThread * 64, kThreads * kPerThread);
  std::barrier sync(kThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < kPerThread; ++i) {
        reserve(a, kBase + (t * kPerThread + i) * 64, 1 + (i + t) % 64);
        // Every thread claims a chunk before any claims its next: the chunks interleave.
        if (i % UploadArena::kChunkDescriptors == UploadArena::kChunkDescriptors - 1) {
          sync.arrive_and_wait();
        }
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  std::size_t bytes = 0;
  for (unsigned t = 0; t < kThreads; ++t) {
    for (std::size_t i = 0; i < kPerThread; ++i)
      bytes += 1 + (i + t) % 64;
  }
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, bytes);
  EXPECT_EQ(order->largest, 64u);
}

// The ranges prove nothing when they interleave, even if no byte is written twice, and never
// when a byte is: the planner must then look at the descriptors.
TEST_F(UploadArenaOrderTest, RangesThatInterleaveOrOverlapAreNotProven) {
  const auto two_threads = [&](UploadArena& a, std::uint64_t other_first, std::size_t stride) {
    std::barrier sync(2);
    const auto sweep_in_turns = [&](std::uint64_t first) {
      for (std::size_t i = 0; i < 8 * UploadArena::kChunkDescriptors; ++i) {
        reserve(a, first + i * stride, 32);
        if (i % UploadArena::kChunkDescriptors == UploadArena::kChunkDescriptors - 1) {
          sync.arrive_and_wait();
        }
      }
    };
    std::thread other([&] { sweep_in_turns(other_first); });
    sweep_in_turns(kBase);
    other.join();
  };
  UploadArena interleaved = make();
  two_threads(interleaved, kBase + 32, 64);  // odd and even 32-byte slots: no overlap
  EXPECT_FALSE(interleaved.proven_order().has_value());

  UploadArena overlapping = make();
  // The other thread starts inside the test thread's range, one byte into its last upload.
  two_threads(overlapping, kBase + (8 * UploadArena::kChunkDescriptors - 1) * 32 + 31, 32);
  EXPECT_FALSE(overlapping.proven_order().has_value());
}

// A thread whose next chunk starts below where its last one ended has no range of its own.
TEST_F(UploadArenaOrderTest, AThreadTurningBackBetweenChunksIsNotProven) {
  UploadArena a = make();
  sweep(a, kBase + 64 * 64, UploadArena::kChunkDescriptors, 16, 16);
  on_other_thread([&] { sweep(a, kBase + 1024 * 64, 10, 16, 64); });
  sweep(a, kBase, 10, 16, 16);  // a new chunk, below the first: no overlap, but turned back
  EXPECT_FALSE(a.proven_order().has_value());
}

TEST_F(UploadArenaOrderTest, ATurnThatOverlapsThePreviousOneIsNotProven) {
  UploadArena a = make();
  sweep(a, kBase, 10, 64, 64);
  on_other_thread([&] { reserve(a, kBase + 9 * 64 + 63, 8); });  // into the last byte
  EXPECT_FALSE(a.proven_order().has_value());
}

TEST_F(UploadArenaOrderTest, ResetStartsAFreshProof) {
  UploadArena a = make();
  reserve(a, kBase + 64, 16);
  reserve(a, kBase, 16);
  EXPECT_FALSE(a.proven_order().has_value());
  (void)a.reset(kPayloadBytes, kDescriptors, 16);
  reserve(a, kBase, 16);  // the same thread, lower than its last run's end
  reserve(a, kBase + 16, 16);
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, 32u);
}

TEST_F(UploadArenaOrderTest, SwitchingBetweenArenasKeepsEachProof) {
  UploadArena a = make();
  UploadArena b = make();
  for (std::size_t i = 0; i < 50; ++i) {
    reserve(a, kBase + i * 64, 64);
    reserve(b, kBase + (50 - i) * 64, 64);  // descending in b
  }
  const auto in_a = a.proven_order();
  ASSERT_TRUE(in_a.has_value()) << "each switch back to a starts a new run where the last ended";
  EXPECT_EQ(in_a->bytes, 50u * 64);
  EXPECT_FALSE(b.proven_order().has_value());
}

// Chunks given up leave entries and payload unused; the spare room must absorb all of it, so that
// threads together always fit exactly the configured count and bytes, whatever their sizes.
TEST_F(UploadArenaOrderTest, ThreadsFillingTheConfiguredCapacityExactlyAllFit) {
  constexpr unsigned kThreads = 8;
  constexpr std::size_t kCount = 65536;  // room for 8 threads' chunks
  constexpr std::size_t kPerThread = kCount / kThreads;
  std::mt19937_64 random(20261125);
  std::vector<std::size_t> sizes(kCount);
  std::size_t granules = 0;
  // Each thread's first half is 4 granules an item (a chunk's most payload fits its entries
  // exactly), its second half 1 granule: chunks sized from its average then run out of entries
  // long before payload, and give most of their payload up.
  for (std::size_t i = 0; i < kCount; ++i) {
    sizes[i] = i % kPerThread < kPerThread / 2 ? 49 + random() % 16 : 1 + random() % 16;
    granules += (sizes[i] + kStagingGranule - 1) / kStagingGranule;
  }
  UploadArena a = make(OverflowPolicy::fail, granules * kStagingGranule, kCount);
  std::barrier sync(kThreads);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      sync.arrive_and_wait();
      try {
        for (std::size_t i = t * kPerThread; i < (t + 1) * kPerThread; ++i) {
          std::memset(a.reserve(kBase + i * 512, sizes[i]), static_cast<int>(i), sizes[i]);
          if (i % 16 == 15) sync.arrive_and_wait();  // so that the threads' chunks interleave
        }
      } catch (const Error& e) {
        errors[t] = e.what();
        sync.arrive_and_drop();  // the others go on without this thread
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  for (unsigned t = 0; t < kThreads; ++t)
    EXPECT_EQ(errors[t], "") << "thread " << t;
  EXPECT_EQ(a.descriptor_count(), kCount);

  // Every reservation once, in its own payload, and the empty entries in between harmless.
  a.pad_unused();
  const UploadArena::BlockView v = a.block(0);
  EXPECT_EQ(v.reserved, kCount);
  std::vector<bool> seen(kCount);
  std::uint64_t next_granule = 0;
  for (std::size_t k = 0; k < v.descriptors; ++k) {
    const TransferDescriptor& d = v.table()[v.descriptors - 1 - k];
    ASSERT_GE(d.staging_granule, next_granule) << "payloads ascend with issue order";
    if (d.bytes == 0) continue;
    const std::size_t i = (d.target - kBase) / 512;
    ASSERT_LT(i, kCount);
    EXPECT_FALSE(seen[i]);
    seen[i] = true;
    EXPECT_EQ(d.bytes, sizes[i]);
    EXPECT_EQ(static_cast<unsigned char>(v.host_split[d.staging_granule * kStagingGranule]),
              static_cast<unsigned char>(i));
    next_granule = d.staging_granule + (d.bytes + kStagingGranule - 1) / kStagingGranule;
  }
  EXPECT_LE(next_granule * kStagingGranule, v.payload_bytes);
}

// A chunk that grows in place because its entries ran out tops its payload up to a chunk's
// worth; it must not add a chunk's worth on top of the payload it still has. Items of 1 and 2
// granules in turn make a chunk's payload (2 granules an entry, the average rounded up) a third
// more than its entries use, so adding would pile up a spare granule per two items, which the
// thread gives up in one piece once another thread's chunk lands behind its own: here more than
// the spare room, and the frame would no longer fit its configured capacity. (Found by
// test_cuda_concurrency on 16 cores.)
TEST_F(UploadArenaOrderTest, AChunkGrowingInPlaceKeepsItsUnusedPayloadSmall) {
  constexpr std::size_t kCount = 65536;
  constexpr std::size_t kFirstTurn = kCount / 2;
  const auto size = [](std::size_t i) -> std::size_t { return i % 2 == 0 ? 16 : 32; };
  std::size_t granules = 0;
  for (std::size_t i = 0; i < kCount; ++i)
    granules += size(i) / kStagingGranule;
  UploadArena a = make(OverflowPolicy::fail, granules * kStagingGranule, kCount);
  for (std::size_t i = 0; i < kFirstTurn; ++i)
    reserve(a, kBase + i * 64, size(i));
  on_other_thread([&] { reserve(a, kBase + kCount * 64, 16); });  // a chunk after this thread's
  for (std::size_t i = kFirstTurn; i + 1 < kCount; ++i)
    ASSERT_NO_THROW(reserve(a, kBase + i * 64, size(i))) << "item " << i;
  EXPECT_EQ(a.descriptor_count(), kCount);
  a.pad_unused();
  EXPECT_LE(a.block(0).payload_bytes,
            granules * kStagingGranule + 2 * UploadArena::kMaxChunkGranules * kStagingGranule);
}

TEST_F(UploadArenaOrderTest, MoreThreadsThanChunksAreNotProven) {
  UploadArena a = make();
  for (std::size_t i = 0; i <= UploadArena::kMaxChunks; ++i)
    on_other_thread([&] { reserve(a, kBase + i * 64, 64); });
  EXPECT_FALSE(a.proven_order().has_value());
  EXPECT_EQ(a.descriptor_count(), UploadArena::kMaxChunks + 1);
}

TEST_F(UploadArenaOrderTest, OverflowBlocksAreNeverProven) {
  UploadArena a = make(OverflowPolicy::grow, 4096, 16);
  sweep(a, kBase, 20, 16, 64);  // 20 descriptors: the last 4 in an overflow block
  ASSERT_TRUE(a.overflowed());
  EXPECT_FALSE(a.proven_order().has_value());
}

// Under "grow", an overflow block doubles the side that ran out and sizes the other by the
// frame's average reservation. Doubling both made 131,073 one-byte reservations into an arena of
// 16 MiB and 16 descriptors ask for a 32-GiB pinned block (found by the frame checker). The
// backend's pinned budget turns such a block into out_of_memory; every reservation must fit in
// far less, and so must a frame of large reservations into a tiny table.
TEST_F(UploadArenaOrderTest, OverflowBlocksGrowTheSideThatRanOut) {
  testing::FaultInjectingBackend budgeted(backend);
  budgeted.set_pinned_budget(std::size_t{128} << 20);
  {
    UploadArena tiny_items(budgeted, std::size_t{16} << 20, 16, OverflowPolicy::grow);
    for (std::size_t i = 0; i < (std::size_t{1} << 17) + 1; ++i)
      ASSERT_NO_THROW(reserve(tiny_items, kBase + i, 1)) << "reservation " << i;
    EXPECT_EQ(tiny_items.descriptor_count(), (std::size_t{1} << 17) + 1);
  }
  {
    UploadArena large_items(budgeted, 4096, 1 << 20, OverflowPolicy::grow);
    for (std::size_t i = 0; i < 64; ++i)
      ASSERT_NO_THROW(reserve(large_items, kBase + i * (1 << 20), 1 << 20)) << "reservation " << i;
    EXPECT_EQ(large_items.descriptor_count(), 64u);
  }
  EXPECT_EQ(budgeted.budget_refusals(), 0u);
}

TEST_F(UploadArenaOrderTest, AFailedReservationLeavesTheProofIntact) {
  UploadArena a = make(OverflowPolicy::fail, 4096, 16);
  sweep(a, kBase, 16, 16, 64);
  EXPECT_THROW(reserve(a, kBase + 16 * 64, 16), Error);  // the table is full
  const auto order = a.proven_order();
  ASSERT_TRUE(order.has_value());
  EXPECT_EQ(order->bytes, 16u * 16);
}

}  // namespace
}  // namespace framestage
