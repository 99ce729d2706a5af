// The Coordinator on a real device, parameterised over upload strategy and buffering depth:
// random frames checked byte for byte on the host, long loops whose kernels check every frame on
// the device, and a slot whose mirror a held kernel still reads. Every test skips itself where
// no CUDA device is present; FRAMESTAGE_TEST_QUICK=1 shrinks the sizes (compute-sanitizer).
#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>
#include <framestage/device_buffer.hpp>

#include "cuda_test_support.cuh"

#include <gtest/gtest.h>

#include <cuda_runtime.h>
#include <thrust/count.h>
#include <thrust/device_ptr.h>
#include <thrust/equal.h>
#include <thrust/execution_policy.h>
#include <thrust/find.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/reduce.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
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
using testing::scaled_frames;
using testing::scaled_items;
using testing::write_device;

constexpr std::byte kPoison{0xa5};

using testing::native;

struct Mode {
  UploadStrategy strategy;
  std::uint32_t buffering;
};

std::string strategy_name(UploadStrategy strategy) {
  switch (strategy) {
    case UploadStrategy::automatic:
      return "automatic";
    case UploadStrategy::copy_scatter:
      return "copy_scatter";
    case UploadStrategy::zero_copy:
      return "zero_copy";
    case UploadStrategy::direct:
      return "direct";
  }
  return "unknown";
}

void PrintTo(const Mode& mode, std::ostream* out) {
  *out << strategy_name(mode.strategy) << ", " << mode.buffering << " slots";
}

class CudaCoordinator : public testing::CudaFixture<::testing::TestWithParam<Mode>> {
 protected:
  [[nodiscard]] Config config(std::size_t arena_bytes, std::size_t upload_arena_bytes,
                              std::size_t max_uploads) const {
    Config c;
    c.buffering = GetParam().buffering;
    c.strategy = GetParam().strategy;
    c.arena_bytes = arena_bytes;
    c.upload_arena_bytes = upload_arena_bytes;
    c.max_uploads_per_frame = max_uploads;
    return c;
  }
};

// ---------------------------------------------------------------------------------------------
// Random frames, checked on the host

/// Issues one frame's uploads and staged spans with random contents, keeps a host reference of
/// every destination byte, and after the frame compares the device with it byte for byte.
class FrameChecker {
 public:
  FrameChecker(Coordinator& coordinator, Backend& backend, std::size_t destination_bytes,
               std::uint64_t seed)
      : coordinator_(coordinator),
        backend_(backend),
        destination_(backend, destination_bytes),
        expected_(destination_bytes, kPoison),
        rng_(announce_seed(seed)) {
    write_device(destination_.data(), expected_);
  }

  std::mt19937_64& rng() { return rng_; }

  /// Uploads of `sizes` to disjoint ranges (0..15 bytes apart, any alignment) in random order,
  /// each through upload() or reserve_upload() at random.
  void disjoint_uploads(std::span<const std::size_t> sizes) {
    const std::size_t span_bytes =
        std::accumulate(sizes.begin(), sizes.end(), std::size_t{0}) + 15 * sizes.size();
    ASSERT_LE(span_bytes, expected_.size()) << "the test's destination is too small";
    std::size_t cursor = rng_() % (expected_.size() - span_bytes + 1);
    std::vector<std::pair<std::size_t, std::size_t>> placed;  // offset, bytes
    placed.reserve(sizes.size());
    for (std::size_t bytes : sizes) {
      cursor += rng_() % 16;
      placed.emplace_back(cursor, bytes);
      cursor += bytes;
    }
    std::shuffle(placed.begin(), placed.end(), rng_);
    for (const auto& [offset, bytes] : placed)
      upload(offset, bytes, rng_() % 2 == 0);
  }

