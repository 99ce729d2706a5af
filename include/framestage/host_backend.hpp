/// @file host_backend.hpp
/// @brief A Backend on plain host memory with the CUDA stream and event semantics.
///
/// "Pinned" and "device" memory are both host memory, so tests can read destinations directly.
/// Streams are in-order queues, events mark positions in them, and scatter/gather run the same
/// TransferDescriptor tables the CUDA kernels run.
///
/// In deferred mode nothing runs when it is enqueued: work stays pending until an event recorded
/// after it is polled or waited on, or its stream is synchronized. A coordinator that reused a
/// slot before its copies had run would then see its copies read the next frame's bytes, so a
/// test of the delivered contents catches it. Stalled mode emulates a hung device.
#pragma once

#include <framestage/backend.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>

namespace framestage {

struct HostBackendOptions {
  /// Keep enqueued work pending until something waits for it (see the file comment).
  bool deferred = false;
};

/// @brief Backend on host memory; always available.
///
/// **Thread safety:** every member may be called from any thread; calls are serialised.
/// Host tasks run with the backend's lock held and must not call back into it.
class HostBackend final : public Backend {
 public:
  explicit HostBackend(HostBackendOptions options = {});
  ~HostBackend() override;

  [[nodiscard]] BackendKind kind() const noexcept override { return BackendKind::host; }
  [[nodiscard]] std::string describe() const override;

  void* allocate_pinned(std::size_t bytes) override;
  void free_pinned(void* ptr) noexcept override;
  [[nodiscard]] void* mapped_device_address(void* pinned_ptr) override;
  void* allocate_device(std::size_t bytes) override;
  void free_device(void* ptr) noexcept override;

  StreamHandle create_stream() override;
  void destroy_stream(StreamHandle stream) noexcept override;
  EventHandle create_event() override;
  void destroy_event(EventHandle event) noexcept override;

  void record_event(EventHandle event, StreamView stream) override;
  void stream_wait_event(StreamView stream, EventHandle event) override;
  [[nodiscard]] bool event_ready(EventHandle event) override;
  /// While stalled, returns false at once: no emulated work can finish, however long one waits.
  [[nodiscard]] bool wait_event(EventHandle event, std::chrono::milliseconds timeout) override;
  /// @throws Error(timeout) while stalled with work pending on `stream`.
  void synchronize(StreamView stream) override;

  void copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) override;
  /// Runs the copies one after another, in order.
  void copy_batch_async(std::span<const CopyOp> copies, StreamView stream) override;
  void scatter_async(const TransferDescriptor* table, std::size_t count, const std::byte* staging,
                     StreamView stream) override;
  void gather_async(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                    StreamView stream) override;
  void read_device(void* host_dst, const void* device_src, std::size_t bytes) override;

  /// Emulates capture: what `work` enqueues on the stream it is handed is kept, not run, and
  /// every launch enqueues the transfers and then a copy of each kept operation, as a graph
  /// replays its nodes. Event records and waits on that stream, and synchronizing it, are
  /// Error(misuse), as a CUDA capture refuses what it cannot capture.
  [[nodiscard]] GraphHandle create_tick_graph(std::size_t instances,
                                              const std::function<void(StreamView)>& work) override;
  void destroy_tick_graph(GraphHandle graph) noexcept override;
  void launch_tick_graph(GraphHandle graph, std::size_t instance, const TickTransfers& transfers,
                         StreamView stream) override;
  [[nodiscard]] bool is_capturing(StreamView stream) override;

  /// @brief Enqueues a host function as if it were a kernel launched on `stream`.
  void launch_host_task(StreamView stream, std::function<void()> task);
  /// @brief Stops (true) or resumes (false) all progress of enqueued work.
  void set_stalled(bool stalled);
  /// @brief Operations enqueued but not yet run, over all streams.
  [[nodiscard]] std::size_t pending_operations() const;
  /// @brief Pinned plus device allocations not yet freed.
  [[nodiscard]] std::size_t live_allocations() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace framestage
