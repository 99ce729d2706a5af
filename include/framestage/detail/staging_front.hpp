/// @file staging_front.hpp
/// @brief The staging calls that Coordinator and Broadcast share, written once: frame_alloc,
/// stage_for_upload and the frame's state, over one pinned FrameArena per slot.
#pragma once

#include <framestage/config.hpp>
#include <framestage/frame_span.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

namespace framestage::detail {

struct FrameStaging;  // runtime/frame_staging.hpp

/// @brief The front that Coordinator and Broadcast stage through: typed calls that forward to a
/// few byte-level ones, the frame's state, its number and its config. What an owner does with
/// several devices, or with upload and readback arenas, stays with that owner.
///
/// **Ownership:** owns the frame's bookkeeping (state, number, slot, staged ranges); the owner
/// owns the arenas and points the front at the open frame's one when it begins a frame.
/// **Thread safety:** frame_alloc and stage_for_upload may be called from many threads at once
/// inside a frame, with no lock while the arena has room; the accessors from any thread.
class StagingFront {
 public:
  /// @brief `count` (> 0) uninitialised elements in this frame's pinned arena.
  /// @throws Error(misuse) outside a frame; Error(out_of_memory) under OverflowPolicy::fail when
  ///         the arena is full (earlier allocations stay intact).
  template <class T>
  [[nodiscard]] FrameSpan<T> frame_alloc(std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>, "frame data is copied by DMA");
    auto* p = allocate_bytes(count, array_bytes<T>(count), alignof(T));
    return FrameSpan<T>({reinterpret_cast<T*>(p), count}, current_frame());
  }

  /// @brief Asks for `span` to be copied at end_frame() to the same offset of the slot's device
  /// mirror (of every device's mirror, on a Broadcast). Staging a span twice, or overlapping
  /// spans, copies the bytes once.
  /// @throws Error(misuse) if the span is not from this frame's arena.
  template <class T>
  void stage_for_upload(FrameSpan<T> span) {
    stage_bytes(span.data(), span.size_bytes(), span.frame());
  }

  [[nodiscard]] const Config& config() const noexcept;
  /// @brief The open frame, or the last one ended (0 before the first begin_frame).
  [[nodiscard]] std::uint64_t current_frame() const noexcept;
  [[nodiscard]] bool frame_open() const noexcept;
  [[nodiscard]] bool failed() const noexcept;

 protected:
  /// `owner` names the object in the failed-state message ("coordinator"); a string literal.
  /// @throws Error(bad_config) for an invalid config (Config::validate).
  StagingFront(const char* owner, const Config& config);
  ~StagingFront();
  StagingFront(const StagingFront&) = delete;
  StagingFront& operator=(const StagingFront&) = delete;

  [[nodiscard]] FrameStaging& staging() const noexcept { return *staging_; }

 private:
  /// `bytes` is 0 when count * sizeof(T) overflows.
  std::byte* allocate_bytes(std::size_t count, std::size_t bytes, std::size_t alignment);
  void stage_bytes(const void* ptr, std::size_t bytes, std::uint64_t frame);

  std::unique_ptr<FrameStaging> staging_;
};

}  // namespace framestage::detail
