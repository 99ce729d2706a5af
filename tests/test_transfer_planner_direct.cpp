// TransferPlanner: Direct copies, overlapping uploads (the latest write wins) and upload arenas
// that overflowed.
#include "support/planner_test.hpp"

#include <gtest/gtest.h>

namespace framestage {
namespace {

using namespace framestage::testing;

// ---------------------------------------------------------------------------------------------
// Direct copies

// Uploads at the threshold go direct from the pinned payload; the one below it is scattered,
// and a direct payload is not staged.
TEST_F(PlannerTest, UploadsAtTheDirectThresholdBecomeDirectCopies) {
  Config config = with_strategy(UploadStrategy::copy_scatter);
  config.direct_copy_threshold_bytes = 256;
  config.merge_gap_bytes = 0;
  rebuild(config);
  std::byte* dst = destination(4096);
  const Bytes small = pattern(255, 1), at = pattern(256, 2), large = pattern(1000, 3),
              tail = pattern(32, 4);
  upload(dst, small);                                    // payload [0, 256)
  std::byte* at_payload = upload(dst + 300, at);         // [256, 512)
  std::byte* large_payload = upload(dst + 1000, large);  // [512, 1520)
  upload(dst + 2000, tail);                              // [1520, 1552)
  const TransferPlan& p = plan();
  const auto block = uploads->block(0);
  EXPECT_EQ(sorted_copies(p.direct_copies),
            sorted_copies(std::vector<CopyOp>{{dst + 300, at_payload, 256},
                                              {dst + 1000, large_payload, 1000}}));
  EXPECT_EQ(p.direct_bytes, 1256u);
  EXPECT_EQ(p.scattered_bytes, 255u + 32u);
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].count, 4u) << "direct descriptors stay in the table";
  EXPECT_EQ(sorted_copies(p.staging_copies),
            (std::vector<Copy>{{block.device_split - 64, block.host_split - 64, 64 + 256},
                               {block.device_split + 1520, block.host_split + 1520, 32}}))
      << "direct payloads are read from pinned memory, never staged";
  const std::vector<Entry> table = issued_descriptors();
  ASSERT_EQ(table.size(), 4u);
  EXPECT_EQ(table[0], (Entry{address(dst), 0, 255}));
  EXPECT_EQ(table[1], (Entry{address(dst + 300), 16, 0}));
  EXPECT_EQ(table[2], (Entry{address(dst + 1000), 32, 0}));
  EXPECT_EQ(table[3], (Entry{address(dst + 2000), 95, 32}));
  execute(p);
  EXPECT_EQ(read(dst, 255), small);
  EXPECT_EQ(read(dst + 300, 256), at);
  EXPECT_EQ(read(dst + 1000, 1000), large);
  EXPECT_EQ(read(dst + 2000, 32), tail);
}

// Strategy direct copies every upload, whatever its size; automatic with only large uploads
// scatters nothing and keeps reporting automatic.
struct AllDirectCase {
  UploadStrategy strategy;
  std::size_t threshold;
  UploadStrategy reported;
};
void PrintTo(const AllDirectCase& c, std::ostream* out) {
  *out << to_string(c.strategy) << ", threshold " << c.threshold;
}

class AllDirectTest : public PlannerTest, public ::testing::WithParamInterface<AllDirectCase> {};

TEST_P(AllDirectTest, EveryUploadIsADirectCopy) {
  Config config = with_strategy(GetParam().strategy);
  config.direct_copy_threshold_bytes = GetParam().threshold;
  rebuild(config);
  std::byte* dst = destination(4096);
  std::vector<Bytes> sent;
  std::vector<CopyOp> expected;
  std::size_t total = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    sent.push_back(pattern(64 + 16 * i, static_cast<unsigned>(i)));
    std::byte* payload = upload(dst + 512 * i, sent.back());
    expected.push_back({dst + 512 * i, payload, sent.back().size()});
    total += sent.back().size();
  }
  const TransferPlan& p = plan();
  EXPECT_EQ(p.strategy, GetParam().reported);
  EXPECT_EQ(sorted_copies(p.direct_copies), sorted_copies(expected));
  EXPECT_EQ(p.direct_bytes, total);
  EXPECT_EQ(p.scattered_bytes, 0u);
  EXPECT_TRUE(p.scatters.empty());
  EXPECT_TRUE(p.staging_copies.empty());
  EXPECT_EQ(p.pipeline_chunks, 0u);
  for (const Entry& e : issued_descriptors())
    EXPECT_EQ(std::get<2>(e), 0u) << "a direct descriptor is not scattered";
  execute(p);
  for (std::size_t i = 0; i < sent.size(); ++i)
    EXPECT_EQ(read(dst + 512 * i, sent[i].size()), sent[i]) << "upload " << i;
}

