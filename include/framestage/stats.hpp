/// @file stats.hpp
/// @brief What the coordinator did, per frame and in total.
#pragma once

#include <framestage/config.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace framestage {

/// @brief One frame, as planned and submitted by end_frame().
struct FrameStats {
  std::uint64_t frame = 0;  ///< 1 for the first frame
  std::uint32_t slot = 0;
  UploadStrategy strategy = UploadStrategy::automatic;  ///< automatic: no small uploads
  std::size_t staged_ranges = 0;                        ///< stage_for_upload calls
  std::size_t uploads = 0;                              ///< upload calls (upload_slice included)
  std::size_t superseded_uploads = 0;  ///< dropped because a later upload covered them
  std::size_t merged_overlaps = 0;     ///< partially overlapping uploads combined on the host
  std::size_t mirror_bytes = 0;        ///< bytes staged for the device mirror
  std::size_t scattered_bytes = 0;     ///< bytes delivered by scatter kernels
  std::size_t direct_bytes = 0;        ///< bytes delivered by direct copies
  std::size_t staging_copies = 0;      ///< coalesced copies into the slot's device staging
  std::size_t staging_copy_bytes = 0;  ///< bytes those copies moved, merged gaps included
  std::size_t direct_copies = 0;
  std::size_t scatter_launches = 0;
  std::size_t readbacks = 0;             ///< readback calls
  std::size_t readback_bytes = 0;        ///< bytes read back
  std::size_t direct_readbacks = 0;      ///< readbacks copied on their own, not gathered
  std::size_t arena_used_bytes = 0;      ///< arena bytes this frame used, padding included
  std::size_t arena_capacity_bytes = 0;  ///< the slot's arena capacity at the frame's start
  bool arena_overflowed = false;         ///< the frame needed overflow blocks (grow policy)
  bool opened_by_upload = false;  ///< a one-off frame: an upload between frames opened and ended it
  bool tick_graph = false;        ///< ended by end_frame(TickGraph&): run as one graph launch
};

/// @brief Totals since construction, the last frame, and each slot's arena.
struct CoordinatorStats {
  std::uint64_t frames = 0;                   ///< every frame ended, one-off frames included
  std::uint64_t frames_opened_by_upload = 0;  ///< one-off frames: uploads between frames
  std::uint64_t tick_graph_frames = 0;        ///< frames run as a tick graph's launch
  std::size_t uploads = 0;
  std::size_t superseded_uploads = 0;
  std::size_t merged_overlaps = 0;
  std::size_t mirror_bytes = 0;
  std::size_t scattered_bytes = 0;
  std::size_t direct_bytes = 0;
  std::size_t staging_copies = 0;
  std::size_t direct_copies = 0;
  std::size_t scatter_launches = 0;
  std::size_t readbacks = 0;
  std::size_t readback_bytes = 0;
  std::uint64_t arena_growths = 0;  ///< times a slot's arena grew after an overflowing frame
  std::uint64_t arena_trims = 0;    ///< times a grown arena gave memory back
  FrameStats last_frame;

  struct Slot {
    std::size_t arena_capacity_bytes = 0;
    std::size_t arena_high_water_bytes = 0;  ///< most bytes any frame used in this slot
  };
  std::vector<Slot> slots;

  /// @brief Adds one frame to the totals and makes it `last_frame`.
  void add(const FrameStats& frame);
  /// @brief Every field above as a JSON object (slots as an array).
  [[nodiscard]] std::string to_json() const;
};

/// @brief One frame's figures as a JSON object.
[[nodiscard]] std::string to_json(const FrameStats& frame);

}  // namespace framestage
