// Coordinator::capture_tick and end_frame(TickGraph&) on the host backend, which emulates graph
// replay: the captured work runs after each frame's uploads and before the next frame's, with
// the frame's own contents and item counts every time; readbacks in the graph read what was
// there before the frame's uploads; what the graph's fixed nodes cannot hold (mirrors, overflow
// blocks, combined overlaps, more readbacks than the main block) still arrives; and misuse,
// including a consumer stream under capture, is an Error that names it and changes nothing.
// The random frames of tests/support/frame_checker.hpp run a third of their epochs as tick
// graphs too, on the host (test_frame_checker) and on a GPU (test_cuda_frame_checker).
#include <framestage/coordinator.hpp>
#include <framestage/host_backend.hpp>
#include <framestage/tick_graph.hpp>

#include "support/coordinator_modes.hpp"
#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

namespace framestage {
namespace {

using testing::throws_error;

class TickGraphs : public ::testing::TestWithParam<testing::CompletionMode> {
 protected:
  HostBackend backend{HostBackendOptions{GetParam().deferred}};
  Coordinator coordinator{testing::small_coordinator_config(GetParam().buffering), backend};
};

// A tick as users write it: upload this frame's values, then "kernels" (host tasks on the
// captured stream) that read them. The work sees every frame's own values, in order, although
// the number of uploads, their sizes and their places change every frame.
TEST_P(TickGraphs, CapturedWorkSeesEveryFramesUploads) {
  constexpr std::size_t kCells = 4096;
  DeviceBuffer<std::uint32_t> state(backend, kCells);
  std::vector<std::uint32_t> model(kCells, 0);
  backend.launch_host_task(coordinator.consumer_stream(), [p = state.data()] {
    std::memset(p, 0, kCells * sizeof(std::uint32_t));
  });
  std::vector<std::uint64_t> seen_sums;
  TickGraph tick = coordinator.capture_tick([&](StreamView stream) {
    backend.launch_host_task(stream, [&, p = state.data()] {
      seen_sums.push_back(std::accumulate(p, p + kCells, std::uint64_t{0}));
    });
  });
  EXPECT_TRUE(seen_sums.empty()) << "captured work ran at capture";
  std::mt19937_64 rng(7);
  std::vector<std::uint64_t> want_sums;
  for (std::uint32_t frame = 1; frame <= 24; ++frame) {
    coordinator.begin_frame();
    const std::size_t items = frame % 5 == 0 ? 0 : 1 + rng() % 300;
    for (std::size_t i = 0; i < items; ++i) {
      const std::size_t at = rng() % kCells;
      const std::size_t count = 1 + rng() % std::min<std::size_t>(64, kCells - at);
      std::vector<std::uint32_t> values(count);
      for (auto& v : values)
        v = static_cast<std::uint32_t>(rng());
      coordinator.upload<std::uint32_t>(state.data() + at, values);
      std::copy(values.begin(), values.end(), model.begin() + static_cast<std::ptrdiff_t>(at));
    }
    const FrameTicket ticket = coordinator.end_frame(tick);
    want_sums.push_back(std::accumulate(model.begin(), model.end(), std::uint64_t{0}));
    ticket.wait();
    EXPECT_EQ(state.to_host(), model) << "frame " << frame;
    EXPECT_TRUE(coordinator.stats().last_frame.tick_graph);
  }
  coordinator.synchronize();
  EXPECT_EQ(seen_sums, want_sums);
  EXPECT_EQ(tick.launches(), 24u);
  EXPECT_EQ(coordinator.stats().tick_graph_frames, 24u);
  const auto json = nlohmann::json::parse(coordinator.stats().to_json());
  EXPECT_EQ(json["tick_graph_frames"], 24);
  EXPECT_EQ(json["last_frame"]["tick_graph"], true);
}

// Frames with and without the graph alternate on one coordinator, and both arrive.
TEST_P(TickGraphs, MixesWithPlainFrames) {
  DeviceBuffer<std::uint64_t> cell(backend, 1);
  std::vector<std::uint64_t> seen;
  TickGraph tick = coordinator.capture_tick([&](StreamView stream) {
    backend.launch_host_task(stream, [&, p = cell.data()] { seen.push_back(*p); });
  });
  for (std::uint64_t frame = 1; frame <= 9; ++frame) {
    coordinator.begin_frame();
    coordinator.upload<std::uint64_t>(cell.data(), std::vector<std::uint64_t>{frame * 11});
    const FrameTicket ticket =
        frame % 3 == 0 ? coordinator.end_frame() : coordinator.end_frame(tick);
    ticket.wait();
    EXPECT_EQ(cell.to_host()[0], frame * 11);
  }
  coordinator.synchronize();
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{11, 22, 44, 55, 77, 88}));
  EXPECT_EQ(coordinator.stats().tick_graph_frames, 6u);
}

