// The frame checker (tests/support/frame_checker.hpp) on a GPU: random frames of every shape and
// every planner boundary through the CUDA backend, byte for byte against a host model.
//
//   default (ctest)               2,000 frames; destination 64 MiB, frames to 16 MiB, items to
//                                 4 MiB, 16 threads, more than 2^17 uploads in a frame
//   FRAMESTAGE_TEST_SCALE=full    at least 10,000 frames and 120 s (tools/gpu-check): destination
//                                 2.25 GiB, frames to 512 MiB, items to 64 MiB, more than 2^20
//                                 uploads in a frame, and one upload past 2 GiB (the 32-bit split)
//   FRAMESTAGE_TEST_QUICK=1       40 frames, small sizes, not every theme (compute-sanitizer)
// FRAMESTAGE_CHECK_FRAMES, FRAMESTAGE_CHECK_SEED and FRAMESTAGE_CHECK_FRAME=N (replay frame N)
// override. Skips without a device.
#include <framestage/cuda_backend.hpp>

#include "cuda_test_support.cuh"
#include "support/frame_checker.hpp"
#include "support/test_scale.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

namespace framestage {
namespace {

using testing::CheckerOptions;
using testing::CheckerTheme;
using testing::env_count;
using testing::FrameChecker;
using testing::scale_is_full;
using testing::scale_is_quick;
using testing::scaled_count;

using CudaFrameChecker = testing::CudaTest;

constexpr std::uint64_t kDefaultSeed = 20261207;

testing::CheckerFigures run_checker(Backend& backend, const CheckerOptions& options) {
  FrameChecker checker(
      backend,
      [](void* dst, const void* src, std::size_t bytes) {
        FRAMESTAGE_TEST_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
      },
      options);
  return checker.run();
}

TEST_F(CudaFrameChecker, EveryShapeArrivesByteForByte) {
  CheckerOptions options;
  options.min_frames = scaled_count("FRAMESTAGE_CHECK_FRAMES", 2'000, 10'000, 40);
  options.seed = testing::announce_seed(env_count("FRAMESTAGE_CHECK_SEED").value_or(kDefaultSeed));
  options.replay_frame = env_count("FRAMESTAGE_CHECK_FRAME");
  options.max_threads = 16;
  if (scale_is_quick()) {
    options.max_threads = 4;
    options.every_theme = false;
  } else if (scale_is_full()) {
    options.set_full_scale();
  } else {
    options.world_bytes = std::size_t{64} << 20;
    options.max_frame_bytes = std::size_t{16} << 20;
    options.max_item_bytes = std::size_t{4} << 20;
  }
  const auto figures = run_checker(backend(), options);
  figures.print(("frame checker, " + backend().describe()).c_str());
  EXPECT_EQ(figures.bad_bytes, 0u);
  if (options.replay_frame) return;
  EXPECT_GE(figures.frames, options.min_frames);
  // Every boundary theme ran, and every strategy (quick mode runs too few epochs for that).
  if (options.every_theme) {
    for (std::size_t theme = 0; theme < figures.theme_frames.size(); ++theme) {
      if (static_cast<CheckerTheme>(theme) == CheckerTheme::split_upload && !options.split_upload)
        continue;
      EXPECT_GT(figures.theme_frames[theme], 0u) << testing::kCheckerThemeNames[theme];
    }
    for (const std::uint64_t frames : figures.strategy_frames)
      EXPECT_GT(frames, 0u);
  }
  if (scale_is_full()) {
    EXPECT_GE(figures.seconds, options.min_seconds);
    EXPECT_GT(figures.most_items, std::uint64_t{1} << 20);
    EXPECT_GT(figures.largest_upload, std::uint64_t{1} << 31);
    EXPECT_GE(figures.largest_frame, options.max_frame_bytes);
  }
}

// Frame 257 of the full-scale run (seed 20261207): 16k-56k direct copies of 1 B-16 KiB from up
// to 16 threads. Sent as cudaMemcpyBatchAsync calls of at most 4,096 copies, tiny ones apart,
// it killed the process inside cuMemcpyBatchAsync_v2 (SIGSEGV, H100, driver 580.159.04, session
// 12); the scheduler now sends direct copies one by one.
TEST_F(CudaFrameChecker, TheDirectFrameThatCrashedTheDriverArrives) {
  if (scale_is_quick()) GTEST_SKIP() << "a full-scale frame: not under compute-sanitizer";
  CheckerOptions options;
  options.seed = kDefaultSeed;
  options.set_full_scale();
  options.replay_frame = 257;
  const auto figures = run_checker(backend(), options);
  EXPECT_EQ(figures.bad_bytes, 0u);
  EXPECT_EQ(figures.frames, 1u);
  EXPECT_GT(figures.theme_frames[static_cast<std::size_t>(CheckerTheme::direct_batch)], 0u);
}

}  // namespace
}  // namespace framestage
