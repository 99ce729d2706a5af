// Broadcast on the host backend: several devices emulated by separate HostBackend instances (or
// one instance shared, as two CudaBackends on one GPU would be). Random frames are checked byte
// for byte on every device; deferred completion and stalled devices drive the ordering across
// devices (a slot is reused only once every device has finished with it), and each frame's copies
// are counted. test_broadcast_misuse.cpp checks misuse, overflow and injected backend faults.
#include <framestage/broadcast.hpp>
#include <framestage/host_backend.hpp>

#include "support/broadcast_frames.hpp"
#include "support/expect_error.hpp"
#include "support/fault_injecting_backend.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace framestage {
namespace {

using testing::FaultInjectingBackend;
using testing::FaultSite;
using testing::pattern;
using testing::read_device;
using testing::small_config;
using testing::throws_error;

std::uint64_t announce_seed(std::uint64_t seed) {
  std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

// Devices emulated on the host: `count` HostBackends, or one shared by every device.
struct HostDevices {
  HostDevices(std::size_t count, bool deferred, bool shared) {
    for (std::size_t k = 0; k < (shared ? 1 : count); ++k)
      owned.push_back(std::make_unique<HostBackend>(HostBackendOptions{deferred}));
    for (std::size_t k = 0; k < count; ++k)
      devices.push_back(owned[shared ? 0 : k].get());
  }
  [[nodiscard]] HostBackend& host(std::size_t k) const { return *owned[owned.size() == 1 ? 0 : k]; }

  std::vector<std::unique_ptr<HostBackend>> owned;
  std::vector<Backend*> devices;
};

struct Mode {
  std::size_t devices;
  std::uint32_t buffering;
  bool deferred;
  bool shared;  // one HostBackend for every device (as two CudaBackends on one GPU)
  BroadcastRoute route;
};

std::string mode_name(const Mode& m) {
  return std::to_string(m.devices) + "_devices_" + std::to_string(m.buffering) + "_slots_" +
         (m.deferred ? "deferred" : "immediate") + (m.shared ? "_shared_" : "_") +
         std::string(to_string(m.route));
}

void PrintTo(const Mode& mode, std::ostream* out) {
  *out << mode_name(mode);
}

std::vector<Mode> all_modes() {
  std::vector<Mode> modes;
  for (const std::size_t devices : {1, 2, 3}) {
    for (const std::uint32_t buffering : {1u, 2u, 3u}) {
      for (const bool deferred : {false, true}) {
        modes.push_back({devices, buffering, deferred, false, BroadcastRoute::from_host});
        if (devices > 1) {
          modes.push_back({devices, buffering, deferred, true, BroadcastRoute::from_host});
          modes.push_back({devices, buffering, deferred, true, BroadcastRoute::via_first_device});
        }
      }
    }
  }
  return modes;
}

class BroadcastModes : public ::testing::TestWithParam<Mode> {
 protected:
  HostDevices hosts{GetParam().devices, GetParam().deferred, GetParam().shared};
  std::vector<Backend*>& devices = hosts.devices;
  [[nodiscard]] std::size_t n() const { return GetParam().devices; }
  [[nodiscard]] Config config() const { return small_config(GetParam().buffering); }
};

// Every frame: spans of several sizes (some staged, some not) and uploads into a replicated
// buffer, disjoint in some frames (one scatter per device) and overlapping in others (ordered
// copies, last one wins). After each ticket, every staged byte and every destination byte is
// checked on every device.
TEST_P(BroadcastModes, RandomFramesArriveByteExactOnEveryDevice) {
  const std::uint64_t seed = announce_seed(20260517);
  std::mt19937_64 rng(seed);
  Broadcast cast(config(), devices, GetParam().route);
  constexpr std::size_t kDestination = 64 << 10;
  constexpr std::size_t kSlot = 1024;  // disjoint frames put each upload in a slot of its own
  Replicated<std::byte> dst(devices, kDestination);
  std::vector<std::byte> expected(kDestination, std::byte{0});
  cast.begin_frame();
  cast.upload<std::byte>(dst, 0, expected);  // start from known contents
  cast.end_frame().wait();

  constexpr std::array<std::size_t, 9> kSizes{1, 3, 15, 16, 17, 4096, 4097, 65539, 200000};
  struct Staged {
    FrameSpan<std::byte> span;
    std::vector<std::byte> bytes;
  };
  for (std::uint64_t f = 0; f < 30; ++f) {
    cast.begin_frame();
    std::vector<Staged> staged;
    const std::size_t spans = 1 + rng() % 6;
    for (std::size_t s = 0; s < spans; ++s) {
      auto span = cast.frame_alloc<std::byte>(kSizes[rng() % kSizes.size()]);
      for (auto& b : span)
        b = static_cast<std::byte>(rng());
      if (rng() % 4 != 0) {
        cast.stage_for_upload(span);
        staged.push_back({span, std::vector<std::byte>(span.begin(), span.end())});
      }
    }
    const bool disjoint = f % 2 == 0;
    std::vector<std::size_t> slots(kDestination / kSlot);
    std::iota(slots.begin(), slots.end(), std::size_t{0});
    std::shuffle(slots.begin(), slots.end(), rng);
    const std::size_t uploads = 1 + rng() % 40;
    for (std::size_t u = 0; u < uploads; ++u) {
      const std::size_t bytes = 1 + rng() % (disjoint ? kSlot : (rng() % 8 == 0 ? 5000 : 300));
      const std::size_t offset = disjoint ? slots[u] * kSlot + rng() % (kSlot - bytes + 1)
                                          : rng() % (kDestination - bytes);
      std::vector<std::byte> src(bytes);
      for (auto& b : src)
        b = static_cast<std::byte>(rng());
      cast.upload<std::byte>(dst, offset, src);
      std::copy(src.begin(), src.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
      if (!disjoint && u == 0) {
        // The same range again, later: it must win on every device.
        for (auto& b : src)
          b = static_cast<std::byte>(rng());
        cast.upload<std::byte>(dst, offset, src);
        std::copy(src.begin(), src.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
      }
    }
    const BroadcastTicket ticket = cast.end_frame();
    ASSERT_EQ(ticket.devices(), n());
    // The last device first: with deferred completion, its work then runs before device 0's
    // unless it is ordered after it (via_first_device copies from device 0's mirror).
    for (std::size_t k = n(); k-- > 0;)
      ASSERT_TRUE(devices[k]->wait_event(ticket.event(k).native(), std::chrono::seconds{10}));
    ticket.wait();
    ASSERT_TRUE(ticket.ready());
    EXPECT_EQ(cast.last_frame().devices_with_overlaps, disjoint ? 0 : n()) << "frame " << f;
    if (disjoint) {
      EXPECT_EQ(cast.last_frame().scatter_launches, 1u) << "frame " << f;
    }
    for (std::size_t k = 0; k < n(); ++k) {
      ASSERT_EQ(dst.to_host(k), expected) << "device " << k << ", frame " << ticket.frame();
      for (const Staged& s : staged) {
        ASSERT_EQ(read_device(*devices[k], cast.device_ptr(s.span, k), s.span.size()), s.bytes)
            << "device " << k << ", frame " << ticket.frame() << ", " << s.span.size() << " bytes";
      }
    }
  }
}

// Frames never waited on by the test: each writes its own region. If a slot's arena were
// refilled before every device's copies of it had run, a deferred device's copies would carry a
// later frame's bytes.
TEST_P(BroadcastModes, NoSlotIsReusedBeforeEveryDeviceCopiedIt) {
  constexpr std::size_t kFrames = 24;
  constexpr std::size_t kRegion = 512;
  Broadcast cast(config(), devices, GetParam().route);
  Replicated<std::byte> uploaded(devices, kFrames * kRegion);
  Replicated<std::byte> mirrored(devices, kFrames * kRegion);  // what the "kernels" copied out
  for (std::uint64_t f = 1; f <= kFrames; ++f) {
    cast.begin_frame();
    std::vector<std::byte> src(kRegion);
    for (std::size_t i = 0; i < kRegion; ++i)
      src[i] = pattern(f, i);
    cast.upload<std::byte>(uploaded, (f - 1) * kRegion, src);
    auto mirror = cast.frame_alloc<std::byte>(kRegion);
    std::copy(src.begin(), src.end(), mirror.begin());
    cast.stage_for_upload(mirror);
    const BroadcastTicket ticket = cast.end_frame();
    // A "kernel" per device copying its mirror out, in order on that device's stream.
    for (std::size_t k = 0; k < n(); ++k) {
      devices[k]->copy_async(mirrored.data(k) + (f - 1) * kRegion, cast.device_ptr(mirror, k),
                             kRegion, ticket.stream(k));
    }
  }
  cast.synchronize();
  for (std::size_t k = 0; k < n(); ++k) {
    const auto up = uploaded.to_host(k);
    const auto mirror = mirrored.to_host(k);
    for (std::uint64_t f = 1; f <= kFrames; ++f) {
      for (std::size_t i = 0; i < kRegion; ++i) {
        ASSERT_EQ(up[(f - 1) * kRegion + i], pattern(f, i))
            << "upload, device " << k << ", frame " << f;
        ASSERT_EQ(mirror[(f - 1) * kRegion + i], pattern(f, i))
            << "mirror, device " << k << ", frame " << f;
      }
    }
  }
}

// A kernel of frame N on device k that reads the slot's mirror runs before the mirror is
// overwritten, even when it only runs when the slot is needed again.
TEST_P(BroadcastModes, NoMirrorIsOverwrittenWhileADevicesKernelMayReadIt) {
  Broadcast cast(config(), devices, GetParam().route);
  std::vector<std::vector<std::uint64_t>> seen(n());
  for (std::uint64_t f = 1; f <= 12; ++f) {
    cast.begin_frame();
    auto value = cast.frame_alloc<std::uint64_t>(1);
    value[0] = f;
    cast.stage_for_upload(value);
    const BroadcastTicket ticket = cast.end_frame();
    for (std::size_t k = 0; k < n(); ++k) {
      const std::uint64_t* device = cast.device_ptr(value, k);
      hosts.host(k).launch_host_task(ticket.stream(k),
                                     [device, &seen, k] { seen[k].push_back(*device); });
    }
  }
  cast.synchronize();
  std::vector<std::uint64_t> want(12);
  std::iota(want.begin(), want.end(), std::uint64_t{1});
  for (std::size_t k = 0; k < n(); ++k)
    EXPECT_EQ(seen[k], want) << "device " << k;
}

TEST_P(BroadcastModes, ConcurrentStagingFromManyThreads) {
  constexpr std::size_t kThreads = 8;
  constexpr std::size_t kPerThread = 300;
  constexpr std::size_t kItem = 24;
  Broadcast cast(config(), devices, GetParam().route);
  Replicated<std::byte> dst(devices, kThreads * kPerThread * kItem);
  for (std::uint64_t f = 1; f <= 4; ++f) {
    cast.begin_frame();
    std::vector<FrameSpan<std::uint32_t>> spans(kThreads);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::array<std::byte, kItem> item{};
        for (std::size_t i = 0; i < kPerThread; ++i) {
          const std::size_t slot = t * kPerThread + i;
          for (std::size_t b = 0; b < kItem; ++b)
            item[b] = pattern(f, slot * kItem + b);
          cast.upload<std::byte>(dst, slot * kItem, item);
        }
        spans[t] = cast.frame_alloc<std::uint32_t>(kPerThread);
        for (std::size_t i = 0; i < kPerThread; ++i)
          spans[t][i] = static_cast<std::uint32_t>(f << 24 | t << 16 | i);
        cast.stage_for_upload(spans[t]);
      });
    }
    for (auto& th : threads)
      th.join();
    cast.end_frame().wait();
    EXPECT_EQ(cast.last_frame().uploads, kThreads * kPerThread);
    for (std::size_t k = 0; k < n(); ++k) {
      const auto got = dst.to_host(k);
      for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_EQ(got[i], pattern(f, i)) << "device " << k << ", byte " << i;
      for (std::size_t t = 0; t < kThreads; ++t) {
        const auto mirrored = read_device(*devices[k], cast.device_ptr(spans[t], k), kPerThread);
        ASSERT_TRUE(std::equal(mirrored.begin(), mirrored.end(), spans[t].begin()))
            << "device " << k << ", thread " << t;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, BroadcastModes, ::testing::ValuesIn(all_modes()),
                         [](const auto& param_info) { return mode_name(param_info.param); });

// Device 1 completes only when waited for, devices 0 and 2 at once: under triple buffering the
// slot of frame N is refilled at frame N + 3 only after device 1 has copied frame N.
TEST(BroadcastOrdering, SlotReuseWaitsForTheSlowestDevice) {
  HostBackend fast0;
  HostBackend slow(HostBackendOptions{true});
  HostBackend fast2;
  std::array<Backend*, 3> devices{&fast0, &slow, &fast2};
  Broadcast cast(small_config(3), devices);
  constexpr std::size_t kFrames = 20;
  constexpr std::size_t kWords = 1000;
  Replicated<std::uint64_t> copied(devices, kFrames * kWords);
  for (std::uint64_t f = 1; f <= kFrames; ++f) {
    cast.begin_frame();
    auto words = cast.frame_alloc<std::uint64_t>(kWords);
    for (std::size_t i = 0; i < kWords; ++i)
      words[i] = f << 32 | i;
    cast.stage_for_upload(words);
    const BroadcastTicket ticket = cast.end_frame();
    for (std::size_t k = 0; k < devices.size(); ++k) {
      devices[k]->copy_async(copied.data(k) + (f - 1) * kWords, cast.device_ptr(words, k),
                             kWords * sizeof(std::uint64_t), ticket.stream(k));
    }
    // The slow device has not run this frame yet (polling it would); the fast ones have.
    EXPECT_GT(slow.pending_operations(), 0u);
    EXPECT_TRUE(fast0.event_ready(ticket.event(0).native()));
    EXPECT_TRUE(fast2.event_ready(ticket.event(2).native()));
  }
  cast.synchronize();
  for (std::size_t k = 0; k < devices.size(); ++k) {
    const auto got = copied.to_host(k);
    for (std::uint64_t f = 1; f <= kFrames; ++f) {
      for (std::size_t i = 0; i < kWords; ++i)
        ASSERT_EQ(got[(f - 1) * kWords + i], f << 32 | i) << "device " << k << ", frame " << f;
    }
  }
}

// A hung device: the frames that need no slot of it go on; the first that reuses one times out
// naming that device, opens nothing, and succeeds once the device moves again.
TEST(BroadcastOrdering, AStalledDeviceTimesBeginFrameOutByName) {
  HostBackend fast;
  HostBackend stalled(HostBackendOptions{true});
  std::array<Backend*, 2> devices{&fast, &stalled};
  Config config = small_config(3);
  config.slot_timeout_ms = 1;
  Broadcast cast(config, devices);
  stalled.set_stalled(true);
  std::vector<FrameSpan<std::uint64_t>> spans;
  std::vector<BroadcastTicket> tickets;
  for (std::uint64_t f = 1; f <= 3; ++f) {
    cast.begin_frame();
    auto span = cast.frame_alloc<std::uint64_t>(512);
    std::fill(span.begin(), span.end(), f * 1000);
    cast.stage_for_upload(span);
    spans.push_back(span);
    tickets.push_back(cast.end_frame());
  }
  EXPECT_TRUE(fast.event_ready(tickets[0].event(0).native()));
  EXPECT_FALSE(tickets[0].ready());
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, "frame 1 not complete on device 1",
                           [&] { tickets[0].wait(std::chrono::milliseconds{1}); }));
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, "slot 0 (frame 1) still busy on device 1",
                           [&] { cast.begin_frame(); }));
  EXPECT_FALSE(cast.frame_open());
  EXPECT_FALSE(cast.failed());
  EXPECT_EQ(cast.current_frame(), 3u);

