// Backend failures at every call of a representative workload.
//
// A FaultInjectingBackend (tests/support) wraps a HostBackend and fails call n of one kind:
// allocations, the mapped address, stream and event creation, event records, waits and queries,
// copies and kernel launches. A dry run counts each kind's calls over a five-frame workload
// (mirrored spans, small, overlapping and large uploads, reserved uploads, gathered and direct
// readbacks, a user consumer stream, synchronize and destruction), in four shapes (fail or grow
// policy, immediate or deferred completion). Then every call of every kind fails in turn, once
// (a transient failure), sticky (a corrupted context: every later call fails too) and, for
// waits, as a time-out. Each case checks:
//   - the error is the injected one, with the category a caller switches on;
//   - the coordinator's state: a CUDA error in an owner call leaves it failed, and every later
//     call throws failed_state carrying that first error; out-of-memory, a time-out or a failed
//     wait leaves it usable, and then the workload finishes with every byte checked;
//   - nothing leaks: no allocation, stream or event outlives the coordinator.
// The address build (ASan/LSan) runs it too.
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/host_backend.hpp>

#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace framestage {
namespace {

using testing::cuda_call_of;
using testing::FaultInjectingBackend;
using testing::FaultMode;
using testing::FaultSite;
using testing::kFaultSites;
using testing::kInjectedMarker;
using testing::throws_error;

std::byte pattern(std::uint64_t tag, std::size_t i) {
  return static_cast<std::byte>((tag * 131 + i * 7 + 3) & 0xff);
}

enum class Step {
  construct,
  begin_frame,
  frame_call,
  end_frame,
  ticket_wait,
  readback_wait,
  set_consumer_stream,
  synchronize,
  capture_tick
};

std::string to_string(Step step) {
  constexpr std::array<const char*, 9> kNames{
      "constructor",         "begin_frame", "a call inside the frame",
      "end_frame",           "ticket wait", "readback wait",
      "set_consumer_stream", "synchronize", "capture_tick"};
  return kNames[static_cast<std::size_t>(step)];
}

// An owner call of the coordinator itself (not a ticket or a readback).
bool owner_call(Step step) {
  return step == Step::begin_frame || step == Step::end_frame || step == Step::synchronize ||
         step == Step::set_consumer_stream || step == Step::capture_tick;
}

struct Observed {
  Step step;
  ErrorCategory category;
  std::string message;
};

struct Shape {
  bool grow;
  bool deferred;
};

std::string shape_name(Shape shape) {
  return std::string(shape.grow ? "grow" : "fail") + (shape.deferred ? "/deferred" : "/immediate");
}

constexpr std::uint64_t kFrames = 5;
constexpr std::size_t kDestinationBytes = 64 << 10;

Config workload_config(Shape shape) {
  Config c;
  c.buffering = 2;
  c.arena_bytes = 64 << 10;
  c.upload_arena_bytes = 16 << 10;
  c.max_uploads_per_frame = 64;
  c.readback_arena_bytes = 16 << 10;
  c.max_readbacks_per_frame = 32;
  c.direct_copy_threshold_bytes = 4096;
  c.zero_copy_max_bytes = 2048;  // frame 1 goes zero-copy, the larger ones copy and scatter
  c.pipeline_chunk_bytes = 4096;
  c.overflow = shape.grow ? OverflowPolicy::grow : OverflowPolicy::fail;
  c.trim_after_frames = 1;
  c.slot_timeout_ms = 100;
  return c;
}

/// Five frames on `faulty`, each verified against a host reference once it has landed; frames 2
/// and 5 end as a tick graph's launch (captured after construction). It keeps
/// going after a recoverable error (skipping the call that failed, or retrying it once) and
/// stops when the coordinator has failed. It never throws.
class FaultWorkload {
 public:
  FaultWorkload(HostBackend& inner, FaultInjectingBackend& faulty, Shape shape)
      : inner_(inner),
        faulty_(faulty),
        shape_(shape),
        destination_(inner, kDestinationBytes),
        expected_(kDestinationBytes, std::byte{0}),
        user_stream_(inner) {
    std::memset(destination_.data(), 0, kDestinationBytes);  // host memory on the host backend
  }

