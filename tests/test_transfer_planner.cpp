#include <framestage/device_buffer.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/transfer_planner.hpp>

#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace framestage {
namespace {

using testing::throws_error;
using Bytes = std::vector<std::byte>;

std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

// Distinct, never-zero bytes per tag, so a byte from the wrong write (or an unwritten zero) shows.
Bytes pattern(std::size_t bytes, unsigned tag) {
  Bytes out(bytes);
  for (std::size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<std::byte>(1 + (tag * 37 + i * 7) % 251);
  }
  return out;
}

// A copy as a comparable value, so expected copy lists can be written out and compared whole.
using Copy = std::tuple<const void*, const void*, std::size_t>;
std::vector<Copy> sorted_copies(std::span<const CopyOp> copies) {
  std::vector<Copy> out;
  for (const CopyOp& c : copies)
    out.emplace_back(c.dst, c.src, c.bytes);
  std::sort(out.begin(), out.end());
  return out;
}

// Bytes the scheduler's "device" would have left from an earlier frame; a copy or scatter that
// reads device memory nobody delivered picks these up instead of the payload.
constexpr std::byte kPoison{0xa5};

struct ArenaSizes {
  std::size_t payload_bytes = std::size_t{1} << 20;
  std::size_t descriptor_bytes = 1024 * sizeof(TransferDescriptor);
  OverflowPolicy overflow = OverflowPolicy::fail;
};

// Owns one slot's worth of planner inputs on the host backend and plays the coordinator (upload,
// stage) and the scheduler (execute) around the planner under test.
class PlannerTest : public ::testing::Test {
 protected:
  PlannerTest() { rebuild(Config{}); }

  // Fresh arenas and planner; earlier destinations stay valid.
  void rebuild(const Config& config, const ArenaSizes& sizes = {}) {
    planner.reset();
    staged.clear();
    arena = std::make_unique<FrameArena>(backend, sizes.payload_bytes, sizes.overflow, "arena",
                                         "test arena");
    descriptors = std::make_unique<FrameArena>(backend, sizes.descriptor_bytes, sizes.overflow,
                                               "upload descriptor table", "test table");
    planner = std::make_unique<TransferPlanner>(config);
  }

  // Zero-filled device memory (plain host memory on the host backend).
  std::byte* destination(std::size_t bytes) {
    destinations.emplace_back(backend, bytes);
    std::memset(destinations.back().data(), 0, bytes);
    return destinations.back().data();
  }

  void add_descriptor(const TransferDescriptor& d) {
    const auto entry = descriptors->allocate(sizeof(TransferDescriptor), FrameArena::kGranule);
    *reinterpret_cast<TransferDescriptor*>(entry.host) = d;
  }

  // What Coordinator::upload_bytes does: payload into the arena, then a descriptor that reads
  // it from the device mirror.
  FrameArena::Allocation upload(void* dst, std::span<const std::byte> bytes) {
    const auto payload = arena->allocate(bytes.size(), FrameArena::kGranule);
    std::memcpy(payload.host, bytes.data(), bytes.size());
    add_descriptor({address(payload.device), address(dst), bytes.size(), 0});
    return payload;
  }

  // What frame_alloc does, filled with a pattern.
  std::span<std::byte> frame_alloc(std::size_t bytes, unsigned tag) {
    const Bytes fill = pattern(bytes, tag);
    std::byte* host = arena->allocate(bytes, FrameArena::kGranule).host;
    std::memcpy(host, fill.data(), bytes);
    return {host, bytes};
  }

  // What stage_for_upload does.
  void stage(std::span<const std::byte> span) {
    const auto where = arena->locate(span.data(), span.size());
    ASSERT_TRUE(where.has_value()) << "staged span is not in the arena";
    staged.push_back({where->block, where->offset, span.size()});
  }

  const TransferPlan& plan() {
    return planner->plan({arena.get(), descriptors.get(), staged, &backend});
  }

