/// @file frame_span.hpp
/// @brief FrameSpan: elements of a frame's pinned arena, tagged with their frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

namespace framestage {

namespace detail {
/// Bytes of `count` elements of T, or 0 where that overflows size_t (the calls reject 0 bytes).
/// sizeof(T) is a constant here, so the check costs no division.
template <class T>
[[nodiscard]] constexpr std::size_t array_bytes(std::size_t count) noexcept {
  return count <= std::numeric_limits<std::size_t>::max() / sizeof(T) ? count * sizeof(T) : 0;
}
}  // namespace detail

/// @brief Elements allocated in a frame's pinned arena, tagged with the frame they belong to.
///
/// Write them on the host, then stage_for_upload() them; after end_frame() their device copy is
/// at device_ptr(). Valid until the slot is reused, `buffering` frames later.
template <class T>
class FrameSpan : public std::span<T> {
 public:
  FrameSpan() = default;
  FrameSpan(std::span<T> elements, std::uint64_t frame) : std::span<T>(elements), frame_(frame) {}
  /// @brief The frame this span was allocated in (1 for the first frame).
  [[nodiscard]] std::uint64_t frame() const noexcept { return frame_; }

 private:
  std::uint64_t frame_ = 0;
};

}  // namespace framestage
