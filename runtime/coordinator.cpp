#include <framestage/coordinator.hpp>
#include <framestage/detail/expects.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/scheduler.hpp>
#include <framestage/stream_copy.hpp>
#include <framestage/transfer_planner.hpp>
#include <framestage/upload_arena.hpp>

#include "device_address_check.hpp"
#include "frame_staging.hpp"
#include "frame_state.hpp"
#include "nvtx_range.hpp"

#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace framestage {

namespace {

struct SlotArenas {
  std::unique_ptr<FrameArena> arena;
  std::unique_ptr<UploadArena> uploads;
  std::unique_ptr<UploadArena> readbacks;  // targets are device sources
  std::uint64_t frame = 0;                 // the frame this slot holds; 0 = none yet
};

std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

using detail::NvtxRange;

}  // namespace

bool FrameTicket::ready() const {
  FRAMESTAGE_EXPECTS(backend_ != nullptr, misuse, "FrameTicket::ready on an empty ticket");
  return backend_->event_ready(event_.native());
}

void FrameTicket::wait(std::chrono::milliseconds timeout) const {
  FRAMESTAGE_EXPECTS(backend_ != nullptr, misuse, "FrameTicket::wait on an empty ticket");
  FRAMESTAGE_EXPECTS(backend_->wait_event(event_.native(), timeout), timeout, "frame ", frame_,
                     " not complete after ", timeout.count(), " ms");
}

struct Coordinator::Impl {
  Impl(detail::FrameStaging& f, Backend& b)
      : frames(f),
        config(f.config),
        state(f.state),
        backend(&b),
        slots(make_slots(config, b)),
        planner(config),
        scheduler(b, config.buffering, std::chrono::milliseconds{config.slot_timeout_ms}),
        readback_slots(std::make_unique<detail::ReadbackSlot[]>(config.buffering)) {
    for (std::uint32_t i = 0; i < config.buffering; ++i) {
      readback_slots[i].backend = &b;
      readback_slots[i].done = scheduler.readback_event(i);
    }
    stats.slots.resize(slots.size());
    refresh_slot_stats();
  }

  // A failed coordinator has given its failure to its user: a CUDA error the scheduler's
  // shutdown meets follows from it and is not said again.
  ~Impl() {
    if (state.failed()) scheduler.owner_failed();
  }

  // A tick graph holds one copy and one scatter: every upload is scattered, in one chunk.
  static Config tick_config(Config c) {
    c.direct_copy_threshold_bytes = std::numeric_limits<std::size_t>::max();
    c.pipeline_chunk_bytes = std::numeric_limits<std::size_t>::max();
    if (c.strategy == UploadStrategy::direct) c.strategy = UploadStrategy::automatic;
    return c;
  }

  static std::vector<SlotArenas> make_slots(const Config& cfg, Backend& b) {
    std::vector<SlotArenas> out(cfg.buffering);
    for (auto& s : out) {
      s.arena = std::make_unique<FrameArena>(b, cfg.arena_bytes, cfg.overflow, "arena",
                                             "raise arena_bytes, or set overflow to \"grow\"");
      s.uploads = std::make_unique<UploadArena>(b, cfg.upload_arena_bytes,
                                                cfg.max_uploads_per_frame, cfg.overflow);
      s.readbacks = std::make_unique<UploadArena>(
          b, cfg.readback_arena_bytes, cfg.max_readbacks_per_frame, cfg.overflow,
          UploadArena::Names{"readback", "readback_arena_bytes", "max_readbacks_per_frame"});
    }
    return out;
  }

  // What reserve_upload and readback check: an open frame, a device address, and `count`
  // elements whose `bytes` (0 if they overflowed) fit one reservation.
  void expect_reservation(const char* call, const char* side, const void* device, std::size_t count,
                          std::size_t bytes) const {
    state.expect_in_frame(call);
    FRAMESTAGE_EXPECTS(device != nullptr, misuse, call, ": null ", side, " for ", count,
                       " elements");
    FRAMESTAGE_EXPECTS(bytes > 0 && bytes <= UploadArena::kMaxReservationBytes, misuse, call,
                       ": count must be > 0 and its bytes at most ",
                       UploadArena::kMaxReservationBytes, ", got ", count, " elements of ",
                       count == 0 ? 0 : bytes / count, " bytes");
    addresses.expect(device, bytes, call, side);
  }

