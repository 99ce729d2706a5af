/// @file frame_staging.hpp
/// @brief What Coordinator and Broadcast do alike when they stage a frame: the frame's
/// bookkeeping and staged ranges (FrameStaging, behind detail::StagingFront), device_ptr's lookup
/// and upload's source checks and pieces, with their messages.
#pragma once

#include <framestage/config.hpp>
#include <framestage/detail/expects.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/transfer_planner.hpp>

#include "frame_state.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace framestage::detail {

/// The run a thread is extending, valid while `epoch` is its frame's (see StagedRanges).
struct StagedRun {
  std::uint64_t epoch = 0;
  StagedRange* range = nullptr;
  std::size_t* calls = nullptr;
};
inline thread_local StagedRun this_thread_run;

/// Staged ranges of one frame. Each thread extends a run of its own while it stages spans that
/// follow each other in the arena (what a thread allocating and staging item by item does), with
/// no atomic operation; a span elsewhere flushes the run into the shared list, which appends
/// lock-free into fixed storage and under a lock beyond it.
class StagedRanges {
 public:
  explicit StagedRanges(std::size_t capacity) : fixed_(capacity) {}

  void push(const StagedRange& range) {
    StagedRun& local = this_thread_run;
    if (local.epoch == epoch_) [[likely]] {
      StagedRange& run = *local.range;
      ++*local.calls;
      const std::size_t end = run.offset + run.bytes;
      // Allocation padding (under one granule) between spans is copied along with them.
      if (run.block == range.block && range.offset >= end &&
          range.offset - end < FrameArena::kGranule) [[likely]] {
        run.bytes = range.offset + range.bytes - run.offset;
        return;
      }
      push_shared(run);
      run = range;
      return;
    }
    const std::size_t i = run_count_.fetch_add(1, std::memory_order_relaxed);
    if (i < runs_.size()) {
      runs_[i] = Run{range, 1};
      local = StagedRun{epoch_, &runs_[i].range, &runs_[i].calls};
      return;
    }
    unrun_calls_.fetch_add(1, std::memory_order_relaxed);
    push_shared(range);
  }

  /// Owner thread, after every push of the frame (the other threads' calls happen before it).
  /// Changes nothing, so a frame whose end_frame failed can stage more and end again.
  std::span<const StagedRange> all() {
    const std::size_t runs = std::min(run_count_.load(std::memory_order_relaxed), runs_.size());
    const std::size_t n = std::min(count_.load(std::memory_order_relaxed), fixed_.size());
    if (runs == 0 && extra_.empty()) return {fixed_.data(), n};
    combined_.assign(fixed_.begin(), fixed_.begin() + static_cast<std::ptrdiff_t>(n));
    combined_.insert(combined_.end(), extra_.begin(), extra_.end());
    for (std::size_t i = 0; i < runs; ++i)
      combined_.push_back(runs_[i].range);
    return combined_;
  }

  /// stage_for_upload calls this frame; owner thread, before all().
  [[nodiscard]] std::size_t calls() const {
    std::size_t n = unrun_calls_.load(std::memory_order_relaxed);
    const std::size_t runs = std::min(run_count_.load(std::memory_order_relaxed), runs_.size());
    for (std::size_t i = 0; i < runs; ++i)
      n += runs_[i].calls;
    return n;
  }

  void clear() {
    count_.store(0, std::memory_order_relaxed);
    run_count_.store(0, std::memory_order_relaxed);
    unrun_calls_.store(0, std::memory_order_relaxed);
    extra_.clear();
    // A fresh epoch invalidates every thread's run of earlier frames, of any owner.
    epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  // A line each: every stage_for_upload writes its thread's run, and runs that shared a line
  // (with each other or with epoch_, which every call reads) made threads slow each other down.
  struct alignas(64) Run {
    StagedRange range;
    std::size_t calls;
  };
  static constexpr std::size_t kMaxRuns = 256;  // threads with a run of their own per frame

  void push_shared(const StagedRange& range) {
    const std::size_t i = count_.fetch_add(1, std::memory_order_relaxed);
    if (i < fixed_.size()) [[likely]] {
      fixed_[i] = range;
      return;
    }
    std::lock_guard lock(mutex_);
    extra_.push_back(range);
  }

  static inline std::atomic<std::uint64_t> next_epoch_{1};
  std::uint64_t epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  std::array<Run, kMaxRuns> runs_{};
  std::atomic<std::size_t> run_count_{0};
  std::atomic<std::size_t> unrun_calls_{0};
  std::vector<StagedRange> fixed_;
  std::atomic<std::size_t> count_{0};
  std::mutex mutex_;
  std::vector<StagedRange> extra_;
  std::vector<StagedRange> combined_;  // all()'s result when runs or extra_ are in use
};

/// The frame bookkeeping behind a StagingFront: its state, config, the open (or last) frame and
/// its slot, the arena the staging calls use, and the frame's staged ranges.
/// Thread safety: allocate() and stage() from any thread inside a frame; the rest belongs to the
/// frame's owner thread.
struct FrameStaging {
  /// `owner` names the object in the failed-state message; a string literal.
  /// @throws Error(bad_config) for an invalid config.
  FrameStaging(const char* owner, const Config& cfg)
      : state(owner), config((cfg.validate(), cfg)), staged(cfg.max_uploads_per_frame) {}

