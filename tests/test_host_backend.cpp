#include <framestage/host_backend.hpp>

#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

namespace framestage {
namespace {

using namespace std::chrono_literals;
using testing::throws_error;

// The host backend never waits on a clock: a wait either completes the work or reports a stall.
constexpr std::chrono::milliseconds kTimeout = 100ms;
constexpr std::size_t kBytes = 64;

using Bytes = std::vector<std::uint8_t>;

// Bytes that differ per buffer (`tag`) and per position.
Bytes pattern(std::uint8_t tag, std::size_t bytes = kBytes) {
  Bytes out(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    out[i] = static_cast<std::uint8_t>(tag * 37 + i * 11 + 5);
  return out;
}

// A backend block filled with `contents`.
MemoryBlock make_block(Backend& backend, MemoryKind kind, const Bytes& contents) {
  MemoryBlock block(backend, kind, contents.size());
  std::memcpy(block.data(), contents.data(), contents.size());
  return block;
}

Bytes contents(const MemoryBlock& block) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(block.data());
  return Bytes(p, p + block.bytes());
}

std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

// A descriptor table in device memory, as the scheduler ships it.
MemoryBlock make_table(Backend& backend, std::span<const TransferDescriptor> descriptors) {
  MemoryBlock table(backend, MemoryKind::device, descriptors.size_bytes());
  std::memcpy(table.data(), descriptors.data(), descriptors.size_bytes());
  return table;
}

const TransferDescriptor* table_of(const MemoryBlock& table) {
  return reinterpret_cast<const TransferDescriptor*>(table.data());
}

// Most behaviour must be the same whether work runs when enqueued or when something waits.
enum class Mode { immediate, deferred };

void PrintTo(Mode mode, std::ostream* os) {
  *os << (mode == Mode::immediate ? "immediate" : "deferred");
}

std::string mode_name(const ::testing::TestParamInfo<Mode>& param_info) {
  return param_info.param == Mode::immediate ? "immediate" : "deferred";
}

class HostBackendModes : public ::testing::TestWithParam<Mode> {
 protected:
  HostBackend backend{HostBackendOptions{GetParam() == Mode::deferred}};
  Stream stream{backend};
};

class DeferredBackend : public ::testing::Test {
 protected:
  HostBackend backend{HostBackendOptions{true}};
  Stream stream{backend};
};

// ---------------------------------------------------------------------------------------------
// Completion.

TEST(HostBackend, ImmediateModeRunsCopiesAtOnceAndEventsAreReady) {
  HostBackend backend;
  EXPECT_EQ(backend.kind(), BackendKind::host);
  EXPECT_EQ(backend.describe(), "host emulation (no GPU)");
  Stream stream(backend);
  Event event(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(1));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));

  backend.copy_async(dst.data(), src.data(), kBytes, stream.view());
  EXPECT_EQ(contents(dst), pattern(1));
  EXPECT_EQ(backend.pending_operations(), 0u);
  backend.record_event(event.native(), stream.view());
  EXPECT_EQ(backend.pending_operations(), 0u);
  EXPECT_TRUE(backend.event_ready(event.native()));

  Bytes read(kBytes);
  backend.read_device(read.data(), dst.data(), kBytes);
  EXPECT_EQ(read, pattern(1));
}

// How a test asks for deferred work to finish.
enum class Completion { event_ready, wait_event, synchronize };

class DeferredCompletion : public ::testing::TestWithParam<Completion> {
 protected:
  HostBackend backend{HostBackendOptions{true}};
  Stream stream{backend};
};

