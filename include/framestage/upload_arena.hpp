/// @file upload_arena.hpp
/// @brief One slot's uploads: a descriptor table and the payloads it describes, in one pinned
/// block mirrored by device staging, so that one copy ships both.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/detail/capacity_tracker.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace framestage {

namespace detail {

/// Consecutive reservations of one thread in one upload arena's main block: issue indices
/// [first, next), with targets that ascend without overlap from `first_target` to `end`.
struct alignas(64) UploadRun {
  std::uint64_t first = 0;
  std::uint64_t next = 0;
  std::uint64_t first_target = 0;
  std::uint64_t end = 0;
  std::size_t bytes = 0;
  std::size_t largest = 0;
};

/// The run this thread extends, valid while `epoch` is its arena's.
struct UploadRunCursor {
  std::uint64_t epoch = 0;
  UploadRun* run = nullptr;
};
inline thread_local UploadRunCursor this_thread_upload_run{};

}  // namespace detail

/// @brief What an UploadArena's error messages call it, and the Config keys that size it.
struct UploadArenaNames {
  const char* what = "upload";
  const char* bytes_key = "upload_arena_bytes";
  const char* count_key = "max_uploads_per_frame";
};

/// @brief Reserves upload descriptors and their payloads, lock-free, in issue order. Readbacks
/// use one too: their targets are device sources, and the payloads are where the bytes land.
///
/// A block is laid out as `[ descriptor table | payloads ]` around a split point: descriptors
/// grow down from the split, payloads grow up from it, and one 64-bit compare-and-swap reserves
/// both. So, across threads too, payload positions ascend with issue order, and the part of a
/// block a frame used, `[split - 16 * descriptors, split + payload_bytes)`, is one contiguous
/// range that one copy delivers. Descriptor `i` of a block (0 = issued first) is
/// `table()[descriptors - 1 - i]`.
///
/// When a block is full, OverflowPolicy::fail throws and leaves what was reserved intact;
/// OverflowPolicy::grow seals the block and continues in overflow blocks taken under a lock
/// (every reservation of a block precedes those of later blocks), and the next reset() makes one
/// block big enough for that frame, trimming back after `trim_after_frames` smaller frames.
///
/// **Ownership:** owns its blocks; pointers it hands out are valid until reset().
/// **Thread safety:** reserve() may run from any number of threads at once; block(),
/// block_count() and reset() need the reservations of the frame to have finished.
class UploadArena {
 public:
  static constexpr std::size_t kMaxOverflowBlocks = 32;
  /// Payload positions are 32-bit granule counts; a block's payload area is at most this big.
  static constexpr std::size_t kMaxPayloadBytes = (std::size_t{1} << 32) * kStagingGranule;
  /// Most descriptors a block holds (Config's max_uploads_per_frame limit).
  static constexpr std::size_t kMaxDescriptors = std::size_t{1} << 26;
  /// Largest single reservation; upload() splits larger ones.
  static constexpr std::size_t kMaxReservationBytes = std::size_t{1} << 31;

  using Names = UploadArenaNames;

  /// @throws Error(out_of_memory) if the blocks cannot be allocated.
  UploadArena(Backend& backend, std::size_t payload_bytes, std::size_t max_descriptors,
              OverflowPolicy policy, Names names = {});
  UploadArena(const UploadArena&) = delete;
  UploadArena& operator=(const UploadArena&) = delete;

  /// @brief Reserves one descriptor for `bytes` (1..kMaxReservationBytes) to `target`, and the
  /// payload it reads, and returns where the host writes that payload (16-byte aligned).
  /// @throws Error(out_of_memory) under OverflowPolicy::fail when the table or the payload area
  ///         is full, naming which and the remedy; nothing reserved before is touched.
  [[nodiscard]] std::byte* reserve(std::uint64_t target, std::size_t bytes) {
    const std::uint64_t granules = (bytes + kStagingGranule - 1) / kStagingGranule;
    if (bytes - 1 < kMaxReservationBytes) [[likely]] {
      std::uint64_t head = head_.load(std::memory_order_relaxed);
      // A compare-and-swap, not a fetch_add: a reservation that does not fit leaves the head
      // exact, so the descriptor count never includes a slot nobody wrote.
      while ((head & kSealed) == 0 && (head >> kCountShift) < main_.descriptor_capacity &&
             (head & kGranuleMask) + granules <= main_.payload_granules) {
        if (head_.compare_exchange_weak(head, head + (std::uint64_t{1} << kCountShift) + granules,
                                        std::memory_order_relaxed)) [[likely]] {
          note_run(head >> kCountShift, target, bytes);
          return main_.write(head >> kCountShift, head & kGranuleMask, target, bytes);
        }
      }
    }
    return reserve_slow(target, bytes);
  }

  /// @brief One block's use this frame; addresses are at the split point.
  struct BlockView {
    std::byte* host_split;      ///< pinned: payloads start here, the table ends here
    std::byte* device_split;    ///< the same point in device staging
    std::byte* mapped_split;    ///< the same point as a kernel reads pinned memory in place
    std::size_t descriptors;    ///< descriptors reserved this frame
    std::size_t payload_bytes;  ///< payload bytes reserved this frame (granules, rounded up)
    [[nodiscard]] TransferDescriptor* table() const {
      return reinterpret_cast<TransferDescriptor*>(host_split) - descriptors;
    }
    [[nodiscard]] std::size_t table_bytes() const {
      return descriptors * sizeof(TransferDescriptor);
    }
  };
  /// @brief The main block (0), then overflow blocks in reservation order.
  [[nodiscard]] std::size_t block_count() const noexcept {
    return 1 + overflow_count_.load(std::memory_order_acquire);
  }
  [[nodiscard]] BlockView block(std::size_t index) const;

