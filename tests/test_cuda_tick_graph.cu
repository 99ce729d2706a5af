// A tick as one CUDA graph on a real device (Coordinator::capture_tick, end_frame(TickGraph&)):
// random frames whose item counts, sizes, alignments, order and overlaps change every frame,
// with readbacks, run through one captured graph of eight kernels, checked byte for byte on
// the host (destination, the kernels' snapshot of it, readbacks); node updates across slots and
// frames with nothing to send; a consumer stream under a user's capture refused; work that
// breaks its capture refused. Skips where no CUDA device is present; FRAMESTAGE_TEST_QUICK=1
// shrinks it for compute-sanitizer.
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/tick_graph.hpp>

#include "cuda_test_support.cuh"
#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace framestage {
namespace {

using testing::announce_seed;
using testing::bytes_equal;
using testing::fill_random;
using testing::scaled_frames;
using testing::scaled_items;
using testing::throws_error;
using testing::write_device;

using testing::native;

__global__ void snapshot(const std::byte* src, std::byte* dst, std::size_t bytes) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < bytes;
       i += std::size_t{gridDim.x} * blockDim.x)
    dst[i] = src[i];
}

__global__ void bump(std::uint32_t* counters, int which) {
  if (blockIdx.x == 0 && threadIdx.x == 0) counters[which] += 1;
}

constexpr int kBumpKernels = 7;  // with the snapshot, the eight kernels of a tick

struct Mode {
  UploadStrategy strategy;
  std::uint32_t buffering;
};

std::string mode_name(const ::testing::TestParamInfo<Mode>& info) {
  return std::string(to_string(info.param.strategy)) + "_" + std::to_string(info.param.buffering) +
         "_slots";
}

class CudaTickGraph : public testing::CudaFixture<::testing::TestWithParam<Mode>> {};

TEST_P(CudaTickGraph, EightKernelsSeeEveryFrameByteForByte) {
  const Mode mode = GetParam();
  Config config;
  config.buffering = mode.buffering;
  config.strategy = mode.strategy;
  config.overflow = OverflowPolicy::grow;
  config.upload_arena_bytes = std::size_t{1} << 20;  // large frames grow past it
  Coordinator c(config, backend());
  const std::size_t world_bytes = std::size_t{8} << 20;
  DeviceBuffer<std::byte> world(backend(), world_bytes);
  DeviceBuffer<std::byte> seen(backend(), world_bytes);
  DeviceBuffer<std::uint32_t> counters(backend(), kBumpKernels);
  std::mt19937_64 rng(announce_seed(20261208 + mode.buffering));
  std::vector<std::byte> model(world_bytes);
  fill_random(model, rng);
  write_device(world.data(), model);
  FRAMESTAGE_TEST_CUDA(cudaMemset(counters.data(), 0, kBumpKernels * sizeof(std::uint32_t)));

  TickGraph tick = c.capture_tick([&](StreamView stream) {
    snapshot<<<264, 256, 0, native(stream)>>>(world.data(), seen.data(), world_bytes);
    for (int k = 0; k < kBumpKernels; ++k)
      bump<<<1, 32, 0, native(stream)>>>(counters.data(), k);
  });

  const std::uint64_t frames = scaled_frames(120);
  for (std::uint64_t frame = 0; frame < frames; ++frame) {
    const std::vector<std::byte> before = model;
    c.begin_frame();
    // Every few frames nothing at all, or the same shape as the frame before in the same slot.
    const std::size_t items =
        frame % 7 == 3 ? 0
                       : std::size_t{1} + rng() % scaled_items(frame % 11 == 5 ? 50'000 : 2'000);
    std::vector<std::pair<std::size_t, Readback<std::byte>>> reads;
    const std::size_t read_count = rng() % 40;
    for (std::size_t r = 0; r < read_count; ++r) {
      const std::size_t bytes = 1 + rng() % 5000;
      const std::size_t at = rng() % (world_bytes - bytes);
      reads.emplace_back(at, c.readback(world.data() + at, bytes));
    }
    std::vector<std::byte> data;
    for (std::size_t i = 0; i < items; ++i) {
      const std::size_t bytes =
          rng() % 50 == 0 ? 1 + rng() % (std::size_t{1} << 20) : 1 + rng() % 300;
      const std::size_t at = rng() % (world_bytes - bytes);  // any alignment, overlaps too
      data.resize(bytes);
      fill_random(data, rng);
      c.upload<std::byte>(world.data() + at, data);
      std::memcpy(model.data() + at, data.data(), bytes);
    }
    c.end_frame(tick).wait();
    ASSERT_TRUE(bytes_equal(read_back(world.data(), world_bytes), model)) << "frame " << frame;
    ASSERT_TRUE(bytes_equal(read_back(seen.data(), world_bytes), model))
        << "the captured kernels ran before frame " << frame << " had landed";
    for (auto& [at, r] : reads) {
      const auto got = r.get();
      ASSERT_TRUE(bytes_equal({got.data(), got.size()}, {before.data() + at, got.size()}))
          << "readback at " << at << ", frame " << frame;
    }
  }
  const auto counted = read_back(counters.data(), kBumpKernels);
  for (int k = 0; k < kBumpKernels; ++k)
    EXPECT_EQ(counted[k], frames) << "kernel " << k;
  EXPECT_EQ(tick.launches(), frames);
  EXPECT_EQ(c.stats().tick_graph_frames, frames);
}