  // What Scheduler::submit enqueues, in its order, on one in-order stream. The plan is checked
  // before each stage runs, so a plan that points outside the frame's memory fails the test
  // instead of crashing it.
  void execute(const TransferPlan& p) {
    for (FrameArena* a : {arena.get(), descriptors.get()}) {
      for (std::size_t b = 0; b < a->block_count(); ++b) {
        const auto view = a->block(b);
        std::memset(view.device, static_cast<int>(kPoison), view.capacity);
      }
    }
    for (const CopyOp& c : p.staging_copies) {
      if (!is_mirror_copy(*arena, c) && !is_mirror_copy(*descriptors, c)) {
        ADD_FAILURE() << "staging copy of " << c.bytes << " bytes to " << c.dst
                      << " is not host-to-mirror within one block's use";
        return;
      }
      backend.copy_async(c.dst, c.src, c.bytes, stream.view());
    }
    backend.synchronize(stream.view());
    if (!expect_consistent(p)) return;
    for (const CopyOp& c : p.direct_copies)
      backend.copy_async(c.dst, c.src, c.bytes, stream.view());
    for (const ScatterOp& op : p.scatters)
      backend.scatter_async(op.table, op.count, op.src_bias, stream.view());
    backend.synchronize(stream.view());
  }

  Bytes read(const void* device, std::size_t bytes) {
    Bytes out(bytes);
    backend.read_device(out.data(), device, bytes);
    return out;
  }

  // The device mirror's copy of a span of the pinned arena.
  Bytes mirror_of(std::span<const std::byte> host) {
    const auto where = arena->locate(host.data(), host.size());
    EXPECT_TRUE(where.has_value());
    if (!where) return {};
    return read(arena->block(where->block).device + where->offset, host.size());
  }

  enum class Side { host, device, mapped };

  // Whether [p, p + bytes) lies within the part of one of `a`'s blocks used this frame.
  bool in_blocks(const FrameArena& a, Side side, std::uint64_t p, std::size_t bytes) {
    for (std::size_t b = 0; b < a.block_count(); ++b) {
      const auto view = a.block(b);
      const std::uint64_t base = side == Side::host ? address(view.host)
                                 : side == Side::device
                                     ? address(view.device)
                                     : address(backend.mapped_device_address(view.host));
      if (p >= base && bytes <= view.used && p - base <= view.used - bytes) return true;
    }
    return false;
  }

  bool is_mirror_copy(const FrameArena& a, const CopyOp& c) {
    for (std::size_t b = 0; b < a.block_count(); ++b) {
      const auto view = a.block(b);
      if (address(c.src) - address(view.host) == address(c.dst) - address(view.device) &&
          in_blocks(a, Side::host, address(c.src), c.bytes)) {
        return true;
      }
    }
    return false;
  }

  bool in_destinations(std::uint64_t p, std::size_t bytes) const {
    return std::any_of(destinations.begin(), destinations.end(), [&](const auto& d) {
      const std::uint64_t base = address(d.data());
      return p >= base && bytes <= d.size() && p - base <= d.size() - bytes;
    });
  }

  // Every source and destination lies in the frame's memory and the user's buffers, counts add
  // up, and no two writes to user memory overlap: the CUDA scatter kernel runs its descriptors in
  // parallel and the direct copies run before it, so an overlap left in the plan is a race that
  // the in-order host emulation would hide. Returns false if running the plan would touch memory
  // outside those.
  bool expect_consistent(const TransferPlan& p) {
    std::size_t staging_bytes = 0;
    for (const CopyOp& c : p.staging_copies)
      staging_bytes += c.bytes;
    EXPECT_EQ(p.staging_copy_bytes, staging_bytes);

    bool safe = true;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> writes;  // [dst, dst + bytes)
    std::size_t direct_bytes = 0;
    for (const CopyOp& c : p.direct_copies) {
      if (!in_blocks(*arena, Side::host, address(c.src), c.bytes) ||
          !in_destinations(address(c.dst), c.bytes)) {
        ADD_FAILURE() << "direct copy of " << c.bytes << " bytes from " << c.src << " to " << c.dst
                      << " is not from the pinned arena to a destination";
        safe = false;
      }
      writes.emplace_back(address(c.dst), address(c.dst) + c.bytes);
      direct_bytes += c.bytes;
    }
    EXPECT_EQ(p.direct_bytes, direct_bytes);

    std::size_t scattered_bytes = 0;
    for (const ScatterOp& op : p.scatters) {
      const Side side = op.src_bias == 0 ? Side::device : Side::mapped;
      if (!in_blocks(*descriptors, side, address(op.table),
                     op.count * sizeof(TransferDescriptor))) {
        ADD_FAILURE() << "scatter table " << op.table << " (" << op.count
                      << " entries) is not a descriptor block";
        safe = false;
        continue;
      }
      std::vector<TransferDescriptor> table(op.count);
      backend.read_device(table.data(), op.table, op.count * sizeof(TransferDescriptor));
      for (const TransferDescriptor& d : table) {
        const std::uint64_t src = d.src + static_cast<std::uint64_t>(op.src_bias);
        if (!in_blocks(*arena, side, src, d.bytes) || !in_destinations(d.dst, d.bytes)) {
          ADD_FAILURE() << "scatter descriptor of " << d.bytes << " bytes from 0x" << std::hex
                        << src << " to 0x" << d.dst << std::dec
                        << " is not from the arena to a destination";
          safe = false;
        }
        writes.emplace_back(d.dst, d.dst + d.bytes);
        scattered_bytes += d.bytes;
      }
    }
    EXPECT_EQ(p.scattered_bytes, scattered_bytes);
    EXPECT_EQ(writes.size(), p.uploads - p.superseded_uploads - p.merged_overlaps)
        << "every upload is delivered once, or folded into a later one";
    std::sort(writes.begin(), writes.end());
    for (std::size_t i = 1; i < writes.size(); ++i) {
      EXPECT_LE(writes[i - 1].second, writes[i].first)
          << "writes overlap at destination 0x" << std::hex << writes[i].first;
    }
    return safe;
  }

