// The one check the bench programs' CUDA kernels put their runtime calls and launches through.
#pragma once

#include <framestage/error.hpp>

#include <cuda_runtime.h>

#include <string>

namespace framestage::bench {

/// Throws Error(cuda) "<call> failed: <cudaGetErrorName> (<cudaGetErrorString>)" unless `status`
/// is cudaSuccess; `call` names the call, or the launch checked with cudaGetLastError.
inline void check_cuda(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    throw Error(ErrorCategory::cuda, std::string(call) + " failed: " + cudaGetErrorName(status) +
                                         " (" + cudaGetErrorString(status) + ")");
  }
}

}  // namespace framestage::bench
