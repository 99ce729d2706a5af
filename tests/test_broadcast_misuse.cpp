// Broadcast on the host backend, what it refuses and how it fails: construction and calls out
// of order, bad arguments, overflow under either policy, and injected backend faults, checked by
// error category and message; and that it frees everything, also after a failure.
#include <framestage/broadcast.hpp>
#include <framestage/host_backend.hpp>

#include "support/broadcast_frames.hpp"
#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace framestage {
namespace {

using testing::FaultInjectingBackend;
using testing::FaultMode;
using testing::FaultSite;
using testing::kInjectedMarker;
using testing::pattern;
using testing::read_device;
using testing::small_config;
using testing::throws_error;

class BroadcastTest : public ::testing::Test {
 protected:
  HostBackend host0;
  HostBackend host1;
  HostBackend host2;
  std::array<Backend*, 3> devices{&host0, &host1, &host2};
};

TEST_F(BroadcastTest, BadConstructionIsRejected) {
  Config bad = small_config(2);
  bad.buffering = 0;
  EXPECT_TRUE(
      throws_error(ErrorCategory::bad_config, "buffering", [&] { Broadcast cast(bad, devices); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "device list is empty",
                           [&] { Broadcast cast(small_config(2), std::span<Backend* const>{}); }));
  std::array<Backend*, 2> with_null{&host0, nullptr};
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "device backend 1 of 2 is null",
                           [&] { Broadcast cast(small_config(2), with_null); }));
  std::vector<Backend*> too_many(Broadcast::kMaxDevices + 1, &host0);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "at most 16 devices, got 17",
                           [&] { Broadcast cast(small_config(2), too_many); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "host backend 1 is not device 0's instance", [&] {
    Broadcast cast(small_config(2), devices, BroadcastRoute::via_first_device);
  }));
  EXPECT_EQ(host0.live_allocations() + host1.live_allocations() + host2.live_allocations(), 0u);
}

TEST_F(BroadcastTest, CallsOutOfOrderAreMisuse) {
  Broadcast cast(small_config(2), devices);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "end_frame without begin_frame",
                           [&] { (void)cast.end_frame(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame_alloc outside a frame",
                           [&] { (void)cast.frame_alloc<int>(4); }));
  Replicated<int> dst(devices, 4);
  const int value = 1;
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "upload outside a frame",
                           [&] { cast.upload<int>(dst, 0, std::span(&value, 1)); }));
  cast.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame 1 is still open; call end_frame first",
                           [&] { cast.begin_frame(); }));
  (void)cast.end_frame();
  EXPECT_FALSE(cast.failed());
}

TEST_F(BroadcastTest, BadArgumentsAreMisuseAndChangeNothing) {
  Broadcast cast(small_config(2), devices);
  Replicated<int> dst(devices, 8);
  cast.begin_frame();
  auto kept = cast.frame_alloc<int>(4);
  std::iota(kept.begin(), kept.end(), 40);
  cast.stage_for_upload(kept);
  const std::array<int, 2> values{7, 8};
  cast.upload<int>(dst, 0, values);

  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "count must be > 0",
                           [&] { (void)cast.frame_alloc<int>(0); }));
  std::vector<int> not_from_arena(8);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "not an allocation of frame 1", [&] {
    cast.stage_for_upload(FrameSpan<int>(std::span(not_from_arena), cast.current_frame()));
  }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "not an allocation of frame 1", [&] {
    cast.stage_for_upload(FrameSpan<int>(std::span(kept.data(), 1 << 20), kept.frame()));
  }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "device index 3 out of range",
                           [&] { (void)cast.device_ptr(kept, 3); }));
  std::array<int*, 2> two{dst.data(0), dst.data(1)};
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "2 destinations for a broadcast to 3 devices",
                           [&] { cast.upload<int>(std::span<int* const>(two), values); }));
  std::array<int*, 3> one_null{dst.data(0), nullptr, dst.data(2)};
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "null destination for device 1 of 3",
                           [&] { cast.upload<int>(std::span<int* const>(one_null), values); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "elements [7, 9) do not fit",
                           [&] { cast.upload<int>(dst, 7, values); }));
  Replicated<int> other(std::span<Backend* const>(devices.data(), 2), 8);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "the Replicated buffer has 2 devices",
                           [&] { cast.upload<int>(other, 0, values); }));

  const BroadcastTicket ticket = cast.end_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "device index 3 out of range",
                           [&] { (void)ticket.stream(3); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "empty ticket",
                           [&] { (void)BroadcastTicket().ready(); }));
  ticket.wait();
  EXPECT_EQ(cast.last_frame().uploads, 1u);
  for (std::size_t k = 0; k < devices.size(); ++k) {
    EXPECT_EQ(read_device(*devices[k], cast.device_ptr(kept, k), 4),
              (std::vector<int>{40, 41, 42, 43}));
    const auto got = dst.to_host(k);
    EXPECT_EQ(got[0], 7);
    EXPECT_EQ(got[1], 8);
  }
  EXPECT_FALSE(cast.failed());
}

