/// @file cuda_backend.hpp
/// @brief The Backend on the real CUDA runtime: one device, chosen at construction.
///
/// Declared in every build; defined only when framestage was built with CUDA, which the
/// compile definition FRAMESTAGE_HAS_CUDA (1 or 0, set for every user of the library) says.
/// This header includes no CUDA header: handles are cudaStream_t / cudaEvent_t behind void*.
#pragma once

#include <framestage/backend.hpp>

#include <optional>
#include <string>

namespace framestage {

/// @brief Backend on the CUDA runtime for one device.
///
/// Pinned memory is cudaHostAlloc'd portable and mapped (the zero-copy scatter reads it in
/// place); device memory is cudaMalloc'd; streams are non-blocking; events have timing off.
/// Every CUDA call is checked: a failure throws Error(cuda) (Error(out_of_memory) for
/// allocations, naming the bytes asked for) whose message holds the call, the CUDA error name
/// and text, and (file:line). Each call first makes the backend's device current on the calling
/// thread, so one process can hold backends for several devices.
///
/// **Thread safety:** every member may be called from any thread, as the CUDA runtime allows.
/// **Ownership:** release functions free what this backend handed out; they never throw and
/// report a failure once on stderr (a release during CUDA's own shutdown is not one).
class CudaBackend final : public Backend {
 public:
  /// @throws Error(cuda) if `device` does not exist or cannot be initialised.
  explicit CudaBackend(int device = 0);
  ~CudaBackend() override;

  /// @brief Why no CUDA backend can be made for `device` ("no CUDA device found:
  /// cudaErrorNoDevice ..."), or nothing when one can.
  [[nodiscard]] static std::optional<std::string> unavailable_reason(int device);

  [[nodiscard]] BackendKind kind() const noexcept override { return BackendKind::cuda; }
  /// @brief "CUDA device 0: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)".
  [[nodiscard]] std::string describe() const override;
  [[nodiscard]] int device() const noexcept { return device_; }
  [[nodiscard]] int sm_count() const noexcept { return sm_count_; }

  /// @brief cudaHostAlloc, portable (every device's context may use it) and mapped (kernels
  /// read it in place through mapped_device_address).
  /// @throws Error(out_of_memory) when the host cannot pin `bytes`; Error(cuda) otherwise.
  void* allocate_pinned(std::size_t bytes) override;
  void free_pinned(void* ptr) noexcept override;
  [[nodiscard]] void* mapped_device_address(void* pinned_ptr) override;
  /// @brief cudaMalloc on this backend's device.
  /// @throws Error(out_of_memory) when the device cannot hold `bytes`; Error(cuda) otherwise.
  void* allocate_device(std::size_t bytes) override;
  void free_device(void* ptr) noexcept override;

  /// @brief A non-blocking stream: it never synchronises with the legacy default stream.
  StreamHandle create_stream() override;
  void destroy_stream(StreamHandle stream) noexcept override;
  /// @brief An event with timing disabled: it only orders and signals.
  EventHandle create_event() override;
  void destroy_event(EventHandle event) noexcept override;

  void record_event(EventHandle event, StreamView stream) override;
  void stream_wait_event(StreamView stream, EventHandle event) override;
  [[nodiscard]] bool event_ready(EventHandle event) override;
  /// Polls the event, yielding the thread for the first 5 ms and then sleeping in steps that
  /// grow from 20 us to 200 us, so a frame that completes soon is seen within microseconds and a
  /// long wait does not burn a core; returns false after `timeout`.
  [[nodiscard]] bool wait_event(EventHandle event, std::chrono::milliseconds timeout) override;
  void synchronize(StreamView stream) override;

  void copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) override;
  /// @brief True unless the device reads pageable host memory itself
  /// (cudaDevAttrPageableMemoryAccess), where every host address is a valid target.
  [[nodiscard]] bool checks_addresses() const noexcept override { return !pageable_access_; }
  /// @brief cudaPointerGetAttributes: device and managed memory are `device`, with the
  /// allocation's range from the driver; mapped pinned memory is `device` without one;
  /// unregistered host memory is `host_only` unless the device reads pageable memory.
  /// @throws Error(cuda) if the runtime fails for another reason than the address.
  [[nodiscard]] AddressInfo classify_address(const void* ptr) override;

  /// @brief The most copies handed to one cudaMemcpyBatchAsync call. CUDA 13.0 with driver 580
  /// (issue 18) faults inside the driver on batches of mixed sizes that include copies under
  /// 16 B: SIGSEGV at 50,000 log-uniform 1 B-16 KiB copies in one call, and on an H100 a GPU
  /// fault (cudaErrorLaunchFailure) at 8,192 of them in shuffled order, while 5,000 shuffled
  /// copies of 1 B-8 KiB passed. framestage_batch_limit_probe measures it on any GPU. Calls of
  /// at most this many, tiny copies apart, still faulted on one frame of the GPU frame checker
  /// (16k-56k direct copies of 1 B-16 KiB, session 12), so the scheduler sends its direct copies
  /// one cudaMemcpyAsync each and only the benchmark's batch-async baseline comes here.
  static constexpr std::size_t kMaxBatchCopies = 4096;
  /// @brief Copies of at least this many bytes go one by one (cudaMemcpyAsync): the wire
  /// dominates them, so batching saves nothing, and they stay out of the driver's batch path.
  static constexpr std::size_t kMinUnbatchedBytes = std::size_t{64} << 10;
  /// @brief Copies under this many bytes go in batches of their own: the driver faults seen so
  /// far all mixed them with larger copies; lists of only such copies, or none, passed.
  static constexpr std::size_t kTinyCopyBytes = 16;

  /// @brief As Backend::copy_batch_async. Copies of kMinUnbatchedBytes or more go one by one;
  /// the others as cudaMemcpyBatchAsync calls of at most kMaxBatchCopies copies, those under
  /// kTinyCopyBytes apart from the rest, all on `stream` (the copies may not overlap, so their
  /// order among themselves is free; the list as a whole stays in stream order).
  void copy_batch_async(std::span<const CopyOp> copies, StreamView stream) override;
  void scatter_async(const TransferDescriptor* table, std::size_t count, const std::byte* staging,
                     StreamView stream) override;
  void gather_async(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                    StreamView stream) override;
  void read_device(void* host_dst, const void* device_src, std::size_t bytes) override;

  /// @brief A CUDA graph: memcpy and kernel nodes for TickTransfers (readback table, gather,
  /// copy back; upload copy, scatter after the gather), then what `work` enqueued on a stream
  /// captured thread-locally into the same graph after the scatter
  /// (cudaStreamBeginCaptureToGraph); `instances` executable graphs of it.
  [[nodiscard]] GraphHandle create_tick_graph(std::size_t instances,
                                              const std::function<void(StreamView)>& work) override;
  void destroy_tick_graph(GraphHandle graph) noexcept override;
  /// Sets only the nodes whose parameters differ from the instance's last launch
  /// (cudaGraphExecMemcpyNodeSetParams1D, cudaGraphExecKernelNodeSetParams), disables the ones
  /// with nothing to do (cudaGraphNodeSetEnabled), then cudaGraphLaunch.
  void launch_tick_graph(GraphHandle graph, std::size_t instance, const TickTransfers& transfers,
                         StreamView stream) override;
  /// @brief cudaStreamIsCapturing.
  [[nodiscard]] bool is_capturing(StreamView stream) override;

 private:
  int device_;
  int sm_count_ = 0;
  bool pageable_access_ = false;  // cudaDevAttrPageableMemoryAccess
  std::string description_;
};

}  // namespace framestage
