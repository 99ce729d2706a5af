/// @file scheduler.hpp
/// @brief Slot rotation: one stream and its events per slot, plus the consumer stream.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/transfer_planner.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <vector>

namespace framestage {

/// @brief Enqueues each frame's plan and keeps a slot from being reused while anything that
/// used it last time may still run.
///
/// **Ordering:** a frame's staging copies run on its slot's stream. Each scatter runs on the
/// consumer stream once the copies it reads have landed (chunk by chunk), the direct copies once
/// all of them have, so writes to persistent buffers come after earlier kernels on the consumer
/// stream. The slot's ready event follows them.
/// Readbacks, chunk by chunk: each chunk's descriptor table and gather (and the copies of its
/// large regions into staging) run on the consumer stream, after the work enqueued there before
/// and before the frame's scatters when submit_readbacks() comes first; its copy back to pinned
/// memory runs on the readback stream, overlapping the next chunks' gathers and later frames'
/// uploads.
/// retire() marks the consumer stream after the kernels that read the slot, and acquire() waits
/// for that mark, the slot's copies and its readbacks before the host touches the slot again.
/// **Thread safety:** owner thread only.
class Scheduler {
 public:
  /// @throws Error(cuda) if streams or events cannot be created.
  Scheduler(Backend& backend, std::uint32_t slots, std::chrono::milliseconds slot_timeout);
  /// Waits for all enqueued work; never throws (a failure is reported once on stderr, unless
  /// owner_failed() said the user already holds it).
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  [[nodiscard]] std::uint32_t slots() const noexcept {
    return static_cast<std::uint32_t>(slots_.size());
  }

  /// @brief Blocks until `slot`'s copies and its retired readers have run.
  /// @throws Error(timeout) naming the slot and the frame it last held, after `slot_timeout`.
  void acquire(std::uint32_t slot);
  /// @brief Records, on the consumer stream, the end of the work that reads `slot`'s frame.
  void retire(std::uint32_t slot);
  /// @brief Enqueues `plan` for the frame `frame` held in `slot` (see the class comment):
  /// submit_copies() then submit_consumers().
  void submit(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan);
  /// @brief Enqueues the plan's staging copies on the slot's stream, so they are on the wire
  /// while the host finishes planning.
  void submit_copies(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan);
  /// @brief Enqueues what the plan writes to user destinations on the consumer stream: staging
  /// copies added to the plan since submit_copies() first, then each scatter after the copies
  /// it reads, then the direct copies, then the slot's ready event.
  void submit_consumers(std::uint32_t slot, const TransferPlan& plan);
  /// @brief Enqueues a frame's readbacks (see the class comment); nothing for an empty plan.
  void submit_readbacks(std::uint32_t slot, const ReadbackPlan& plan);
  /// @brief Enqueues a frame planned for a tick graph: `graph`'s instance `slot` runs the main
  /// upload block's copy (none under zero-copy) and scatter and the main readback block's table,
  /// gather and copy back, in one launch on the consumer stream, followed by the slot's ready
  /// event. What its fixed nodes cannot hold (mirror copies, overflow blocks, combined or
  /// ordered overlap copies, pipelined chunks) is enqueued before the launch as submit() and
  /// submit_readbacks() would, and then every readback goes before it too, so a frame's
  /// readbacks still read what was there before its uploads.
  void submit_tick(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan,
                   const ReadbackPlan& readbacks, GraphHandle graph);
  /// @brief Completes when the slot's last readbacks are in pinned memory.
  [[nodiscard]] EventView readback_event(std::uint32_t slot) const;
  /// @brief Blocks until all work enqueued so far, on every stream, has run.
  /// @throws Error(timeout) after `slot_timeout` per stream.
  void synchronize();

  [[nodiscard]] StreamView slot_stream(std::uint32_t slot) const;
  /// @brief Completes when the slot's last frame has reached every destination: the ready
  /// event on the consumer stream, or the copies' event for a frame of mirror copies only.
  [[nodiscard]] EventView ready_event(std::uint32_t slot) const;
  [[nodiscard]] StreamView consumer_stream() const noexcept;
  /// @brief Uses `stream` (the caller's, which must outlive its use) as the consumer stream, or
  /// the scheduler's own for a null view. Work already on the old stream stays ordered first.
  void set_consumer_stream(StreamView stream);

  /// @brief The owner failed, and its user has been given that failure: the destructor still
  /// waits for enqueued work, but a CUDA error it meets there follows from the same failure (a
  /// sticky error fails every later call) and is not reported again.
  void owner_failed() noexcept { owner_failed_ = true; }

 private:
  struct Slot {
    Stream stream;
    Event copies_done;
    Event ready;
    Event retired;
    Event readback_gathered;  // the gathers (and the work before them) have run
    Event readback_done;      // the readbacks are in pinned memory
    std::array<Event, Config::kMaxPipelineChunks> chunk_landed{};     // one per pipelined chunk
    std::array<std::size_t, Config::kMaxPipelineChunks> chunk_end{};  // copies before each
    std::size_t chunks = 0;            // chunk events recorded for the frame
    std::size_t copies_submitted = 0;  // staging copies of the frame enqueued so far
    bool writes_on_consumer = true;    // the frame scatters or copies on the consumer stream
    std::uint64_t frame = 0;           // last frame submitted here; 0 = never used
  };
  void wait(EventHandle event, std::uint32_t slot, const char* what);
  void enqueue_copies(Slot& s, const TransferPlan& plan);

  Backend* backend_;
  std::chrono::milliseconds slot_timeout_;
  std::vector<Slot> slots_;
  Stream readback_stream_;
  Stream own_consumer_;
  StreamView consumer_;
  Event handover_;  // orders a new consumer stream after the old one
  bool owner_failed_ = false;
  // submit_tick's scratch: what a frame enqueues besides its tick graph's launch.
  TransferPlan tick_residue_;
  ReadbackPlan tick_readback_residue_;
};

}  // namespace framestage
