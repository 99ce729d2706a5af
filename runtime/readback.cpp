#include <framestage/detail/expects.hpp>
#include <framestage/readback.hpp>

namespace framestage::detail {

void expect_readback_usable(const ReadbackSlot* slot, std::uint64_t frame, const char* call) {
  FRAMESTAGE_EXPECTS(slot != nullptr, misuse, call, ": an empty Readback");
  const std::uint64_t holds = slot->holds.load(std::memory_order_acquire);
  FRAMESTAGE_EXPECTS(holds == frame, misuse, call, ": the readback of frame ", frame,
                     " is gone: its slot was reused by frame ", holds,
                     "; use a readback before `buffering` more frames begin");
}

bool readback_ready(const ReadbackSlot* slot, std::uint64_t frame) {
  expect_readback_usable(slot, frame, "Readback::ready");
  if (slot->submitted.load(std::memory_order_acquire) < frame) return false;
  return slot->backend->event_ready(slot->done.native());
}

void wait_readback(const ReadbackSlot* slot, std::uint64_t frame,
                   std::chrono::milliseconds timeout) {
  expect_readback_usable(slot, frame, "Readback::wait");
  FRAMESTAGE_EXPECTS(slot->submitted.load(std::memory_order_acquire) >= frame, misuse,
                     "Readback::wait: frame ", frame,
                     " has not ended; its readbacks start at end_frame()");
  FRAMESTAGE_EXPECTS(slot->backend->wait_event(slot->done.native(), timeout), timeout,
                     "readback of frame ", frame, " not complete after ", timeout.count(), " ms");
}

}  // namespace framestage::detail
