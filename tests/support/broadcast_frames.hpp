// What the Broadcast suites (test_broadcast*.cpp) share: a frame's byte pattern, a small
// config, and reading a device buffer back.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace framestage::testing {

// The byte at index i of frame `frame`'s data.
inline std::byte pattern(std::uint64_t frame, std::size_t i) {
  return static_cast<std::byte>((frame * 131 + i * 7 + 3) & 0xff);
}

inline Config small_config(std::uint32_t buffering) {
  Config c;
  c.buffering = buffering;
  c.arena_bytes = std::size_t{4} << 20;
  c.max_uploads_per_frame = 4096;
  c.slot_timeout_ms = 100;
  return c;
}

template <class T>
std::vector<T> read_device(Backend& backend, const T* device, std::size_t count) {
  std::vector<T> out(count);
  backend.read_device(out.data(), device, count * sizeof(T));
  return out;
}

}  // namespace framestage::testing
