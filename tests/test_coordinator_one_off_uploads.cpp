// Coordinator::upload and upload_slice between frames: each is a one-off frame of its own
// (begin_frame, the upload, end_frame), so memkit-co's quick start ("upload_slice, then the frame
// loop") works as its users write it. Bytes arrive exactly, in order on the consumer stream
// (checked with deferred completion), the frame number and stats say what happened, the other
// staging calls stay misuse between frames, and a busy slot, a full arena and a failed backend
// behave as documented in coordinator.hpp.
#include <framestage/coordinator.hpp>
#include <framestage/host_backend.hpp>

#include "support/coordinator_modes.hpp"
#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace framestage {
namespace {

using testing::FaultInjectingBackend;
using testing::FaultMode;
using testing::FaultSite;
using testing::throws_error;

Config small_config(std::uint32_t buffering) {
  Config c = testing::small_coordinator_config(buffering);
  c.direct_copy_threshold_bytes = 4096;  // some uploads go as direct copies
  return c;
}

std::vector<std::byte> pattern(std::size_t bytes, std::uint32_t salt) {
  std::vector<std::byte> out(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    out[i] = static_cast<std::byte>((i * 7 + salt * 131 + 3) & 0xff);
  return out;
}

class OneOffUploads : public ::testing::TestWithParam<testing::CompletionMode> {
 protected:
  HostBackend backend{HostBackendOptions{GetParam().deferred}};
  Coordinator coordinator{small_config(GetParam().buffering), backend};
};

// memkit-co's quick start, in framestage: upload_slice with no frame open ("upload and forget"),
// then the frame workflow, whose kernels read both the slice and the frame's mirror.
TEST_P(OneOffUploads, MemkitQuickStartShape) {
  const std::vector<float> vertices{0.0f, 0.5f, 1.0f, -0.5f, -0.5f, 1.0f, 0.5f, -0.5f, 1.0f};
  DeviceBuffer<float> gpu_buffer = coordinator.upload_slice<float>(vertices);

  std::vector<float> seen_vertices;
  std::vector<std::array<float, 4>> seen_frame_data;
  for (int tick = 0; tick < 5; ++tick) {
    coordinator.begin_frame();
    auto frame_data = coordinator.frame_alloc<std::array<float, 4>>(1);
    frame_data[0] = {1.0f, float(tick), 0.0f, 1.0f};
    coordinator.stage_for_upload(frame_data);
    const FrameTicket ticket = coordinator.end_frame();
    // Kernels on the ticket's stream: one reads the slice, one the frame's mirror.
    const float* slice = gpu_buffer.data();
    const std::array<float, 4>* mirror = coordinator.device_ptr(frame_data);
    backend.launch_host_task(ticket.stream(), [&, slice, n = vertices.size()] {
      seen_vertices.assign(slice, slice + n);
    });
    backend.launch_host_task(ticket.stream(), [&, mirror] { seen_frame_data.push_back(*mirror); });
  }
  coordinator.synchronize();
  EXPECT_EQ(seen_vertices, vertices);
  ASSERT_EQ(seen_frame_data.size(), 5u);
  for (int tick = 0; tick < 5; ++tick)
    EXPECT_EQ(seen_frame_data[tick][1], float(tick)) << "tick " << tick;
  EXPECT_EQ(gpu_buffer.to_host(), vertices);
}

// Sizes around the scatter, zero-copy and direct-copy paths, and odd ones; upload() into an
// existing buffer at odd offsets and upload_slice, before any frame and between frames.
TEST_P(OneOffUploads, BytesArriveExactly) {
  constexpr std::size_t kBytes = 64 * 1024;
  DeviceBuffer<std::byte> dst(backend, kBytes);
  std::vector<std::byte> want(kBytes, std::byte{0});
  std::memset(dst.data(), 0, kBytes);  // host backend: "device" memory is host memory
  std::uint32_t salt = 1;
  std::size_t offset = 0;
  for (const std::size_t bytes : {std::size_t{1}, std::size_t{3}, std::size_t{16}, std::size_t{255},
                                  std::size_t{4095}, std::size_t{4096}, std::size_t{20'000}}) {
    const std::vector<std::byte> src = pattern(bytes, salt++);
    coordinator.upload<std::byte>(dst.data() + offset, src);
    std::copy(src.begin(), src.end(), want.begin() + static_cast<std::ptrdiff_t>(offset));
    offset += bytes + 5;
    if (salt % 2 == 0) {  // a frame between some of them
      coordinator.begin_frame();
      (void)coordinator.end_frame();
    }
    const DeviceBuffer<std::byte> slice = coordinator.upload_slice<std::byte>(src);
    coordinator.synchronize();
    EXPECT_EQ(slice.to_host(), src) << bytes << " bytes";
  }
  EXPECT_EQ(dst.to_host(), want);
}

// Ordering on the consumer stream, with deferred completion: a kernel enqueued before a one-off
// upload sees the old bytes, one after it the new ones, and one-off uploads after each other
// land in call order, each after the kernels between them.
TEST_P(OneOffUploads, OrderedOnTheConsumerStream) {
  DeviceBuffer<std::uint64_t> state(backend, 1);
  *state.data() = 0;  // host backend: "device" memory is host memory
  const std::uint64_t* device = state.data();
  std::vector<std::uint64_t> seen;
  const auto kernel = [&] {
    backend.launch_host_task(coordinator.consumer_stream(),
                             [device, &seen] { seen.push_back(*device); });
  };
  kernel();
  for (std::uint64_t v = 1; v <= 6; ++v) {
    coordinator.upload<std::uint64_t>(state.data(), std::span(&v, 1));
    kernel();
    if (v == 3) {  // a frame in the middle, writing the same state
      coordinator.begin_frame();
      const std::uint64_t in_frame = 100;
      coordinator.upload<std::uint64_t>(state.data(), std::span(&in_frame, 1));
      (void)coordinator.end_frame();
      kernel();
    }
  }
  coordinator.synchronize();
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1, 2, 3, 100, 4, 5, 6}));
}

// Ordering rule 2 across one-off frames: a kernel enqueued after a one-off upload that reads the
// last frame's mirror runs before that mirror is overwritten, whichever slot the one-off took.
// Waiting for each frame's ticket runs its copies (deferred mode) but not the kernels before it
// on the consumer stream, so a slot reused before its kernel ran shows in what the kernel saw.
TEST_P(OneOffUploads, KernelsReadingTheLastFrameMayFollowAOneOffUpload) {
  DeviceBuffer<std::uint64_t> side(backend, 1);
  std::vector<std::uint64_t> seen;
  for (std::uint64_t f = 1; f <= 6; ++f) {
    coordinator.begin_frame();
    auto value = coordinator.frame_alloc<std::uint64_t>(1);
    value[0] = f;
    coordinator.stage_for_upload(value);
    coordinator.end_frame().wait();
    const std::uint64_t* mirror = coordinator.device_ptr(value);
    coordinator.upload<std::uint64_t>(side.data(), std::span(&f, 1));  // a one-off frame
    backend.launch_host_task(coordinator.consumer_stream(),
                             [mirror, &seen] { seen.push_back(*mirror); });
  }
  coordinator.synchronize();
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6}));
}

