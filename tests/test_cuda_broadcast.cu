// Broadcast on real devices: devices 0 and 1 where there are two (skipped otherwise, saying how
// many there are), and two CudaBackends on device 0, which exercises the same CUDA path on a
// one-GPU machine. Each over both routes and single and triple buffering: random frames checked
// byte for byte on every device, one large span as one copy per device, a slot that a held
// kernel on the last device still reads, and a held device timing begin_frame out by name.
// FRAMESTAGE_TEST_QUICK=1 shrinks the sizes (compute-sanitizer).
#include <framestage/broadcast.hpp>
#include <framestage/cuda_backend.hpp>

#include "cuda_test_support.cuh"
#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace framestage {
namespace {

using testing::announce_seed;
using testing::bytes_equal;
using testing::fill_random;
using testing::quick_mode;
using testing::ReleaseFlag;
using testing::throws_error;

using testing::native;

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return 0;
  }
  return count;
}

/// Makes `device` current for one scope (to launch a test kernel on that device's stream).
class CurrentDevice {
 public:
  explicit CurrentDevice(int device) {
    FRAMESTAGE_TEST_CUDA(cudaGetDevice(&previous_));
    FRAMESTAGE_TEST_CUDA(cudaSetDevice(device));
  }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;
  ~CurrentDevice() { static_cast<void>(cudaSetDevice(previous_)); }

 private:
  int previous_ = 0;
};

enum class Targets { two_devices, device_0_twice };

struct Mode {
  Targets targets;
  BroadcastRoute route;
  std::uint32_t buffering;
};

std::string mode_name(const Mode& m) {
  return std::string(m.targets == Targets::two_devices ? "devices_0_1_" : "device_0_twice_") +
         std::string(to_string(m.route)) + "_" + std::to_string(m.buffering) + "_slots";
}

void PrintTo(const Mode& mode, std::ostream* out) {
  *out << mode_name(mode);
}

class CudaBroadcast : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    const int count = cuda_device_count();
    if (count == 0) {
      GTEST_SKIP() << "no CUDA device, skipping GPU test: "
                   << CudaBackend::unavailable_reason(0).value_or("none found");
    }
    if (GetParam().targets == Targets::two_devices && count < 2) {
      GTEST_SKIP() << "needs 2 CUDA devices, found " << count;
    }
    testing::announce_quick_mode();
    ordinals_ = GetParam().targets == Targets::two_devices ? std::vector<int>{0, 1}
                                                           : std::vector<int>{0, 0};
    for (const int ordinal : ordinals_) {
      backends_.push_back(std::make_unique<CudaBackend>(ordinal));
      devices_.push_back(backends_.back().get());
    }
  }

  [[nodiscard]] Config config(std::size_t arena_bytes) const {
    Config c;
    c.buffering = GetParam().buffering;
    c.arena_bytes = arena_bytes;
    c.max_uploads_per_frame = 4096;
    return c;
  }
  /// Broadcast is not movable: this returns a prvalue, constructed in the caller's variable.
  [[nodiscard]] Broadcast make(std::size_t arena_bytes) const {
    return Broadcast(config(arena_bytes), devices_, GetParam().route);
  }

  [[nodiscard]] std::size_t n() const { return devices_.size(); }
  [[nodiscard]] int ordinal(std::size_t k) const { return ordinals_[k]; }
  [[nodiscard]] std::vector<Backend*>& devices() { return devices_; }

  template <class T>
  [[nodiscard]] std::vector<T> read_back(std::size_t k, const T* device, std::size_t count) const {
    std::vector<T> out(count);
    if (count > 0) backends_[k]->read_device(out.data(), device, count * sizeof(T));
    return out;
  }

 private:
  std::vector<int> ordinals_;
  std::vector<std::unique_ptr<CudaBackend>> backends_;
  std::vector<Backend*> devices_;
};

