#include <framestage/detail/expects.hpp>
#include <framestage/transfer_planner.hpp>

#include <algorithm>
#include <cstring>

namespace framestage {

namespace {

// A descriptor with no bytes left is one the planner dropped; upload() never writes those.
constexpr bool dropped(const TransferDescriptor& d) {
  return d.bytes == 0;
}

std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

// The descriptor tables of a frame, one span per descriptor-arena block, indexed as one list.
class DescriptorList {
 public:
  explicit DescriptorList(const FrameArena& arena) {
    for (std::size_t b = 0; b < arena.block_count(); ++b) {
      const auto view = arena.block(b);
      tables_[b] = {reinterpret_cast<TransferDescriptor*>(view.host),
                    view.used / sizeof(TransferDescriptor)};
      size_ += tables_[b].size();
      ++count_;
    }
  }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] std::size_t tables() const { return count_; }
  [[nodiscard]] std::span<TransferDescriptor> table(std::size_t b) const { return tables_[b]; }
  TransferDescriptor& operator[](std::size_t i) const {
    for (std::size_t b = 0;; ++b) {
      if (i < tables_[b].size()) return tables_[b][i];
      i -= tables_[b].size();
    }
  }

 private:
  std::array<std::span<TransferDescriptor>, FrameArena::kMaxOverflowBlocks + 1> tables_{};
  std::size_t size_ = 0;
  std::size_t count_ = 0;
};

struct PayloadLocation {
  std::uint32_t block;
  std::size_t offset;
  const std::byte* host;
};

// The arena's blocks, read once per pass: block() costs an atomic load (and a lock for overflow
// blocks), too much to pay for every descriptor.
class ArenaBlocks {
 public:
  explicit ArenaBlocks(const FrameArena& arena) : count_(arena.block_count()) {
    for (std::size_t b = 0; b < count_; ++b)
      views_[b] = arena.block(b);
  }

  // Where the payload that a descriptor reads from the device mirror lives in the pinned arena.
  [[nodiscard]] PayloadLocation locate(const TransferDescriptor& d) const {
    for (std::size_t b = 0; b < count_; ++b) {
      const auto& view = views_[b];
      const auto base = address(view.device);
      if (d.src >= base && d.bytes <= view.used && d.src - base <= view.used - d.bytes) {
        const std::size_t offset = d.src - base;
        return {static_cast<std::uint32_t>(b), offset, view.host + offset};
      }
    }
    FRAMESTAGE_FAIL(misuse, "upload descriptor reads ", d.bytes, " bytes at device address 0x",
                    std::hex, d.src, std::dec, ", which is not in this frame's arena");
  }

 private:
  std::array<FrameArena::BlockView, FrameArena::kMaxOverflowBlocks + 1> views_{};
  std::size_t count_;
};

}  // namespace

void TransferPlan::clear() {
  staging_copies.clear();
  direct_copies.clear();
  scatters.clear();
  strategy = UploadStrategy::automatic;
  staged_ranges = uploads = superseded_uploads = merged_overlaps = 0;
  mirror_bytes = scattered_bytes = direct_bytes = staging_copy_bytes = 0;
}

TransferPlanner::TransferPlanner(const Config& config) : config_(config) {
  config_.validate();
}

const TransferPlan& TransferPlanner::plan(const PlannerInput& input) {
  plan_.clear();
  ranges_.clear();

  for (const StagedRange& s : input.staged) {
    ranges_.push_back({s.block, s.offset, s.bytes});
    plan_.mirror_bytes += s.bytes;
  }
  plan_.staged_ranges = input.staged.size();

  const DescriptorList list(*input.descriptors);
  plan_.uploads = list.size();
  if (list.size() > 1) resolve_overlaps(input);

  // Split what is left into direct copies and small uploads, compacting each table in place.
  const bool all_direct = config_.strategy == UploadStrategy::direct;
  std::array<std::size_t, FrameArena::kMaxOverflowBlocks + 1> kept{};
  std::size_t small_count = 0;
  const std::size_t first_payload_range = ranges_.size();
  const ArenaBlocks arena_blocks(*input.arena);  // after resolve_overlaps, which may allocate
  for (std::size_t t = 0; t < list.tables(); ++t) {
    auto table = list.table(t);
    std::size_t w = 0;
    for (const TransferDescriptor& d : table) {
      if (dropped(d)) continue;
      const PayloadLocation where = arena_blocks.locate(d);
      if (all_direct || d.bytes >= config_.direct_copy_threshold_bytes) {
        plan_.direct_copies.push_back({reinterpret_cast<void*>(d.dst), where.host, d.bytes});
        plan_.direct_bytes += d.bytes;
        continue;
      }
      ranges_.push_back({where.block, where.offset, d.bytes});
      plan_.scattered_bytes += d.bytes;
      table[w++] = d;
    }
    kept[t] = w;
    small_count += w;
  }

  if (small_count > 0) {
    const bool single_blocks =
        input.arena->block_count() == 1 && input.descriptors->block_count() == 1;
    UploadStrategy chosen = config_.strategy;
    if (chosen == UploadStrategy::automatic) {
      chosen = plan_.scattered_bytes <= config_.zero_copy_max_bytes ? UploadStrategy::zero_copy
                                                                    : UploadStrategy::copy_scatter;
    }
    // Zero-copy reads every payload through one bias, which needs a single arena block.
    if (chosen == UploadStrategy::zero_copy && !single_blocks)
      chosen = UploadStrategy::copy_scatter;
    plan_.strategy = chosen;

    if (chosen == UploadStrategy::zero_copy) {
      ranges_.resize(first_payload_range);  // payloads are read in place, not copied
      const auto arena = input.arena->block(0);
      const auto table = input.descriptors->block(0);
      const auto mapped_arena = address(input.backend->mapped_device_address(arena.host));
      plan_.scatters.push_back(
          {static_cast<const TransferDescriptor*>(input.backend->mapped_device_address(table.host)),
           kept[0], static_cast<std::int64_t>(mapped_arena - address(arena.device))});
    } else {
      for (std::size_t t = 0; t < list.tables(); ++t) {
        if (kept[t] == 0) continue;
        const auto table = input.descriptors->block(t);
        const std::size_t bytes = kept[t] * sizeof(TransferDescriptor);
        plan_.staging_copies.push_back({table.device, table.host, bytes});
        plan_.staging_copy_bytes += bytes;
        plan_.scatters.push_back(
            {reinterpret_cast<const TransferDescriptor*>(table.device), kept[t], 0});
      }
    }
  } else if (all_direct && plan_.uploads > 0) {
    plan_.strategy = UploadStrategy::direct;
  }

  add_coalesced_copies(input);
  return plan_;
}

