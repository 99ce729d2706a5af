/// @file frame_staging.hpp
/// @brief frame_alloc, stage_for_upload and device_ptr on a slot's FrameArena, with their checks
/// and messages: the part that Coordinator and Broadcast do alike.
#pragma once

#include <framestage/detail/expects.hpp>
#include <framestage/frame_arena.hpp>

#include "frame_state.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace framestage::detail {

/// frame_alloc: `bytes` (0 where `count` elements overflowed size_t) from the open frame's arena.
/// Any thread, inside a frame. Throws misuse (or failed_state), or the arena's out_of_memory.
inline std::byte* frame_alloc_from(const FrameState& state, FrameArena& arena, std::size_t count,
                                   std::size_t bytes, std::size_t alignment) {
  state.expect_in_frame("frame_alloc");
  FRAMESTAGE_EXPECTS(bytes > 0, misuse,
                     "frame_alloc: count must be > 0 and its bytes fit in size_t, got ", count);
  return arena.allocate(bytes, alignment).host;
}

/// stage_for_upload: where a span of frame `span_frame` lies in the arena of the open frame
/// `frame`; nullopt for an empty span (nothing to stage). Any thread, inside a frame. Throws
/// misuse for a span of another frame or one not allocated from this arena.
inline std::optional<FrameArena::Location> locate_staged(const FrameState& state,
                                                         const FrameArena& arena, const void* ptr,
                                                         std::size_t bytes,
                                                         std::uint64_t span_frame,
                                                         std::uint64_t frame) {
  state.expect_in_frame("stage_for_upload");
  FRAMESTAGE_EXPECTS(span_frame == frame, misuse, "stage_for_upload: the span is from frame ",
                     span_frame, ", but frame ", frame, " is open");
  if (bytes == 0) return std::nullopt;
  const auto where = arena.locate(ptr, bytes);
  FRAMESTAGE_EXPECTS(where.has_value(), misuse, "stage_for_upload: ", bytes, " bytes at ", ptr,
                     " are not an allocation of frame ", frame, "'s arena");
  return where;
}

/// A slot, and where a range lies in its arena.
template <class Slot>
struct SlotLocation {
  const Slot& slot;
  FrameArena::Location where;
};

/// device_ptr's lookup: the slot of `slots` (each with an `arena` and the `frame` it holds) that
/// holds `span_frame`, and where its `bytes` at `ptr` lie in that slot's arena. `newest` is the
/// newest frame begun. Throws failed_state once failed; misuse for a frame not begun, one whose
/// slot was reused since, or a range that is not that frame's allocation.
template <class Slot>
SlotLocation<Slot> locate_in_slot(const FrameState& state, const std::vector<Slot>& slots,
                                  std::uint64_t newest, const void* ptr, std::size_t bytes,
                                  std::uint64_t span_frame) {
  state.expect_not_failed();
  FRAMESTAGE_EXPECTS(span_frame >= 1 && span_frame <= newest, misuse,
                     "device_ptr: the span is from frame ", span_frame,
                     ", but the newest frame is ", newest);
  const Slot& s = slots[(span_frame - 1) % slots.size()];
  FRAMESTAGE_EXPECTS(s.frame == span_frame, misuse, "device_ptr: frame ", span_frame,
                     " is stale: its slot now holds frame ", s.frame);
  const auto where = s.arena->locate(ptr, bytes == 0 ? 1 : bytes);
  FRAMESTAGE_EXPECTS(where.has_value(), misuse, "device_ptr: ", bytes, " bytes at ", ptr,
                     " are not an allocation of frame ", span_frame, "'s arena");
  return {s, *where};
}

}  // namespace framestage::detail
