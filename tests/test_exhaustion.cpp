// Running out: arenas, descriptor tables and device memory, from one thread and from many.
//
// Under OverflowPolicy::fail every call that does not fit throws Error(out_of_memory) naming the
// limit and the Config key to raise, and everything that did fit arrives byte exact, whichever
// thread it came from. Under OverflowPolicy::grow every byte arrives, the slot grows for its next
// use and trims back later. A device too small for the configured arenas makes the constructor
// throw out_of_memory naming the bytes; a growth the device cannot hold makes begin_frame throw
// out_of_memory (no frame opens, the coordinator stays usable) until the memory is there.
// Device memory limits are emulated with the FaultInjectingBackend's budget.
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/host_backend.hpp>

#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace framestage {
namespace {

using testing::FaultInjectingBackend;
using testing::throws_error;

constexpr unsigned kThreads = 8;

std::byte pattern(std::uint64_t tag, std::size_t i) {
  return static_cast<std::byte>((tag * 131 + i * 7 + 3) & 0xff);
}

/// The out_of_memory errors the threads met, checked for what the message must say.
class Refusals {
 public:
  void add(const Error& e) {
    std::lock_guard lock(mutex_);
    if (e.category() != ErrorCategory::out_of_memory) {
      others_.push_back(e.what());
      return;
    }
    messages_.push_back(e.message());
  }
  [[nodiscard]] std::size_t count() const { return messages_.size(); }
  /// Every refusal names one of `fragments`; nothing but out_of_memory was thrown.
  [[nodiscard]] ::testing::AssertionResult all_mention(
      std::initializer_list<const char*> fragments) const {
    if (!others_.empty()) return ::testing::AssertionFailure() << "other error: " << others_[0];
    for (const std::string& m : messages_) {
      const bool found = std::any_of(fragments.begin(), fragments.end(),
                                     [&](const char* f) { return m.find(f) != std::string::npos; });
      if (!found) return ::testing::AssertionFailure() << "unexpected message: " << m;
    }
    return ::testing::AssertionSuccess();
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> messages_;
  std::vector<std::string> others_;
};

template <class F>
void on_threads(F&& body) {
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t)
    threads.emplace_back([&body, t] { body(t); });
  for (std::thread& t : threads)
    t.join();
}

Config base_config() {
  Config c;
  c.buffering = 2;
  c.arena_bytes = 256 << 10;
  c.upload_arena_bytes = 64 << 10;
  c.max_uploads_per_frame = 4096;
  c.readback_arena_bytes = 64 << 10;
  c.max_readbacks_per_frame = 4096;
  c.slot_timeout_ms = 1000;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Fail policy, many threads

TEST(Exhaustion, ArenaFullUnderFailKeepsEveryThreadsEarlierSpans) {
  HostBackend backend;
  Config config = base_config();
  Coordinator c(config, backend);
  c.begin_frame();
  struct Kept {
    FrameSpan<std::byte> span;
    std::uint64_t tag;
  };
  std::vector<std::vector<Kept>> kept(kThreads);
  Refusals refusals;
  on_threads([&](unsigned t) {
    std::mt19937_64 rng(t + 1);
    // Until the arena refuses three times in a row: smaller requests may still fit after one.
    for (int refused_in_a_row = 0, i = 0; refused_in_a_row < 3; ++i) {
      const std::size_t bytes = 16 + rng() % 3000;
      try {
        auto span = c.frame_alloc<std::byte>(bytes);
        const std::uint64_t tag = t * 100'000 + static_cast<std::uint64_t>(i);
        for (std::size_t b = 0; b < bytes; ++b)
          span[b] = pattern(tag, b);
        c.stage_for_upload(span);
        kept[t].push_back({span, tag});
        refused_in_a_row = 0;
      } catch (const Error& e) {
        refusals.add(e);
        ++refused_in_a_row;
      }
    }
  });
  EXPECT_GE(refusals.count(), kThreads * 3);
  EXPECT_TRUE(refusals.all_mention({"arena overflow", "raise arena_bytes"}));
  EXPECT_TRUE(refusals.all_mention({"capacity 262144 bytes"}));
  c.end_frame().wait();
  EXPECT_FALSE(c.failed());
  std::size_t kept_bytes = 0;
  for (unsigned t = 0; t < kThreads; ++t) {
    for (const Kept& k : kept[t]) {
      std::vector<std::byte> mirrored(k.span.size());
      backend.read_device(mirrored.data(), c.device_ptr(k.span), mirrored.size());
      for (std::size_t b = 0; b < mirrored.size(); ++b)
        ASSERT_EQ(mirrored[b], pattern(k.tag, b)) << "thread " << t << " tag " << k.tag;
      kept_bytes += k.span.size();
    }
  }
  // Chunks and the exact tail leave little of the arena unused when it refuses.
  EXPECT_GE(kept_bytes, config.arena_bytes / 2);
  EXPECT_LE(kept_bytes, config.arena_bytes);
  // The next frame has the whole arena again.
  c.begin_frame();
  EXPECT_EQ(c.frame_alloc<std::byte>(200 << 10).size(), std::size_t{200} << 10);
  (void)c.end_frame();
}

/// Every thread uploads into its own region until refused; what was accepted arrives, exactly.
void uploads_until_refused(const Config& config, std::size_t max_item_bytes,
                           std::initializer_list<const char*> fragments,
                           std::size_t* accepted_total = nullptr) {
  HostBackend backend;
  Coordinator c(config, backend);
  constexpr std::size_t kRegion = 64 << 10;
  DeviceBuffer<std::byte> dst(backend, kThreads * kRegion);
  std::memset(dst.data(), 0, dst.size_bytes());
  std::vector<std::byte> expected(dst.size(), std::byte{0});
  Refusals refusals;
  std::atomic<std::size_t> accepted{0};
  c.begin_frame();
  on_threads([&](unsigned t) {
    std::mt19937_64 rng(t + 7);
    std::vector<std::byte> item(max_item_bytes);
    std::size_t cursor = t * kRegion;
    for (int refused_in_a_row = 0, i = 0; refused_in_a_row < 3; ++i) {
      const std::size_t bytes = 1 + rng() % max_item_bytes;
      if (cursor + bytes > (t + 1) * kRegion) break;
      const std::uint64_t tag = t * 100'000 + static_cast<std::uint64_t>(i);
      for (std::size_t b = 0; b < bytes; ++b)
        item[b] = pattern(tag, b);
      try {
        if (i % 2 == 0) {
          c.upload<std::byte>(dst.data() + cursor, std::span(item).first(bytes));
        } else {
          auto span = c.reserve_upload<std::byte>(dst.data() + cursor, bytes);
          std::copy_n(item.begin(), bytes, span.begin());
        }
        // Regions are disjoint, so the threads may write the reference without a lock.
        std::copy_n(item.begin(), bytes, expected.begin() + static_cast<std::ptrdiff_t>(cursor));
        accepted.fetch_add(1);
        refused_in_a_row = 0;
      } catch (const Error& e) {
        refusals.add(e);
        ++refused_in_a_row;
      }
      cursor += bytes + rng() % 4;
    }
  });
  EXPECT_GT(refusals.count(), 0u);
  EXPECT_TRUE(refusals.all_mention(fragments));
  c.end_frame().wait();
  EXPECT_FALSE(c.failed());
  const auto got = dst.to_host();
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], expected[i]) << "destination byte " << i;
  if (accepted_total != nullptr) *accepted_total = accepted.load();
}

