// The simulation demo (bench/sim) at a small size: both tick loops on the host backend (plain and
// deferred) and on a GPU where there is one, each held to the plain C++ reference and to each
// other; and the comparison itself, shown to catch a lagging diagnostic series, a lost upload or
// a one-ulp change where bits must match.
#include "simulation.hpp"

#include <framestage/cuda_backend.hpp>
#include <framestage/host_backend.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace framestage::sim {
namespace {

// Small enough for sanitizer builds; big enough for several heater strips per row, probes on
// the boundary rows' neighbours, and more ticks than any buffering depth.
SimShape small_shape() {
  SimShape shape;
  shape.grid = 40;
  shape.heater_updates = 90;
  shape.probes = 12;
  shape.ticks = 14;
  return shape;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string all;
  for (const std::string& line : lines)
    all += line + "\n";
  return all;
}

enum class Device { host, host_deferred, cuda };

struct Mode {
  Device device;
  std::uint32_t buffering;
};

std::string to_string(const Mode& mode) {
  const char* device = mode.device == Device::host            ? "host"
                       : mode.device == Device::host_deferred ? "host_deferred"
                                                              : "cuda";
  return std::string(device) + "_buffering_" + std::to_string(mode.buffering);
}

void PrintTo(const Mode& mode, std::ostream* os) {
  *os << to_string(mode);
}

std::string mode_name(const ::testing::TestParamInfo<Mode>& info) {
  return to_string(info.param);
}

class SimLoops : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    switch (GetParam().device) {
      case Device::host:
        backend_ = std::make_unique<HostBackend>();
        break;
      case Device::host_deferred:
        // Work runs only when waited for: a loop that read a slot before its copies ran, or
        // reused it too early, would see wrong bytes.
        backend_ = std::make_unique<HostBackend>(HostBackendOptions{.deferred = true});
        break;
      case Device::cuda:
#if FRAMESTAGE_HAS_CUDA
        if (const auto reason = CudaBackend::unavailable_reason(0)) {
          GTEST_SKIP() << "no CUDA device, skipping GPU test: " << *reason;
        }
        backend_ = std::make_unique<CudaBackend>(0);
#else
        GTEST_SKIP() << "this build has no CUDA backend, skipping GPU test";
#endif
        break;
    }
    kernels_ = make_kernels(*backend_, shape_);
  }

  const SimShape shape_ = small_shape();
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<SimKernels> kernels_;
};

TEST_P(SimLoops, FramestageMatchesReference) {
  const RunOutput run = run_framestage(*backend_, *kernels_, shape_, GetParam().buffering);
  const auto problems = compare(run.result, run_reference(shape_), shape_, kAgainstReference);
  EXPECT_TRUE(problems.empty()) << joined(problems);
  // Every tick's strips went as uploads, and every tick's diagnostics and probes came back.
  EXPECT_EQ(run.stats.uploads, shape_.ticks * shape_.heater_updates);
  EXPECT_EQ(run.stats.readbacks, shape_.ticks * (shape_.probes + 1));
}

TEST_P(SimLoops, NaiveMatchesReference) {
  const RunOutput run = run_naive(*backend_, *kernels_, shape_);
  const auto problems = compare(run.result, run_reference(shape_), shape_, kAgainstReference);
  EXPECT_TRUE(problems.empty()) << joined(problems);
}

TEST_P(SimLoops, FramestageMatchesNaiveBitForBit) {
  const RunOutput naive = run_naive(*backend_, *kernels_, shape_);
  const RunOutput staged = run_framestage(*backend_, *kernels_, shape_, GetParam().buffering);
  const auto problems = compare(staged.result, naive.result, shape_, kSameKernels);
  EXPECT_TRUE(problems.empty()) << joined(problems);
}

