// The transfer planner's test fixture (PlannerTest) and helpers, shared by the
// test_transfer_planner_*.cpp suites: it plays the coordinator and the scheduler around the
// planner on the host backend and checks every plan's copies and scatters byte for byte.
#pragma once

#include <framestage/device_buffer.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/transfer_planner.hpp>
#include <framestage/upload_arena.hpp>

#include "expect_error.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
namespace framestage::testing {

using Bytes = std::vector<std::byte>;

inline std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

// What an upload of `bytes` takes of an upload block's payload area: whole staging granules.
constexpr std::size_t padded(std::size_t bytes) {
  return (bytes + kStagingGranule - 1) / kStagingGranule * kStagingGranule;
}

// Distinct, never-zero bytes per tag, so a byte from the wrong write (or an unwritten zero) shows.
inline Bytes pattern(std::size_t bytes, unsigned tag) {
  Bytes out(bytes);
  for (std::size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<std::byte>(1 + (tag * 37 + i * 7) % 251);
  }
  return out;
}

// A copy as a comparable value, so expected copy lists can be written out and compared whole.
using Copy = std::tuple<const void*, const void*, std::size_t>;
inline std::vector<Copy> sorted_copies(std::span<const CopyOp> copies) {
  std::vector<Copy> out;
  for (const CopyOp& c : copies)
    out.emplace_back(c.dst, c.src, c.bytes);
  std::sort(out.begin(), out.end());
  return out;
}

// A descriptor as a comparable value: target, staging_granule, bytes.
using Entry = std::tuple<std::uint64_t, std::uint32_t, std::uint32_t>;

// Bytes the scheduler's "device" would have left from an earlier frame; a copy or scatter that
// reads device memory nobody delivered picks these up instead of the payload.
constexpr std::byte kPoison{0xa5};

// Large buffers compared byte for byte, reporting where they differ rather than every byte.
inline ::testing::AssertionResult same_bytes(const Bytes& got, const Bytes& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " bytes instead of " << want.size();
  }
  const auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin());
  if (g == got.end()) return ::testing::AssertionSuccess();
  std::size_t differing = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    differing += got[i] != want[i];
  return ::testing::AssertionFailure()
         << differing << " of " << got.size() << " bytes differ; the first at offset "
         << (g - got.begin()) << " holds 0x" << std::hex << static_cast<int>(*g) << " instead of 0x"
         << static_cast<int>(*w) << std::dec
         << (*g == kPoison ? " (poison: staging that no copy delivered)" : "");
}

// Random tests print their seed, and record it in the XML report.
inline void announce_seed(std::uint64_t seed) {
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  std::cout << "[   SEED   ] " << seed << '\n';
}

struct ArenaSizes {
  std::size_t arena_bytes = std::size_t{1} << 20;           // frame_alloc, combined overlaps
  std::size_t upload_payload_bytes = std::size_t{1} << 20;  // UploadArena payload area
  std::size_t max_uploads = 1024;                           // UploadArena descriptor table
  OverflowPolicy overflow = OverflowPolicy::fail;
};

// [begin, end) of addresses.
struct AddressRange {
  std::uint64_t begin;
  std::uint64_t end;
};

inline bool contains(const AddressRange& r, std::uint64_t p, std::size_t bytes) {
  return p >= r.begin && p <= r.end && bytes <= r.end - p;
}

// Whether the union of `ranges` covers all of `r`.
inline bool covers(std::vector<AddressRange> ranges, const AddressRange& r) {
  std::sort(ranges.begin(), ranges.end(),
            [](const AddressRange& a, const AddressRange& b) { return a.begin < b.begin; });
  std::uint64_t reached = r.begin;
  for (const AddressRange& x : ranges) {
    if (reached >= r.end || x.begin > reached) break;
    reached = std::max(reached, x.end);
  }
  return reached >= r.end;
}

