#include <framestage/cuda_backend.hpp>
#include <framestage/detail/expects.hpp>

#include "kernels/transfer_kernels.cuh"
#include "runtime/copy_batch_split.hpp"
#include "runtime/cuda_try.hpp"

#include <cudaTypedefs.h>  // the driver's function types only: the driver is found at run time
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <new>
#include <thread>
#include <vector>

namespace framestage {

namespace {

/// Makes a device current on the calling thread for one scope and restores the previous one.
///
/// cudaGetDevice only reads thread-local state, so a call on the backend's own device costs no
/// cudaSetDevice; the restore keeps a caller that works with several devices undisturbed.
class DeviceGuard {
 public:
  /// @throws Error(cuda) if the device cannot be made current.
  explicit DeviceGuard(int device) {
    FRAMESTAGE_CUDA_TRY(cudaGetDevice(&previous_));
    if (previous_ != device) {
      FRAMESTAGE_CUDA_TRY(cudaSetDevice(device));
      switched_ = true;
    }
  }
  /// For release paths: reports a failure on stderr and lets the release try anyway.
  DeviceGuard(int device, std::nothrow_t) noexcept {
    FRAMESTAGE_CUDA_ASSERT_SAFE_SHUTDOWN(cudaGetDevice(&previous_));
    // previous_ stays -1 if that failed (the runtime is unloading): leave the device alone.
    if (previous_ >= 0 && previous_ != device) {
      FRAMESTAGE_CUDA_ASSERT_SAFE_SHUTDOWN(cudaSetDevice(device));
      switched_ = true;
    }
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    if (switched_) FRAMESTAGE_CUDA_ASSERT_SAFE_SHUTDOWN(cudaSetDevice(previous_));
  }

 private:
  int previous_ = -1;
  bool switched_ = false;
};

cudaStream_t cuda_stream(StreamView stream) noexcept {
  return static_cast<cudaStream_t>(stream.native());
}
cudaEvent_t cuda_event(EventHandle event) noexcept {
  return static_cast<cudaEvent_t>(event);
}

/// The one creation path of the backend's streams and events: makes `device` current and runs
/// `create` with `flags`; throws Error(cuda) naming `call` if it fails.
template <class Native>
Native create_on(int device, cudaError_t (*create)(Native*, unsigned int), unsigned int flags,
                 const char* call) {
  const DeviceGuard guard(device);
  Native handle = nullptr;
  FRAMESTAGE_DETAIL_CUDA_CHECK(create(&handle, flags), call, detail::throw_cuda_error);
  return handle;
}

/// The one release path of the backend's memory, streams and events: makes `device` current
/// and runs `destroy` on `handle`, reporting a failure on stderr rather than throwing. A null
/// handle is skipped: it owns nothing, and as a stream it would name the legacy default stream,
/// which is not ours to destroy.
template <class Native>
void release_on(int device, void* handle, cudaError_t (*destroy)(Native),
                const char* call) noexcept {
  if (handle == nullptr) return;
  const DeviceGuard guard(device, std::nothrow);
  FRAMESTAGE_DETAIL_CUDA_CHECK(destroy(static_cast<Native>(handle)), call,
                               detail::report_cuda_error);
}

/// A tick graph on one device: its template graph, the nodes each launch sets, and one
/// executable instance per slot with the parameters it was last launched with.
struct CudaTickGraph {
  /// The five transfer nodes, in TickTransfers' order.
  enum Node : std::size_t { readback_table, gather, readback_copy, upload_copy, scatter, count };
  struct Instance {
    cudaGraphExec_t exec = nullptr;
    TickTransfers set{};
    std::array<bool, Node::count> enabled{true, true, true, true, true};
    bool stale = true;  // `set` and `enabled` say nothing: the next launch sets every node
  };

  explicit CudaTickGraph(int dev) : device(dev) {}
  CudaTickGraph(const CudaTickGraph&) = delete;
  CudaTickGraph& operator=(const CudaTickGraph&) = delete;
  ~CudaTickGraph() {
    // An instance still running is freed by the driver once it completes.
    for (const Instance& in : instances)
      release_on(device, in.exec, &cudaGraphExecDestroy, "cudaGraphExecDestroy(exec)");
    release_on(device, graph, &cudaGraphDestroy, "cudaGraphDestroy(graph)");
    release_on(device, placeholder_pinned, &cudaFreeHost, "cudaFreeHost(placeholder)");
    release_on(device, placeholder_device, &cudaFree, "cudaFree(placeholder)");
  }