// In the graph, a frame's readbacks read what was there before its uploads, and readbacks of
// more than the main block's room (they go before the launch) still do.
TEST_P(TickGraphs, ReadbacksReadBeforeTheFramesUploads) {
  constexpr std::size_t kCells = 512;
  DeviceBuffer<std::uint32_t> state(backend, kCells);
  coordinator.upload<std::uint32_t>(state.data(), std::vector<std::uint32_t>(kCells, 0));
  TickGraph tick = coordinator.capture_tick([](StreamView) {});
  for (std::uint32_t frame = 1; frame <= 8; ++frame) {
    coordinator.begin_frame();
    std::vector<Readback<std::uint32_t>> reads;
    for (std::size_t i = 0; i < kCells; i += 64)
      reads.push_back(coordinator.readback(state.data() + i, 64));
    coordinator.upload<std::uint32_t>(state.data(), std::vector<std::uint32_t>(kCells, frame));
    (void)coordinator.end_frame(tick);
    for (const auto& r : reads) {
      const auto got = r.get();
      EXPECT_EQ(std::vector<std::uint32_t>(got.begin(), got.end()),
                std::vector<std::uint32_t>(64, frame - 1))
          << "frame " << frame;
    }
  }
}

// Mirrors, overflow blocks (grow), overlapping uploads and full arenas: the parts the graph's
// fixed nodes cannot hold go before the launch, and every byte still lands where end_frame()
// would put it.
TEST_P(TickGraphs, WhatTheGraphCannotHoldStillArrives) {
  Config config = testing::small_coordinator_config(GetParam().buffering);
  config.overflow = OverflowPolicy::grow;
  config.upload_arena_bytes = 4096;
  config.max_uploads_per_frame = 16;
  config.readback_arena_bytes = 4096;
  config.max_readbacks_per_frame = 8;
  Coordinator c(config, backend);
  constexpr std::size_t kBytes = 64 << 10;
  DeviceBuffer<std::byte> world(backend, kBytes);
  std::vector<std::byte> model(kBytes, std::byte{0});
  backend.launch_host_task(c.consumer_stream(), [p = world.data()] { std::memset(p, 0, kBytes); });
  std::vector<std::byte> probe(kBytes);
  TickGraph tick = c.capture_tick(
      [&](StreamView stream) { backend.copy_async(probe.data(), world.data(), kBytes, stream); });
  std::mt19937_64 rng(11);
  for (int frame = 0; frame < 30; ++frame) {
    const std::vector<std::byte> before = model;
    c.begin_frame();
    auto mirror = c.frame_alloc<std::uint32_t>(100);
    for (std::size_t i = 0; i < mirror.size(); ++i)
      mirror[i] = static_cast<std::uint32_t>(frame * 1000 + i);
    c.stage_for_upload(mirror);
    std::vector<std::pair<std::size_t, Readback<std::byte>>> reads;
    for (int r = 0; r < 12; ++r) {
      const std::size_t at = rng() % (kBytes - 700);
      reads.emplace_back(at, c.readback(world.data() + at, 1 + rng() % 700));
    }
    const int uploads = 1 + static_cast<int>(rng() % 60);
    for (int u = 0; u < uploads; ++u) {
      const std::size_t bytes = 1 + rng() % (rng() % 4 == 0 ? 6000 : 200);
      const std::size_t at = rng() % (kBytes - bytes);
      std::vector<std::byte> data(bytes);
      for (auto& b : data)
        b = static_cast<std::byte>(rng());
      c.upload<std::byte>(world.data() + at, data);
      std::memcpy(model.data() + at, data.data(), bytes);
    }
    const FrameTicket ticket = c.end_frame(tick);
    ticket.wait();
    ASSERT_EQ(world.to_host(), model) << "frame " << frame;
    EXPECT_EQ(probe, model) << "the captured work ran before frame " << frame << " had landed";
    for (auto& [at, r] : reads) {
      const auto got = r.get();
      ASSERT_EQ(std::memcmp(got.data(), before.data() + at, got.size()), 0)
          << "readback at " << at << ", frame " << frame;
    }
    std::vector<std::uint32_t> mirrored(mirror.size());
    backend.read_device(mirrored.data(), c.device_ptr(mirror), mirror.size_bytes());
    for (std::size_t i = 0; i < mirror.size(); ++i)
      ASSERT_EQ(mirrored[i], static_cast<std::uint32_t>(frame * 1000 + i));
  }
  // Overlaps were resolved, and overflow blocks were scattered besides the graph's scatter.
  EXPECT_GT(c.stats().merged_overlaps + c.stats().superseded_uploads, 0u);
  EXPECT_GT(c.stats().scatter_launches, c.stats().tick_graph_frames);
}

