#include <framestage/detail/expects.hpp>
#include <framestage/scheduler.hpp>

#include <algorithm>
#include <cstdio>

namespace framestage {

Scheduler::Scheduler(Backend& backend, std::uint32_t slots, std::chrono::milliseconds slot_timeout)
    : backend_(&backend), slot_timeout_(slot_timeout) {
  FRAMESTAGE_EXPECTS(slots >= 1, misuse, "scheduler: slots must be >= 1, got ", slots);
  slots_.reserve(slots);
  for (std::uint32_t i = 0; i < slots; ++i) {
    Slot& s = slots_.emplace_back();
    s.stream = Stream(backend);
    s.copies_done = Event(backend);
    s.ready = Event(backend);
    s.retired = Event(backend);
    s.readback_gathered = Event(backend);
    s.readback_done = Event(backend);
    for (Event& e : s.chunk_landed)
      e = Event(backend);
  }
  readback_stream_ = Stream(backend);
  own_consumer_ = Stream(backend);
  consumer_ = own_consumer_.view();
  handover_ = Event(backend);
}

Scheduler::~Scheduler() {
  try {
    synchronize();
  } catch (const std::exception& e) {
    if (!(owner_failed_ && detail::is_cuda_error(e)))
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
  wait(s.readback_done.native(), slot, "its readbacks");
}

void Scheduler::retire(std::uint32_t slot) {
  backend_->record_event(slots_.at(slot).retired.native(), consumer_);
}

void Scheduler::submit(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan) {
  submit_copies(slot, frame, plan);
  submit_consumers(slot, plan);
}

void Scheduler::submit_copies(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan) {
  Slot& s = slots_.at(slot);
  s.frame = frame;
  s.chunks = 0;
  s.copies_submitted = 0;
  enqueue_copies(s, plan);
}

void Scheduler::enqueue_copies(Slot& s, const TransferPlan& plan) {
  const StreamView stream = s.stream.view();
  const auto& copies = plan.staging_copies;
  // A chunk event after the copies each scatter reads, so that scatter can run while later
  // chunks are still on the wire; scatters past the slot's events wait for all copies.
  for (const ScatterOp& op : plan.scatters) {
    if (op.after_copies <= s.copies_submitted || s.chunks == s.chunk_landed.size()) continue;
    for (; s.copies_submitted < op.after_copies; ++s.copies_submitted) {
      const CopyOp& c = copies[s.copies_submitted];
      backend_->copy_async(c.dst, c.src, c.bytes, stream);
    }
    backend_->record_event(s.chunk_landed[s.chunks].native(), stream);
    s.chunk_end[s.chunks++] = op.after_copies;
  }
  for (; s.copies_submitted < copies.size(); ++s.copies_submitted) {
    const CopyOp& c = copies[s.copies_submitted];
    backend_->copy_async(c.dst, c.src, c.bytes, stream);
  }
  backend_->record_event(s.copies_done.native(), stream);
}

void Scheduler::submit_consumers(std::uint32_t slot, const TransferPlan& plan) {
  Slot& s = slots_.at(slot);
  // Copies the plan gained since submit_copies (a corrected descriptor table) go first.
  if (s.copies_submitted < plan.staging_copies.size()) enqueue_copies(s, plan);
  std::size_t chunk = 0;
  std::size_t awaited = 0;
  for (const ScatterOp& op : plan.scatters) {
    if (op.after_copies > awaited) {
      while (chunk < s.chunks && s.chunk_end[chunk] < op.after_copies)
        ++chunk;
      if (chunk < s.chunks && s.chunk_end[chunk] == op.after_copies) {
        backend_->stream_wait_event(consumer_, s.chunk_landed[chunk].native());
      } else {
        backend_->stream_wait_event(consumer_, s.copies_done.native());
      }
      awaited = op.after_copies;
    }
    backend_->scatter_async(op.table, op.count, op.staging, consumer_);
  }
  backend_->stream_wait_event(consumer_, s.copies_done.native());
  // A frame that writes nothing on the consumer stream (mirror copies only) is complete when its
  // copies are: its ticket takes that event and skips a hop across streams.
  s.writes_on_consumer =
      !plan.scatters.empty() || !plan.direct_copies.empty() || !plan.ordered_copies.empty();
  if (!s.writes_on_consumer) return;
  // The ordered copies first and in order (they overlap), then the direct ones: one
  // cudaMemcpyAsync each, never cudaMemcpyBatchAsync. CUDA 13.0 with driver 580 faults inside
  // cuMemcpyBatchAsync on lists framestage cannot predict (issue 18: a frame of 16k-56k direct
  // copies of 1 B-16 KiB crashed the process even in calls of at most 4,096, tiny copies apart).
  // With the default thresholds only copies of 256 KiB or more go direct, where the wire
  // dominates the per-call cost.
  for (const std::vector<CopyOp>* copies : {&plan.ordered_copies, &plan.direct_copies})
    for (const CopyOp& c : *copies)
      backend_->copy_async(c.dst, c.src, c.bytes, consumer_);
  backend_->record_event(s.ready.native(), consumer_);
}

void Scheduler::submit_readbacks(std::uint32_t slot, const ReadbackPlan& plan) {
  if (plan.regions == 0) return;
  Slot& s = slots_.at(slot);
  const StreamView back = readback_stream_.view();
  std::size_t device_copy = 0;
  // Chunk by chunk, so each wait follows the record it waits for: one event serves every chunk
  // (a wait takes the record made before it). A table goes on the consumer stream, just ahead of
  // its gather, which saves an event per chunk.
  for (const ReadbackChunk& chunk : plan.chunks) {
    if (chunk.table.bytes > 0) {
      backend_->copy_async(chunk.table.dst, chunk.table.src, chunk.table.bytes, consumer_);
      backend_->gather_async(chunk.gather.table, chunk.gather.count, chunk.gather.staging,
                             consumer_);
    }
    for (; device_copy < chunk.device_copies_end; ++device_copy) {
      const CopyOp& c = plan.device_copies[device_copy];
      backend_->copy_async(c.dst, c.src, c.bytes, consumer_);
    }
    backend_->record_event(s.readback_gathered.native(), consumer_);
    backend_->stream_wait_event(back, s.readback_gathered.native());
    backend_->copy_async(chunk.back.dst, chunk.back.src, chunk.back.bytes, back);
  }
  backend_->record_event(s.readback_done.native(), back);
}

void Scheduler::submit_tick(std::uint32_t slot, std::uint64_t frame, const TransferPlan& plan,
                            const ReadbackPlan& readbacks, GraphHandle graph) {
  Slot& s = slots_.at(slot);
  TickTransfers transfers;
  TransferPlan& residue = tick_residue_;
  residue.clear();
  // The graph holds the first scatter if it reads what at most the first staging copy delivers:
  // the main upload block in one chunk (or in place, zero-copy).
  std::size_t held_copies = 0;
  std::size_t held_scatters = 0;
  if (!plan.scatters.empty() && plan.scatters.front().after_copies <= 1) {
    const ScatterOp& op = plan.scatters.front();
    held_copies = op.after_copies;
    if (held_copies == 1) transfers.upload_copy = plan.staging_copies.front();
    // The scatter only reads its staging (TransferTable's pointer serves the gather too).
    transfers.scatter = {op.table, op.count, const_cast<std::byte*>(op.staging)};
    held_scatters = 1;
  }
  residue.staging_copies.assign(plan.staging_copies.begin() + held_copies,
                                plan.staging_copies.end());
  for (std::size_t i = held_scatters; i < plan.scatters.size(); ++i) {
    ScatterOp op = plan.scatters[i];
    op.after_copies -= std::min(op.after_copies, held_copies);
    residue.scatters.push_back(op);
  }
  residue.direct_copies = plan.direct_copies;
  residue.ordered_copies = plan.ordered_copies;
  const bool residue_writes = !residue.scatters.empty() || !residue.direct_copies.empty() ||
                              !residue.ordered_copies.empty();

  // The main readback block joins the graph unless uploads land before the launch.
  ReadbackPlan& readback_residue = tick_readback_residue_;
  readback_residue.clear();
  std::size_t held_chunks = 0;
  if (!residue_writes && !readbacks.chunks.empty() &&
      readbacks.chunks.front().device_copies_end == 0) {
    const ReadbackChunk& chunk = readbacks.chunks.front();
    transfers.readback_table = chunk.table;
    transfers.gather = chunk.gather;
    transfers.readback_copy = chunk.back;
    held_chunks = 1;
  }
  readback_residue.chunks.assign(readbacks.chunks.begin() + held_chunks, readbacks.chunks.end());
  readback_residue.device_copies = readbacks.device_copies;
  if (!readback_residue.chunks.empty()) readback_residue.regions = readbacks.regions;

  submit_readbacks(slot, readback_residue);
  if (!residue.staging_copies.empty() || residue_writes) {
    submit(slot, frame, residue);
  } else {
    s.frame = frame;
  }
  const bool reads_back = held_chunks == 1;
  // Readbacks before the launch finish on the readback stream; the slot's readback event, recorded
  // after the launch, must cover them too.
  if (reads_back && readback_residue.regions > 0)
    backend_->stream_wait_event(consumer_, s.readback_done.native());
  backend_->launch_tick_graph(graph, slot, transfers, consumer_);
  backend_->record_event(s.ready.native(), consumer_);
  s.writes_on_consumer = true;
  if (reads_back) backend_->record_event(s.readback_done.native(), consumer_);
}

EventView Scheduler::readback_event(std::uint32_t slot) const {
  return slots_.at(slot).readback_done.view();
}

void Scheduler::synchronize() {
  for (std::uint32_t i = 0; i < slots(); ++i) {
    backend_->record_event(slots_[i].copies_done.native(), slots_[i].stream.view());
    wait(slots_[i].copies_done.native(), i, "its copies");
    wait(slots_[i].readback_done.native(), i, "its readbacks");
  }
  backend_->record_event(handover_.native(), consumer_);
  FRAMESTAGE_EXPECTS(backend_->wait_event(handover_.native(), slot_timeout_), timeout,
                     "consumer stream still busy after ", slot_timeout_.count(), " ms");
}

StreamView Scheduler::slot_stream(std::uint32_t slot) const {
  return slots_.at(slot).stream.view();
}

EventView Scheduler::ready_event(std::uint32_t slot) const {
  const Slot& s = slots_.at(slot);
  return s.writes_on_consumer ? s.ready.view() : s.copies_done.view();
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