// The tick as one graph launch (capture_tick, end_frame(TickGraph&)), with the step in several
// kernels: the same results as the naive loop, bit for bit, and one launch a tick.
TEST_P(SimLoops, GraphMatchesNaiveBitForBit) {
  SimShape shape = shape_;
  shape.step_launches = 5;
  const auto kernels = make_kernels(*backend_, shape);
  const RunOutput naive = run_naive(*backend_, *kernels, shape);
  const RunOutput graphed =
      run_framestage(*backend_, *kernels, shape, GetParam().buffering, TickLaunch::graph);
  const auto problems = compare(graphed.result, naive.result, shape, kSameKernels);
  EXPECT_TRUE(problems.empty()) << joined(problems);
  EXPECT_EQ(graphed.stats.tick_graph_frames, shape.ticks);
  EXPECT_EQ(graphed.stats.uploads, shape.ticks * (shape.heater_updates + 2));
  EXPECT_EQ(graphed.stats.mirror_bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, SimLoops,
                         ::testing::Values(Mode{Device::host, 3}, Mode{Device::host, 1},
                                           Mode{Device::host_deferred, 3},
                                           Mode{Device::host_deferred, 2}, Mode{Device::cuda, 3},
                                           Mode{Device::cuda, 2}),
                         mode_name);

// The comparison must catch what a broken loop would produce.
class SimCompare : public ::testing::Test {
 protected:
  const SimShape shape_ = small_shape();
  const SimResult reference_ = run_reference(shape_);
};

TEST_F(SimCompare, AgreesWithItself) {
  EXPECT_TRUE(compare(reference_, reference_, shape_, kSameKernels).empty());
}

TEST_F(SimCompare, CatchesDiagnosticsOneTickLate) {
  // What a readback taken one frame too late (or consumed from the wrong slot) would show.
  SimResult late = reference_;
  for (std::size_t t = late.diagnostics.size() - 1; t > 0; --t)
    late.diagnostics[t] = late.diagnostics[t - 1];
  const auto problems = compare(late, reference_, shape_, kAgainstReference);
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(joined(problems).find("total heat: tick 1:"), std::string::npos) << joined(problems);
}

TEST_F(SimCompare, CatchesProbesOneTickLate) {
  SimResult late = reference_;
  for (std::size_t t = shape_.ticks - 1; t > 0; --t) {
    for (std::uint32_t k = 0; k < shape_.probes; ++k)
      late.probes[t * shape_.probes + k] = late.probes[(t - 1) * shape_.probes + k];
  }
  EXPECT_FALSE(compare(late, reference_, shape_, kAgainstReference).empty());
}

TEST_F(SimCompare, CatchesOneLostHeaterStrip) {
  // What the heaters hold if the last tick's first strip never arrived: its earlier powers.
  SimShape earlier = shape_;
  earlier.ticks = shape_.ticks - 1;
  const SimResult before = run_reference(earlier);
  std::vector<float> powers(SimShape::kMaxStripCells);
  std::size_t first_cell = 0;
  std::uint32_t cells = 0;
  heater_updates(shape_, shape_.ticks - 1, [&](std::size_t first, std::uint32_t count) {
    if (cells == 0) first_cell = first, cells = count;
    return std::span<float>(powers.data(), count);
  });
  SimResult lost = reference_;
  std::copy_n(before.final_heaters.begin() + first_cell, cells,
              lost.final_heaters.begin() + first_cell);
  const auto problems = compare(lost, reference_, shape_, kAgainstReference);
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(joined(problems).find("final heaters"), std::string::npos) << joined(problems);
}

TEST_F(SimCompare, HoldsSameKernelsToTheBit) {
  SimResult nudged = reference_;
  const std::size_t cell = shape_.cells() / 2;
  nudged.final_state[cell] =
      std::bit_cast<float>(std::bit_cast<std::uint32_t>(nudged.final_state[cell]) + 1);
  EXPECT_FALSE(compare(nudged, reference_, shape_, kSameKernels).empty());
  // One ulp is rounding, which the reference comparison allows.
  EXPECT_TRUE(compare(nudged, reference_, shape_, kAgainstReference).empty());
}

TEST_F(SimCompare, CatchesATemperatureOffByMoreThanTheTolerance) {
  SimResult off = reference_;
  off.final_state[3] += 0.01f;
  const auto problems = compare(off, reference_, shape_, kAgainstReference);
  ASSERT_EQ(problems.size(), 1u) << joined(problems);
  EXPECT_NE(problems[0].find("final temperature: cell 3 (x 3, y 0)"), std::string::npos)
      << problems[0];
}

TEST(SimInputs, HeaterStripsAscendWithoutOverlapAndAre16To64Bytes) {
  const SimShape shape = small_shape();
  std::vector<float> sink(SimShape::kMaxStripCells);
  std::size_t end_of_last = 0;
  std::uint32_t strips = 0;
  heater_updates(shape, 5, [&](std::size_t first, std::uint32_t count) {
    EXPECT_GE(first, end_of_last);
    EXPECT_TRUE(count == 4 || count == 8 || count == 12 || count == 16) << count;
    EXPECT_LE(first + count, shape.cells());
    end_of_last = first + count;
    ++strips;
    return std::span<float>(sink.data(), count);
  });
  EXPECT_EQ(strips, shape.heater_updates);
}

TEST(SimInputs, ShapeRejectsStripesTooNarrowForAStrip) {
  SimShape shape = small_shape();
  shape.heater_updates = static_cast<std::uint32_t>(shape.cells() / SimShape::kMaxStripCells + 1);
  EXPECT_THROW(shape.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace framestage::sim