  void run() {
    if (!attempt(Step::construct, [&] {
          coordinator_ = std::make_unique<Coordinator>(workload_config(shape_), faulty_);
        })) {
      return;
    }
    if (!retried(Step::capture_tick, [&] {
          tick_ = coordinator_->capture_tick([this](StreamView stream) {
            inner_.launch_host_task(stream, [this] { ++tick_work_runs_; });
          });
        })) {
      return;
    }
    for (std::uint64_t f = 1; f <= kFrames; ++f) {
      if (!retried(Step::begin_frame, [&] { coordinator_->begin_frame(); })) return;
      if (!run_frame(f)) return;
    }
    if (!retried(Step::synchronize, [&] { coordinator_->synchronize(); })) return;
    finished_ = true;
  }

  /// After a sticky error: the coordinator's next owner call meets it and fails.
  void settle() {
    if (!coordinator_ || coordinator_->failed()) return;
    if (coordinator_->frame_open()) {
      attempt(Step::end_frame, [&] { (void)coordinator_->end_frame(); });
    } else {
      attempt(Step::begin_frame, [&] { coordinator_->begin_frame(); });
    }
  }

  [[nodiscard]] Coordinator* coordinator() const { return coordinator_.get(); }
  [[nodiscard]] const std::vector<Observed>& errors() const { return errors_; }
  [[nodiscard]] const std::string& failing_message() const { return failing_message_; }
  [[nodiscard]] bool finished() const { return finished_; }
  [[nodiscard]] std::uint64_t frames_verified() const { return frames_verified_; }
  [[nodiscard]] std::uint64_t bytes_checked() const { return bytes_checked_; }
  [[nodiscard]] const std::vector<std::string>& mismatches() const { return mismatches_; }

 private:
  template <class F>
  bool attempt(Step step, F&& call) {
    const bool failed_before = coordinator_ && coordinator_->failed();
    try {
      call();
      return true;
    } catch (const Error& e) {
      errors_.push_back({step, e.category(), e.message()});
      if (!failed_before && coordinator_ && coordinator_->failed() && failing_message_.empty()) {
        failing_message_ = e.message();
      }
      return false;
    }
  }

  // One retry after a recoverable failure; none once the coordinator has failed.
  template <class F>
  bool retried(Step step, F&& call) {
    if (attempt(step, call)) return true;
    if (coordinator_ && coordinator_->failed()) return false;
    return attempt(step, call);
  }

