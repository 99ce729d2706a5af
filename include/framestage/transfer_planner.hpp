/// @file transfer_planner.hpp
/// @brief Turns one frame's staged ranges and upload descriptors into a few transfers.
///
/// Pure host code: it reads and rewrites pinned memory and returns what to enqueue, and never
/// calls the backend itself.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/upload_arena.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace framestage {

/// @brief A byte range of one arena block, as staged by stage_for_upload().
struct StagedRange {
  std::uint32_t block;
  std::size_t offset;
  std::size_t bytes;
};

/// @brief One scatter launch over `count` descriptors at `table`, reading payloads relative to
/// `staging`. Both are addresses a kernel reads: device staging, or mapped pinned memory when
/// the frame goes zero-copy.
struct ScatterOp {
  const TransferDescriptor* table;
  std::size_t count;
  const std::byte* staging;
  /// The scatter reads what staging_copies[0, after_copies) deliver; 0 when it reads pinned
  /// memory in place.
  std::size_t after_copies;
};

/// @brief What a frame enqueues, and counts for the stats.
///
/// `staging_copies` fill the slot's device mirror and upload staging and run, in order, on the
/// slot's stream. `scatters` and `direct_copies` write user destinations and run on the consumer
/// stream: each scatter after the staging copies it reads (so a chunk's scatter can run while
/// the next chunk is on the wire), the direct copies after all staging copies. Destinations of
/// different scatters and direct copies never overlap.
struct TransferPlan {
  std::vector<CopyOp> staging_copies;
  std::vector<CopyOp> direct_copies;
  /// Partially overlapping uploads when there was no frame-arena space to combine them: from
  /// their pinned payloads, one after another in issue order on the consumer stream (these
  /// overlap each other, and nothing else).
  std::vector<CopyOp> ordered_copies;
  std::vector<ScatterOp> scatters;
  /// What small uploads used; UploadStrategy::automatic when the frame had none.
  UploadStrategy strategy = UploadStrategy::automatic;

  std::size_t staged_ranges = 0;       ///< staged ranges planned (adjacent spans arrive as one)
  std::size_t uploads = 0;             ///< upload calls
  std::size_t superseded_uploads = 0;  ///< dropped: a later upload wrote all their bytes
  std::size_t merged_overlaps = 0;     ///< overlapping uploads combined on the host
  std::size_t mirror_bytes = 0;        ///< staged bytes (before merging)
  std::size_t scattered_bytes = 0;     ///< bytes delivered by scatter kernels
  std::size_t direct_bytes = 0;        ///< bytes delivered by direct copies
  std::size_t staging_copy_bytes = 0;  ///< bytes the staging copies move, tables and gaps included
  std::size_t pipeline_chunks = 0;     ///< copy-and-scatter chunks (0 unless copy_scatter)

  void clear();
};

/// @brief One gather launch over `count` descriptors at `table` (device staging), writing
/// payloads relative to `staging` (device staging).
using GatherOp = TransferTable;

/// @brief A frame's readbacks, in chunks so that the copy back of one overlaps the gather of
/// the next. Per chunk, on the consumer stream: `table` to the device, the gather of its small
/// regions into device staging, then the device-to-device copies of its
/// large regions (device_copies up to `device_copies_end`), so that the consumer stream's later
/// work cannot change them first; then `back` copies its staging to the pinned readback arena
/// (readback stream). A chunk with nothing to gather has `table.bytes == 0`.
struct ReadbackChunk {
  CopyOp table;
  GatherOp gather;
  std::size_t device_copies_end;
  CopyOp back;
};

struct ReadbackPlan {
  std::vector<ReadbackChunk> chunks;
  std::vector<CopyOp> device_copies;
  std::size_t regions = 0;         ///< readback calls
  std::size_t bytes = 0;           ///< bytes read back
  std::size_t direct_regions = 0;  ///< regions copied on their own

  void clear();
};

/// @brief The frame's inputs: its arenas and what was staged.
struct PlannerInput {
  FrameArena* arena;     ///< frame_alloc memory; buffers for combined overlaps come from here
  UploadArena* uploads;  ///< upload descriptors and payloads
  std::span<const StagedRange> staged;
  /// False when no upload this frame reached direct_copy_threshold_bytes, which lets plan_early
  /// start the copies before the descriptors are scanned.
  bool large_uploads = true;
};

