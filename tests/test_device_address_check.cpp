// The staging calls refuse a host pointer where a device address belongs (issue 18), on a
// backend that classifies addresses as CUDA does on a GPU without pageable memory access
// (FaultInjectingBackend::emulate_address_checks over the host backend): upload, reserve_upload
// and readback name the address, the frame stays open, and nothing staged before is lost.
// test_cuda_coordinator checks the same on a GPU with the real runtime.
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/host_backend.hpp>

#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace framestage {
namespace {

using testing::address_text;
using testing::FaultInjectingBackend;
using testing::throws_error;

class DeviceAddressCheckTest : public ::testing::Test {
 protected:
  DeviceAddressCheckTest() {
    backend_.emulate_address_checks(true);
    config_.buffering = 2;
    coordinator_ = std::make_unique<Coordinator>(config_, backend_);
  }
  HostBackend host_;
  FaultInjectingBackend backend_{host_};
  Config config_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(DeviceAddressCheckTest, RefusesHostMemoryAndKeepsWhatWasStaged) {
  Coordinator& c = *coordinator_;
  DeviceBuffer<std::uint32_t> dst(backend_, 8);
  std::vector<std::uint32_t> host_array(8, 0);
  const std::vector<std::uint32_t> values{1, 2, 3, 4};
  c.begin_frame();
  c.upload<std::uint32_t>(dst.data(), values);
  const std::string at = address_text(host_array.data());
  EXPECT_TRUE(throws_error(ErrorCategory::misuse,
                           "upload: the destination " + at + " is host memory",
                           [&] { c.upload<std::uint32_t>(host_array.data(), values); }));
  EXPECT_TRUE(throws_error(ErrorCategory::misuse,
                           "reserve_upload: the destination " + at + " is host memory",
                           [&] { static_cast<void>(c.reserve_upload(host_array.data(), 4)); }));
  EXPECT_TRUE(
      throws_error(ErrorCategory::misuse, "readback: the source " + at + " is host memory",
                   [&] { static_cast<void>(c.readback<std::uint32_t>(host_array.data(), 4)); }));
  EXPECT_FALSE(c.failed());
  EXPECT_TRUE(c.frame_open());
  // The frame goes on, and what was staged before the refusals arrives.
  c.upload<std::uint32_t>(dst.data() + 4, values);
  c.end_frame().wait();
  EXPECT_EQ(dst.to_host(), (std::vector<std::uint32_t>{1, 2, 3, 4, 1, 2, 3, 4}));
  EXPECT_EQ(host_array, std::vector<std::uint32_t>(8, 0));
}

TEST_F(DeviceAddressCheckTest, RefusesAWritePastTheEndOfItsAllocation) {
  Coordinator& c = *coordinator_;
  DeviceBuffer<std::uint32_t> dst(backend_, 8);
  const std::vector<std::uint32_t> values(4, 9);
  c.begin_frame();
  EXPECT_TRUE(throws_error(ErrorCategory::misuse,
                           "runs 8 bytes past the end of its device allocation of 32 bytes",
                           [&] { c.upload<std::uint32_t>(dst.data() + 6, values); }));
  // Inside the allocation, to its last byte, is fine.
  c.upload<std::uint32_t>(dst.data() + 4, values);
  c.end_frame().wait();
  EXPECT_EQ(dst.to_host()[7], 9u);
}

TEST_F(DeviceAddressCheckTest, AsksOncePerAllocationAndForgetsFreedBlocks) {
  Coordinator& c = *coordinator_;
  const std::uint32_t value = 5;
  auto dst = std::make_unique<DeviceBuffer<std::uint32_t>>(backend_, 1024);
  c.begin_frame();
  for (std::size_t i = 0; i < 1024; ++i)
    c.upload<std::uint32_t>(dst->data() + i, std::span(&value, 1));
  EXPECT_EQ(backend_.addresses_classified(), 1u);
  c.end_frame().wait();
  // A released block leaves the cache: the same addresses are asked about again.
  const std::uintptr_t old_address = reinterpret_cast<std::uintptr_t>(dst->data());
  dst = std::make_unique<DeviceBuffer<std::uint32_t>>(backend_, 1024);
  c.begin_frame();
  c.upload<std::uint32_t>(dst->data(), std::span(&value, 1));
  c.end_frame().wait();
  EXPECT_EQ(backend_.addresses_classified(), 2u) << "old block at " << old_address;
}

TEST_F(DeviceAddressCheckTest, ASimulationsArraysUpdatedInTurnAreAskedOnceEach) {
  // Twelve arrays updated element by element in turn, as a particle loop does: each is asked
  // about once, not once a call (a cache smaller than the loop would ask every time).
  Coordinator& c = *coordinator_;
  std::vector<DeviceBuffer<std::uint32_t>> arrays;
  for (int a = 0; a < 12; ++a)
    arrays.emplace_back(backend_, 64);
  const std::uint64_t before = backend_.addresses_classified();
  c.begin_frame();
  for (std::uint32_t i = 0; i < 64; ++i)
    for (auto& array : arrays)
      c.upload<std::uint32_t>(array.data() + i, std::span(&i, 1));
  c.end_frame().wait();
  EXPECT_EQ(backend_.addresses_classified(), before + arrays.size());
  EXPECT_EQ(arrays[11].to_host()[63], 63u);
}

TEST_F(DeviceAddressCheckTest, AcceptsMappedPinnedMemory) {
  Coordinator& c = *coordinator_;
  MemoryBlock pinned(backend_, MemoryKind::pinned, 16);
  const std::vector<std::byte> values(16, std::byte{7});
  c.begin_frame();
  c.upload<std::byte>(pinned.data(), values);
  c.end_frame().wait();
  EXPECT_EQ(pinned.data()[15], std::byte{7});
}

TEST_F(DeviceAddressCheckTest, WithoutARangeRemembersTheSpanItChecked) {
  // Mapped pinned memory comes back without an allocation range (as from CudaBackend, or from
  // any backend whose range query fails): the span checked is remembered, not asked per call.
  Coordinator& c = *coordinator_;
  auto pinned = std::make_unique<MemoryBlock>(backend_, MemoryKind::pinned, 16);
  auto* at = reinterpret_cast<std::uint32_t*>(pinned->data());
  const std::uint32_t value = 3;
  c.begin_frame();
  const std::uint64_t before = backend_.addresses_classified();
  for (int i = 0; i < 100; ++i)
    c.upload<std::uint32_t>(at, std::span(&value, 1));
  EXPECT_EQ(backend_.addresses_classified(), before + 1);
  c.upload<std::uint32_t>(at + 1, std::span(&value, 1));  // past the span checked: asked
  EXPECT_EQ(backend_.addresses_classified(), before + 2);
  c.end_frame().wait();
  EXPECT_EQ(at[0], 3u);
  EXPECT_EQ(at[1], 3u);
  // Once the block is released, host memory may take its place: its spans are forgotten.
  pinned.reset();
  auto again = std::make_unique<MemoryBlock>(backend_, MemoryKind::pinned, 16);
  c.begin_frame();
  c.upload<std::uint32_t>(reinterpret_cast<std::uint32_t*>(again->data()), std::span(&value, 1));
  c.end_frame().wait();
  EXPECT_EQ(backend_.addresses_classified(), before + 3);
}

TEST(DeviceAddressCheckOff, TheHostBackendAcceptsAnyAddress) {
  HostBackend backend;
  EXPECT_FALSE(backend.checks_addresses());
  Coordinator c(Config{}, backend);
  std::vector<std::uint32_t> host_array(4, 0);
  const std::vector<std::uint32_t> values{1, 2, 3, 4};
  c.begin_frame();
  c.upload<std::uint32_t>(host_array.data(), values);
  c.end_frame().wait();
  EXPECT_EQ(host_array, values);
}

}  // namespace
}  // namespace framestage
