#include <framestage/device_buffer.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/transfer_planner.hpp>
#include <framestage/upload_arena.hpp>

#include "support/expect_error.hpp"

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

namespace framestage {
namespace {

using testing::throws_error;
using Bytes = std::vector<std::byte>;

std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

// What an upload of `bytes` takes of an upload block's payload area: whole staging granules.
constexpr std::size_t padded(std::size_t bytes) {
  return (bytes + kStagingGranule - 1) / kStagingGranule * kStagingGranule;
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

// A descriptor as a comparable value: target, staging_granule, bytes.
using Entry = std::tuple<std::uint64_t, std::uint32_t, std::uint32_t>;

// Bytes the scheduler's "device" would have left from an earlier frame; a copy or scatter that
// reads device memory nobody delivered picks these up instead of the payload.
constexpr std::byte kPoison{0xa5};

// Large buffers compared byte for byte, reporting where they differ rather than every byte.
::testing::AssertionResult same_bytes(const Bytes& got, const Bytes& want) {
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
void announce_seed(std::uint64_t seed) {
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

bool contains(const AddressRange& r, std::uint64_t p, std::size_t bytes) {
  return p >= r.begin && p <= r.end && bytes <= r.end - p;
}

// Whether the union of `ranges` covers all of `r`.
bool covers(std::vector<AddressRange> ranges, const AddressRange& r) {
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
std::vector<std::pair<std::int64_t, std::int64_t>> union_of(std::vector<AddressRange> ranges,
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

const OverlapCase kOverlapCases[] = {
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

}  // namespace
}  // namespace framestage

namespace framestage {
namespace {

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
