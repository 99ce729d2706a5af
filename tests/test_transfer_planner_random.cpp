// TransferPlanner: Randomized frames against writes applied in order on the host, and planning
// early.
#include "support/planner_test.hpp"

#include <gtest/gtest.h>

namespace framestage {
namespace {

using namespace framestage::testing;

// ---------------------------------------------------------------------------------------------
// Randomized: frames of overlapping uploads of 1 B .. 64 KiB and some staged ranges, checked
// against writes applied in order on the host; every strategy, with roomy arenas and with tiny
// growing ones, over several frames.

struct RandomCase {
  UploadStrategy strategy;
  bool tight_arenas;  // overflow blocks in both arenas (grow policy)
  bool early;         // through plan_early and finish_early where plan_early takes the frame
};
void PrintTo(const RandomCase& c, std::ostream* out) {
  *out << to_string(c.strategy) << (c.tight_arenas ? ", growing arenas" : ", roomy arenas")
       << (c.early ? ", planned early" : "");
}

class RandomFrameTest : public PlannerTest, public ::testing::WithParamInterface<RandomCase> {};

// Mostly small, sometimes up to 64 KiB.
std::size_t random_upload_bytes(std::mt19937_64& rng) {
  const auto roll = rng() % 20;
  if (roll < 12) return 1 + rng() % 64;
  if (roll < 17) return 65 + rng() % 1984;
  if (roll < 19) return 2049 + rng() % 14336;
  return 16385 + rng() % 49152;
}

TEST_P(RandomFrameTest, EveryByteArrivesFrameAfterFrame) {
  const RandomCase param = GetParam();
  const std::uint64_t seed = 0x706c616eULL + 2 * static_cast<std::uint64_t>(param.strategy) +
                             (param.tight_arenas ? 1 : 0) + (param.early ? 16 : 0);
  SCOPED_TRACE("seed " + std::to_string(seed));
  announce_seed(seed);
  std::mt19937_64 rng(seed);

  Config config = with_strategy(param.strategy);
  config.direct_copy_threshold_bytes = 8 << 10;
  config.merge_gap_bytes = 256;
  config.pipeline_chunk_bytes = 4096;
  config.zero_copy_max_bytes = 32 << 10;
  ArenaSizes sizes{4 << 20, 4 << 20, 1024, OverflowPolicy::fail};
  if (param.tight_arenas) sizes = {4096, 4096, 16, OverflowPolicy::grow};
  rebuild(config, sizes);

  constexpr std::size_t kDestination = 1 << 20;
  std::byte* dst = destination(kDestination);
  Bytes expected(kDestination, std::byte{0});
  std::size_t superseded = 0;
  std::size_t merged = 0;
  std::size_t direct = 0;
  std::size_t planned_early = 0;
  const std::size_t frame_uploads[] = {40, 150, 300};
  for (std::size_t frame = 0; frame < std::size(frame_uploads); ++frame) {
    SCOPED_TRACE("frame " + std::to_string(frame));
    if (frame > 0) next_frame();
    std::vector<Write> issued;
    std::vector<std::span<std::byte>> mirrored;
    for (std::size_t i = 0; i < frame_uploads[frame]; ++i) {
      Write w{};
      const auto roll = rng() % 16;
      if (!issued.empty() && roll == 0) {
        w = issued[rng() % issued.size()];  // the same destination again
      } else if (!issued.empty() && roll == 1) {
        w = issued[rng() % issued.size()];  // shifted: a partial overlap
        w.offset = std::min(w.offset + 1 + rng() % w.bytes, kDestination - w.bytes);
      } else {
        w.bytes = random_upload_bytes(rng);
        w.offset = rng() % (kDestination - w.bytes + 1);
      }
      Bytes bytes(w.bytes);
      for (auto& b : bytes)
        b = static_cast<std::byte>(rng());
      upload(dst + w.offset, bytes);
      std::copy(bytes.begin(), bytes.end(),
                expected.begin() + static_cast<std::ptrdiff_t>(w.offset));
      issued.push_back(w);
      if (rng() % 20 == 0) {
        mirrored.push_back(frame_alloc(1 + rng() % 300, static_cast<unsigned>(i)));
        stage(mirrored.back());
      }
    }
    if (frame == 0) {
      EXPECT_EQ(uploads->overflowed(), param.tight_arenas);
    }

    // The early path runs the plan as it makes it; the hint is left false, so finish_early also
    // meets the large uploads the hint should have announced.
    const TransferPlan* early = param.early ? execute_early(false) : nullptr;
    planned_early += early != nullptr;
    const TransferPlan& p = early != nullptr ? *early : plan();
    EXPECT_EQ(p.uploads, issued.size());
    EXPECT_EQ(p.staged_ranges, mirrored.size());
    superseded += p.superseded_uploads;
    merged += p.merged_overlaps;
    direct += p.direct_copies.size();
    const bool scatters = p.scattered_bytes > 0;
    switch (param.strategy) {
      case UploadStrategy::direct:
        EXPECT_EQ(p.strategy, UploadStrategy::direct);
        EXPECT_TRUE(p.scatters.empty());
        break;
      case UploadStrategy::zero_copy:
        EXPECT_EQ(p.strategy, scatters ? UploadStrategy::zero_copy : UploadStrategy::automatic);
        break;
      case UploadStrategy::copy_scatter:
        EXPECT_EQ(p.strategy, scatters ? UploadStrategy::copy_scatter : UploadStrategy::automatic);
        break;
      case UploadStrategy::automatic:
        if (early != nullptr) {
          EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter) << "chosen from the payload size";
          break;
        }
        EXPECT_EQ(p.strategy, !scatters ? UploadStrategy::automatic
                              : p.scattered_bytes <= config.zero_copy_max_bytes
                                  ? UploadStrategy::zero_copy
                                  : UploadStrategy::copy_scatter);
        break;
    }
    if (early == nullptr) execute(p);
    EXPECT_TRUE(same_bytes(read(dst, kDestination), expected));
    for (const auto span : mirrored)
      EXPECT_EQ(mirror_of(span), Bytes(span.begin(), span.end()));
  }
  EXPECT_GT(superseded, 0u);
  EXPECT_GT(merged, 0u);
  EXPECT_GT(direct, 0u);
  if (param.early && !param.tight_arenas) {
    EXPECT_GT(planned_early, 0u);
  }
}

std::string random_name(const ::testing::TestParamInfo<RandomCase>& info) {
  return std::string(to_string(info.param.strategy)) +
         (info.param.tight_arenas ? "_growing_arenas" : "_roomy_arenas") +
         (info.param.early ? "_early" : "");
}

INSTANTIATE_TEST_SUITE_P(Strategies, RandomFrameTest,
                         ::testing::Values(RandomCase{UploadStrategy::automatic, false, false},
                                           RandomCase{UploadStrategy::copy_scatter, false, false},
                                           RandomCase{UploadStrategy::zero_copy, false, false},
                                           RandomCase{UploadStrategy::direct, false, false},
                                           RandomCase{UploadStrategy::automatic, true, false},
                                           RandomCase{UploadStrategy::copy_scatter, true, false},
                                           RandomCase{UploadStrategy::zero_copy, true, false},
                                           RandomCase{UploadStrategy::direct, true, false},
                                           RandomCase{UploadStrategy::automatic, false, true},
                                           RandomCase{UploadStrategy::copy_scatter, false, true},
                                           RandomCase{UploadStrategy::copy_scatter, true, true}),
                         random_name);

// ---------------------------------------------------------------------------------------------
// Planning early: a frame's copies go out before its descriptors are scanned

// plan_early takes a frame of one upload block, without large uploads (by the coordinator's
// hint), that copy_scatter carries (outright, or automatic by payload size); it declines any
// other, which plan() then plans. Either way every byte arrives.
struct EarlyCase {
  const char* name;
  UploadStrategy strategy;
  std::size_t zero_copy_max_bytes;
  bool large_uploads;   // the coordinator's hint
  bool overflow;        // the uploads spill into an overflow block
  std::size_t uploads;  // of 256 bytes: 5120 payload bytes for 20
  bool taken;
};
void PrintTo(const EarlyCase& c, std::ostream* out) {
  *out << c.name;
}

class PlanEarlyTest : public PlannerTest, public ::testing::WithParamInterface<EarlyCase> {};

TEST_P(PlanEarlyTest, TakesOnlyOneBlockCopyScatterFramesWithoutLargeUploads) {
  const EarlyCase& c = GetParam();
  Config config = with_strategy(c.strategy);
  config.zero_copy_max_bytes = c.zero_copy_max_bytes;
  rebuild(config, c.overflow
                      ? ArenaSizes{.upload_payload_bytes = 4096, .overflow = OverflowPolicy::grow}
                      : ArenaSizes{});
  const std::size_t extent = 300 * c.uploads + 1;
  std::byte* dst = destination(extent);
  Bytes expected(extent, std::byte{0});
  for (std::size_t i = 0; i < c.uploads; ++i) {
    const Bytes bytes = pattern(256, static_cast<unsigned>(i));
    upload(dst + 300 * i, bytes);
    std::copy(bytes.begin(), bytes.end(), expected.begin() + static_cast<std::ptrdiff_t>(300 * i));
  }
  const auto mirrored = frame_alloc(64, 99);
  stage(mirrored);
  ASSERT_EQ(uploads->overflowed(), c.overflow);
  EXPECT_EQ(planner->plan_early({arena.get(), uploads.get(), staged, c.large_uploads}) != nullptr,
            c.taken);
  const TransferPlan* p = execute_early(c.large_uploads);
  if (p == nullptr) {
    p = &plan();
    execute(*p);
  } else {
    EXPECT_EQ(p->strategy, UploadStrategy::copy_scatter);
    EXPECT_FALSE(resends_table(*p)) << "nothing to correct";
  }
  EXPECT_EQ(p->uploads, c.uploads);
  EXPECT_EQ(p->staged_ranges, 1u);
  EXPECT_TRUE(same_bytes(read(dst, extent), expected));
  EXPECT_EQ(mirror_of(mirrored), Bytes(mirrored.begin(), mirrored.end()));
}

const EarlyCase kEarlyCases[] = {
    {"CopyScatter", UploadStrategy::copy_scatter, 64 << 10, false, false, 20, true},
    {"AutomaticAboveZeroCopyMax", UploadStrategy::automatic, 5119, false, false, 20, true},
    {"AutomaticAtZeroCopyMax", UploadStrategy::automatic, 5120, false, false, 20, false},
    {"LargeUploadsHinted", UploadStrategy::copy_scatter, 64 << 10, true, false, 20, false},
    {"OverflowBlock", UploadStrategy::copy_scatter, 64 << 10, false, true, 20, false},
    {"ZeroCopy", UploadStrategy::zero_copy, 0, false, false, 20, false},
    {"Direct", UploadStrategy::direct, 0, false, false, 20, false},
    {"NoUploads", UploadStrategy::copy_scatter, 64 << 10, false, false, 0, false},
};

std::string early_name(const ::testing::TestParamInfo<EarlyCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Cases, PlanEarlyTest, ::testing::ValuesIn(kEarlyCases), early_name);

// finish_early resolves overlaps (and large uploads the hint missed) after the table went out
// with the first chunk: it re-sends the corrected table and every scatter waits for it.
class FinishEarlyTest : public PlannerTest, public ::testing::WithParamInterface<OverlapCase> {};

TEST_P(FinishEarlyTest, LatestWriteWinsThoughTheTableWentOutFirst) {
  const OverlapCase& c = GetParam();
  Config config = with_strategy(UploadStrategy::copy_scatter);
  config.direct_copy_threshold_bytes = 256;
  rebuild(config);
  constexpr std::size_t kDestination = 512;
  std::byte* dst = destination(kDestination);
  Bytes expected(kDestination, std::byte{0});
  bool large = false;
  for (std::size_t i = 0; i < c.writes.size(); ++i) {
    const Bytes bytes = pattern(c.writes[i].bytes, static_cast<unsigned>(i + 1));
    upload(dst + c.writes[i].offset, bytes);
    std::copy(bytes.begin(), bytes.end(),
              expected.begin() + static_cast<std::ptrdiff_t>(c.writes[i].offset));
    large |= c.writes[i].bytes >= 256;
  }
  const TransferPlan* p = execute_early(false);  // the hint says no large uploads, rightly or not
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->uploads, c.writes.size());
  EXPECT_EQ(p->superseded_uploads, c.superseded);
  EXPECT_EQ(p->merged_overlaps, c.merged);
  const bool rewritten = c.superseded + c.merged > 0 || large;
  EXPECT_EQ(resends_table(*p), rewritten);
  if (rewritten) {
    for (const ScatterOp& op : p->scatters)
      EXPECT_EQ(op.after_copies, p->staging_copies.size());
  }
  EXPECT_EQ(read(dst, kDestination), expected);
}