/// @brief Plans frames; keeps its scratch space between frames so planning does not allocate
/// once frame sizes settle.
///
/// Rules, in order: overlapping uploads are resolved so that, byte for byte, the upload issued
/// last wins (one that is covered entirely is dropped; partial overlaps are combined on the host
/// into one direct copy, or, when the frame arena has no room for that, copied one after another
/// in issue order); uploads of at least `direct_copy_threshold_bytes` (all of them under
/// UploadStrategy::direct) become direct copies; the rest are scattered, reading upload staging
/// after one coalesced copy per upload block (in chunks that shrink toward the end, the last of
/// about `pipeline_chunk_bytes`, each scattered as soon as it lands), or the pinned blocks in
/// place (zero-copy) when their total is at most `zero_copy_max_bytes`. Staged ranges are merged
/// into copies wherever they touch, overlap or lie closer than `merge_gap_bytes`.
///
/// Cost: nothing per descriptor when the upload arena proves that no destinations overlap
/// (UploadArena::proven_order); one pass over the descriptors when they ascend in issue order
/// otherwise; a sort of them when they do not. Dropped descriptors stay in the table with 0 bytes,
/// so nothing is moved.
///
/// **Thread safety:** one frame at a time, on the owner thread, with no allocation in flight.
class TransferPlanner {
 public:
  explicit TransferPlanner(const Config& config);

  /// @brief Plans one frame; the returned plan is valid until the next call.
  /// @throws Error(misuse) if a descriptor's payload does not lie in the arena.
  const TransferPlan& plan(const PlannerInput& input);

  /// @brief The first half of plan() for a frame whose copies can start before its descriptors
  /// are scanned: one upload block, no large uploads, and copy-and-scatter chosen from the
  /// payload size alone. Returns nullptr (and plans nothing) for any other frame. The returned
  /// plan's staging copies may be enqueued at once; finish_early() must run before its scatters.
  const TransferPlan* plan_early(const PlannerInput& input);
  /// @brief Scans the descriptors of a plan_early() frame and resolves overlaps. If that changed
  /// the descriptor table, it appends a copy of the corrected table, and every scatter then
  /// waits for all staging copies; the copies already enqueued stay valid.
  const TransferPlan& finish_early(const PlannerInput& input);

  /// @brief Plans the readbacks reserved in `readbacks` (an UploadArena whose targets are device
  /// sources): regions of at least `direct_copy_threshold_bytes` are copied on their own (their
  /// descriptors get 0 bytes, so the gather skips them), the rest gathered; the main block in
  /// chunks growing kReadbackChunkGrowth-fold from `pipeline_chunk_bytes`, so the first bytes
  /// start back early. Overlapping
  /// regions are fine: nothing writes them. The plan is valid until the next call.
  const ReadbackPlan& plan_readbacks(UploadArena& readbacks);

 private:
  struct Range {
    std::uint32_t block;
    std::size_t offset;
    std::size_t bytes;
  };
  /// A descriptor in issue order over all upload blocks.
  struct Issued {
    TransferDescriptor* descriptor;
    std::uint32_t block;
  };
  using BlockViews = std::array<UploadArena::BlockView, UploadArena::kMaxOverflowBlocks + 1>;
  struct Scan {
    bool disjoint;  // no two destinations overlap: their order cannot matter
    bool any_large;
  };
  Scan scan(const UploadArena& uploads, const BlockViews& blocks, std::size_t count);
  void start(const PlannerInput& input);
  void resolve_overlaps(const PlannerInput& input, const BlockViews& blocks, std::size_t count);
  void sort_by_target(std::size_t n);
  void add_direct_copies(const BlockViews& blocks, std::size_t count, bool all_direct);
  void add_upload_copies(const UploadArena::BlockView& block, std::uint32_t index,
                         std::size_t& hole);
  void add_staging_copies(const UploadArena::BlockView& block, std::uint32_t index,
                          std::int64_t from, std::int64_t to, std::size_t& hole);
  void add_coalesced_copies(const PlannerInput& input);

  Config config_;
  TransferPlan plan_;
  ReadbackPlan readback_plan_;
  std::vector<Range> ranges_;
  std::vector<Issued> issued_;        // filled only for frames whose destinations do not ascend
  std::vector<std::uint32_t> order_;  // issue indices sorted by target
  std::vector<std::uint64_t> keys_;
  std::vector<std::uint64_t> scratch_keys_;
  std::vector<std::uint32_t> scratch_order_;
  std::vector<Range> holes_;  // payloads sent as direct copies, which staging copies skip
};

}  // namespace framestage