  /// `count` uploads of 1..max_bytes at random offsets inside a `window_bytes` window, so many
  /// overlap: the last issued must win byte for byte. Also a wide upload under the small ones
  /// and another over them, so large (direct) and small uploads overlap too.
  void overlapping_uploads(std::size_t count, std::size_t window_bytes, std::size_t max_bytes) {
    ASSERT_LE(window_bytes, expected_.size());
    const std::size_t window = rng_() % (expected_.size() - window_bytes + 1);
    upload(window, window_bytes, false);
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t bytes = 1 + rng_() % max_bytes;
      upload(window + rng_() % (window_bytes - bytes + 1), bytes, rng_() % 2 == 0);
    }
    upload(window + window_bytes / 3, window_bytes / 2 + 1, true);
    for (std::size_t i = 0; i < count / 10; ++i) {
      const std::size_t bytes = 1 + rng_() % max_bytes;
      upload(window + rng_() % (window_bytes - bytes + 1), bytes, rng_() % 2 == 0);
    }
  }

  /// A frame_alloc span of `count` T with random bytes, staged for the device mirror.
  template <class T>
  void staged_span(std::size_t count) {
    const FrameSpan<T> span = coordinator_.frame_alloc<T>(count);
    const auto bytes = std::as_writable_bytes(std::span<T>(span));
    fill_random(bytes, rng_);
    coordinator_.stage_for_upload(span);
    staged_.push_back({FrameSpan<std::byte>(bytes, span.frame()),
                       std::vector<std::byte>(bytes.begin(), bytes.end())});
  }

  /// Ends the frame, waits for it, and compares every destination byte and every staged span's
  /// mirror (through device_ptr) with the reference.
  ::testing::AssertionResult end_and_check() {
    const FrameTicket ticket = coordinator_.end_frame();
    ticket.wait();
    std::vector<std::byte> got(expected_.size());
    backend_.read_device(got.data(), destination_.data(), got.size());
    if (auto same = bytes_equal(got, expected_); !same) {
      return same << " (uploads of frame " << ticket.frame() << ")";
    }
    for (std::size_t i = 0; i < staged_.size(); ++i) {
      const auto& [span, want] = staged_[i];
      std::vector<std::byte> mirrored(want.size());
      backend_.read_device(mirrored.data(), coordinator_.device_ptr(span), want.size());
      if (auto same = bytes_equal(mirrored, want); !same) {
        return same << " (staged span " << i << " of frame " << ticket.frame() << ", "
                    << want.size() << " bytes)";
      }
    }
    staged_.clear();
    return ::testing::AssertionSuccess();
  }

 private:
  void upload(std::size_t offset, std::size_t bytes, bool reserve) {
    std::byte* target = destination_.data() + offset;
    std::span<std::byte> written;
    if (reserve) {
      const FrameSpan<std::byte> span = coordinator_.reserve_upload<std::byte>(target, bytes);
      fill_random(span, rng_);
      written = span;
    } else {
      scratch_.resize(bytes);
      fill_random(scratch_, rng_);
      coordinator_.upload<std::byte>(target, scratch_);
      written = scratch_;
    }
    std::memcpy(expected_.data() + offset, written.data(), bytes);
  }

  struct Staged {
    FrameSpan<std::byte> span;
    std::vector<std::byte> bytes;
  };

  Coordinator& coordinator_;
  Backend& backend_;
  DeviceBuffer<std::byte> destination_;
  std::vector<std::byte> expected_;
  std::vector<std::byte> scratch_;
  std::vector<Staged> staged_;
  std::mt19937_64 rng_;
};

struct alignas(16) Vec4 {
  float v[4];
};

std::vector<std::size_t> random_sizes(std::size_t count, std::size_t small_max,
                                      std::size_t large_max, std::mt19937_64& rng) {
  std::vector<std::size_t> sizes(count);
  for (auto& s : sizes)
    s = 1 + rng() % (rng() % 16 == 0 ? large_max : small_max);
  return sizes;
}

