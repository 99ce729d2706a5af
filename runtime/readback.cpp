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

namespace {

// Once one readback of a frame has landed they all have: later calls skip the backend.
void mark_landed(const ReadbackSlot* slot, std::uint64_t frame) {
  std::uint64_t seen = slot->landed.load(std::memory_order_relaxed);
  while (seen < frame &&
         !slot->landed.compare_exchange_weak(seen, frame, std::memory_order_release)) {
  }
}

}  // namespace

bool readback_ready(const ReadbackSlot* slot, std::uint64_t frame) {
  expect_readback_usable(slot, frame, "Readback::ready");
  if (slot->landed.load(std::memory_order_acquire) >= frame) return true;
  if (slot->submitted.load(std::memory_order_acquire) < frame) return false;
  if (!slot->backend->event_ready(slot->done.native())) return false;
  mark_landed(slot, frame);
  return true;
}

void wait_readback(const ReadbackSlot* slot, std::uint64_t frame,
                   std::chrono::milliseconds timeout) {
  expect_readback_usable(slot, frame, "Readback::wait");
  if (slot->landed.load(std::memory_order_acquire) >= frame) return;
  FRAMESTAGE_EXPECTS(slot->submitted.load(std::memory_order_acquire) >= frame, misuse,
                     "Readback::wait: frame ", frame,
                     " has not ended; its readbacks start at end_frame()");
  FRAMESTAGE_EXPECTS(slot->backend->wait_event(slot->done.native(), timeout), timeout,
                     "readback of frame ", frame, " not complete after ", timeout.count(), " ms");
  mark_landed(slot, frame);
}

}  // namespace framestage::detail
