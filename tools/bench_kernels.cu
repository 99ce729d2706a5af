// A kernel that stands in for a simulation step of known length, for the pipelining benchmark.
#include "bench_kernels.hpp"

#include <cuda_runtime_api.h>

#include <framestage/error.hpp>

#include <string>

namespace framestage::bench {
namespace {

__device__ std::uint64_t global_ns() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// One block reads the frame (so the kernel really depends on the data) and holds the SM for
// `duration_ns`, like a compute step of that length.
__global__ void consume_kernel(const std::uint32_t* data, std::size_t words,
                               std::uint64_t duration_ns, std::uint32_t* sink) {
  const std::uint64_t start = global_ns();
  std::uint32_t sum = 0;
  for (std::size_t i = threadIdx.x; i < words; i += blockDim.x * 64)
    sum += data[i];
  while (global_ns() - start < duration_ns) {
  }
  if (sum == 0xffffffffu) *sink = sum;  // keeps the reads; practically never taken
}

}  // namespace

void launch_consume(const void* data, std::size_t bytes, std::uint64_t duration_ns,
                    std::uint32_t* sink, void* stream) {
  consume_kernel<<<1, 256, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const std::uint32_t*>(data), bytes / sizeof(std::uint32_t), duration_ns, sink);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw Error(ErrorCategory::cuda,
                std::string("consume_kernel launch failed: ") + cudaGetErrorName(status));
  }
}

}  // namespace framestage::bench

namespace framestage::bench {

void* allocate_write_combined(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t status =
      cudaHostAlloc(&p, bytes, cudaHostAllocWriteCombined | cudaHostAllocPortable);
  if (status != cudaSuccess) {
    throw Error(ErrorCategory::out_of_memory,
                std::string("cudaHostAlloc (write-combined) failed: ") + cudaGetErrorName(status));
  }
  return p;
}

void free_write_combined(void* p) noexcept {
  (void)cudaFreeHost(p);
}

}  // namespace framestage::bench

namespace framestage::bench {

int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

bool enable_peer_access(int device, int peer) {
  if (device == peer) return true;
  int can = 0;
  cudaError_t status = cudaDeviceCanAccessPeer(&can, device, peer);
  if (status != cudaSuccess || can == 0) {
    (void)cudaGetLastError();
    return false;
  }
  int previous = 0;
  (void)cudaGetDevice(&previous);
  status = cudaSetDevice(device);
  if (status == cudaSuccess) status = cudaDeviceEnablePeerAccess(peer, 0);
  (void)cudaSetDevice(previous);
  if (status == cudaErrorPeerAccessAlreadyEnabled) {
    (void)cudaGetLastError();
    return true;
  }
  if (status != cudaSuccess) {
    throw Error(ErrorCategory::cuda, "cudaDeviceEnablePeerAccess(" + std::to_string(peer) +
                                         ") on device " + std::to_string(device) +
                                         " failed: " + cudaGetErrorName(status));
  }
  return true;
}

}  // namespace framestage::bench
