// The tick's "kernels" on the host backend: the same heat_cell as the CUDA kernel, run as host
// tasks in stream order, so the framestage loop is exercised end to end without a GPU.
#include "kernels.hpp"

#include <framestage/host_backend.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace framestage::sim {
namespace {

class HostKernels final : public SimKernels {
 public:
  HostKernels(HostBackend& backend, const SimShape& shape)
      : backend_(backend), n_(shape.grid), bands_(shape.step_launches) {}

  void step(StreamView stream, const StepBuffers& b) override {
    const std::uint32_t n = n_;
    // Host "device" memory is host memory: the task reads the buffers when it runs, in stream
    // order, exactly as a kernel would.
    for (std::uint32_t band = 0; band < bands_; ++band) {
      backend_.launch_host_task(stream, [n, b, rows = row_band(n, band, bands_)] {
        const StepParams params = *b.params;
        for (std::uint32_t y = rows.first; y < rows.end; ++y) {
          for (std::uint32_t x = 0; x < n; ++x) {
            b.next_state[std::size_t{y} * n + x] =
                heat_cell(b.state, b.heaters, b.boundary, params, n, x, y);
          }
        }
      });
    }
  }

  void diagnose(StreamView stream, const float* state, Diagnostics* out) override {
    const std::size_t cells = std::size_t{n_} * n_;
    backend_.launch_host_task(stream, [cells, state, out] {
      Diagnostics d{0.0, state[0], 0.0f};
      for (std::size_t c = 0; c < cells; ++c) {
        d.total_heat += state[c];
        d.peak_temperature = std::max(d.peak_temperature, state[c]);
      }
      *out = d;
    });
  }

  void zero(StreamView stream, void* device_dst, std::size_t bytes) override {
    backend_.launch_host_task(stream, [device_dst, bytes] { std::memset(device_dst, 0, bytes); });
  }

  void copy_to_device_async(void* device_dst, const void* pinned_src, std::size_t bytes,
                            StreamView stream) override {
    backend_.copy_async(device_dst, pinned_src, bytes, stream);
  }

  void copy_to_host_sync(void* pinned_dst, const void* device_src, std::size_t bytes,
                         StreamView stream) override {
    backend_.copy_async(pinned_dst, device_src, bytes, stream);
    backend_.synchronize(stream);
  }

 private:
  HostBackend& backend_;
  std::uint32_t n_;
  std::uint32_t bands_;
};

}  // namespace

std::unique_ptr<SimKernels> make_kernels(Backend& backend, const SimShape& shape) {
  if (backend.kind() == BackendKind::cuda) return make_cuda_kernels(backend, shape);
  auto* host = dynamic_cast<HostBackend*>(&backend);
  if (host == nullptr) throw std::invalid_argument("sim: unknown host backend type");
  return std::make_unique<HostKernels>(*host, shape);
}

#if !FRAMESTAGE_HAS_CUDA
std::unique_ptr<SimKernels> make_cuda_kernels(Backend&, const SimShape&) {
  throw std::invalid_argument("sim: this build has no CUDA kernels (no nvcc at configure time)");
}
#endif

}  // namespace framestage::sim