INSTANTIATE_TEST_SUITE_P(Modes, CudaTickGraph,
                         ::testing::Values(Mode{UploadStrategy::automatic, 1},
                                           Mode{UploadStrategy::automatic, 3},
                                           Mode{UploadStrategy::copy_scatter, 2},
                                           Mode{UploadStrategy::zero_copy, 2},
                                           Mode{UploadStrategy::direct, 4}),
                         mode_name);

using CudaTickGraphMisuse = testing::CudaTest;

// A user's own capture of the consumer stream would bake one frame's addresses into their
// graph: begin_frame and end_frame refuse it, and the coordinator goes on once it is over.
TEST_F(CudaTickGraphMisuse, ACapturedConsumerStreamIsRefused) {
  Coordinator c(Config{}, backend());
  DeviceBuffer<std::uint32_t> cell(backend(), 1);
  Stream user(backend());
  c.set_consumer_stream(user.view());
  const auto capture = [&] {
    FRAMESTAGE_TEST_CUDA(cudaStreamBeginCapture(native(user.view()), cudaStreamCaptureModeRelaxed));
  };
  const auto end_capture = [&] {
    cudaGraph_t graph = nullptr;
    FRAMESTAGE_TEST_CUDA(cudaStreamEndCapture(native(user.view()), &graph));
    if (graph != nullptr) FRAMESTAGE_TEST_CUDA(cudaGraphDestroy(graph));
  };
  capture();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "begin_frame: the consumer stream is being",
                           [&] { c.begin_frame(); }));
  end_capture();
  c.begin_frame();
  c.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{6});
  capture();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "end_frame: the consumer stream is being",
                           [&] { (void)c.end_frame(); }));
  end_capture();
  c.end_frame().wait();
  EXPECT_EQ(read_back(cell.data(), 1)[0], 6u);
  EXPECT_FALSE(c.failed());
  c.set_consumer_stream(StreamView{});
}

// Work that synchronises inside its capture invalidates it: Error(misuse) naming the CUDA
// error, and the coordinator goes on.
TEST_F(CudaTickGraphMisuse, WorkThatBreaksItsCaptureIsRefused) {
  Coordinator c(Config{}, backend());
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "cudaStreamEndCapture failed", [&] {
    (void)c.capture_tick(
        [](StreamView stream) { static_cast<void>(cudaStreamSynchronize(native(stream))); });
  }));
  EXPECT_FALSE(c.failed());
  DeviceBuffer<std::uint32_t> cell(backend(), 1);
  TickGraph tick = c.capture_tick([](StreamView) {});
  c.begin_frame();
  c.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{8});
  c.end_frame(tick).wait();
  EXPECT_EQ(read_back(cell.data(), 1)[0], 8u);
}

}  // namespace
}  // namespace framestage