  bool run_frame(std::uint64_t f) {
    Coordinator& c = *coordinator_;
    const std::vector<std::byte> before = expected_;  // what this frame's readbacks see
    struct Mirror {
      FrameSpan<std::byte> span;
      std::vector<std::byte> want;
    };
    struct Back {
      Readback<std::byte> readback;
      std::vector<std::byte> want;
    };
    std::vector<Mirror> mirrors;
    std::vector<Back> backs;

    const auto mirror = [&](std::size_t bytes, std::uint64_t tag) {
      FrameSpan<std::byte> span;
      if (!attempt(Step::frame_call, [&] { span = c.frame_alloc<std::byte>(bytes); })) return;
      for (std::size_t i = 0; i < bytes; ++i)
        span[i] = pattern(tag, i);
      if (!attempt(Step::frame_call, [&] { c.stage_for_upload(span); })) return;
      mirrors.push_back({span, std::vector<std::byte>(span.begin(), span.end())});
    };
    const auto upload = [&](std::size_t offset, std::size_t bytes, std::uint64_t tag) {
      std::vector<std::byte> item(bytes);
      for (std::size_t i = 0; i < bytes; ++i)
        item[i] = pattern(tag, i);
      if (!attempt(Step::frame_call,
                   [&] { c.upload<std::byte>(destination_.data() + offset, item); })) {
        return;
      }
      std::copy(item.begin(), item.end(), expected_.begin() + static_cast<std::ptrdiff_t>(offset));
    };
    const auto reserve = [&](std::size_t offset, std::size_t bytes, std::uint64_t tag) {
      FrameSpan<std::byte> span;
      if (!attempt(Step::frame_call, [&] {
            span = c.reserve_upload<std::byte>(destination_.data() + offset, bytes);
          })) {
        return;
      }
      for (std::size_t i = 0; i < bytes; ++i) {
        span[i] = pattern(tag, i);
        expected_[offset + i] = span[i];
      }
    };
    const auto read_back = [&](std::size_t offset, std::size_t bytes) {
      Readback<std::byte> r;
      if (!attempt(Step::frame_call,
                   [&] { r = c.readback<std::byte>(destination_.data() + offset, bytes); })) {
        return;
      }
      backs.push_back({r, std::vector<std::byte>(
                              before.begin() + static_cast<std::ptrdiff_t>(offset),
                              before.begin() + static_cast<std::ptrdiff_t>(offset + bytes))});
    };

    mirror(1024, f * 100);
    const bool overflow_frame = shape_.grow && f == 3;
    if (overflow_frame) mirror(100 << 10, f * 100 + 1);   // beyond the 64 KiB arena
    const std::size_t smalls = overflow_frame ? 80 : 24;  // 80: beyond the 64-entry table
    for (std::size_t i = 0; i < smalls; ++i) {
      upload(i * 160 + f * 3, 16 + (i * 37 + f) % 120, f * 1000 + i);
    }
    upload(8, 64, f * 1000 + 999);                    // overlaps the first: issued last, it wins
    upload((40 << 10) + f, 6 << 10, f * 1000 + 998);  // at the direct threshold: its own copy
    for (std::size_t i = 0; i < 8; ++i)
      reserve((50 << 10) + i * 64, 48, f * 2000 + i);
    for (std::size_t i = 0; i < 4; ++i)
      read_back(i * 1000 + f, 40);
    read_back((40 << 10) + 7, 6 << 10);  // a direct readback

    FrameTicket ticket;
    const bool as_tick = f == 2 || f == 5;
    if (!retried(Step::end_frame, [&] { ticket = as_tick ? c.end_frame(tick_) : c.end_frame(); })) {
      return false;
    }
    (void)attempt(Step::ticket_wait, [&] { (void)ticket.ready(); });
    if (!retried(Step::ticket_wait, [&] { ticket.wait(std::chrono::milliseconds{100}); })) {
      return false;
    }

    // Every destination byte, every mirrored span and every readback.
    std::vector<std::byte> got(kDestinationBytes);
    inner_.read_device(got.data(), destination_.data(), kDestinationBytes);
    compare("destination", got, expected_);
    for (const Mirror& m : mirrors) {
      std::vector<std::byte> mirrored(m.span.size());
      inner_.read_device(mirrored.data(), c.device_ptr(m.span), m.span.size());
      compare("mirror", mirrored, m.want);
    }
    for (const Back& b : backs) {
      std::span<const std::byte> values;
      if (!retried(Step::readback_wait, [&] { values = b.readback.get(); })) return false;
      (void)attempt(Step::readback_wait, [&] { (void)b.readback.ready(); });
      compare("readback", std::vector<std::byte>(values.begin(), values.end()), b.want);
    }
    if (as_tick && tick_work_runs_ != tick_.launches()) {
      mismatches_.push_back("the tick graph's work ran " + std::to_string(tick_work_runs_) +
                            " times in " + std::to_string(tick_.launches()) + " launches");
    }
    ++frames_verified_;

    // Frame 4 runs on a stream of the user's (immediate completion only: in deferred mode a
    // failed coordinator could leave work queued on it that outlives the arenas).
    if (!shape_.deferred && f == 3) {
      if (!retried(Step::set_consumer_stream,
                   [&] { c.set_consumer_stream(user_stream_.view()); })) {
        return false;
      }
    }
    if (!shape_.deferred && f == 4) {
      if (!retried(Step::set_consumer_stream, [&] { c.set_consumer_stream(StreamView{}); })) {
        return false;
      }
    }
    return true;
  }

