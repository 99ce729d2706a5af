#include <framestage/detail/expects.hpp>
#include <framestage/upload_arena.hpp>

#include <algorithm>

namespace framestage {

namespace {

constexpr std::uint64_t granules_for(std::size_t bytes) {
  return (bytes + kStagingGranule - 1) / kStagingGranule;
}

}  // namespace

UploadArena::UploadArena(Backend& backend, std::size_t payload_bytes, std::size_t max_descriptors,
                         OverflowPolicy policy, Names names)
    : backend_(&backend), policy_(policy), names_(names) {
  FRAMESTAGE_EXPECTS(payload_bytes > 0 && payload_bytes <= kMaxPayloadBytes, misuse, names_.what,
                     " arena: payload capacity must be 1..", kMaxPayloadBytes, " bytes, got ",
                     payload_bytes);
  FRAMESTAGE_EXPECTS(max_descriptors > 0 && max_descriptors <= kMaxDescriptors, misuse, names_.what,
                     " arena: max_descriptors must be 1..", kMaxDescriptors, ", got ",
                     max_descriptors);
  main_ = make_block(payload_bytes, max_descriptors, true);
}

UploadArena::Block UploadArena::make_block(std::size_t payload_bytes, std::size_t descriptors,
                                           bool spare) {
  Block b;
  b.descriptor_capacity = descriptors;
  b.payload_granules = granules_for(payload_bytes);
  // Spare room for chunks where it holds a few of them (twice kChunkDescriptors and
  // kMaxChunkGranules); without it every reservation is exact.
  if (spare && descriptors / 8 >= 2 * kChunkDescriptors &&
      b.payload_granules / 8 >= 2 * kMaxChunkGranules) {
    b.spare_descriptors = descriptors / 8;
    // Staging positions are 32-bit granule counts.
    b.spare_granules =
        std::min(b.payload_granules / 8, kMaxPayloadBytes / kStagingGranule - b.payload_granules);
  }
  const std::size_t table_bytes = b.table_entries() * sizeof(TransferDescriptor);
  const std::size_t bytes = table_bytes + (b.payload_granules + b.spare_granules) * kStagingGranule;
  b.host = MemoryBlock(*backend_, MemoryKind::pinned, bytes);
  b.device = MemoryBlock(*backend_, MemoryKind::device, bytes);
  b.mapped_split =
      static_cast<std::byte*>(backend_->mapped_device_address(b.host.data())) + table_bytes;
  return b;
}

std::byte* UploadArena::reserve_slow(std::uint64_t target, std::size_t bytes) {
  FRAMESTAGE_EXPECTS(bytes > 0 && bytes <= kMaxReservationBytes, misuse, names_.what,
                     " arena: a reservation must be 1..", kMaxReservationBytes, " bytes, got ",
                     bytes);
  const std::uint64_t granules = granules_for(bytes);
  detail::UploadChunk* chunk = chunk_of_this_thread();
  if (chunk != nullptr) {
    if (claim(*chunk, target, granules)) return take(*chunk, target, bytes, granules);
    // Past the main block: this thread's later reservations must not land in its chunk there,
    // before the ones it makes now in an overflow block. (Under "fail" nothing changes.)
    if (policy_ == OverflowPolicy::grow) abandon(*chunk);
    return reserve_overflow(target, bytes);
  }
  // More threads than chunks: one at a time, exactly as needed.
  unproven_.store(true, std::memory_order_relaxed);
  std::uint64_t head = head_.load(std::memory_order_relaxed);
  while ((head & kSealed) == 0 && (head >> kCountShift) < main_.table_entries() &&
         (head & kGranuleMask) + granules <= main_.payload_granules + main_.spare_granules) {
    if (head_.compare_exchange_weak(head, head + (std::uint64_t{1} << kCountShift) + granules,
                                    std::memory_order_relaxed)) {
      return main_.write(head >> kCountShift, head & kGranuleMask, target, bytes);
    }
  }
  return reserve_overflow(target, bytes);
}

detail::UploadChunk* UploadArena::chunk_of_this_thread() {
  detail::UploadChunkCursor& cursor =
      detail::this_thread_upload_chunks[epoch_ % detail::kUploadCursorWays];
  if (cursor.epoch == epoch_) return cursor.chunk;
  // This thread's first reservation in this frame (or another arena took its cursor entry: the
  // chunk it had stays behind, and pad_unused() empties its rest).
  const std::size_t i = chunk_count_.fetch_add(1, std::memory_order_relaxed);
  if (i >= kMaxChunks) return nullptr;
  chunks_[i] = detail::UploadChunk{};
  cursor = {epoch_, &chunks_[i]};
  return cursor.chunk;
}

bool UploadArena::claim(detail::UploadChunk& chunk, std::uint64_t target, std::uint64_t granules) {
  const std::uint64_t capacity = main_.table_entries();
  const std::uint64_t payload_capacity = main_.payload_granules + main_.spare_granules;
  // What chunks leave unused is at most what was given up plus every thread's current chunk
  // (one each, none over kChunkDescriptors and kMaxChunkGranules). A new chunk only while twice
  // that fits the spare room: two threads giving chunks up at once cannot overshoot it then, and
  // the configured capacities stay free for reservations.
  const std::uint64_t threads = std::min(chunk_count_.load(std::memory_order_relaxed), kMaxChunks);
  const bool chunks =
      granules <= kMaxChunkGranules / 4 &&
      abandoned_.load(std::memory_order_relaxed) + 2 * threads * kChunkDescriptors <=
          main_.spare_descriptors &&
      abandoned_granules_.load(std::memory_order_relaxed) + 2 * threads * kMaxChunkGranules <=
          main_.spare_granules;
  // Payload for kChunkDescriptors reservations of this thread's average size so far.
  const std::uint64_t average =
      (chunk.granules + granules + chunk.reservations) / (chunk.reservations + 1);  // rounded up
  const std::uint64_t chunk_payload =
      std::clamp<std::uint64_t>(average * kChunkDescriptors, granules, kMaxChunkGranules);

  std::uint64_t head = head_.load(std::memory_order_relaxed);
  while ((head & kSealed) == 0) {
    const std::uint64_t count = head >> kCountShift;
    const std::uint64_t used = head & kGranuleMask;
    // A chunk that ends where the block's use does grows in place: its rest stays usable.
    const bool grows = chunk.active && chunk.end == count && chunk.end_granule == used;
    const std::uint64_t spare = grows ? chunk.end - chunk.next : 0;
    const std::uint64_t spare_payload = grows ? chunk.end_granule - chunk.next_granule : 0;
    std::uint64_t descriptors = spare > 0 ? 0 : 1;
    std::uint64_t payload = granules - std::min(granules, spare_payload);
    // A chunk is topped up to a chunk's worth of each, not given one on top of what it has left:
    // a thread whose entries run out before its payload (or the other way round) would otherwise
    // pile up unused room in its chunk, past what claims allow for, and give it up all at once.
    const std::uint64_t top_up = kChunkDescriptors - std::min(spare, kChunkDescriptors);
    const std::uint64_t top_up_payload =
        std::max(payload, chunk_payload - std::min(chunk_payload, spare_payload));
    if (chunks && count + top_up <= capacity && used + top_up_payload <= payload_capacity) {
      descriptors = top_up;
      payload = top_up_payload;
    }
    if (count + descriptors > capacity || used + payload > payload_capacity) return false;
    if (head_.compare_exchange_weak(head, head + (descriptors << kCountShift) + payload,
                                    std::memory_order_relaxed)) {
      if (!grows) {
        if (chunk.active) {
          abandon(chunk);
          end_run(chunk);
          chunk.turned_back |= target < chunk.run.end;
        } else {
          chunk.first_target = target;
        }
        chunk.active = true;
        chunk.next = count;
        chunk.next_granule = used;
        chunk.run = {count, count, target, target};
      }
      chunk.claimed += descriptors;
      chunk.end = count + descriptors;
      chunk.end_granule = used + payload;
      return true;
    }
  }
  return false;
}

void UploadArena::abandon(detail::UploadChunk& chunk) {
  // A chunk may run out of descriptors with payload to spare, or the other way round.
  if (chunk.next < chunk.end)
    abandoned_.fetch_add(chunk.end - chunk.next, std::memory_order_relaxed);
  if (chunk.next_granule < chunk.end_granule) {
    abandoned_granules_.fetch_add(chunk.end_granule - chunk.next_granule,
                                  std::memory_order_relaxed);
  }
  // Empty entries at the run's end and the chunk's payload end change no order anything checks.
  for (; chunk.next < chunk.end; ++chunk.next)
    (void)main_.write(chunk.next, chunk.end_granule, chunk.run.end, 0);
  chunk.next_granule = chunk.end_granule;
}

void UploadArena::end_run(detail::UploadChunk& chunk) {
  if (chunk.ended_count == chunk.ended.size()) {
    chunk.too_many_runs = true;
    return;
  }
  detail::UploadRun& ended = chunk.ended[chunk.ended_count++];
  ended = chunk.run;
  ended.next = chunk.end;
}

std::byte* UploadArena::reserve_overflow(std::uint64_t target, std::size_t bytes) {
  const std::uint64_t granules = granules_for(bytes);
  std::lock_guard lock(overflow_.mutex);
  const std::uint64_t head = head_.load(std::memory_order_relaxed) & ~kSealed;
  const std::size_t used_descriptors = head >> kCountShift;
  if (policy_ == OverflowPolicy::fail) {
    FRAMESTAGE_EXPECTS(used_descriptors < main_.table_entries(), out_of_memory, names_.what,
                       " descriptor table overflow: more than ", names_.count_key, " (",
                       main_.descriptor_capacity, ") ", names_.what, "s this frame; raise ",
                       names_.count_key,
                       ", or set overflow to "
                       "\"grow\"");
    FRAMESTAGE_FAIL(out_of_memory, names_.what, " arena overflow: ", bytes,
                    " bytes do not fit; capacity ", payload_capacity_bytes(), " bytes, ",
                    (head & kGranuleMask) * kStagingGranule, " used this frame; raise ",
                    names_.bytes_key, ", or set overflow to \"grow\"");
  }
  // Sealing orders every reservation of the main block before those of the overflow blocks.
  head_.fetch_or(kSealed, std::memory_order_relaxed);
  const std::size_t count = overflow_.count.load(std::memory_order_relaxed);
  if (count > 0) {
    Block& last = overflow_.blocks[count - 1];
    if (last.descriptors < last.descriptor_capacity &&
        last.granules_used + granules <= last.payload_granules) {
      const std::uint64_t granule = last.granules_used;
      last.granules_used += granules;
      return last.write(last.descriptors++, granule, target, bytes);
    }
  }
  FRAMESTAGE_EXPECTS(count < kMaxOverflowBlocks, out_of_memory, names_.what,
                     " arena overflow: ", bytes, " bytes do not fit and all ", kMaxOverflowBlocks,
                     " overflow blocks are in use this frame; raise ", names_.bytes_key, " or ",
                     names_.count_key);
  // Each overflow block doubles what the arena holds of the side that ran out, so a few suffice
  // for any frame; the other side grows only as far as the frame's average reservation needs.
  // (Doubling both made a frame of 131,000 one-byte uploads into an arena of 16 MiB and 16
  // descriptors ask for a 32-GiB block: payload doubled with every table doubling.)
  std::size_t payload = payload_capacity_bytes();
  std::size_t descriptors = main_.descriptor_capacity;
  std::uint64_t used_granules = head & kGranuleMask;
  std::uint64_t used_descriptors_total = used_descriptors;
  for (std::size_t i = 0; i < count; ++i) {
    payload += overflow_.blocks[i].payload_granules * kStagingGranule;
    descriptors += overflow_.blocks[i].descriptor_capacity;
    used_granules += overflow_.blocks[i].granules_used;
    used_descriptors_total += overflow_.blocks[i].descriptors;
  }
  // Granules per reservation so far (this one included), rounded up.
  const std::uint64_t mean_granules =
      (used_granules + granules + used_descriptors_total) / (used_descriptors_total + 1);
  const std::size_t payload_for_descriptors = descriptors * mean_granules * kStagingGranule;
  const std::size_t descriptors_for_payload = payload / (mean_granules * kStagingGranule) + 1;
  payload = std::max(std::min(payload, payload_for_descriptors), bytes);
  descriptors = std::min(descriptors, descriptors_for_payload);
  Block& block = overflow_.blocks[count] = make_block(
      std::min(payload, kMaxPayloadBytes), std::min(descriptors, kMaxDescriptors), false);
  block.granules_used = granules;
  overflow_.count.store(count + 1, std::memory_order_release);
  return block.write(block.descriptors++, 0, target, bytes);
}

void UploadArena::pad_unused() {
  const std::uint64_t head = head_.load(std::memory_order_relaxed) & ~kSealed;
  const detail::UploadChunk* last = last_chunk(head);
  const std::size_t count = std::min(chunk_count_.load(std::memory_order_relaxed), kMaxChunks);
  for (std::size_t i = 0; i < count; ++i) {
    const detail::UploadChunk& c = chunks_[i];
    if (!c.active || &c == last) continue;  // the last chunk's rest is outside the view
    for (std::uint64_t k = c.next; k < c.end; ++k)
      (void)main_.write(k, c.end_granule, c.run.end, 0);
  }
}

const detail::UploadChunk* UploadArena::last_chunk(std::uint64_t head) const {
  const std::size_t count = std::min(chunk_count_.load(std::memory_order_relaxed), kMaxChunks);
  for (std::size_t i = 0; i < count; ++i) {
    const detail::UploadChunk& c = chunks_[i];
    if (c.active && c.end == (head >> kCountShift) && c.end_granule == (head & kGranuleMask)) {
      return &c;
    }
  }
  return nullptr;
}

std::optional<UploadArena::ProvenOrder> UploadArena::proven_order() const {
  if (unproven_.load(std::memory_order_relaxed) || overflowed()) return std::nullopt;
  const std::uint64_t claimed_by_all =
      (head_.load(std::memory_order_relaxed) & ~kSealed) >> kCountShift;
  // The runs that ended, then each thread's current one, which ends where its chunk does; and
  // each thread's range over the frame.
  std::vector<detail::UploadRun>& runs = proven_runs_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges = proven_ranges_;
  runs.clear();
  ranges.clear();
  bool by_runs = true;
  bool by_ranges = true;
  std::uint64_t claimed = 0;
  ProvenOrder order{0, 0};
  const std::size_t chunks = std::min(chunk_count_.load(std::memory_order_relaxed), kMaxChunks);
  for (std::size_t i = 0; i < chunks; ++i) {
    const detail::UploadChunk& c = chunks_[i];
    if (!c.active) continue;
    if (c.stepped_back) return std::nullopt;
    order.bytes += c.bytes;
    order.largest = std::max(order.largest, c.largest);
    claimed += c.claimed;
    by_runs &= !c.too_many_runs;
    if (by_runs) {
      runs.insert(runs.end(), c.ended.begin(), c.ended.begin() + c.ended_count);
      runs.push_back(c.run);
      runs.back().next = c.end;
    }
    by_ranges &= !c.turned_back;
    if (by_ranges) ranges.emplace_back(c.first_target, c.run.end);
  }
  // Every descriptor claimed is some thread's: none was reserved outside a chunk.
  if (claimed != claimed_by_all) return std::nullopt;

  if (by_ranges) {
    std::sort(ranges.begin(), ranges.end());
    bool disjoint = true;
    for (std::size_t i = 1; i < ranges.size(); ++i)
      disjoint &= ranges[i].first >= ranges[i - 1].second;
    if (disjoint) return order;
  }
  if (!by_runs) return std::nullopt;
  std::sort(runs.begin(), runs.end(), [](const detail::UploadRun& a, const detail::UploadRun& b) {
    return a.first < b.first;
  });
  std::uint64_t next = 0;
  std::uint64_t end = 0;
  for (const detail::UploadRun& r : runs) {
    if (r.first != next || r.first_target < end) return std::nullopt;
    next = r.next;
    end = r.end;
  }
  // Runs end where their chunks do, so together they cover every descriptor claimed.
  if (next != claimed_by_all) return std::nullopt;
  return order;
}

UploadArena::BlockView UploadArena::view(const Block& b, std::size_t descriptors,
                                         std::size_t reserved, std::uint64_t granules) const {
  const std::size_t table_bytes = b.table_entries() * sizeof(TransferDescriptor);
  return {b.host.data() + table_bytes,
          b.device.data() + table_bytes,
          b.mapped_split,
          descriptors,
          reserved,
          granules * kStagingGranule};
}

UploadArena::BlockView UploadArena::block(std::size_t index) const {
  FRAMESTAGE_EXPECTS(index < block_count(), misuse, names_.what, " arena: block ", index, " of ",
                     block_count());
  if (index == 0) {
    const std::uint64_t head = head_.load(std::memory_order_relaxed) & ~kSealed;
    std::uint64_t descriptors = head >> kCountShift;
    std::uint64_t granules = head & kGranuleMask;
    // The last chunk's unused rest is cut off; the rest of every other chunk stays, empty.
    std::uint64_t empty = abandoned_.load(std::memory_order_relaxed);
    const std::size_t count = std::min(chunk_count_.load(std::memory_order_relaxed), kMaxChunks);
    for (std::size_t i = 0; i < count; ++i)
      empty += chunks_[i].active ? chunks_[i].end - chunks_[i].next : 0;
    if (const detail::UploadChunk* last = last_chunk(head)) {
      empty -= last->end - last->next;
      descriptors = last->next;
      granules = last->next_granule;
    }
    return view(main_, descriptors, descriptors - empty, granules);
  }
  std::lock_guard lock(overflow_.mutex);
  const Block& b = overflow_.blocks[index - 1];
  return view(b, b.descriptors, b.descriptors, b.granules_used);
}

std::size_t UploadArena::descriptor_count() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < block_count(); ++i)
    n += block(i).reserved;
  return n;
}

