/// @file capacity_tracker.hpp
/// @brief When a grow-policy arena grows or trims, decided from what its frames used.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace framestage {

/// @brief What an arena's reset() did to its blocks.
enum class ArenaResize { none, grew, trimmed };

namespace detail {

/// Tracks one capacity (bytes, or descriptor slots) over frames. A frame that overflowed grows
/// the capacity to what it needed plus a quarter; `trim_after` frames in a row below capacity
/// trim it back towards what they used, never below the configured base.
class CapacityTracker {
 public:
  struct Decision {
    std::size_t capacity;
    ArenaResize resize;
  };

  /// @param granule the unit capacities are rounded up to (a power of two)
  Decision next(std::size_t capacity, std::size_t base, std::size_t peak, bool overflowed,
                std::uint32_t trim_after, std::size_t granule) {
    high_water_ = std::max(high_water_, peak);
    if (overflowed) {
      frames_below_ = 0;
      recent_peak_ = 0;
      return {std::max(base, headroom(peak, granule)), ArenaResize::grew};
    }
    if (capacity <= base) return {capacity, ArenaResize::none};
    recent_peak_ = std::max(recent_peak_, peak);
    if (peak >= capacity) {
      // A frame that fills the arena restarts the count of smaller frames in a row.
      frames_below_ = 0;
      recent_peak_ = 0;
    } else if (++frames_below_ >= trim_after) {
      const std::size_t target = std::max(base, headroom(recent_peak_, granule));
      frames_below_ = 0;
      recent_peak_ = 0;
      if (target < capacity) return {target, ArenaResize::trimmed};
    }
    return {capacity, ArenaResize::none};
  }

  /// @brief Largest peak passed to next() so far.
  [[nodiscard]] std::size_t high_water() const noexcept { return high_water_; }

 private:
  static std::size_t headroom(std::size_t peak, std::size_t granule) {
    const std::size_t wanted = peak + peak / 4;
    return (wanted + granule - 1) & ~(granule - 1);
  }
  std::size_t high_water_ = 0;
  std::size_t recent_peak_ = 0;
  std::uint32_t frames_below_ = 0;
};

}  // namespace detail
}  // namespace framestage
