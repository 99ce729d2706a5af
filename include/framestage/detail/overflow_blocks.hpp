/// @file overflow_blocks.hpp
/// @brief The overflow blocks of an arena (FrameArena, UploadArena): one way to hold, publish and
/// release them.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <mutex>

namespace framestage::detail {

/// At most `N` overflow blocks of one arena and frame. Blocks are added and changed under
/// `mutex` and published with a release store of `count`, so readers that acquire the count see
/// fully built blocks; the array never moves.
template <class Block, std::size_t N>
struct OverflowBlocks {
  mutable std::mutex mutex;
  std::array<Block, N> blocks{};
  std::atomic<std::size_t> count{0};

  /// Releases every block and publishes none, at the start of a frame.
  void release_all() noexcept {
    std::lock_guard lock(mutex);
    const std::size_t published = count.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < published; ++i)
      blocks[i] = Block{};
    count.store(0, std::memory_order_release);
  }
};

}  // namespace framestage::detail
