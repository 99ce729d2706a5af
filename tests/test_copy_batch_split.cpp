// How CudaBackend::copy_batch_async groups copies for the driver (runtime/copy_batch_split.hpp):
// every copy exactly once, large ones one by one, tiny ones never in a call with larger ones, no
// call past the limit. The driver faults on the shapes this keeps from it (issue 18), so a slip
// here is a crash on the GPU that CI would not otherwise see.
#include "copy_batch_split.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace framestage {
namespace {

using detail::CopyBatchLimits;
using detail::CopyBatchList;
using detail::CopyBatchSplit;

constexpr CopyBatchLimits kLimits{4096, std::size_t{64} << 10, 16};

// A list of `count` copies to distinct fake addresses, sizes drawn around every boundary.
std::vector<CopyOp> random_copies(std::size_t count, std::mt19937_64& rng) {
  static constexpr std::size_t kEdges[] = {0, 1, 15, 16, 17, 65535, 65536, 65537, 1 << 20};
  std::vector<CopyOp> copies(count);
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t bytes = 0;
    switch (rng() % 4) {
      case 0:
        bytes = kEdges[rng() % std::size(kEdges)];
        break;
      case 1:
        bytes = rng() % 16;
        break;
      case 2:
        bytes = 16 + rng() % (65536 - 16);
        break;
      default:
        bytes = 65536 + rng() % (4 << 20);
        break;
    }
    copies[i] = CopyOp{reinterpret_cast<void*>(std::uintptr_t{0x10000000} * (i + 1)),
                       reinterpret_cast<const void*>(std::uintptr_t{0x1000} * (i + 1)), bytes};
  }
  std::shuffle(copies.begin(), copies.end(), rng);
  return copies;
}

// Checks `split` against `copies`; returns the number of driver calls.
std::size_t expect_split_of(const CopyBatchSplit& split, const std::vector<CopyOp>& copies) {
  // Every non-empty copy once, with its source and size, in the group its size names.
  std::map<void*, CopyOp> want;
  for (const CopyOp& c : copies)
    if (c.bytes != 0) want.emplace(c.dst, c);
  std::map<void*, std::string> seen;
  const auto found = [&](void* dst, const void* src, std::size_t bytes, const std::string& where) {
    const auto it = want.find(dst);
    EXPECT_NE(it, want.end()) << where << ": a copy to " << dst << " that the list does not hold";
    if (it == want.end()) return;
    EXPECT_EQ(it->second.src, src) << where;
    EXPECT_EQ(it->second.bytes, bytes) << where;
    EXPECT_TRUE(seen.emplace(dst, where).second)
        << "the copy to " << dst << " is in " << where << " and in " << seen[dst];
  };
  for (const CopyOp& c : split.one_by_one) {
    EXPECT_GE(c.bytes, kLimits.min_unbatched_bytes);
    found(c.dst, c.src, c.bytes, "one_by_one");
  }
  for (std::size_t k = 0; k < split.batched.size(); ++k) {
    const CopyBatchList& list = split.batched[k];
    EXPECT_EQ(list.dsts.size(), list.sizes.size());
    EXPECT_EQ(list.srcs.size(), list.sizes.size());
    if (list.dsts.size() != list.sizes.size() || list.srcs.size() != list.sizes.size()) return 0;
    for (std::size_t i = 0; i < list.sizes.size(); ++i) {
      if (k == 0) {
        EXPECT_LT(list.sizes[i], kLimits.tiny_bytes) << "a copy of " << list.sizes[i] << " B";
      } else {
        EXPECT_GE(list.sizes[i], kLimits.tiny_bytes);
        EXPECT_LT(list.sizes[i], kLimits.min_unbatched_bytes);
      }
      found(list.dsts[i], list.srcs[i], list.sizes[i], "batch list " + std::to_string(k));
    }
  }
  EXPECT_EQ(seen.size(), want.size()) << "copies left out";

  // The calls: each list in order, in runs of at most the limit, no run across the lists.
  std::array<std::size_t, 2> covered{};
  std::size_t calls = 0;
  split.for_each_call([&](const CopyBatchList& list, std::size_t first, std::size_t count) {
    ++calls;
    const std::size_t k = &list == &split.batched[0] ? 0 : 1;
    EXPECT_TRUE(&list == &split.batched[0] || &list == &split.batched[1]);
    if (k == 1) {
      EXPECT_EQ(covered[0], split.batched[0].sizes.size()) << "tiny list first";
    }
    EXPECT_EQ(first, covered[k]) << "calls of a list run back to back";
    EXPECT_GT(count, 0u);
    EXPECT_LE(count, kLimits.max_copies_per_call);
    EXPECT_LE(first + count, list.sizes.size());
    covered[k] = first + count;
  });
  for (std::size_t k = 0; k < 2; ++k)
    EXPECT_EQ(covered[k], split.batched[k].sizes.size()) << "list " << k << " not all sent";
  return calls;
}

