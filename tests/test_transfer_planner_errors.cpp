// TransferPlanner: Errors and reuse: reservation sizes, full upload arenas, the next frame.
#include "support/planner_test.hpp"

#include <gtest/gtest.h>

namespace framestage {
namespace {

using namespace framestage::testing;

// ---------------------------------------------------------------------------------------------
// Errors and reuse

// Reservations of 0 bytes or more than kMaxReservationBytes are misuse under either policy, and
// leave what was reserved before intact.
class ReserveSizeTest
    : public PlannerTest,
      public ::testing::WithParamInterface<std::tuple<std::size_t, OverflowPolicy>> {};

TEST_P(ReserveSizeTest, OutsideOneToMaxReservationBytesIsMisuse) {
  const auto [bytes, policy] = GetParam();
  rebuild(Config{}, {.overflow = policy});
  std::byte* dst = destination(64);
  const Bytes first = pattern(32, 1);
  upload(dst, first);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "a reservation must be 1..",
                           [&] { (void)uploads->reserve(address(dst + 32), bytes); }));
  EXPECT_EQ(uploads->descriptor_count(), 1u);
  EXPECT_FALSE(uploads->overflowed());
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, 1u);
  execute(p);
  EXPECT_EQ(read(dst, 32), first);
  EXPECT_EQ(read(dst + 32, 32), Bytes(32, std::byte{0}));
}

std::string reserve_size_name(
    const ::testing::TestParamInfo<std::tuple<std::size_t, OverflowPolicy>>& info) {
  return (std::get<0>(info.param) == 0 ? std::string("zero_bytes")
                                       : std::string("too_many_bytes")) +
         "_" + std::string(to_string(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, ReserveSizeTest,
    ::testing::Combine(::testing::Values(std::size_t{0}, UploadArena::kMaxReservationBytes + 1),
                       ::testing::Values(OverflowPolicy::fail, OverflowPolicy::grow)),
    reserve_size_name);

// A full descriptor table or payload area: under OverflowPolicy::fail the reservation throws,
// naming the remedy, and what was reserved before is planned and delivered; under grow it fits.
struct FullCase {
  const char* name;
  std::size_t payload_bytes;
  std::size_t max_uploads;
  std::vector<std::size_t> fitting;    // reserved first
  std::size_t refused;                 // does not fit
  std::vector<std::string> fragments;  // of the error message
  std::size_t still_fits;              // a smaller reservation that fits afterwards; 0: none
};
void PrintTo(const FullCase& c, std::ostream* out) {
  *out << c.name;
}

class FullUploadArenaTest : public PlannerTest, public ::testing::WithParamInterface<FullCase> {
 protected:
  std::byte* destination_of(std::size_t i) { return dst_ + 8192 * i; }
  std::byte* dst_ = nullptr;
};

TEST_P(FullUploadArenaTest, FailPolicyThrowsAndKeepsEarlierReservations) {
  const FullCase& c = GetParam();
  rebuild(Config{}, {.upload_payload_bytes = c.payload_bytes, .max_uploads = c.max_uploads});
  dst_ = destination(8192 * (c.fitting.size() + 2));
  std::vector<Bytes> sent;
  for (std::size_t i = 0; i < c.fitting.size(); ++i) {
    sent.push_back(pattern(c.fitting[i], static_cast<unsigned>(i)));
    upload(destination_of(i), sent.back());
  }
  const std::size_t refused_at = c.fitting.size();
  for (const std::string& fragment : c.fragments) {
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, fragment, [&] {
      (void)uploads->reserve(address(destination_of(refused_at)), c.refused);
    }));
  }
  EXPECT_EQ(uploads->descriptor_count(), c.fitting.size());
  const auto block = uploads->block(0);
  std::size_t reserved = 0;
  for (const std::size_t bytes : c.fitting)
    reserved += padded(bytes);
  EXPECT_EQ(block.payload_bytes, reserved) << "the refused reservation took nothing";
  if (c.still_fits > 0) {
    sent.push_back(pattern(c.still_fits, 99));
    upload(destination_of(refused_at + 1), sent.back());
  }
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, sent.size());
  execute(p);
  for (std::size_t i = 0; i < c.fitting.size(); ++i)
    EXPECT_EQ(read(destination_of(i), sent[i].size()), sent[i]) << "upload " << i;
  if (c.still_fits > 0) {
    EXPECT_EQ(read(destination_of(refused_at + 1), c.still_fits), sent.back());
  }
  EXPECT_EQ(read(destination_of(refused_at), c.refused), Bytes(c.refused, std::byte{0}));
}

