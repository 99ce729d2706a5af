#include <framestage/detail/expects.hpp>
#include <framestage/scheduler.hpp>

#include <cstdio>

namespace framestage {

Scheduler::Scheduler(Backend& backend, std::uint32_t slots, std::chrono::milliseconds slot_timeout)
    : backend_(&backend), slot_timeout_(slot_timeout) {
  FRAMESTAGE_EXPECTS(slots >= 1, misuse, "scheduler: slots must be >= 1, got ", slots);
  slots_.reserve(slots);
  for (std::uint32_t i = 0; i < slots; ++i) {
    slots_.push_back(Slot{Stream(backend), Event(backend), Event(backend), Event(backend), 0});
  }
  own_consumer_ = Stream(backend);
  consumer_ = own_consumer_.view();
  handover_ = Event(backend);
}

Scheduler::~Scheduler() {
  try {
    synchronize();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "framestage: scheduler shutdown: %s\n", e.what());
  }
}

void Scheduler::wait(EventHandle event, std::uint32_t slot, const char* what) {
  FRAMESTAGE_EXPECTS(backend_->wait_event(event, slot_timeout_), timeout, "slot ", slot, " (frame ",
                     slots_[slot].frame, ") still busy after ", slot_timeout_.count(),
                     " ms: ", what,
                     " have not finished; a kernel on the consumer stream may be "
                     "hung, or slot_timeout_ms is too short");
}

void Scheduler::acquire(std::uint32_t slot) {
  Slot& s = slots_.at(slot);
  wait(s.copies_done.native(), slot, "its copies");
  wait(s.retired.native(), slot, "the kernels that read it");
}

void Scheduler::retire(std::uint32_t slot) {
  backend_->record_event(slots_.at(slot).retired.native(), consumer_);
}

void Scheduler::submit(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan) {
  Slot& s = slots_.at(slot);
  s.frame = frame;
  const StreamView stream = s.stream.view();
  for (const CopyOp& c : plan.staging_copies)
    backend_->copy_async(c.dst, c.src, c.bytes, stream);
  backend_->record_event(s.copies_done.native(), stream);
  backend_->stream_wait_event(consumer_, s.copies_done.native());
  for (const CopyOp& c : plan.direct_copies) {
    backend_->copy_async(c.dst, c.src, c.bytes, consumer_);
  }
  for (const ScatterOp& op : plan.scatters) {
    backend_->scatter_async(op.table, op.count, op.src_bias, consumer_);
  }
  backend_->record_event(s.ready.native(), consumer_);
}

void Scheduler::synchronize() {
  for (std::uint32_t i = 0; i < slots(); ++i) {
    backend_->record_event(slots_[i].copies_done.native(), slots_[i].stream.view());
    wait(slots_[i].copies_done.native(), i, "its copies");
  }
  backend_->record_event(handover_.native(), consumer_);
  FRAMESTAGE_EXPECTS(backend_->wait_event(handover_.native(), slot_timeout_), timeout,
                     "consumer stream still busy after ", slot_timeout_.count(), " ms");
}

StreamView Scheduler::slot_stream(std::uint32_t slot) const {
  return slots_.at(slot).stream.view();
}

EventView Scheduler::ready_event(std::uint32_t slot) const {
  return slots_.at(slot).ready.view();
}

StreamView Scheduler::consumer_stream() const noexcept {
  return consumer_;
}

void Scheduler::set_consumer_stream(StreamView stream) {
  const StreamView next = stream.native() != nullptr ? stream : own_consumer_.view();
  if (next == consumer_) return;
  backend_->record_event(handover_.native(), consumer_);
  backend_->stream_wait_event(next, handover_.native());
  consumer_ = next;
}

}  // namespace framestage
