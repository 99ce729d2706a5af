// TransferPlanner: Staged mirror ranges, small uploads (copy and scatter, zero-copy) and the
// chunked copy-and-scatter pipeline.
#include "support/planner_test.hpp"

#include <gtest/gtest.h>

namespace framestage {
namespace {

using namespace framestage::testing;

// ---------------------------------------------------------------------------------------------
// Staged mirror ranges

TEST_F(PlannerTest, EmptyFrameEnqueuesNothing) {
  const TransferPlan& p = plan();
  EXPECT_TRUE(p.staging_copies.empty());
  EXPECT_TRUE(p.direct_copies.empty());
  EXPECT_TRUE(p.scatters.empty());
  EXPECT_EQ(p.strategy, UploadStrategy::automatic);
  EXPECT_EQ(p.uploads, 0u);
  EXPECT_EQ(p.staged_ranges, 0u);
  EXPECT_EQ(p.staging_copy_bytes, 0u);
  EXPECT_EQ(p.pipeline_chunks, 0u);
}

TEST_F(PlannerTest, AdjacentStagedRangesBecomeOneCopy) {
  const auto a = frame_alloc(64, 1);
  const auto b = frame_alloc(64, 2);
  const auto c = frame_alloc(64, 3);
  stage(a);
  stage(b);
  stage(c);
  const TransferPlan& p = plan();
  const auto block = arena->block(0);
  EXPECT_EQ(sorted_copies(p.staging_copies), (std::vector<Copy>{{block.device, block.host, 192}}));
  EXPECT_EQ(p.staged_ranges, 3u);
  EXPECT_EQ(p.mirror_bytes, 192u);
  EXPECT_EQ(p.staging_copy_bytes, 192u);
  EXPECT_TRUE(p.scatters.empty());
  EXPECT_EQ(p.strategy, UploadStrategy::automatic);
  execute(p);
  for (auto span : {a, b, c})
    EXPECT_EQ(mirror_of(span), Bytes(span.begin(), span.end()));
}

// A gap of exactly merge_gap_bytes is copied along; one byte more splits the copy. Staged in
// descending order, so the planner has to sort.
TEST_F(PlannerTest, StagedRangesFartherApartThanTheMergeGapStaySeparate) {
  Config config;
  config.merge_gap_bytes = 64;
  rebuild(config);
  const auto chunk = frame_alloc(1024, 7);
  stage(chunk.subspan(400, 10));  // 255 bytes past [129, 145): its own copy
  stage(chunk.subspan(1, 64));    // [1, 65): gap of 64 to the next
  stage(chunk.subspan(129, 16));  // [129, 145): merges with [1, 65)
  stage(chunk.subspan(0, 1));     // touches [1, 65)
  const TransferPlan& p = plan();
  const auto block = arena->block(0);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            (std::vector<Copy>{{block.device, block.host, 145},
                               {block.device + 400, block.host + 400, 10}}));
  EXPECT_EQ(p.mirror_bytes, 10u + 64u + 16u + 1u);
  EXPECT_EQ(p.staging_copy_bytes, 155u);
  execute(p);
  EXPECT_EQ(mirror_of(chunk.subspan(0, 145)), Bytes(chunk.begin(), chunk.begin() + 145));
  EXPECT_EQ(mirror_of(chunk.subspan(400, 10)), Bytes(chunk.begin() + 400, chunk.begin() + 410));
  EXPECT_EQ(mirror_of(chunk.subspan(145, 1)), Bytes{kPoison}) << "a byte nobody staged was sent";
}

TEST_F(PlannerTest, DuplicateAndOverlappingStagedRangesBecomeOneCopy) {
  Config config;
  config.merge_gap_bytes = 0;
  rebuild(config);
  const auto chunk = frame_alloc(256, 9);
  stage(chunk.subspan(16, 100));
  stage(chunk.subspan(16, 100));
  stage(chunk.subspan(50, 150));  // [50, 200)
  stage(chunk.subspan(60, 10));   // inside
  const TransferPlan& p = plan();
  const auto block = arena->block(0);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            (std::vector<Copy>{{block.device + 16, block.host + 16, 184}}));
  EXPECT_EQ(p.staged_ranges, 4u);
  EXPECT_EQ(p.mirror_bytes, 360u) << "counted before merging";
  EXPECT_EQ(p.staging_copy_bytes, 184u);
  execute(p);
  EXPECT_EQ(mirror_of(chunk.subspan(16, 184)), Bytes(chunk.begin() + 16, chunk.begin() + 200));
}

