// The most common slip on a GPU (issue 18): upload, reserve_upload or readback with a host
// pointer where a device address belongs. The real runtime tells host memory apart
// (cudaPointerGetAttributes), so the call throws Error(misuse) naming the address, the frame
// stays open and everything staged before still arrives. Device, managed and mapped pinned
// memory are accepted. (A device address the caller freed itself is the case the runtime cannot
// tell once its range is cached: test_cuda_failure shows it fails as Error(cuda), not a crash.)
// Skips without a device.
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>
#include <framestage/device_buffer.hpp>

#include "cuda_test_support.cuh"
#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace framestage {
namespace {

using testing::address_text;
using testing::throws_error;

class CudaDeviceAddressCheck
    : public testing::CudaFixture<::testing::TestWithParam<UploadStrategy>> {};

TEST_P(CudaDeviceAddressCheck, RefusesHostPointersAndDeliversTheRest) {
  if (!backend().checks_addresses()) {
    GTEST_SKIP() << "this device reads pageable host memory itself: host addresses are valid";
  }
  Config config;
  config.strategy = GetParam();
  Coordinator c(config, backend());
  DeviceBuffer<std::uint32_t> dst(backend(), 8);
  std::vector<std::uint32_t> host_array(8, 0);
  std::unique_ptr<std::uint32_t, decltype(&std::free)> malloced(
      static_cast<std::uint32_t*>(std::malloc(64)), &std::free);
  const std::vector<std::uint32_t> values{1, 2, 3, 4};

  c.begin_frame();
  c.upload<std::uint32_t>(dst.data(), values);
  EXPECT_TRUE(
      throws_error(ErrorCategory::misuse,
                   "upload: the destination " + address_text(host_array.data()) + " is host memory",
                   [&] { c.upload<std::uint32_t>(host_array.data(), values); }));
  EXPECT_TRUE(throws_error(
      ErrorCategory::misuse, "reserve_upload: the destination " + address_text(malloced.get()),
      [&] { static_cast<void>(c.reserve_upload<std::uint32_t>(malloced.get(), 4)); }));
  EXPECT_TRUE(
      throws_error(ErrorCategory::misuse,
                   "readback: the source " + address_text(host_array.data()) + " is host memory",
                   [&] { static_cast<void>(c.readback<std::uint32_t>(host_array.data(), 4)); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "past the end of its device allocation",
                           [&] { c.upload<std::uint32_t>(dst.data() + 6, values); }));
  EXPECT_FALSE(c.failed());
  c.upload<std::uint32_t>(dst.data() + 4, values);
  c.end_frame().wait();
  EXPECT_EQ(dst.to_host(), (std::vector<std::uint32_t>{1, 2, 3, 4, 1, 2, 3, 4}));
}

TEST_P(CudaDeviceAddressCheck, AcceptsManagedAndMappedPinnedMemory) {
  Config config;
  config.strategy = GetParam();
  Coordinator c(config, backend());
  std::uint32_t* managed = nullptr;
  FRAMESTAGE_TEST_CUDA(cudaMallocManaged(&managed, 4 * sizeof(std::uint32_t)));
  std::unique_ptr<std::uint32_t, decltype(&cudaFree)> managed_owner(managed, &cudaFree);
  MemoryBlock pinned(backend(), MemoryKind::pinned, 4 * sizeof(std::uint32_t));
  auto* pinned_values = reinterpret_cast<std::uint32_t*>(pinned.data());
  const std::vector<std::uint32_t> values{5, 6, 7, 8};
  c.begin_frame();
  c.upload<std::uint32_t>(managed, values);
  c.upload<std::uint32_t>(pinned_values, values);
  c.end_frame().wait();
  EXPECT_EQ(std::vector<std::uint32_t>(managed, managed + 4), values);
  EXPECT_EQ(std::vector<std::uint32_t>(pinned_values, pinned_values + 4), values);
}

// A producer thread that made no CUDA call has no context current, and the driver's range
// query fails there: then no range was cached and every upload asked the runtime again (the
// 16-thread CudaConcurrency test ran 18x slower on an H100, session 11).
class CudaAddressRange : public testing::CudaFixture<> {};

TEST_F(CudaAddressRange, AThreadWithoutAContextLearnsTheWholeAllocation) {
  DeviceBuffer<std::uint32_t> dst(backend(), 1024);
  AddressInfo info;
  std::exception_ptr failure;
  std::thread([&] {
    try {
      info = backend().classify_address(dst.data() + 3);
    } catch (...) {
      failure = std::current_exception();
    }
  }).join();
  if (failure) std::rethrow_exception(failure);
  EXPECT_EQ(info.kind, AddressKind::device);
  EXPECT_EQ(info.range_begin, reinterpret_cast<std::uintptr_t>(dst.data()));
  EXPECT_GE(info.range_bytes, 1024 * sizeof(std::uint32_t));
}

INSTANTIATE_TEST_SUITE_P(Strategies, CudaDeviceAddressCheck,
                         ::testing::Values(UploadStrategy::automatic, UploadStrategy::copy_scatter,
                                           UploadStrategy::zero_copy, UploadStrategy::direct),
                         [](const auto& info) { return std::string(to_string(info.param)); });

}  // namespace
}  // namespace framestage