  void compare(const char* what, const std::vector<std::byte>& got,
               const std::vector<std::byte>& want) {
    bytes_checked_ += want.size();
    if (got == want) return;
    std::size_t first = 0;
    while (first < got.size() && got[first] == want[first])
      ++first;
    mismatches_.push_back(std::string(what) + " differs from byte " + std::to_string(first));
  }

  HostBackend& inner_;
  FaultInjectingBackend& faulty_;
  Shape shape_;
  DeviceBuffer<std::byte> destination_;
  std::vector<std::byte> expected_;
  Stream user_stream_;                        // outlives the coordinator, which may use it
  TickGraph tick_;                            // frames 2 and 5
  std::uint64_t tick_work_runs_ = 0;          // what the graph's work counts, as it runs
  std::unique_ptr<Coordinator> coordinator_;  // destroyed first
  std::vector<Observed> errors_;
  std::string failing_message_;
  bool finished_ = false;
  std::uint64_t frames_verified_ = 0;
  std::uint64_t bytes_checked_ = 0;
  std::vector<std::string> mismatches_;
};

/// Every later call of a failed coordinator throws failed_state carrying the first error.
void expect_failed_state(Coordinator& c, const std::string& first_error) {
  ASSERT_TRUE(c.failed());
  ASSERT_FALSE(first_error.empty());
  int value = 0;
  const std::vector<std::function<void()>> calls{
      [&] { c.begin_frame(); },
      [&] { (void)c.end_frame(); },
      [&] { (void)c.frame_alloc<int>(1); },
      [&] { c.stage_for_upload(FrameSpan<int>{}); },
      [&] { c.upload<int>(&value, std::span<const int>(&value, 1)); },
      [&] { (void)c.reserve_upload<int>(&value, 1); },
      [&] { (void)c.readback<int>(&value, 1); },
      [&] { (void)c.device_ptr(FrameSpan<int>{}); },
      [&] { c.synchronize(); },
      [&] { c.set_consumer_stream(StreamView{}); },
  };
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_error, calls[i])) << "call " << i;
  }
}

struct DryRun {
  std::array<std::uint64_t, testing::kFaultSiteCount> during_workload{};
  std::array<std::uint64_t, testing::kFaultSiteCount> in_total{};
};

DryRun count_calls(Shape shape) {
  DryRun counts;
  HostBackend inner(HostBackendOptions{shape.deferred});
  {
    FaultInjectingBackend faulty(inner);
    {
      FaultWorkload w(inner, faulty, shape);
      w.run();
      EXPECT_TRUE(w.finished()) << shape_name(shape);
      EXPECT_TRUE(w.errors().empty()) << shape_name(shape) << ": " << w.errors().front().message;
      EXPECT_EQ(w.frames_verified(), kFrames);
      EXPECT_TRUE(w.mismatches().empty());
      for (FaultSite s : kFaultSites)
        counts.during_workload[static_cast<std::size_t>(s)] = faulty.calls(s);
    }
    for (FaultSite s : kFaultSites)
      counts.in_total[static_cast<std::size_t>(s)] = faulty.calls(s);
  }
  return counts;
}

struct Tally {
  std::uint64_t cases = 0;
  std::uint64_t injected = 0;
  std::uint64_t failed_coordinators = 0;
  std::uint64_t recovered = 0;
  std::uint64_t in_destructors = 0;
  std::uint64_t bytes_checked = 0;
};