TEST(Exhaustion, UploadArenaFullUnderFailKeepsWhatWasAccepted) {
  Config config = base_config();
  config.upload_arena_bytes = 16 << 10;
  uploads_until_refused(config, 300, {"upload arena overflow", "raise upload_arena_bytes"});
}

TEST(Exhaustion, MoreUploadsThanTheTableHoldsUnderFail) {
  Config config = base_config();
  config.upload_arena_bytes = 4 << 20;
  config.max_uploads_per_frame = 100;
  std::size_t accepted = 0;
  uploads_until_refused(config, 32,
                        {"upload descriptor table overflow: more than max_uploads_per_frame (100)"},
                        &accepted);
  EXPECT_EQ(accepted, 100u);  // exactly the table's worth, however the threads raced for it
}

TEST(Exhaustion, MoreReadbacksThanTheTableHoldsUnderFail) {
  HostBackend backend;
  Config config = base_config();
  config.max_readbacks_per_frame = 50;
  Coordinator c(config, backend);
  DeviceBuffer<std::uint32_t> src(backend, kThreads * 100);
  for (std::size_t i = 0; i < src.size(); ++i)
    src.data()[i] = static_cast<std::uint32_t>(i * 3 + 1);  // host memory on the host backend
  std::vector<std::vector<std::pair<Readback<std::uint32_t>, std::size_t>>> kept(kThreads);
  Refusals refusals;
  c.begin_frame();
  on_threads([&](unsigned t) {
    for (std::size_t i = 0; i < 100; ++i) {
      const std::size_t index = t * 100 + i;
      try {
        kept[t].emplace_back(c.readback(src.data() + index, 1), index);
      } catch (const Error& e) {
        refusals.add(e);
      }
    }
  });
  EXPECT_TRUE(refusals.all_mention(
      {"readback descriptor table overflow: more than max_readbacks_per_frame (50)"}));
  EXPECT_EQ(refusals.count(), kThreads * 100 - 50);
  c.end_frame().wait();
  std::size_t got = 0;
  for (const auto& list : kept) {
    for (const auto& [readback, index] : list) {
      ASSERT_EQ(readback.get()[0], index * 3 + 1);
      ++got;
    }
  }
  EXPECT_EQ(got, 50u);
}

