/// @file backend.hpp
/// @brief The one place that talks to the device: memory, streams, events, copies, kernels.
///
/// Backends are per-frame machinery. Nothing here is called per item: the coordinator makes a
/// fixed handful of backend calls per frame, so the interface is virtual. RAII wrappers below
/// own every resource a backend hands out.
#pragma once

#include <framestage/detail/handle_view.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>

namespace framestage {

/// @brief Which implementation a Backend is.
enum class BackendKind { host, cuda };

/// @brief One item of a scatter or gather: `bytes` between a staging buffer and a device address.
///
/// A scatter copies `bytes` from `staging + 16 * staging_granule` to `target`; a gather copies
/// them from `target` to that staging position. Staging positions are 16-byte aligned, so the
/// kernels can use 16-byte accesses on that side whatever `target`'s alignment. Tables live in
/// device memory, or in mapped pinned memory for the zero-copy scatter, and are written by the
/// host next to the payloads they describe, so one copy ships both.
struct alignas(16) TransferDescriptor {
  std::uint64_t target;           ///< device address written by a scatter, read by a gather
  std::uint32_t staging_granule;  ///< offset into the staging buffer, in 16-byte units
  std::uint32_t bytes;            ///< length in bytes
};
static_assert(sizeof(TransferDescriptor) == 16, "kernels read a descriptor as one 16-byte word");

/// @brief Staging positions in a TransferDescriptor are counted in these many bytes.
inline constexpr std::size_t kStagingGranule = 16;

/// @brief One async copy of `bytes` from `src` to `dst` (pinned host or device memory).
struct CopyOp {
  void* dst;
  const void* src;
  std::size_t bytes;
  friend bool operator==(const CopyOp&, const CopyOp&) = default;
};

/// @brief One scatter or gather launch: the `count` descriptors at `table`, with payloads
/// relative to `staging` (see Backend::scatter_async and gather_async). A scatter only reads
/// `staging`; a gather writes it.
struct TransferTable {
  const TransferDescriptor* table = nullptr;
  std::size_t count = 0;
  std::byte* staging = nullptr;
  friend bool operator==(const TransferTable&, const TransferTable&) = default;
};

/// @brief What the fixed transfer nodes of a tick graph do on one launch (see
/// Backend::create_tick_graph), in the order the graph runs them: the readbacks' descriptor table
/// to the device, the gather, the gathered bytes back to pinned memory; the uploads' descriptors
/// and payloads to the device, the scatter (after the gather). A copy of 0 bytes, or a table of 0
/// entries, does nothing that launch.
struct TickTransfers {
  CopyOp readback_table{};  ///< pinned -> device
  TransferTable gather{};   ///< device
  CopyOp readback_copy{};   ///< device -> pinned
  CopyOp upload_copy{};     ///< pinned -> device
  TransferTable scatter{};  ///< device, or mapped pinned memory (zero-copy)
};

/// @brief What a backend can tell of an address that its kernels and copies are to use.
enum class AddressKind {
  device,     ///< device-accessible: device, managed or mapped pinned memory
  host_only,  ///< host memory that this device cannot reach (pageable, from malloc or new)
  unknown,    ///< the backend cannot tell (the host backend: one address space)
};

/// @brief An address's kind and, for `device`, the allocation around it where the backend knows
/// it (`range_bytes` 0 where it does not), so a caller can accept later addresses inside it
/// without asking again.
struct AddressInfo {
  AddressKind kind = AddressKind::unknown;
  std::uintptr_t range_begin = 0;
  std::size_t range_bytes = 0;
};

/// @brief Opaque backend handles (cudaStream_t / cudaEvent_t on the CUDA backend).
using StreamHandle = void*;
using EventHandle = void*;
/// @brief Opaque handle of a tick graph (a cudaGraph_t and its executable instances on CUDA).
using GraphHandle = void*;

/// @brief Non-owning view of a stream, passed by value (like rmm's cuda_stream_view).
using StreamView = detail::HandleView<detail::StreamTag>;
/// @brief Non-owning view of an event.
using EventView = detail::HandleView<detail::EventTag>;

/// @brief Device-side work the backend runs in stream order.
///
/// **Thread safety:** one thread at a time per Backend unless an implementation says otherwise;
/// the coordinator calls it only from its owner thread.
/// **Errors:** every failing call throws Error(cuda) (Error(out_of_memory) for allocations, with
/// the byte count), naming the call. Release functions never throw.
class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  [[nodiscard]] virtual BackendKind kind() const noexcept = 0;
  /// @brief One line for humans: the device and its mode ("host emulation (no GPU)", ...).
  [[nodiscard]] virtual std::string describe() const = 0;