TEST(CopyBatchSplit, EveryCopyOnceAndNoCallMixesTinyWithLarger) {
  std::mt19937_64 rng(18);
  CopyBatchSplit split;  // reused, as CudaBackend's per-thread one is
  for (const std::size_t count : {0, 1, 2, 15, 4095, 4096, 4097, 8193, 20000, 50000}) {
    SCOPED_TRACE(std::to_string(count) + " copies");
    const std::vector<CopyOp> copies = random_copies(count, rng);
    split.assign(copies, kLimits);
    const std::size_t calls = expect_split_of(split, copies);
    std::size_t want_calls = 0;
    for (const CopyBatchList& list : split.batched)
      want_calls +=
          (list.sizes.size() + kLimits.max_copies_per_call - 1) / kLimits.max_copies_per_call;
    EXPECT_EQ(calls, want_calls);
  }
}

TEST(CopyBatchSplit, EmptyCopiesReachNoCall) {
  const std::vector<CopyOp> copies(10, CopyOp{reinterpret_cast<void*>(0x1000), nullptr, 0});
  CopyBatchSplit split;
  split.assign(copies, kLimits);
  EXPECT_TRUE(split.one_by_one.empty());
  std::size_t calls = 0;
  split.for_each_call([&](const CopyBatchList&, std::size_t, std::size_t) { ++calls; });
  EXPECT_EQ(calls, 0u);
}

// Issue 18's 50,000 log-uniform copies of 1 B-16 KiB: over a quarter go under 16 B; every call
// holds at most 4,096 copies of one kind.
TEST(CopyBatchSplit, IssueEighteensWorkloadGoesInCallsOfOneKind) {
  std::mt19937_64 rng(50'000);
  std::uniform_real_distribution<double> log_size(0, std::log(16385.0));
  std::vector<CopyOp> copies(50'000);
  for (std::size_t i = 0; i < copies.size(); ++i)
    copies[i] = CopyOp{reinterpret_cast<void*>(std::uintptr_t{0x10000} * (i + 1)),
                       reinterpret_cast<const void*>(std::uintptr_t{0x10} * (i + 1)),
                       std::clamp<std::size_t>(std::size_t(std::exp(log_size(rng))), 1, 16384)};
  CopyBatchSplit split;
  split.assign(copies, kLimits);
  EXPECT_TRUE(split.one_by_one.empty());
  EXPECT_GT(split.batched[0].sizes.size(), 10'000u);
  EXPECT_GT(split.batched[1].sizes.size(), 30'000u);
  const auto calls_for = [](std::size_t n) { return (n + 4095) / 4096; };
  EXPECT_EQ(expect_split_of(split, copies),
            calls_for(split.batched[0].sizes.size()) + calls_for(split.batched[1].sizes.size()));
}

}  // namespace
}  // namespace framestage