std::string all_direct_name(const ::testing::TestParamInfo<AllDirectCase>& info) {
  return std::string(to_string(info.param.strategy));
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, AllDirectTest,
    ::testing::Values(AllDirectCase{UploadStrategy::direct, std::size_t{256} << 10,
                                    UploadStrategy::direct},
                      AllDirectCase{UploadStrategy::automatic, 64, UploadStrategy::automatic}),
    all_direct_name);

// ---------------------------------------------------------------------------------------------
// Overlapping uploads: the latest write wins, byte for byte

class LatestWriteWinsTest
    : public PlannerTest,
      public ::testing::WithParamInterface<std::tuple<OverlapCase, UploadStrategy>> {};

TEST_P(LatestWriteWinsTest, DestinationHoldsTheLastBytesWritten) {
  const auto& [c, strategy] = GetParam();
  Config config = with_strategy(strategy);
  config.direct_copy_threshold_bytes = 256;
  rebuild(config);
  constexpr std::size_t kDestination = 512;
  std::byte* dst = destination(kDestination);
  Bytes expected(kDestination, std::byte{0});
  for (std::size_t i = 0; i < c.writes.size(); ++i) {
    const Bytes bytes = pattern(c.writes[i].bytes, static_cast<unsigned>(i + 1));
    upload(dst + c.writes[i].offset, bytes);
    std::copy(bytes.begin(), bytes.end(),
              expected.begin() + static_cast<std::ptrdiff_t>(c.writes[i].offset));
  }
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, c.writes.size());
  EXPECT_EQ(p.superseded_uploads, c.superseded);
  EXPECT_EQ(p.merged_overlaps, c.merged);
  execute(p);
  EXPECT_EQ(read(dst, kDestination), expected);
}

