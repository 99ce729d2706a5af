// A CUDA fault puts the Coordinator in the failed state.
//
// The tests make a kernel write to an illegal address. That is a sticky error: it corrupts the
// CUDA context for the rest of the process, so these tests are alone in their executable
// (test_cuda_failure), and each needs a process of its own: ctest runs them so (one
// gtest_discover_tests entry each); run by hand, give --gtest_filter one test.
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
#include <memory>
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

// A device address the caller freed itself, after an upload there cached its range: the one
// case the address check cannot tell (cudaFree does not pass through framestage). The upload
// must end as Error(cuda) and the failed state, never a crash, and the teardown after the
// sticky error says so in one line, not one line per stream, event and buffer.
TEST_F(CudaFailure, AnUploadToMemoryFreedBehindItsBackFailsLoudlyOnce) {
  Config config;
  config.buffering = 1;
  auto c = std::make_unique<Coordinator>(config, backend());
  constexpr std::size_t kBytes = std::size_t{64} << 20;  // large: cudaFree unmaps it
  std::uint32_t* freed = nullptr;
  FRAMESTAGE_TEST_CUDA(cudaMalloc(&freed, kBytes));
  const std::vector<std::uint32_t> values = {1, 2, 3, 4};
  c->begin_frame();
  c->upload<std::uint32_t>(freed, values);  // caches the allocation's range
  c->end_frame().wait();
  FRAMESTAGE_TEST_CUDA(cudaFree(freed));

  std::optional<Error> first;
  try {
    c->begin_frame();
    c->upload<std::uint32_t>(freed + 1024, values);
    c->end_frame().wait();
    c->begin_frame();
  } catch (const Error& e) {
    std::printf("[ first    ] %s\n", e.what());
    first = e;
  }
  ASSERT_TRUE(first.has_value()) << "an upload into freed memory went through";
  EXPECT_EQ(first->category(), ErrorCategory::cuda) << first->what();
  // Failed by now, or at the latest by the next owner call, and for good.
  if (!c->failed()) {
    EXPECT_THROW(c->begin_frame(), Error);
  }
  EXPECT_TRUE(c->failed());
  EXPECT_TRUE(throws_error(ErrorCategory::failed_state, "", [&] { c->begin_frame(); }));

  ::testing::internal::CaptureStderr();
  c.reset();
  const std::string teardown = ::testing::internal::GetCapturedStderr();
  std::printf("[ teardown ] %s", teardown.c_str());
  std::size_t lines = 0;
  for (const char ch : teardown)
    lines += ch == '\n' ? 1 : 0;
  EXPECT_LE(lines, 1u) << "the teardown repeated the sticky error:\n" << teardown;
}

}  // namespace
}  // namespace framestage