INSTANTIATE_TEST_SUITE_P(Buffering, OneOffUploads, testing::all_completion_modes(),
                         testing::completion_mode_name);

class OneOffUploadTest : public ::testing::Test {
 protected:
  HostBackend backend;
};

// A one-off upload is a frame: the number advances by one, stats count it and mark it, and a
// frame opened by hand afterwards is the next number and is not marked. Uploads inside a frame
// open nothing, and an empty upload between frames opens no frame.
TEST_F(OneOffUploadTest, FrameNumberAndStatsCountTheOneOffFrame) {
  Coordinator c(small_config(2), backend);
  DeviceBuffer<int> dst(backend, 4);
  const std::vector<int> values{1, 2, 3, 4};
  EXPECT_EQ(c.current_frame(), 0u);
  c.upload<int>(dst.data(), values);
  EXPECT_EQ(c.current_frame(), 1u);
  EXPECT_FALSE(c.frame_open());
  EXPECT_EQ(c.stats().frames, 1u);
  EXPECT_EQ(c.stats().frames_opened_by_upload, 1u);
  EXPECT_EQ(c.stats().uploads, 1u);
  EXPECT_TRUE(c.stats().last_frame.opened_by_upload);
  EXPECT_EQ(c.stats().last_frame.frame, 1u);
  EXPECT_EQ(c.stats().last_frame.uploads, 1u);
  EXPECT_EQ(c.stats().last_frame.scattered_bytes + c.stats().last_frame.direct_bytes,
            sizeof(int) * values.size());

  c.upload<int>(dst.data(), std::span<const int>{});  // nothing to deliver: no frame
  EXPECT_EQ(c.current_frame(), 1u);
  EXPECT_EQ(c.stats().frames, 1u);

  c.begin_frame();
  EXPECT_EQ(c.current_frame(), 2u);
  c.upload<int>(dst.data(), values);  // inside a frame: part of it, as always
  const DeviceBuffer<int> slice = c.upload_slice<int>(values);
  EXPECT_EQ(c.current_frame(), 2u);
  EXPECT_TRUE(c.frame_open());
  c.end_frame().wait();
  EXPECT_EQ(c.stats().frames, 2u);
  EXPECT_EQ(c.stats().frames_opened_by_upload, 1u);
  EXPECT_FALSE(c.stats().last_frame.opened_by_upload);
  EXPECT_EQ(c.stats().last_frame.uploads, 2u);
  EXPECT_EQ(slice.to_host(), values);

  const auto json = nlohmann::json::parse(c.stats().to_json());
  EXPECT_EQ(json["frames_opened_by_upload"], 1);
  EXPECT_EQ(json["last_frame"]["opened_by_upload"], false);
}

