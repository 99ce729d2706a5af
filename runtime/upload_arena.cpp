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
  main_ = make_block(payload_bytes, max_descriptors);
}

UploadArena::Block UploadArena::make_block(std::size_t payload_bytes, std::size_t descriptors) {
  Block b;
  b.descriptor_capacity = descriptors;
  b.payload_granules = granules_for(payload_bytes);
  const std::size_t table_bytes = descriptors * sizeof(TransferDescriptor);
  const std::size_t bytes = table_bytes + b.payload_granules * kStagingGranule;
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
  std::lock_guard lock(overflow_mutex_);
  const std::uint64_t head = head_.load(std::memory_order_relaxed) & ~kSealed;
  const std::size_t used_descriptors = head >> kCountShift;
  if (policy_ == OverflowPolicy::fail) {
    FRAMESTAGE_EXPECTS(used_descriptors < main_.descriptor_capacity, out_of_memory, names_.what,
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
  const std::size_t count = overflow_count_.load(std::memory_order_relaxed);
  if (count > 0) {
    Block& last = overflow_[count - 1];
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
  // Each overflow block at least doubles what the arena holds, so a few suffice for any frame.
  std::size_t payload = payload_capacity_bytes();
  std::size_t descriptors = main_.descriptor_capacity;
  for (std::size_t i = 0; i < count; ++i) {
    payload += overflow_[i].payload_granules * kStagingGranule;
    descriptors += overflow_[i].descriptor_capacity;
  }
  Block& block = overflow_[count] = make_block(std::min(std::max(payload, bytes), kMaxPayloadBytes),
                                               std::min(descriptors, kMaxDescriptors));
  block.granules_used = granules;
  overflow_count_.store(count + 1, std::memory_order_release);
  return block.write(block.descriptors++, 0, target, bytes);
}

void UploadArena::note_run_slow(std::uint64_t index, std::uint64_t target, std::size_t bytes) {
  detail::UploadRunCursor& cursor = detail::this_thread_upload_run;
  if (cursor.epoch == epoch_ && cursor.run->next == index) {
    // Consecutive reservations whose targets stepped back: not ascending, whatever else holds.
    unproven_.store(true, std::memory_order_relaxed);
  } else {
    // Another thread reserved since our last call (or this is our first): a new run, which
    // proven_order() checks against its neighbours.
    const std::size_t i = run_count_.fetch_add(1, std::memory_order_relaxed);
    if (i >= kMaxRuns) {
      unproven_.store(true, std::memory_order_relaxed);
      // Later reservations of this thread extend a run nobody reads.
      static thread_local detail::UploadRun unread;
      cursor = {epoch_, &unread};
    } else {
      cursor = {epoch_, &runs_[i]};
    }
  }
  *cursor.run = {index, index + 1, target, target + bytes, bytes, bytes};
}

std::optional<UploadArena::ProvenOrder> UploadArena::proven_order() const {
  if (unproven_.load(std::memory_order_relaxed) || overflowed()) return std::nullopt;
  const std::size_t count = std::min(run_count_.load(std::memory_order_relaxed), kMaxRuns);
  std::array<const detail::UploadRun*, kMaxRuns> runs{};
  for (std::size_t i = 0; i < count; ++i)
    runs[i] = &runs_[i];
  const auto by_first = [](const detail::UploadRun* a, const detail::UploadRun* b) {
    return a->first < b->first;
  };
  std::sort(runs.begin(), runs.begin() + static_cast<std::ptrdiff_t>(count), by_first);
  ProvenOrder order{0, 0};
  std::uint64_t next = 0;
  std::uint64_t end = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const detail::UploadRun& r = *runs[i];
    if (r.first != next || r.first_target < end) return std::nullopt;
    next = r.next;
    end = r.end;
    order.bytes += r.bytes;
    order.largest = std::max(order.largest, r.largest);
  }
  if (next != block(0).descriptors) return std::nullopt;
  return order;
}

UploadArena::BlockView UploadArena::view(const Block& b, std::size_t descriptors,
                                         std::uint64_t granules) const {
  const std::size_t table_bytes = b.descriptor_capacity * sizeof(TransferDescriptor);
  return {b.host.data() + table_bytes, b.device.data() + table_bytes, b.mapped_split, descriptors,
          granules * kStagingGranule};
}

UploadArena::BlockView UploadArena::block(std::size_t index) const {
  FRAMESTAGE_EXPECTS(index < block_count(), misuse, names_.what, " arena: block ", index, " of ",
                     block_count());
  if (index == 0) {
    const std::uint64_t head = head_.load(std::memory_order_relaxed) & ~kSealed;
    return view(main_, head >> kCountShift, head & kGranuleMask);
  }
  std::lock_guard lock(overflow_mutex_);
  const Block& b = overflow_[index - 1];
  return view(b, b.descriptors, b.granules_used);
}

std::size_t UploadArena::descriptor_count() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < block_count(); ++i)
    n += block(i).descriptors;
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
                                   std::min(table.capacity, kMaxDescriptors));  // may throw
    main_ = std::move(replacement);
  }
  {
    std::lock_guard lock(overflow_mutex_);
    const std::size_t count = overflow_count_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < count; ++i)
      overflow_[i] = Block{};
    overflow_count_.store(0, std::memory_order_release);
  }
  head_.store(0, std::memory_order_relaxed);
  // A fresh epoch invalidates every thread's run of earlier frames, of any arena.
  epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  run_count_.store(0, std::memory_order_relaxed);
  unproven_.store(false, std::memory_order_relaxed);
  if (!resize) return ArenaResize::none;
  return payload.resize == ArenaResize::grew || table.resize == ArenaResize::grew
             ? ArenaResize::grew
             : ArenaResize::trimmed;
}

}  // namespace framestage