void run_case(FaultSite site, std::uint64_t nth, FaultMode mode, Shape shape,
              std::uint64_t calls_during_workload, Tally& tally) {
  SCOPED_TRACE(std::string(testing::to_string(site)) + " call " + std::to_string(nth) + ", " +
               std::string(testing::to_string(mode)) + ", " + shape_name(shape));
  ++tally.cases;
  HostBackend inner(HostBackendOptions{shape.deferred});
  {
    FaultInjectingBackend faulty(inner);
    faulty.arm(site, nth, mode);
    {
      FaultWorkload w(inner, faulty, shape);
      w.run();
      tally.bytes_checked += w.bytes_checked();
      EXPECT_TRUE(w.mismatches().empty()) << w.mismatches().front();
      if (nth > calls_during_workload) {
        // The call failed inside a destructor, which reports it on stderr and never throws.
        EXPECT_TRUE(w.errors().empty()) << w.errors().front().message;
        EXPECT_TRUE(w.finished());
        ++tally.in_destructors;
      } else {
        ASSERT_FALSE(w.errors().empty()) << "the fault was injected, but no call reported it";
        const Observed& first = w.errors().front();
        const bool allocation =
            site == FaultSite::pinned_allocation || site == FaultSite::device_allocation;
        ErrorCategory want = ErrorCategory::cuda;
        if (mode == FaultMode::once && allocation) want = ErrorCategory::out_of_memory;
        if (mode == FaultMode::time_out) want = ErrorCategory::timeout;
        EXPECT_EQ(first.category, want) << to_string(first.step) << ": " << first.message;
        if (want != ErrorCategory::timeout) {
          EXPECT_NE(first.message.find(kInjectedMarker), std::string::npos) << first.message;
          EXPECT_NE(first.message.find(cuda_call_of(site)), std::string::npos) << first.message;
        }
        if (first.step == Step::construct) {
          EXPECT_EQ(w.coordinator(), nullptr);
        } else if (mode == FaultMode::sticky) {
          // Every call fails from here on: the coordinator's next owner call meets it.
          w.settle();
          ASSERT_TRUE(w.coordinator()->failed()) << "first error: " << first.message;
          expect_failed_state(*w.coordinator(), w.failing_message());
          ++tally.failed_coordinators;
        } else if (first.category == ErrorCategory::cuda && owner_call(first.step)) {
          EXPECT_TRUE(w.coordinator()->failed()) << to_string(first.step);
          EXPECT_EQ(w.failing_message(), first.message);
          expect_failed_state(*w.coordinator(), first.message);
          ++tally.failed_coordinators;
        } else {
          // Out of memory, a time-out, or a failed wait on a ticket or readback (whose retry
          // works): the coordinator stays usable, and every frame still arrives byte exact.
          EXPECT_FALSE(w.coordinator()->failed()) << to_string(first.step) << ": " << first.message;
          EXPECT_TRUE(w.finished()) << to_string(first.step) << ": " << first.message;
          EXPECT_EQ(w.frames_verified(), kFrames);
          ++tally.recovered;
        }
      }
    }
    // The coordinator, its arenas, streams and events are gone: nothing outlives them.
    EXPECT_GE(faulty.injected(), 1u);
    tally.injected += faulty.injected();
    EXPECT_EQ(faulty.live_streams(), 0);
    EXPECT_EQ(faulty.live_events(), 0);
  }
  EXPECT_EQ(inner.live_allocations(), 0u);
}

class FaultAtEveryCall : public ::testing::TestWithParam<FaultSite> {};

