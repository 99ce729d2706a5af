// The frame checker (tests/support/frame_checker.hpp) on the host backend: random frames of every
// shape, every planner boundary theme, byte for byte against a host model. CI runs 1,500 frames
// per completion mode on an 8 MiB destination, items up to 1 MiB and frames past 2^17 items;
// FRAMESTAGE_CHECK_FRAMES sets the count, FRAMESTAGE_CHECK_SEED the seed and
// FRAMESTAGE_CHECK_FRAME=N replays frame N alone; FRAMESTAGE_TEST_SCALE=full runs the GPU
// run's full scale (CheckerOptions::set_full_scale) on the host backend. The GPU run
// is test_cuda_frame_checker.
#include <framestage/host_backend.hpp>

#include "support/frame_checker.hpp"
#include "support/test_scale.hpp"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace framestage {
namespace {

using testing::CheckerOptions;
using testing::CheckerTheme;
using testing::env_count;
using testing::FrameChecker;
using testing::scaled_count;

class FrameCheckerOnHost : public ::testing::TestWithParam<bool> {};

TEST_P(FrameCheckerOnHost, EveryShapeArrivesByteForByte) {
  const bool deferred = GetParam();
  CheckerOptions options;
  options.min_frames = scaled_count("FRAMESTAGE_CHECK_FRAMES", 1'500, 10'000, 40);
  options.seed = env_count("FRAMESTAGE_CHECK_SEED").value_or(deferred ? 20261207 : 20261208);
  options.replay_frame = env_count("FRAMESTAGE_CHECK_FRAME");
  if (testing::scale_is_full()) options.set_full_scale();
  std::printf("[ seed     ] %llu (FRAMESTAGE_CHECK_SEED replays it)\n",
              static_cast<unsigned long long>(options.seed));
  HostBackend backend(HostBackendOptions{deferred});
  FrameChecker checker(
      backend, [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); },
      options);
  const auto figures = checker.run();
  figures.print(deferred ? "frame checker, host backend, deferred"
                         : "frame checker, host backend, immediate");
  EXPECT_EQ(figures.bad_bytes, 0u);
  if (options.replay_frame) return;
  EXPECT_GE(figures.frames, options.min_frames);
  // Every boundary theme ran, and so did every strategy; a frame went past 2^17 items.
  for (std::size_t theme = 0; theme < figures.theme_frames.size(); ++theme) {
    if (static_cast<CheckerTheme>(theme) == CheckerTheme::split_upload) continue;
    EXPECT_GT(figures.theme_frames[theme], 0u) << testing::kCheckerThemeNames[theme];
  }
  for (const std::uint64_t frames : figures.strategy_frames)
    EXPECT_GT(frames, 0u);
  EXPECT_GT(figures.most_items, std::uint64_t{1} << 17);
  EXPECT_GT(figures.refused, 0u) << "the fill-arena frames must meet a full arena";
  if (testing::scale_is_full()) {
    EXPECT_GT(figures.most_items, std::uint64_t{1} << 20);
    EXPECT_GT(figures.largest_upload, std::uint64_t{1} << 31);
  }
}

// The checker itself: a stray byte beside a write must be found, and only it (a drain that
// compared too little, or the wrong place, would pass every run above).
TEST(FrameCheckerSelfTest, FindsAStrayByteBesideAWrite) {
  CheckerOptions options;
  options.min_frames = 40;
  options.every_theme = false;
  options.sabotage = true;
  HostBackend backend;
  FrameChecker checker(
      backend, [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); },
      options);
  ::testing::TestPartResultArray failures;
  testing::CheckerFigures figures;
  {
    const ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
    figures = checker.run();
  }
  EXPECT_EQ(figures.bad_bytes, 1u);
  ASSERT_EQ(failures.size(), 1);
  const std::string message = failures.GetTestPartResult(0).message();
  EXPECT_NE(message.find("the destination, up to this frame"), std::string::npos) << message;
  EXPECT_NE(message.find("1 of"), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(Completion, FrameCheckerOnHost, ::testing::Values(false, true),
                         [](const auto& param_info) {
                           return std::string(param_info.param ? "deferred" : "immediate");
                         });

}  // namespace
}  // namespace framestage