  int device;
  cudaGraph_t graph = nullptr;
  // Memcpy nodes are made with real addresses of the kinds each launch sets (pinned host and
  // device memory of this device's context), which SetParams1D requires; no launch uses them.
  void* placeholder_pinned = nullptr;
  void* placeholder_device = nullptr;
  std::array<cudaGraphNode_t, Node::count> nodes{};
  std::vector<Instance> instances;
};

constexpr std::size_t kPlaceholderBytes = 256;

/// Captures what `work` enqueues on a fresh stream of `device` into `graph`, after `after`
/// (cudaStreamBeginCaptureToGraph, so the work may hold any node a stream capture makes). The
/// capture is thread-local: calls from this thread that a capture cannot hold fail and
/// invalidate it, and that is reported as the misuse it is. On any failure `graph` may hold part
/// of the work; the caller discards it.
void capture_into(int device, cudaGraph_t graph, cudaGraphNode_t after,
                  const std::function<void(StreamView)>& work) {
  const auto stream = create_on(device, &cudaStreamCreateWithFlags, cudaStreamNonBlocking,
                                "cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)");
  const auto end_capture = [&] {
    cudaGraph_t captured = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &captured);
    release_on(device, stream, &cudaStreamDestroy, "cudaStreamDestroy(stream)");
    return ended;
  };
  if (const cudaError_t began = cudaStreamBeginCaptureToGraph(stream, graph, &after, nullptr, 1,
                                                              cudaStreamCaptureModeThreadLocal);
      began != cudaSuccess) {
    release_on(device, stream, &cudaStreamDestroy, "cudaStreamDestroy(stream)");
    detail::throw_cuda_error(began, "cudaStreamBeginCaptureToGraph(stream, graph)",
                             FRAMESTAGE_SOURCE_FILE, __LINE__);
  }
  try {
    work(StreamView{stream});
  } catch (...) {
    static_cast<void>(end_capture());
    detail::clear_last_cuda_error();
    throw;
  }
  if (const cudaError_t ended = end_capture(); ended != cudaSuccess) {
    detail::clear_last_cuda_error();
    throw Error(ErrorCategory::misuse,
                "capture_tick: the tick's work broke its capture: cudaStreamEndCapture failed: " +
                    detail::describe_cuda_error(ended) +
                    "; enqueue the work only on the stream it is handed (other streams join "
                    "through events recorded on it), and do not synchronise or allocate in it");
  }
}

/// True once the event has completed, false while it is pending; throws on any other result.
bool query_event(cudaEvent_t event) {
  const cudaError_t status = cudaEventQuery(event);
  if (status == cudaErrorNotReady) {
    // "Not ready" is an answer, not a failure; keep it out of the last-error slot.
    detail::clear_last_cuda_error();
    return false;
  }
  // Not through FRAMESTAGE_CUDA_TRY, which would name `status` instead of the call.
  if (status != cudaSuccess) {
    detail::throw_cuda_error(status, "cudaEventQuery(event)", FRAMESTAGE_SOURCE_FILE, __LINE__);
  }
  return true;
}

/// The driver's cuMemGetAddressRange, looked up once through the runtime so that framestage
/// does not link libcuda (absent where no driver is installed); null if the driver lacks it.
PFN_cuMemGetAddressRange_v3020 driver_address_range() {
  static const PFN_cuMemGetAddressRange_v3020 function = [] {
    void* entry = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &entry, 3020, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      detail::clear_last_cuda_error();
      return PFN_cuMemGetAddressRange_v3020{nullptr};
    }
    return reinterpret_cast<PFN_cuMemGetAddressRange_v3020>(entry);
  }();
  return function;
}

}  // namespace

