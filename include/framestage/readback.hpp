/// @file readback.hpp
/// @brief A device region read back to pinned host memory with a frame: Readback<T>.
#pragma once

#include <framestage/backend.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace framestage {

namespace detail {

/// A slot's frame numbers as readbacks see them (owned by the coordinator).
struct ReadbackSlot {
  std::atomic<std::uint64_t> holds{0};      ///< the frame whose data the slot's arenas hold
  std::atomic<std::uint64_t> submitted{0};  ///< the last frame end_frame() submitted here
  /// A frame whose readbacks are known to have landed; a cache, so written through const.
  mutable std::atomic<std::uint64_t> landed{0};
  Backend* backend = nullptr;
  EventView done;  ///< recorded after the slot's readback copies, once per frame
};

/// Throws Error(misuse) if `frame`'s readback can no longer be used (its slot holds a later
/// frame), cannot be waited for yet (the frame has not ended) or is empty (null `slot`);
/// `call` names the caller.
void expect_readback_usable(const ReadbackSlot* slot, std::uint64_t frame, const char* call);
/// True once the readback of `frame` has landed; throws as expect_readback_usable.
[[nodiscard]] bool readback_ready(const ReadbackSlot* slot, std::uint64_t frame);
/// Blocks until the readback of `frame` has landed.
/// @throws as expect_readback_usable; Error(timeout) after `timeout`.
void wait_readback(const ReadbackSlot* slot, std::uint64_t frame,
                   std::chrono::milliseconds timeout);

}  // namespace detail

/// @brief Elements of device memory read back with a frame (Coordinator::readback).
///
/// The region is read when its frame's end_frame() runs, after the work enqueued on the
/// consumer stream before then and before that frame's own uploads land; many small regions are
/// gathered by one kernel and come back in one device-to-host copy, large ones as copies of
/// their own. The host copy lives in the slot's pinned readback arena and is valid until the
/// slot is reused (`buffering` frames later, at that begin_frame()); after that every call but
/// frame() and size() throws Error(misuse) instead of returning another frame's bytes.
///
/// **Thread safety:** a Readback may be used from any thread, but not concurrently with the
/// begin_frame() that reuses its slot. It must not outlive its Coordinator.
template <class T>
class Readback {
 public:
  Readback() = default;
  Readback(detail::ReadbackSlot* slot, std::uint64_t frame, const T* host, std::size_t count)
      : slot_(slot), frame_(frame), host_(host), count_(count) {}

  [[nodiscard]] std::uint64_t frame() const noexcept { return frame_; }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

  /// @brief True once the bytes are in host memory; false before the frame has ended. Does not
  /// block. @throws Error(misuse) if the slot was reused or the Readback is empty.
  [[nodiscard]] bool ready() const { return detail::readback_ready(slot_, frame_); }

  /// @brief Blocks until ready().
  /// @throws Error(misuse) before end_frame() of its frame or after the slot was reused;
  ///         Error(timeout) if the bytes have not landed within `timeout`.
  void wait(std::chrono::milliseconds timeout = std::chrono::milliseconds{10'000}) const {
    detail::wait_readback(slot_, frame_, timeout);
  }

  /// @brief The elements read back, waiting for them first (as wait()). The span stays valid
  /// until the slot is reused.
  [[nodiscard]] std::span<const T> get(
      std::chrono::milliseconds timeout = std::chrono::milliseconds{10'000}) const {
    wait(timeout);
    return {host_, count_};
  }

 private:
  detail::ReadbackSlot* slot_ = nullptr;
  std::uint64_t frame_ = 0;
  const T* host_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace framestage