ArenaResize UploadArena::reset(std::size_t base_payload_bytes, std::size_t base_max_descriptors,
                               std::uint32_t trim_after_frames) {
  std::size_t payload_used = 0;
  std::size_t descriptors_used = 0;
  for (std::size_t i = 0; i < block_count(); ++i) {
    const BlockView v = block(i);
    payload_used += v.payload_bytes;
    descriptors_used += v.descriptors;
  }
  // Payload in whole 64 KiB pages; descriptor slots in 4 KiB worth of descriptors.
  const auto payload =
      payload_growth_.next(payload_capacity_bytes(), base_payload_bytes, payload_used, overflowed(),
                           trim_after_frames, std::size_t{64} << 10);
  const auto table =
      descriptor_growth_.next(main_.descriptor_capacity, base_max_descriptors, descriptors_used,
                              overflowed(), trim_after_frames, 4096 / sizeof(TransferDescriptor));
  const bool resize = payload.resize != ArenaResize::none || table.resize != ArenaResize::none;
  if (resize) {
    Block replacement = make_block(std::min(payload.capacity, kMaxPayloadBytes),
                                   std::min(table.capacity, kMaxDescriptors), true);  // may throw
    main_ = std::move(replacement);
  }
  overflow_.release_all();
  head_.store(0, std::memory_order_relaxed);
  // A fresh epoch invalidates every thread's chunk of earlier frames, of any arena.
  epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  chunk_count_.store(0, std::memory_order_relaxed);
  abandoned_.store(0, std::memory_order_relaxed);
  abandoned_granules_.store(0, std::memory_order_relaxed);
  unproven_.store(false, std::memory_order_relaxed);
  if (!resize) return ArenaResize::none;
  return payload.resize == ArenaResize::grew || table.resize == ArenaResize::grew
             ? ArenaResize::grew
             : ArenaResize::trimmed;
}

}  // namespace framestage