  /// @brief Page-locked host memory that the device can read directly (mapped, portable).
  virtual void* allocate_pinned(std::size_t bytes) = 0;
  virtual void free_pinned(void* ptr) noexcept = 0;
  /// @brief The address a kernel uses to read pinned memory in place (zero-copy).
  [[nodiscard]] virtual void* mapped_device_address(void* pinned_ptr) = 0;
  virtual void* allocate_device(std::size_t bytes) = 0;
  virtual void free_device(void* ptr) noexcept = 0;

  virtual StreamHandle create_stream() = 0;
  virtual void destroy_stream(StreamHandle stream) noexcept = 0;
  virtual EventHandle create_event() = 0;
  virtual void destroy_event(EventHandle event) noexcept = 0;

  /// @brief Marks the point in `stream` after everything enqueued on it so far.
  virtual void record_event(EventHandle event, StreamView stream) = 0;
  /// @brief Work enqueued on `stream` after this call runs after the event's last record.
  virtual void stream_wait_event(StreamView stream, EventHandle event) = 0;
  /// @brief True once everything before the event's last record has run (or if never recorded).
  [[nodiscard]] virtual bool event_ready(EventHandle event) = 0;
  /// @brief Blocks until event_ready or the time-out; returns false on time-out.
  [[nodiscard]] virtual bool wait_event(EventHandle event, std::chrono::milliseconds timeout) = 0;
  /// @brief Blocks until everything enqueued on `stream` has run.
  virtual void synchronize(StreamView stream) = 0;

  /// @brief Async copy of `bytes` from `src` to `dst` in stream order. Either side may be pinned
  /// host or device memory; pinned sources must stay untouched until the copy has run.
  virtual void copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) = 0;
  /// @brief Every copy of `copies` in one call, in stream order as a whole (cudaMemcpyBatchAsync
  /// on CUDA). The copies may run in any order among themselves, so they must not overlap.
  /// The benchmark's batch-async baseline uses it; the scheduler does not (CUDA 13.0's driver
  /// faults on batches it cannot predict: CudaBackend::kMaxBatchCopies).
  virtual void copy_batch_async(std::span<const CopyOp> copies, StreamView stream) = 0;
  /// @brief Runs every descriptor of the `count`-entry table at `table`: copies `bytes` from
  /// `staging + 16 * staging_granule` to `target`. `table` and `staging` are addresses a kernel
  /// can read: device memory, or mapped pinned memory (zero-copy). Targets must not overlap.
  virtual void scatter_async(const TransferDescriptor* table, std::size_t count,
                             const std::byte* staging, StreamView stream) = 0;
  /// @brief Runs every descriptor of the table the other way: copies `bytes` from `target` to
  /// `staging + 16 * staging_granule`, to collect many device regions for one D2H copy.
  virtual void gather_async(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                            StreamView stream) = 0;
  /// @brief True where classify_address can tell host-only memory apart (CUDA on a device
  /// without pageable memory access): only then is an address worth checking per call.
  [[nodiscard]] virtual bool checks_addresses() const noexcept { return false; }
  /// @brief What `ptr` is, for the staging calls' argument checks. Not on a hot path: callers
  /// cache device ranges (see AddressInfo). The default knows nothing.
  [[nodiscard]] virtual AddressInfo classify_address(const void* ptr) {
    static_cast<void>(ptr);
    return {};
  }
  /// @brief A tick graph: the transfer nodes of TickTransfers, then what `work` enqueues on the
  /// stream it is handed, captured once (a CUDA stream capture) and replayed by every
  /// launch_tick_graph. `instances` executable copies keep their parameters apart, so a launch
  /// that sets what the same instance had last time changes nothing in it.
  /// @throws what `work` throws, after ending the capture; Error(misuse) if `work` broke the
  ///         capture (it synchronised, allocated, or enqueued on a stream that is not captured
  ///         and not joined to the capture), naming the error; Error(cuda) otherwise.
  [[nodiscard]] virtual GraphHandle create_tick_graph(
      std::size_t instances, const std::function<void(StreamView)>& work) = 0;
  /// Launches in flight still run to the end.
  virtual void destroy_tick_graph(GraphHandle graph) noexcept = 0;
  /// @brief Sets the transfer nodes of instance `instance` (< instances) to `transfers`, then
  /// launches it on `stream`, in stream order.
  virtual void launch_tick_graph(GraphHandle graph, std::size_t instance,
                                 const TickTransfers& transfers, StreamView stream) = 0;
  /// @brief True while `stream` is being captured into a graph.
  [[nodiscard]] virtual bool is_capturing(StreamView stream) = 0;
  /// @brief Synchronous device-to-host read for checks and tests; never on a hot path. It does
  /// not wait for work on the backend's streams: wait for the frame (or stream) first.
  virtual void read_device(void* host_dst, const void* device_src, std::size_t bytes) = 0;
};