TEST_P(FaultAtEveryCall, ErrorStateAndNoLeaks) {
  const FaultSite site = GetParam();
  Tally tally;
  std::uint64_t calls_seen = 0;
  for (const Shape shape :
       {Shape{false, false}, Shape{true, false}, Shape{false, true}, Shape{true, true}}) {
    const DryRun counts = count_calls(shape);
    const std::uint64_t during = counts.during_workload[static_cast<std::size_t>(site)];
    const std::uint64_t total = counts.in_total[static_cast<std::size_t>(site)];
    calls_seen += total;
    std::vector<FaultMode> modes{FaultMode::once, FaultMode::sticky};
    if (site == FaultSite::event_wait) modes.push_back(FaultMode::time_out);
    for (const FaultMode mode : modes) {
      for (std::uint64_t n = 1; n <= total; ++n) {
        run_case(site, n, mode, shape, during, tally);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
  std::printf(
      "[ faults   ] %s: %llu cases, %llu faults injected (%llu failed the coordinator, %llu "
      "recovered, %llu in destructors), %llu bytes checked\n",
      std::string(testing::to_string(site)).c_str(), static_cast<unsigned long long>(tally.cases),
      static_cast<unsigned long long>(tally.injected),
      static_cast<unsigned long long>(tally.failed_coordinators),
      static_cast<unsigned long long>(tally.recovered),
      static_cast<unsigned long long>(tally.in_destructors),
      static_cast<unsigned long long>(tally.bytes_checked));
  if (calls_seen == 0) {
    GTEST_SKIP() << "the coordinator makes no " << testing::to_string(site) << " call";
  }
}

INSTANTIATE_TEST_SUITE_P(Sites, FaultAtEveryCall, ::testing::ValuesIn(kFaultSites),
                         [](const auto& param_info) {
                           return std::string(testing::to_string(param_info.param));
                         });

// Two cases spelled out, as a reader would look for them.

TEST(FaultInjection, AFailedCopyFailsTheCoordinatorWithThatError) {
  HostBackend inner;
  {
    FaultInjectingBackend faulty(inner);
    Coordinator c(workload_config(Shape{false, false}), faulty);
    DeviceBuffer<std::uint32_t> dst(inner, 4);
    faulty.arm(FaultSite::copy, faulty.calls(FaultSite::copy) + 1);
    c.begin_frame();
    const std::vector<std::uint32_t> values(4000, 7);  // copy and scatter: one staging copy
    c.upload<std::uint32_t>(dst.data(), std::span(values).first(4));
    auto mirrored = c.frame_alloc<std::uint32_t>(values.size());
    std::copy(values.begin(), values.end(), mirrored.begin());
    c.stage_for_upload(mirrored);
    EXPECT_TRUE(throws_error(ErrorCategory::cuda,
                             "cudaMemcpyAsync failed: cudaErrorLaunchFailure (unspecified launch "
                             "failure) (injected fault, once: copy call",
                             [&] { (void)c.end_frame(); }));
    EXPECT_TRUE(c.failed());
    EXPECT_FALSE(c.frame_open());
    EXPECT_TRUE(throws_error(ErrorCategory::failed_state,
                             "the coordinator failed earlier and can no longer be used: "
                             "cudaMemcpyAsync failed: cudaErrorLaunchFailure",
                             [&] { c.begin_frame(); }));
  }
  EXPECT_EQ(inner.live_allocations(), 0u);
}

TEST(FaultInjection, AnOverflowBlockThatCannotBeAllocatedKeepsTheFrame) {
  HostBackend inner;
  {
    FaultInjectingBackend faulty(inner);
    Config config = workload_config(Shape{true, false});
    Coordinator c(config, faulty);
    DeviceBuffer<std::byte> dst(inner, 2048);
    std::memset(dst.data(), 0, dst.size_bytes());
    c.begin_frame();
    std::vector<std::byte> expected(dst.size(), std::byte{0});
    for (std::size_t i = 0; i < config.max_uploads_per_frame; ++i) {
      const std::byte value{static_cast<unsigned char>(i + 1)};
      c.upload<std::byte>(dst.data() + i, std::span(&value, 1));
      expected[i] = value;
    }
    // The table is full: the next upload needs an overflow block, whose device half fails.
    faulty.arm(FaultSite::device_allocation, faulty.calls(FaultSite::device_allocation) + 1);
    const std::byte extra{0xee};
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "cudaMalloc of", [&] {
      c.upload<std::byte>(dst.data() + 1000, std::span(&extra, 1));
    }));
    EXPECT_FALSE(c.failed());
    EXPECT_TRUE(c.frame_open());
    // The frame goes on: the next upload gets its overflow block, and everything arrives.
    c.upload<std::byte>(dst.data() + 1001, std::span(&extra, 1));
    expected[1001] = extra;
    c.end_frame().wait();
    EXPECT_EQ(dst.to_host(), expected);
  }
  EXPECT_EQ(inner.live_allocations(), 0u);
}

}  // namespace
}  // namespace framestage
