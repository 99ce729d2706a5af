#include <framestage/detail/expects.hpp>
#include <framestage/error.hpp>
#include <framestage/transfer_planner.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

namespace framestage {

namespace {

constexpr std::size_t granule_round(std::size_t bytes) {
  return (bytes + kStagingGranule - 1) & ~(kStagingGranule - 1);
}

// Descriptor `i` in issue order of a block (0 = issued first); the table grows down.
TransferDescriptor& issued(const UploadArena::BlockView& block, std::size_t i) {
  return block.table()[block.descriptors - 1 - i];
}

std::size_t payload_offset(const TransferDescriptor& d) {
  return std::size_t{d.staging_granule} * kStagingGranule;
}

// A block's payload area cut into pipelined chunks, each a run of issue indices: chunk k holds
// the descriptors [first[k], first[k + 1]), whose payloads start in its share of the bytes.
struct Chunks {
  std::array<std::size_t, Config::kMaxPipelineChunks + 1> first{};
  std::size_t count = 0;
};

// Chunk sizes grow `growth`-fold from `smallest`, which is the last chunk when the copy comes
// first and the scatter follows (uploads) and the first when the gather comes first and the copy
// follows (readbacks); the largest chunk takes the rest, and is kept at least as large as its
// neighbour. Chunks in which no payload starts are dropped.
Chunks cut_chunks(const UploadArena::BlockView& block, std::size_t smallest, std::size_t growth,
                  bool smallest_last) {
  const std::size_t n = block.descriptors;
  const std::size_t payload = block.payload_bytes;
  std::array<std::size_t, Config::kMaxPipelineChunks> sizes{};
  std::size_t count = 1;
  std::size_t rest = payload;
  const std::size_t most = std::min<std::size_t>(Config::kMaxPipelineChunks, n);
  for (std::size_t size = smallest; count < most && size <= rest / 2; size *= growth) {
    sizes[count++] = size;
    rest -= size;
  }
  sizes[0] = rest;
  // sizes[0] is the largest chunk and sizes[1..] grow away from it toward the smallest: in
  // address order the largest comes first for uploads and last for readbacks.
  if (smallest_last) {
    std::reverse(sizes.begin() + 1, sizes.begin() + static_cast<std::ptrdiff_t>(count));
  } else {
    std::reverse(sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(count));
  }
  Chunks chunks;
  std::size_t boundary = 0;
  for (std::size_t k = 0; k < count; ++k) {
    boundary += sizes[k];
    std::size_t lo = chunks.first[chunks.count];
    std::size_t hi = n;
    while (lo < hi) {  // the first descriptor whose payload starts at or past the boundary
      const std::size_t mid = lo + (hi - lo) / 2;
      if (payload_offset(issued(block, mid)) < boundary) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    const std::size_t last = k + 1 == count ? n : lo;
    if (last > chunks.first[chunks.count]) chunks.first[++chunks.count] = last;
  }
  return chunks;
}

}  // namespace

void TransferPlan::clear() {
  staging_copies.clear();
  direct_copies.clear();
  ordered_copies.clear();
  scatters.clear();
  strategy = UploadStrategy::automatic;
  staged_ranges = uploads = superseded_uploads = merged_overlaps = 0;
  mirror_bytes = scattered_bytes = direct_bytes = staging_copy_bytes = pipeline_chunks = 0;
}

void ReadbackPlan::clear() {
  chunks.clear();
  device_copies.clear();
  regions = bytes = direct_regions = 0;
}

TransferPlanner::TransferPlanner(const Config& config) : config_(config) {
  config_.validate();
}

void TransferPlanner::start(const PlannerInput& input) {
  plan_.clear();
  ranges_.clear();
  holes_.clear();
  for (const StagedRange& s : input.staged) {
    ranges_.push_back({s.block, s.offset, s.bytes});
    plan_.mirror_bytes += s.bytes;
  }
  plan_.staged_ranges = input.staged.size();
}

// Can no two destinations overlap (so their order cannot matter), and is any upload large enough
// for a copy of its own? The reservations usually proved it already; otherwise one pass over the
// descriptors, written without branches on the data, checks that they ascend in issue order.
TransferPlanner::Scan TransferPlanner::scan(const UploadArena& uploads, const BlockViews& blocks,
                                            std::size_t count) {
  if (const auto proven = uploads.proven_order()) {
    plan_.uploads = blocks[0].reserved;
    plan_.scattered_bytes = proven->bytes;
    return {true, proven->largest >= config_.direct_copy_threshold_bytes};
  }
  bool ascending = true;
  bool any_large = false;
  std::uint64_t previous_end = 0;
  std::size_t total_bytes = 0;
  plan_.uploads = 0;
  for (std::size_t b = 0; b < count; ++b) {
    const TransferDescriptor* table = blocks[b].table();
    for (std::size_t k = blocks[b].descriptors; k-- > 0;) {
      const TransferDescriptor& d = table[k];
      ascending &= previous_end <= d.target;
      any_large |= d.bytes >= config_.direct_copy_threshold_bytes;
      previous_end = d.target + d.bytes;
      total_bytes += d.bytes;
    }
    plan_.uploads += blocks[b].reserved;
  }
  plan_.scattered_bytes = total_bytes;
  return {ascending, any_large};
}

const TransferPlan* TransferPlanner::plan_early(const PlannerInput& input) {
  const UploadArena& uploads = *input.uploads;
  if (input.large_uploads || uploads.block_count() != 1) return nullptr;
  const UploadArena::BlockView block = uploads.block(0);
  const bool copy_scatter = config_.strategy == UploadStrategy::copy_scatter ||
                            (config_.strategy == UploadStrategy::automatic &&
                             block.payload_bytes > config_.zero_copy_max_bytes);
  if (!copy_scatter || block.descriptors == 0) return nullptr;
  start(input);
  plan_.strategy = UploadStrategy::copy_scatter;
  std::size_t hole = 0;
  add_upload_copies(block, 0, hole);
  add_coalesced_copies(input);
  return &plan_;
}

const TransferPlan& TransferPlanner::finish_early(const PlannerInput& input) {
  BlockViews blocks{};
  blocks[0] = input.uploads->block(0);
  const Scan found = scan(*input.uploads, blocks, 1);
  if (!found.disjoint) resolve_overlaps(input, blocks, 1);
  if (found.any_large) add_direct_copies(blocks, 1, false);  // only if the hint was wrong
  if (plan_.superseded_uploads + plan_.merged_overlaps > 0 || found.any_large) {
    // The copy already enqueued may have carried the table before it was rewritten.
    const UploadArena::BlockView& block = blocks[0];
    plan_.staging_copies.push_back({block.device_split - block.table_bytes(),
                                    block.host_split - block.table_bytes(), block.table_bytes()});
    plan_.staging_copy_bytes += block.table_bytes();
    for (ScatterOp& op : plan_.scatters)
      op.after_copies = plan_.staging_copies.size();
  }
  return plan_;
}

const TransferPlan& TransferPlanner::plan(const PlannerInput& input) {
  start(input);
  BlockViews blocks{};
  const std::size_t block_count = input.uploads->block_count();
  for (std::size_t b = 0; b < block_count; ++b)
    blocks[b] = input.uploads->block(b);
  const auto [disjoint, any_large] = scan(*input.uploads, blocks, block_count);

  if (!disjoint) resolve_overlaps(input, blocks, block_count);
  const bool all_direct = config_.strategy == UploadStrategy::direct;
  if (all_direct || any_large) add_direct_copies(blocks, block_count, all_direct);

  if (plan_.scattered_bytes > 0) {
    UploadStrategy chosen = config_.strategy;
    if (chosen == UploadStrategy::automatic) {
      chosen = plan_.scattered_bytes <= config_.zero_copy_max_bytes ? UploadStrategy::zero_copy
                                                                    : UploadStrategy::copy_scatter;
    }
    plan_.strategy = chosen;
    std::size_t hole = 0;
    for (std::uint32_t b = 0; b < block_count; ++b) {
      const UploadArena::BlockView& block = blocks[b];
      if (block.descriptors == 0) continue;
      if (chosen == UploadStrategy::zero_copy) {
        plan_.scatters.push_back(
            {reinterpret_cast<const TransferDescriptor*>(block.mapped_split) - block.descriptors,
             block.descriptors, block.mapped_split, 0});
      } else {
        add_upload_copies(block, b, hole);
      }
    }
  } else if (all_direct && plan_.uploads > 0) {
    plan_.strategy = UploadStrategy::direct;
  }

  add_coalesced_copies(input);
  return plan_;
}

const ReadbackPlan& TransferPlanner::plan_readbacks(UploadArena& readbacks) {
  ReadbackPlan& r = readback_plan_;
  r.clear();
  const auto proven = readbacks.proven_order();
  const bool maybe_direct =
      !proven.has_value() || proven->largest >= config_.direct_copy_threshold_bytes;
  if (proven) r.bytes = proven->bytes;
  for (std::uint32_t b = 0; b < readbacks.block_count(); ++b) {
    const UploadArena::BlockView block = readbacks.block(b);
    const std::size_t n = block.descriptors;
    if (n == 0) continue;
    r.regions += block.reserved;
    // Only the main block is pipelined: overflow blocks are rare and the events per slot few.
    Chunks chunks;
    if (b == 0) {
      chunks = cut_chunks(block, config_.pipeline_chunk_bytes, Config::kReadbackChunkGrowth, false);
    } else {
      chunks.first[chunks.count = 1] = n;
    }
    for (std::size_t k = 0; k < chunks.count; ++k) {
      const std::size_t first = chunks.first[k];
      const std::size_t last = chunks.first[k + 1];
      std::size_t gathered = last - first;
      if (maybe_direct) {
        for (std::size_t i = first; i < last; ++i) {
          TransferDescriptor& d = issued(block, i);
          if (!proven) r.bytes += d.bytes;
          if (d.bytes < config_.direct_copy_threshold_bytes) continue;
          r.device_copies.push_back(
              {block.device_split + payload_offset(d),
               reinterpret_cast<const void*>(static_cast<std::uintptr_t>(d.target)), d.bytes});
          ++r.direct_regions;
          --gathered;
          d.bytes = 0;  // the gather skips it
        }
      }
      const std::size_t from = payload_offset(issued(block, first));
      const std::size_t to = last == n ? block.payload_bytes : payload_offset(issued(block, last));
      const std::size_t rows = gathered == 0 ? 0 : last - first;
      r.chunks.push_back({{block.device_split - sizeof(TransferDescriptor) * last,
                           block.host_split - sizeof(TransferDescriptor) * last,
                           sizeof(TransferDescriptor) * rows},
                          {reinterpret_cast<const TransferDescriptor*>(block.device_split) - last,
                           rows, block.device_split},
                          r.device_copies.size(),
                          {block.host_split + from, block.device_split + from, to - from}});
    }
  }
  return r;
}

// A stable LSD radix sort of issue indices by target (11-bit digits, only as many passes as the
// spread of the targets needs), so ties keep issue order. A comparison sort that reads targets
// through the descriptors cost 200 ns per upload on 100,000 shuffled uploads.
void TransferPlanner::sort_by_target(std::size_t n) {
  constexpr unsigned kDigitBits = 11;
  constexpr std::size_t kBuckets = std::size_t{1} << kDigitBits;
  keys_.resize(n);
  order_.resize(n);
  std::uint64_t lowest = ~std::uint64_t{0};
  for (std::size_t i = 0; i < n; ++i)
    lowest = std::min(lowest, issued_[i].descriptor->target);
  std::uint64_t spread = 0;
  for (std::size_t i = 0; i < n; ++i) {
    keys_[i] = issued_[i].descriptor->target - lowest;
    spread |= keys_[i];
    order_[i] = static_cast<std::uint32_t>(i);
  }
  scratch_keys_.resize(n);
  scratch_order_.resize(n);
  for (unsigned shift = 0; shift < 64 && (spread >> shift) != 0; shift += kDigitBits) {
    std::array<std::size_t, kBuckets> start{};
    for (std::size_t i = 0; i < n; ++i)
      ++start[(keys_[i] >> shift) & (kBuckets - 1)];
    std::size_t sum = 0;
    for (std::size_t& c : start)
      sum += std::exchange(c, sum);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t at = start[(keys_[i] >> shift) & (kBuckets - 1)]++;
      scratch_keys_[at] = keys_[i];
      scratch_order_[at] = order_[i];
    }
    keys_.swap(scratch_keys_);
    order_.swap(scratch_order_);
  }
}

void TransferPlanner::resolve_overlaps(const PlannerInput& input, const BlockViews& blocks,
                                       std::size_t count) {
  issued_.clear();
  for (std::uint32_t b = 0; b < count; ++b) {
    for (std::size_t i = 0; i < blocks[b].descriptors; ++i) {
      TransferDescriptor& d = issued(blocks[b], i);
      if (d.bytes > 0) issued_.push_back({&d, b});  // empty entries overlap nothing
    }
  }
  const std::size_t n = issued_.size();
  const auto target = [&](std::uint32_t i) { return issued_[i].descriptor->target; };
  const auto end = [&](std::uint32_t i) {
    return issued_[i].descriptor->target + issued_[i].descriptor->bytes;
  };

  sort_by_target(n);

  // Two passes over the clusters of overlapping uploads: the first sizes the buffer that partial
  // overlaps are combined in, so that running out of arena changes nothing; the second rewrites.
  const auto for_each_cluster = [&](auto&& visit) {
    for (std::size_t i = 0; i < n;) {
      std::uint64_t hi = end(order_[i]);
      std::size_t j = i + 1;
      while (j < n && target(order_[j]) < hi) {
        hi = std::max(hi, end(order_[j]));
        ++j;
      }
      if (j - i > 1) {
        const auto cluster = std::span(order_).subspan(i, j - i);
        const std::uint32_t latest = *std::max_element(cluster.begin(), cluster.end());
        const bool covers = target(latest) == target(order_[i]) && end(latest) == hi;
        visit(cluster, latest, target(order_[i]), hi, covers);
      }
      i = j;
    }
  };
  std::size_t merge_bytes = 0;
  for_each_cluster([&](auto, std::uint32_t, std::uint64_t lo, std::uint64_t hi, bool covers) {
    if (!covers) merge_bytes += granule_round(hi - lo);
  });
  std::byte* merged = nullptr;
  if (merge_bytes > 0) {
    try {
      merged = input.arena->allocate(merge_bytes, FrameArena::kGranule).host;
    } catch (const Error& e) {
      // A full arena under "fail": the clusters go as ordered copies instead (below), so a
      // frame never becomes impossible to end.
      if (e.category() != ErrorCategory::out_of_memory) throw;
    }
  }

  for_each_cluster([&](std::span<std::uint32_t> cluster, std::uint32_t latest, std::uint64_t lo,
                       std::uint64_t hi, bool covers) {
    if (covers) {
      plan_.superseded_uploads += cluster.size() - 1;
      for (const std::uint32_t k : cluster) {
        if (k == latest) continue;
        plan_.scattered_bytes -= issued_[k].descriptor->bytes;
        issued_[k].descriptor->bytes = 0;
      }
      return;
    }
    std::sort(cluster.begin(), cluster.end());  // issue order
    plan_.merged_overlaps += cluster.size() - 1;
    if (merged == nullptr) {
      // No space to combine them: each upload is copied on its own, one after another.
      for (const std::uint32_t k : cluster) {
        TransferDescriptor& d = *issued_[k].descriptor;
        plan_.ordered_copies.push_back({reinterpret_cast<void*>(d.target),
                                        blocks[issued_[k].block].host_split + payload_offset(d),
                                        d.bytes});
        plan_.scattered_bytes -= d.bytes;
        plan_.direct_bytes += d.bytes;
        d.bytes = 0;
      }
      return;
    }
    // Apply the cluster's writes in issue order to one host buffer and send that instead.
    for (const std::uint32_t k : cluster) {
      TransferDescriptor& d = *issued_[k].descriptor;
      std::memcpy(merged + (d.target - lo), blocks[issued_[k].block].host_split + payload_offset(d),
                  d.bytes);
      plan_.scattered_bytes -= d.bytes;
      d.bytes = 0;
    }
    plan_.direct_copies.push_back({reinterpret_cast<void*>(lo), merged, hi - lo});
    plan_.direct_bytes += hi - lo;
    merged += granule_round(hi - lo);
  });
}

void TransferPlanner::add_direct_copies(const BlockViews& blocks, std::size_t count,
                                        bool all_direct) {
  for (std::uint32_t b = 0; b < count; ++b) {
    for (std::size_t i = 0; i < blocks[b].descriptors; ++i) {
      TransferDescriptor& d = issued(blocks[b], i);
      if (d.bytes == 0 || (!all_direct && d.bytes < config_.direct_copy_threshold_bytes)) continue;
      plan_.direct_copies.push_back(
          {reinterpret_cast<void*>(d.target), blocks[b].host_split + payload_offset(d), d.bytes});
      holes_.push_back({b, payload_offset(d), granule_round(d.bytes)});
      plan_.direct_bytes += d.bytes;
      plan_.scattered_bytes -= d.bytes;
      d.bytes = 0;  // the scatter skips it
    }
  }
}

void TransferPlanner::add_upload_copies(const UploadArena::BlockView& block, std::uint32_t index,
                                        std::size_t& hole) {
  const std::size_t n = block.descriptors;
  const auto* device_table = reinterpret_cast<const TransferDescriptor*>(block.device_split) - n;
  // The first chunk's copy carries the descriptor table, which lies just below it.
  const Chunks chunks =
      cut_chunks(block, config_.pipeline_chunk_bytes, Config::kPipelineChunkGrowth, true);
  for (std::size_t k = 0; k < chunks.count; ++k) {
    const std::size_t first = chunks.first[k];
    const std::size_t last = chunks.first[k + 1];
    const auto from = k == 0 ? -static_cast<std::int64_t>(block.table_bytes())
                             : static_cast<std::int64_t>(payload_offset(issued(block, first)));
    const auto to = static_cast<std::int64_t>(last == n ? block.payload_bytes
                                                        : payload_offset(issued(block, last)));
    add_staging_copies(block, index, from, to, hole);
    plan_.scatters.push_back(
        {device_table + (n - last), last - first, block.device_split, plan_.staging_copies.size()});
    ++plan_.pipeline_chunks;
  }
}

void TransferPlanner::add_staging_copies(const UploadArena::BlockView& block, std::uint32_t index,
                                         std::int64_t from, std::int64_t to, std::size_t& hole) {
  const auto copy = [&](std::int64_t a, std::int64_t b) {
    if (a >= b) return;
    plan_.staging_copies.push_back(
        {block.device_split + a, block.host_split + a, static_cast<std::size_t>(b - a)});
    plan_.staging_copy_bytes += static_cast<std::size_t>(b - a);
  };
  // Payloads sent as direct copies are not staged; holes_ is in issue order, as chunks are.
  for (; hole < holes_.size() && holes_[hole].block == index &&
         static_cast<std::int64_t>(holes_[hole].offset) < to;
       ++hole) {
    const auto start = static_cast<std::int64_t>(holes_[hole].offset);
    copy(from, start);
    from = std::max(from, start + static_cast<std::int64_t>(holes_[hole].bytes));
  }
  copy(from, to);
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
