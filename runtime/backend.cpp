#include <framestage/backend.hpp>
#include <framestage/host_backend.hpp>

#if FRAMESTAGE_HAS_CUDA
#include <framestage/cuda_backend.hpp>
#endif

namespace framestage {

DefaultBackend make_default_backend(int device) {
#if FRAMESTAGE_HAS_CUDA
  if (auto why = CudaBackend::unavailable_reason(device)) {
    return {std::make_unique<HostBackend>(), *why + "; using host emulation"};
  }
  auto cuda = std::make_unique<CudaBackend>(device);
  std::string reason = cuda->describe();
  return {std::move(cuda), std::move(reason)};
#else
  (void)device;
  return {std::make_unique<HostBackend>(),
          "this build of framestage has no CUDA backend (no nvcc at configure time); using host "
          "emulation"};
#endif
}

}  // namespace framestage