TEST_F(BroadcastTest, SpansOfEarlierFramesAreRejected) {
  Broadcast cast(small_config(2), devices);
  cast.begin_frame();
  auto first = cast.frame_alloc<float>(16);
  cast.stage_for_upload(first);
  (void)cast.end_frame();
  EXPECT_NE(cast.device_ptr(first, 2), nullptr);

  cast.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "the span is from frame 1, but frame 2 is open",
                           [&] { cast.stage_for_upload(first); }));
  EXPECT_NE(cast.device_ptr(first, 1), nullptr);  // double buffering: still valid in frame 2
  (void)cast.end_frame();

  cast.begin_frame();  // frame 3 reuses frame 1's slot
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame 1 is stale: its slot now holds frame 3",
                           [&] { (void)cast.device_ptr(first, 0); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "newest frame is 3", [&] {
    (void)cast.device_ptr(FrameSpan<float>(std::span(first.data(), 1), 9), 0);
  }));
  (void)cast.end_frame();
}

TEST_F(BroadcastTest, OverflowUnderFailKeepsWhatWasAccepted) {
  Config config = small_config(1);
  config.arena_bytes = 64 << 10;
  config.max_uploads_per_frame = 4;
  Broadcast cast(config, devices);
  Replicated<std::uint32_t> dst(devices, 5);
  cast.begin_frame();
  auto kept = cast.frame_alloc<std::byte>(40 << 10);
  std::fill(kept.begin(), kept.end(), std::byte{0x5a});
  cast.stage_for_upload(kept);
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "raise arena_bytes",
                           [&] { (void)cast.frame_alloc<std::byte>(32 << 10); }));
  for (std::uint32_t i = 0; i < 4; ++i)
    cast.upload<std::uint32_t>(dst, i, std::span(&i, 1));
  const std::uint32_t extra = 99;
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "max_uploads_per_frame (4)",
                           [&] { cast.upload<std::uint32_t>(dst, 4, std::span(&extra, 1)); }));
  cast.end_frame().wait();
  for (std::size_t k = 0; k < devices.size(); ++k) {
    const auto got = dst.to_host(k);
    EXPECT_EQ(std::vector<std::uint32_t>(got.begin(), got.begin() + 4),
              (std::vector<std::uint32_t>{0, 1, 2, 3}))
        << "device " << k;
    const auto mirrored = read_device(*devices[k], cast.device_ptr(kept, k), kept.size());
    EXPECT_TRUE(std::all_of(mirrored.begin(), mirrored.end(),
                            [](std::byte b) { return b == std::byte{0x5a}; }))
        << "device " << k;
  }
  EXPECT_FALSE(cast.failed());
}

// Under grow, an overflow block gets a mirror on every device at end_frame, uploads beyond the
// lock-free table still arrive, and the next frame's grown arena is mirrored too.
TEST_F(BroadcastTest, GrowMirrorsOverflowBlocksOnEveryDevice) {
  Config config = small_config(1);
  config.arena_bytes = 64 << 10;
  config.max_uploads_per_frame = 8;
  config.overflow = OverflowPolicy::grow;
  Broadcast cast(config, devices);
  constexpr std::size_t kBig = 300 << 10;
  Replicated<std::byte> dst(devices, 64 << 10);
  std::vector<std::byte> expected(dst.size(), std::byte{0});
  cast.begin_frame();
  cast.upload<std::byte>(dst, 0, expected);
  cast.end_frame().wait();

  for (std::uint64_t f = 1; f <= 3; ++f) {
    cast.begin_frame();
    auto big = cast.frame_alloc<std::byte>(kBig);
    for (std::size_t i = 0; i < kBig; ++i)
      big[i] = pattern(f, i);
    cast.stage_for_upload(big);
    if (f == 1) {
      EXPECT_NE(cast.device_ptr(big, 0), nullptr);
      EXPECT_TRUE(throws_error(ErrorCategory::misuse, "call device_ptr after end_frame",
                               [&] { (void)cast.device_ptr(big, 1); }));
    }
    std::vector<std::byte> item(1024);
    for (std::size_t u = 0; u < 20; ++u) {  // beyond the 8-entry lock-free table
      for (std::size_t i = 0; i < item.size(); ++i)
        item[i] = pattern(f * 100 + u, i);
      cast.upload<std::byte>(dst, u * 2048, item);
      std::copy(item.begin(), item.end(), expected.begin() + static_cast<std::ptrdiff_t>(u * 2048));
    }
    cast.end_frame().wait();
    EXPECT_EQ(cast.last_frame().arena_overflowed, f == 1) << "frame " << f;
    EXPECT_EQ(cast.last_frame().uploads, 20u);
    for (std::size_t k = 0; k < devices.size(); ++k) {
      ASSERT_EQ(dst.to_host(k), expected) << "device " << k << ", frame " << f;
      const auto mirrored = read_device(*devices[k], cast.device_ptr(big, k), kBig);
      for (std::size_t i = 0; i < kBig; ++i)
        ASSERT_EQ(mirrored[i], pattern(f, i)) << "device " << k << ", frame " << f << ", " << i;
    }
  }
}

