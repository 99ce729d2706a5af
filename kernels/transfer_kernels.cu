/// @file transfer_kernels.cu
/// @brief The scatter and gather kernels: one copy loop, run in either direction over a
/// TransferDescriptor table.
#include "kernels/transfer_kernels.cuh"

#include "runtime/cuda_try.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace framestage::detail {
namespace {

// One warp per descriptor: items are 16 B to a few KiB, so a launch or a block per item would
// cost more than its copy, and a thread per item would access memory uncoalesced. A warp moves
// its item as 32 lanes x up to 16 B: one coalesced 512-byte access per step.
constexpr unsigned kWarpSize = 32;
constexpr unsigned kWarpsPerBlock = 8;
constexpr unsigned kThreadsPerBlock = kWarpSize * kWarpsPerBlock;
// gridDim.x's limit; the kernels stride over whatever a grid this size does not cover.
constexpr std::size_t kMaxBlocks = 0x7fffffff;
// Words each lane loads before it stores, so a warp keeps several requests in flight; that
// matters most on the zero-copy path, where every read crosses PCIe.
constexpr unsigned kLoadsInFlight = 4;

// The kernels read a descriptor as one uint4: x|y = target, z = staging_granule, w = bytes.
static_assert(offsetof(TransferDescriptor, target) == 0);
static_assert(offsetof(TransferDescriptor, staging_granule) == 8);
static_assert(offsetof(TransferDescriptor, bytes) == 12);
static_assert(kStagingGranule == 16, "staging positions are 16-byte aligned");

enum class Direction { scatter, gather };

// Scatter reads staging and gather writes it.
template <Direction D>
using StagingPointer = std::conditional_t<D == Direction::scatter, const std::byte*, std::byte*>;

template <bool ReadOnly, class Word>
__device__ __forceinline__ Word load(const Word* src) {
  // The non-coherent path is valid only for data no thread writes during the kernel.
  if constexpr (ReadOnly) {
    return __ldg(src);
  } else {
    return *src;
  }
}

// Copies `bytes` from `src` to `dst` with the warp's 32 lanes: `Word`-sized accesses first, then
// the last bytes % sizeof(Word) one per lane. Both addresses must be sizeof(Word)-aligned.
template <bool ReadOnly, class Word>
__device__ void warp_copy(std::byte* dst, const std::byte* src, std::uint32_t bytes,
                          unsigned lane) {
  auto* dst_words = reinterpret_cast<Word*>(dst);
  const auto* src_words = reinterpret_cast<const Word*>(src);
  const std::size_t words = bytes / sizeof(Word);
  constexpr std::size_t kStride = kWarpSize;

  std::size_t i = lane;
  for (; i + (kLoadsInFlight - 1) * kStride < words; i += kLoadsInFlight * kStride) {
    Word values[kLoadsInFlight];
#pragma unroll
    for (unsigned k = 0; k < kLoadsInFlight; ++k)
      values[k] = load<ReadOnly>(src_words + i + k * kStride);
#pragma unroll
    for (unsigned k = 0; k < kLoadsInFlight; ++k)
      dst_words[i + k * kStride] = values[k];
  }
  for (; i < words; i += kStride)
    dst_words[i] = load<ReadOnly>(src_words + i);

  // Fewer than sizeof(Word) <= 16 bytes remain, so one byte per lane finishes the item.
  const std::size_t copied = words * sizeof(Word);
  if (lane < bytes - copied) {
    const auto* src_bytes = reinterpret_cast<const unsigned char*>(src);
    reinterpret_cast<unsigned char*>(dst)[copied + lane] =
        load<ReadOnly>(src_bytes + copied + lane);
  }
}

// Runs one descriptor with the calling warp. The staging side is 16-byte aligned, so the
// widest access the target's alignment allows is safe on both sides.
template <Direction D>
__device__ void run_descriptor(const TransferDescriptor* entry, StagingPointer<D> staging,
                               unsigned lane) {
  // Every lane loads the same 16 bytes: one broadcast transaction, read-only for the kernel.
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(entry));
  const std::uint64_t target = raw.x | (static_cast<std::uint64_t>(raw.y) << 32);
  const std::uint32_t bytes = raw.w;
  auto* target_ptr = reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(target));
  const auto staging_ptr = staging + static_cast<std::size_t>(raw.z) * kStagingGranule;

  std::byte* dst = nullptr;
  const std::byte* src = nullptr;
  if constexpr (D == Direction::scatter) {
    dst = target_ptr;
    src = staging_ptr;
  } else {
    dst = staging_ptr;
    src = target_ptr;
  }
  // Only the scatter's source (staging) is known to be unwritten while the kernel runs.
  constexpr bool kReadOnly = D == Direction::scatter;

  const unsigned misalignment = static_cast<unsigned>(target) & 15u;
  const unsigned width = misalignment == 0 ? 16u : (misalignment & (0u - misalignment));
  switch (width) {
    case 16:
      warp_copy<kReadOnly, uint4>(dst, src, bytes, lane);
      break;
    case 8:
      warp_copy<kReadOnly, uint2>(dst, src, bytes, lane);
      break;
    case 4:
      warp_copy<kReadOnly, unsigned int>(dst, src, bytes, lane);
      break;
    case 2:
      warp_copy<kReadOnly, unsigned short>(dst, src, bytes, lane);
      break;
    default:
      warp_copy<kReadOnly, unsigned char>(dst, src, bytes, lane);
      break;
  }
}