  HostBackend backend;
  Stream stream{backend};
  std::vector<DeviceBuffer<std::byte>> destinations;
  std::unique_ptr<FrameArena> arena;
  std::unique_ptr<FrameArena> descriptors;
  std::unique_ptr<TransferPlanner> planner;
  std::vector<StagedRange> staged;
};

Config with_strategy(UploadStrategy strategy) {
  Config c;
  c.strategy = strategy;
  return c;
}

std::string strategy_name(const ::testing::TestParamInfo<UploadStrategy>& info) {
  return std::string(to_string(info.param));
}

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

// ---------------------------------------------------------------------------------------------
// Small uploads: how they travel

// Five small uploads to ascending destinations, plus one staged range in between.
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

// copy_scatter: chosen outright, or by automatic when the total exceeds zero_copy_max_bytes.
class CopyScatterTest : public SmallUploadTest,
                        public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(CopyScatterTest, OnePayloadCopyOneTableCopyOneScatter) {
  Config config = with_strategy(GetParam());
  config.zero_copy_max_bytes = 226;  // the five uploads total 227 bytes
  rebuild(config);
  const SmallUploads u = upload_five();
  ASSERT_EQ(u.total, 227u);
  const TransferPlan& p = plan();
  const auto payloads = arena->block(0);
  const auto table = descriptors->block(0);
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            sorted_copies(std::vector<CopyOp>{{table.device, table.host, 5 * 32},
                                              {payloads.device, payloads.host, payloads.used}}));
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].table, reinterpret_cast<const TransferDescriptor*>(table.device));
  EXPECT_EQ(p.scatters[0].count, 5u);
  EXPECT_EQ(p.scatters[0].src_bias, 0);
  EXPECT_TRUE(p.direct_copies.empty());
  EXPECT_EQ(p.uploads, 5u);
  EXPECT_EQ(p.scattered_bytes, 227u);
  EXPECT_EQ(p.direct_bytes, 0u);
  execute(p);
  expect_delivered(u);
}

INSTANTIATE_TEST_SUITE_P(Strategies, CopyScatterTest,
                         ::testing::Values(UploadStrategy::copy_scatter, UploadStrategy::automatic),
                         strategy_name);

// zero_copy: chosen outright, or by automatic at exactly zero_copy_max_bytes. A staged range is
// still copied; the payloads are not.
class ZeroCopyTest : public SmallUploadTest,
                     public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(ZeroCopyTest, ScatterReadsThePinnedArenaInPlace) {
  Config config = with_strategy(GetParam());
  config.zero_copy_max_bytes = 227;
  rebuild(config);
  const auto mirrored = frame_alloc(48, 3);
  stage(mirrored);
  const SmallUploads u = upload_five();
  const TransferPlan& p = plan();
  const auto payloads = arena->block(0);
  const auto table = descriptors->block(0);
  EXPECT_EQ(p.strategy, UploadStrategy::zero_copy);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            (std::vector<Copy>{{payloads.device, payloads.host, 48}}))
      << "only the staged range travels by copy";
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].table, backend.mapped_device_address(table.host));
  EXPECT_EQ(p.scatters[0].count, 5u);
  EXPECT_EQ(p.scatters[0].src_bias,
            static_cast<std::int64_t>(address(backend.mapped_device_address(payloads.host)) -
                                      address(payloads.device)));
  EXPECT_EQ(p.scattered_bytes, 227u);
  execute(p);
  expect_delivered(u);
  EXPECT_EQ(mirror_of(mirrored), Bytes(mirrored.begin(), mirrored.end()));
}

