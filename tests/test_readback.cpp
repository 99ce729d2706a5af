// Readbacks on the host backend: byte-exact contents for random regions, the ordering a frame's
// readbacks have against uploads, and the errors for a readback used too early, too late or
// with bad arguments.
#include <framestage/coordinator.hpp>
#include <framestage/host_backend.hpp>

#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace framestage {
namespace {

using testing::throws_error;
constexpr std::chrono::milliseconds kShort{20};

Config small_config(std::uint32_t buffering) {
  Config c;
  c.buffering = buffering;
  c.arena_bytes = std::size_t{1} << 20;
  c.upload_arena_bytes = std::size_t{1} << 20;
  c.readback_arena_bytes = std::size_t{1} << 20;
  c.max_uploads_per_frame = 4096;
  c.max_readbacks_per_frame = 4096;
  c.direct_copy_threshold_bytes = 16 << 10;
  c.slot_timeout_ms = 200;
  return c;
}

std::vector<std::byte> random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::vector<std::byte> out(n);
  for (auto& b : out)
    b = static_cast<std::byte>(rng());
  return out;
}

struct Mode {
  std::uint32_t buffering;
  bool deferred;
};
void PrintTo(const Mode& m, std::ostream* os) {
  *os << m.buffering << " slot(s)" << (m.deferred ? ", deferred" : "");
}

class ReadbackModes : public ::testing::TestWithParam<Mode> {
 protected:
  HostBackend backend{HostBackendOptions{GetParam().deferred}};
  Coordinator coordinator{small_config(GetParam().buffering), backend};
};

// Each frame reads back random regions (gathered and direct, overlapping, at any alignment) and
// then uploads new contents over the whole buffer. A frame's readbacks see what the frames
// before it delivered, not its own uploads.
TEST_P(ReadbackModes, RandomRegionsComeBackByteExactAndBeforeTheFramesUploads) {
  std::mt19937_64 rng(1125);
  constexpr std::size_t kBytes = 128 << 10;
  DeviceBuffer<std::byte> device(backend, kBytes);
  std::vector<std::byte> contents = random_bytes(rng, kBytes);
  coordinator.begin_frame();
  coordinator.upload<std::byte>(device.data(), contents);
  coordinator.end_frame().wait();

  struct Pending {
    Readback<std::byte> readback;
    std::vector<std::byte> expected;
  };
  std::vector<std::vector<Pending>> frames;
  for (int f = 0; f < 30; ++f) {
    coordinator.begin_frame();
    std::vector<Pending> pending;
    const std::size_t regions = 1 + rng() % 300;
    for (std::size_t r = 0; r < regions; ++r) {
      const std::size_t bytes = 1 + rng() % (rng() % 10 == 0 ? 40000 : 500);
      const std::size_t offset = rng() % (kBytes - bytes);
      pending.push_back({coordinator.readback<std::byte>(device.data() + offset, bytes),
                         {contents.begin() + static_cast<std::ptrdiff_t>(offset),
                          contents.begin() + static_cast<std::ptrdiff_t>(offset + bytes)}});
    }
    contents = random_bytes(rng, kBytes);
    coordinator.upload<std::byte>(device.data(), contents);
    const FrameTicket ticket = coordinator.end_frame();
    // Deferred: waiting for the uploads first runs them before the copies back, which must
    // not matter (the regions were copied to staging before the uploads on the consumer stream).
    if (f % 2 == 0) ticket.wait();
    frames.push_back(std::move(pending));
    // Check the frame whose slot is about to be reused (and, at the end, all the rest).
    const std::size_t oldest =
        frames.size() - 1 - std::min<std::size_t>(frames.size() - 1, GetParam().buffering - 1);
    for (std::size_t k = oldest; k < frames.size(); ++k) {
      for (std::size_t r = 0; r < frames[k].size(); ++r) {
        const auto got = frames[k][r].readback.get();
        ASSERT_TRUE(std::equal(got.begin(), got.end(), frames[k][r].expected.begin(),
                               frames[k][r].expected.end()))
            << "frame " << k << ", region " << r << " of " << got.size() << " bytes";
      }
    }
  }
  EXPECT_GT(coordinator.stats().readbacks, 0u);
  coordinator.synchronize();  // the last uploads write `device`, which goes first
}

INSTANTIATE_TEST_SUITE_P(Modes, ReadbackModes,
                         ::testing::Values(Mode{1, false}, Mode{2, false}, Mode{3, false},
                                           Mode{1, true}, Mode{3, true}));

