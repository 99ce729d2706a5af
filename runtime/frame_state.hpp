/// @file frame_state.hpp
/// @brief The frame state that Coordinator and Broadcast share: between frames, inside one, or
/// failed for good, with the first failure's message.
#pragma once

#include <framestage/detail/expects.hpp>
#include <framestage/error.hpp>

#include <atomic>
#include <mutex>
#include <string>
#include <utility>

namespace framestage::detail {

enum class Phase : int { between_frames, in_frame, failed };

/// Thread safety: the checks, in_frame() and failed() may be called from any thread (the staging
/// calls check from many at once); open(), close(), guarded() and fail() come from the thread
/// that owns the frame, except that fail() is safe from any thread. Once failed, it stays failed:
/// open() and close() do not leave that state.
class FrameState {
 public:
  /// `owner` names the object in the failed-state message ("coordinator", "broadcast"); it must
  /// outlive this (a string literal).
  explicit FrameState(const char* owner) noexcept : owner_(owner) {}
  FrameState(const FrameState&) = delete;
  FrameState& operator=(const FrameState&) = delete;

  [[nodiscard]] bool in_frame() const noexcept {
    return phase_.load(std::memory_order_acquire) == Phase::in_frame;
  }
  [[nodiscard]] bool failed() const noexcept {
    return phase_.load(std::memory_order_acquire) == Phase::failed;
  }

  /// Throws Error(failed_state) carrying the first failure's message, once failed.
  void expect_not_failed() const {
    if (!failed()) [[likely]]
      return;
    std::lock_guard lock(mutex_);
    throw Error(
        ErrorCategory::failed_state,
        std::string("the ") + owner_ + " failed earlier and can no longer be used: " + failure_);
  }

  /// The hot path's only check: one acquire load in the common case. Throws failed_state once
  /// failed, else misuse naming `call` outside a frame.
  void expect_in_frame(const char* call) const {
    if (in_frame()) [[likely]]
      return;
    expect_not_failed();
    FRAMESTAGE_FAIL(misuse, call, " outside a frame: call begin_frame first");
  }

  /// The frame owner's checks before it opens a frame (or changes what changes only between
  /// frames), and before it ends one: not failed, then no frame open, or one open; `why` is the
  /// misuse message. Relaxed loads: only the owning thread moves between these two states.
  template <class... Parts>
  void expect_between_frames(const Parts&... why) const {
    expect_not_failed();
    FRAMESTAGE_EXPECTS(phase_.load(std::memory_order_relaxed) == Phase::between_frames, misuse,
                       why...);
  }
  template <class... Parts>
  void expect_frame_open(const Parts&... why) const {
    expect_not_failed();
    FRAMESTAGE_EXPECTS(phase_.load(std::memory_order_relaxed) == Phase::in_frame, misuse, why...);
  }

  /// Opens or closes the frame (release: what the owner prepared for the frame is visible to the
  /// threads that then see it open). From the failed state neither does anything.
  void open() noexcept { move(Phase::between_frames, Phase::in_frame); }
  void close() noexcept { move(Phase::in_frame, Phase::between_frames); }

  /// Runs a backend-facing step; an Error of the cuda category leaves the state failed for good
  /// (the device's work is in an unknown state). Every Error is rethrown as it came.
  template <class F>
  decltype(auto) guarded(F&& step) {
    try {
      return std::forward<F>(step)();
    } catch (const Error& e) {
      if (e.category() == ErrorCategory::cuda) fail(e.message());
      throw;
    }
  }

  /// Whether `e`, met while shutting down, is the failure this state already holds: a CUDA error
  /// after the state failed on one (a sticky error fails every later call), which the user has
  /// been given and a destructor need not report again.
  [[nodiscard]] bool holds_failure_like(const std::exception& e) const noexcept {
    return failed() && is_cuda_error(e);
  }

  /// Fails for good; the first failure's message is the one kept.
  void fail(const std::string& message) {
    std::lock_guard lock(mutex_);
    if (failure_.empty()) failure_ = message;
    phase_.store(Phase::failed, std::memory_order_release);
  }

 private:
  void move(Phase from, Phase to) noexcept {
    phase_.compare_exchange_strong(from, to, std::memory_order_acq_rel, std::memory_order_acquire);
  }

  const char* owner_;
  std::atomic<Phase> phase_{Phase::between_frames};
  mutable std::mutex mutex_;
  std::string failure_;
};

}  // namespace framestage::detail
