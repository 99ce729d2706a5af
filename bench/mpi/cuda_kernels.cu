// The step on the GPU: one thread per owned cell, next_value as on the host.
#include "cuda_check.hpp"
#include "stencil_kernels.hpp"

#include <cuda_runtime.h>

namespace framestage::mpi_stencil {
namespace {

using bench::check_cuda;

constexpr dim3 kBlock{128, 4};

__global__ void step_kernel(const float* __restrict__ in, float* __restrict__ out, Band band) {
  const std::uint32_t x = blockIdx.x * blockDim.x + threadIdx.x;
  const std::uint32_t row = blockIdx.y * blockDim.y + threadIdx.y + 1;
  if (x < band.nx && row <= band.rows) {
    out[std::size_t{row} * band.nx + x] = next_value(in, band, row, x);
  }
}

class CudaStencilKernels final : public StencilKernels {
 public:
  CudaStencilKernels(int device, const Band& band) : device_(device), band_(band) {}

  void step(StreamView stream, const float* in, float* out) override {
    // The backend restores the caller's device after each call; the launch must go to its one.
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    const dim3 grid{(band_.nx + kBlock.x - 1) / kBlock.x, (band_.rows + kBlock.y - 1) / kBlock.y};
    step_kernel<<<grid, kBlock, 0, static_cast<cudaStream_t>(stream.native())>>>(in, out, band_);
    check_cuda(cudaGetLastError(), "step_kernel launch");
  }

 private:
  int device_;
  Band band_;
};

}  // namespace

std::unique_ptr<StencilKernels> make_cuda_stencil_kernels(int device, const Band& band) {
  return std::make_unique<CudaStencilKernels>(device, band);
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no device is an answer here, not an error to carry forward
    return 0;
  }
  return count;
}

}  // namespace framestage::mpi_stencil