std::optional<std::string> CudaBackend::unavailable_reason(int device) {
  int count = 0;
  if (const cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    detail::clear_last_cuda_error();
    return "no CUDA device found: " + detail::describe_cuda_error(status);
  }
  if (device < 0 || device >= count) {
    return "CUDA device " + std::to_string(device) + " requested but only " +
           std::to_string(count) + " present";
  }
  return std::nullopt;
}

CudaBackend::CudaBackend(int device) : device_(device) {
  if (const auto reason = unavailable_reason(device)) FRAMESTAGE_FAIL(cuda, *reason);
  const DeviceGuard guard(device_);
  // Creates the primary context now, so the first frame does not pay for it.
  FRAMESTAGE_CUDA_TRY(cudaFree(nullptr));
  int major = 0;
  int minor = 0;
  FRAMESTAGE_CUDA_TRY(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device_));
  FRAMESTAGE_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device_));
  FRAMESTAGE_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device_));
  // The runtime API gives the name only as part of the full property set.
  cudaDeviceProp properties{};
  FRAMESTAGE_CUDA_TRY(cudaGetDeviceProperties(&properties, device_));
  int pageable_access = 0;
  FRAMESTAGE_CUDA_TRY(
      cudaDeviceGetAttribute(&pageable_access, cudaDevAttrPageableMemoryAccess, device_));
  pageable_access_ = pageable_access != 0;
  description_ = "CUDA device " + std::to_string(device_) + ": " + properties.name + " (sm_" +
                 std::to_string(major) + std::to_string(minor) + ", " + std::to_string(sm_count_) +
                 " SMs)";
}

// Resources belong to their RAII owners (MemoryBlock, Stream, Event), not to the backend.
CudaBackend::~CudaBackend() = default;

std::string CudaBackend::describe() const {
  return description_;
}

void* CudaBackend::allocate_pinned(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  const DeviceGuard guard(device_);
  void* ptr = nullptr;
  // Portable: usable from every device's context; mapped: kernels can read it in place.
  FRAMESTAGE_CUDA_TRY_ALLOC(cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable | cudaHostAllocMapped),
                            bytes);
  return ptr;
}

void CudaBackend::free_pinned(void* ptr) noexcept {
  release_on(device_, ptr, &cudaFreeHost, "cudaFreeHost(ptr)");
}

void* CudaBackend::mapped_device_address(void* pinned_ptr) {
  // A zero-byte block has no address on either side.
  if (pinned_ptr == nullptr) return nullptr;
  const DeviceGuard guard(device_);
  void* device_ptr = nullptr;
  FRAMESTAGE_CUDA_TRY(cudaHostGetDevicePointer(&device_ptr, pinned_ptr, 0));
  return device_ptr;
}

void* CudaBackend::allocate_device(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  const DeviceGuard guard(device_);
  void* ptr = nullptr;
  FRAMESTAGE_CUDA_TRY_ALLOC(cudaMalloc(&ptr, bytes), bytes);
  return ptr;
}

void CudaBackend::free_device(void* ptr) noexcept {
  release_on(device_, ptr, &cudaFree, "cudaFree(ptr)");
}

StreamHandle CudaBackend::create_stream() {
  // Non-blocking: no implicit synchronisation with the legacy default stream, so other
  // libraries' work there never stalls a frame.
  return create_on(device_, &cudaStreamCreateWithFlags, cudaStreamNonBlocking,
                   "cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)");
}

void CudaBackend::destroy_stream(StreamHandle stream) noexcept {
  release_on(device_, stream, &cudaStreamDestroy, "cudaStreamDestroy(stream)");
}

EventHandle CudaBackend::create_event() {
  // Events only order and signal; timing would make every record and query more expensive.
  return create_on(device_, &cudaEventCreateWithFlags, cudaEventDisableTiming,
                   "cudaEventCreateWithFlags(&event, cudaEventDisableTiming)");
}

void CudaBackend::destroy_event(EventHandle event) noexcept {
  release_on(device_, event, &cudaEventDestroy, "cudaEventDestroy(event)");
}

void CudaBackend::record_event(EventHandle event, StreamView stream) {
  const DeviceGuard guard(device_);
  FRAMESTAGE_CUDA_TRY(cudaEventRecord(cuda_event(event), cuda_stream(stream)));
}

