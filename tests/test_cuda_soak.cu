// The soak (tests/support/soak.hpp) on a GPU: randomised frames over several coordinators (every
// strategy, buffering 1..4, fail and grow), every destination checked every frame against a host
// reference. 2,000 frames by default; FRAMESTAGE_SOAK_FRAMES=100000 for the long run,
// FRAMESTAGE_SOAK_SEED to replay a seed; FRAMESTAGE_TEST_QUICK=1 (compute-sanitizer): 20 frames.
// Skips without a device.
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>

#include "cuda_test_support.cuh"
#include "support/soak.hpp"
#include "support/test_scale.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

namespace framestage {
namespace {

using testing::env_count;
using testing::scaled_count;
using testing::Soak;
using testing::SoakOptions;

using CudaSoak = testing::CudaTest;

TEST_F(CudaSoak, EveryDestinationMatchesItsReferenceEveryFrame) {
  SoakOptions options;
  options.frames = scaled_count("FRAMESTAGE_SOAK_FRAMES", 2'000, 2'000, 20);
  options.seed = testing::announce_seed(env_count("FRAMESTAGE_SOAK_SEED").value_or(20261212));
  options.destination_bytes = 256 << 10;
  options.max_ops = 1'000;
  options.max_item_bytes = 256 << 10;
  Soak soak(
      backend(),
      [](void* dst, const void* src, std::size_t bytes) {
        FRAMESTAGE_TEST_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
      },
      options);
  const auto figures = soak.run();
  figures.print(("soak, " + backend().describe()).c_str());
  EXPECT_EQ(figures.frames, options.frames);
  EXPECT_EQ(figures.bad_bytes, 0u);
  EXPECT_EQ(figures.destinations_checked, figures.frames);
}

}  // namespace
}  // namespace framestage
