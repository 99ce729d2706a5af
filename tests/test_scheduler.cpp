#include <framestage/host_backend.hpp>
#include <framestage/scheduler.hpp>

#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace framestage {
namespace {

using namespace std::chrono_literals;
using testing::throws_error;

// Deferred completion throughout: work runs only when something waits, so an ordering the
// scheduler forgot to enqueue shows up as a wrong byte.
class SchedulerTest : public ::testing::Test {
 protected:
  HostBackend backend{HostBackendOptions{true}};
  Scheduler scheduler{backend, 2, 50ms};
};

TEST_F(SchedulerTest, FreshSlotsAreFree) {
  scheduler.acquire(0);
  scheduler.acquire(1);
  EXPECT_EQ(scheduler.slots(), 2u);
  EXPECT_NE(scheduler.slot_stream(0), scheduler.slot_stream(1));
  EXPECT_NE(scheduler.slot_stream(0), scheduler.consumer_stream());
}

// The scatter reads a descriptor table that a staging copy delivers: it must run after it.
TEST_F(SchedulerTest, ScattersRunAfterTheStagingCopiesThatFeedThem) {
  // Staging granule 0 holds 11, granule 1 holds 22 and 33.
  std::vector<std::uint32_t> host_payload{11, 0, 0, 0, 22, 33, 0, 0};
  auto* staging = static_cast<std::byte*>(backend.allocate_device(32));
  auto* dst = static_cast<std::uint32_t*>(backend.allocate_device(3 * sizeof(std::uint32_t)));
  std::memset(dst, 0, 3 * sizeof(std::uint32_t));
  auto* table_device = static_cast<TransferDescriptor*>(backend.allocate_device(32));
  const TransferDescriptor table_host[] = {
      {reinterpret_cast<std::uint64_t>(dst + 2), 0, 4},
      {reinterpret_cast<std::uint64_t>(dst), 1, 8},
  };
  TransferPlan plan;
  plan.staging_copies = {{staging, host_payload.data(), 32}, {table_device, table_host, 32}};
  plan.scatters = {{table_device, 2, staging, 2}};
  scheduler.submit(1, 7, plan);
  EXPECT_TRUE(backend.wait_event(scheduler.ready_event(1).native(), 50ms));
  EXPECT_EQ(dst[0], 22u);
  EXPECT_EQ(dst[1], 33u);
  EXPECT_EQ(dst[2], 11u);
  for (void* p :
       {static_cast<void*>(staging), static_cast<void*>(dst), static_cast<void*>(table_device)}) {
    backend.free_device(p);
  }
}

// Direct copies into a persistent buffer wait for work already on the consumer stream.
TEST_F(SchedulerTest, DirectCopiesFollowEarlierConsumerWork) {
  std::uint64_t buffer = 1;
  std::uint64_t seen = 0;
  backend.launch_host_task(scheduler.consumer_stream(), [&] { seen = buffer; });
  const std::uint64_t next = 2;
  TransferPlan plan;
  plan.direct_copies = {{&buffer, &next, sizeof(next)}};
  scheduler.submit(0, 1, plan);
  scheduler.synchronize();
  EXPECT_EQ(seen, 1u);
  EXPECT_EQ(buffer, 2u);
}

// acquire() waits for the readers retired on the consumer stream, not only for the copies.
TEST_F(SchedulerTest, AcquireWaitsForRetiredReaders) {
  TransferPlan plan;
  scheduler.submit(0, 1, plan);
  bool reader_ran = false;
  backend.launch_host_task(scheduler.consumer_stream(), [&] { reader_ran = true; });
  scheduler.retire(0);
  scheduler.acquire(0);
  EXPECT_TRUE(reader_ran);
}

TEST_F(SchedulerTest, AcquireTimesOutNamingTheSlotAndFrame) {
  TransferPlan plan;
  scheduler.submit(1, 5, plan);
  scheduler.retire(1);
  backend.set_stalled(true);
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, "slot 1 (frame 5) still busy after 50 ms",
                           [&] { scheduler.acquire(1); }));
  backend.set_stalled(false);
  scheduler.acquire(1);
}

TEST_F(SchedulerTest, NewConsumerStreamRunsAfterTheOldOne) {
  Stream user(backend);
  std::vector<int> order;
  backend.launch_host_task(scheduler.consumer_stream(), [&] { order.push_back(1); });
  scheduler.set_consumer_stream(user.view());
  EXPECT_EQ(scheduler.consumer_stream(), user.view());
  backend.launch_host_task(scheduler.consumer_stream(), [&] { order.push_back(2); });
  backend.synchronize(user.view());
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  scheduler.set_consumer_stream(StreamView{});
  EXPECT_NE(scheduler.consumer_stream(), user.view());
}

TEST(SchedulerConstruction, NeedsAtLeastOneSlot) {
  HostBackend backend;
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "slots must be >= 1",
                           [&] { Scheduler s(backend, 0, std::chrono::milliseconds{1}); }));
}

}  // namespace
}  // namespace framestage