template <Direction D>
__global__ void __launch_bounds__(kThreadsPerBlock)
    transfer_kernel(const TransferDescriptor* table, std::size_t count, StagingPointer<D> staging) {
  const unsigned lane = threadIdx.x % kWarpSize;
  const std::size_t first_warp =
      (static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarpSize;
  const std::size_t warps = static_cast<std::size_t>(gridDim.x) * (blockDim.x / kWarpSize);
  for (std::size_t item = first_warp; item < count; item += warps)
    run_descriptor<D>(table + item, staging, lane);
}

struct LaunchConfig {
  unsigned blocks;
  unsigned threads_per_block;
};

// The one place the launch shape is decided: a warp per descriptor while the grid allows it.
LaunchConfig transfer_launch_config(std::size_t count) {
  const std::size_t blocks = count / kWarpsPerBlock + (count % kWarpsPerBlock != 0 ? 1 : 0);
  return {static_cast<unsigned>(std::min(blocks, kMaxBlocks)), kThreadsPerBlock};
}

template <Direction D>
void launch_transfer(const TransferDescriptor* table, std::size_t count, StagingPointer<D> staging,
                     cudaStream_t stream) {
  // An empty grid is an invalid launch, not a no-op.
  if (count == 0) return;
  const LaunchConfig config = transfer_launch_config(count);
  transfer_kernel<D><<<config.blocks, config.threads_per_block, 0, stream>>>(table, count, staging);
  FRAMESTAGE_CUDA_TRY(cudaGetLastError());
}

}  // namespace

cudaKernelNodeParams transfer_node_params(bool gather, const TransferDescriptor* table,
                                          std::size_t count, std::byte* staging,
                                          TransferNodeArgs& args) {
  args.table = table;
  args.count = count;
  args.staging = staging;
  // Both kernels take (table, count, staging); the staging pointer's constness does not change
  // how the argument is passed.
  args.values = {&args.table, &args.count, &args.staging};
  const LaunchConfig config = transfer_launch_config(std::max<std::size_t>(count, 1));
  cudaKernelNodeParams params{};
  params.func = gather ? reinterpret_cast<void*>(&transfer_kernel<Direction::gather>)
                       : reinterpret_cast<void*>(&transfer_kernel<Direction::scatter>);
  params.gridDim = dim3(config.blocks);
  params.blockDim = dim3(config.threads_per_block);
  params.sharedMemBytes = 0;
  params.kernelParams = args.values.data();
  params.extra = nullptr;
  return params;
}

void launch_scatter(const TransferDescriptor* table, std::size_t count, const std::byte* staging,
                    cudaStream_t stream) {
  launch_transfer<Direction::scatter>(table, count, staging, stream);
}

void launch_gather(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                   cudaStream_t stream) {
  launch_transfer<Direction::gather>(table, count, staging, stream);
}

}  // namespace framestage::detail