INSTANTIATE_TEST_SUITE_P(Strategies, ZeroCopyTest,
                         ::testing::Values(UploadStrategy::zero_copy, UploadStrategy::automatic),
                         strategy_name);

// ---------------------------------------------------------------------------------------------
// Direct copies

// Uploads at the threshold go direct from the pinned payload; the one below it is scattered,
// and a direct payload is not staged into the mirror.
TEST_F(PlannerTest, UploadsAtTheDirectThresholdBecomeDirectCopies) {
  Config config = with_strategy(UploadStrategy::copy_scatter);
  config.direct_copy_threshold_bytes = 256;
  config.merge_gap_bytes = 0;
  rebuild(config);
  std::byte* dst = destination(4096);
  const Bytes small = pattern(255, 1), at = pattern(256, 2), large = pattern(1000, 3),
              tail = pattern(32, 4);
  const auto small_payload = upload(dst, small);
  const auto at_payload = upload(dst + 300, at);
  const auto large_payload = upload(dst + 1000, large);
  const auto tail_payload = upload(dst + 2000, tail);
  const TransferPlan& p = plan();
  EXPECT_EQ(sorted_copies(p.direct_copies),
            sorted_copies(std::vector<CopyOp>{{dst + 300, at_payload.host, 256},
                                              {dst + 1000, large_payload.host, 1000}}));
  EXPECT_EQ(p.direct_bytes, 1256u);
  EXPECT_EQ(p.scattered_bytes, 255u + 32u);
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].count, 2u);
  const auto table = descriptors->block(0);
  EXPECT_EQ(sorted_copies(p.staging_copies),
            sorted_copies(std::vector<CopyOp>{{table.device, table.host, 2 * 32},
                                              {small_payload.device, small_payload.host, 255},
                                              {tail_payload.device, tail_payload.host, 32}}))
      << "direct payloads are read from pinned memory, never staged";
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
  std::size_t total = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    sent.push_back(pattern(64 + 16 * i, static_cast<unsigned>(i)));
    upload(dst + 512 * i, sent.back());
    total += sent.back().size();
  }
  const TransferPlan& p = plan();
  EXPECT_EQ(p.strategy, GetParam().reported);
  EXPECT_EQ(p.direct_copies.size(), 4u);
  EXPECT_EQ(p.direct_bytes, total);
  EXPECT_EQ(p.scattered_bytes, 0u);
  EXPECT_TRUE(p.scatters.empty());
  EXPECT_TRUE(p.staging_copies.empty());
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

struct Write {
  std::size_t offset;
  std::size_t bytes;
};

struct OverlapCase {
  const char* name;
  std::vector<Write> writes;  // in issue order
  std::size_t superseded;
  std::size_t merged;
};
void PrintTo(const OverlapCase& c, std::ostream* out) {
  *out << c.name;
}

class LatestWriteWinsTest
    : public PlannerTest,
      public ::testing::WithParamInterface<std::tuple<OverlapCase, UploadStrategy>> {};

TEST_P(LatestWriteWinsTest, DestinationHoldsTheLastBytesWritten) {
  const auto& [c, strategy] = GetParam();
  rebuild(with_strategy(strategy));
  constexpr std::size_t kDestination = 512;
  std::byte* dst = destination(kDestination);
  Bytes expected(kDestination, std::byte{0});
  for (std::size_t i = 0; i < c.writes.size(); ++i) {
    const Bytes bytes = pattern(c.writes[i].bytes, static_cast<unsigned>(i + 1));
    upload(dst + c.writes[i].offset, bytes);
    std::copy(bytes.begin(), bytes.end(), expected.begin() + c.writes[i].offset);
  }
  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, c.writes.size());
  EXPECT_EQ(p.superseded_uploads, c.superseded);
  EXPECT_EQ(p.merged_overlaps, c.merged);
  execute(p);
  EXPECT_EQ(read(dst, kDestination), expected);
}