TEST_P(FullUploadArenaTest, GrowPolicyTakesAnOverflowBlock) {
  const FullCase& c = GetParam();
  rebuild(Config{}, {.upload_payload_bytes = c.payload_bytes,
                     .max_uploads = c.max_uploads,
                     .overflow = OverflowPolicy::grow});
  dst_ = destination(8192 * (c.fitting.size() + 2));
  std::vector<std::size_t> sizes = c.fitting;
  sizes.push_back(c.refused);
  if (c.still_fits > 0) sizes.push_back(c.still_fits);
  std::vector<Bytes> sent;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    sent.push_back(pattern(sizes[i], static_cast<unsigned>(i)));
    upload(destination_of(i), sent.back());
  }
  EXPECT_TRUE(uploads->overflowed());
  EXPECT_EQ(uploads->block(0).descriptors, c.fitting.size()) << "later ones follow in order";
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, sizes.size());
  execute(p);
  for (std::size_t i = 0; i < sizes.size(); ++i)
    EXPECT_EQ(read(destination_of(i), sent[i].size()), sent[i]) << "upload " << i;
}

std::string full_name(const ::testing::TestParamInfo<FullCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(
    Limits, FullUploadArenaTest,
    ::testing::Values(FullCase{"DescriptorTable",
                               4096,
                               4,
                               {16, 16, 16, 16},
                               16,
                               {"max_uploads_per_frame (4)", "raise max_uploads_per_frame"},
                               0},
                      FullCase{"PayloadArea",
                               4096,
                               64,
                               {4000},
                               200,
                               {"200 bytes do not fit", "capacity 4096 bytes, 4000 used",
                                "raise upload_arena_bytes"},
                               96}),
    full_name);

// Combining partial overlaps needs frame-arena space; without it the cluster goes as ordered
// copies, in issue order, from the pinned payloads: the frame still ends, byte exact, and the
// arena is untouched.
TEST_F(PlannerTest, OverlapsInAFullArenaGoAsOrderedCopies) {
  rebuild(Config{}, {.arena_bytes = 256});
  stage(frame_alloc(200, 1));  // 208 of the arena's 256 bytes
  std::byte* dst = destination(256);
  const Bytes first = pattern(100, 2);
  const Bytes second = pattern(100, 3);
  const Bytes third = pattern(30, 5);
  std::byte* first_payload = upload(dst, first);
  std::byte* second_payload = upload(dst + 50, second);  // combining [0, 150) needs 160 more
  std::byte* third_payload = upload(dst + 20, third);    // inside both
  const std::size_t arena_used = arena->used_bytes();
  const TransferPlan& p = plan();
  EXPECT_EQ(arena->used_bytes(), arena_used);
  EXPECT_EQ(p.merged_overlaps, 2u);
  EXPECT_EQ(p.direct_bytes, 230u);
  EXPECT_EQ(p.scattered_bytes, 0u);
  ASSERT_EQ(p.ordered_copies.size(), 3u);
  const auto copy = [&](std::size_t i) {
    const CopyOp& c = p.ordered_copies[i];
    return Copy{c.dst, c.src, c.bytes};
  };
  EXPECT_EQ(copy(0), (Copy{dst, first_payload, 100}));
  EXPECT_EQ(copy(1), (Copy{dst + 50, second_payload, 100}));
  EXPECT_EQ(copy(2), (Copy{dst + 20, third_payload, 30})) << "issue order";
  execute(p);
  Bytes expected(256, std::byte{0});
  std::copy(first.begin(), first.end(), expected.begin());
  std::copy(second.begin(), second.end(), expected.begin() + 50);
  std::copy(third.begin(), third.end(), expected.begin() + 20);
  EXPECT_TRUE(same_bytes(read(dst, 256), expected));
}

// Config::validate accepts max_uploads_per_frame up to 2^26, so a table of 2^26 descriptors must
// count all of them and refuse the next one. Heavy for a unit test (2^26 reservations, a 1 GiB
// table and payload area mostly left untouched), but the limit is only reached this way.
TEST_F(PlannerTest, TableOfTheLargestAllowedSizeCountsEveryUpload) {
  constexpr std::size_t kMaxUploads = std::size_t{1} << 26;
  Config limits;
  limits.max_uploads_per_frame = kMaxUploads;
  ASSERT_NO_THROW(limits.validate());
  rebuild(Config{},
          {.upload_payload_bytes = kMaxUploads * kStagingGranule, .max_uploads = kMaxUploads});
  std::byte* dst = destination(kMaxUploads + kMaxUploads / 8 + 1);
  // The configured count always fits; the spare room for threads' chunks (an eighth) may take
  // more before the table is full.
  std::size_t reserved = 0;
  while (reserved <= kMaxUploads + kMaxUploads / 8) {
    try {
      (void)uploads->reserve(address(dst + reserved), 1);  // payloads left unwritten
    } catch (const Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::out_of_memory);
      EXPECT_NE(std::string(e.what()).find("raise max_uploads_per_frame"), std::string::npos)
          << e.what();
      break;
    }
    ++reserved;
  }
  EXPECT_GE(reserved, kMaxUploads);
  EXPECT_LE(reserved, kMaxUploads + kMaxUploads / 8);
  EXPECT_EQ(uploads->descriptor_count(), reserved);
  EXPECT_EQ(plan().uploads, reserved);
}

