/// @file stencil_kernels.hpp
/// @brief The device side of one step, for the CUDA and host backends alike.
#pragma once

#include "stencil.hpp"

#include <framestage/backend.hpp>

#include <memory>

namespace framestage::mpi_stencil {

/// @brief Enqueues steps of one rank's band.
///
/// **Ordering:** step() enqueues on `stream` after the work already there and returns without
/// waiting.
class StencilKernels {
 public:
  virtual ~StencilKernels() = default;
  /// @brief Writes the band's owned rows of `out` from `in` (owned rows and halos); both hold
  /// band.cells_with_halos() floats of device memory.
  virtual void step(StreamView stream, const float* in, float* out) = 0;
};

/// @brief A CUDA kernel on a CUDA backend, a host task on a HostBackend (which must outlive it).
/// @throws std::invalid_argument for a CUDA backend in a build without CUDA.
[[nodiscard]] std::unique_ptr<StencilKernels> make_stencil_kernels(Backend& backend,
                                                                   const Band& band);

/// @brief The CUDA kernel for `device` (cuda_kernels.cu); defined only where FRAMESTAGE_HAS_CUDA
/// is 1.
[[nodiscard]] std::unique_ptr<StencilKernels> make_cuda_stencil_kernels(int device,
                                                                        const Band& band);

/// @brief CUDA devices visible to this process: 0 in a build without CUDA or without a device.
[[nodiscard]] int cuda_device_count();

}  // namespace framestage::mpi_stencil