TEST_P(DeferredCompletion, CopyRunsOnlyWhenSomethingWaitsForIt) {
  EXPECT_EQ(backend.describe(), "host emulation (no GPU), deferred completion");
  Event before(backend);
  Event after(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(2));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));

  backend.record_event(before.native(), stream.view());
  backend.copy_async(dst.data(), src.data(), kBytes, stream.view());
  backend.record_event(after.native(), stream.view());
  EXPECT_EQ(contents(dst), Bytes(kBytes, 0)) << "the copy ran when it was enqueued";
  EXPECT_EQ(backend.pending_operations(), 3u);

  // An event recorded before the copy completes without running it.
  EXPECT_TRUE(backend.event_ready(before.native()));
  EXPECT_EQ(contents(dst), Bytes(kBytes, 0)) << "polling an earlier event ran later work";
  EXPECT_EQ(backend.pending_operations(), 2u);

  switch (GetParam()) {
    case Completion::event_ready:
      EXPECT_TRUE(backend.event_ready(after.native()));
      break;
    case Completion::wait_event:
      EXPECT_TRUE(backend.wait_event(after.native(), kTimeout));
      break;
    case Completion::synchronize:
      backend.synchronize(stream.view());
      EXPECT_TRUE(backend.event_ready(after.native()));
      break;
  }
  EXPECT_EQ(contents(dst), pattern(2));
  EXPECT_EQ(backend.pending_operations(), 0u);
}

std::string completion_name(const ::testing::TestParamInfo<Completion>& param_info) {
  constexpr const char* kNames[] = {"event_ready", "wait_event", "synchronize"};
  return kNames[static_cast<int>(param_info.param)];
}

INSTANTIATE_TEST_SUITE_P(HostBackend, DeferredCompletion,
                         ::testing::Values(Completion::event_ready, Completion::wait_event,
                                           Completion::synchronize),
                         completion_name);

TEST_F(DeferredBackend, DestroyingAStreamRunsItsPendingWork) {
  Event event(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(3));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  {
    Stream doomed(backend);
    backend.copy_async(dst.data(), src.data(), kBytes, doomed.view());
    backend.record_event(event.native(), doomed.view());
    EXPECT_EQ(backend.pending_operations(), 2u);
    EXPECT_EQ(contents(dst), Bytes(kBytes, 0));
  }
  EXPECT_EQ(contents(dst), pattern(3));
  EXPECT_EQ(backend.pending_operations(), 0u);
  EXPECT_TRUE(backend.event_ready(event.native()));
}

// ---------------------------------------------------------------------------------------------
// Ordering.

TEST_P(HostBackendModes, CopiesOnOneStreamApplyInOrder) {
  const auto first = make_block(backend, MemoryKind::pinned, pattern(4));
  const auto second = make_block(backend, MemoryKind::pinned, pattern(5));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  backend.copy_async(dst.data(), first.data(), kBytes, stream.view());
  backend.copy_async(dst.data(), second.data(), kBytes / 2, stream.view());  // front half only
  backend.synchronize(stream.view());

  Bytes expected = pattern(5);
  const Bytes back = pattern(4);
  std::copy(back.begin() + kBytes / 2, back.end(), expected.begin() + kBytes / 2);
  EXPECT_EQ(contents(dst), expected);
}

TEST_P(HostBackendModes, HostTasksRunInStreamOrderWithCopies) {
  const auto first = make_block(backend, MemoryKind::pinned, pattern(6));
  const auto second = make_block(backend, MemoryKind::pinned, pattern(7));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  Bytes seen_by_task;
  backend.copy_async(dst.data(), first.data(), kBytes, stream.view());
  backend.launch_host_task(stream.view(), [&] { seen_by_task = contents(dst); });
  backend.copy_async(dst.data(), second.data(), kBytes, stream.view());
  EXPECT_EQ(seen_by_task.empty(), GetParam() == Mode::deferred);
  backend.synchronize(stream.view());
  EXPECT_EQ(seen_by_task, pattern(6)) << "the task saw the copy before it, not the one after";
  EXPECT_EQ(contents(dst), pattern(7));
}