// The planner keeps scratch space between frames, never results.
TEST_F(PlannerTest, NextFrameStartsFromAnEmptyPlan) {
  Config config = with_strategy(UploadStrategy::copy_scatter);
  config.pipeline_chunk_bytes = 4096;
  rebuild(config);
  std::byte* dst = destination(32 << 10);
  for (unsigned i = 0; i < 20; ++i)
    upload(dst + 1024 * i, pattern(1000, i));
  upload(dst + 50, pattern(100, 20));         // partial overlap with upload 0: combined
  upload(dst + 3 * 1024, pattern(1000, 21));  // covers upload 3: drops it
  stage(frame_alloc(16, 22));
  const TransferPlan& first = plan();
  EXPECT_EQ(first.uploads, 22u);
  EXPECT_EQ(first.merged_overlaps, 1u);
  EXPECT_EQ(first.superseded_uploads, 1u);
  EXPECT_EQ(first.staged_ranges, 1u);
  EXPECT_EQ(first.direct_copies.size(), 1u);
  EXPECT_GT(first.pipeline_chunks, 1u);
  execute(first);

  next_frame();
  const Bytes next = pattern(40, 23);
  upload(dst + 30000, next);
  const TransferPlan& second = plan();
  EXPECT_EQ(second.uploads, 1u);
  EXPECT_EQ(second.staged_ranges, 0u);
  EXPECT_EQ(second.mirror_bytes, 0u);
  EXPECT_EQ(second.superseded_uploads, 0u);
  EXPECT_EQ(second.merged_overlaps, 0u);
  EXPECT_EQ(second.scattered_bytes, 40u);
  EXPECT_EQ(second.direct_bytes, 0u);
  EXPECT_TRUE(second.direct_copies.empty());
  EXPECT_EQ(second.pipeline_chunks, 1u);
  ASSERT_EQ(second.staging_copies.size(), 1u);
  EXPECT_EQ(second.staging_copy_bytes, 16u + 48u);
  ASSERT_EQ(second.scatters.size(), 1u);
  EXPECT_EQ(second.scatters[0].count, 1u);
  execute(second);
  EXPECT_EQ(read(dst + 30000, 40), next);
}

// Readbacks use an UploadArena whose targets are device sources. The main block is cut into
// chunks growing from pipeline_chunk_bytes (smallest first, so the copy back starts early), and
// a region at the direct threshold is copied device to device into its staging in its chunk.
TEST_F(PlannerTest, ReadbacksAreChunkedSmallestFirstWithLargeRegionsCopiedToStaging) {
  Config config = with_strategy(UploadStrategy::automatic);
  config.pipeline_chunk_bytes = 4096;
  config.direct_copy_threshold_bytes = 1024;
  rebuild(config);
  std::byte* source = destination(64 << 10);
  for (std::size_t i = 0; i < 100; ++i) {
    (void)uploads->reserve(address(source + i * 300), i == 50 ? 2000 : 256);
  }
  const ReadbackPlan& r = planner->plan_readbacks(*uploads);
  const auto block = uploads->block(0);
  ASSERT_EQ(block.payload_bytes, 99u * 256 + 2000);
  EXPECT_EQ(r.regions, 100u);
  EXPECT_EQ(r.bytes, 99u * 256 + 2000);
  EXPECT_EQ(r.direct_regions, 1u);
  ASSERT_EQ(r.chunks.size(), 2u) << "4096 B, then the rest (24,248 B)";
  const ReadbackChunk& small = r.chunks[0];
  const ReadbackChunk& rest = r.chunks[1];
  EXPECT_EQ(small.gather.count, 16u);
  EXPECT_EQ(small.table.bytes, 16u * sizeof(TransferDescriptor));
  EXPECT_EQ(small.table.src, block.host_split - 16 * sizeof(TransferDescriptor));
  EXPECT_EQ(small.gather.table,
            reinterpret_cast<const TransferDescriptor*>(block.device_split) - 16);
  EXPECT_EQ(small.back.dst, block.host_split);
  EXPECT_EQ(small.back.src, block.device_split);
  EXPECT_EQ(small.back.bytes, 16u * 256);
  EXPECT_EQ(small.device_copies_end, 0u);
  EXPECT_EQ(rest.gather.count, 84u);
  EXPECT_EQ(rest.device_copies_end, 1u);
  EXPECT_EQ(rest.back.dst, block.host_split + 16 * 256);
  EXPECT_EQ(rest.back.bytes, block.payload_bytes - 16 * 256);
  ASSERT_EQ(r.device_copies.size(), 1u);
  EXPECT_EQ(r.device_copies[0].dst, block.device_split + 50 * 256);
  EXPECT_EQ(r.device_copies[0].src, source + 50 * 300);
  EXPECT_EQ(r.device_copies[0].bytes, 2000u);
  EXPECT_EQ(std::get<2>(issued_descriptors()[50]), 0u) << "the gather skips the direct region";
}

}  // namespace
}  // namespace framestage