  /// frame_alloc: `bytes` (0 where `count` elements overflowed size_t) from the open frame's
  /// arena. Throws misuse (or failed_state), or the arena's out_of_memory.
  std::byte* allocate(std::size_t count, std::size_t bytes, std::size_t alignment) {
    state.expect_in_frame("frame_alloc");
    FRAMESTAGE_EXPECTS(bytes > 0, misuse,
                       "frame_alloc: count must be > 0 and its bytes fit in size_t, got ", count);
    return arena->allocate(bytes, alignment).host;
  }

  /// stage_for_upload: records where a span of frame `span_frame` lies in the open frame's
  /// arena; an empty span stages nothing. Throws misuse for a span of another frame or one not
  /// allocated from this arena.
  void stage(const void* ptr, std::size_t bytes, std::uint64_t span_frame) {
    state.expect_in_frame("stage_for_upload");
    FRAMESTAGE_EXPECTS(span_frame == frame, misuse, "stage_for_upload: the span is from frame ",
                       span_frame, ", but frame ", frame, " is open");
    if (bytes == 0) return;
    const auto where = arena->locate(ptr, bytes);
    FRAMESTAGE_EXPECTS(where.has_value(), misuse, "stage_for_upload: ", bytes, " bytes at ", ptr,
                       " are not an allocation of frame ", frame, "'s arena");
    staged.push({where->block, where->offset, bytes});
  }

  /// begin_frame's first step: throws unless between frames; the slot, of `slots`, that the next
  /// frame uses.
  [[nodiscard]] std::uint32_t next_slot(std::size_t slots) const {
    state.expect_between_frames("begin_frame: frame ", frame,
                                " is still open; call end_frame first");
    return static_cast<std::uint32_t>(frame % slots);
  }

  /// Marks where the readers of the frames ended since the last begin_frame end, with
  /// `mark(slot)` for each of their slots, once (begin_frame, guarded).
  template <class Mark>
  void retire_last_frame(Mark&& mark) {
    for (std::uint32_t s = 0; unretired_slots != 0; ++s)
      retire_slot(s, mark);
  }

  /// A one-off frame's first step (an upload between frames, guarded): marks the readers' end of
  /// `next_slot` alone, the slot it is about to take. The other ended frames' readers stay open,
  /// so kernels enqueued after the one-off frame that read the last frame still count as its
  /// readers, and the next begin_frame marks their end.
  template <class Mark>
  void retire_slot(std::uint32_t next_slot, Mark&& mark) {
    if ((unretired_slots & slot_bit(next_slot)) == 0) return;
    mark(next_slot);
    unretired_slots &= ~slot_bit(next_slot);
  }

  /// begin_frame's last step: opens the next frame in `next_slot`, staging into `next_arena`.
  void open(std::uint32_t next_slot, FrameArena& next_arena) {
    staged.clear();
    ++frame;
    slot = next_slot;
    arena = &next_arena;
    state.open();
  }

  /// end_frame's first step: throws unless a frame is open.
  void expect_frame_open() const {
    state.expect_frame_open("end_frame without begin_frame (last frame ", frame, " already ended)");
  }

  /// end_frame's last step: closes the frame; the next begin_frame marks its readers' end.
  void close() {
    unretired_slots |= slot_bit(slot);
    state.close();
  }

  FrameState state;
  Config config;
  StagedRanges staged;
  FrameArena* arena = nullptr;  // the open frame's; set before the frame opens
  std::uint64_t frame = 0;      // the open frame, or the last one ended; 0 before the first
  std::uint32_t slot = 0;
  // Slots of frames that ended and whose readers' end is not marked yet: the last frame's, and
  // with one-off frames after it, theirs too.
  std::uint32_t unretired_slots = 0;
  static_assert(Config::kMaxBuffering <= 32, "unretired_slots has a bit per slot");
  static constexpr std::uint32_t slot_bit(std::uint32_t s) { return std::uint32_t{1} << s; }
};

/// A slot, and where a range lies in its arena.
template <class Slot>
struct SlotLocation {
  const Slot& slot;
  FrameArena::Location where;
};

/// device_ptr's lookup: the slot of `slots` (each with an `arena` and the `frame` it holds) that
/// holds `span_frame`, and where its `bytes` at `ptr` lie in that slot's arena. Throws
/// failed_state once failed; misuse for a frame not begun, one whose slot was reused since, or a
/// range that is not that frame's allocation.
template <class Slot>
SlotLocation<Slot> locate_in_slot(const FrameStaging& staging, const std::vector<Slot>& slots,
                                  const void* ptr, std::size_t bytes, std::uint64_t span_frame) {
  staging.state.expect_not_failed();
  const std::uint64_t newest = staging.frame;
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

/// upload's source check, after its destinations': false (nothing to deliver) for 0 bytes; throws
/// misuse for a null source of more.
inline bool expect_upload_source(const void* src, std::size_t bytes) {
  if (bytes == 0) return false;
  FRAMESTAGE_EXPECTS(src != nullptr, misuse, "upload: null source for ", bytes, " bytes");
  return true;
}

/// Calls `deliver(offset, piece)` for consecutive pieces of `bytes`, each at most `max_piece`:
/// descriptors hold 32-bit lengths, so larger uploads travel as several.
template <class Deliver>
void for_each_upload_piece(std::size_t bytes, std::size_t max_piece, Deliver&& deliver) {
  for (std::size_t offset = 0; offset < bytes; offset += max_piece)
    deliver(offset, std::min(bytes - offset, max_piece));
}

}  // namespace framestage::detail