// A stalled backend emulates a hung device: nothing finishes until it resumes, then everything
// that was enqueued arrives.
TEST_P(HostBackendModes, StalledWorkFinishesAfterResume) {
  Event event(backend);
  Stream idle(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(8));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));

  backend.set_stalled(true);
  backend.copy_async(dst.data(), src.data(), kBytes, stream.view());
  backend.record_event(event.native(), stream.view());
  EXPECT_FALSE(backend.wait_event(event.native(), kTimeout));
  EXPECT_FALSE(backend.event_ready(event.native()));
  EXPECT_TRUE(
      throws_error(ErrorCategory::timeout, "stalled", [&] { backend.synchronize(stream.view()); }));
  EXPECT_NO_THROW(backend.synchronize(idle.view())) << "nothing is pending on this stream";
  EXPECT_EQ(contents(dst), Bytes(kBytes, 0));
  EXPECT_EQ(backend.pending_operations(), 2u);

  backend.set_stalled(false);
  EXPECT_TRUE(backend.wait_event(event.native(), kTimeout));
  EXPECT_EQ(contents(dst), pattern(8));
  EXPECT_EQ(backend.pending_operations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(HostBackend, HostBackendModes,
                         ::testing::Values(Mode::immediate, Mode::deferred), mode_name);

// Stream B copies what stream A's copy wrote. With B waiting on A's event, polling B's event
// runs A's copy first; without the wait, B reads the stale bytes, as a GPU could.
class CrossStream : public ::testing::TestWithParam<bool> {
 protected:
  HostBackend backend{HostBackendOptions{true}};
};

TEST_P(CrossStream, WaitOnAnotherStreamsEventRunsItsWorkFirst) {
  const bool wait = GetParam();
  Stream a(backend);
  Stream b(backend);
  Event a_done(backend);
  Event b_done(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(9));
  auto middle = make_block(backend, MemoryKind::device, Bytes(kBytes, 0xee));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));

  backend.copy_async(middle.data(), src.data(), kBytes, a.view());
  backend.record_event(a_done.native(), a.view());
  if (wait) backend.stream_wait_event(b.view(), a_done.native());
  backend.copy_async(dst.data(), middle.data(), kBytes, b.view());
  backend.record_event(b_done.native(), b.view());
  EXPECT_EQ(contents(middle), Bytes(kBytes, 0xee));

  EXPECT_TRUE(backend.event_ready(b_done.native()));
  EXPECT_EQ(contents(dst), wait ? pattern(9) : Bytes(kBytes, 0xee));
  EXPECT_EQ(contents(middle), wait ? pattern(9) : Bytes(kBytes, 0xee));
  EXPECT_EQ(backend.pending_operations(), wait ? 0u : 2u) << "A's work beyond what B needed";

  backend.synchronize(a.view());  // A's copy runs before its buffers go away
  EXPECT_EQ(contents(middle), pattern(9));
  EXPECT_EQ(contents(dst), wait ? pattern(9) : Bytes(kBytes, 0xee));
}

INSTANTIATE_TEST_SUITE_P(HostBackend, CrossStream, ::testing::Bool(), [](const auto& param_info) {
  return std::string(param_info.param ? "with_wait" : "without_wait");
});

TEST_F(DeferredBackend, AnEventNeverRecordedIsReadyAndWaitingOnItBlocksNothing) {
  Event fresh(backend);
  EXPECT_TRUE(backend.event_ready(fresh.native()));
  EXPECT_TRUE(backend.wait_event(fresh.native(), kTimeout));

  Event done(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(10));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  backend.stream_wait_event(stream.view(), fresh.native());
  backend.copy_async(dst.data(), src.data(), kBytes, stream.view());
  backend.record_event(done.native(), stream.view());
  EXPECT_TRUE(backend.event_ready(done.native()));
  EXPECT_EQ(contents(dst), pattern(10));
}

// Like cudaEventQuery: an event reports its latest record only, wherever that was.
TEST_F(DeferredBackend, AReRecordedEventReportsItsLatestRecord) {
  Stream other(backend);
  Event event(backend);
  const auto src = make_block(backend, MemoryKind::pinned, pattern(11));
  auto first_dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  auto second_dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));

  backend.copy_async(first_dst.data(), src.data(), kBytes, stream.view());
  backend.record_event(event.native(), stream.view());
  backend.copy_async(second_dst.data(), src.data(), kBytes, other.view());
  backend.record_event(event.native(), other.view());

  EXPECT_TRUE(backend.event_ready(event.native()));
  EXPECT_EQ(contents(second_dst), pattern(11));
  EXPECT_EQ(contents(first_dst), Bytes(kBytes, 0)) << "the superseded record's work ran";
  EXPECT_EQ(backend.pending_operations(), 2u);
  backend.synchronize(stream.view());
  EXPECT_EQ(contents(first_dst), pattern(11));
}