TEST(Exhaustion, ReadbackArenaFullUnderFailNamesTheKey) {
  HostBackend backend;
  Config config = base_config();
  config.readback_arena_bytes = 4096;
  Coordinator c(config, backend);
  DeviceBuffer<std::byte> src(backend, 8192);
  c.begin_frame();
  auto first = c.readback(src.data(), 4000);
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory,
                           "readback arena overflow: 200 bytes do not fit; capacity 4096 bytes",
                           [&] { (void)c.readback(src.data(), 200); }));
  EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "raise readback_arena_bytes",
                           [&] { (void)c.readback(src.data(), 200); }));
  (void)c.end_frame();
  EXPECT_EQ(first.get().size(), 4000u);
}

// ---------------------------------------------------------------------------------------------
// Grow policy, many threads

TEST(Exhaustion, GrowDeliversEverythingTheThreadsOverflowedWithThenTrims) {
  HostBackend backend;
  Config config = base_config();
  config.buffering = 1;
  config.overflow = OverflowPolicy::grow;
  config.arena_bytes = 4096;
  config.upload_arena_bytes = 4096;
  config.max_uploads_per_frame = 8;
  config.readback_arena_bytes = 4096;
  config.max_readbacks_per_frame = 8;
  config.trim_after_frames = 2;
  Coordinator c(config, backend);
  constexpr std::size_t kItems = 300;
  constexpr std::size_t kItem = 40;
  DeviceBuffer<std::byte> dst(backend, kThreads * kItems * 64);
  std::memset(dst.data(), 0, dst.size_bytes());

  // `items` per thread on the first `threads` threads.
  const auto frame = [&](std::uint64_t f, std::size_t items, unsigned threads) {
    std::vector<std::vector<FrameSpan<std::byte>>> mirrors(kThreads);
    std::vector<std::vector<Readback<std::byte>>> backs(kThreads);
    std::vector<std::byte> before = dst.to_host();
    c.begin_frame();
    on_threads([&](unsigned t) {
      if (t >= threads) return;
      std::array<std::byte, kItem> item{};
      for (std::size_t i = 0; i < items; ++i) {
        const std::size_t at = (t * kItems + i) * 64;
        for (std::size_t b = 0; b < kItem; ++b)
          item[b] = pattern(f * 7 + at, b);
        backs[t].push_back(c.readback<std::byte>(dst.data() + at, kItem));
        c.upload<std::byte>(dst.data() + at, item);
        auto span = c.frame_alloc<std::byte>(kItem);
        std::copy(item.begin(), item.end(), span.begin());
        c.stage_for_upload(span);
        mirrors[t].push_back(span);
      }
    });
    c.end_frame().wait();
    const auto got = dst.to_host();
    for (unsigned t = 0; t < threads; ++t) {
      for (std::size_t i = 0; i < items; ++i) {
        const std::size_t at = (t * kItems + i) * 64;
        std::vector<std::byte> mirrored(kItem);
        backend.read_device(mirrored.data(), c.device_ptr(mirrors[t][i]), kItem);
        const auto back = backs[t][i].get();
        for (std::size_t b = 0; b < kItem; ++b) {
          ASSERT_EQ(got[at + b], pattern(f * 7 + at, b)) << "frame " << f << " at " << at;
          ASSERT_EQ(mirrored[b], pattern(f * 7 + at, b)) << "frame " << f << " at " << at;
          ASSERT_EQ(back[b], before[at + b]) << "frame " << f << " at " << at;
        }
      }
    }
  };

  frame(1, kItems, kThreads);  // 2,400 items of each kind into 4 KiB arenas, 8-entry tables
  EXPECT_TRUE(c.stats().last_frame.arena_overflowed);
  frame(2, kItems, kThreads);  // the slot came back big enough
  EXPECT_EQ(c.stats().arena_growths, 1u);
  EXPECT_FALSE(c.stats().last_frame.arena_overflowed);
  const std::size_t grown = c.stats().slots[0].arena_capacity_bytes;
  EXPECT_GE(grown, kThreads * kItems * 48);
  // Small frames from one thread (each allocating thread holds a 16 KiB chunk of the arena, so
  // eight threads keep 128 KiB in use however little they allocate): the arena trims back.
  for (std::uint64_t f = 3; f <= 6; ++f)
    frame(f, 4, 1);
  EXPECT_GE(c.stats().arena_trims, 1u);
  EXPECT_LT(c.stats().slots[0].arena_capacity_bytes, grown);
  EXPECT_FALSE(c.failed());
}