// The union of `ranges` as sorted, disjoint ranges that do not touch, as offsets from `origin`.
inline std::vector<std::pair<std::int64_t, std::int64_t>> union_of(std::vector<AddressRange> ranges,
                                                                   std::uint64_t origin) {
  std::sort(ranges.begin(), ranges.end(),
            [](const AddressRange& a, const AddressRange& b) { return a.begin < b.begin; });
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  for (const AddressRange& x : ranges) {
    if (x.begin == x.end) continue;
    const auto begin = static_cast<std::int64_t>(x.begin - origin);
    const auto end = static_cast<std::int64_t>(x.end - origin);
    if (!out.empty() && begin <= out.back().second) {
      out.back().second = std::max(out.back().second, end);
    } else {
      out.emplace_back(begin, end);
    }
  }
  return out;
}

// Owns one slot's worth of planner inputs on the host backend and plays the coordinator (upload,
// stage, begin_frame) and the scheduler (execute) around the planner under test.
class PlannerTest : public ::testing::Test {
 protected:
  enum class Side { host, device, mapped };

  PlannerTest() { rebuild(Config{}); }

  // Fresh arenas and planner; earlier destinations stay valid.
  void rebuild(const Config& config, const ArenaSizes& sizes = {}) {
    planner.reset();
    staged.clear();
    sizes_ = sizes;
    arena = std::make_unique<FrameArena>(backend, sizes.arena_bytes, sizes.overflow, "arena",
                                         "raise arena_bytes, or set overflow to \"grow\"");
    uploads = std::make_unique<UploadArena>(backend, sizes.upload_payload_bytes, sizes.max_uploads,
                                            sizes.overflow);
    planner = std::make_unique<TransferPlanner>(config);
  }

  // What Coordinator::begin_frame does to the slot's arenas.
  void next_frame() {
    staged.clear();
    arena->reset(sizes_.arena_bytes, 16);
    uploads->reset(sizes_.upload_payload_bytes, sizes_.max_uploads, 16);
  }

  // Zero-filled device memory (plain host memory on the host backend).
  std::byte* destination(std::size_t bytes) {
    destinations.emplace_back(backend, bytes);
    std::memset(destinations.back().data(), 0, bytes);
    return destinations.back().data();
  }