TEST(Readback, SmallRegionsAreGatheredLargeOnesCopiedOnTheirOwn) {
  HostBackend backend;
  Coordinator coordinator(small_config(2), backend);
  DeviceBuffer<std::uint32_t> device(backend, 20000);
  std::vector<std::uint32_t> values(20000);
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = static_cast<std::uint32_t>(i * 2654435761u);
  coordinator.begin_frame();
  coordinator.upload<std::uint32_t>(device.data(), values);
  coordinator.end_frame().wait();

  coordinator.begin_frame();
  const auto small = coordinator.readback(device.data() + 3, 5);
  const auto large = coordinator.readback(device.data() + 100, 8000);  // 32000 B: direct
  const auto whole = coordinator.readback(std::span<const std::uint32_t>(device.data(), 20000));
  (void)coordinator.end_frame();
  const FrameStats& f = coordinator.stats().last_frame;
  EXPECT_EQ(f.readbacks, 3u);
  EXPECT_EQ(f.direct_readbacks, 2u);
  EXPECT_EQ(f.readback_bytes, (5u + 8000u + 20000u) * 4);
  EXPECT_TRUE(std::equal(small.get().begin(), small.get().end(), values.begin() + 3));
  EXPECT_TRUE(std::equal(large.get().begin(), large.get().end(), values.begin() + 100));
  EXPECT_TRUE(std::equal(whole.get().begin(), whole.get().end(), values.begin()));
  EXPECT_EQ(whole.size(), 20000u);
  EXPECT_EQ(whole.frame(), 2u);
}

TEST(Readback, ManyThreadsReadBackInOneFrame) {
  HostBackend backend;
  Config config = small_config(3);
  config.max_readbacks_per_frame = 1 << 16;
  config.readback_arena_bytes = 8 << 20;
  Coordinator coordinator(config, backend);
  constexpr std::size_t kWords = 1 << 16;
  DeviceBuffer<std::uint64_t> device(backend, kWords);
  std::vector<std::uint64_t> values(kWords);
  for (std::size_t i = 0; i < kWords; ++i)
    values[i] = i * 0x9e3779b97f4a7c15ULL;
  coordinator.begin_frame();
  coordinator.upload<std::uint64_t>(device.data(), values);
  coordinator.end_frame().wait();

  constexpr int kThreads = 8;
  constexpr std::size_t kPerThread = 2000;
  std::vector<std::vector<std::pair<std::size_t, Readback<std::uint64_t>>>> taken(kThreads);
  coordinator.begin_frame();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t));
      for (std::size_t i = 0; i < kPerThread; ++i) {
        const std::size_t count = 1 + rng() % 16;
        const std::size_t at = rng() % (kWords - count);
        taken[t].emplace_back(at, coordinator.readback(device.data() + at, count));
      }
    });
  }
  for (auto& th : threads)
    th.join();
  (void)coordinator.end_frame();
  EXPECT_EQ(coordinator.stats().last_frame.readbacks, kThreads * kPerThread);
  for (int t = 0; t < kThreads; ++t) {
    for (const auto& [at, readback] : taken[t]) {
      const auto got = readback.get();
      ASSERT_TRUE(
          std::equal(got.begin(), got.end(), values.begin() + static_cast<std::ptrdiff_t>(at)))
          << "thread " << t << ", words from " << at;
    }
  }
}

TEST(Readback, UsedAfterItsSlotWasReusedIsAnErrorNotAnotherFramesBytes) {
  HostBackend backend;
  Coordinator coordinator(small_config(2), backend);
  DeviceBuffer<int> device(backend, 4);
  coordinator.begin_frame();
  const auto first = coordinator.readback(device.data(), 4);
  (void)coordinator.end_frame();
  first.wait();
  coordinator.begin_frame();  // frame 2, the other slot: frame 1's readback is still there
  EXPECT_EQ(first.get().size(), 4u);
  (void)coordinator.end_frame();
  coordinator.begin_frame();  // frame 3 reuses frame 1's slot
  for (const auto& call : {+[](const Readback<int>& r) { (void)r.get(); },
                           +[](const Readback<int>& r) { (void)r.ready(); },
                           +[](const Readback<int>& r) { r.wait(); }}) {
    EXPECT_TRUE(throws_error(ErrorCategory::misuse,
                             "readback of frame 1 is gone: its slot was reused by frame 3",
                             [&] { call(first); }));
  }
  EXPECT_EQ(first.frame(), 1u);
  (void)coordinator.end_frame();
}