// ---------------------------------------------------------------------------------------------
// Device memory

TEST(Exhaustion, DeviceTooSmallAtStartUpNamesTheBytes) {
  HostBackend inner;
  {
    FaultInjectingBackend small_device(inner);
    small_device.set_device_budget(600 << 10);
    Config config = base_config();  // 3 x (256 KiB arena + upload and readback staging)
    config.buffering = 3;
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory,
                             "cudaMalloc of 262144 bytes failed: cudaErrorMemoryAllocation",
                             [&] { Coordinator c(config, small_device); }));
    EXPECT_EQ(inner.live_allocations(), 0u);
    EXPECT_EQ(small_device.live_streams(), 0);
    EXPECT_EQ(small_device.live_events(), 0);
    // What fits the device works.
    config.buffering = 1;
    Coordinator c(config, small_device);
    c.begin_frame();
    (void)c.frame_alloc<std::byte>(1000);
    c.end_frame().wait();
  }
  EXPECT_EQ(inner.live_allocations(), 0u);
}

TEST(Exhaustion, GrowthTheDeviceCannotHoldIsAnErrorUntilThereIsMemory) {
  HostBackend inner;
  {
    FaultInjectingBackend device(inner);
    Config config = base_config();
    config.buffering = 1;
    config.overflow = OverflowPolicy::grow;
    config.arena_bytes = 64 << 10;
    Coordinator c(config, device);
    DeviceBuffer<std::byte> dst(inner, 4096);
    std::memset(dst.data(), 0, dst.size_bytes());
    // Room for one overflow block of the arena, not for the grown arena after it.
    device.set_device_budget(device.live_device_bytes() + (100 << 10));

    c.begin_frame();
    auto kept = c.frame_alloc<std::byte>(40 << 10);
    std::fill(kept.begin(), kept.end(), std::byte{0x5a});
    c.stage_for_upload(kept);
    auto overflowing = c.frame_alloc<std::byte>(60 << 10);  // an overflow block of 64 KiB
    std::fill(overflowing.begin(), overflowing.end(), std::byte{0x6b});
    c.stage_for_upload(overflowing);
    // A second overflow block does not fit the device: out_of_memory, the frame goes on.
    EXPECT_TRUE(throws_error(ErrorCategory::out_of_memory, "cudaMalloc of",
                             [&] { (void)c.frame_alloc<std::byte>(200 << 10); }));
    EXPECT_TRUE(c.frame_open());
    const std::byte value{0x11};
    c.upload<std::byte>(dst.data() + 5, std::span(&value, 1));
    c.end_frame().wait();
    EXPECT_EQ(dst.to_host()[5], value);
    std::vector<std::byte> mirrored(overflowing.size());
    inner.read_device(mirrored.data(), c.device_ptr(overflowing), mirrored.size());
    EXPECT_TRUE(std::all_of(mirrored.begin(), mirrored.end(),
                            [](std::byte b) { return b == std::byte{0x6b}; }));
    inner.read_device(mirrored.data(), c.device_ptr(kept), kept.size());
    EXPECT_TRUE(std::all_of(mirrored.begin(), mirrored.begin() + (40 << 10),
                            [](std::byte b) { return b == std::byte{0x5a}; }));

    // The slot must grow to hold that frame, and the device cannot: every begin_frame says
    // so, opens nothing and fails nothing, until memory is freed.
    for (int attempt = 0; attempt < 3; ++attempt) {
      EXPECT_TRUE(
          throws_error(ErrorCategory::out_of_memory, "cudaMalloc of", [&] { c.begin_frame(); }));
      EXPECT_FALSE(c.frame_open());
      EXPECT_FALSE(c.failed());
    }
    device.set_device_budget(std::size_t{1} << 30);
    c.begin_frame();
    EXPECT_EQ(c.stats().arena_growths, 1u);
    auto whole = c.frame_alloc<std::byte>(100 << 10);  // fits the grown arena
    c.stage_for_upload(whole);
    c.end_frame().wait();
    EXPECT_FALSE(c.stats().last_frame.arena_overflowed);
  }
  EXPECT_EQ(inner.live_allocations(), 0u);
}

}  // namespace
}  // namespace framestage