const OverlapCase kOverlapCases[] = {
    {"SameDestinationTwice", {{0, 100}, {0, 100}}, 1, 0},
    {"SameDestinationThrice", {{64, 100}, {64, 100}, {64, 100}}, 2, 0},
    {"LaterCoversEarlier", {{10, 20}, {0, 100}}, 1, 0},
    {"PartialOverlap", {{0, 100}, {50, 100}}, 0, 1},
    {"LaterSmallInsideEarlierBig", {{0, 200}, {50, 10}}, 0, 1},
    {"EarlierSmallInsideLaterBig", {{50, 10}, {0, 200}}, 1, 0},
    {"ChainOutOfOrder", {{0, 100}, {140, 60}, {50, 100}}, 0, 2},
    {"TwoSeparateClusters", {{300, 50}, {0, 10}, {320, 50}, {0, 10}}, 1, 1},
    {"DescendingWithoutOverlap", {{300, 100}, {200, 100}, {100, 100}, {0, 100}}, 0, 0},
    {"TouchingOutOfOrder", {{100, 100}, {0, 100}, {200, 1}}, 0, 0},
};

std::string overlap_name(
    const ::testing::TestParamInfo<std::tuple<OverlapCase, UploadStrategy>>& info) {
  return std::string(std::get<0>(info.param).name) + "_" +
         std::string(to_string(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(Cases, LatestWriteWinsTest,
                         ::testing::Combine(::testing::ValuesIn(kOverlapCases),
                                            ::testing::Values(UploadStrategy::copy_scatter,
                                                              UploadStrategy::zero_copy,
                                                              UploadStrategy::direct)),
                         overlap_name);

// ---------------------------------------------------------------------------------------------
// Randomized: hundreds of overlapping uploads and some staged ranges, checked against writes
// applied in order on the host; every strategy, with roomy arenas and with tiny growing ones.

struct RandomCase {
  UploadStrategy strategy;
  bool tight_arenas;  // overflow blocks in both arenas (grow policy)
};
void PrintTo(const RandomCase& c, std::ostream* out) {
  *out << to_string(c.strategy) << (c.tight_arenas ? ", growing arenas" : ", roomy arenas");
}

class RandomFrameTest : public PlannerTest, public ::testing::WithParamInterface<RandomCase> {};

TEST_P(RandomFrameTest, EveryByteArrives) {
  const RandomCase param = GetParam();
  const std::uint64_t seed = 0x706c616eULL + static_cast<std::uint64_t>(param.strategy);
  SCOPED_TRACE("seed " + std::to_string(seed));
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);

  Config config = with_strategy(param.strategy);
  config.direct_copy_threshold_bytes = 512;
  config.merge_gap_bytes = 256;
  ArenaSizes sizes;
  if (param.tight_arenas) sizes = {16 << 10, 32 * sizeof(TransferDescriptor), OverflowPolicy::grow};
  rebuild(config, sizes);

  constexpr std::size_t kDestination = 64 << 10;
  std::byte* dst = destination(kDestination);
  Bytes expected(kDestination, std::byte{0});
  std::vector<Write> issued;
  std::vector<std::span<std::byte>> mirrored;
  for (unsigned i = 0; i < 300; ++i) {
    Write w{};
    if (!issued.empty() && rng() % 8 == 0) {
      w = issued[rng() % issued.size()];  // same destination and size again
    } else {
      w.bytes = 1 + rng() % (rng() % 4 == 0 ? 600 : 64);  // mostly small: clusters stay small
      w.offset = rng() % (kDestination - w.bytes + 1);
    }
    Bytes bytes(w.bytes);
    for (auto& b : bytes)
      b = static_cast<std::byte>(rng());
    upload(dst + w.offset, bytes);
    std::copy(bytes.begin(), bytes.end(), expected.begin() + w.offset);
    issued.push_back(w);
    if (rng() % 20 == 0) {
      mirrored.push_back(frame_alloc(1 + rng() % 300, i));
      stage(mirrored.back());
    }
  }

  const TransferPlan& p = plan();
  EXPECT_EQ(p.uploads, issued.size());
  EXPECT_EQ(p.staged_ranges, mirrored.size());
  EXPECT_GT(p.superseded_uploads, 0u);
  EXPECT_GT(p.merged_overlaps, 0u);
  const bool single_blocks = arena->block_count() == 1 && descriptors->block_count() == 1;
  EXPECT_EQ(single_blocks, !param.tight_arenas);
  switch (param.strategy) {
    case UploadStrategy::direct:
      EXPECT_EQ(p.strategy, UploadStrategy::direct);
      EXPECT_TRUE(p.scatters.empty());
      break;
    case UploadStrategy::zero_copy:
      EXPECT_EQ(p.strategy,
                single_blocks ? UploadStrategy::zero_copy : UploadStrategy::copy_scatter);
      break;
    case UploadStrategy::copy_scatter:
      EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
      break;
    case UploadStrategy::automatic:
      EXPECT_EQ(p.strategy, single_blocks && p.scattered_bytes <= config.zero_copy_max_bytes
                                ? UploadStrategy::zero_copy
                                : UploadStrategy::copy_scatter);
      break;
  }
  execute(p);
  EXPECT_EQ(read(dst, kDestination), expected);
  for (const auto span : mirrored)
    EXPECT_EQ(mirror_of(span), Bytes(span.begin(), span.end()));
}

std::string random_name(const ::testing::TestParamInfo<RandomCase>& info) {
  return std::string(to_string(info.param.strategy)) +
         (info.param.tight_arenas ? "_growing_arenas" : "_roomy_arenas");
}

INSTANTIATE_TEST_SUITE_P(Strategies, RandomFrameTest,
                         ::testing::Values(RandomCase{UploadStrategy::automatic, false},
                                           RandomCase{UploadStrategy::copy_scatter, false},
                                           RandomCase{UploadStrategy::zero_copy, false},
                                           RandomCase{UploadStrategy::direct, false},
                                           RandomCase{UploadStrategy::automatic, true},
                                           RandomCase{UploadStrategy::copy_scatter, true},
                                           RandomCase{UploadStrategy::zero_copy, true},
                                           RandomCase{UploadStrategy::direct, true}),
                         random_name);

// ---------------------------------------------------------------------------------------------
// Arenas that overflowed (grow policy)

// A payload arena that took an overflow block has no single bias for zero-copy: the planner
// falls back to copy_scatter, whether zero_copy was asked for or chosen automatically.
class GrowTest : public PlannerTest, public ::testing::WithParamInterface<UploadStrategy> {};

TEST_P(GrowTest, OverflowedPayloadArenaFallsBackToCopyScatter) {
  rebuild(with_strategy(GetParam()),
          {4096, 1024 * sizeof(TransferDescriptor), OverflowPolicy::grow});
  std::byte* dst = destination(16 << 10);
  Bytes expected(16 << 10, std::byte{0});
  for (unsigned i = 0; i < 40; ++i) {
    const Bytes bytes = pattern(200, i);
    upload(dst + 300 * i, bytes);
    std::copy(bytes.begin(), bytes.end(), expected.begin() + 300 * i);
  }
  ASSERT_TRUE(arena->overflowed());
  const TransferPlan& p = plan();
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  ASSERT_EQ(p.scatters.size(), 1u);
  EXPECT_EQ(p.scatters[0].count, 40u);
  EXPECT_EQ(p.scatters[0].src_bias, 0);
  execute(p);
  EXPECT_EQ(read(dst, expected.size()), expected);
}

// A descriptor table that overflowed is scattered block by block, and a later write in an
// overflow table still supersedes an earlier one in the main table.
TEST_P(GrowTest, OverflowedDescriptorTableIsScatteredPerBlock) {
  rebuild(with_strategy(GetParam()),
          {1 << 20, 4 * sizeof(TransferDescriptor), OverflowPolicy::grow});
  std::byte* dst = destination(4096);
  Bytes expected(4096, std::byte{0});
  for (unsigned i = 0; i < 10; ++i) {
    const std::size_t offset = i == 8 ? 2 * 100 : 100 * i;  // upload 8 rewrites upload 2
    const Bytes bytes = pattern(64, i);
    upload(dst + offset, bytes);
    std::copy(bytes.begin(), bytes.end(), expected.begin() + offset);
  }
  ASSERT_GT(descriptors->block_count(), 2u);
  const TransferPlan& p = plan();
  EXPECT_EQ(p.strategy, UploadStrategy::copy_scatter);
  EXPECT_EQ(p.superseded_uploads, 1u);
  EXPECT_EQ(p.scatters.size(), descriptors->block_count());
  std::size_t scattered = 0;
  for (const ScatterOp& op : p.scatters)
    scattered += op.count;
  EXPECT_EQ(scattered, 9u);
  execute(p);
  EXPECT_EQ(read(dst, expected.size()), expected);
}

INSTANTIATE_TEST_SUITE_P(Strategies, GrowTest,
                         ::testing::Values(UploadStrategy::automatic, UploadStrategy::zero_copy),
                         strategy_name);

// ---------------------------------------------------------------------------------------------
// Errors and reuse

// Descriptors whose payload is not where upload() would have put it, checked on the plain path
// and on the path that merges them with an overlapping upload (which allocates arena space first).
enum class BadSource { foreign_buffer, pinned_host_address, past_used_bytes, straddling_end };

std::string to_string(BadSource source) {
  switch (source) {
    case BadSource::foreign_buffer:
      return "foreign_buffer";
    case BadSource::pinned_host_address:
      return "pinned_host_address";
    case BadSource::past_used_bytes:
      return "past_used_bytes";
    case BadSource::straddling_end:
      return "straddling_end";
  }
  return "unknown";
}
void PrintTo(BadSource source, std::ostream* out) {
  *out << to_string(source);
}

class BadSourceTest : public PlannerTest,
                      public ::testing::WithParamInterface<std::tuple<BadSource, bool>> {};

TEST_P(BadSourceTest, IsMisuse) {
  const auto [source, overlapping] = GetParam();
  std::byte* dst = destination(1024);
  const std::byte* foreign = destination(64);
  const auto good = upload(dst, pattern(32, 1));  // the arena's use this frame: [0, 32)
  std::uint64_t src = 0;
  switch (source) {
    case BadSource::foreign_buffer:
      src = address(foreign);
      break;
    case BadSource::pinned_host_address:
      src = address(good.host);
      break;
    case BadSource::past_used_bytes:
      src = address(good.device) + 64;
      break;
    case BadSource::straddling_end:
      src = address(good.device) + 8;  // [8, 40): its last 8 bytes were never allocated
      break;
  }
  add_descriptor({src, address(dst + (overlapping ? 8 : 512)), 32, 0});
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "not in this frame's arena", [&] { plan(); }));
}

