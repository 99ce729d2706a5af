/// @file transfer_kernels.cuh
/// @brief Launch wrappers for the scatter and gather kernels (transfer_kernels.cu).
///
/// Host-only declarations: the CUDA backend, a .cpp built by the host compiler, includes this.
#pragma once

#include <framestage/backend.hpp>

#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>

namespace framestage::detail {

/// @brief Enqueues the scatter of a `count`-entry descriptor table: each entry copies `bytes`
/// from `staging + 16 * staging_granule` to `target`.
///
/// @param table   descriptors a kernel can read: device memory or mapped pinned memory.
/// @param count   entries in `table`; 0 enqueues nothing.
/// @param staging base of the staging buffer, 16-byte aligned; device or mapped pinned memory.
/// @param stream  the stream the kernel is ordered on.
/// @throws Error(cuda) if the launch fails.
///
/// **Ordering:** runs after everything enqueued on `stream` before it; the table and staging
/// bytes must stay untouched, and targets unread, until then.
/// Targets must not overlap each other or the staging buffer.
void launch_scatter(const TransferDescriptor* table, std::size_t count, const std::byte* staging,
                    cudaStream_t stream);

/// @brief Enqueues the gather of a `count`-entry descriptor table: each entry copies `bytes`
/// from `target` to `staging + 16 * staging_granule`.
///
/// Parameters, errors and ordering as launch_scatter, with staging written and targets read.
void launch_gather(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                   cudaStream_t stream);

/// @brief Storage for a transfer kernel node's arguments: cudaKernelNodeParams points into it,
/// so it must outlive the call that takes those parameters.
struct TransferNodeArgs {
  const TransferDescriptor* table = nullptr;
  std::size_t count = 0;
  std::byte* staging = nullptr;
  std::array<void*, 3> values{};
};

/// @brief Kernel node parameters for the scatter (or, with `gather`, the gather) of a
/// `count`-entry table: the launch that launch_scatter or launch_gather would enqueue, for a
/// graph node. A count of 0 still gets one block, which does nothing: a node cannot have an
/// empty grid (the tick graph disables such a node instead of running it).
[[nodiscard]] cudaKernelNodeParams transfer_node_params(bool gather,
                                                        const TransferDescriptor* table,
                                                        std::size_t count, std::byte* staging,
                                                        TransferNodeArgs& args);

}  // namespace framestage::detail