  // What Coordinator::upload_bytes does; returns where the payload went (pinned).
  std::byte* upload(void* dst, std::span<const std::byte> bytes) {
    std::byte* payload = uploads->reserve(address(dst), bytes.size());
    std::memcpy(payload, bytes.data(), bytes.size());
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

  const TransferPlan& plan() { return planner->plan({arena.get(), uploads.get(), staged}); }

  // The upload descriptors in issue order over all blocks, as the planner left them.
  std::vector<Entry> issued_descriptors() const {
    std::vector<Entry> out;
    for (std::size_t b = 0; b < uploads->block_count(); ++b) {
      const auto v = uploads->block(b);
      for (std::size_t i = v.descriptors; i-- > 0;) {
        const TransferDescriptor& d = v.table()[i];
        out.emplace_back(d.target, d.staging_granule, d.bytes);
      }
    }
    return out;
  }

  static std::byte* split(const UploadArena::BlockView& v, Side side) {
    switch (side) {
      case Side::host:
        return v.host_split;
      case Side::device:
        return v.device_split;
      case Side::mapped:
        return v.mapped_split;
    }
    return nullptr;
  }
  // What a frame used of an upload block: [split - table, split + payloads).
  static AddressRange used_range(const UploadArena::BlockView& v, Side side) {
    const std::uint64_t s = address(split(v, side));
    return {s - v.table_bytes(), s + v.payload_bytes};
  }
  static AddressRange table_range(const UploadArena::BlockView& v, Side side) {
    const std::uint64_t s = address(split(v, side));
    return {s - v.table_bytes(), s};
  }
  static AddressRange payload_range(const UploadArena::BlockView& v, Side side) {
    const std::uint64_t s = address(split(v, side));
    return {s, s + v.payload_bytes};
  }

  // What Scheduler::submit enqueues, in its order, with each scatter run as soon as the staging
  // copies it waits for have run and before any later one: a scatter that reads staging a later
  // copy delivers reads poison. The plan is checked before each stage runs, so a plan that points
  // outside the frame's memory fails the test instead of crashing it.
  void execute(const TransferPlan& p) {
    poison();
    if (!expect_consistent(p, false)) return;
    Progress progress;
    run(p, progress);
  }

  // What Coordinator::end_frame does when plan_early takes the frame: the early plan's staging
  // copies run before finish_early scans (and may rewrite) the descriptors, then the rest of the
  // finished plan runs. Returns the finished plan, or nullptr if plan_early declined the frame.
  const TransferPlan* execute_early(bool large_uploads) {
    const PlannerInput input{arena.get(), uploads.get(), staged, large_uploads};
    const TransferPlan* early = planner->plan_early(input);
    if (early == nullptr) return nullptr;
    poison();
    const std::vector<CopyOp> sent = early->staging_copies;
    for (const CopyOp& c : sent) {
      if (!is_mirror_copy(c)) {
        ADD_FAILURE() << "early staging copy of " << c.bytes << " bytes to " << c.dst
                      << " is not host-to-mirror within one block's use";
        return early;
      }
    }
    Progress progress;
    for (const CopyOp& c : sent) {
      backend.copy_async(c.dst, c.src, c.bytes, stream.view());
      progress.delivered.push_back({address(c.dst), address(c.dst) + c.bytes});
      ++progress.copied;
    }
    backend.synchronize(stream.view());
    const TransferPlan& p = planner->finish_early(input);
    EXPECT_GE(p.staging_copies.size(), sent.size());
    EXPECT_EQ(
        sorted_copies(
            std::span(p.staging_copies).first(std::min(sent.size(), p.staging_copies.size()))),
        sorted_copies(sent))
        << "finish_early changed copies that were already enqueued";
    if (expect_consistent(p, true)) run(p, progress);
    return &p;
  }

  // Whether the plan's last staging copy re-sends upload block 0's descriptor table, as
  // finish_early does after rewriting it.
  bool resends_table(const TransferPlan& p) const {
    if (p.staging_copies.size() < 2 || uploads->block_count() != 1) return false;
    const auto v = uploads->block(0);
    const CopyOp& last = p.staging_copies.back();
    return last.dst == v.device_split - v.table_bytes() &&
           last.src == v.host_split - v.table_bytes() && last.bytes == v.table_bytes();
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

  HostBackend backend;
  Stream stream{backend};
  std::vector<DeviceBuffer<std::byte>> destinations;
  std::unique_ptr<FrameArena> arena;
  std::unique_ptr<UploadArena> uploads;
  std::unique_ptr<TransferPlanner> planner;
  std::vector<StagedRange> staged;

 private:
  struct Delivery {
    std::vector<std::vector<unsigned>> times_scattered;  // per block, per table entry
    std::vector<AddressRange> writes;                    // destination ranges written
    std::size_t scattered_bytes = 0;
  };

  struct Progress {
    std::vector<AddressRange> delivered;  // device ranges written by the copies run so far
    std::size_t copied = 0;               // staging copies run so far
  };

  // Runs the plan from `progress` on, as Scheduler::submit_consumers orders it.
  void run(const TransferPlan& p, Progress& progress) {
    const auto copy_until = [&](std::size_t end) {
      for (; progress.copied < end; ++progress.copied) {
        const CopyOp& c = p.staging_copies[progress.copied];
        backend.copy_async(c.dst, c.src, c.bytes, stream.view());
        progress.delivered.push_back({address(c.dst), address(c.dst) + c.bytes});
      }
    };
    Delivery delivery;
    for (std::size_t b = 0; b < uploads->block_count(); ++b)
      delivery.times_scattered.emplace_back(uploads->block(b).descriptors, 0u);
    for (const ScatterOp& op : p.scatters) {
      copy_until(op.after_copies);
      backend.synchronize(stream.view());
      if (!run_scatter(op, progress.delivered, delivery)) return;
    }
    copy_until(p.staging_copies.size());
    // Ordered copies run one after another; a cluster of them that overlap is one write.
    std::vector<AddressRange> ordered;
    for (const CopyOp& c : p.ordered_copies) {
      backend.copy_async(c.dst, c.src, c.bytes, stream.view());
      ordered.push_back({address(c.dst), address(c.dst) + c.bytes});
    }
    std::sort(ordered.begin(), ordered.end(),
              [](const AddressRange& a, const AddressRange& b) { return a.begin < b.begin; });
    std::vector<AddressRange> clusters;
    for (const AddressRange& r : ordered) {
      if (!clusters.empty() && r.begin < clusters.back().end) {
        clusters.back().end = std::max(clusters.back().end, r.end);
      } else {
        clusters.push_back(r);
      }
    }
    delivery.writes.insert(delivery.writes.end(), clusters.begin(), clusters.end());
    for (const CopyOp& c : p.direct_copies) {
      backend.copy_async(c.dst, c.src, c.bytes, stream.view());
      delivery.writes.push_back({address(c.dst), address(c.dst) + c.bytes});
    }
    backend.synchronize(stream.view());

    EXPECT_EQ(p.scattered_bytes, delivery.scattered_bytes);
    if (!p.scatters.empty()) {
      std::size_t not_once = 0;
      for (const auto& block : delivery.times_scattered)
        not_once += static_cast<std::size_t>(
            std::count_if(block.begin(), block.end(), [](unsigned times) { return times != 1; }));
      EXPECT_EQ(not_once, 0u) << "descriptors not in exactly one scatter";
    }
    // The CUDA scatter kernel runs its descriptors in parallel and the direct copies run in any
    // order, so an overlap left in the plan is a race that the in-order host emulation hides.
    EXPECT_EQ(delivery.writes.size(), p.uploads - p.superseded_uploads - p.merged_overlaps)
        << "every upload is delivered once, or folded into a later one";
    auto& writes = delivery.writes;
    std::sort(writes.begin(), writes.end(),
              [](const AddressRange& a, const AddressRange& b) { return a.begin < b.begin; });
    for (std::size_t i = 1; i < writes.size(); ++i) {
      EXPECT_LE(writes[i - 1].end, writes[i].begin)
          << "writes overlap at destination 0x" << std::hex << writes[i].begin;
    }
  }

  void poison() {
    for (std::size_t b = 0; b < arena->block_count(); ++b) {
      const auto view = arena->block(b);
      std::memset(view.device, static_cast<int>(kPoison), view.capacity);
    }
    for (std::size_t b = 0; b < uploads->block_count(); ++b) {
      const auto v = uploads->block(b);
      std::memset(v.device_split - v.table_bytes(), static_cast<int>(kPoison),
                  v.table_bytes() + v.payload_bytes);
    }
  }

  // A host-to-device copy at the same offset of one arena block or upload block, within what
  // the frame used of it.
  bool is_mirror_copy(const CopyOp& c) const {
    const std::uint64_t src = address(c.src);
    const std::uint64_t dst = address(c.dst);
    for (std::size_t b = 0; b < arena->block_count(); ++b) {
      const auto v = arena->block(b);
      if (src - address(v.host) == dst - address(v.device) &&
          contains({address(v.host), address(v.host) + v.used}, src, c.bytes)) {
        return true;
      }
    }
    for (std::size_t b = 0; b < uploads->block_count(); ++b) {
      const auto v = uploads->block(b);
      if (src - address(v.host_split) == dst - address(v.device_split) &&
          contains(used_range(v, Side::host), src, c.bytes)) {
        return true;
      }
    }
    return false;
  }

  // Direct copies read pinned memory: combined overlaps in the arena, or upload payloads.
  bool is_pinned_source(const CopyOp& c) const {
    const std::uint64_t src = address(c.src);
    for (std::size_t b = 0; b < arena->block_count(); ++b) {
      const auto v = arena->block(b);
      if (contains({address(v.host), address(v.host) + v.used}, src, c.bytes)) return true;
    }
    for (std::size_t b = 0; b < uploads->block_count(); ++b) {
      if (contains(payload_range(uploads->block(b), Side::host), src, c.bytes)) return true;
    }
    return false;
  }

  bool in_destinations(std::uint64_t p, std::size_t bytes) const {
    return std::any_of(destinations.begin(), destinations.end(), [&](const auto& d) {
      return contains({address(d.data()), address(d.data()) + d.size()}, p, bytes);
    });
  }

  struct ScatterSource {
    std::size_t block;
    Side side;  // device staging (after copies) or mapped pinned memory (zero-copy)
  };
  std::optional<ScatterSource> scatter_source(const ScatterOp& op) const {
    for (std::size_t b = 0; b < uploads->block_count(); ++b) {
      const auto v = uploads->block(b);
      if (op.staging == v.device_split) return ScatterSource{b, Side::device};
      if (op.staging == v.mapped_split) return ScatterSource{b, Side::mapped};
    }
    return std::nullopt;
  }

  // Checks what can be checked before anything runs: every copy and table lies in the frame's
  // memory and the user's buffers, counts add up, and under copy_scatter each upload block's
  // staging copies deliver exactly its used range less the payloads sent as direct copies.
  // Returns false if running the plan would touch memory outside those.
  // `early`: a plan_early frame, whose copies went out before the scan; they stage every payload,
  // and a corrected descriptor table may follow them.
  bool expect_consistent(const TransferPlan& p, bool early) {
    bool safe = true;
    std::size_t staging_bytes = 0;
    std::vector<AddressRange> staged_to;
    const bool table_resent = early && resends_table(p);
    for (std::size_t i = 0; i < p.staging_copies.size(); ++i) {
      const CopyOp& c = p.staging_copies[i];
      if (!is_mirror_copy(c)) {
        ADD_FAILURE() << "staging copy of " << c.bytes << " bytes to " << c.dst
                      << " is not host-to-mirror within one block's use";
        safe = false;
      }
      staging_bytes += c.bytes;
      if (!table_resent || i + 1 < p.staging_copies.size()) {
        staged_to.push_back({address(c.dst), address(c.dst) + c.bytes});
      }
    }
    EXPECT_EQ(p.staging_copy_bytes, staging_bytes);
    std::sort(staged_to.begin(), staged_to.end(),
              [](const AddressRange& a, const AddressRange& b) { return a.begin < b.begin; });
    for (std::size_t i = 1; i < staged_to.size(); ++i) {
      EXPECT_LE(staged_to[i - 1].end, staged_to[i].begin) << "staging copies overlap";
    }

    std::size_t direct_bytes = 0;
    for (const CopyOp& c : p.direct_copies) {
      if (!is_pinned_source(c) || !in_destinations(address(c.dst), c.bytes)) {
        ADD_FAILURE() << "direct copy of " << c.bytes << " bytes from " << c.src << " to " << c.dst
                      << " is not from pinned frame memory to a destination";
        safe = false;
      }
      direct_bytes += c.bytes;
    }
    for (const CopyOp& c : p.ordered_copies) {
      if (!is_pinned_source(c) || !in_destinations(address(c.dst), c.bytes)) {
        ADD_FAILURE() << "ordered copy of " << c.bytes << " bytes from " << c.src << " to " << c.dst
                      << " is not from pinned frame memory to a destination";
        safe = false;
      }
      direct_bytes += c.bytes;
    }
    EXPECT_EQ(p.direct_bytes, direct_bytes);

    std::vector<std::size_t> scatters_per_block(uploads->block_count(), 0);
    for (const ScatterOp& op : p.scatters) {
      const auto source = scatter_source(op);
      if (!source) {
        ADD_FAILURE() << "scatter staging " << static_cast<const void*>(op.staging)
                      << " is no upload block's split point";
        safe = false;
        continue;
      }
      const auto v = uploads->block(source->block);
      if (!contains(table_range(v, source->side), address(op.table),
                    op.count * sizeof(TransferDescriptor))) {
        ADD_FAILURE() << "scatter table " << op.table << " (" << op.count
                      << " entries) is not in upload block " << source->block << "'s table";
        safe = false;
      }
      if (op.after_copies > p.staging_copies.size()) {
        ADD_FAILURE() << "scatter waits for " << op.after_copies << " of "
                      << p.staging_copies.size() << " staging copies";
        safe = false;
      }
      if (source->side == Side::mapped) {
        EXPECT_EQ(op.after_copies, 0u) << "a zero-copy scatter waits for no copy";
      }
      ++scatters_per_block[source->block];
    }
    // A block is scattered once (zero-copy) or in 1 .. kMaxPipelineChunks chunks of at least one
    // descriptor each.
    for (std::size_t b = 0; b < scatters_per_block.size() && !p.scatters.empty(); ++b) {
      const std::size_t descriptors = uploads->block(b).descriptors;
      if (descriptors == 0) {
        EXPECT_EQ(scatters_per_block[b], 0u) << "upload block " << b << " is empty";
      } else {
        EXPECT_GE(scatters_per_block[b], 1u) << "upload block " << b;
        EXPECT_LE(scatters_per_block[b],
                  std::min<std::size_t>(descriptors, p.strategy == UploadStrategy::zero_copy
                                                         ? 1
                                                         : Config::kMaxPipelineChunks))
            << "upload block " << b;
      }
    }
    EXPECT_EQ(p.pipeline_chunks,
              p.strategy == UploadStrategy::copy_scatter ? p.scatters.size() : std::size_t{0});

    for (std::size_t b = 0; b < uploads->block_count(); ++b) {
      const auto v = uploads->block(b);
      const AddressRange used = used_range(v, Side::host);
      std::vector<AddressRange> copied;
      for (const CopyOp& c : p.staging_copies) {
        if (contains(used, address(c.src), c.bytes)) {
          copied.push_back({address(c.src), address(c.src) + c.bytes});
        }
      }
      if (p.strategy != UploadStrategy::copy_scatter || v.descriptors == 0) {
        EXPECT_TRUE(copied.empty())
            << "upload block " << b << " copied under " << to_string(p.strategy);
        continue;
      }
      std::vector<AddressRange> holes;  // none in an early plan: its copies went out first
      for (const CopyOp& c : early ? std::span<const CopyOp>() : std::span(p.direct_copies)) {
        if (contains(payload_range(v, Side::host), address(c.src), c.bytes)) {
          holes.push_back({address(c.src), address(c.src) + padded(c.bytes)});
        }
      }
      std::sort(holes.begin(), holes.end(),
                [](const AddressRange& x, const AddressRange& y) { return x.begin < y.begin; });
      std::vector<AddressRange> expected;
      std::uint64_t from = used.begin;
      for (const AddressRange& h : holes) {
        if (h.begin > from) expected.push_back({from, h.begin});
        from = std::max(from, h.end);
      }
      if (from < used.end) expected.push_back({from, used.end});
      const std::uint64_t origin = address(v.host_split);
      EXPECT_EQ(union_of(copied, origin), union_of(expected, origin))
          << "upload block " << b << ": staged bytes, as offsets from its split point";
    }
    return safe;
  }

  // Runs one scatter after checking that what it reads has been delivered.
  bool run_scatter(const ScatterOp& op, const std::vector<AddressRange>& delivered,
                   Delivery& delivery) {
    const ScatterSource source = *scatter_source(op);  // expect_consistent checked it
    const auto v = uploads->block(source.block);
    const bool staged_copy = source.side == Side::device;
    if (staged_copy && !covers(delivered, {address(op.table), address(op.table + op.count)})) {
      ADD_FAILURE() << "a scatter of " << op.count << " descriptors waits for " << op.after_copies
                    << " staging copies, which do not deliver its table";
      return false;
    }
    std::vector<TransferDescriptor> entries(op.count);
    backend.read_device(entries.data(), op.table, op.count * sizeof(TransferDescriptor));
    const auto* table_start =
        reinterpret_cast<const TransferDescriptor*>(split(v, source.side)) - v.descriptors;
    const auto first = static_cast<std::size_t>(op.table - table_start);
    bool safe = true;
    for (std::size_t j = 0; j < entries.size(); ++j) {
      const TransferDescriptor& d = entries[j];
      ++delivery.times_scattered[source.block][first + j];
      if (d.bytes == 0) continue;
      const std::uint64_t src =
          address(op.staging) + std::uint64_t{d.staging_granule} * kStagingGranule;
      if (!contains(payload_range(v, source.side), src, d.bytes) ||
          !in_destinations(d.target, d.bytes)) {
        ADD_FAILURE() << "scatter descriptor of " << d.bytes << " bytes from 0x" << std::hex << src
                      << " to 0x" << d.target << std::dec
                      << " is not from its block's payloads to a destination";
        safe = false;
        continue;
      }
      if (staged_copy && !covers(delivered, {src, src + d.bytes})) {
        ADD_FAILURE() << "scatter descriptor to 0x" << std::hex << d.target << std::dec
                      << " reads payload bytes that the first " << op.after_copies
                      << " staging copies do not deliver";
        safe = false;
        continue;
      }
      delivery.writes.push_back({d.target, d.target + d.bytes});
      delivery.scattered_bytes += d.bytes;
    }
    if (!safe) return false;
    backend.scatter_async(op.table, op.count, op.staging, stream.view());
    backend.synchronize(stream.view());
    return true;
  }

  ArenaSizes sizes_;
};

inline Config with_strategy(UploadStrategy strategy) {
  Config c;
  c.strategy = strategy;
  return c;
}

inline std::string strategy_name(const ::testing::TestParamInfo<UploadStrategy>& info) {
  return std::string(to_string(info.param));
}

// Overlapping writes to one destination, in issue order, and what the planner should make of
// them: uploads superseded whole, and partial overlaps merged.
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
inline void PrintTo(const OverlapCase& c, std::ostream* out) {
  *out << c.name;
}

inline const OverlapCase kOverlapCases[] = {
    {"SameDestinationTwice", {{0, 100}, {0, 100}}, 1, 0},
    {"SameDestinationThrice", {{64, 100}, {64, 100}, {64, 100}}, 2, 0},
    {"LaterCoversEarlier", {{10, 20}, {0, 100}}, 1, 0},
    {"LaterCoversTwoEarlier", {{0, 50}, {60, 40}, {0, 100}}, 2, 0},
    {"PartialOverlap", {{0, 100}, {50, 100}}, 0, 1},
    {"LaterSmallInsideEarlierBig", {{0, 200}, {50, 10}}, 0, 1},
    {"LaterSameStartShorter", {{0, 200}, {0, 10}}, 0, 1},
    {"EarlierSmallInsideLaterBig", {{50, 10}, {0, 200}}, 1, 0},
    {"ChainOutOfOrder", {{0, 100}, {140, 60}, {50, 100}}, 0, 2},
    {"TwoSeparateClusters", {{300, 50}, {0, 10}, {320, 50}, {0, 10}}, 1, 1},
    {"DescendingWithoutOverlap", {{300, 100}, {200, 100}, {100, 100}, {0, 100}}, 0, 0},
    {"TouchingOutOfOrder", {{100, 100}, {0, 100}, {200, 1}}, 0, 0},
    {"LargeThenSmallInside", {{0, 300}, {100, 50}}, 0, 1},  // large: >= 256 bytes
    {"SmallThenLargeCovering", {{10, 20}, {0, 400}}, 1, 0},
    {"OneByteOverlaps", {{10, 1}, {0, 11}, {10, 2}}, 0, 2},
};

}  // namespace framestage::testing