std::string finish_early_name(const ::testing::TestParamInfo<OverlapCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Cases, FinishEarlyTest, ::testing::ValuesIn(kOverlapCases),
                         finish_early_name);

// Early chunks keep waiting for their own copy only while the table stands; one overlap makes
// every chunk wait for the re-sent table.
class FinishEarlyPipelineTest : public PlannerTest, public ::testing::WithParamInterface<bool> {};

TEST_P(FinishEarlyPipelineTest, ChunksWaitForTheResentTableOnlyIfItChanged) {
  const bool overlap = GetParam();
  Config config = with_strategy(UploadStrategy::copy_scatter);
  config.pipeline_chunk_bytes = 4096;
  rebuild(config);
  constexpr std::size_t kStride = 264;
  std::byte* dst = destination(100 * kStride);
  Bytes expected(100 * kStride, std::byte{0});
  const auto send = [&](std::size_t offset, std::size_t bytes, unsigned tag) {
    const Bytes fill = pattern(bytes, tag);
    upload(dst + offset, fill);
    std::copy(fill.begin(), fill.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
  };
  for (unsigned i = 0; i < 100; ++i)
    send(kStride * i, 256, i);
  if (overlap) send(10, 100, 100);  // inside upload 0: combined with it
  const TransferPlan* p = execute_early(false);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->pipeline_chunks, 2u);  // 25600 B of payload: 21504 + the last 4096
  ASSERT_EQ(p->scatters.size(), 2u);
  EXPECT_EQ(p->merged_overlaps, overlap ? 1u : 0u);
  EXPECT_EQ(resends_table(*p), overlap);
  for (std::size_t k = 0; k < p->scatters.size(); ++k) {
    EXPECT_EQ(p->scatters[k].after_copies, overlap ? p->staging_copies.size() : k + 1)
        << "chunk " << k;
  }
  EXPECT_TRUE(same_bytes(read(dst, expected.size()), expected));
}