// A later upload over part of an earlier one wins on every device (the ordered-copy path).
TEST_F(BroadcastTest, OverlappingUploadsLastOneWinsOnEveryDevice) {
  Broadcast cast(small_config(2), devices);
  Replicated<std::uint64_t> dst(devices, 100'000);
  std::vector<std::uint64_t> values(100'000);
  std::iota(values.begin(), values.end(), std::uint64_t{5});
  cast.begin_frame();
  cast.upload<std::uint64_t>(dst.pointers(), values);
  const std::array<std::uint64_t, 3> patch{1, 2, 3};
  cast.upload<std::uint64_t>(dst, 10, patch);
  cast.end_frame().wait();
  EXPECT_EQ(cast.last_frame().devices_with_overlaps, devices.size());
  values[10] = 1;
  values[11] = 2;
  values[12] = 3;
  for (std::size_t k = 0; k < devices.size(); ++k)
    EXPECT_EQ(dst.to_host(k), values) << "device " << k;
}

// An injected CUDA failure on one device: Error(cuda) from the owner call, then failed_state with
// the first error on every later call.
TEST_F(BroadcastTest, ABackendFailureLeavesTheBroadcastFailed) {
  for (const FaultMode mode : {FaultMode::once, FaultMode::sticky}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    HostBackend inner;
    FaultInjectingBackend failing(inner);
    std::array<Backend*, 3> with_failing{&host0, &failing, &host2};
    Broadcast cast(small_config(2), with_failing);
    cast.begin_frame();
    auto first = cast.frame_alloc<int>(8);
    cast.stage_for_upload(first);
    cast.end_frame().wait();

    failing.arm(FaultSite::copy, failing.calls(FaultSite::copy) + 1, mode);
    cast.begin_frame();
    auto span = cast.frame_alloc<int>(8);
    cast.stage_for_upload(span);
    EXPECT_TRUE(throws_error(ErrorCategory::cuda, std::string(kInjectedMarker),
                             [&] { (void)cast.end_frame(); }));
    EXPECT_TRUE(cast.failed());
    Replicated<int> dst(std::span<Backend* const>(devices.data(), 3), 1);
    const int value = 1;
    for (const auto& call : std::vector<std::function<void()>>{
             [&] { cast.begin_frame(); },
             [&] { (void)cast.end_frame(); },
             [&] { (void)cast.frame_alloc<int>(1); },
             [&] { cast.stage_for_upload(span); },
             [&] { cast.upload<int>(dst, 0, std::span(&value, 1)); },
             [&] { (void)cast.device_ptr(first, 0); },
             [&] { cast.synchronize(); },
         }) {
      EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "cudaMemcpyAsync failed", call));
    }
    failing.disarm();
  }
}

