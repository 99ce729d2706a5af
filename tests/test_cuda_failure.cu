// A CUDA fault puts the Coordinator in the failed state.
//
// The test makes a kernel on the ticket's stream write to an illegal address. That is a sticky
// error: it corrupts the CUDA context for the rest of the process, so this test is alone in its
// executable (test_cuda_failure), and nothing may run after it in the same process.
//
// Under compute-sanitizer the fault is reported, as intended, so the sanitizer would fail the
// run: the GPU check must leave test_cuda_failure out of its compute-sanitizer loop (it matches
// build-gpu/tests/test_cuda_*; skip names ending in _failure). As a second guard, the test skips
// itself in quick mode (FRAMESTAGE_TEST_QUICK=1), which the GPU check sets under the sanitizer.
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/error.hpp>

#include "cuda_test_support.cuh"
#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace framestage {
namespace {

using testing::quick_mode;
using testing::throws_error;

/// Writes through `address`, which the test makes an address no allocation covers.
__global__ void write_through_kernel(int* address) {
  *address = 1;
}

class CudaFailure : public testing::CudaTest {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    if (quick_mode()) {
      GTEST_SKIP() << "faults on purpose, which compute-sanitizer reports as an error";
    }
  }
};

TEST_F(CudaFailure, AKernelFaultLeavesTheCoordinatorFailed) {
  Config config;
  config.buffering = 1;  // the next begin_frame waits on the faulted frame's slot
  config.arena_bytes = 1 << 20;
  config.upload_arena_bytes = 1 << 20;
  config.max_uploads_per_frame = 1024;
  Coordinator c(config, backend());
  DeviceBuffer<std::uint32_t> dst(backend(), 4);
  const std::vector<std::uint32_t> values = {1, 2, 3, 4};

  // A healthy frame first.
  c.begin_frame();
  c.upload<std::uint32_t>(dst.data(), values);
  c.end_frame().wait();
  ASSERT_EQ(dst.to_host(), values);

  // A frame whose reader faults. The test waits for the fault itself, so the coordinator's next
  // CUDA call is sure to meet it.
  c.begin_frame();
  c.upload<std::uint32_t>(dst.data(), values);
  const FrameTicket ticket = c.end_frame();
  const auto stream = static_cast<cudaStream_t>(ticket.stream().native());
  write_through_kernel<<<1, 1, 0, stream>>>(reinterpret_cast<int*>(std::uintptr_t{16}));
  ASSERT_EQ(cudaGetLastError(), cudaSuccess) << "the launch itself should succeed";
  const cudaError_t fault = cudaStreamSynchronize(stream);
  ASSERT_NE(fault, cudaSuccess) << "the kernel was expected to fault";
  const std::string fault_name = cudaGetErrorName(fault);
  std::printf("[ fault    ] %s\n", fault_name.c_str());

  // The first coordinator call that reaches CUDA reports the fault as Error(cuda).
  const std::vector<std::pair<const char*, std::function<void()>>> steps = {
      {"begin_frame", [&] { c.begin_frame(); }},
      {"stage and upload",
       [&] {
         const FrameSpan<std::uint32_t> span = c.frame_alloc<std::uint32_t>(4);
         c.stage_for_upload(span);
         c.upload<std::uint32_t>(dst.data(), values);
       }},
      {"end_frame", [&] { static_cast<void>(c.end_frame()); }},
      {"synchronize", [&] { c.synchronize(); }},
  };
  std::optional<Error> first;
  for (const auto& [name, step] : steps) {
    try {
      step();
    } catch (const Error& e) {
      std::printf("[ first    ] %s threw: %s\n", name, e.what());
      first = e;
      break;
    }
  }
  ASSERT_TRUE(first.has_value()) << "no call reported the fault";
  EXPECT_EQ(first->category(), ErrorCategory::cuda) << first->what();
  EXPECT_NE(first->message().find(fault_name), std::string::npos) << first->what();
  EXPECT_TRUE(c.failed());

  // Every later call says the coordinator failed, with the first error's message.
  const std::string& first_message = first->message();
  const std::uint32_t value = 7;
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_message, [&] { c.begin_frame(); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_message,
                           [&] { static_cast<void>(c.frame_alloc<std::uint32_t>(1)); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_message,
                           [&] { c.upload<std::uint32_t>(dst.data(), std::span(&value, 1)); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_message, [&] {
    static_cast<void>(c.reserve_upload<std::uint32_t>(dst.data(), 1));
  }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_message,
                           [&] { static_cast<void>(c.end_frame()); }));
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, first_message, [&] { c.synchronize(); }));
  // Destroying the coordinator, buffers and backend afterwards must not throw or hang.
}

}  // namespace
}  // namespace framestage