// Only upload and upload_slice open a frame of their own: the calls whose space or spans the
// caller fills or uses after the call stay misuse between frames, and misuse in an upload opens
// no frame.
TEST_F(OneOffUploadTest, OtherStagingCallsStayMisuseBetweenFrames) {
  Coordinator c(small_config(2), backend);
  DeviceBuffer<int> dst(backend, 4);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "reserve_upload outside a frame",
                           [&] { (void)c.reserve_upload(dst.data(), 4); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "readback outside a frame",
                           [&] { (void)c.readback(dst.data(), 4); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame_alloc outside a frame",
                           [&] { (void)c.frame_alloc<int>(4); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "end_frame without begin_frame",
                           [&] { (void)c.end_frame(); }));
  const int value = 7;
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "null destination",
                           [&] { c.upload<int>(nullptr, std::span(&value, 1)); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "null source", [&] {
    c.upload<int>(dst.data(), std::span<const int>(static_cast<const int*>(nullptr), 1));
  }));
  EXPECT_EQ(c.current_frame(), 0u);
  EXPECT_EQ(c.stats().frames, 0u);
  EXPECT_FALSE(c.frame_open());

  // A span of a frame that a one-off upload followed is still refused as another frame's.
  c.begin_frame();
  auto span = c.frame_alloc<int>(1);
  (void)c.end_frame();
  c.upload<int>(dst.data(), std::span(&value, 1));
  EXPECT_TRUE(
      throws_error(ErrorCategory::misuse, "outside a frame", [&] { c.stage_for_upload(span); }));
}

// A one-off upload takes the next slot as begin_frame does: on a hung device it times out after
// slot_timeout_ms with nothing uploaded and no frame open, and may be retried.
TEST_F(OneOffUploadTest, WaitsForItsSlotAndTimesOutRecoverably) {
  HostBackend deferred(HostBackendOptions{true});
  Config config = small_config(1);
  config.slot_timeout_ms = 1;
  Coordinator c(config, deferred);
  DeviceBuffer<std::uint32_t> dst(deferred, 1);
  const std::uint32_t first = 42;
  c.upload<std::uint32_t>(dst.data(), std::span(&first, 1));
  deferred.set_stalled(true);  // the device hangs
  const std::uint32_t second = 43;
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, "slot 0 (frame 1) still busy",
                           [&] { c.upload<std::uint32_t>(dst.data(), std::span(&second, 1)); }));
  EXPECT_FALSE(c.frame_open());
  EXPECT_FALSE(c.failed());
  EXPECT_EQ(c.current_frame(), 1u);
  EXPECT_EQ(c.stats().frames, 1u);
  deferred.set_stalled(false);
  c.upload<std::uint32_t>(dst.data(), std::span(&second, 1));
  EXPECT_EQ(c.current_frame(), 2u);
  c.synchronize();
  EXPECT_EQ(dst.to_host()[0], 43u);
}