  stalled.set_stalled(false);
  cast.begin_frame();
  EXPECT_EQ(cast.current_frame(), 4u);
  for (std::size_t i = 1; i < 3; ++i) {
    tickets[i].wait();
    for (std::size_t k = 0; k < devices.size(); ++k) {
      const auto got = read_device(*devices[k], cast.device_ptr(spans[i], k), 512);
      EXPECT_TRUE(
          std::all_of(got.begin(), got.end(), [&](std::uint64_t v) { return v == (i + 1) * 1000; }))
          << "device " << k << ", frame " << i + 1;
    }
  }
  EXPECT_TRUE(throws_error(ErrorCategory::misuse, "frame 1 is stale: its slot now holds frame 4",
                           [&] { (void)cast.device_ptr(spans[0], 1); }));
  (void)cast.end_frame();
}

// Backends wrapped to count their calls: a frame is one copy per merged run per device, plus
// one table copy and one scatter when it has uploads.
TEST(BroadcastCopies, OneContiguousRangeIsOneCopyPerDevice) {
  HostBackend host0;
  HostBackend host1;
  FaultInjectingBackend counted0(host0);
  FaultInjectingBackend counted1(host1);
  std::array<Backend*, 2> devices{&counted0, &counted1};
  Config config = small_config(2);
  config.merge_gap_bytes = 0;
  Broadcast cast(config, devices);
  std::array<FaultInjectingBackend*, 2> counted{&counted0, &counted1};
  const auto calls = [&](FaultSite site) {
    return std::array<std::uint64_t, 2>{counted0.calls(site), counted1.calls(site)};
  };
  const auto expect_per_device = [&](FaultSite site, const std::array<std::uint64_t, 2>& before,
                                     std::uint64_t want, const char* what) {
    const auto after = calls(site);
    for (std::size_t k = 0; k < counted.size(); ++k)
      EXPECT_EQ(after[k] - before[k], want) << what << ", device " << k;
  };
  const auto expect_on_devices = [&](FrameSpan<std::byte> span) {
    for (std::size_t k = 0; k < devices.size(); ++k) {
      const auto got = read_device(*devices[k], cast.device_ptr(span, k), span.size());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), span.begin())) << "device " << k;
    }
  };

  // One 256 KiB span.
  cast.begin_frame();
  auto copies = calls(FaultSite::copy);
  auto big = cast.frame_alloc<std::byte>(256 << 10);
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = pattern(1, i);
  cast.stage_for_upload(big);
  cast.end_frame().wait();
  expect_per_device(FaultSite::copy, copies, 1, "one span");
  EXPECT_EQ(cast.last_frame().copy_runs, 1u);
  EXPECT_EQ(cast.last_frame().copy_bytes, big.size());
  expect_on_devices(big);

  // Three spans allocated back to back and staged one by one: still one run.
  cast.begin_frame();
  copies = calls(FaultSite::copy);
  std::array<FrameSpan<std::byte>, 3> adjacent;
  for (std::size_t s = 0; s < adjacent.size(); ++s) {
    adjacent[s] = cast.frame_alloc<std::byte>(1000);
    for (std::size_t i = 0; i < 1000; ++i)
      adjacent[s][i] = pattern(10 + s, i);
    cast.stage_for_upload(adjacent[s]);
  }
  cast.end_frame().wait();
  expect_per_device(FaultSite::copy, copies, 1, "adjacent spans");
  EXPECT_EQ(cast.last_frame().staged_ranges, 3u);
  for (const auto& span : adjacent)
    expect_on_devices(span);

  // Two spans with 64 KiB unstaged between them, and merge_gap_bytes 0: two runs.
  cast.begin_frame();
  copies = calls(FaultSite::copy);
  auto first = cast.frame_alloc<std::byte>(8 << 10);
  (void)cast.frame_alloc<std::byte>(64 << 10);
  auto second = cast.frame_alloc<std::byte>(8 << 10);
  std::fill(first.begin(), first.end(), std::byte{0x11});
  std::fill(second.begin(), second.end(), std::byte{0x22});
  cast.stage_for_upload(first);
  cast.stage_for_upload(second);
  cast.end_frame().wait();
  expect_per_device(FaultSite::copy, copies, 2, "spans apart");
  EXPECT_EQ(cast.last_frame().copy_bytes, std::size_t{16} << 10);
  expect_on_devices(first);
  expect_on_devices(second);

  // Uploads: their payloads join the run; one table copy and one scatter per device.
  Replicated<std::uint32_t> dst(devices, 64);
  cast.begin_frame();
  copies = calls(FaultSite::copy);
  const auto scatters = calls(FaultSite::scatter_launch);
  auto span = cast.frame_alloc<std::byte>(8 << 10);
  std::fill(span.begin(), span.end(), std::byte{0x33});
  cast.stage_for_upload(span);
  for (std::uint32_t u = 0; u < 3; ++u) {
    const std::array<std::uint32_t, 4> values{u, u + 1, u + 2, u + 3};
    cast.upload<std::uint32_t>(dst, u * 8, values);
  }
  cast.end_frame().wait();
  expect_per_device(FaultSite::copy, copies, 2, "span and uploads");
  expect_per_device(FaultSite::scatter_launch, scatters, 1, "span and uploads");
  EXPECT_EQ(cast.last_frame().uploads, 3u);
  expect_on_devices(span);
  for (std::size_t k = 0; k < devices.size(); ++k) {
    const auto got = dst.to_host(k);
    for (std::uint32_t u = 0; u < 3; ++u) {
      for (std::uint32_t i = 0; i < 4; ++i)
        EXPECT_EQ(got[u * 8 + i], u + i) << "device " << k;
    }
  }
}

}  // namespace
}  // namespace framestage