std::string overlap_name(
    const ::testing::TestParamInfo<std::tuple<OverlapCase, UploadStrategy>>& info) {
  return std::string(std::get<0>(info.param).name) + "_" +
         std::string(to_string(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LatestWriteWinsTest,
    ::testing::Combine(::testing::ValuesIn(kOverlapCases),
                       ::testing::Values(UploadStrategy::automatic, UploadStrategy::copy_scatter,
                                         UploadStrategy::zero_copy, UploadStrategy::direct)),
    overlap_name);

// A covered upload stays in the table with 0 bytes; nothing is moved.
TEST_F(PlannerTest, CoveredUploadIsDroppedFromTheTable) {
  std::byte* dst = destination(256);
  upload(dst + 10, pattern(20, 1));
  const Bytes later = pattern(100, 2);
  upload(dst, later);
  const std::vector<Entry> before = issued_descriptors();
  const TransferPlan& p = plan();
  EXPECT_EQ(p.superseded_uploads, 1u);
  EXPECT_EQ(p.merged_overlaps, 0u);
  EXPECT_TRUE(p.direct_copies.empty());
  EXPECT_EQ(p.scattered_bytes, 100u);
  EXPECT_EQ(issued_descriptors(),
            (std::vector<Entry>{{address(dst + 10), std::get<1>(before[0]), 0}, before[1]}));
  execute(p);
  EXPECT_EQ(read(dst, 100), later);
}

// Partial overlaps are applied in issue order to one buffer taken from the frame arena, and that
// buffer is sent as one direct copy; the uploads it replaces stay in the table with 0 bytes.
TEST_F(PlannerTest, PartialOverlapsBecomeOneDirectCopyFromTheArena) {
  std::byte* dst = destination(256);
  upload(dst, pattern(100, 1));
  upload(dst + 50, pattern(100, 2));
  const std::size_t arena_used = arena->used_bytes();
  const TransferPlan& p = plan();
  EXPECT_EQ(p.merged_overlaps, 1u);
  EXPECT_EQ(p.superseded_uploads, 0u);
  ASSERT_EQ(p.direct_copies.size(), 1u);
  EXPECT_EQ(p.direct_copies[0].dst, dst);
  EXPECT_EQ(p.direct_copies[0].src, arena->block(0).host + arena_used) << "from the frame arena";
  EXPECT_EQ(p.direct_copies[0].bytes, 150u);
  EXPECT_GE(arena->used_bytes(), arena_used + padded(150));
  EXPECT_EQ(p.direct_bytes, 150u);
  EXPECT_EQ(p.scattered_bytes, 0u);
  EXPECT_TRUE(p.scatters.empty());
  for (const Entry& e : issued_descriptors())
    EXPECT_EQ(std::get<2>(e), 0u);
  execute(p);
  Bytes expected = pattern(100, 1);
  expected.resize(50);
  const Bytes second = pattern(100, 2);
  expected.insert(expected.end(), second.begin(), second.end());
  EXPECT_EQ(read(dst, 150), expected);
}

// Destinations in any order, none overlapping: nothing is dropped or combined.
class AnyOrderTest : public PlannerTest, public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(AnyOrderTest, DisjointDestinationsIssuedInRandomOrderArrive) {
  const std::uint64_t seed = 0x6f72646572ULL + static_cast<std::uint64_t>(GetParam());
  SCOPED_TRACE("seed " + std::to_string(seed));
  announce_seed(seed);
  std::mt19937_64 rng(seed);
  rebuild(with_strategy(GetParam()));
  std::vector<Write> slots;
  std::size_t end = 0;
  std::size_t total = 0;
  for (std::size_t i = 0; i < 200; ++i) {
    const std::size_t bytes = 1 + rng() % 64;
    slots.push_back({end + rng() % 4, bytes});  // some touch, most leave a gap
    end = slots.back().offset + bytes;
    total += bytes;
  }
  std::shuffle(slots.begin(), slots.end(), rng);
  std::byte* dst = destination(end);
  Bytes expected(end, std::byte{0});
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const Bytes bytes = pattern(slots[i].bytes, static_cast<unsigned>(i));
    upload(dst + slots[i].offset, bytes);
    std::copy(bytes.begin(), bytes.end(),
              expected.begin() + static_cast<std::ptrdiff_t>(slots[i].offset));
  }
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, 200u);
  EXPECT_EQ(p.superseded_uploads, 0u);
  EXPECT_EQ(p.merged_overlaps, 0u);
  const bool direct = GetParam() == UploadStrategy::direct;
  EXPECT_EQ(p.direct_copies.size(), direct ? 200u : 0u);
  EXPECT_EQ(p.scattered_bytes, direct ? 0u : total);
  execute(p);
  EXPECT_TRUE(same_bytes(read(dst, end), expected));
}

INSTANTIATE_TEST_SUITE_P(Strategies, AnyOrderTest,
                         ::testing::Values(UploadStrategy::automatic, UploadStrategy::copy_scatter,
                                           UploadStrategy::zero_copy, UploadStrategy::direct),
                         strategy_name);

// ---------------------------------------------------------------------------------------------
// Upload arenas that overflowed (grow policy)

// Overflow blocks are scattered block by block: in place under zero-copy (each block has its own
// mapped split point), after each block's own copy under copy_scatter. A later write in an
// overflow block still supersedes an earlier one in the main block.
struct GrowCase {
  UploadStrategy strategy;
  UploadStrategy reported;
};
void PrintTo(const GrowCase& c, std::ostream* out) {
  *out << to_string(c.strategy);
}

class GrowTest : public PlannerTest, public ::testing::WithParamInterface<GrowCase> {};