// The graph outlives frames in flight: destroying it leaves them to finish, byte for byte.
TEST_P(TickGraphs, FramesInFlightOutliveTheGraph) {
  DeviceBuffer<std::uint32_t> cell(backend, 1);
  std::uint32_t seen = 0;
  FrameTicket ticket;
  {
    TickGraph tick = coordinator.capture_tick([&](StreamView stream) {
      backend.launch_host_task(stream, [&, p = cell.data()] { seen = *p; });
    });
    TickGraph moved = std::move(tick);
    EXPECT_FALSE(tick.valid());  // NOLINT(bugprone-use-after-move): moved-from is empty
    coordinator.begin_frame();
    coordinator.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{77});
    ticket = coordinator.end_frame(moved);
  }
  ticket.wait();
  coordinator.synchronize();
  EXPECT_EQ(seen, 77u);
}

TEST_P(TickGraphs, MisuseIsAnErrorThatChangesNothing) {
  DeviceBuffer<std::uint32_t> cell(backend, 1);
  TickGraph tick = coordinator.capture_tick([](StreamView) {});
  TickGraph empty;
  Coordinator other(testing::small_coordinator_config(1), backend);
  TickGraph others = other.capture_tick([](StreamView) {});

  coordinator.begin_frame();
  coordinator.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{5});
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "capture_tick inside frame 1",
                           [&] { (void)coordinator.capture_tick([](StreamView) {}); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "the tick graph is empty",
                           [&] { (void)coordinator.end_frame(empty); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "captured by another coordinator",
                           [&] { (void)coordinator.end_frame(others); }));
  EXPECT_TRUE(coordinator.frame_open());  // the frame and its upload are still there
  coordinator.end_frame(tick).wait();
  EXPECT_EQ(cell.to_host()[0], 5u);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "end_frame without begin_frame",
                           [&] { (void)coordinator.end_frame(tick); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "empty work function",
                           [&] { (void)coordinator.capture_tick({}); }));
  EXPECT_EQ(tick.launches(), 1u);
  EXPECT_FALSE(coordinator.failed());
}