// Frames of every shape in turn: one byte, a few, large items up to 4 MiB, 20,000 in random
// order, overlapping, and 200,000 tiny ones; each with staged spans of three element types.
TEST_P(CudaCoordinator, RandomFramesArriveByteExact) {
  Coordinator c(config(64 << 20, 64 << 20, 1 << 18), backend());
  FrameChecker frames(
      c, backend(), 24 << 20,
      7000 + 10 * static_cast<std::uint64_t>(GetParam().strategy) + GetParam().buffering);
  auto& rng = frames.rng();
  enum class Shape { one_byte, few, large, random_order, overlapping, most_items };
  const Shape shapes[] = {
      Shape::one_byte,   Shape::few,         Shape::large, Shape::random_order, Shape::overlapping,
      Shape::most_items, Shape::overlapping, Shape::large, Shape::random_order, Shape::one_byte};
  for (const Shape shape : shapes) {
    c.begin_frame();
    switch (shape) {
      case Shape::one_byte: {
        const std::size_t one[] = {1};
        frames.disjoint_uploads(one);
        break;
      }
      case Shape::few:
        frames.disjoint_uploads(random_sizes(7, 300, 300, rng));
        break;
      case Shape::large: {
        std::vector<std::size_t> sizes = random_sizes(50, 4096, 4096, rng);
        for (std::size_t big :
             {std::size_t{4} << 20, (std::size_t{4} << 20) - 1, (std::size_t{1} << 20) + 3,
              std::size_t{65537}, (std::size_t{300} << 10) + 5})
          sizes.push_back(big);
        frames.disjoint_uploads(sizes);
        frames.staged_span<Vec4>((std::size_t{4} << 20) / sizeof(Vec4));
        break;
      }
      case Shape::random_order:
        frames.disjoint_uploads(random_sizes(scaled_items(20'000), 512, 4096, rng));
        break;
      case Shape::overlapping:
        frames.overlapping_uploads(scaled_items(5000), 256 << 10, 2048);
        break;
      case Shape::most_items:
        frames.disjoint_uploads(random_sizes(scaled_items(200'000), 32, 32, rng));
        break;
    }
    frames.staged_span<std::uint8_t>(1 + 2 * (rng() % 2500));
    frames.staged_span<std::uint32_t>(1 + rng() % 100'000);
    frames.staged_span<Vec4>(1 + rng() % 1000);
    ASSERT_TRUE(frames.end_and_check()) << "frame " << c.current_frame();
  }
}

// A 64 KiB upload arena, a 64 KiB frame arena and a 64-entry descriptor table under
// OverflowPolicy::grow: each frame outgrows them part-way through, and every byte still arrives.
TEST_P(CudaCoordinator, GrowingArenasMidFrameDeliverEveryByte) {
  Config cfg = config(64 << 10, 64 << 10, 64);
  cfg.overflow = OverflowPolicy::grow;
  cfg.trim_after_frames = 2;
  Coordinator c(cfg, backend());
  FrameChecker frames(
      c, backend(), 8 << 20,
      8000 + 10 * static_cast<std::uint64_t>(GetParam().strategy) + GetParam().buffering);
  auto& rng = frames.rng();
  for (int f = 0; f < 8; ++f) {
    c.begin_frame();
    frames.disjoint_uploads(random_sizes(40, 512, 512, rng));  // fits
    frames.staged_span<std::uint32_t>(1000);                   // fits
    if (f % 3 != 2) {                                          // then outgrows everything
      frames.disjoint_uploads(random_sizes(600, 4096, 64 << 10, rng));
      frames.staged_span<std::uint8_t>((200 << 10) + 1);
      frames.overlapping_uploads(200, 128 << 10, 1024);
    }
    ASSERT_TRUE(frames.end_and_check()) << "frame " << c.current_frame();
  }
}

// ---------------------------------------------------------------------------------------------
// Long loops, checked on the device by each frame's own kernel

constexpr std::uint32_t kMirrorSalt = 0x1000'0000;
constexpr std::uint32_t kSmallSalt = 0x2000'0000;
constexpr std::uint32_t kLargeSalt = 0x3000'0000;

/// What the host writes at `index` in `frame`: differs between neighbours and between frames.
__host__ __device__ inline std::uint32_t frame_value(std::uint64_t frame, std::uint64_t index,
                                                     std::uint32_t salt) {
  std::uint64_t x = frame * 0x9e3779b97f4a7c15ull ^ (index + salt) * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 31;
  return static_cast<std::uint32_t>(x) ^ static_cast<std::uint32_t>(x >> 32);
}

/// frame_value of one frame and salt, as a function of the index (for Thrust iterators).
struct FrameValueAt {
  std::uint64_t frame;
  std::uint32_t salt;
  __host__ __device__ std::uint32_t operator()(std::size_t index) const {
    return frame_value(frame, index, salt);
  }
};

struct IsNonZero {
  __host__ __device__ bool operator()(unsigned n) const { return n != 0; }
};

/// One frame's data as its kernel sees it.
struct FrameData {
  std::uint64_t frame;
  const std::uint32_t* mirror;  ///< device_ptr of the frame's staged span
  std::size_t mirror_count;
  const std::uint32_t* small;  ///< rewritten by most frames
  std::size_t small_count;
  std::uint64_t small_frame;   ///< the frame that last wrote `small`
  const std::uint32_t* large;  ///< rewritten by some frames
  std::size_t large_count;
  std::uint64_t large_frame;  ///< the frame that last wrote `large`
  unsigned* mismatches;       ///< this frame's counter
};

__global__ void count_mismatches_kernel(FrameData d) {
  std::size_t n = d.mirror_count > d.small_count ? d.mirror_count : d.small_count;
  if (d.large_count > n) n = d.large_count;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  unsigned bad = 0;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    if (i < d.mirror_count && d.mirror[i] != frame_value(d.frame, i, kMirrorSalt)) ++bad;
    if (i < d.small_count && d.small[i] != frame_value(d.small_frame, i, kSmallSalt)) ++bad;
    if (i < d.large_count && d.large[i] != frame_value(d.large_frame, i, kLargeSalt)) ++bad;
  }
  if (bad != 0) atomicAdd(d.mismatches, bad);
}

/// Writes elements [first, first + count) of `dst` with frame_value, through upload() or
/// reserve_upload().
void upload_values(Coordinator& c, std::uint32_t* dst, std::size_t first, std::size_t count,
                   std::uint32_t salt, bool reserve, std::vector<std::uint32_t>& scratch) {
  const std::uint64_t frame = c.current_frame();
  if (reserve) {
    const FrameSpan<std::uint32_t> span = c.reserve_upload<std::uint32_t>(dst + first, count);
    for (std::size_t i = 0; i < count; ++i)
      span[i] = frame_value(frame, first + i, salt);
  } else {
    scratch.resize(count);
    for (std::size_t i = 0; i < count; ++i)
      scratch[i] = frame_value(frame, first + i, salt);
    c.upload<std::uint32_t>(dst + first, scratch);
  }
}

/// Element ranges covering [0, count) in pieces of 1..max_piece, in random order.
std::vector<std::pair<std::size_t, std::size_t>> random_pieces(std::size_t count,
                                                               std::size_t max_piece,
                                                               std::mt19937_64& rng) {
  std::vector<std::pair<std::size_t, std::size_t>> pieces;
  for (std::size_t first = 0; first < count;) {
    const std::size_t n = std::min(count - first, 1 + rng() % max_piece);
    pieces.emplace_back(first, n);
    first += n;
  }
  std::shuffle(pieces.begin(), pieces.end(), rng);
  return pieces;
}

/// Runs `frames` frames. Each stages a span and rewrites a small buffer in small pieces; every
/// third frame rewrites a large buffer in pieces, every third as one piece beyond the direct
/// threshold, and the rest leave it alone. Every fifth frame instead only stages a 4 MiB span
/// and uploads nothing, so its kernel has no scatter or direct copy to queue behind: only the
/// coordinator's own wait orders it after the span's copy. Each frame's kernel, on the ticket's
/// stream, counts what differs from what the host wrote; at the end, Thrust sums the counters
/// on the device.
void run_device_checked_loop(Coordinator& c, Backend& backend, StreamView expected_stream,
                             std::uint64_t seed) {
  const std::uint64_t frames = scaled_frames(300);
  const std::size_t small_count = 4096;
  const std::size_t large_count = scaled_items(100'000);
  std::mt19937_64 rng(announce_seed(seed));
  DeviceBuffer<std::uint32_t> small(backend, small_count);
  DeviceBuffer<std::uint32_t> large(backend, large_count);
  DeviceBuffer<unsigned> mismatches(backend, frames);
  write_device(mismatches.data(), testing::as_bytes_of(std::vector<unsigned>(frames, 0)));
  std::vector<std::uint32_t> scratch;

  // Frame 0's contents of `large` (no frame writes frame 0): written before the loop.
  std::vector<std::uint32_t> initial(large_count);
  for (std::size_t i = 0; i < large_count; ++i)
    initial[i] = frame_value(0, i, kLargeSalt);
  write_device(large.data(), testing::as_bytes_of(initial));

  std::uint64_t first_frame = 0;
  std::uint64_t small_frame = 0;  // `small` is all written by the first frame
  std::uint64_t large_frame = 0;
  StreamView last_stream;
  for (std::uint64_t k = 0; k < frames; ++k) {
    c.begin_frame();
    const std::uint64_t frame = c.current_frame();
    if (k == 0) first_frame = frame;

    const bool staged_only = k % 5 == 4;
    const FrameSpan<std::uint32_t> mirror = c.frame_alloc<std::uint32_t>(
        staged_only ? scaled_items(std::size_t{1} << 20) : 1000 + rng() % 20'000);
    for (std::size_t i = 0; i < mirror.size(); ++i)
      mirror[i] = frame_value(frame, i, kMirrorSalt);
    c.stage_for_upload(mirror);

    if (!staged_only) {
      for (const auto& [first, n] : random_pieces(small_count, 64, rng))
        upload_values(c, small.data(), first, n, kSmallSalt, rng() % 2 == 0, scratch);
      small_frame = frame;
      if (k % 3 == 0) {
        for (const auto& [first, n] : random_pieces(large_count, 1000, rng))
          upload_values(c, large.data(), first, n, kLargeSalt, rng() % 2 == 0, scratch);
        large_frame = frame;
      } else if (k % 3 == 1) {
        upload_values(c, large.data(), 0, large_count, kLargeSalt, k % 2 == 0, scratch);
        large_frame = frame;
      }
    }

    const FrameTicket ticket = c.end_frame();
    if (expected_stream != StreamView{}) ASSERT_EQ(ticket.stream(), expected_stream);
    const FrameData data{frame,       c.device_ptr(mirror), mirror.size(), small.data(),
                         small_count, small_frame,          large.data(),  large_count,
                         large_frame, mismatches.data() + k};
    count_mismatches_kernel<<<64, 256, 0, native(ticket.stream())>>>(data);
    FRAMESTAGE_TEST_CUDA(cudaGetLastError());
    last_stream = ticket.stream();
  }
  c.synchronize();
  FRAMESTAGE_TEST_CUDA(cudaStreamSynchronize(native(last_stream)));

  // Thrust over DeviceBuffer memory, through thrust::device_ptr.
  const auto counters = thrust::device_pointer_cast(mismatches.data());
  const unsigned long long total =
      thrust::reduce(thrust::device, counters, counters + frames, 0ull);
  const auto clean = thrust::count(thrust::device, counters, counters + frames, 0u);
  const auto first_bad = thrust::find_if(thrust::device, counters, counters + frames, IsNonZero{});
  EXPECT_EQ(total, 0u) << frames - static_cast<std::uint64_t>(clean) << " of " << frames
                       << " frames saw wrong data, the first frame "
                       << first_frame + static_cast<std::uint64_t>(first_bad - counters);

  // The buffers end as the last frames wrote them.
  const auto small_data = thrust::device_pointer_cast(small.data());
  const auto large_data = thrust::device_pointer_cast(large.data());
  const thrust::counting_iterator<std::size_t> index(0);
  EXPECT_TRUE(
      thrust::equal(thrust::device, small_data, small_data + small_count,
                    thrust::make_transform_iterator(index, FrameValueAt{small_frame, kSmallSalt})));
  EXPECT_TRUE(
      thrust::equal(thrust::device, large_data, large_data + large_count,
                    thrust::make_transform_iterator(index, FrameValueAt{large_frame, kLargeSalt})));
}

TEST_P(CudaCoordinator, KernelsOnTheTicketStreamSeeEveryFrame) {
  Coordinator c(config(8 << 20, 2 << 20, 4096), backend());
  run_device_checked_loop(
      c, backend(), StreamView{},
      9000 + 10 * static_cast<std::uint64_t>(GetParam().strategy) + GetParam().buffering);
}

/// A stream the test creates with the CUDA runtime, as a user would.
class UserStream {
 public:
  UserStream() { FRAMESTAGE_TEST_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  UserStream(const UserStream&) = delete;
  UserStream& operator=(const UserStream&) = delete;
  ~UserStream() { static_cast<void>(cudaStreamDestroy(stream_)); }
  [[nodiscard]] StreamView view() const { return StreamView{stream_}; }

 private:
  cudaStream_t stream_ = nullptr;
};

TEST_P(CudaCoordinator, KernelsOnAUserConsumerStreamSeeEveryFrame) {
  const UserStream mine;  // outlives the coordinator
  Coordinator c(config(8 << 20, 2 << 20, 4096), backend());
  c.set_consumer_stream(mine.view());
  EXPECT_EQ(c.consumer_stream(), mine.view());
  run_device_checked_loop(
      c, backend(), mine.view(),
      9500 + 10 * static_cast<std::uint64_t>(GetParam().strategy) + GetParam().buffering);
  c.set_consumer_stream(StreamView{});
  c.synchronize();
}

// ---------------------------------------------------------------------------------------------
// A slot is not reused while a kernel of its frame may still read it

/// Holds for `hold_ns` of device time (or until `go`), then copies the frame's mirror out.
__global__ void hold_then_copy_kernel(const int* go, std::uint64_t hold_ns,
                                      const std::uint32_t* mirror, std::uint32_t* out,
                                      std::size_t count) {
  if (threadIdx.x == 0) testing::hold_until_released(go, hold_ns);
  __syncthreads();
  for (std::size_t i = threadIdx.x; i < count; i += blockDim.x)
    out[i] = mirror[i];
}

// Frame N's kernel holds ~50 ms before it reads the frame's mirror, while the host runs the next
// `buffering` frames, the last of which uses N's slot again with other data. Only if begin_frame
// waited for the kernel (the slot's retire event) does the kernel copy frame N's data. Once that
// last frame has arrived the host releases the kernel, so a coordinator that did not wait is
// caught reading overwritten data rather than by luck of timing.
TEST_P(CudaCoordinator, SlotIsNotReusedWhileAKernelStillReadsIt) {
  constexpr std::uint64_t kHoldNs = 50'000'000;
  constexpr std::size_t kCount = 16384;
  const std::size_t rounds = quick_mode() ? 2 : 4;
  Coordinator c(config(1 << 20, 1 << 20, 1024), backend());
  ReleaseFlag go(backend());
  DeviceBuffer<std::uint32_t> out(backend(), rounds * kCount);
  std::vector<std::uint64_t> held_frames;

  auto stage_frame_values = [&c] {
    const FrameSpan<std::uint32_t> span = c.frame_alloc<std::uint32_t>(kCount);
    for (std::size_t i = 0; i < kCount; ++i)
      span[i] = frame_value(c.current_frame(), i, kMirrorSalt);
    c.stage_for_upload(span);
    return span;
  };

  for (std::size_t r = 0; r < rounds; ++r) {
    go.reset();  // no kernel reads the flag now: the last round ended with synchronize()
    c.begin_frame();
    held_frames.push_back(c.current_frame());
    const FrameSpan<std::uint32_t> held_span = stage_frame_values();
    const FrameTicket held = c.end_frame();
    hold_then_copy_kernel<<<1, 256, 0, native(held.stream())>>>(
        go.device(), kHoldNs, c.device_ptr(held_span), out.data() + r * kCount, kCount);
    FRAMESTAGE_TEST_CUDA(cudaGetLastError());

    FrameTicket last = held;
    for (std::uint32_t j = 0; j < GetParam().buffering; ++j) {
      c.begin_frame();
      static_cast<void>(stage_frame_values());
      last = c.end_frame();
    }
    ASSERT_EQ(last.slot(), held.slot()) << "the test expects frame N + buffering in N's slot";
    last.wait();
    go.release();
    c.synchronize();
    FRAMESTAGE_TEST_CUDA(cudaStreamSynchronize(native(held.stream())));
  }

  const std::vector<std::uint32_t> copied = read_back(out.data(), rounds * kCount);
  for (std::size_t r = 0; r < rounds; ++r) {
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < kCount; ++i)
      wrong += copied[r * kCount + i] != frame_value(held_frames[r], i, kMirrorSalt) ? 1 : 0;
    EXPECT_EQ(wrong, 0u) << "frame " << held_frames[r] << "'s kernel read " << wrong
                         << " elements of another frame's data";
  }
}

// ---------------------------------------------------------------------------------------------
// upload_slice and upload between frames: one-off frames, as memkit-co's quick start writes them

/// Copies `count` elements of `src` to `dst` in a grid-stride loop: a kernel that reads the data.
__global__ void copy_elements_kernel(const std::uint32_t* src, std::uint32_t* dst,
                                     std::size_t count) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < count;
       i += std::size_t{gridDim.x} * blockDim.x)
    dst[i] = src[i];
}

// upload_slice before any frame, then a kernel on the consumer stream that reads the buffer: it
// sees every byte, with no frame opened by hand. Then upload() into it between two frames, and
// the consumer stream synchronized: the device holds the new bytes. A small slice (scattered or
// zero-copy) and a large one (past the direct-copy threshold) in each mode.
TEST_P(CudaCoordinator, UploadSliceBetweenFramesIsThereForTheNextKernel) {
  Coordinator c(config(1 << 20, 8 << 20, 1024), backend());
  for (const std::size_t count : {std::size_t{37}, std::size_t{300'000}}) {
    std::vector<std::uint32_t> values(count);
    for (std::size_t i = 0; i < count; ++i)
      values[i] = frame_value(1000 + count, i, kSmallSalt);
    const std::uint64_t frames_before = c.current_frame();
    DeviceBuffer<std::uint32_t> slice = c.upload_slice<std::uint32_t>(values);
    EXPECT_EQ(c.current_frame(), frames_before + 1);
    EXPECT_FALSE(c.frame_open());
    values.assign(count, 0);  // the source may be reused at once

    DeviceBuffer<std::uint32_t> out(backend(), count);
    copy_elements_kernel<<<64, 256, 0, native(c.consumer_stream())>>>(slice.data(), out.data(),
                                                                      count);
    FRAMESTAGE_TEST_CUDA(cudaGetLastError());
    FRAMESTAGE_TEST_CUDA(cudaStreamSynchronize(native(c.consumer_stream())));
    const std::vector<std::uint32_t> copied = read_back(out.data(), count);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < count; ++i)
      wrong += copied[i] != frame_value(1000 + count, i, kSmallSalt) ? 1 : 0;
    EXPECT_EQ(wrong, 0u) << "the kernel after upload_slice read " << wrong << " of " << count
                         << " elements wrong";

    // A frame, then an upload between frames over the same buffer.
    c.begin_frame();
    (void)c.frame_alloc<std::uint32_t>(16);
    (void)c.end_frame();
    std::vector<std::uint32_t> later(count);
    for (std::size_t i = 0; i < count; ++i)
      later[i] = frame_value(2000 + count, i, kLargeSalt);
    c.upload<std::uint32_t>(slice.data(), later);
    FRAMESTAGE_TEST_CUDA(cudaStreamSynchronize(native(c.consumer_stream())));
    const std::vector<std::uint32_t> arrived = read_back(slice.data(), count);
    EXPECT_TRUE(bytes_equal(std::as_bytes(std::span(arrived)), std::as_bytes(std::span(later))));
  }
  EXPECT_EQ(c.stats().frames_opened_by_upload, 4u);
  c.synchronize();
}

std::vector<Mode> all_modes() {
  std::vector<Mode> modes;
  for (UploadStrategy strategy : {UploadStrategy::automatic, UploadStrategy::copy_scatter,
                                  UploadStrategy::zero_copy, UploadStrategy::direct}) {
    for (std::uint32_t buffering : {1u, 2u, 3u})
      modes.push_back({strategy, buffering});
  }
  return modes;
}

INSTANTIATE_TEST_SUITE_P(Modes, CudaCoordinator, ::testing::ValuesIn(all_modes()),
                         [](const auto& info) {
                           return strategy_name(info.param.strategy) + "_" +
                                  std::to_string(info.param.buffering) + "_slots";
                         });

}  // namespace
}  // namespace framestage
