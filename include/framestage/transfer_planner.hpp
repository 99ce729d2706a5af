/// @file transfer_planner.hpp
/// @brief Turns one frame's staged ranges and upload descriptors into a few transfers.
///
/// Pure host code: it reads and rewrites pinned memory and returns what to enqueue, and never
/// calls the backend itself.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/frame_arena.hpp>

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

/// @brief One async copy to enqueue.
struct CopyOp {
  void* dst;
  const void* src;
  std::size_t bytes;
};

/// @brief One scatter launch: `count` descriptors at `table`, sources shifted by `src_bias`.
struct ScatterOp {
  const TransferDescriptor* table;
  std::size_t count;
  std::int64_t src_bias;
};

/// @brief What a frame enqueues, and counts for the stats.
///
/// `staging_copies` fill the slot's private device mirror (arena ranges and descriptor tables)
/// and run on the slot's stream. `direct_copies` and `scatters` write user destinations and
/// run on the consumer stream, after the staging copies.
struct TransferPlan {
  std::vector<CopyOp> staging_copies;
  std::vector<CopyOp> direct_copies;
  std::vector<ScatterOp> scatters;
  /// What small uploads used; UploadStrategy::automatic when the frame had none.
  UploadStrategy strategy = UploadStrategy::automatic;

  std::size_t staged_ranges = 0;       ///< stage_for_upload calls
  std::size_t uploads = 0;             ///< upload calls
  std::size_t superseded_uploads = 0;  ///< dropped: a later upload wrote all their bytes
  std::size_t merged_overlaps = 0;     ///< overlapping uploads combined on the host
  std::size_t mirror_bytes = 0;        ///< staged bytes (before merging)
  std::size_t scattered_bytes = 0;     ///< bytes delivered by scatter kernels
  std::size_t direct_bytes = 0;        ///< bytes delivered by direct copies
  std::size_t staging_copy_bytes = 0;  ///< bytes the staging copies move, gaps included

  void clear();
};

/// @brief The frame's inputs: its arena, its descriptor table, and what was staged.
struct PlannerInput {
  FrameArena* arena;        ///< payloads; merge buffers are allocated here
  FrameArena* descriptors;  ///< TransferDescriptor tables, one per block
  std::span<const StagedRange> staged;
  Backend* backend;  ///< only for mapped_device_address (zero-copy)
};

/// @brief Plans frames; keeps its scratch space between frames so planning does not allocate
/// once frame sizes settle.
///
/// Rules, in order: overlapping uploads are resolved so that, byte for byte, the upload issued
/// last wins (one that is covered entirely is dropped; partial overlaps are combined into one
/// merged upload on the host); uploads of at least `direct_copy_threshold_bytes` (all of them
/// under UploadStrategy::direct) become direct copies; the rest are scattered, reading the
/// device mirror after one coalesced copy, or the pinned arena in place (zero-copy) when their
/// total is at most `zero_copy_max_bytes` and everything sits in single blocks. Staged ranges
/// and scattered payloads are merged into copies wherever they touch, overlap or lie closer
/// than `merge_gap_bytes`.
///
/// **Thread safety:** one frame at a time, on the owner thread, with no allocation in flight.
class TransferPlanner {
 public:
  explicit TransferPlanner(const Config& config);

  /// @brief Plans one frame; the returned plan is valid until the next call.
  /// @throws Error(out_of_memory) if merging overlapping uploads needs arena space there is none
  ///         of; Error(misuse) if a descriptor's payload does not lie in the arena.
  const TransferPlan& plan(const PlannerInput& input);

 private:
  struct Range {
    std::uint32_t block;
    std::size_t offset;
    std::size_t bytes;
  };
  void resolve_overlaps(const PlannerInput& input);
  void add_coalesced_copies(const PlannerInput& input);

  Config config_;
  TransferPlan plan_;
  std::vector<Range> ranges_;
  std::vector<std::uint32_t> order_;
};

}  // namespace framestage
