// The frame state that Coordinator and Broadcast share (runtime/frame_state.hpp): its transitions,
// its checks' errors, and that a failure sticks with its first message.
#include "frame_state.hpp"

#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace framestage::detail {
namespace {

using framestage::testing::throws_error;

TEST(FrameStateTest, OpensAndClosesAFrame) {
  FrameState s("coordinator");
  EXPECT_FALSE(s.in_frame());
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame_alloc outside a frame",
                           [&] { s.expect_in_frame("frame_alloc"); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "end_frame without begin_frame",
                           [&] { s.expect_frame_open("end_frame without begin_frame"); }));
  s.expect_between_frames("unused");
  s.open();
  EXPECT_TRUE(s.in_frame());
  s.expect_in_frame("frame_alloc");
  s.expect_frame_open("unused");
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame 7 is still open",
                           [&] { s.expect_between_frames("frame ", 7, " is still open"); }));
  s.close();
  EXPECT_FALSE(s.in_frame());
  EXPECT_FALSE(s.failed());
}

TEST(FrameStateTest, OnlyACudaErrorFailsIt) {
  FrameState s("broadcast");
  EXPECT_EQ(s.guarded([] { return 42; }), 42);
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "bad argument", [&] {
    s.guarded([] { throw Error(ErrorCategory::misuse, "bad argument"); });
  }));
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "no room", [&] {
    s.guarded([] { throw Error(ErrorCategory::out_of_memory, "no room"); });
  }));
  EXPECT_FALSE(s.failed());
  // The CUDA error itself reaches the caller; every later check names it.
  EXPECT_TRUE(throws_error(ErrorCategory::cuda, "cudaErrorIllegalAddress", [&] {
    s.guarded([] { throw Error(ErrorCategory::cuda, "cudaErrorIllegalAddress"); });
  }));
  EXPECT_TRUE(s.failed());
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state,
                           "the broadcast failed earlier and can no longer be used: "
                           "cudaErrorIllegalAddress",
                           [&] { s.expect_not_failed(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "cudaErrorIllegalAddress",
                           [&] { s.expect_in_frame("upload"); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "cudaErrorIllegalAddress",
                           [&] { s.expect_between_frames("unused"); }));
}

TEST(FrameStateTest, AFailureSticksWithItsFirstMessage) {
  FrameState s("coordinator");
  s.open();
  s.fail("first");
  s.fail("second");
  // Neither closing nor opening leaves the failed state.
  s.close();
  EXPECT_TRUE(s.failed());
  s.open();
  EXPECT_TRUE(s.failed());
  EXPECT_FALSE(s.in_frame());
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "can no longer be used: first",
                           [&] { s.expect_not_failed(); }));
}

// Failures from many threads while others check: one message wins whole, and every check after
// the last failure sees the failed state (ThreadSanitizer checks the locking in CI).
TEST(FrameStateTest, ConcurrentFailuresKeepOneWholeMessage) {
  FrameState s("coordinator");
  s.open();
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&s, t] {
      for (int i = 0; i < 100; ++i) {
        try {
          s.expect_in_frame("upload");
        } catch (const Error& e) {
          EXPECT_EQ(e.category(), ErrorCategory::failed_state);
        }
      }
      s.fail("failure from thread " + std::to_string(t));
    });
  }
  for (auto& t : threads)
    t.join();
  try {
    s.expect_in_frame("upload");
    ADD_FAILURE() << "no failed_state after " << kThreads << " failures";
  } catch (const Error& e) {
    const std::string what = e.message();
    const std::string prefix =
        "the coordinator failed earlier and can no longer be used: failure from thread ";
    ASSERT_EQ(what.rfind(prefix, 0), 0u) << what;
    const std::string thread = what.substr(prefix.size());
    ASSERT_EQ(thread.size(), 1u) << what;
    EXPECT_GE(thread[0], '0');
    EXPECT_LT(thread[0], '0' + kThreads);
  }
}

}  // namespace
}  // namespace framestage::detail