void CudaBackend::stream_wait_event(StreamView stream, EventHandle event) {
  const DeviceGuard guard(device_);
  FRAMESTAGE_CUDA_TRY(cudaStreamWaitEvent(cuda_stream(stream), cuda_event(event), 0));
}

bool CudaBackend::event_ready(EventHandle event) {
  const DeviceGuard guard(device_);
  return query_event(cuda_event(event));
}

bool CudaBackend::wait_event(EventHandle event, std::chrono::milliseconds timeout) {
  using namespace std::chrono_literals;
  using Clock = std::chrono::steady_clock;
  // A frame completes within a few milliseconds, and every microsecond of wake-up latency is
  // added to the frame (sleeping after 200 us cost a 16 MiB copy 15% of its bandwidth), so the
  // waiter polls, yielding the core, for 5 ms; only a longer wait sleeps, in short steps that
  // give the core back without adding more than 200 us. (A blocking-sync event would add the
  // driver's wake-up latency to every frame.)
  constexpr std::chrono::microseconds kSpinFor = 5ms;
  constexpr std::chrono::microseconds kFirstSleep = 20us;
  constexpr std::chrono::microseconds kLongestSleep = 200us;

  const DeviceGuard guard(device_);
  const auto start = Clock::now();
  // A "wait forever" timeout such as milliseconds::max() would overflow the clock.
  const auto time_left = Clock::time_point::max() - start;
  const auto deadline = timeout < std::chrono::duration_cast<std::chrono::milliseconds>(time_left)
                            ? start + timeout
                            : Clock::time_point::max();
  auto sleep = kFirstSleep;
  while (!query_event(cuda_event(event))) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    if (now - start < kSpinFor) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(
          std::min(sleep, std::chrono::ceil<std::chrono::microseconds>(deadline - now)));
      sleep = std::min(sleep * 2, kLongestSleep);
    }
  }
  return true;
}

void CudaBackend::synchronize(StreamView stream) {
  const DeviceGuard guard(device_);
  FRAMESTAGE_CUDA_TRY(cudaStreamSynchronize(cuda_stream(stream)));
}

void CudaBackend::copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) {
  if (bytes == 0) return;
  const DeviceGuard guard(device_);
  FRAMESTAGE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, cuda_stream(stream)));
}

void CudaBackend::copy_batch_async(std::span<const CopyOp> copies, StreamView stream) {
  if (copies.empty()) return;
  const DeviceGuard guard(device_);
  const cudaStream_t s = cuda_stream(stream);

  // cudaMemcpyBatchAsync refuses the legacy NULL stream. The backend's own streams are never
  // null, but the interface allows one, so it gets the same copies one by one.
  if (s == nullptr || s == cudaStreamLegacy) {
    for (const CopyOp& copy : copies) {
      if (copy.bytes != 0) {
        FRAMESTAGE_CUDA_TRY(cudaMemcpyAsync(copy.dst, copy.src, copy.bytes, cudaMemcpyDefault, s));
      }
    }
    return;
  }

  // Per-thread scratch: once a thread has seen its largest lists, a call allocates nothing, and
  // threads sharing the backend never share them.
  constexpr detail::CopyBatchLimits kLimits{kMaxBatchCopies, kMinUnbatchedBytes, kTinyCopyBytes};
  thread_local detail::CopyBatchSplit split;
  split.assign(copies, kLimits);
  for (const CopyOp& copy : split.one_by_one)
    FRAMESTAGE_CUDA_TRY(cudaMemcpyAsync(copy.dst, copy.src, copy.bytes, cudaMemcpyDefault, s));

  // One attribute set for every copy: sources are read in stream order (they are pinned staging
  // slots written before the copy was enqueued), and copies should use the copy engines so they
  // overlap the previous frame's kernels.
  cudaMemcpyAttributes attributes{};
  attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attributes.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  // The shapes the driver faults on (issue 18) never reach it: consecutive calls on one stream.
  split.for_each_call([&](const detail::CopyBatchList& list, std::size_t first, std::size_t count) {
    std::size_t first_copy_index = 0;
    FRAMESTAGE_CUDA_TRY(cudaMemcpyBatchAsync(list.dsts.data() + first, list.srcs.data() + first,
                                             list.sizes.data() + first, count, &attributes,
                                             &first_copy_index, 1, s));
  });
}