// Config documents that a huge merge_gap_bytes "merges everything"; end + gap must not wrap.
TEST_F(PlannerTest, HugeMergeGapMergesEveryRangeOfABlock) {
  Config config;
  config.merge_gap_bytes = std::numeric_limits<std::size_t>::max();
  rebuild(config);
  const auto chunk = frame_alloc(4096, 4);
  stage(chunk.subspan(0, 16));
  stage(chunk.subspan(16, 16));  // touching
  stage(chunk.subspan(4000, 96));
  const TransferPlan& p = plan();
  const auto block = arena->block(0);
  EXPECT_EQ(sorted_copies(p.staging_copies), (std::vector<Copy>{{block.device, block.host, 4096}}));
  execute(p);
  for (const auto span : {chunk.subspan(0, 32), chunk.subspan(4000, 96)})
    EXPECT_EQ(mirror_of(span), Bytes(span.begin(), span.end()));
}

// ...but never across arena blocks, which are separate allocations on both sides.
TEST_F(PlannerTest, StagedRangesOfDifferentArenaBlocksAreNeverMerged) {
  Config config;
  config.merge_gap_bytes = std::numeric_limits<std::size_t>::max();
  rebuild(config, {.arena_bytes = 4096, .overflow = OverflowPolicy::grow});
  const auto first = frame_alloc(4000, 1);
  const auto second = frame_alloc(4000, 2);  // does not fit the main block
  ASSERT_EQ(arena->block_count(), 2u);
  stage(second);
  stage(first);
  const TransferPlan& p = plan();
  const auto main_block = arena->block(0);
  const auto overflow = arena->block(1);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            sorted_copies(std::vector<CopyOp>{{main_block.device, main_block.host, 4000},
                                              {overflow.device, overflow.host, 4000}}));
  execute(p);
  for (const auto span : {first, second})
    EXPECT_EQ(mirror_of(span), Bytes(span.begin(), span.end()));
}

// ---------------------------------------------------------------------------------------------
// Small uploads: how they travel

// Five small uploads to ascending destinations.
struct SmallUploads {
  std::vector<std::byte*> dst;
  std::vector<Bytes> bytes;
  std::size_t total = 0;
};

class SmallUploadTest : public PlannerTest {
 protected:
  SmallUploads upload_five() {
    SmallUploads u;
    std::byte* base = destination(4096);
    const std::size_t sizes[] = {16, 40, 100, 7, 64};
    std::size_t offset = 0;
    for (std::size_t i = 0; i < std::size(sizes); ++i) {
      u.dst.push_back(base + offset);
      u.bytes.push_back(pattern(sizes[i], static_cast<unsigned>(10 + i)));
      upload(u.dst.back(), u.bytes.back());
      u.total += sizes[i];
      offset += sizes[i] + 3;  // not touching, still ascending
    }
    return u;
  }
  void expect_delivered(const SmallUploads& u) {
    for (std::size_t i = 0; i < u.dst.size(); ++i) {
      EXPECT_EQ(read(u.dst[i], u.bytes[i].size()), u.bytes[i]) << "upload " << i;
    }
  }
};

