/// @file coordinator.hpp
/// @brief The frame workflow: begin_frame, stage and upload, end_frame.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/detail/staging_front.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/frame_span.hpp>
#include <framestage/readback.hpp>
#include <framestage/stats.hpp>
#include <framestage/tick_graph.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <type_traits>

namespace framestage {

/// @brief Handle to a submitted frame: its number, slot, the stream to launch on, and its event.
///
/// Everything staged or uploaded in the frame is at its destination once event() completes;
/// work enqueued on stream() after end_frame() already runs after that.
class FrameTicket {
 public:
  FrameTicket() = default;
  FrameTicket(Backend* backend, std::uint64_t frame, std::uint32_t slot, StreamView stream,
              EventView event)
      : backend_(backend), frame_(frame), slot_(slot), stream_(stream), event_(event) {}

  [[nodiscard]] std::uint64_t frame() const noexcept { return frame_; }
  [[nodiscard]] std::uint32_t slot() const noexcept { return slot_; }
  /// @brief The consumer stream: launch the kernels that read this frame's data here.
  [[nodiscard]] StreamView stream() const noexcept { return stream_; }
  /// @brief Completes when every destination of the frame holds its bytes. The event is reused
  /// when the slot is; after that it reports a later frame, whose completion implies this one's.
  [[nodiscard]] EventView event() const noexcept { return event_; }
  /// @brief True once the frame's data has arrived. Does not block.
  [[nodiscard]] bool ready() const;
  /// @brief Blocks until ready().
  /// @throws Error(timeout) if it is not ready within `timeout`.
  void wait(std::chrono::milliseconds timeout = std::chrono::milliseconds{10'000}) const;

 private:
  Backend* backend_ = nullptr;
  std::uint64_t frame_ = 0;
  std::uint32_t slot_ = 0;
  StreamView stream_;
  EventView event_;
};

/// @brief Streams per-frame data from pinned arenas to the device with few transfers.
///
/// A frame: begin_frame(); any number of frame_alloc/stage_for_upload/upload calls; end_frame(),
/// which plans the frame's transfers, enqueues them and returns a FrameTicket. With `buffering`
/// slots, the host fills frame N+1 while frame N is in flight; begin_frame() blocks only when
/// the slot it needs is still in use `buffering` frames later.
///
/// **Ownership:** the Backend is borrowed and must outlive the Coordinator.
/// **Thread safety:** frame_alloc, stage_for_upload, upload, reserve_upload, readback,
/// upload_slice and device_ptr may be called from many threads at once inside a frame; they take no
/// lock while the arena has room. begin_frame, end_frame, set_consumer_stream, synchronize and
/// stats belong to one owner thread, and every other thread's calls for a frame must happen before
/// that frame's end_frame(). Between frames, upload and upload_slice open a frame of their own
/// (see upload()), so there they belong to the owner thread too.
/// **Ordering:** the consumer stream runs a frame's scatters and direct copies after all work
/// enqueued on it before end_frame(). Kernels that read a frame's data must be enqueued on the
/// consumer stream before the next begin_frame(): that call marks where the slot's readers end,
/// and the slot is not reused until they have run.
/// **Errors:** misuse throws Error(misuse) and changes nothing. A backend failure in
/// begin_frame, end_frame, synchronize, set_consumer_stream or an upload between frames (a
/// one-off frame) throws Error(cuda) and leaves the coordinator failed: every later call throws
/// Error(failed_state) with the first error's message. A failure while a FrameTicket or Readback
/// waits, or while a staging call allocates an overflow block, is thrown to that caller only; a
/// sticky CUDA error then fails the next owner call (docs/guarantees.md). A time-out in
/// begin_frame, or in an upload between frames, leaves no frame open; it may be retried.
class Coordinator : public detail::StagingFront {
 public:
  /// @throws Error(bad_config) for an invalid config; Error(out_of_memory) if the arenas do not
  ///         fit; Error(cuda) if streams or events cannot be made.
  Coordinator(const Config& config, Backend& backend);
  /// Waits for every frame in flight, then frees everything; never throws.
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  /// @brief Opens the next frame in the next slot, waiting until that slot is free.
  /// @throws Error(misuse) if a frame is open or the consumer stream is being captured;
  /// Error(timeout) if the slot stays busy past
  ///         slot_timeout_ms; Error(out_of_memory) if a grown arena cannot be allocated.
  void begin_frame();

  // frame_alloc<T>(count) and stage_for_upload(span): detail::StagingFront.

  /// @brief Device address of a staged span's mirror, for kernels on the ticket's stream.
  /// @throws Error(misuse) if the span's frame is not the current one or its slot was reused.
  template <class T>
  [[nodiscard]] T* device_ptr(FrameSpan<T> span) const {
    return static_cast<T*>(device_address(span.data(), span.size_bytes(), span.frame()));
  }

  /// @brief Copies `src` into pinned memory now and delivers it to `device_dst`: inside a frame
  /// with that frame, between frames at once, as a frame of its own.
  ///
  /// Inside a frame: copied into the frame's upload arena, delivered at end_frame(). Of
  /// overlapping uploads in a frame, the one issued last wins, byte for byte (from different
  /// threads, "last" is unspecified). Cost: a copy into pinned memory, one atomic operation
  /// while the arena has room.
  ///
  /// Between frames (before the first begin_frame, or after an end_frame): a one-off frame,
  /// begin_frame(), this upload and end_frame() in one call, for data that is set once ("upload
  /// and forget"). It takes the next slot as begin_frame() does, so it may block until that slot
  /// is free; current_frame() advances by one, and stats() counts the frame (`frames`,
  /// `frames_opened_by_upload`, `last_frame.opened_by_upload`). Cost: a frame's planning and a
  /// few backend calls (an event record, a copy or a scatter, the ready event), so uploads that
  /// come together belong in one frame. As any frame does, it makes the frame its slot held
  /// `buffering` frames earlier stale (device_ptr and Readback refuse it; with buffering 1, that
  /// is the last frame). It writes no mirror, and kernels that read the last frame's mirror may
  /// still be enqueued after it, until the next begin_frame().
  ///
  /// **Ownership:** `src` may be reused as soon as this returns: its bytes are in pinned memory
  /// by then, in both cases.
  /// **Thread safety:** inside a frame, any thread; between frames, the owner thread only (it
  /// opens and ends a frame, as begin_frame does).
  /// **Ordering:** the bytes are at `device_dst` before any work enqueued on the consumer stream
  /// after end_frame() (inside a frame) or after this call returns (between frames), and after
  /// the work enqueued there before. The host sees them once that frame completes: its ticket
  /// inside a frame, synchronize() after a one-off upload.
  /// @throws Error(misuse) for a null destination (inside or between frames: a misuse opens no
  ///         frame); Error(out_of_memory) under OverflowPolicy::fail when the arena or descriptor
  ///         table is full (between frames, the one-off frame still ends, with nothing in it);
  ///         between frames also what begin_frame() and end_frame() throw: Error(timeout) if
  ///         the slot stays busy past slot_timeout_ms (no frame opens, nothing is uploaded, the
  ///         call may be retried), Error(cuda), Error(failed_state).
  template <class T>
  void upload(T* device_dst, std::type_identity_t<std::span<const T>> src) {
    static_assert(std::is_trivially_copyable_v<T>, "uploads are copied by DMA");
    upload_bytes(device_dst, src.data(), src.size_bytes());
  }

  /// @brief Pinned space for `count` (> 0) elements that the caller fills before end_frame(),
  /// which delivers them to `device_dst`: the data is written once, straight into the frame's
  /// upload arena, with no copy on the host. It behaves as upload() otherwise (issue order is
  /// the order of reserve_upload calls).
  /// @throws Error(misuse) outside a frame (unlike upload(), it opens none: its space is filled
  ///         after the call), for a null destination or more than 2 GiB;
  ///         Error(out_of_memory) under OverflowPolicy::fail when the upload arena or its
  ///         descriptor table is full.
  template <class T>
  [[nodiscard]] FrameSpan<T> reserve_upload(T* device_dst, std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>, "uploads are copied by DMA");
    static_assert(alignof(T) <= kStagingGranule, "upload payloads are 16-byte aligned");
    auto* p = reserve_upload_bytes(device_dst, count, detail::array_bytes<T>(count));
    return FrameSpan<T>({reinterpret_cast<T*>(p), count}, current_frame());
  }

  /// @brief Reads `count` (> 0) elements at `device_src` back into pinned host memory with this
  /// frame: they are read when end_frame() runs, after the work enqueued on the consumer stream
  /// before it and before this frame's uploads land (see Readback). Many small regions cost
  /// one gather kernel and one copy together; regions of at least direct_copy_threshold_bytes
  /// are copied on their own. The copy back overlaps later frames' uploads.
  /// @throws Error(misuse) outside a frame, for a null source or more than 2 GiB;
  ///         Error(out_of_memory) under OverflowPolicy::fail when the readback arena
  ///         (readback_arena_bytes) or its table (max_readbacks_per_frame) is full.
  template <class T>
  [[nodiscard]] Readback<T> readback(const T* device_src, std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>, "readbacks are copied by DMA");
    static_assert(alignof(T) <= kStagingGranule, "readback payloads are 16-byte aligned");
    auto* host = readback_bytes(device_src, count, detail::array_bytes<T>(count));
    return Readback<T>(readback_slot(), current_frame(), reinterpret_cast<const T*>(host), count);
  }
  template <class T>
  [[nodiscard]] Readback<T> readback(std::span<const T> device_src) {
    return readback(device_src.data(), device_src.size());
  }