AddressInfo CudaBackend::classify_address(const void* ptr) {
  const DeviceGuard guard(device_);
  // The driver's range query needs a context current on this thread, and a producer thread
  // that has made no runtime call that binds one has none: the guard skips cudaSetDevice when
  // the device is already the thread's (0 by default). Without the range nothing is cached, and
  // every upload asked the runtime again, 18x slower on 16 threads (H100, session 11).
  FRAMESTAGE_CUDA_TRY(cudaSetDevice(device_));
  cudaPointerAttributes attributes{};
  FRAMESTAGE_CUDA_TRY(cudaPointerGetAttributes(&attributes, ptr));
  AddressInfo info;
  switch (attributes.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged: {
      info.kind = AddressKind::device;
      CUdeviceptr base = 0;
      std::size_t bytes = 0;
      if (const auto range = driver_address_range();
          range != nullptr && range(&base, &bytes, reinterpret_cast<CUdeviceptr>(ptr)) == 0) {
        info.range_begin = static_cast<std::uintptr_t>(base);
        info.range_bytes = bytes;
      }
      break;
    }
    case cudaMemoryTypeHost:
      // Registered or cudaHostAlloc'd: kernels reach it where it is mapped.
      info.kind =
          attributes.devicePointer != nullptr ? AddressKind::device : AddressKind::host_only;
      break;
    default:
      info.kind = pageable_access_ ? AddressKind::device : AddressKind::host_only;
      break;
  }
  return info;
}

void CudaBackend::scatter_async(const TransferDescriptor* table, std::size_t count,
                                const std::byte* staging, StreamView stream) {
  if (count == 0) return;
  const DeviceGuard guard(device_);
  detail::launch_scatter(table, count, staging, cuda_stream(stream));
}

void CudaBackend::gather_async(const TransferDescriptor* table, std::size_t count,
                               std::byte* staging, StreamView stream) {
  if (count == 0) return;
  const DeviceGuard guard(device_);
  detail::launch_gather(table, count, staging, cuda_stream(stream));
}

GraphHandle CudaBackend::create_tick_graph(std::size_t instances,
                                           const std::function<void(StreamView)>& work) {
  FRAMESTAGE_EXPECTS(instances >= 1, misuse, "create_tick_graph: a tick graph needs an instance");
  const DeviceGuard guard(device_);
  using Node = CudaTickGraph::Node;
  auto g = std::make_unique<CudaTickGraph>(device_);  // its destructor frees what was made
  FRAMESTAGE_CUDA_TRY_ALLOC(cudaHostAlloc(&g->placeholder_pinned, kPlaceholderBytes,
                                          cudaHostAllocPortable | cudaHostAllocMapped),
                            kPlaceholderBytes);
  FRAMESTAGE_CUDA_TRY_ALLOC(cudaMalloc(&g->placeholder_device, kPlaceholderBytes),
                            kPlaceholderBytes);
  FRAMESTAGE_CUDA_TRY(cudaGraphCreate(&g->graph, 0));
  auto& n = g->nodes;
  const auto add_copy = [&](Node node, const cudaGraphNode_t* after, std::size_t deps,
                            bool to_device) {
    void* dst = to_device ? g->placeholder_device : g->placeholder_pinned;
    const void* src = to_device ? g->placeholder_pinned : g->placeholder_device;
    FRAMESTAGE_CUDA_TRY(cudaGraphAddMemcpyNode1D(&n[node], g->graph, after, deps, dst, src,
                                                 kPlaceholderBytes, cudaMemcpyDefault));
  };
  const auto add_kernel = [&](Node node, const cudaGraphNode_t* after, std::size_t deps,
                              bool gather) {
    detail::TransferNodeArgs args;
    const cudaKernelNodeParams params = detail::transfer_node_params(
        gather, nullptr, 0, static_cast<std::byte*>(g->placeholder_device), args);
    FRAMESTAGE_CUDA_TRY(cudaGraphAddKernelNode(&n[node], g->graph, after, deps, &params));
  };
  // Readbacks: table in, gather, bytes back. Uploads: descriptors and payloads in, then the
  // scatter, after the gather (a frame's readbacks read what was there before its uploads).
  add_copy(Node::readback_table, nullptr, 0, true);
  add_kernel(Node::gather, &n[Node::readback_table], 1, true);
  add_copy(Node::readback_copy, &n[Node::gather], 1, false);
  add_copy(Node::upload_copy, nullptr, 0, true);
  const std::array<cudaGraphNode_t, 2> before_scatter{n[Node::upload_copy], n[Node::gather]};
  add_kernel(Node::scatter, before_scatter.data(), before_scatter.size(), false);
  capture_into(device_, g->graph, n[Node::scatter], work);
  g->instances.resize(instances);
  for (CudaTickGraph::Instance& in : g->instances)
    FRAMESTAGE_CUDA_TRY(cudaGraphInstantiate(&in.exec, g->graph, 0));
  return g.release();
}