// After a sticky error the user has been given Error(cuda): destroying the broadcast meets it
// again while draining and says nothing more; one that has not failed still reports.
TEST_F(BroadcastTest, OnlyTheTeardownOfAHealthyBroadcastReportsAFailure) {
  for (const bool failed_first : {true, false}) {
    SCOPED_TRACE(failed_first ? "failed with a sticky error" : "healthy");
    HostBackend inner;
    FaultInjectingBackend failing(inner);
    std::array<Backend*, 2> with_failing{&host0, &failing};
    auto cast = std::make_unique<Broadcast>(small_config(2), with_failing);
    cast->begin_frame();
    (void)cast->end_frame();
    if (failed_first) {
      failing.arm(FaultSite::event_record, failing.calls(FaultSite::event_record) + 1,
                  FaultMode::sticky);
      EXPECT_TRUE(throws_error(ErrorCategory::cuda, "", [&] { cast->begin_frame(); }));
      ASSERT_TRUE(cast->failed());
    } else {
      failing.arm(FaultSite::event_record, failing.calls(FaultSite::event_record) + 1);
    }
    ::testing::internal::CaptureStderr();
    cast.reset();
    const std::string teardown = ::testing::internal::GetCapturedStderr();
    if (failed_first) {
      EXPECT_EQ(teardown, "");
    } else {
      EXPECT_NE(teardown.find("framestage: broadcast shutdown:"), std::string::npos) << teardown;
    }
    failing.disarm();
  }
}

TEST_F(BroadcastTest, AFailureInBeginFrameLeavesTheBroadcastFailed) {
  HostBackend inner;
  FaultInjectingBackend failing(inner);
  std::array<Backend*, 2> with_failing{&host0, &failing};
  Broadcast cast(small_config(2), with_failing);
  cast.begin_frame();
  (void)cast.end_frame();
  // The next begin_frame records where device 1's readers of frame 1 end.
  failing.arm(FaultSite::event_record, failing.calls(FaultSite::event_record) + 1);
  EXPECT_TRUE(
      throws_error(ErrorCategory::cuda, "cudaEventRecord failed", [&] { cast.begin_frame(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "cudaEventRecord failed",
                           [&] { cast.begin_frame(); }));
}

// end_frame allocates what grown data needs before it enqueues anything: running out there
// leaves the frame open, and the next end_frame delivers it.
TEST_F(BroadcastTest, OutOfMemoryInEndFrameLeavesTheFrameOpen) {
  HostBackend inner;
  FaultInjectingBackend failing(inner);
  std::array<Backend*, 2> with_failing{&host0, &failing};
  Broadcast cast(small_config(2), with_failing);
  Replicated<int> dst(with_failing, 4);
  cast.begin_frame();
  const std::array<int, 4> values{1, 2, 3, 4};
  cast.upload<int>(dst, 0, values);
  // The first frame with uploads makes each device's descriptor table: device 1's device half
  // fails after its pinned half was made.
  failing.arm(FaultSite::device_allocation, failing.calls(FaultSite::device_allocation) + 1);
  EXPECT_TRUE(
      throws_error(ErrorCategory::out_of_memory, "cudaMalloc of", [&] { (void)cast.end_frame(); }));
  EXPECT_TRUE(cast.frame_open());
  EXPECT_FALSE(cast.failed());
  cast.end_frame().wait();
  for (std::size_t k = 0; k < with_failing.size(); ++k)
    EXPECT_EQ(dst.to_host(k), (std::vector<int>{1, 2, 3, 4})) << "device " << k;
}

TEST_F(BroadcastTest, AFailureAtConstructionLeaksNothing) {
  HostBackend inner;
  FaultInjectingBackend failing(inner);
  std::array<Backend*, 2> with_failing{&host0, &failing};
  failing.arm(FaultSite::stream_creation, 3);
  EXPECT_TRUE(throws_error(ErrorCategory::cuda, "cudaStreamCreate failed",
                           [&] { Broadcast cast(small_config(3), with_failing); }));
  EXPECT_EQ(failing.live_streams(), 0);
  EXPECT_EQ(failing.live_events(), 0);
  EXPECT_EQ(inner.live_allocations(), 0u);
  EXPECT_EQ(host0.live_allocations(), 0u);
}

TEST_F(BroadcastTest, DestructionFreesEverything) {
  {
    Config config = small_config(3);
    config.overflow = OverflowPolicy::grow;
    config.arena_bytes = 64 << 10;
    Broadcast cast(config, devices);
    Replicated<int> dst(devices, 16);
    for (int f = 0; f < 5; ++f) {
      cast.begin_frame();
      auto span = cast.frame_alloc<std::byte>(100 << 10);
      cast.stage_for_upload(span);
      const std::array<int, 2> values{f, f};
      cast.upload<int>(dst, 0, values);
      (void)cast.end_frame();
    }
  }
  EXPECT_EQ(host0.live_allocations(), 0u);
  EXPECT_EQ(host1.live_allocations(), 0u);
  EXPECT_EQ(host2.live_allocations(), 0u);
}

}  // namespace
}  // namespace framestage