  void refresh_slot_stats() {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      stats.slots[i].arena_capacity_bytes = slots[i].arena->capacity_bytes();
      stats.slots[i].arena_high_water_bytes = slots[i].arena->high_water_bytes();
    }
  }

  SlotArenas& current() { return slots[frames.slot]; }

  void begin(bool opened_by_upload);
  /// Ends the open frame; with a tick graph, as one launch of it.
  FrameTicket end(GraphHandle tick = nullptr);

  // A frame's transfers cannot live in a user's graph: refuse a consumer stream under capture
  // before anything changes.
  void expect_consumer_not_captured(const char* call) const {
    FRAMESTAGE_EXPECTS(!backend->is_capturing(scheduler.consumer_stream()), misuse, call,
                       ": the consumer stream is being captured into a graph; a frame's "
                       "transfers change every frame and cannot be captured as they are: "
                       "capture the tick with capture_tick() and run it with end_frame(tick), "
                       "or end the capture first");
  }

  // upload's checks, before anything is reserved (and before a one-off frame opens, so that
  // misuse opens none): false when there is nothing to deliver.
  bool expect_upload(void* device_dst, const void* src, std::size_t bytes) const {
    FRAMESTAGE_EXPECTS(device_dst != nullptr, misuse, "upload: null destination for ", bytes,
                       " bytes");
    if (!detail::expect_upload_source(src, bytes)) return false;
    addresses.expect(device_dst, bytes, "upload", "destination");
    return true;
  }

  // Copies an upload into the open frame's upload arena, in pieces that fit a descriptor.
  void deliver_upload(void* device_dst, const void* src, std::size_t bytes) {
    auto* dst = static_cast<std::byte*>(device_dst);
    const auto* from = static_cast<const std::byte*>(src);
    detail::for_each_upload_piece(
        bytes, UploadArena::kMaxReservationBytes, [&](std::size_t offset, std::size_t piece) {
          stream_copy(reserve_upload(dst + offset, piece), from + offset, piece);
        });
  }

  // An upload between frames: a frame of its own, opened and ended here (one-off).
  void upload_one_off(void* device_dst, const void* src, std::size_t bytes) {
    state.expect_not_failed();
    if (!expect_upload(device_dst, src, bytes)) return;
    begin(true);
    try {
      deliver_upload(device_dst, src, bytes);
    } catch (...) {
      // Nothing of this call is left staged: the frame ends (empty under "fail"), closed.
      if (state.in_frame()) (void)end();
      throw;
    }
    (void)end();
  }

  // One upload's descriptor and payload; a large one tells end_frame to scan before copying.
  std::byte* reserve_upload(void* device_dst, std::size_t bytes) {
    if (bytes >= config.direct_copy_threshold_bytes)
      large_uploads.store(true, std::memory_order_relaxed);
    return current().uploads->reserve(address(device_dst), bytes);
  }

  detail::FrameStaging& frames;  // state, frame, slot, staged ranges: the StagingFront's
  const Config& config;
  detail::FrameState& state;
  Backend* backend;
  std::vector<SlotArenas> slots;  // declared before the scheduler: freed after it has drained
  TransferPlanner planner;
  TransferPlanner tick_planner{tick_config(config)};  // frames run by a tick graph
  Scheduler scheduler;
  std::unique_ptr<detail::ReadbackSlot[]> readback_slots;  // what Readback handles point at
  detail::DeviceAddressCheck addresses{*backend};          // host pointers where device ones belong
  std::atomic<bool> large_uploads{false};  // an upload this frame reached the direct threshold
  std::size_t frame_start_capacity = 0;
  bool one_off = false;  // the open frame was opened by an upload between frames
  CoordinatorStats stats;
};

Coordinator::Coordinator(const Config& config, Backend& backend)
    : StagingFront("coordinator", config), impl_(std::make_unique<Impl>(staging(), backend)) {}

Coordinator::~Coordinator() = default;

void Coordinator::begin_frame() {
  impl_->begin(false);
}

