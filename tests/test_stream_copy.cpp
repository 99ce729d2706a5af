// stream_copy must be memcpy, byte for byte, for every size and alignment it splits into a plain
// head, streamed lines and a plain tail; bytes around the destination stay untouched.
#include <framestage/stream_copy.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace framestage {
namespace {

constexpr std::byte kGuard{0xa5};
constexpr std::size_t kPad = 64;

std::vector<std::byte> pattern(std::size_t bytes, unsigned seed) {
  std::vector<std::byte> out(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    out[i] = static_cast<std::byte>((i * 131 + seed * 17 + (i >> 8)) & 0xff);
  return out;
}

// Copies `bytes` from a source at `src_offset` to a destination at `dst_offset` (both from a
// 64-byte aligned base) and checks the copy and the guard bytes on both sides.
::testing::AssertionResult copies_exactly(std::size_t bytes, std::size_t dst_offset,
                                          std::size_t src_offset) {
  alignas(64) static std::byte dst_storage[3 * 4096 * 4 + 4 * kPad];
  alignas(64) static std::byte src_storage[3 * 4096 * 4 + 4 * kPad];
  const std::vector<std::byte> expected = pattern(bytes, static_cast<unsigned>(dst_offset));
  std::fill(std::begin(dst_storage), std::end(dst_storage), kGuard);
  std::copy(expected.begin(), expected.end(), src_storage + kPad + src_offset);
  std::byte* dst = dst_storage + kPad + dst_offset;
  stream_copy(dst, src_storage + kPad + src_offset, bytes);
  for (std::size_t i = 0; i < bytes; ++i) {
    if (dst[i] != expected[i]) {
      return ::testing::AssertionFailure() << "byte " << i << " of " << bytes << " differs";
    }
  }
  for (std::byte* p = dst_storage; p < dst; ++p) {
    if (*p != kGuard) return ::testing::AssertionFailure() << "wrote before the destination";
  }
  for (std::byte* p = dst + bytes; p < std::end(dst_storage); ++p) {
    if (*p != kGuard) return ::testing::AssertionFailure() << "wrote past the destination";
  }
  return ::testing::AssertionSuccess();
}

TEST(StreamCopy, EverySizeAroundTheStreamingThresholdAndEveryAlignment) {
  // The plain path below 4 KiB, the threshold itself, and streamed copies with every tail.
  std::vector<std::size_t> sizes = {0, 1, 15, 16, 17, 255, 256, 4095};
  for (std::size_t b = 4096; b <= 4096 + 80; ++b)
    sizes.push_back(b);
  sizes.push_back(3 * 4096 * 4 - 16);
  for (const std::size_t bytes : sizes) {
    for (std::size_t dst_offset = 0; dst_offset < 16; ++dst_offset) {
      for (const std::size_t src_offset :
           {std::size_t{0}, std::size_t{1}, std::size_t{8}, dst_offset}) {
        EXPECT_TRUE(copies_exactly(bytes, dst_offset, src_offset))
            << bytes << " bytes, destination +" << dst_offset << ", source +" << src_offset;
      }
    }
  }
}

TEST(StreamCopy, SpanOverloadCopiesTheShorterLength) {
  std::vector<std::uint32_t> src(5000);
  for (std::size_t i = 0; i < src.size(); ++i)
    src[i] = static_cast<std::uint32_t>(i * 2654435761u);
  std::vector<std::uint32_t> dst(6000, 7);
  stream_copy(std::span<std::uint32_t>(dst), std::span<const std::uint32_t>(src));
  EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin()));
  EXPECT_EQ(dst[5000], 7u) << "past the source: untouched";
  std::vector<std::uint32_t> small(3000, 9);
  stream_copy(std::span<std::uint32_t>(small), std::span<const std::uint32_t>(src));
  EXPECT_TRUE(std::equal(small.begin(), small.end(), src.begin())) << "the destination's length";
}

}  // namespace
}  // namespace framestage
