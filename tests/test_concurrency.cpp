// Many threads staging one frame at once on the host backend: frame_alloc + stage_for_upload,
// upload, reserve_upload and readback from a pool of threads inside each frame, every
// destination, mirror and readback byte checked after every frame. Clean under ThreadSanitizer
// (the CI's thread build runs it). The GPU variant is test_cuda_concurrency.
//
// Sizes (tests/support/test_scale.hpp): CI runs 16 threads x 2,000 items x 20 frames;
// FRAMESTAGE_TEST_SCALE=full runs 16 x 100,000 x 200; FRAMESTAGE_STRESS_THREADS, _ITEMS and
// _FRAMES set each count.
#include <framestage/host_backend.hpp>

#include "support/concurrent_workload.hpp"
#include "support/test_scale.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace framestage {
namespace {

using testing::ConcurrentOptions;
using testing::ConcurrentWorkload;
using testing::scaled_count;

struct Mode {
  const char* name;
  bool deferred;
  std::uint32_t buffering;
  bool tight_arenas;
  bool chunked_arenas = false;
};

class ConcurrentStaging : public ::testing::TestWithParam<Mode> {};

ConcurrentOptions options_from_environment(const Mode& mode) {
  ConcurrentOptions o;
  o.threads = static_cast<unsigned>(scaled_count("FRAMESTAGE_STRESS_THREADS", 16, 16, 16));
  o.items_per_thread = scaled_count("FRAMESTAGE_STRESS_ITEMS", 2'000, 100'000, 500);
  o.frames = scaled_count("FRAMESTAGE_STRESS_FRAMES", mode.tight_arenas ? 10 : 20, 200, 4);
  o.buffering = mode.buffering;
  o.tight_arenas = mode.tight_arenas;
  o.chunked_arenas = mode.chunked_arenas;
  o.seed = 20261201;
  return o;
}

TEST_P(ConcurrentStaging, EveryByteOfEveryThreadArrives) {
  const Mode mode = GetParam();
  const ConcurrentOptions options = options_from_environment(mode);
  std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(options.seed));
  HostBackend backend(HostBackendOptions{mode.deferred});
  {
    ConcurrentWorkload workload(
        backend,
        [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); },
        options);
    const auto figures = workload.run();
    figures.print((std::to_string(options.threads) + " threads x " +
                   std::to_string(options.items_per_thread) + " items, host backend, " + mode.name)
                      .c_str());
    EXPECT_EQ(figures.frames, options.frames);
    EXPECT_EQ(figures.items, options.frames * options.threads * options.items_per_thread);
    EXPECT_EQ(figures.bad_bytes, 0u);
    EXPECT_GT(figures.bytes_checked, 0u);
    if (mode.tight_arenas) {
      // The threads overflowed the arenas together in the first frame of each slot at least.
      EXPECT_GE(figures.arena_overflows, std::min<std::uint64_t>(options.frames, mode.buffering));
    } else {
      EXPECT_EQ(figures.arena_overflows, 0u);
    }
  }
  EXPECT_EQ(backend.live_allocations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Modes, ConcurrentStaging,
                         ::testing::Values(Mode{"immediate_3_slots", false, 3, false},
                                           Mode{"deferred_2_slots", true, 2, false},
                                           Mode{"chunked_2_slots", false, 2, false, true},
                                           Mode{"grow_from_tiny_arenas", false, 2, true}),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace framestage
