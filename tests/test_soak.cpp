// The soak (tests/support/soak.hpp) on the host backend: randomised frames over several
// coordinators, every destination checked every frame. CI runs 300 frames per mode;
// FRAMESTAGE_SOAK_FRAMES sets any count and FRAMESTAGE_SOAK_SEED replays a seed
// (FRAMESTAGE_TEST_SCALE=full: 20,000 frames). The GPU variant is test_cuda_soak.
#include <framestage/host_backend.hpp>

#include "support/soak.hpp"
#include "support/test_scale.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace framestage {
namespace {

using testing::env_count;
using testing::scaled_count;
using testing::Soak;
using testing::SoakOptions;

class SoakOnHost : public ::testing::TestWithParam<bool> {};

TEST_P(SoakOnHost, EveryDestinationMatchesItsReferenceEveryFrame) {
  const bool deferred = GetParam();
  SoakOptions options;
  options.frames = scaled_count("FRAMESTAGE_SOAK_FRAMES", 300, 20'000, 40);
  options.seed = env_count("FRAMESTAGE_SOAK_SEED").value_or(deferred ? 20261202 : 20261203);
  std::printf("[ seed     ] %llu (FRAMESTAGE_SOAK_SEED replays it)\n",
              static_cast<unsigned long long>(options.seed));
  HostBackend backend(HostBackendOptions{deferred});
  {
    Soak soak(
        backend,
        [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); },
        options);
    const auto figures = soak.run();
    figures.print(deferred ? "soak, host backend, deferred" : "soak, host backend, immediate");
    EXPECT_EQ(figures.frames, options.frames);
    EXPECT_EQ(figures.bad_bytes, 0u);
    EXPECT_EQ(figures.destinations_checked, figures.frames);
    EXPECT_GT(figures.bytes_checked, 0u);
  }
  EXPECT_EQ(backend.live_allocations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Completion, SoakOnHost, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return std::string(param_info.param ? "deferred" : "immediate");
                         });

}  // namespace
}  // namespace framestage
