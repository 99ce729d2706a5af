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
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace framestage {

namespace {

// The run a thread is extending, valid while `epoch` is its frame's (see StagedRanges).
struct StagedRun {
  std::uint64_t epoch = 0;
  StagedRange* range = nullptr;
  std::size_t* calls = nullptr;
};
thread_local StagedRun this_thread_run;

// Staged ranges of one frame. Each thread extends a run of its own while it stages spans that
// follow each other in the arena (what a thread allocating and staging item by item does), with
// no atomic operation; a span elsewhere flushes the run into the shared list, which appends
// lock-free into fixed storage and under a lock beyond it.
class StagedRanges {
 public:
  explicit StagedRanges(std::size_t capacity) : fixed_(capacity) {}

  void push(const StagedRange& range) {
    StagedRun& local = this_thread_run;
    if (local.epoch == epoch_) [[likely]] {
      StagedRange& run = *local.range;
      ++*local.calls;
      const std::size_t end = run.offset + run.bytes;
      // Allocation padding (under one granule) between spans is copied along with them.
      if (run.block == range.block && range.offset >= end &&
          range.offset - end < FrameArena::kGranule) [[likely]] {
        run.bytes = range.offset + range.bytes - run.offset;
        return;
      }
      push_shared(run);
      run = range;
      return;
    }
    const std::size_t i = run_count_.fetch_add(1, std::memory_order_relaxed);
    if (i < runs_.size()) {
      runs_[i] = Run{range, 1};
      local = StagedRun{epoch_, &runs_[i].range, &runs_[i].calls};
      return;
    }
    unrun_calls_.fetch_add(1, std::memory_order_relaxed);
    push_shared(range);
  }

  // Owner thread, after every push of the frame (the other threads' calls happen before it).
  // Changes nothing, so a frame whose end_frame failed can stage more and end again.
  std::span<const StagedRange> all() {
    const std::size_t runs = std::min(run_count_.load(std::memory_order_relaxed), runs_.size());
    const std::size_t n = std::min(count_.load(std::memory_order_relaxed), fixed_.size());
    if (runs == 0 && extra_.empty()) return {fixed_.data(), n};
    combined_.assign(fixed_.begin(), fixed_.begin() + static_cast<std::ptrdiff_t>(n));
    combined_.insert(combined_.end(), extra_.begin(), extra_.end());
    for (std::size_t i = 0; i < runs; ++i)
      combined_.push_back(runs_[i].range);
    return combined_;
  }

  // stage_for_upload calls this frame; owner thread, before all().
  [[nodiscard]] std::size_t calls() const {
    std::size_t n = unrun_calls_.load(std::memory_order_relaxed);
    const std::size_t runs = std::min(run_count_.load(std::memory_order_relaxed), runs_.size());
    for (std::size_t i = 0; i < runs; ++i)
      n += runs_[i].calls;
    return n;
  }

  void clear() {
    count_.store(0, std::memory_order_relaxed);
    run_count_.store(0, std::memory_order_relaxed);
    unrun_calls_.store(0, std::memory_order_relaxed);
    extra_.clear();
    // A fresh epoch invalidates every thread's run of earlier frames, of any coordinator.
    epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  // A line each: every stage_for_upload writes its thread's run, and runs that shared a line
  // (with each other or with epoch_, which every call reads) made threads slow each other down.
  struct alignas(64) Run {
    StagedRange range;
    std::size_t calls;
  };
  static constexpr std::size_t kMaxRuns = 256;  // threads with a run of their own per frame

  void push_shared(const StagedRange& range) {
    const std::size_t i = count_.fetch_add(1, std::memory_order_relaxed);
    if (i < fixed_.size()) [[likely]] {
      fixed_[i] = range;
      return;
    }
    std::lock_guard lock(mutex_);
    extra_.push_back(range);
  }

  static inline std::atomic<std::uint64_t> next_epoch_{1};
  std::uint64_t epoch_ = next_epoch_.fetch_add(1, std::memory_order_relaxed);
  std::array<Run, kMaxRuns> runs_{};
  std::atomic<std::size_t> run_count_{0};
  std::atomic<std::size_t> unrun_calls_{0};
  std::vector<StagedRange> fixed_;
  std::atomic<std::size_t> count_{0};
  std::mutex mutex_;
  std::vector<StagedRange> extra_;
  std::vector<StagedRange> combined_;  // all()'s result when runs or extra_ are in use
};

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
  Impl(const Config& cfg, Backend& b)
      : config((cfg.validate(), cfg)),
        backend(&b),
        slots(make_slots(cfg, b)),
        staged(cfg.max_uploads_per_frame),
        planner(cfg),
        scheduler(b, cfg.buffering, std::chrono::milliseconds{cfg.slot_timeout_ms}),
        readback_slots(std::make_unique<detail::ReadbackSlot[]>(cfg.buffering)) {
    for (std::uint32_t i = 0; i < cfg.buffering; ++i) {
      readback_slots[i].backend = &b;
      readback_slots[i].done = scheduler.readback_event(i);
    }
    stats.slots.resize(slots.size());
    refresh_slot_stats();
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

  SlotArenas& current() { return slots[slot]; }

  // One upload's descriptor and payload; a large one tells end_frame to scan before copying.
  std::byte* reserve_upload(void* device_dst, std::size_t bytes) {
    if (bytes >= config.direct_copy_threshold_bytes)
      large_uploads.store(true, std::memory_order_relaxed);
    return current().uploads->reserve(address(device_dst), bytes);
  }

  Config config;
  Backend* backend;
  std::vector<SlotArenas> slots;  // declared before the scheduler: freed after it has drained
  StagedRanges staged;
  TransferPlanner planner;
  Scheduler scheduler;
  std::unique_ptr<detail::ReadbackSlot[]> readback_slots;  // what Readback handles point at
  detail::FrameState state{"coordinator"};         // between frames, in one, or failed for good
  detail::DeviceAddressCheck addresses{*backend};  // host pointers where device ones belong
  std::atomic<bool> large_uploads{false};  // an upload this frame reached the direct threshold
  std::uint64_t frame = 0;
  std::uint32_t slot = 0;
  std::optional<std::uint32_t> unretired_slot;
  std::size_t frame_start_capacity = 0;
  CoordinatorStats stats;
};

Coordinator::Coordinator(const Config& config, Backend& backend)
    : impl_(std::make_unique<Impl>(config, backend)) {}

Coordinator::~Coordinator() = default;

void Coordinator::begin_frame() {
  const NvtxRange range("framestage::begin_frame");
  Impl& m = *impl_;
  m.state.expect_between_frames("begin_frame: frame ", m.frame,
                                " is still open; call end_frame first");
  const std::uint64_t next = m.frame + 1;
  const auto slot = static_cast<std::uint32_t>((next - 1) % m.slots.size());
  SlotArenas& s = m.slots[slot];
  m.state.guarded([&] {
    // The user has enqueued the last frame's kernels by now: mark where its readers end.
    if (m.unretired_slot) {
      m.scheduler.retire(*m.unretired_slot);
      m.unretired_slot.reset();
    }
    m.scheduler.acquire(slot);
    const auto resize = s.arena->reset(m.config.arena_bytes, m.config.trim_after_frames);
    s.uploads->reset(m.config.upload_arena_bytes, m.config.max_uploads_per_frame,
                     m.config.trim_after_frames);
    s.readbacks->reset(m.config.readback_arena_bytes, m.config.max_readbacks_per_frame,
                       m.config.trim_after_frames);
    m.stats.arena_growths += resize == FrameArena::Resize::grew;
    m.stats.arena_trims += resize == FrameArena::Resize::trimmed;
  });
  m.staged.clear();
  m.large_uploads.store(false, std::memory_order_relaxed);
  m.frame = next;
  m.slot = slot;
  s.frame = next;
  // Readbacks of the frame this slot held are gone from here on.
  m.readback_slots[slot].holds.store(next, std::memory_order_release);
  m.frame_start_capacity = s.arena->capacity_bytes();
  m.state.open();
}

std::byte* Coordinator::allocate_bytes(std::size_t count, std::size_t bytes,
                                       std::size_t alignment) {
  Impl& m = *impl_;
  return detail::frame_alloc_from(m.state, *m.current().arena, count, bytes, alignment);
}

void Coordinator::stage_bytes(const void* ptr, std::size_t bytes, std::uint64_t frame) {
  Impl& m = *impl_;
  const auto where = detail::locate_staged(m.state, *m.current().arena, ptr, bytes, frame, m.frame);
  if (where) m.staged.push({where->block, where->offset, bytes});
}

void* Coordinator::device_address(const void* ptr, std::size_t bytes, std::uint64_t frame) const {
  const Impl& m = *impl_;
  const auto [s, where] = detail::locate_in_slot(m.state, m.slots, m.frame, ptr, bytes, frame);
  return s.arena->block(where.block).device + where.offset;
}

void Coordinator::upload_bytes(void* device_dst, const void* src, std::size_t bytes) {
  Impl& m = *impl_;
  m.state.expect_in_frame("upload");
  FRAMESTAGE_EXPECTS(device_dst != nullptr, misuse, "upload: null destination for ", bytes,
                     " bytes");
  if (bytes == 0) return;
  FRAMESTAGE_EXPECTS(src != nullptr, misuse, "upload: null source for ", bytes, " bytes");
  m.addresses.expect(device_dst, bytes, "upload", "destination");
  // Descriptors hold 32-bit lengths: larger uploads travel as consecutive pieces.
  auto* dst = static_cast<std::byte*>(device_dst);
  const auto* from = static_cast<const std::byte*>(src);
  while (bytes > 0) {
    const std::size_t piece = std::min(bytes, UploadArena::kMaxReservationBytes);
    stream_copy(m.reserve_upload(dst, piece), from, piece);
    dst += piece;
    from += piece;
    bytes -= piece;
  }
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
  return &impl_->readback_slots[impl_->slot];
}

FrameTicket Coordinator::end_frame() {
  Impl& m = *impl_;
  m.state.expect_frame_open("end_frame without begin_frame (last frame ", m.frame,
                            " already ended)");
  SlotArenas& s = m.current();
  std::size_t staged_calls = 0;
  const ReadbackPlan* readbacks = nullptr;
  const TransferPlan& plan = m.state.guarded([&]() -> const TransferPlan& {
    const NvtxRange range("framestage::end_frame");
    staged_calls = m.staged.calls();
    s.uploads->pad_unused();
    s.readbacks->pad_unused();
    const PlannerInput input{s.arena.get(), s.uploads.get(), m.staged.all(),
                             m.large_uploads.load(std::memory_order_relaxed)};
    // Where it can, the payload is on the wire while the descriptors are still being checked.
    // Readbacks go after planning (which may throw and leave the frame open), and their gathers
    // before the frame's scatters on the consumer stream.
    const TransferPlan* early = m.planner.plan_early(input);
    if (early != nullptr) m.scheduler.submit_copies(m.slot, m.frame, *early);
    const TransferPlan& p = [&]() -> const TransferPlan& {
      const NvtxRange planning("framestage::plan");
      return early != nullptr ? m.planner.finish_early(input) : m.planner.plan(input);
    }();
    readbacks = &m.planner.plan_readbacks(*s.readbacks);
    m.scheduler.submit_readbacks(m.slot, *readbacks);
    if (early == nullptr) m.scheduler.submit_copies(m.slot, m.frame, p);
    m.scheduler.submit_consumers(m.slot, p);
    return p;
  });
  m.readback_slots[m.slot].submitted.store(m.frame, std::memory_order_release);

  FrameStats f;
  f.frame = m.frame;
  f.slot = m.slot;
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
  f.arena_capacity_bytes = m.frame_start_capacity;
  f.arena_overflowed = s.arena->overflowed();
  m.stats.add(f);
  m.refresh_slot_stats();

  m.unretired_slot = m.slot;
  m.state.close();
  return FrameTicket(m.backend, m.frame, m.slot, m.scheduler.consumer_stream(),
                     m.scheduler.ready_event(m.slot));
}

void Coordinator::synchronize() {
  const NvtxRange range("framestage::synchronize");
  Impl& m = *impl_;
  m.state.expect_not_failed();
  m.state.guarded([&] { m.scheduler.synchronize(); });
}

void Coordinator::set_consumer_stream(StreamView stream) {
  Impl& m = *impl_;
  m.state.expect_between_frames("set_consumer_stream inside frame ", m.frame,
                                ": call it between frames");
  m.state.guarded([&] { m.scheduler.set_consumer_stream(stream); });
}

StreamView Coordinator::consumer_stream() const noexcept {
  return impl_->scheduler.consumer_stream();
}
const CoordinatorStats& Coordinator::stats() const noexcept {
  return impl_->stats;
}
const Config& Coordinator::config() const noexcept {
  return impl_->config;
}
Backend& Coordinator::backend() const noexcept {
  return *impl_->backend;
}
std::uint64_t Coordinator::current_frame() const noexcept {
  return impl_->frame;
}
bool Coordinator::frame_open() const noexcept {
  return impl_->state.in_frame();
}
bool Coordinator::failed() const noexcept {
  return impl_->state.failed();
}

}  // namespace framestage
