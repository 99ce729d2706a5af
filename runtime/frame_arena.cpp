#include <framestage/detail/expects.hpp>
#include <framestage/frame_arena.hpp>

#include <algorithm>
#include <bit>

namespace framestage {

namespace {

constexpr std::size_t align_up(std::size_t value, std::size_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

}  // namespace

FrameArena::FrameArena(Backend& backend, std::size_t capacity_bytes, OverflowPolicy policy,
                       std::string name, std::string remedy)
    : backend_(&backend), policy_(policy), name_(std::move(name)), remedy_(std::move(remedy)) {
  FRAMESTAGE_EXPECTS(capacity_bytes > 0, misuse, name_, ": capacity must be > 0 bytes");
  capacity_ = align_up(capacity_bytes, kGranule);
  main_ = make_block(capacity_);
  start_epoch();
}

void FrameArena::start_epoch() noexcept {
  epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  // Chunks stop well before the end, so the tail is handed out exactly and a chunk a thread
  // claims and leaves mostly unused cannot make a request fail that would have fit.
  const std::size_t margin = std::min(capacity_ / 4, 64 * kChunkBytes);
  chunk_limit_ = capacity_ >= margin + kChunkBytes ? capacity_ - margin - kChunkBytes : 0;
  if (capacity_ < 8 * kChunkBytes) chunk_limit_ = 0;
}

ArenaBlock FrameArena::make_block(std::size_t bytes) {
  ArenaBlock block;
  block.host = MemoryBlock(*backend_, MemoryKind::pinned, bytes);
  block.device = MemoryBlock(*backend_, MemoryKind::device, bytes);
  return block;
}

FrameArena::Allocation FrameArena::allocate_slow(std::size_t bytes, std::size_t alignment) {
  FRAMESTAGE_EXPECTS(bytes > 0, misuse, name_, ": allocation of 0 bytes");
  FRAMESTAGE_EXPECTS(std::has_single_bit(alignment) && alignment <= kMaxAlignment, misuse, name_,
                     ": alignment must be a power of two <= ", kMaxAlignment, ", got ", alignment);

  if (alignment > kGranule && bytes <= capacity_) {
    // Rare: stronger alignment than a granule needs a compare-and-swap loop.
    std::size_t head = head_.load(std::memory_order_relaxed);
    while (true) {
      const std::size_t offset = align_up(head, alignment);
      const std::size_t end = align_up(offset + bytes, kGranule);
      if (end > capacity_) break;
      if (head_.compare_exchange_weak(head, end, std::memory_order_relaxed)) {
        return {main_.host.data() + offset, main_.device.data() + offset};
      }
    }
  }

  std::lock_guard lock(overflow_.mutex);
  const std::size_t used_main = std::min(head_.load(std::memory_order_relaxed), capacity_);
  if (policy_ == OverflowPolicy::fail) {
    FRAMESTAGE_FAIL(out_of_memory, name_, " overflow: ", bytes, " bytes (alignment ", alignment,
                    ") do not fit; capacity ", capacity_, " bytes, ", used_main,
                    " used this frame; ", remedy_);
  }
  const std::size_t count = overflow_.count.load(std::memory_order_relaxed);
  if (count > 0) {
    ArenaBlock& last = overflow_.blocks[count - 1];
    const std::size_t offset = align_up(last.used, alignment);
    if (offset + bytes <= last.host.bytes()) {
      last.used = align_up(offset + bytes, kGranule);
      return {last.host.data() + offset, last.device.data() + offset};
    }
  }
  FRAMESTAGE_EXPECTS(count < kMaxOverflowBlocks, out_of_memory, name_, " overflow: ", bytes,
                     " bytes do not fit and all ", kMaxOverflowBlocks,
                     " overflow blocks are in use this frame; ", remedy_);
  // Each overflow block at least doubles what the arena holds, so a few suffice for any frame.
  std::size_t total = capacity_;
  for (std::size_t i = 0; i < count; ++i)
    total += overflow_.blocks[i].host.bytes();
  overflow_.blocks[count] = make_block(align_up(std::max(bytes, total), kGranule));
  overflow_.blocks[count].used = align_up(bytes, kGranule);
  overflow_.count.store(count + 1, std::memory_order_release);
  return {overflow_.blocks[count].host.data(), overflow_.blocks[count].device.data()};
}

std::optional<FrameArena::Location> FrameArena::locate_overflow(const std::byte* p,
                                                                std::size_t bytes) const noexcept {
  const std::size_t count = overflow_.count.load(std::memory_order_acquire);
  if (count == 0) return std::nullopt;
  std::lock_guard lock(overflow_.mutex);  // `used` of the last block moves under this lock
  for (std::size_t i = 0; i < count; ++i) {
    const ArenaBlock& b = overflow_.blocks[i];
    if (p >= b.host.data() && bytes <= b.used && p <= b.host.data() + (b.used - bytes)) {
      return Location{static_cast<std::uint32_t>(i + 1),
                      static_cast<std::size_t>(p - b.host.data())};
    }
  }
  return std::nullopt;
}

FrameArena::BlockView FrameArena::block(std::size_t index) const {
  FRAMESTAGE_EXPECTS(index < block_count(), misuse, name_, ": block ", index, " of ",
                     block_count());
  if (index == 0) {
    return {main_.host.data(), main_.device.data(),
            std::min(head_.load(std::memory_order_relaxed), capacity_), capacity_};
  }
  std::lock_guard lock(overflow_.mutex);
  const ArenaBlock& b = overflow_.blocks[index - 1];
  return {b.host.data(), b.device.data(), b.used, b.host.bytes()};
}

std::size_t FrameArena::used_bytes() const {
  std::size_t used = std::min(head_.load(std::memory_order_relaxed), capacity_);
  const std::size_t count = overflow_.count.load(std::memory_order_acquire);
  if (count == 0) return used;
  std::lock_guard lock(overflow_.mutex);
  for (std::size_t i = 0; i < count; ++i)
    used += overflow_.blocks[i].used;
  return used;
}

std::size_t FrameArena::high_water_bytes() const noexcept {
  return std::max(growth_.high_water(), used_bytes());
}

FrameArena::Resize FrameArena::reset(std::size_t base_capacity_bytes,
                                     std::uint32_t trim_after_frames) {
  // Whole 64 KiB pages, so small changes in use do not reallocate.
  const auto [target, resize] =
      growth_.next(capacity_, align_up(base_capacity_bytes, kGranule), used_bytes(), overflowed(),
                   trim_after_frames, std::size_t{64} << 10);

  if (resize != Resize::none) {
    ArenaBlock replacement = make_block(target);  // may throw; the old blocks stay valid
    main_ = std::move(replacement);
    capacity_ = target;
  }
  overflow_.release_all();
  head_.store(0, std::memory_order_relaxed);
  start_epoch();
  return resize;
}

}  // namespace framestage
