/// @file frame_arena.hpp
/// @brief One slot's staging memory: a pinned host block and its device mirror, bump allocated.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/detail/capacity_tracker.hpp>
#include <framestage/detail/overflow_blocks.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace framestage {

namespace detail {
/// A thread's current chunk of an arena's main block, valid while `epoch` is the arena's.
struct ArenaChunk {
  std::uint64_t epoch = 0;
  std::size_t begin = 0;
  std::size_t next = 0;
  std::size_t end = 0;
};
/// The chunk a thread allocates from now: the one place the fast path looks.
inline thread_local ArenaChunk this_thread_arena_chunk{};
/// Chunks of other arenas the thread switched away from (as when one thread fills the frames of
/// several coordinators), parked by epoch, so switching back does not claim a new chunk.
inline constexpr std::size_t kParkedArenaChunks = 7;
inline thread_local std::array<ArenaChunk, kParkedArenaChunks> this_thread_parked_arena_chunks{};

/// Makes `chunk` the current chunk, parking the one it replaces if that belongs to another arena.
inline void switch_arena_chunk(const ArenaChunk& chunk) {
  ArenaChunk& current = this_thread_arena_chunk;
  if (current.epoch != 0 && current.epoch != chunk.epoch) {
    this_thread_parked_arena_chunks[current.epoch % kParkedArenaChunks] = current;
  }
  current = chunk;
}

/// Brings back the parked chunk of the arena at `epoch`, if there is one.
inline bool resume_arena_chunk(std::uint64_t epoch) {
  ArenaChunk& parked = this_thread_parked_arena_chunks[epoch % kParkedArenaChunks];
  if (parked.epoch != epoch) return false;
  const ArenaChunk chunk = std::exchange(parked, ArenaChunk{});
  switch_arena_chunk(chunk);
  return true;
}
}  // namespace detail

/// @brief A pinned block and the device block that mirrors it byte for byte.
struct ArenaBlock {
  MemoryBlock host;    ///< pinned, written by the host
  MemoryBlock device;  ///< same size; offset k here mirrors offset k in `host`
  std::size_t used = 0;
};

/// @brief Bump allocator over pinned memory with a device mirror of equal layout.
///
/// Allocations are lock-free (one atomic fetch_add) while they fit the main block. One that does
/// not fit throws under OverflowPolicy::fail, leaving earlier allocations intact, or, under
/// OverflowPolicy::grow, is served from an overflow block taken under a lock; the next reset()
/// then replaces the blocks with one main block large enough for that frame. A grown arena
/// trims back to what recent frames used after `trim_after_frames` frames that did not fill it.
///
/// **Ownership:** owns its blocks; pointers it hands out are valid until reset().
/// **Thread safety:** allocate(), locate() and the const queries may run concurrently from any
/// number of threads; reset() needs exclusive access (no allocation in flight).
class FrameArena {
 public:
  /// Every allocation starts on a multiple of this, so a single fetch_add keeps alignment.
  static constexpr std::size_t kGranule = 16;
  /// Largest alignment honoured: block bases are 256-byte aligned on host and device.
  static constexpr std::size_t kMaxAlignment = 256;
  static constexpr std::size_t kMaxOverflowBlocks = 32;
  /// Threads claim the main block in chunks of this size and allocate small requests from them
  /// without atomics; the last quarter of the block (at most 64 chunks) is handed out exactly.
  static constexpr std::size_t kChunkBytes = std::size_t{16} << 10;

  /// @param name   what the arena holds, for error messages ("arena", "descriptor table")
  /// @param remedy what a user can change when it overflows, for error messages
  /// @throws Error(out_of_memory) if the blocks cannot be allocated.
  FrameArena(Backend& backend, std::size_t capacity_bytes, OverflowPolicy policy, std::string name,
             std::string remedy);
  FrameArena(const FrameArena&) = delete;
  FrameArena& operator=(const FrameArena&) = delete;

  struct Allocation {
    std::byte* host;    ///< where the host writes
    std::byte* device;  ///< the same bytes in the device mirror
  };

  /// @brief Reserves `bytes` (> 0) aligned to `alignment` (a power of two, at most 256).
  /// @throws Error(out_of_memory) under OverflowPolicy::fail when it does not fit, naming the
  ///         request, the capacity and the bytes already used; Error(misuse) for bad arguments.
  [[nodiscard]] Allocation allocate(std::size_t bytes, std::size_t alignment) {
    // alignof(T) is a constant, so the power-of-two test folds away for frame_alloc<T>.
    if (std::has_single_bit(alignment) && alignment <= kGranule && bytes - 1 < capacity_) {
      const std::size_t size = (bytes + kGranule - 1) & ~(kGranule - 1);
      // Small allocations come from a chunk this thread claimed, with no atomic operation.
      detail::ArenaChunk& chunk = detail::this_thread_arena_chunk;
      if ((chunk.epoch == epoch_ || detail::resume_arena_chunk(epoch_)) &&
          size <= chunk.end - chunk.next) [[likely]] {
        const std::size_t offset = std::exchange(chunk.next, chunk.next + size);
        return {main_.host.data() + offset, main_.device.data() + offset};
      }
      if (size <= kChunkBytes / 4 && head_.load(std::memory_order_relaxed) < chunk_limit_) {
        const std::size_t offset = head_.fetch_add(kChunkBytes, std::memory_order_relaxed);
        if (offset + kChunkBytes <= capacity_) [[likely]] {
          detail::switch_arena_chunk({epoch_, offset, offset + size, offset + kChunkBytes});
          return {main_.host.data() + offset, main_.device.data() + offset};
        }
        std::size_t expected = offset + kChunkBytes;
        head_.compare_exchange_strong(expected, offset, std::memory_order_relaxed);
      }
      const std::size_t offset = head_.fetch_add(size, std::memory_order_relaxed);
      if (offset + size <= capacity_) [[likely]] {
        return {main_.host.data() + offset, main_.device.data() + offset};
      }
      // Give the bytes back if nobody allocated behind us, so a smaller request can still fit.
      std::size_t expected = offset + size;
      head_.compare_exchange_strong(expected, offset, std::memory_order_relaxed);
    }
    return allocate_slow(bytes, alignment);
  }

