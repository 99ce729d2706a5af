// Shared support for the GPU test suites (test_cuda_*.cu): a fixture that owns a CudaBackend and
// skips where no device is present, quick mode for runs under compute-sanitizer, and helpers to
// fill, read back and compare device memory byte for byte.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/cuda_backend.hpp>

#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace framestage::testing {

/// Throws std::runtime_error (a test failure in GoogleTest) if a CUDA call the test makes itself
/// fails; the library's own calls are checked by the library.
#define FRAMESTAGE_TEST_CUDA(call) \
  ::framestage::testing::check_cuda((call), #call, __FILE__, __LINE__)

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ") at " + file + ":" +
                           std::to_string(line));
}

/// True when FRAMESTAGE_TEST_QUICK is set to anything but "0". The GPU check sets it to 1 when it
/// runs these suites under compute-sanitizer, where everything is about 50 times slower.
inline bool quick_mode() {
  static const bool quick = [] {
    const char* value = std::getenv("FRAMESTAGE_TEST_QUICK");
    return value != nullptr && *value != '\0' && std::string_view(value) != "0";
  }();
  return quick;
}

/// Says once per process that quick mode is on, so a log shows the reduced sizes.
inline void announce_quick_mode() {
  static const bool announced = [] {
    if (quick_mode()) {
      std::printf("[ quick    ] FRAMESTAGE_TEST_QUICK is set: sizes and frame counts reduced\n");
    }
    return true;
  }();
  static_cast<void>(announced);
}

/// Item counts a test may use: `wanted`, or at most 20,000 in quick mode.
inline std::size_t scaled_items(std::size_t wanted) {
  return quick_mode() ? std::min<std::size_t>(wanted, 20'000) : wanted;
}

/// Frame counts a test may use: `wanted`, or at most 40 in quick mode.
inline std::uint64_t scaled_frames(std::uint64_t wanted) {
  return quick_mode() ? std::min<std::uint64_t>(wanted, 40) : wanted;
}

/// The cudaStream_t behind a StreamView, for a test's own launches.
inline cudaStream_t native(StreamView stream) {
  return static_cast<cudaStream_t>(stream.native());
}

/// Prints the seed so a failure can be replayed, and returns it.
inline std::uint64_t announce_seed(std::uint64_t seed) {
  std::printf("[ seed     ] %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

/// Fills `bytes` with random bytes, 8 per draw.
inline void fill_random(std::span<std::byte> bytes, std::mt19937_64& rng) {
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    const std::uint64_t word = rng();
    std::memcpy(bytes.data() + i, &word, 8);
  }
  if (i < bytes.size()) {
    const std::uint64_t word = rng();
    std::memcpy(bytes.data() + i, &word, bytes.size() - i);
  }
}

/// Byte-for-byte comparison that names the first differing offset and how many bytes differ.
inline ::testing::AssertionResult bytes_equal(std::span<const std::byte> got,
                                              std::span<const std::byte> want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " instead of " << want.size();
  }
  if (std::memcmp(got.data(), want.data(), got.size()) == 0) return ::testing::AssertionSuccess();
  std::size_t first = 0;
  while (got[first] == want[first])
    ++first;
  std::size_t differing = 0;
  for (std::size_t i = first; i < got.size(); ++i)
    differing += got[i] != want[i] ? 1 : 0;
  return ::testing::AssertionFailure()
         << differing << " of " << got.size() << " bytes differ; the first at offset " << first
         << ": got 0x" << std::hex << static_cast<unsigned>(got[first]) << ", want 0x"
         << static_cast<unsigned>(want[first]) << std::dec;
}

template <class T>
std::span<const std::byte> as_bytes_of(const std::vector<T>& values) {
  return std::as_bytes(std::span<const T>(values));
}

/// Synchronous host-to-device write for setting a test up, outside the code under test.
inline void write_device(void* device_dst, std::span<const std::byte> src) {
  FRAMESTAGE_TEST_CUDA(cudaMemcpy(device_dst, src.data(), src.size(), cudaMemcpyHostToDevice));
}

/// Device time from the global nanosecond timer, which runs whatever the SM clocks do.
__device__ inline std::uint64_t global_timer_ns() {
  std::uint64_t ns = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return ns;
}

/// Spins the calling thread until the host sets `*go` (mapped pinned memory) or `max_hold_ns`
/// of device time have passed. The limit keeps a test that fails early from hanging the GPU.
__device__ inline void hold_until_released(const int* go, std::uint64_t max_hold_ns) {
  const std::uint64_t start = global_timer_ns();
  while (*static_cast<const volatile int*>(go) == 0 && global_timer_ns() - start < max_hold_ns) {
  }
}

/// Holds kernels for at most this long when only the host is meant to release them.
inline constexpr std::uint64_t kSafetyHoldNs = 10'000'000'000ull;

/// A mapped pinned int that kernels spin on (hold_until_released) until the host sets it.
/// Released on destruction, so a failed assertion never leaves a kernel spinning.
class ReleaseFlag {
 public:
  explicit ReleaseFlag(Backend& backend)
      : block_(backend, MemoryKind::pinned, sizeof(int)),
        device_(static_cast<const int*>(backend.mapped_device_address(block_.data()))) {
    reset();
  }
  ReleaseFlag(const ReleaseFlag&) = delete;
  ReleaseFlag& operator=(const ReleaseFlag&) = delete;
  ~ReleaseFlag() { release(); }

  /// The address kernels read the flag at.
  [[nodiscard]] const int* device() const noexcept { return device_; }
  void release() noexcept { std::atomic_ref<int>(host()).store(1, std::memory_order_release); }
  /// Only while no kernel spins on the flag.
  void reset() noexcept { std::atomic_ref<int>(host()).store(0, std::memory_order_release); }

 private:
  int& host() const noexcept { return *reinterpret_cast<int*>(block_.data()); }
  MemoryBlock block_;
  const int* device_;
};

/// Base of every GPU test fixture: skips with the reason where device 0 cannot be used, and owns
/// the CudaBackend the test runs on. `Base` is ::testing::Test or a ::testing::TestWithParam.
template <class Base = ::testing::Test>
class CudaFixture : public Base {
 protected:
  void SetUp() override {
    if (const auto reason = CudaBackend::unavailable_reason(0)) {
      GTEST_SKIP() << "no CUDA device, skipping GPU test: " << *reason;
    }
    announce_quick_mode();
    backend_ = std::make_unique<CudaBackend>(0);
  }

  [[nodiscard]] CudaBackend& backend() const { return *backend_; }

  /// Synchronous read of `count` elements at `device_src` (backend.read_device).
  template <class T>
  [[nodiscard]] std::vector<T> read_back(const T* device_src, std::size_t count) const {
    std::vector<T> out(count);
    if (count > 0) backend_->read_device(out.data(), device_src, count * sizeof(T));
    return out;
  }

 private:
  std::unique_ptr<CudaBackend> backend_;
};

using CudaTest = CudaFixture<>;

}  // namespace framestage::testing