// What the work throws reaches the caller, and the coordinator goes on; work that breaks its
// capture (an event record on the captured stream, which the host backend does not emulate)
// is misuse.
TEST_P(TickGraphs, WorkThatThrowsOrBreaksItsCaptureCapturesNothing) {
  EXPECT_THROW((void)coordinator.capture_tick([](StreamView) { throw std::runtime_error("x"); }),
               std::runtime_error);
  Event event(backend);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "stream under capture", [&] {
    (void)coordinator.capture_tick(
        [&](StreamView stream) { backend.record_event(event.native(), stream); });
  }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "synchronize on a stream under capture", [&] {
    (void)coordinator.capture_tick([&](StreamView stream) { backend.synchronize(stream); });
  }));
  EXPECT_FALSE(coordinator.failed());
  DeviceBuffer<std::uint32_t> cell(backend, 1);
  coordinator.begin_frame();
  coordinator.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{9});
  coordinator.end_frame().wait();
  EXPECT_EQ(cell.to_host()[0], 9u);
}

INSTANTIATE_TEST_SUITE_P(Modes, TickGraphs, testing::all_completion_modes(),
                         testing::completion_mode_name);

// A frame's transfers cannot be captured as they are: with the consumer stream under a user's
// capture (cudaStreamBeginCapture on it, emulated), begin_frame and an upload between frames
// refuse and open nothing.
TEST(TickGraph, BeginFrameRefusesACapturedConsumerStream) {
  HostBackend inner;
  testing::FaultInjectingBackend backend(inner);
  Coordinator c(testing::small_coordinator_config(2), backend);
  DeviceBuffer<std::uint32_t> cell(backend, 1);
  backend.emulate_capture(true);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse,
                           "begin_frame: the consumer stream is being captured",
                           [&] { c.begin_frame(); }));
  EXPECT_TRUE(
      throws_error(ErrorCategory::misuse, "upload between frames: the consumer stream",
                   [&] { c.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{1}); }));
  EXPECT_FALSE(c.frame_open());
  EXPECT_EQ(c.current_frame(), 0u);
  EXPECT_FALSE(c.failed());
  backend.emulate_capture(false);
  c.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{3});
  c.synchronize();
  EXPECT_EQ(cell.to_host()[0], 3u);
}

// A capture that begins inside a frame: end_frame refuses, the frame stays open with what it
// holds, and ends once the capture is over.
TEST(TickGraph, EndFrameRefusesACapturedConsumerStream) {
  HostBackend inner;
  testing::FaultInjectingBackend backend(inner);
  Coordinator c(testing::small_coordinator_config(2), backend);
  DeviceBuffer<std::uint32_t> cell(backend, 1);
  TickGraph tick = c.capture_tick([](StreamView) {});
  c.begin_frame();
  c.upload<std::uint32_t>(cell.data(), std::vector<std::uint32_t>{42});
  backend.emulate_capture(true);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse,
                           "end_frame: the consumer stream is being "
                           "captured",
                           [&] { (void)c.end_frame(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "capture_tick() and run it with end_frame(tick)",
                           [&] { (void)c.end_frame(tick); }));
  EXPECT_TRUE(c.frame_open());
  backend.emulate_capture(false);
  c.end_frame().wait();
  EXPECT_EQ(cell.to_host()[0], 42u);
  EXPECT_FALSE(c.failed());
}

// A backend failure in the graph's capture or launch is Error(cuda) and fails the coordinator.
TEST(TickGraph, BackendFailuresFailTheCoordinator) {
  for (const testing::FaultSite site :
       {testing::FaultSite::graph_capture, testing::FaultSite::graph_launch,
        testing::FaultSite::capture_query}) {
    SCOPED_TRACE(std::string(testing::to_string(site)));
    HostBackend inner;
    testing::FaultInjectingBackend faulty(inner);
    Coordinator c(testing::small_coordinator_config(2), faulty);
    faulty.arm(site, 1);
    const auto run = [&] {
      TickGraph tick = c.capture_tick([](StreamView) {});
      c.begin_frame();
      (void)c.end_frame(tick);
    };
    EXPECT_TRUE(throws_error(ErrorCategory::cuda, std::string(testing::cuda_call_of(site)), run));
    EXPECT_TRUE(c.failed());
    EXPECT_TRUE(
        throws_error(ErrorCategory::failed_state, "injected fault", [&] { c.begin_frame(); }));
  }
}

}  // namespace
}  // namespace framestage