  /// @brief A new persistent buffer holding `src`'s elements: upload() into a new DeviceBuffer.
  /// Inside a frame they are there once the frame completes; between frames the call is a
  /// one-off frame of its own, and kernels enqueued on the consumer stream after it see them
  /// (see upload() for the cost, blocking, frame number and stats). `src` may be reused as soon
  /// as this returns.
  /// **Thread safety:** inside a frame, any thread; between frames, the owner thread only.
  /// @throws what DeviceBuffer's constructor (Error(out_of_memory)) and upload() throw; the
  ///         buffer is freed again.
  template <class T>
  [[nodiscard]] DeviceBuffer<T> upload_slice(std::span<const T> src) {
    DeviceBuffer<T> buffer(backend(), src.size());
    upload<T>(buffer.data(), src);
    return buffer;
  }

  /// @brief Plans and enqueues the frame's transfers and closes the frame.
  /// Partially overlapping uploads are combined in frame-arena space, or, when the arena has no
  /// room left, copied one after another in issue order: a full arena never stops a frame.
  /// A frame's transfers cannot be captured into a graph as they are (their addresses and
  /// sizes change every frame): begin_frame() and end_frame() refuse a consumer stream under
  /// capture, and capture_tick() is the way to run a tick as one graph.
  /// @throws Error(misuse) without an open frame, or while the consumer stream is being
  ///         captured; Error(cuda).
  [[nodiscard]] FrameTicket end_frame();