TEST(Readback, BeforeItsFrameEndsItIsNotReadyAndCannotBeWaitedFor) {
  HostBackend backend;
  Coordinator coordinator(small_config(2), backend);
  DeviceBuffer<int> device(backend, 4);
  coordinator.begin_frame();
  const auto early = coordinator.readback(device.data(), 4);
  EXPECT_FALSE(early.ready());
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame 1 has not ended", [&] { early.wait(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "has not ended", [&] { (void)early.get(); }));
  (void)coordinator.end_frame();
  EXPECT_NO_THROW(early.wait());
  EXPECT_TRUE(early.ready());
}

TEST(Readback, WaitTimesOutWhileTheDeviceIsStuckThenSucceeds) {
  HostBackend backend{HostBackendOptions{true}};
  Coordinator coordinator(small_config(2), backend);
  DeviceBuffer<int> device(backend, 4);
  coordinator.begin_frame();
  coordinator.upload<int>(device.data(), std::vector<int>{1, 2, 3, 4});
  coordinator.end_frame().wait();
  coordinator.begin_frame();
  const auto readback = coordinator.readback(device.data(), 4);
  (void)coordinator.end_frame();
  backend.set_stalled(true);
  EXPECT_FALSE(readback.ready());
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, "readback of frame 2 not complete after 20 ms",
                           [&] { readback.wait(kShort); }));
  backend.set_stalled(false);
  const auto got = readback.get();
  EXPECT_EQ(std::vector<int>(got.begin(), got.end()), (std::vector<int>{1, 2, 3, 4}));
}

TEST(Readback, BadArgumentsAreRejectedAndChangeNothing) {
  HostBackend backend;
  Config config = small_config(1);
  config.max_readbacks_per_frame = 2;
  config.readback_arena_bytes = 4096;
  Coordinator coordinator(config, backend);
  DeviceBuffer<std::byte> device(backend, 8192);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "readback outside a frame",
                           [&] { (void)coordinator.readback(device.data(), 4); }));
  coordinator.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "readback: null source",
                           [&] { (void)coordinator.readback<int>(nullptr, 4); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "count must be > 0",
                           [&] { (void)coordinator.readback(device.data(), 0); }));
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory,
                           "readback arena overflow: 8000 bytes do not fit; capacity 4096 bytes, 0 "
                           "used this frame; raise readback_arena_bytes",
                           [&] { (void)coordinator.readback(device.data(), 8000); }));
  const auto kept = coordinator.readback(device.data(), 16);
  (void)coordinator.readback(device.data() + 16, 16);
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory,
                           "more than max_readbacks_per_frame (2) readbacks this frame",
                           [&] { (void)coordinator.readback(device.data() + 32, 16); }));
  (void)coordinator.end_frame();
  EXPECT_EQ(coordinator.stats().last_frame.readbacks, 2u);
  EXPECT_EQ(kept.get().size(), 16u);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "an empty Readback",
                           [] { (void)Readback<int>{}.ready(); }));
}

TEST(Readback, GrowPolicyTakesOverflowBlocksAndStillReadsEveryByte) {
  HostBackend backend;
  Config config = small_config(2);
  config.overflow = OverflowPolicy::grow;
  config.readback_arena_bytes = 4096;
  config.max_readbacks_per_frame = 16;
  Coordinator coordinator(config, backend);
  std::mt19937_64 rng(7);
  std::vector<std::byte> values = random_bytes(rng, 64 << 10);
  DeviceBuffer<std::byte> device(backend, values.size());
  coordinator.begin_frame();
  coordinator.upload<std::byte>(device.data(), values);
  coordinator.end_frame().wait();
  coordinator.begin_frame();
  std::vector<std::pair<std::size_t, Readback<std::byte>>> taken;
  for (std::size_t i = 0; i < 100; ++i)
    taken.emplace_back(i * 600, coordinator.readback(device.data() + i * 600, 300));
  (void)coordinator.end_frame();
  for (const auto& [at, readback] : taken) {
    const auto got = readback.get();
    ASSERT_TRUE(
        std::equal(got.begin(), got.end(), values.begin() + static_cast<std::ptrdiff_t>(at)))
        << "region at " << at;
  }
}

}  // namespace
}  // namespace framestage
