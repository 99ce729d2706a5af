/// @file upload_arena.hpp
/// @brief One slot's uploads: a descriptor table and the payloads it describes, in one pinned
/// block mirrored by device staging, so that one copy ships both.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/detail/capacity_tracker.hpp>
#include <framestage/detail/overflow_blocks.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace framestage {

namespace detail {

/// Consecutive issue indices [first, next) of one upload arena's main block that one thread
/// reserved, with targets that ascend without overlap from `first_target` to `end`.
struct UploadRun {
  std::uint64_t first = 0;
  std::uint64_t next = 0;
  std::uint64_t first_target = 0;
  std::uint64_t end = 0;
};

/// Runs a thread keeps per frame besides its current one; more make the frame unproven.
inline constexpr std::size_t kUploadRunsPerThread = 4;

/// One thread's share of an upload arena's main block in one frame: descriptors [next, end) and
/// payload granules [next_granule, end_granule) are its own to hand out without atomics. `run`
/// is the run it extends (run.next is unused: the run ends where the chunk does); `ended` the
/// ones it left when its chunks stopped following each other. Over the whole frame, its
/// reservations span targets [first_target, run.end) when none turned back. Only its thread
/// writes it, so nothing on the path of a reservation is shared between threads.
struct alignas(64) UploadChunk {
  std::uint64_t next = 0;
  std::uint64_t end = 0;
  std::uint64_t next_granule = 0;
  std::uint64_t end_granule = 0;
  UploadRun run;
  std::uint64_t reservations = 0;  // this frame, to size the next chunk
  std::uint64_t granules = 0;
  std::size_t bytes = 0;  // this frame: reserved bytes, unrounded, and the largest reservation
  std::size_t largest = 0;
  std::uint64_t first_target = 0;  // this frame's first
  std::uint64_t claimed = 0;       // descriptors claimed this frame, used or not
  bool active = false;             // has claimed a chunk this frame
  bool stepped_back = false;       // a target below the end of the one before it, within a run
  bool turned_back = false;        // a run that began below the end of the one before it
  bool too_many_runs = false;
  std::uint32_t ended_count = 0;
  std::array<UploadRun, kUploadRunsPerThread> ended{};
};

/// Where a thread finds its chunk of an arena, valid while `epoch` is that arena's.
struct UploadChunkCursor {
  std::uint64_t epoch = 0;
  UploadChunk* chunk = nullptr;
};
/// A few arenas at once (a coordinator's uploads and readbacks, several coordinators), looked up
/// by epoch; two arenas that share an entry take turns, each turn costing a fresh chunk.
inline constexpr std::size_t kUploadCursorWays = 8;
inline thread_local std::array<UploadChunkCursor, kUploadCursorWays> this_thread_upload_chunks{};

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
/// both. Payload positions ascend with descriptor index, and the part of a block a frame used,
/// `[split - 16 * descriptors, split + payload_bytes)`, is one contiguous range that one copy
/// delivers. Descriptor `i` of a block (0 = first) is `table()[descriptors - 1 - i]`.
///
/// Each thread claims the main block in chunks (kChunkDescriptors descriptors and about as many
/// payloads of its average size) with one compare-and-swap, and hands out reservations from its
/// chunk with no atomic operation; a chunk that ends where the block's use does grows in place,
/// so one thread's reservations stay consecutive. Issue order is therefore each thread's call
/// order; between threads it is the order of their chunks, which no synchronisation between the
/// threads changes. A chunk's unused descriptors become empty (0 bytes) entries, and its unused
/// payload a gap the copy carries (pad_unused()); only the last chunk's rest is cut off. What
/// chunks leave unused comes out of spare room, an eighth more than configured, that a main
/// block of at least 1024 descriptors and 256 KiB of payload gets: chunks are claimed only while
/// the spare room covers twice the most that every thread's chunk could still leave unused, so
/// the configured capacities always hold (a frame may fit up to an eighth more). Smaller blocks,
/// reservations over 4 KiB, and threads past kMaxChunks reserve exactly what they need.
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
    const detail::UploadChunkCursor& cursor =
        detail::this_thread_upload_chunks[epoch_ % detail::kUploadCursorWays];
    if (cursor.epoch == epoch_) [[likely]] {
      detail::UploadChunk& chunk = *cursor.chunk;
      if (chunk.next < chunk.end && granules <= chunk.end_granule - chunk.next_granule &&
          bytes - 1 < kMaxReservationBytes) [[likely]] {
        return take(chunk, target, bytes, granules);
      }
    }
    return reserve_slow(target, bytes);
  }

  /// @brief Owner thread, after the frame's reservations: makes the descriptors that threads
  /// claimed and did not use empty (0 bytes, placed so that they change no order), so that the
  /// table holds only reservations. Call it before reading the table; it changes nothing a
  /// later reservation of the same frame relies on, so it may run again.
  void pad_unused();

  /// @brief One block's use this frame; addresses are at the split point.
  struct BlockView {
    std::byte* host_split;      ///< pinned: payloads start here, the table ends here
    std::byte* device_split;    ///< the same point in device staging
    std::byte* mapped_split;    ///< the same point as a kernel reads pinned memory in place
    std::size_t descriptors;    ///< table entries this frame (empty ones included)
    std::size_t reserved;       ///< entries that hold a reservation (the rest are 0 bytes)
    std::size_t payload_bytes;  ///< payload bytes in use this frame (granules, gaps included)
    [[nodiscard]] TransferDescriptor* table() const {
      return reinterpret_cast<TransferDescriptor*>(host_split) - descriptors;
    }
    [[nodiscard]] std::size_t table_bytes() const {
      return descriptors * sizeof(TransferDescriptor);
    }
  };
  /// @brief The main block (0), then overflow blocks in reservation order.
  [[nodiscard]] std::size_t block_count() const noexcept {
    return 1 + overflow_.count.load(std::memory_order_acquire);
  }
  [[nodiscard]] BlockView block(std::size_t index) const;

  /// @brief What the reservations themselves prove about the main block, so that nobody reads
  /// its table to learn it.
  struct ProvenOrder {
    std::size_t bytes;    ///< reserved bytes, unrounded
    std::size_t largest;  ///< the largest reservation
  };
  /// @brief Returns the main block's totals if its destinations are known not to overlap, so
  /// that the order the copies run in cannot matter. Either proves it:
  /// - by ranges: each thread's targets ascend over the whole frame, and the threads' ranges
  ///   (first target to last end) are disjoint: threads that each sweep a region of their own,
  ///   however their chunks interleave;
  /// - by runs: each thread's consecutive chunks form a run whose targets ascend, and the runs,
  ///   in issue order, follow one another in address order too: threads taking turns in address
  ///   order, up to kMaxRunsPerThread + 1 runs each.
  /// std::nullopt when neither holds or is known: targets that step back within a run, ranges
  /// that interleave with more runs than tracked, more threads than chunks, or overflow blocks
  /// in use. Owner thread, after the frame's reservations.
  [[nodiscard]] std::optional<ProvenOrder> proven_order() const;
  /// Runs of reservations the arena keeps track of per thread and frame, besides its current one.
  static constexpr std::size_t kMaxRunsPerThread = detail::kUploadRunsPerThread;
  /// Threads with a chunk of their own per frame; more reserve one at a time.
  static constexpr std::size_t kMaxChunks = 256;
  /// Descriptors a thread claims at once.
  static constexpr std::size_t kChunkDescriptors = 256;
  /// Most payload a thread claims at once, in granules (16 KiB).
  static constexpr std::uint64_t kMaxChunkGranules = 1024;

  /// @brief Reservations this frame, over all blocks (empty entries not counted).
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
    std::size_t descriptor_capacity = 0;  // as configured
    std::uint64_t payload_granules = 0;
    // Main block only: room past those for what threads' chunks leave unused (see claim()).
    std::size_t spare_descriptors = 0;
    std::uint64_t spare_granules = 0;
    // Overflow blocks only: their use, which moves under the lock.
    std::size_t descriptors = 0;
    std::uint64_t granules_used = 0;

    [[nodiscard]] std::size_t table_entries() const {
      return descriptor_capacity + spare_descriptors;
    }
    [[nodiscard]] std::byte* host_split() const {
      return host.data() + table_entries() * sizeof(TransferDescriptor);
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

  // The chunk's next descriptor and payload, and the run extended by them: no atomics.
  std::byte* take(detail::UploadChunk& chunk, std::uint64_t target, std::size_t bytes,
                  std::uint64_t granules) {
    detail::UploadRun& run = chunk.run;
    chunk.stepped_back |= target < run.end;
    run.end = target + bytes;
    chunk.bytes += bytes;
    chunk.largest = bytes > chunk.largest ? bytes : chunk.largest;
    ++chunk.reservations;
    chunk.granules += granules;
    const std::uint64_t granule = chunk.next_granule;
    chunk.next_granule += granules;
    return main_.write(chunk.next++, granule, target, bytes);
  }
  std::byte* reserve_slow(std::uint64_t target, std::size_t bytes);
  detail::UploadChunk* chunk_of_this_thread();
  bool claim(detail::UploadChunk& chunk, std::uint64_t target, std::uint64_t granules);
  void abandon(detail::UploadChunk& chunk);
  static void end_run(detail::UploadChunk& chunk);
  std::byte* reserve_overflow(std::uint64_t target, std::size_t bytes);
  // The chunk whose claim ended where the main block's use ends, if one did: its unused rest is
  // cut off the block's view rather than padded.
  [[nodiscard]] const detail::UploadChunk* last_chunk(std::uint64_t head) const;
  Block make_block(std::size_t payload_bytes, std::size_t descriptors, bool spare);
  [[nodiscard]] BlockView view(const Block& b, std::size_t descriptors, std::size_t reserved,
                               std::uint64_t granules) const;

  Backend* backend_;
  OverflowPolicy policy_;
  Names names_;
  Block main_;
  alignas(64) std::atomic<std::uint64_t> head_{0};
  detail::OverflowBlocks<Block, kMaxOverflowBlocks> overflow_;
  detail::CapacityTracker payload_growth_;
  detail::CapacityTracker descriptor_growth_;
  static inline std::atomic<std::uint64_t> next_epoch_{1};
  std::uint64_t epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);  // per frame
  std::array<detail::UploadChunk, kMaxChunks> chunks_{};
  // Written on the slow path only, on a line of their own: the fast path reads epoch_ and main_.
  alignas(64) std::atomic<std::size_t> chunk_count_{0};
  std::atomic<std::uint64_t> abandoned_{0};           // descriptors of chunks given up, made empty
  std::atomic<std::uint64_t> abandoned_granules_{0};  // and their payload
  std::atomic<bool> unproven_{false};                 // a reservation without a chunk
  mutable std::vector<detail::UploadRun> proven_runs_;  // proven_order()'s scratch space
  mutable std::vector<std::pair<std::uint64_t, std::uint64_t>> proven_ranges_;  // and this
};

}  // namespace framestage
