// The tick's kernels on the GPU: the step (heat_cell per thread), the diagnostics reduction, and
// the per-item copies of the naive loop.
#include "cuda_check.hpp"
#include "kernels.hpp"

#include <framestage/cuda_backend.hpp>
#include <framestage/device_buffer.hpp>

#include <cuda_runtime.h>
#include <cub/device/device_reduce.cuh>

#include <cfloat>

namespace framestage::sim {
namespace {

using bench::check_cuda;

cudaStream_t native(StreamView stream) {
  return static_cast<cudaStream_t>(stream.native());
}

constexpr dim3 kStepBlock{32, 8};

__global__ void step_kernel(StepBuffers b, std::uint32_t n, RowBand rows) {
  const std::uint32_t x = blockIdx.x * blockDim.x + threadIdx.x;
  const std::uint32_t y = rows.first + blockIdx.y * blockDim.y + threadIdx.y;
  if (x < n && y < rows.end) {
    b.next_state[std::size_t{y} * n + x] =
        heat_cell(b.state, b.heaters, b.boundary, *b.params, n, x, y);
  }
}

struct ToDiagnostics {
  __host__ __device__ Diagnostics operator()(float t) const { return {t, t, 0.0f}; }
};

struct CombineDiagnostics {
  __host__ __device__ Diagnostics operator()(Diagnostics a, Diagnostics b) const {
    return combine(a, b);
  }
};

class CudaKernels final : public SimKernels {
 public:
  CudaKernels(Backend& backend, const SimShape& shape)
      : n_(shape.grid), bands_(shape.step_launches) {
    // Thrust's reduce hands its result to the host, which would stall every tick; CUB's (the
    // same CCCL algorithm underneath) writes it to device memory in stream order.
    std::size_t temp_bytes = 0;
    check_cuda(
        cub::DeviceReduce::TransformReduce(nullptr, temp_bytes, static_cast<const float*>(nullptr),
                                           static_cast<Diagnostics*>(nullptr), cells(),
                                           CombineDiagnostics{}, ToDiagnostics{}, kInit),
        "cub::DeviceReduce::TransformReduce (size query)");
    temp_ = DeviceBuffer<std::byte>(backend, temp_bytes > 0 ? temp_bytes : 1);
  }

  void step(StreamView stream, const StepBuffers& buffers) override {
    for (std::uint32_t band = 0; band < bands_; ++band) {
      const RowBand rows = row_band(n_, band, bands_);
      const dim3 grid{(n_ + kStepBlock.x - 1) / kStepBlock.x,
                      (rows.end - rows.first + kStepBlock.y - 1) / kStepBlock.y};
      step_kernel<<<grid, kStepBlock, 0, native(stream)>>>(buffers, n_, rows);
      check_cuda(cudaGetLastError(), "step_kernel launch");
    }
  }

  void diagnose(StreamView stream, const float* state, Diagnostics* out) override {
    std::size_t temp_bytes = temp_.size_bytes();
    check_cuda(cub::DeviceReduce::TransformReduce(temp_.data(), temp_bytes, state, out, cells(),
                                                  CombineDiagnostics{}, ToDiagnostics{}, kInit,
                                                  native(stream)),
               "cub::DeviceReduce::TransformReduce");
  }

  void zero(StreamView stream, void* device_dst, std::size_t bytes) override {
    check_cuda(cudaMemsetAsync(device_dst, 0, bytes, native(stream)), "cudaMemsetAsync");
  }

  void copy_to_device_async(void* device_dst, const void* pinned_src, std::size_t bytes,
                            StreamView stream) override {
    check_cuda(
        cudaMemcpyAsync(device_dst, pinned_src, bytes, cudaMemcpyHostToDevice, native(stream)),
        "cudaMemcpyAsync (host to device)");
  }

  void copy_to_host_sync(void* pinned_dst, const void* device_src, std::size_t bytes,
                         StreamView stream) override {
    check_cuda(
        cudaMemcpyAsync(pinned_dst, device_src, bytes, cudaMemcpyDeviceToHost, native(stream)),
        "cudaMemcpyAsync (device to host)");
    check_cuda(cudaStreamSynchronize(native(stream)), "cudaStreamSynchronize");
  }

 private:
  static constexpr Diagnostics kInit{0.0, -FLT_MAX, 0.0f};

  [[nodiscard]] std::size_t cells() const noexcept { return std::size_t{n_} * n_; }

  std::uint32_t n_;
  std::uint32_t bands_;
  DeviceBuffer<std::byte> temp_;
};

}  // namespace

std::unique_ptr<SimKernels> make_cuda_kernels(Backend& backend, const SimShape& shape) {
  return std::make_unique<CudaKernels>(backend, shape);
}

}  // namespace framestage::sim
