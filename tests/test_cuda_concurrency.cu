// Many threads staging one frame at once on a GPU: the workload of test_concurrency
// (tests/support/concurrent_workload.hpp) on the CUDA backend, every destination, mirror and
// readback byte checked after every frame. On a GPU it runs the full size by default: 16 threads
// x 100,000 items x 200 frames (FRAMESTAGE_STRESS_THREADS, _ITEMS and _FRAMES set each count);
// FRAMESTAGE_TEST_QUICK=1 (compute-sanitizer) shrinks it to 16 x 500 x 4. Skips without a device.
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>

#include "cuda_test_support.cuh"
#include "support/concurrent_workload.hpp"
#include "support/test_scale.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <string>

namespace framestage {
namespace {

using testing::ConcurrentOptions;
using testing::ConcurrentWorkload;
using testing::scaled_count;

class CudaConcurrency : public testing::CudaFixture<::testing::TestWithParam<std::uint32_t>> {};

TEST_P(CudaConcurrency, EveryByteOfEveryThreadArrives) {
  ConcurrentOptions options;
  options.threads = static_cast<unsigned>(scaled_count("FRAMESTAGE_STRESS_THREADS", 16, 16, 16));
  options.items_per_thread = scaled_count("FRAMESTAGE_STRESS_ITEMS", 100'000, 100'000, 500);
  options.frames = scaled_count("FRAMESTAGE_STRESS_FRAMES", 200, 200, 4);
  options.buffering = GetParam();
  options.seed = testing::announce_seed(20261211);
  ConcurrentWorkload workload(
      backend(),
      [](void* dst, const void* src, std::size_t bytes) {
        FRAMESTAGE_TEST_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
      },
      options);
  const auto figures = workload.run();
  figures.print((std::to_string(options.threads) + " threads x " +
                 std::to_string(options.items_per_thread) + " items, " + backend().describe() +
                 ", " + std::to_string(options.buffering) + " slots")
                    .c_str());
  EXPECT_EQ(figures.frames, options.frames);
  EXPECT_EQ(figures.items, options.frames * options.threads * options.items_per_thread);
  EXPECT_EQ(figures.bad_bytes, 0u);
  EXPECT_EQ(figures.arena_overflows, 0u);
}

INSTANTIATE_TEST_SUITE_P(Buffering, CudaConcurrency, ::testing::Values(2u, 3u),
                         [](const auto& param_info) {
                           return std::to_string(param_info.param) + "_slots";
                         });

}  // namespace
}  // namespace framestage
