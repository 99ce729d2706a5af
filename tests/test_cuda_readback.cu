// Readbacks on the GPU: random regions (gathered and direct, any alignment, 1 to 100,000 per
// frame) come back byte for byte, a frame's readbacks see the frames before it and not its own
// uploads, and a kernel's results read back after it ran. Skips without a CUDA device;
// FRAMESTAGE_TEST_QUICK=1 shrinks the sizes for compute-sanitizer.
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>

#include "cuda_test_support.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace framestage {
namespace {

using testing::announce_seed;
using testing::bytes_equal;
using testing::fill_random;
using testing::scaled_frames;
using testing::scaled_items;

Config readback_config(std::uint32_t buffering, std::size_t regions) {
  Config c;
  c.buffering = buffering;
  c.arena_bytes = std::size_t{1} << 20;
  c.upload_arena_bytes = std::size_t{16} << 20;
  c.readback_arena_bytes = std::size_t{48} << 20;
  c.max_readbacks_per_frame = std::max<std::size_t>(regions, 1024);
  c.direct_copy_threshold_bytes = std::size_t{64} << 10;
  return c;
}

class CudaReadback : public testing::CudaFixture<::testing::TestWithParam<std::uint32_t>> {};

TEST_P(CudaReadback, RandomRegionsComeBackByteExactAndBeforeTheFramesUploads) {
  std::mt19937_64 rng(announce_seed(20261125));
  constexpr std::size_t kBytes = std::size_t{4} << 20;
  Coordinator coordinator(readback_config(GetParam(), 20'000), backend());
  DeviceBuffer<std::byte> device(backend(), kBytes);
  std::vector<std::byte> contents(kBytes);
  fill_random(contents, rng);
  coordinator.begin_frame();
  coordinator.upload<std::byte>(device.data(), contents);
  coordinator.end_frame().wait();

  struct Pending {
    Readback<std::byte> readback;
    std::vector<std::byte> expected;
  };
  std::vector<std::vector<Pending>> frames;
  const std::uint64_t frame_count = scaled_frames(60);
  for (std::uint64_t f = 0; f < frame_count; ++f) {
    coordinator.begin_frame();
    std::vector<Pending> pending;
    const std::size_t regions = 1 + rng() % scaled_items(5000);
    for (std::size_t r = 0; r < regions; ++r) {
      const std::size_t bytes = 1 + rng() % (rng() % 50 == 0 ? 300'000 : 256);
      const std::size_t offset = rng() % (kBytes - bytes);
      pending.push_back({coordinator.readback<std::byte>(device.data() + offset, bytes),
                         {contents.begin() + static_cast<std::ptrdiff_t>(offset),
                          contents.begin() + static_cast<std::ptrdiff_t>(offset + bytes)}});
    }
    fill_random(contents, rng);
    coordinator.upload<std::byte>(device.data(), contents);  // lands after the readbacks
    (void)coordinator.end_frame();
    frames.push_back(std::move(pending));
    // The oldest frame still held: checked before begin_frame reuses its slot.
    const std::size_t oldest = frames.size() - std::min<std::size_t>(frames.size(), GetParam());
    for (const Pending& p : frames[oldest]) {
      const auto got = p.readback.get();
      ASSERT_TRUE(bytes_equal({got.data(), got.size()}, p.expected)) << "frame " << oldest + 2;
    }
  }
  coordinator.synchronize();
}

TEST_P(CudaReadback, HundredThousandSmallRegionsInOneFrame) {
  std::mt19937_64 rng(announce_seed(7));
  const std::size_t regions = scaled_items(100'000);
  Coordinator coordinator(readback_config(GetParam(), regions), backend());
  const std::size_t bytes = regions * 512;
  DeviceBuffer<std::byte> device(backend(), bytes);
  std::vector<std::byte> contents(bytes);
  fill_random(contents, rng);
  testing::write_device(device.data(), contents);
  coordinator.begin_frame();
  std::vector<std::pair<std::size_t, Readback<std::byte>>> taken;
  taken.reserve(regions);
  for (std::size_t i = 0; i < regions; ++i) {
    const std::size_t at = i * 512 + (rng() % 16) * 16 + rng() % 3;
    taken.emplace_back(at, coordinator.readback<std::byte>(device.data() + at, 16 + rng() % 241));
  }
  (void)coordinator.end_frame();
  EXPECT_EQ(coordinator.stats().last_frame.direct_readbacks, 0u);
  for (const auto& [at, readback] : taken) {
    const auto got = readback.get();
    ASSERT_TRUE(bytes_equal({got.data(), got.size()},
                            std::span<const std::byte>(contents).subspan(at, got.size())))
        << "region at " << at;
  }
}

__global__ void square_into(const int* in, long long* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<long long>(in[i]) * in[i];
}

// A tick: upload inputs, a kernel on the ticket's stream, then read its results back in the
// next frame; every tick's results arrive, asynchronously, while later ticks run.
TEST_P(CudaReadback, KernelResultsReadBackInTheNextFrame) {
  constexpr int kN = 4096;
  Coordinator coordinator(readback_config(GetParam(), 1024), backend());
  DeviceBuffer<int> in(backend(), kN);
  DeviceBuffer<long long> out(backend(), kN);
  std::vector<Readback<long long>> results;
  const int ticks = static_cast<int>(scaled_frames(100));
  for (int t = 0; t <= ticks; ++t) {
    coordinator.begin_frame();
    if (t > 0) results.push_back(coordinator.readback(out.data(), kN));  // tick t - 1's squares
    if (results.size() > GetParam()) results.erase(results.begin());
    auto inputs = coordinator.reserve_upload(in.data(), kN);
    for (int i = 0; i < kN; ++i)
      inputs[i] = t * 7 + i;
    const FrameTicket ticket = coordinator.end_frame();
    square_into<<<(kN + 255) / 256, 256, 0, static_cast<cudaStream_t>(ticket.stream().native())>>>(
        in.data(), out.data(), kN);
    FRAMESTAGE_TEST_CUDA(cudaGetLastError());
    if (!results.empty() &&
        results.front().frame() + GetParam() - 1 == coordinator.current_frame()) {
      const Readback<long long>& oldest = results.front();
      const auto got = oldest.get();
      const int tick = static_cast<int>(oldest.frame()) - 2;  // frame t + 1 read tick t
      for (int i = 0; i < kN; ++i) {
        const long long v = tick * 7 + i;
        ASSERT_EQ(got[i], v * v) << "tick " << tick << ", element " << i;
      }
    }
  }
  coordinator.synchronize();
}

INSTANTIATE_TEST_SUITE_P(Buffering, CudaReadback, ::testing::Values(1u, 2u, 3u),
                         [](const ::testing::TestParamInfo<std::uint32_t>& info) {
                           return std::to_string(info.param) + "_slots";
                         });

}  // namespace
}  // namespace framestage