std::string bad_source_name(const ::testing::TestParamInfo<std::tuple<BadSource, bool>>& info) {
  return to_string(std::get<0>(info.param)) + (std::get<1>(info.param) ? "_overlapping" : "_alone");
}

INSTANTIATE_TEST_SUITE_P(
    Sources, BadSourceTest,
    ::testing::Combine(::testing::Values(BadSource::foreign_buffer, BadSource::pinned_host_address,
                                         BadSource::past_used_bytes, BadSource::straddling_end),
                       ::testing::Bool()),
    bad_source_name);

TEST_F(PlannerTest, MergingOverlapsInAFullArenaIsOutOfMemory) {
  rebuild(Config{}, {256, 1024 * sizeof(TransferDescriptor), OverflowPolicy::fail});
  std::byte* dst = destination(256);
  upload(dst, pattern(100, 1));       // 112 bytes of arena
  upload(dst + 50, pattern(100, 2));  // 224; merging needs 150 more
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "150 bytes", [&] { plan(); }));
}

// The planner keeps scratch space between frames, never results.
TEST_F(PlannerTest, NextFrameStartsFromAnEmptyPlan) {
  std::byte* dst = destination(256);
  upload(dst, pattern(100, 1));
  upload(dst + 50, pattern(100, 2));
  upload(dst + 50, pattern(100, 3));
  stage(frame_alloc(16, 4));
  const TransferPlan& first = plan();
  EXPECT_EQ(first.uploads, 3u);
  EXPECT_EQ(first.merged_overlaps + first.superseded_uploads, 2u);
  execute(first);

  staged.clear();
  arena->reset(arena->capacity_bytes(), 16);
  descriptors->reset(descriptors->capacity_bytes(), 16);
  const Bytes next = pattern(40, 5);
  upload(dst + 200, next);
  const TransferPlan& second = plan();
  EXPECT_EQ(second.uploads, 1u);
  EXPECT_EQ(second.staged_ranges, 0u);
  EXPECT_EQ(second.mirror_bytes, 0u);
  EXPECT_EQ(second.superseded_uploads, 0u);
  EXPECT_EQ(second.merged_overlaps, 0u);
  EXPECT_EQ(second.scattered_bytes, 40u);
  ASSERT_EQ(second.scatters.size(), 1u);
  EXPECT_EQ(second.scatters[0].count, 1u);
  execute(second);
  EXPECT_EQ(read(dst + 200, 40), next);
}

}  // namespace
}  // namespace framestage