// copy_scatter: chosen outright, or by automatic when the total exceeds zero_copy_max_bytes. One
// copy ships the descriptor table and the payloads above it; one scatter reads both.
class CopyScatterTest : public SmallUploadTest,
                        public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(CopyScatterTest, OneCopyShipsTableAndPayloadsThenOneScatter) {
  Config config = with_strategy(GetParam());
  config.zero_copy_max_bytes = 226;  // the five uploads total 227 bytes
  rebuild(config);
  const SmallUploads u = upload_five();
  ASSERT_EQ(u.total, 227u);
  const TransferPlan& p = plan();
  const auto block = uploads->block(0);
  ASSERT_EQ(block.descriptors, 5u);
  ASSERT_EQ(block.payload_bytes, 16u + 48u + 112u + 16u + 64u) << "granule-padded payloads";
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            (std::vector<Copy>{{block.device_split - 5 * 16, block.host_split - 5 * 16,
                                5 * 16 + block.payload_bytes}}));
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].table,
            reinterpret_cast<const TransferDescriptor*>(block.device_split) - 5);
  EXPECT_EQ(p.scatters[0].count, 5u);
  EXPECT_EQ(p.scatters[0].staging, block.device_split);
  EXPECT_EQ(p.scatters[0].after_copies, 1u);
  EXPECT_EQ(p.pipeline_chunks, 1u);
  EXPECT_TRUE(p.direct_copies.empty());
  EXPECT_EQ(p.uploads, 5u);
  EXPECT_EQ(p.scattered_bytes, 227u);
  EXPECT_EQ(p.direct_bytes, 0u);
  EXPECT_EQ(p.staging_copy_bytes, 80u + 256u);
  execute(p);
  expect_delivered(u);
}

INSTANTIATE_TEST_SUITE_P(Strategies, CopyScatterTest,
                         ::testing::Values(UploadStrategy::copy_scatter, UploadStrategy::automatic),
                         strategy_name);

// zero_copy: chosen outright, or by automatic at exactly zero_copy_max_bytes. A staged range is
// still copied; the table and payloads are not.
class ZeroCopyTest : public SmallUploadTest,
                     public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(ZeroCopyTest, ScatterReadsThePinnedBlockInPlace) {
  Config config = with_strategy(GetParam());
  config.zero_copy_max_bytes = 227;
  rebuild(config);
  const auto mirrored = frame_alloc(48, 3);
  stage(mirrored);
  const SmallUploads u = upload_five();
  const TransferPlan& p = plan();
  const auto mirror = arena->block(0);
  const auto block = uploads->block(0);
  EXPECT_EQ(p.strategy, UploadStrategy::zero_copy);
  EXPECT_EQ(sorted_copies(p.staging_copies), (std::vector<Copy>{{mirror.device, mirror.host, 48}}))
      << "only the staged range travels by copy";
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].table,
            reinterpret_cast<const TransferDescriptor*>(block.mapped_split) - 5);
  EXPECT_EQ(p.scatters[0].table, block.table()) << "mapped is host on the host backend";
  EXPECT_EQ(p.scatters[0].count, 5u);
  EXPECT_EQ(p.scatters[0].staging, block.mapped_split);
  EXPECT_EQ(p.scatters[0].after_copies, 0u);
  EXPECT_EQ(p.pipeline_chunks, 0u);
  EXPECT_EQ(p.scattered_bytes, 227u);
  execute(p);
  expect_delivered(u);
  EXPECT_EQ(mirror_of(mirrored), Bytes(mirrored.begin(), mirrored.end()));
}

INSTANTIATE_TEST_SUITE_P(Strategies, ZeroCopyTest,
                         ::testing::Values(UploadStrategy::zero_copy, UploadStrategy::automatic),
                         strategy_name);

// ---------------------------------------------------------------------------------------------
// Copy-and-scatter in chunks: each chunk's scatter waits only for its own copy

struct PipelineCase {
  const char* name;
  std::size_t uploads;
  std::size_t bytes;                       // each
  std::vector<std::size_t> chunk_uploads;  // uploads per chunk, with pipeline_chunk_bytes 4096
};
void PrintTo(const PipelineCase& c, std::ostream* out) {
  *out << c.name;
}

