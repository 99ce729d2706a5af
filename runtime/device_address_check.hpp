/// @file device_address_check.hpp
/// @brief The staging calls' check that a device address is one: upload's destination and
/// readback's source. The most common slip on a GPU is a host pointer (malloc, a std::vector)
/// where a device address belongs; the scatter kernel would fault on it, failing the whole
/// coordinator, so the call refuses it instead with Error(misuse) naming the address.
#pragma once

#include <framestage/backend.hpp>

#include <cstddef>
#include <cstdint>

namespace framestage::detail {

/// Checks device addresses against `backend`, asking it once per allocation (once per span
/// where it tells no allocation range, as for mapped pinned memory): each thread keeps the
/// last few device ranges it was told of, so a loop of uploads into one buffer costs a few
/// compares, and forgets them all when any MemoryBlock (a DeviceBuffer, an arena's pinned
/// block) releases its memory. A backend that cannot tell (the host backend) costs one branch.
/// Memory that the caller frees itself stays cached: a write there fails later as Error(cuda).
///
/// **Thread safety:** any thread; the cache is per thread (device ranges are process-wide).
class DeviceAddressCheck {
 public:
  explicit DeviceAddressCheck(Backend& backend)
      : backend_(&backend), enabled_(backend.checks_addresses()) {}

  /// @throws Error(misuse) naming `call`, `side` ("destination", "source") and the address if
  ///         [ptr, ptr + bytes) is host-only memory or runs past the end of its allocation;
  ///         Error(cuda) if the backend fails to tell.
  void expect(const void* ptr, std::size_t bytes, const char* call, const char* side) const {
    if (!enabled_) return;
    const auto begin = reinterpret_cast<std::uintptr_t>(ptr);
    if (released_ != blocks_released.load(std::memory_order_relaxed)) [[unlikely]]
      forget();
    if (cache_[hit_].holds(begin, bytes)) [[likely]]
      return;
    for (std::size_t i = 0; i < kCachedRanges; ++i) {
      if (cache_[i].holds(begin, bytes)) {
        hit_ = i;
        return;
      }
    }
    ask(begin, bytes, call, side);
  }

 private:
  struct Range {
    std::uintptr_t begin = 0;
    std::uintptr_t end = 0;  // one past the last byte
    [[nodiscard]] bool holds(std::uintptr_t at, std::size_t bytes) const noexcept {
      return at >= begin && at <= end && bytes <= end - at;
    }
  };
  // Enough for a simulation's arrays updated in turn (positions, velocities, ...): with fewer
  // entries than buffers in the loop, every call would ask the runtime (about 2 us, serialised
  // across threads).
  static constexpr std::size_t kCachedRanges = 16;

  void ask(std::uintptr_t begin, std::size_t bytes, const char* call, const char* side) const;
  static void forget() noexcept;

  Backend* backend_;
  bool enabled_;
  static thread_local Range cache_[kCachedRanges];
  static thread_local std::size_t next_;  // the entry the next range replaces
  static thread_local std::size_t hit_;   // the entry that held the last address checked
  // blocks_released when cache_ was last cleared: a block freed since may be in it.
  static thread_local std::uint64_t released_;
};

}  // namespace framestage::detail