  /// @brief Where an allocated host range lives: block 0 is the main block.
  struct Location {
    std::uint32_t block;
    std::size_t offset;
  };
  /// @brief The block holding [ptr, ptr + bytes), if the range lies within this frame's use.
  [[nodiscard]] std::optional<Location> locate(const void* ptr, std::size_t bytes) const noexcept {
    const auto* p = static_cast<const std::byte*>(ptr);
    // What this thread allocated from its chunk: no shared line read (the head moves whenever
    // any thread claims a chunk).
    const detail::ArenaChunk& own = detail::this_thread_arena_chunk;
    if (own.epoch == epoch_ && p >= main_.host.data() + own.begin &&
        bytes <= own.next - own.begin && p <= main_.host.data() + (own.next - bytes)) [[likely]] {
      return Location{0, static_cast<std::size_t>(p - main_.host.data())};
    }
    const std::size_t used = std::min(head_.load(std::memory_order_relaxed), capacity_);
    if (p >= main_.host.data() && bytes <= used && p <= main_.host.data() + (used - bytes))
        [[likely]] {
      const auto offset = static_cast<std::size_t>(p - main_.host.data());
      // In the calling thread's own chunk, only what it has handed out counts.
      // (A chunk the thread parked for another arena is not checked: the test is looser there.)
      const detail::ArenaChunk& chunk = detail::this_thread_arena_chunk;
      if (chunk.epoch == epoch_ && offset >= chunk.begin && offset < chunk.end &&
          offset + bytes > chunk.next) {
        return std::nullopt;
      }
      return Location{0, offset};
    }
    return locate_overflow(p, bytes);
  }

  /// @brief Blocks in use this frame: the main block (index 0), then overflow blocks in order.
  [[nodiscard]] std::size_t block_count() const noexcept {
    return 1 + overflow_.count.load(std::memory_order_acquire);
  }
  /// @brief One block's addresses and use this frame.
  struct BlockView {
    std::byte* host;
    std::byte* device;
    std::size_t used;
    std::size_t capacity;
  };
  [[nodiscard]] BlockView block(std::size_t index) const;

  /// @brief Bytes handed out this frame over all blocks: granule padding included, and the
  /// unused rest of each allocating thread's current chunk (under kChunkBytes per thread).
  [[nodiscard]] std::size_t used_bytes() const;
  /// @brief Size of the main block (the arena's capacity before any overflow).
  [[nodiscard]] std::size_t capacity_bytes() const noexcept { return capacity_; }
  /// @brief Largest used_bytes() any frame reached since construction.
  [[nodiscard]] std::size_t high_water_bytes() const noexcept;
  [[nodiscard]] bool overflowed() const noexcept { return block_count() > 1; }

  /// @brief What reset() did to the blocks.
  using Resize = ArenaResize;

  /// @brief Starts a new frame: frees overflow blocks, grows or trims the main block, and makes
  /// every byte available again. Earlier pointers become invalid.
  /// @throws Error(out_of_memory) if a new main block cannot be allocated; the old one is kept.
  Resize reset(std::size_t base_capacity_bytes, std::uint32_t trim_after_frames);

 private:
  Allocation allocate_slow(std::size_t bytes, std::size_t alignment);
  [[nodiscard]] std::optional<Location> locate_overflow(const std::byte* p,
                                                        std::size_t bytes) const noexcept;
  ArenaBlock make_block(std::size_t bytes);

  Backend* backend_;
  OverflowPolicy policy_;
  std::string name_;
  std::string remedy_;
  static inline std::atomic<std::uint64_t> next_epoch_{1};
  void start_epoch() noexcept;

  ArenaBlock main_;
  std::size_t capacity_ = 0;
  std::size_t chunk_limit_ = 0;  // chunks are claimed only while the head is below this
  std::uint64_t epoch_ = 0;      // unique per arena and frame, so stale chunks are never used
  alignas(64) std::atomic<std::size_t> head_{0};
  detail::OverflowBlocks<ArenaBlock, kMaxOverflowBlocks> overflow_;
  detail::CapacityTracker growth_;
};

}  // namespace framestage