TEST_P(GrowTest, OverflowBlocksAreScatteredPerBlock) {
  rebuild(with_strategy(GetParam().strategy),
          {.upload_payload_bytes = 4096, .max_uploads = 4, .overflow = OverflowPolicy::grow});
  std::byte* dst = destination(4096);
  Bytes expected(4096, std::byte{0});
  for (unsigned i = 0; i < 10; ++i) {
    const std::size_t offset = i == 8 ? 2 * 300 : 300 * i;  // upload 8 rewrites upload 2
    const Bytes bytes = pattern(200, i);
    upload(dst + offset, bytes);
    std::copy(bytes.begin(), bytes.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
  }
  ASSERT_GT(uploads->block_count(), 2u);
  const TransferPlan& p = plan();
  EXPECT_EQ(p.strategy, GetParam().reported);
  EXPECT_EQ(p.superseded_uploads, 1u);
  EXPECT_EQ(p.scattered_bytes, 9u * 200u);
  ASSERT_EQ(p.scatters.size(), uploads->block_count()) << "one chunk per block at 2 MiB chunks";
  for (std::size_t b = 0; b < uploads->block_count(); ++b) {
    const auto block = uploads->block(b);
    const ScatterOp& op = p.scatters[b];
    EXPECT_EQ(op.count, block.descriptors) << "block " << b;
    if (p.strategy == UploadStrategy::zero_copy) {
      EXPECT_EQ(op.staging, block.mapped_split) << "block " << b;
      EXPECT_EQ(op.table,
                reinterpret_cast<const TransferDescriptor*>(block.mapped_split) - block.descriptors)
          << "block " << b;
      EXPECT_EQ(op.after_copies, 0u) << "block " << b;
    } else {
      EXPECT_EQ(op.staging, block.device_split) << "block " << b;
      EXPECT_EQ(op.table,
                reinterpret_cast<const TransferDescriptor*>(block.device_split) - block.descriptors)
          << "block " << b;
    }
  }
  if (p.strategy == UploadStrategy::zero_copy) {
    EXPECT_TRUE(p.staging_copies.empty());
  }
  execute(p);
  EXPECT_TRUE(same_bytes(read(dst, expected.size()), expected));
}

std::string grow_name(const ::testing::TestParamInfo<GrowCase>& info) {
  return std::string(to_string(info.param.strategy));
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, GrowTest,
    ::testing::Values(GrowCase{UploadStrategy::automatic, UploadStrategy::zero_copy},
                      GrowCase{UploadStrategy::zero_copy, UploadStrategy::zero_copy},
                      GrowCase{UploadStrategy::copy_scatter, UploadStrategy::copy_scatter}),
    grow_name);

// A first upload larger than the main block opens an overflow block and leaves the main block
// empty; the planner skips it.
class EmptyMainBlockTest : public PlannerTest,
                           public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(EmptyMainBlockTest, UploadsInOverflowBlocksOnlyArrive) {
  rebuild(with_strategy(GetParam()),
          {.upload_payload_bytes = 4096, .max_uploads = 16, .overflow = OverflowPolicy::grow});
  std::byte* dst = destination(16384);
  Bytes expected(16384, std::byte{0});
  const auto send = [&](std::size_t offset, std::size_t bytes, unsigned tag) {
    const Bytes fill = pattern(bytes, tag);
    upload(dst + offset, fill);
    std::copy(fill.begin(), fill.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
  };
  send(0, 10000, 1);
  for (unsigned i = 0; i < 5; ++i)
    send(10240 + 200 * i, 100, 2 + i);
  ASSERT_GE(uploads->block_count(), 2u);
  EXPECT_EQ(uploads->block(0).descriptors, 0u);
  EXPECT_EQ(uploads->descriptor_count(), 6u);
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, 6u);
  EXPECT_EQ(p.scatters.empty(), GetParam() == UploadStrategy::direct);
  for (const ScatterOp& op : p.scatters) {
    EXPECT_NE(op.staging, uploads->block(0).device_split) << "the empty main block is skipped";
    EXPECT_NE(op.staging, uploads->block(0).mapped_split) << "the empty main block is skipped";
  }
  execute(p);
  EXPECT_TRUE(same_bytes(read(dst, expected.size()), expected));
}

INSTANTIATE_TEST_SUITE_P(Strategies, EmptyMainBlockTest,
                         ::testing::Values(UploadStrategy::automatic, UploadStrategy::copy_scatter,
                                           UploadStrategy::zero_copy, UploadStrategy::direct),
                         strategy_name);

}  // namespace
}  // namespace framestage
