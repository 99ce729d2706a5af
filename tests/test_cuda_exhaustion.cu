// A device without room for the configured arenas: the Coordinator's constructor throws
// Error(out_of_memory) naming the cudaMalloc and its bytes, frees what it had taken, and the same
// config works once the memory is there. The test holds nearly all device memory, so ctest runs
// it alone (RUN_SERIAL, tests/cuda_tests.cmake). Out-of-memory API errors are what
// compute-sanitizer reports, so it skips itself in quick mode (FRAMESTAGE_TEST_QUICK=1), as
// test_cuda_failure does. Skips without a device.
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>
#include <framestage/error.hpp>

#include "cuda_test_support.cuh"
#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstddef>

namespace framestage {
namespace {

using testing::quick_mode;
using testing::throws_error;

class CudaExhaustion : public testing::CudaTest {
 protected:
  void SetUp() override {
    testing::CudaTest::SetUp();
    if (IsSkipped()) return;
    if (quick_mode())
      GTEST_SKIP() << "runs the device out of memory, which compute-sanitizer reports";
  }
};

/// Holds all but about `leave` bytes of device memory while it lives.
class DeviceHog {
 public:
  explicit DeviceHog(std::size_t leave) {
    std::size_t free_bytes = 0;
    std::size_t total = 0;
    FRAMESTAGE_TEST_CUDA(cudaMemGetInfo(&free_bytes, &total));
    // The largest block that can be had may be a little smaller than what is free.
    for (std::size_t bytes = free_bytes > leave ? free_bytes - leave : 0; bytes >= (64u << 20);
         bytes -= 64u << 20) {
      if (cudaMalloc(&block_, bytes) == cudaSuccess) {
        bytes_ = bytes;
        return;
      }
      static_cast<void>(cudaGetLastError());
    }
  }
  ~DeviceHog() {
    if (block_ != nullptr) static_cast<void>(cudaFree(block_));
  }
  DeviceHog(const DeviceHog&) = delete;
  DeviceHog& operator=(const DeviceHog&) = delete;
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  void* block_ = nullptr;
  std::size_t bytes_ = 0;
};

TEST_F(CudaExhaustion, DeviceOutOfMemoryAtStartUpNamesTheBytes) {
  Config config;
  config.buffering = 2;
  config.arena_bytes = std::size_t{512} << 20;  // 1 GiB of device mirror in all
  {
    DeviceHog hog(std::size_t{128} << 20);
    ASSERT_GT(hog.bytes(), 0u) << "could not take the device's memory";
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "cudaErrorMemoryAllocation",
                             [&] { Coordinator c(config, backend()); }));
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "cudaMalloc of 536870912 bytes",
                             [&] { Coordinator c(config, backend()); }));
  }
  // Nothing leaked on the device, and the same config works now that the memory is free.
  Coordinator c(config, backend());
  DeviceBuffer<std::uint32_t> dst(backend(), 4);
  c.begin_frame();
  const std::uint32_t values[4] = {1, 2, 3, 4};
  c.upload<std::uint32_t>(dst.data(), values);
  c.end_frame().wait();
  EXPECT_EQ(read_back(dst.data(), 4), (std::vector<std::uint32_t>{1, 2, 3, 4}));
  EXPECT_FALSE(c.failed());
}

}  // namespace
}  // namespace framestage