// Spans of several sizes (most staged) and uploads into a replicated buffer, disjoint in even
// frames (one scatter per device) and overlapping in odd ones (ordered copies, last one wins);
// every staged byte and every destination byte checked on every device after each frame.
TEST_P(CudaBroadcast, RandomFramesArriveByteExactOnEveryDevice) {
  const std::uint64_t seed = announce_seed(20260518);
  std::mt19937_64 rng(seed);
  Broadcast cast = make(std::size_t{48} << 20);  // room for 5 spans of 8 MiB and the uploads
  constexpr std::size_t kDestination = std::size_t{1} << 20;
  constexpr std::size_t kSlot = 4096;
  Replicated<std::byte> dst(devices(), kDestination);
  std::vector<std::byte> expected(kDestination, std::byte{0});
  cast.begin_frame();
  cast.upload<std::byte>(dst, 0, expected);
  cast.end_frame().wait();

  const std::array<std::size_t, 7> sizes{
      1,  17, 4096, 65539, (std::size_t{1} << 20) + 3, quick_mode() ? 4096 : std::size_t{8} << 20,
      256};
  struct Staged {
    FrameSpan<std::byte> span;
    std::vector<std::byte> bytes;
  };
  const int frames = quick_mode() ? 4 : 16;
  for (int f = 0; f < frames; ++f) {
    cast.begin_frame();
    std::vector<Staged> staged;
    const std::size_t spans = 1 + rng() % 5;
    for (std::size_t s = 0; s < spans; ++s) {
      auto span = cast.frame_alloc<std::byte>(sizes[rng() % sizes.size()]);
      fill_random(span, rng);
      if (rng() % 4 != 0) {
        cast.stage_for_upload(span);
        staged.push_back({span, std::vector<std::byte>(span.begin(), span.end())});
      }
    }
    const bool disjoint = f % 2 == 0;
    std::vector<std::size_t> slots(kDestination / kSlot);
    std::iota(slots.begin(), slots.end(), std::size_t{0});
    std::shuffle(slots.begin(), slots.end(), rng);
    const std::size_t uploads = 1 + rng() % 200;
    for (std::size_t u = 0; u < uploads; ++u) {
      const std::size_t bytes = 1 + rng() % (disjoint ? kSlot : 3000);
      const std::size_t offset = disjoint ? slots[u] * kSlot + rng() % (kSlot - bytes + 1)
                                          : rng() % (kDestination - bytes);
      std::vector<std::byte> src(bytes);
      fill_random(src, rng);
      cast.upload<std::byte>(dst, offset, src);
      std::copy(src.begin(), src.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
      if (!disjoint && u == 0) {
        fill_random(src, rng);
        cast.upload<std::byte>(dst, offset, src);  // the same range again: it must win
        std::copy(src.begin(), src.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
      }
    }
    const BroadcastTicket ticket = cast.end_frame();
    ticket.wait();
    EXPECT_EQ(cast.last_frame().devices_with_overlaps, disjoint ? 0 : n()) << "frame " << f;
    for (std::size_t k = 0; k < n(); ++k) {
      ASSERT_TRUE(bytes_equal(testing::as_bytes_of(dst.to_host(k)), testing::as_bytes_of(expected)))
          << "destination, device " << k << ", frame " << ticket.frame();
      for (const Staged& s : staged) {
        ASSERT_TRUE(bytes_equal(
            testing::as_bytes_of(read_back(k, cast.device_ptr(s.span, k), s.span.size())),
            testing::as_bytes_of(s.bytes)))
            << "span of " << s.span.size() << " bytes, device " << k << ", frame "
            << ticket.frame();
      }
    }
  }
}

// One contiguous span: one copy per device, and every byte there.
TEST_P(CudaBroadcast, OneLargeSpanIsOneCopyPerDevice) {
  const std::size_t bytes = quick_mode() ? std::size_t{4} << 20 : std::size_t{64} << 20;
  Broadcast cast = make(bytes + (std::size_t{1} << 20));
  std::mt19937_64 rng(announce_seed(7));
  for (int f = 0; f < 3; ++f) {
    cast.begin_frame();
    auto span = cast.frame_alloc<std::byte>(bytes);
    fill_random(span, rng);
    cast.stage_for_upload(span);
    cast.end_frame().wait();
    EXPECT_EQ(cast.last_frame().copy_runs, 1u);
    EXPECT_EQ(cast.last_frame().copy_bytes, bytes);
    for (std::size_t k = 0; k < n(); ++k) {
      ASSERT_TRUE(bytes_equal(testing::as_bytes_of(read_back(k, cast.device_ptr(span, k), bytes)),
                              std::as_bytes(std::span<const std::byte>(span))))
          << "device " << k << ", frame " << f;
    }
  }
}

/// Holds for `hold_ns` of device time (or until `go`), then copies the frame's mirror out.
__global__ void hold_then_copy_kernel(const int* go, std::uint64_t hold_ns,
                                      const std::uint32_t* mirror, std::uint32_t* out,
                                      std::size_t count) {
  if (threadIdx.x == 0) testing::hold_until_released(go, hold_ns);
  __syncthreads();
  for (std::size_t i = threadIdx.x; i < count; i += blockDim.x)
    out[i] = mirror[i];
}

std::uint32_t frame_value(std::uint64_t frame, std::size_t i) {
  return static_cast<std::uint32_t>(frame * 2654435761u + i);
}

// Frame N's kernel on the last device holds ~50 ms before it reads the frame's mirror there,
// while the host runs the next `buffering` frames, the last of which reuses N's slot with other
// data. Only if begin_frame waited for that device's readers does the kernel copy frame N's data.
TEST_P(CudaBroadcast, SlotIsNotReusedWhileTheLastDevicesKernelReadsIt) {
  constexpr std::uint64_t kHoldNs = 50'000'000;
  constexpr std::size_t kCount = 16384;
  const std::size_t last = n() - 1;
  Broadcast cast = make(std::size_t{1} << 20);
  ReleaseFlag go(cast.backend(last));
  DeviceBuffer<std::uint32_t> out(cast.backend(last), kCount);
  const auto stage_frame = [&cast] {
    auto span = cast.frame_alloc<std::uint32_t>(kCount);
    for (std::size_t i = 0; i < kCount; ++i)
      span[i] = frame_value(cast.current_frame(), i);
    cast.stage_for_upload(span);
    return span;
  };
  cast.begin_frame();
  const std::uint64_t held_frame = cast.current_frame();
  const auto held_span = stage_frame();
  const BroadcastTicket held = cast.end_frame();
  {
    const CurrentDevice on(ordinal(last));
    hold_then_copy_kernel<<<1, 256, 0, native(held.stream(last))>>>(
        go.device(), kHoldNs, cast.device_ptr(held_span, last), out.data(), kCount);
    FRAMESTAGE_TEST_CUDA(cudaGetLastError());
  }
  BroadcastTicket reused = held;
  for (std::uint32_t j = 0; j < GetParam().buffering; ++j) {
    cast.begin_frame();
    static_cast<void>(stage_frame());
    reused = cast.end_frame();
  }
  ASSERT_EQ(reused.slot(), held.slot()) << "the test expects frame N + buffering in N's slot";
  reused.wait();
  go.release();
  cast.synchronize();
  const auto copied = read_back(last, out.data(), kCount);
  for (std::size_t i = 0; i < kCount; ++i)
    ASSERT_EQ(copied[i], frame_value(held_frame, i)) << "element " << i;
}

__global__ void hold_kernel(const int* go, std::uint64_t max_hold_ns) {
  testing::hold_until_released(go, max_hold_ns);
}

// A kernel on the last device holds until released: the frame that would reuse its slot times
// out naming that device, opens nothing, and goes ahead once the kernel is released.
TEST_P(CudaBroadcast, AHeldDeviceTimesBeginFrameOutByName) {
  const std::size_t last = n() - 1;
  Config c = config(std::size_t{1} << 20);
  c.slot_timeout_ms = 20;
  Broadcast cast(c, devices(), GetParam().route);
  ReleaseFlag go(cast.backend(last));
  cast.begin_frame();
  auto span = cast.frame_alloc<std::uint32_t>(1024);
  std::fill(span.begin(), span.end(), 7u);
  cast.stage_for_upload(span);
  const BroadcastTicket held = cast.end_frame();
  {
    const CurrentDevice on(ordinal(last));
    hold_kernel<<<1, 1, 0, native(held.stream(last))>>>(go.device(), testing::kSafetyHoldNs);
    FRAMESTAGE_TEST_CUDA(cudaGetLastError());
  }
  for (std::uint32_t j = 1; j < GetParam().buffering; ++j) {
    cast.begin_frame();
    (void)cast.end_frame();
  }
  const std::string busy = "slot " + std::to_string(held.slot()) +
                           " (frame 1) still busy on device " + std::to_string(last);
  EXPECT_TRUE(throws_error(ErrorCategory::timeout, busy, [&] { cast.begin_frame(); }));
  EXPECT_FALSE(cast.frame_open());
  EXPECT_FALSE(cast.failed());
  go.release();
  cast.begin_frame();
  EXPECT_EQ(cast.current_frame(), GetParam().buffering + 1u);
  (void)cast.end_frame();
  cast.synchronize();
}

std::vector<Mode> all_modes() {
  std::vector<Mode> modes;
  for (const Targets targets : {Targets::two_devices, Targets::device_0_twice}) {
    for (const BroadcastRoute route :
         {BroadcastRoute::from_host, BroadcastRoute::via_first_device}) {
      for (const std::uint32_t buffering : {1u, 3u})
        modes.push_back({targets, route, buffering});
    }
  }
  return modes;
}

INSTANTIATE_TEST_SUITE_P(Targets, CudaBroadcast, ::testing::ValuesIn(all_modes()),
                         [](const auto& param_info) { return mode_name(param_info.param); });

}  // namespace
}  // namespace framestage