  /// @brief What the reservations themselves prove about the main block, so that nobody reads
  /// its table to learn it.
  struct ProvenOrder {
    std::size_t bytes;    ///< reserved bytes, unrounded
    std::size_t largest;  ///< the largest reservation
  };
  /// @brief Returns the main block's totals if its destinations are known to ascend without
  /// overlap in issue order. Each thread's consecutive reservations form a run (a thread
  /// sweeping a state array makes one); the frame is proven when every run's targets ascend and
  /// the runs, in issue order, follow one another in address order too. std::nullopt when that
  /// does not hold or is not known: targets stepped back, more than kMaxRuns runs (threads
  /// interleaving call by call), or overflow blocks in use. Owner thread, after the frame's
  /// reservations.
  [[nodiscard]] std::optional<ProvenOrder> proven_order() const;
  /// Runs of reservations the arena keeps track of per frame (about one per reserving thread).
  static constexpr std::size_t kMaxRuns = 256;

  /// @brief Descriptors reserved this frame, over all blocks.
  [[nodiscard]] std::size_t descriptor_count() const;
  [[nodiscard]] std::size_t payload_capacity_bytes() const noexcept {
    return main_.payload_granules * kStagingGranule;
  }
  [[nodiscard]] std::size_t descriptor_capacity() const noexcept {
    return main_.descriptor_capacity;
  }
  [[nodiscard]] bool overflowed() const noexcept { return block_count() > 1; }

  /// @brief Starts a new frame: frees overflow blocks, grows or trims the main block, and
  /// empties it. Earlier pointers become invalid.
  /// @throws Error(out_of_memory) if a new main block cannot be allocated; the old one is kept.
  ArenaResize reset(std::size_t base_payload_bytes, std::size_t base_max_descriptors,
                    std::uint32_t trim_after_frames);

 private:
  // Bits 0..35: payload granules (1 TiB); 36..62: descriptors (2^27 - 1); 63: sealed.
  static constexpr unsigned kCountShift = 36;
  static constexpr std::uint64_t kGranuleMask = (std::uint64_t{1} << kCountShift) - 1;
  static constexpr std::uint64_t kSealed = std::uint64_t{1} << 63;

  struct Block {
    MemoryBlock host;
    MemoryBlock device;
    std::byte* mapped_split = nullptr;
    std::size_t descriptor_capacity = 0;
    std::uint64_t payload_granules = 0;
    // Overflow blocks only: their use, which moves under the lock.
    std::size_t descriptors = 0;
    std::uint64_t granules_used = 0;

    [[nodiscard]] std::byte* host_split() const {
      return host.data() + descriptor_capacity * sizeof(TransferDescriptor);
    }
    std::byte* write(std::uint64_t index, std::uint64_t granule, std::uint64_t target,
                     std::size_t bytes) {
      std::byte* split = host_split();
      reinterpret_cast<TransferDescriptor*>(split)[-1 - static_cast<std::ptrdiff_t>(index)] =
          TransferDescriptor{target, static_cast<std::uint32_t>(granule),
                             static_cast<std::uint32_t>(bytes)};
      return split + granule * kStagingGranule;
    }
  };

  // One compare and four stores in the common case: the thread extends its own run.
  void note_run(std::uint64_t index, std::uint64_t target, std::size_t bytes) {
    const detail::UploadRunCursor& cursor = detail::this_thread_upload_run;
    if (cursor.epoch == epoch_) [[likely]] {
      detail::UploadRun& run = *cursor.run;
      if (run.next == index && target >= run.end) [[likely]] {
        run.next = index + 1;
        run.end = target + bytes;
        run.bytes += bytes;
        run.largest = bytes > run.largest ? bytes : run.largest;
        return;
      }
    }
    note_run_slow(index, target, bytes);
  }
  void note_run_slow(std::uint64_t index, std::uint64_t target, std::size_t bytes);
  std::byte* reserve_slow(std::uint64_t target, std::size_t bytes);
  Block make_block(std::size_t payload_bytes, std::size_t descriptors);
  [[nodiscard]] BlockView view(const Block& b, std::size_t descriptors,
                               std::uint64_t granules) const;

  Backend* backend_;
  OverflowPolicy policy_;
  Names names_;
  Block main_;
  alignas(64) std::atomic<std::uint64_t> head_{0};
  mutable std::mutex overflow_mutex_;
  std::array<Block, kMaxOverflowBlocks> overflow_{};
  std::atomic<std::size_t> overflow_count_{0};
  detail::CapacityTracker payload_growth_;
  detail::CapacityTracker descriptor_growth_;
  static inline std::atomic<std::uint64_t> next_epoch_{1};
  std::uint64_t epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);  // per frame
  std::array<detail::UploadRun, kMaxRuns> runs_{};
  std::atomic<std::size_t> run_count_{0};
  std::atomic<bool> unproven_{false};  // a run broke, or there were too many
};

}  // namespace framestage