// ---------------------------------------------------------------------------------------------
// Scatter and gather.

// The table is device memory written by an earlier copy: the scatter must read it when it runs,
// not when it is enqueued, so a table that changes in between is the one applied.
TEST_F(DeferredBackend, ScatterReadsItsTableWhenItRuns) {
  const auto staging = make_block(backend, MemoryKind::device, pattern(12));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  const std::array<TransferDescriptor, 2> enqueued{{
      {address(dst.data()), 0, 8},
      {address(dst.data() + 8), 1, 8},
  }};
  auto table = make_table(backend, enqueued);
  backend.scatter_async(table_of(table), enqueued.size(), staging.data(), stream.view());

  const std::array<TransferDescriptor, 2> rewritten{{
      {address(dst.data() + 40), 1, 16},
      {address(dst.data() + 4), 0, 3},
  }};
  std::memcpy(table.data(), rewritten.data(), sizeof rewritten);
  EXPECT_EQ(contents(dst), Bytes(kBytes, 0));
  backend.synchronize(stream.view());

  const Bytes from = pattern(12);
  Bytes expected(kBytes, 0);
  std::copy_n(from.begin() + 16, 16, expected.begin() + 40);
  std::copy_n(from.begin(), 3, expected.begin() + 4);
  EXPECT_EQ(contents(dst), expected);
}

// Staging positions count 16-byte granules from the staging base the launch names, which is how
// the zero-copy path points the same table at the pinned block instead of device staging.
TEST_P(HostBackendModes, ScatterReadsGranulesFromTheStagingItIsGiven) {
  const auto pinned = make_block(backend, MemoryKind::pinned, pattern(13));
  const auto staging = make_block(backend, MemoryKind::device, pattern(14));  // must not be read
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  const std::array<TransferDescriptor, 3> descriptors{{
      {address(dst.data()), 2, 16},
      {address(dst.data() + 16), 0, 5},
      {address(dst.data() + 48), 3, 4},
  }};
  const auto table = make_table(backend, descriptors);
  backend.scatter_async(table_of(table), descriptors.size(), pinned.data(), stream.view());
  backend.synchronize(stream.view());

  const Bytes from = pattern(13);
  Bytes expected(kBytes, 0);
  std::copy_n(from.begin() + 32, 16, expected.begin());
  std::copy_n(from.begin(), 5, expected.begin() + 16);
  std::copy_n(from.begin() + 48, 4, expected.begin() + 48);
  EXPECT_EQ(contents(dst), expected);
}

TEST_P(HostBackendModes, GatherCollectsDeviceRegionsIntoStaging) {
  const auto region_a = make_block(backend, MemoryKind::device, pattern(15));
  const auto region_b = make_block(backend, MemoryKind::device, pattern(16));
  auto staging = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  const std::array<TransferDescriptor, 2> descriptors{{
      {address(region_b.data() + 7), 0, 20},
      {address(region_a.data() + 1), 2, 30},
  }};
  const auto table = make_table(backend, descriptors);
  backend.gather_async(table_of(table), descriptors.size(), staging.data(), stream.view());
  backend.synchronize(stream.view());

  const Bytes a = pattern(15);
  const Bytes b = pattern(16);
  Bytes expected(kBytes, 0);
  std::copy_n(b.begin() + 7, 20, expected.begin());
  std::copy_n(a.begin() + 1, 30, expected.begin() + 32);
  EXPECT_EQ(contents(staging), expected);
}

TEST_P(HostBackendModes, CopyBatchRunsEveryCopy) {
  const auto from = make_block(backend, MemoryKind::pinned, pattern(17));
  auto dst = make_block(backend, MemoryKind::device, Bytes(kBytes, 0));
  const std::array<CopyOp, 2> copies{
      {{dst.data() + 50, from.data(), 10}, {dst.data(), from.data() + 20, 7}}};
  backend.copy_batch_async(copies, stream.view());
  backend.synchronize(stream.view());
  const Bytes p = pattern(17);
  Bytes expected(kBytes, 0);
  std::copy_n(p.begin(), 10, expected.begin() + 50);
  std::copy_n(p.begin() + 20, 7, expected.begin());
  EXPECT_EQ(contents(dst), expected);
}

