#include <framestage/cuda_backend.hpp>
#include <framestage/detail/expects.hpp>

#include "kernels/transfer_kernels.cuh"
#include "runtime/copy_batch_split.hpp"
#include "runtime/cuda_try.hpp"

#include <cudaTypedefs.h>  // the driver's function types only: the driver is found at run time
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
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

void CudaBackend::read_device(void* host_dst, const void* device_src, std::size_t bytes) {
  if (bytes == 0) return;
  const DeviceGuard guard(device_);
  FRAMESTAGE_CUDA_TRY(cudaMemcpy(host_dst, device_src, bytes, cudaMemcpyDefault));
}

}  // namespace framestage