void TransferPlanner::resolve_overlaps(const PlannerInput& input) {
  const DescriptorList list(*input.descriptors);
  const std::size_t n = list.size();

  // Common case: destinations ascend without overlap in issue order, and nothing needs doing.
  bool ascending = true;
  for (std::size_t i = 1; i < n && ascending; ++i) {
    ascending = list[i - 1].dst + list[i - 1].bytes <= list[i].dst;
  }
  if (ascending) return;

  order_.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    order_[i] = static_cast<std::uint32_t>(i);
  // Issue order breaks ties, so within a cluster the last index is the latest write.
  std::sort(order_.begin(), order_.end(), [&](std::uint32_t a, std::uint32_t b) {
    return list[a].dst != list[b].dst ? list[a].dst < list[b].dst : a < b;
  });

  for (std::size_t i = 0; i < n;) {
    const std::uint64_t lo = list[order_[i]].dst;
    std::uint64_t hi = lo + list[order_[i]].bytes;
    std::size_t j = i + 1;
    while (j < n && list[order_[j]].dst < hi) {
      hi = std::max(hi, list[order_[j]].dst + list[order_[j]].bytes);
      ++j;
    }
    if (j - i > 1) {
      const auto cluster = std::span(order_).subspan(i, j - i);
      const std::uint32_t latest = *std::max_element(cluster.begin(), cluster.end());
      TransferDescriptor& last = list[latest];
      if (last.dst == lo && last.dst + last.bytes == hi) {
        plan_.superseded_uploads += cluster.size() - 1;
      } else {
        // Apply the cluster's writes in issue order to one host buffer, then send that instead.
        // Sources are checked first: the buffer's allocation widens what the arena accepts.
        std::sort(cluster.begin(), cluster.end());
        const ArenaBlocks blocks(*input.arena);
        for (const std::uint32_t k : cluster)
          (void)blocks.locate(list[k]);
        const auto merged = input.arena->allocate(hi - lo, FrameArena::kGranule);
        for (const std::uint32_t k : cluster) {
          const TransferDescriptor& d = list[k];
          std::memcpy(merged.host + (d.dst - lo), blocks.locate(d).host, d.bytes);
        }
        last = {address(merged.device), lo, hi - lo, 0};
        plan_.merged_overlaps += cluster.size() - 1;
      }
      for (const std::uint32_t k : cluster) {
        if (k != latest) list[k].bytes = 0;
      }
    }
    i = j;
  }
}

void TransferPlanner::add_coalesced_copies(const PlannerInput& input) {
  if (ranges_.empty()) return;
  const auto by_position = [](const Range& a, const Range& b) {
    return a.block != b.block ? a.block < b.block : a.offset < b.offset;
  };
  if (!std::is_sorted(ranges_.begin(), ranges_.end(), by_position)) {
    std::sort(ranges_.begin(), ranges_.end(), by_position);
  }
  const auto flush = [&](const Range& r) {
    const auto view = input.arena->block(r.block);
    plan_.staging_copies.push_back({view.device + r.offset, view.host + r.offset, r.bytes});
    plan_.staging_copy_bytes += r.bytes;
  };
  Range current = ranges_.front();
  for (std::size_t i = 1; i < ranges_.size(); ++i) {
    const Range& r = ranges_[i];
    const std::size_t end = current.offset + current.bytes;
    // Written so that a huge merge_gap_bytes (merge everything) cannot overflow.
    if (r.block == current.block &&
        (r.offset <= end || r.offset - end <= config_.merge_gap_bytes)) {
      current.bytes = std::max(end, r.offset + r.bytes) - current.offset;
    } else {
      flush(current);
      current = r;
    }
  }
  flush(current);
}

}  // namespace framestage