/// @brief The best backend this build and machine offer, and why it was chosen.
struct DefaultBackend {
  std::unique_ptr<Backend> backend;
  std::string reason;  ///< e.g. "no CUDA device found: cudaErrorNoDevice"
};

/// @brief CUDA when this build has it and a device is present, the host backend otherwise.
[[nodiscard]] DefaultBackend make_default_backend(int device = 0);

namespace detail {

/// Owning, move-only handle made by `Create` and released by `Destroy` on its backend.
template <class View, auto Create, auto Destroy>
class OwnedHandle {
 public:
  OwnedHandle() = default;
  /// @throws Error(cuda) if the backend cannot make one.
  explicit OwnedHandle(Backend& backend) : backend_(&backend), handle_((backend.*Create)()) {}
  OwnedHandle(OwnedHandle&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)),
        handle_(std::exchange(other.handle_, nullptr)) {}
  OwnedHandle& operator=(OwnedHandle&& other) noexcept {
    if (this != &other) {
      reset();
      backend_ = std::exchange(other.backend_, nullptr);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  ~OwnedHandle() { reset(); }

  [[nodiscard]] View view() const noexcept { return View{handle_}; }
  [[nodiscard]] void* native() const noexcept { return handle_; }

 private:
  void reset() noexcept {
    if (handle_ != nullptr) (backend_->*Destroy)(handle_);
    handle_ = nullptr;
  }
  Backend* backend_ = nullptr;
  void* handle_ = nullptr;
};

}  // namespace detail

/// @brief Owning, move-only stream (a cudaStream_t on the CUDA backend).
using Stream = detail::OwnedHandle<StreamView, &Backend::create_stream, &Backend::destroy_stream>;
/// @brief Owning, move-only event (a cudaEvent_t on the CUDA backend).
using Event = detail::OwnedHandle<EventView, &Backend::create_event, &Backend::destroy_event>;

namespace detail {
/// Counts device and pinned blocks released through MemoryBlock, so that caches of
/// device-reachable ranges (runtime/device_address_check.hpp) forget a range once its block is
/// gone, before host memory can take its place.
inline std::atomic<std::uint64_t> blocks_released{0};
}  // namespace detail

/// @brief Where a block of memory lives.
enum class MemoryKind { pinned, device };

/// @brief Owning, move-only block of pinned host or device memory.
class MemoryBlock {
 public:
  MemoryBlock() = default;
  /// @throws Error(out_of_memory) naming `bytes` when the backend cannot provide them.
  MemoryBlock(Backend& backend, MemoryKind kind, std::size_t bytes)
      : backend_(&backend),
        kind_(kind),
        data_(static_cast<std::byte*>(kind == MemoryKind::pinned ? backend.allocate_pinned(bytes)
                                                                 : backend.allocate_device(bytes))),
        bytes_(bytes) {}
  MemoryBlock(MemoryBlock&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)),
        kind_(other.kind_),
        data_(std::exchange(other.data_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  MemoryBlock& operator=(MemoryBlock&& other) noexcept {
    if (this != &other) {
      reset();
      backend_ = std::exchange(other.backend_, nullptr);
      kind_ = other.kind_;
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  ~MemoryBlock() { reset(); }

  [[nodiscard]] std::byte* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] MemoryKind kind() const noexcept { return kind_; }
  [[nodiscard]] bool contains(const void* ptr, std::size_t len) const noexcept {
    const auto* p = static_cast<const std::byte*>(ptr);
    return p >= data_ && len <= bytes_ && p <= data_ + (bytes_ - len);
  }

 private:
  void reset() noexcept {
    if (data_ == nullptr) return;
    if (kind_ == MemoryKind::pinned) {
      backend_->free_pinned(data_);
    } else {
      backend_->free_device(data_);
    }
    detail::blocks_released.fetch_add(1, std::memory_order_relaxed);
    data_ = nullptr;
  }
  Backend* backend_ = nullptr;
  MemoryKind kind_ = MemoryKind::pinned;
  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace framestage