  /// @brief Captures a tick, once, for end_frame(TickGraph&) to replay every frame: `work` is
  /// called now, on this thread, with a stream to enqueue the tick's kernels on; what it
  /// enqueues there is captured, not run, and each replay runs it after that frame's transfers.
  ///
  /// The captured work's arguments are fixed: its kernels read and write persistent device
  /// memory (DeviceBuffer, upload destinations), not device_ptr() of a frame's mirror, which
  /// moves with the slot. Between frames only; a graph belongs to the coordinator that made it.
  /// Cost: a capture and `buffering` graph instantiations, once.
  /// @throws Error(misuse) inside a frame, for an empty `work`, or if `work` broke the capture
  ///         (synchronised, allocated, or enqueued on a stream that is not captured; the
  ///         message names the CUDA error); what `work` throws (nothing is captured then);
  ///         Error(cuda), which leaves the coordinator failed.
  [[nodiscard]] TickGraph capture_tick(const std::function<void(StreamView)>& work);

  /// @brief end_frame(), with the frame's transfers and the captured work of `tick` run as one
  /// graph launch on the consumer stream: the readbacks' table, gather and copy back, the
  /// uploads' copy and scatter, then the work. The host pays one cudaGraphLaunch plus a node
  /// update for each transfer whose address or size differs from the last frame in this slot.
  ///
  /// Every frame still arrives whole and byte for byte as end_frame() delivers it: uploads of
  /// any size go through the staging copy and the scatter (no direct copies; the upload arena
  /// must hold them). What the graph's fixed nodes cannot hold, namely mirror copies
  /// (stage_for_upload), overflow blocks (OverflowPolicy::grow) and partial overlaps combined
  /// on the host, is enqueued before the launch as end_frame() would, at its usual cost, and
  /// then the frame's readbacks go before it too.
  /// **Ordering:** as end_frame(): readbacks read after the work enqueued on the consumer
  /// stream before this call and before the frame's uploads land; the captured work runs after
  /// them. The ticket completes when the whole launch, captured work included, has run.
  /// @throws Error(misuse) without an open frame, for an empty `tick` or one captured by another
  ///         coordinator, or while the consumer stream is being captured; Error(cuda).
  [[nodiscard]] FrameTicket end_frame(TickGraph& tick);

  /// @brief Blocks until every frame submitted so far has arrived and its readers have run.
  void synchronize();

  /// @brief Runs frames' scatters and direct copies on `stream` (a null view: the coordinator's
  /// own stream). Between frames only; the stream must outlive its use.
  void set_consumer_stream(StreamView stream);
  [[nodiscard]] StreamView consumer_stream() const noexcept;

  [[nodiscard]] const CoordinatorStats& stats() const noexcept;
  [[nodiscard]] Backend& backend() const noexcept;
  // config(), current_frame(), frame_open(), failed(): detail::StagingFront.

 private:
  void* device_address(const void* ptr, std::size_t bytes, std::uint64_t frame) const;
  void upload_bytes(void* device_dst, const void* src, std::size_t bytes);
  std::byte* reserve_upload_bytes(void* device_dst, std::size_t count, std::size_t bytes);
  const std::byte* readback_bytes(const void* device_src, std::size_t count, std::size_t bytes);
  detail::ReadbackSlot* readback_slot() const noexcept;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace framestage
