#include "device_address_check.hpp"

#include <framestage/detail/expects.hpp>

namespace framestage::detail {

thread_local DeviceAddressCheck::Range DeviceAddressCheck::cache_[kCachedRanges];
thread_local std::size_t DeviceAddressCheck::next_ = 0;
thread_local std::size_t DeviceAddressCheck::hit_ = 0;
thread_local std::uint64_t DeviceAddressCheck::released_ = 0;

void DeviceAddressCheck::forget() noexcept {
  for (Range& r : cache_)
    r = Range{};
  next_ = 0;
  hit_ = 0;
  released_ = blocks_released.load(std::memory_order_relaxed);
}

void DeviceAddressCheck::ask(std::uintptr_t begin, std::size_t bytes, const char* call,
                             const char* side) const {
  const void* ptr = reinterpret_cast<const void*>(begin);
  const AddressInfo info = backend_->classify_address(ptr);
  FRAMESTAGE_EXPECTS(info.kind != AddressKind::host_only, misuse, call, ": the ", side, " ", ptr,
                     " is host memory that ", backend_->describe(),
                     " cannot reach (from malloc, new or a std::vector?); pass a device address "
                     "(cudaMalloc, a DeviceBuffer, device_ptr) or mapped pinned memory");
  Range known{begin, begin + bytes};
  if (info.range_bytes != 0) {
    known = Range{info.range_begin, info.range_begin + info.range_bytes};
    FRAMESTAGE_EXPECTS(bytes <= known.end - begin, misuse, call, ": the ", side, " ", ptr, " + ",
                       bytes, " bytes runs ", bytes - (known.end - begin),
                       " bytes past the end of its device allocation of ", info.range_bytes,
                       " bytes at ", reinterpret_cast<const void*>(info.range_begin));
  }
  // Where the backend knows no range (mapped pinned memory), the span just checked is still
  // known good: a loop into one place asks once, not once a call.
  cache_[next_] = known;
  hit_ = next_;
  next_ = (next_ + 1) % kCachedRanges;
}

}  // namespace framestage::detail