std::string overlap_flag_name(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "with_overlap" : "without_overlap";
}

INSTANTIATE_TEST_SUITE_P(Overlap, FinishEarlyPipelineTest, ::testing::Bool(), overlap_flag_name);

// Out of arena for combining overlaps in finish_early, whose table copy is already on its way:
// the cluster goes as ordered copies, the rewritten table is sent again, and the frame is byte
// exact.
TEST_F(PlannerTest, FinishEarlyInAFullArenaSendsOrderedCopies) {
  rebuild(with_strategy(UploadStrategy::copy_scatter), {.arena_bytes = 256});
  stage(frame_alloc(200, 1));  // 208 of the arena's 256 bytes
  std::byte* dst = destination(512);
  const Bytes first = pattern(100, 2);
  const Bytes second = pattern(100, 3);
  const Bytes apart = pattern(40, 4);
  upload(dst, first);
  upload(dst + 50, second);  // combining [0, 150) would need 160 more
  upload(dst + 400, apart);  // scattered
  const std::size_t arena_used = arena->used_bytes();
  const TransferPlan* p = execute_early(false);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(arena->used_bytes(), arena_used);
  EXPECT_EQ(p->ordered_copies.size(), 2u);
  EXPECT_EQ(p->scattered_bytes, 40u);
  EXPECT_TRUE(resends_table(*p));
  Bytes expected(512, std::byte{0});
  std::copy(first.begin(), first.end(), expected.begin());
  std::copy(second.begin(), second.end(), expected.begin() + 50);
  std::copy(apart.begin(), apart.end(), expected.begin() + 400);
  EXPECT_TRUE(same_bytes(read(dst, 512), expected));
}

}  // namespace
}  // namespace framestage