class PipelineTest
    : public PlannerTest,
      public ::testing::WithParamInterface<std::tuple<PipelineCase, UploadStrategy>> {};

TEST_P(PipelineTest, EachChunkIsScatteredAfterItsOwnCopy) {
  const auto& [c, strategy] = GetParam();
  Config config = with_strategy(strategy);
  config.pipeline_chunk_bytes = 4096;
  config.zero_copy_max_bytes = 0;  // automatic copies and scatters too
  rebuild(config);
  const std::size_t stride = c.bytes + 8;
  std::byte* dst = destination(c.uploads * stride);
  Bytes expected(c.uploads * stride, std::byte{0});
  for (std::size_t i = 0; i < c.uploads; ++i) {
    const Bytes bytes = pattern(c.bytes, static_cast<unsigned>(i));
    upload(dst + i * stride, bytes);
    std::copy(bytes.begin(), bytes.end(),
              expected.begin() + static_cast<std::ptrdiff_t>(i * stride));
  }
  const TransferPlan& p = plan();
  const auto block = uploads->block(0);
  ASSERT_EQ(block.payload_bytes, c.uploads * padded(c.bytes));
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  const std::size_t chunks = c.chunk_uploads.size();
  EXPECT_EQ(p.pipeline_chunks, chunks);
  ASSERT_EQ(p.scatters.size(), chunks);
  ASSERT_EQ(p.staging_copies.size(), chunks) << "one copy per chunk";
  // The first copy starts with the table; the copies then walk up the payloads without a gap,
  // and the chunks' descriptors follow one another in issue order (down the table).
  EXPECT_EQ(p.staging_copies.front().dst, block.device_split - block.table_bytes());
  const auto* below = reinterpret_cast<const TransferDescriptor*>(block.device_split);
  const std::byte* copied_to = block.device_split - block.table_bytes();
  for (std::size_t k = 0; k < chunks; ++k) {
    SCOPED_TRACE("chunk " + std::to_string(k));
    const CopyOp& copy = p.staging_copies[k];
    const ScatterOp& op = p.scatters[k];
    EXPECT_EQ(op.after_copies, k + 1) << "waits for its own copy, not for later ones";
    EXPECT_EQ(op.staging, block.device_split);
    EXPECT_EQ(op.count, c.chunk_uploads[k]);
    EXPECT_EQ(op.table + op.count, below);
    below = op.table;
    EXPECT_EQ(copy.dst, copied_to);
    copied_to = static_cast<const std::byte*>(copy.dst) + copy.bytes;
    EXPECT_EQ(copy.bytes,
              c.chunk_uploads[k] * padded(c.bytes) + (k == 0 ? block.table_bytes() : 0));
  }
  EXPECT_EQ(below, reinterpret_cast<const TransferDescriptor*>(block.device_split) - c.uploads);
  EXPECT_EQ(copied_to, block.device_split + block.payload_bytes);
  execute(p);
  EXPECT_TRUE(same_bytes(read(dst, expected.size()), expected));
}

// Chunks are cut back from the end of the payload: 4096 B, then 8x that, ..., while the first
// chunk keeps at least as many bytes as the one after it; an upload belongs to the chunk its
// payload starts in.
const PipelineCase kPipelineCases[] = {
    {"LastChunkThenTheRest", 100, 256, {84, 16}},  // 25600 B: 21504 + 4096
    {"ChunksGrowEightfoldBackward",
     600,
     1024,
     {308, 256, 32, 4}},                                    // 315392 + 262144 + 32768 + 4096
    {"TwiceTheLastChunkIsTwoChunks", 512, 16, {256, 256}},  // 8192 B
    {"UnderTwiceTheLastChunkIsOneChunk", 257, 1, {257}},    // 4112 B
    {"BoundaryInsideAnUpload", 5, 4000, {4, 1}},         // cut at 15904: upload 4 starts at 16000
    {"ChunkStartingNoUploadIsDropped", 2, 200000, {2}},  // cut at 395904: both start before
    {"ExactlyOneChunkOfPayload", 16, 256, {16}},         // 4096 B
    {"SmallFrameIsOneChunk", 10, 100, {10}},             // 1120 B
};