void CudaBackend::destroy_tick_graph(GraphHandle graph) noexcept {
  delete static_cast<CudaTickGraph*>(graph);
}

void CudaBackend::launch_tick_graph(GraphHandle graph, std::size_t instance, const TickTransfers& t,
                                    StreamView stream) {
  FRAMESTAGE_EXPECTS(graph != nullptr, misuse, "launch_tick_graph: null tick graph");
  auto& g = *static_cast<CudaTickGraph*>(graph);
  FRAMESTAGE_EXPECTS(instance < g.instances.size(), misuse, "launch_tick_graph: instance ",
                     instance, " of ", g.instances.size());
  const DeviceGuard guard(device_);
  using Node = CudaTickGraph::Node;
  CudaTickGraph::Instance& in = g.instances[instance];
  const bool stale = std::exchange(in.stale, true);  // until every node below is set
  // A node with nothing to do is disabled rather than set: a memcpy node cannot copy 0 bytes.
  const auto enable = [&](Node node, bool on) {
    if (!stale && in.enabled[node] == on) return;
    FRAMESTAGE_CUDA_TRY(cudaGraphNodeSetEnabled(in.exec, g.nodes[node], on ? 1U : 0U));
    in.enabled[node] = on;
  };
  const auto set_copy = [&](Node node, const CopyOp& now, const CopyOp& before) {
    if (now.bytes > 0 && (stale || now != before)) {
      FRAMESTAGE_CUDA_TRY(cudaGraphExecMemcpyNodeSetParams1D(
          in.exec, g.nodes[node], now.dst, now.src, now.bytes, cudaMemcpyDefault));
    }
    enable(node, now.bytes > 0);
  };
  const auto set_kernel = [&](Node node, bool gather, const TransferTable& now,
                              const TransferTable& before) {
    if (now.count > 0 && (stale || now != before)) {
      detail::TransferNodeArgs args;
      const cudaKernelNodeParams params =
          detail::transfer_node_params(gather, now.table, now.count, now.staging, args);
      FRAMESTAGE_CUDA_TRY(cudaGraphExecKernelNodeSetParams(in.exec, g.nodes[node], &params));
    }
    enable(node, now.count > 0);
  };
  const TickTransfers& was = in.set;
  set_copy(Node::readback_table, t.readback_table, was.readback_table);
  set_kernel(Node::gather, true, t.gather, was.gather);
  set_copy(Node::readback_copy, t.readback_copy, was.readback_copy);
  set_copy(Node::upload_copy, t.upload_copy, was.upload_copy);
  set_kernel(Node::scatter, false, t.scatter, was.scatter);
  in.set = t;
  in.stale = false;
  FRAMESTAGE_CUDA_TRY(cudaGraphLaunch(in.exec, cuda_stream(stream)));
}

bool CudaBackend::is_capturing(StreamView stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  FRAMESTAGE_CUDA_TRY(cudaStreamIsCapturing(cuda_stream(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}

void CudaBackend::read_device(void* host_dst, const void* device_src, std::size_t bytes) {
  if (bytes == 0) return;
  const DeviceGuard guard(device_);
  FRAMESTAGE_CUDA_TRY(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDefault));
}

}  // namespace framestage
