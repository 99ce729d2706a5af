// The step on the host backend: next_value over the band, run as a host task in stream order,
// so the halo exchange is exercised end to end without a GPU.
#include "stencil_kernels.hpp"

#include <framestage/cuda_backend.hpp>
#include <framestage/host_backend.hpp>

#include <stdexcept>

namespace framestage::mpi_stencil {
namespace {

class HostStencilKernels final : public StencilKernels {
 public:
  HostStencilKernels(HostBackend& backend, const Band& band) : backend_(backend), band_(band) {}

  void step(StreamView stream, const float* in, float* out) override {
    // "Device" memory is host memory: the task reads it when it runs, in stream order, as a
    // kernel would.
    backend_.launch_host_task(stream, [band = band_, in, out] {
      for (std::uint32_t row = 1; row <= band.rows; ++row) {
        for (std::uint32_t x = 0; x < band.nx; ++x) {
          out[std::size_t{row} * band.nx + x] = next_value(in, band, row, x);
        }
      }
    });
  }

 private:
  HostBackend& backend_;
  Band band_;
};

}  // namespace

std::unique_ptr<StencilKernels> make_stencil_kernels(Backend& backend, const Band& band) {
#if FRAMESTAGE_HAS_CUDA  // CudaBackend is declared everywhere but defined only with CUDA
  if (backend.kind() == BackendKind::cuda) {
    return make_cuda_stencil_kernels(dynamic_cast<CudaBackend&>(backend).device(), band);
  }
#endif
  auto* host = dynamic_cast<HostBackend*>(&backend);
  if (host == nullptr) throw std::invalid_argument("mpi_stencil: unknown host backend type");
  return std::make_unique<HostStencilKernels>(*host, band);
}

#if !FRAMESTAGE_HAS_CUDA
std::unique_ptr<StencilKernels> make_cuda_stencil_kernels(int, const Band&) {
  throw std::invalid_argument(
      "mpi_stencil: this build has no CUDA kernels (no nvcc at configure time)");
}

int cuda_device_count() {
  return 0;
}
#endif

}  // namespace framestage::mpi_stencil