// ---------------------------------------------------------------------------------------------
// Memory and misuse.

TEST(HostBackend, AllocationsAreAlignedLikeCudaMallocAndCounted) {
  HostBackend backend;
  std::vector<void*> pinned;
  std::vector<void*> device;
  for (std::size_t bytes : {1, 3, 255, 257, 4096}) {
    pinned.push_back(backend.allocate_pinned(bytes));
    device.push_back(backend.allocate_device(bytes));
    EXPECT_EQ(address(pinned.back()) % 256, 0u) << bytes << " pinned bytes";
    EXPECT_EQ(address(device.back()) % 256, 0u) << bytes << " device bytes";
    EXPECT_EQ(backend.mapped_device_address(pinned.back()), pinned.back());
  }
  EXPECT_EQ(backend.live_allocations(), 10u);
  for (void* p : pinned)
    backend.free_pinned(p);
  EXPECT_EQ(backend.live_allocations(), 5u);
  for (void* p : device)
    backend.free_device(p);
  EXPECT_EQ(backend.live_allocations(), 0u);
}

TEST(HostBackend, FreeingWhatItDidNotAllocateIsReportedNotFatal) {
  HostBackend backend;
  void* kept = backend.allocate_device(32);
  void* freed = backend.allocate_pinned(32);
  backend.free_pinned(freed);
  std::uint64_t stack_value = 0;

  ::testing::internal::CaptureStderr();
  backend.free_device(&stack_value);
  backend.free_pinned(freed);  // a double free
  const std::string reported = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(reported.find("free_device of"), std::string::npos) << reported;
  EXPECT_NE(reported.find("free_pinned of"), std::string::npos) << reported;
  EXPECT_NE(reported.find("which it did not allocate"), std::string::npos) << reported;
  EXPECT_EQ(backend.live_allocations(), 1u);

  ::testing::internal::CaptureStderr();
  backend.free_device(nullptr);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "") << "freeing null is a no-op";
  backend.free_device(kept);
  EXPECT_EQ(backend.live_allocations(), 0u);
}

// Calls the contract forbids throw Error(misuse) naming what was wrong.
struct Misuse {
  const char* name;
  std::function<void(HostBackend&, StreamView, EventHandle)> call;
  const char* fragment;
};

void PrintTo(const Misuse& misuse, std::ostream* os) {
  *os << misuse.name;
}

class HostBackendMisuse : public ::testing::TestWithParam<Misuse> {};

TEST_P(HostBackendMisuse, ThrowsMisuseNamingTheProblem) {
  HostBackend backend{HostBackendOptions{true}};
  Stream stream(backend);
  Event event(backend);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, GetParam().fragment,
                           [&] { GetParam().call(backend, stream.view(), event.native()); }));
  EXPECT_EQ(backend.pending_operations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    HostBackend, HostBackendMisuse,
    ::testing::Values(
        Misuse{"copy_null_destination",
               [](HostBackend& b, StreamView s, EventHandle) {
                 std::uint8_t src[4]{};
                 b.copy_async(nullptr, src, sizeof src, s);
               },
               "copy_async: null pointer with 4 bytes"},
        Misuse{"copy_on_null_stream",
               [](HostBackend& b, StreamView, EventHandle) {
                 std::uint8_t src[4]{};
                 std::uint8_t dst[4]{};
                 b.copy_async(dst, src, sizeof src, StreamView{});
               },
               "null stream handle"},
        Misuse{"record_null_event",
               [](HostBackend& b, StreamView s, EventHandle) { b.record_event(nullptr, s); },
               "null event handle"},
        Misuse{"wait_on_null_event",
               [](HostBackend& b, StreamView s, EventHandle) { b.stream_wait_event(s, nullptr); },
               "null event handle"},
        Misuse{"record_on_null_stream",
               [](HostBackend& b, StreamView, EventHandle e) { b.record_event(e, StreamView{}); },
               "null stream handle"}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace framestage
