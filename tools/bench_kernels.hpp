// Kernels of the benchmark program itself (not of the library). Defined only in CUDA builds.
#pragma once

#include <cstddef>
#include <cstdint>

namespace framestage::bench {

/// Enqueues on `stream` (a cudaStream_t) one kernel that reads `bytes` at `data` and runs for
/// `duration_ns`, standing in for a simulation step. @throws Error(cuda) if the launch fails.
void launch_consume(const void* data, std::size_t bytes, std::uint64_t duration_ns,
                    std::uint32_t* sink, void* stream);

}  // namespace framestage::bench

namespace framestage::bench {
/// Write-combined pinned memory, for the diagnostic comparison in the mirror measurement.
void* allocate_write_combined(std::size_t bytes);
void free_write_combined(void* p) noexcept;
}  // namespace framestage::bench

namespace framestage::bench {
/// CUDA devices present; 0 where the runtime finds none.
int cuda_device_count() noexcept;
/// Lets `device` access `peer`'s memory directly (cudaDeviceEnablePeerAccess) where the topology
/// allows it, so copies between them need not be staged through the host. Returns whether
/// `device` can now reach `peer` directly; true for device == peer.
/// @throws Error(cuda) if enabling fails for another reason than "already enabled".
bool enable_peer_access(int device, int peer);
}  // namespace framestage::bench