std::string pipeline_name(
    const ::testing::TestParamInfo<std::tuple<PipelineCase, UploadStrategy>>& info) {
  return std::string(std::get<0>(info.param).name) + "_" +
         std::string(to_string(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(Cases, PipelineTest,
                         ::testing::Combine(::testing::ValuesIn(kPipelineCases),
                                            ::testing::Values(UploadStrategy::copy_scatter,
                                                              UploadStrategy::automatic)),
                         pipeline_name);

// Payloads sent as direct copies leave holes in the chunk copies, the first upload included
// (chunk 0's copy is then the table alone); their descriptors stay in the table with 0 bytes.
TEST_F(PlannerTest, DirectPayloadsAreLeftOutOfTheChunkCopies) {
  Config config = with_strategy(UploadStrategy::copy_scatter);
  config.pipeline_chunk_bytes = 4096;
  config.direct_copy_threshold_bytes = 1024;
  rebuild(config);
  const std::size_t sizes[] = {2000, 100, 300, 1500, 16, 700, 1024, 50, 3000, 200};
  constexpr std::size_t kStride = 4096;
  constexpr std::size_t kUploads = 40;
  std::byte* dst = destination(kUploads * kStride);
  Bytes expected(kUploads * kStride, std::byte{0});
  std::vector<CopyOp> direct;
  std::vector<std::size_t> direct_offsets;  // from the split point
  std::size_t scattered = 0;
  for (std::size_t i = 0; i < kUploads; ++i) {
    const std::size_t bytes = sizes[i % std::size(sizes)];
    const Bytes fill = pattern(bytes, static_cast<unsigned>(i));
    std::byte* payload = upload(dst + i * kStride, fill);
    std::copy(fill.begin(), fill.end(),
              expected.begin() + static_cast<std::ptrdiff_t>(i * kStride));
    if (bytes >= 1024) {
      direct.push_back({dst + i * kStride, payload, bytes});
      direct_offsets.push_back(static_cast<std::size_t>(payload - uploads->block(0).host_split));
    } else {
      scattered += bytes;
    }
  }
  const std::vector<Entry> before = issued_descriptors();
  const TransferPlan& p = plan();
  const auto block = uploads->block(0);
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  EXPECT_EQ(sorted_copies(p.direct_copies), sorted_copies(direct))
      << "direct payloads are read from pinned memory";
  EXPECT_EQ(p.scattered_bytes, scattered);
  EXPECT_EQ(p.pipeline_chunks, 2u) << "35776 B of payload: 31680 + the last 4096";
  const std::vector<Entry> after = issued_descriptors();
  ASSERT_EQ(after.size(), kUploads);
  for (std::size_t i = 0; i < kUploads; ++i) {
    const bool is_direct = sizes[i % std::size(sizes)] >= 1024;
    EXPECT_EQ(std::get<0>(after[i]), std::get<0>(before[i])) << "upload " << i;
    EXPECT_EQ(std::get<1>(after[i]), std::get<1>(before[i])) << "upload " << i;
    EXPECT_EQ(std::get<2>(after[i]), is_direct ? 0u : std::get<2>(before[i])) << "upload " << i;
  }
  EXPECT_EQ(p.staging_copies.front().dst, block.device_split - block.table_bytes());
  EXPECT_EQ(p.staging_copies.front().bytes, block.table_bytes())
      << "the first upload is direct: chunk 0's first copy is the table alone";
  execute(p);
  EXPECT_TRUE(same_bytes(read(dst, expected.size()), expected));
  for (std::size_t k = 0; k < direct.size(); ++k) {
    EXPECT_EQ(read(block.device_split + direct_offsets[k], direct[k].bytes),
              Bytes(direct[k].bytes, kPoison))
        << "direct payload " << k << " was staged";
  }
}

}  // namespace
}  // namespace framestage
