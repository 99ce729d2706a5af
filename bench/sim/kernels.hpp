/// @file kernels.hpp
/// @brief The device side of one tick, behind one interface for the CUDA and host backends.
#pragma once

#include "heat.hpp"

#include <framestage/backend.hpp>

#include <cstddef>
#include <memory>

namespace framestage::sim {

/// @brief Device addresses one step reads and writes.
struct StepBuffers {
  const float* state;        ///< n * n temperatures at the start of the tick
  float* next_state;         ///< n * n temperatures after it
  const float* heaters;      ///< n * n heater powers
  const float* boundary;     ///< 4n boundary temperatures (kBoundarySides)
  const StepParams* params;  ///< one StepParams in device memory
};

/// @brief The kernels of a tick and, for the naive loop, the copies a user would write by hand.
///
/// **Ordering:** every member enqueues on `stream` after the work already there, and returns
/// without waiting, except copy_to_host_sync.
class SimKernels {
 public:
  virtual ~SimKernels() = default;

  /// @brief Enqueues one step of the whole grid: next_state from state, heaters and boundary,
  /// in SimShape::step_launches launches of a band of rows each.
  virtual void step(StreamView stream, const StepBuffers& buffers) = 0;
  /// @brief Enqueues the reduction of `state` (n * n cells) into `*out` (device memory).
  virtual void diagnose(StreamView stream, const float* state, Diagnostics* out) = 0;

  /// @brief Enqueues zeroing `bytes` of device memory at `device_dst` (for setting a run up).
  virtual void zero(StreamView stream, void* device_dst, std::size_t bytes) = 0;

  /// @brief One async copy of `bytes` from pinned host memory to device memory.
  virtual void copy_to_device_async(void* device_dst, const void* pinned_src, std::size_t bytes,
                                    StreamView stream) = 0;
  /// @brief Copies `bytes` from device memory to pinned host memory after the work on `stream`,
  /// and waits for it.
  virtual void copy_to_host_sync(void* pinned_dst, const void* device_src, std::size_t bytes,
                                 StreamView stream) = 0;
};

/// @brief The kernels for `backend`'s kind: host tasks on a HostBackend, CUDA kernels on a
/// CudaBackend. The backend must outlive them.
/// @throws std::invalid_argument for a CUDA backend in a build without CUDA.
[[nodiscard]] std::unique_ptr<SimKernels> make_kernels(Backend& backend, const SimShape& shape);

/// @brief The CUDA kernels (cuda_kernels.cu); defined only where FRAMESTAGE_HAS_CUDA is 1.
[[nodiscard]] std::unique_ptr<SimKernels> make_cuda_kernels(Backend& backend,
                                                            const SimShape& shape);

}  // namespace framestage::sim