void Coordinator::Impl::begin(bool opened_by_upload) {
  const NvtxRange range("framestage::begin_frame");
  const std::uint32_t slot = frames.next_slot(slots.size());
  SlotArenas& s = slots[slot];
  state.guarded([&] {
    expect_consumer_not_captured(opened_by_upload ? "upload between frames" : "begin_frame");
    // The user has enqueued the last frame's kernels by now: mark where its readers end. A
    // one-off frame marks only the slot it takes: kernels that read the last frame may follow.
    const auto mark = [&](std::uint32_t last) { scheduler.retire(last); };
    if (opened_by_upload)
      frames.retire_slot(slot, mark);
    else
      frames.retire_last_frame(mark);
    scheduler.acquire(slot);
    const auto resize = s.arena->reset(config.arena_bytes, config.trim_after_frames);
    s.uploads->reset(config.upload_arena_bytes, config.max_uploads_per_frame,
                     config.trim_after_frames);
    s.readbacks->reset(config.readback_arena_bytes, config.max_readbacks_per_frame,
                       config.trim_after_frames);
    stats.arena_growths += resize == FrameArena::Resize::grew;
    stats.arena_trims += resize == FrameArena::Resize::trimmed;
  });
  const std::uint64_t next = frames.frame + 1;
  large_uploads.store(false, std::memory_order_relaxed);
  s.frame = next;
  // Readbacks of the frame this slot held are gone from here on.
  readback_slots[slot].holds.store(next, std::memory_order_release);
  frame_start_capacity = s.arena->capacity_bytes();
  one_off = opened_by_upload;
  frames.open(slot, *s.arena);
}

void* Coordinator::device_address(const void* ptr, std::size_t bytes, std::uint64_t frame) const {
  const Impl& m = *impl_;
  const auto [s, where] = detail::locate_in_slot(m.frames, m.slots, ptr, bytes, frame);
  return s.arena->block(where.block).device + where.offset;
}

void Coordinator::upload_bytes(void* device_dst, const void* src, std::size_t bytes) {
  Impl& m = *impl_;
  if (!m.state.in_frame()) [[unlikely]] {
    m.upload_one_off(device_dst, src, bytes);
    return;
  }
  if (m.expect_upload(device_dst, src, bytes)) m.deliver_upload(device_dst, src, bytes);
}

std::byte* Coordinator::reserve_upload_bytes(void* device_dst, std::size_t count,
                                             std::size_t bytes) {
  Impl& m = *impl_;
  m.expect_reservation("reserve_upload", "destination", device_dst, count, bytes);
  return m.reserve_upload(device_dst, bytes);
}

const std::byte* Coordinator::readback_bytes(const void* device_src, std::size_t count,
                                             std::size_t bytes) {
  Impl& m = *impl_;
  m.expect_reservation("readback", "source", device_src, count, bytes);
  return m.current().readbacks->reserve(address(device_src), bytes);
}

detail::ReadbackSlot* Coordinator::readback_slot() const noexcept {
  return &impl_->readback_slots[staging().slot];
}

FrameTicket Coordinator::end_frame() {
  return impl_->end();
}

TickGraph Coordinator::capture_tick(const std::function<void(StreamView)>& work) {
  Impl& m = *impl_;
  m.state.expect_between_frames("capture_tick inside frame ", m.frames.frame,
                                ": call it between frames");
  FRAMESTAGE_EXPECTS(static_cast<bool>(work), misuse, "capture_tick: empty work function");
  const GraphHandle graph =
      m.state.guarded([&] { return m.backend->create_tick_graph(m.config.buffering, work); });
  return TickGraph(*m.backend, graph, this);
}

FrameTicket Coordinator::end_frame(TickGraph& tick) {
  FRAMESTAGE_EXPECTS(tick.valid(), misuse,
                     "end_frame(tick): the tick graph is empty (default-constructed or moved "
                     "from); make one with capture_tick()");
  FRAMESTAGE_EXPECTS(tick.owner_ == this, misuse,
                     "end_frame(tick): the tick graph was captured by another coordinator; "
                     "capture one with this coordinator's capture_tick()");
  FrameTicket ticket = impl_->end(tick.graph_.get());
  ++tick.launches_;
  return ticket;
}