// Under "fail", an upload larger than the upload arena throws out_of_memory; the one-off frame
// it opened ends empty, and the coordinator goes on.
TEST_F(OneOffUploadTest, AnUploadThatDoesNotFitEndsItsFrameEmpty) {
  Config config = small_config(2);
  config.upload_arena_bytes = 64 * 1024;
  Coordinator c(config, backend);
  DeviceBuffer<std::byte> dst(backend, 256 * 1024);
  const std::vector<std::byte> big = pattern(256 * 1024, 9);
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "upload arena",
                           [&] { c.upload<std::byte>(dst.data(), big); }));
  EXPECT_FALSE(c.frame_open());
  EXPECT_FALSE(c.failed());
  EXPECT_EQ(c.current_frame(), 1u);
  EXPECT_EQ(c.stats().last_frame.uploads, 0u);
  const std::vector<std::byte> small = pattern(1000, 10);
  c.upload<std::byte>(dst.data(), small);
  c.synchronize();
  const auto got = dst.to_host();
  EXPECT_TRUE(std::equal(small.begin(), small.end(), got.begin()));
}

// A backend failure in a one-off frame leaves the coordinator failed, as in end_frame; every
// later call, a one-off upload included, throws failed_state with the first error.
TEST_F(OneOffUploadTest, ABackendFailureLeavesTheCoordinatorFailed) {
  FaultInjectingBackend faulty(backend);
  Coordinator c(small_config(2), faulty);
  DeviceBuffer<int> dst(faulty, 4);
  const std::vector<int> values{1, 2, 3, 4};
  faulty.reset_counts();
  faulty.arm(FaultSite::event_record, 1, FaultMode::sticky);
  EXPECT_TRUE(throws_error(ErrorCategory::cuda, "", [&] { c.upload<int>(dst.data(), values); }));
  EXPECT_TRUE(c.failed());
  const std::string first = faulty.first_message();
  EXPECT_TRUE(
      throws_error(ErrorCategory::failed_state, first, [&] { c.upload<int>(dst.data(), values); }));
  EXPECT_TRUE(
      throws_error(ErrorCategory::failed_state, first, [&] { c.upload<int>(nullptr, values); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first, [&] { c.begin_frame(); }));
  faulty.disarm();
}

// After a sticky error the user has been given Error(cuda): destroying the coordinator meets the
// same error in the scheduler's shutdown and says nothing more (issue 18: a teardown printed one
// line per stream, event and buffer).
TEST_F(OneOffUploadTest, TheTeardownOfAFailedCoordinatorDoesNotRepeatItsError) {
  FaultInjectingBackend faulty(backend);
  auto c = std::make_unique<Coordinator>(small_config(2), faulty);
  DeviceBuffer<int> dst(faulty, 4);
  const std::vector<int> values{1, 2, 3, 4};
  faulty.arm(FaultSite::event_record, faulty.calls(FaultSite::event_record) + 1, FaultMode::sticky);
  EXPECT_TRUE(throws_error(ErrorCategory::cuda, "", [&] { c->upload<int>(dst.data(), values); }));
  ASSERT_TRUE(c->failed());
  const std::uint64_t injected = faulty.injected();
  ::testing::internal::CaptureStderr();
  c.reset();
  const std::string teardown = ::testing::internal::GetCapturedStderr();
  EXPECT_GT(faulty.injected(), injected) << "the shutdown never met the sticky error";
  EXPECT_EQ(teardown, "");
  faulty.disarm();
}

// A coordinator that has not failed still reports a shutdown that fails.
TEST_F(OneOffUploadTest, TheTeardownOfAHealthyCoordinatorReportsAFailure) {
  FaultInjectingBackend faulty(backend);
  auto c = std::make_unique<Coordinator>(small_config(2), faulty);
  c->begin_frame();
  (void)c->end_frame();
  faulty.arm(FaultSite::event_record, faulty.calls(FaultSite::event_record) + 1);
  ::testing::internal::CaptureStderr();
  c.reset();
  const std::string teardown = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(teardown.find("framestage: scheduler shutdown:"), std::string::npos) << teardown;
  faulty.disarm();
}

}  // namespace
}  // namespace framestage