FrameTicket Coordinator::Impl::end(GraphHandle tick) {
  frames.expect_frame_open();
  SlotArenas& s = current();
  const std::uint32_t slot = frames.slot;
  const std::uint64_t frame = frames.frame;
  std::size_t staged_calls = 0;
  const ReadbackPlan* readbacks = nullptr;
  const TransferPlan& plan = state.guarded([&]() -> const TransferPlan& {
    const NvtxRange range("framestage::end_frame");
    expect_consumer_not_captured("end_frame");
    staged_calls = frames.staged.calls();
    s.uploads->pad_unused();
    s.readbacks->pad_unused();
    const PlannerInput input{s.arena.get(), s.uploads.get(), frames.staged.all(),
                             large_uploads.load(std::memory_order_relaxed)};
    if (tick != nullptr) {
      const NvtxRange planning("framestage::plan");
      const TransferPlan& p = tick_planner.plan(input);
      readbacks = &tick_planner.plan_readbacks(*s.readbacks);
      scheduler.submit_tick(slot, frame, p, *readbacks, tick);
      return p;
    }
    // Where it can, the payload is on the wire while the descriptors are still being checked.
    // Readbacks go after planning (which may throw and leave the frame open), and their gathers
    // before the frame's scatters on the consumer stream.
    const TransferPlan* early = planner.plan_early(input);
    if (early != nullptr) scheduler.submit_copies(slot, frame, *early);
    const TransferPlan& p = [&]() -> const TransferPlan& {
      const NvtxRange planning("framestage::plan");
      return early != nullptr ? planner.finish_early(input) : planner.plan(input);
    }();
    readbacks = &planner.plan_readbacks(*s.readbacks);
    scheduler.submit_readbacks(slot, *readbacks);
    if (early == nullptr) scheduler.submit_copies(slot, frame, p);
    scheduler.submit_consumers(slot, p);
    return p;
  });
  readback_slots[slot].submitted.store(frame, std::memory_order_release);

  FrameStats f;
  f.frame = frame;
  f.slot = slot;
  f.strategy = plan.strategy;
  f.staged_ranges = staged_calls;
  f.uploads = plan.uploads;
  f.superseded_uploads = plan.superseded_uploads;
  f.merged_overlaps = plan.merged_overlaps;
  f.mirror_bytes = plan.mirror_bytes;
  f.scattered_bytes = plan.scattered_bytes;
  f.direct_bytes = plan.direct_bytes;
  f.staging_copies = plan.staging_copies.size();
  f.staging_copy_bytes = plan.staging_copy_bytes;
  f.direct_copies = plan.direct_copies.size() + plan.ordered_copies.size();
  f.scatter_launches = plan.scatters.size();
  f.readbacks = readbacks->regions;
  f.readback_bytes = readbacks->bytes;
  f.direct_readbacks = readbacks->direct_regions;
  f.arena_used_bytes = s.arena->used_bytes();
  f.arena_capacity_bytes = frame_start_capacity;
  f.arena_overflowed = s.arena->overflowed();
  f.opened_by_upload = one_off;
  f.tick_graph = tick != nullptr;
  stats.add(f);
  refresh_slot_stats();

  frames.close();
  return FrameTicket(backend, frame, slot, scheduler.consumer_stream(),
                     scheduler.ready_event(slot));
}

void Coordinator::synchronize() {
  const NvtxRange range("framestage::synchronize");
  Impl& m = *impl_;
  m.state.expect_not_failed();
  m.state.guarded([&] { m.scheduler.synchronize(); });
}

void Coordinator::set_consumer_stream(StreamView stream) {
  Impl& m = *impl_;
  m.state.expect_between_frames("set_consumer_stream inside frame ", m.frames.frame,
                                ": call it between frames");
  m.state.guarded([&] { m.scheduler.set_consumer_stream(stream); });
}

StreamView Coordinator::consumer_stream() const noexcept {
  return impl_->scheduler.consumer_stream();
}
const CoordinatorStats& Coordinator::stats() const noexcept {
  return impl_->stats;
}
Backend& Coordinator::backend() const noexcept {
  return *impl_->backend;
}

}  // namespace framestage
