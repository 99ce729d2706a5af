#include <framestage/coordinator.hpp>
#include <framestage/detail/expects.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/scheduler.hpp>
#include <framestage/transfer_planner.hpp>

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace framestage {

namespace {

enum class Phase : int { between_frames, in_frame, failed };

// Staged ranges of one frame: lock-free appends into fixed storage, and a locked list beyond.
class StagedRanges {
 public:
  explicit StagedRanges(std::size_t capacity) : fixed_(capacity) {}

  void push(const StagedRange& range) {
    const std::size_t i = count_.fetch_add(1, std::memory_order_relaxed);
    if (i < fixed_.size()) [[likely]] {
      fixed_[i] = range;
      return;
    }
    std::lock_guard lock(mutex_);
    extra_.push_back(range);
  }

  // Owner thread, after every push of the frame.
  std::span<const StagedRange> all() {
    const std::size_t n = std::min(count_.load(std::memory_order_relaxed), fixed_.size());
    if (extra_.empty()) return {fixed_.data(), n};
    extra_.insert(extra_.begin(), fixed_.begin(), fixed_.begin() + static_cast<std::ptrdiff_t>(n));
    return extra_;
  }

  void clear() {
    count_.store(0, std::memory_order_relaxed);
    extra_.clear();
  }

 private:
  std::vector<StagedRange> fixed_;
  std::atomic<std::size_t> count_{0};
  std::mutex mutex_;
  std::vector<StagedRange> extra_;
};

struct SlotArenas {
  std::unique_ptr<FrameArena> arena;
  std::unique_ptr<FrameArena> descriptors;
  std::uint64_t frame = 0;  // the frame this slot holds; 0 = none yet
};

std::uint64_t address(const void* p) {
  return reinterpret_cast<std::uint64_t>(p);
}

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
        scheduler(b, cfg.buffering, std::chrono::milliseconds{cfg.slot_timeout_ms}) {
    stats.slots.resize(slots.size());
    refresh_slot_stats();
  }

  static std::vector<SlotArenas> make_slots(const Config& cfg, Backend& b) {
    std::vector<SlotArenas> out(cfg.buffering);
    for (auto& s : out) {
      s.arena = std::make_unique<FrameArena>(b, cfg.arena_bytes, cfg.overflow, "arena",
                                             "raise arena_bytes, or set overflow to \"grow\"");
      s.descriptors = std::make_unique<FrameArena>(
          b, cfg.max_uploads_per_frame * sizeof(TransferDescriptor), cfg.overflow,
          "upload descriptor table",
          "more than max_uploads_per_frame (" + std::to_string(cfg.max_uploads_per_frame) +
              ") uploads this frame; raise it, or set overflow to \"grow\"");
    }
    return out;
  }

  // Runs a backend-facing step; a CUDA failure leaves the coordinator failed for good.
  template <class F>
  decltype(auto) guarded(F&& step) {
    try {
      return step();
    } catch (const Error& e) {
      if (e.category() == ErrorCategory::cuda) fail(e.message());
      throw;
    }
  }

  void fail(const std::string& message) {
    std::lock_guard lock(failure_mutex);
    if (failure.empty()) failure = message;
    phase.store(Phase::failed, std::memory_order_release);
  }

  // The hot path's only check: one acquire load in the common case.
  void expect_in_frame(const char* call) const {
    const Phase p = phase.load(std::memory_order_acquire);
    if (p == Phase::in_frame) [[likely]]
      return;
    expect_not_failed();
    FRAMESTAGE_FAIL(misuse, call, " outside a frame: call begin_frame first");
  }

  void expect_not_failed() const {
    if (phase.load(std::memory_order_acquire) != Phase::failed) return;
    std::lock_guard lock(failure_mutex);
    throw Error(ErrorCategory::failed_state,
                "the coordinator failed earlier and can no longer be used: " + failure);
  }

  void refresh_slot_stats() {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      stats.slots[i].arena_capacity_bytes = slots[i].arena->capacity_bytes();
      stats.slots[i].arena_high_water_bytes = slots[i].arena->high_water_bytes();
    }
  }

  SlotArenas& current() { return slots[slot]; }

  Config config;
  Backend* backend;
  std::vector<SlotArenas> slots;  // declared before the scheduler: freed after it has drained
  StagedRanges staged;
  TransferPlanner planner;
  Scheduler scheduler;
  std::atomic<Phase> phase{Phase::between_frames};
  mutable std::mutex failure_mutex;
  std::string failure;
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
  Impl& m = *impl_;
  m.expect_not_failed();
  FRAMESTAGE_EXPECTS(m.phase.load(std::memory_order_relaxed) == Phase::between_frames, misuse,
                     "begin_frame: frame ", m.frame, " is still open; call end_frame first");
  const std::uint64_t next = m.frame + 1;
  const auto slot = static_cast<std::uint32_t>((next - 1) % m.slots.size());
  SlotArenas& s = m.slots[slot];
  m.guarded([&] {
    // The user has enqueued the last frame's kernels by now: mark where its readers end.
    if (m.unretired_slot) {
      m.scheduler.retire(*m.unretired_slot);
      m.unretired_slot.reset();
    }
    m.scheduler.acquire(slot);
    const auto resize = s.arena->reset(m.config.arena_bytes, m.config.trim_after_frames);
    s.descriptors->reset(m.config.max_uploads_per_frame * sizeof(TransferDescriptor),
                         m.config.trim_after_frames);
    m.stats.arena_growths += resize == FrameArena::Resize::grew;
    m.stats.arena_trims += resize == FrameArena::Resize::trimmed;
  });
  m.staged.clear();
  m.frame = next;
  m.slot = slot;
  s.frame = next;
  m.frame_start_capacity = s.arena->capacity_bytes();
  m.phase.store(Phase::in_frame, std::memory_order_release);
}

std::byte* Coordinator::allocate_bytes(std::size_t count, std::size_t bytes,
                                       std::size_t alignment) {
  Impl& m = *impl_;
  m.expect_in_frame("frame_alloc");
  FRAMESTAGE_EXPECTS(bytes > 0, misuse,
                     "frame_alloc: count must be > 0 and its bytes fit in size_t, got ", count);
  return m.current().arena->allocate(bytes, alignment).host;
}

void Coordinator::stage_bytes(const void* ptr, std::size_t bytes, std::uint64_t frame) {
  Impl& m = *impl_;
  m.expect_in_frame("stage_for_upload");
  FRAMESTAGE_EXPECTS(frame == m.frame, misuse, "stage_for_upload: the span is from frame ", frame,
                     ", but frame ", m.frame, " is open");
  if (bytes == 0) return;
  const auto where = m.current().arena->locate(ptr, bytes);
  FRAMESTAGE_EXPECTS(where.has_value(), misuse, "stage_for_upload: ", bytes, " bytes at ", ptr,
                     " are not an allocation of frame ", m.frame, "'s arena");
  m.staged.push({where->block, where->offset, bytes});
}

void* Coordinator::device_address(const void* ptr, std::size_t bytes, std::uint64_t frame) const {
  const Impl& m = *impl_;
  m.expect_not_failed();
  FRAMESTAGE_EXPECTS(frame >= 1 && frame <= m.frame, misuse, "device_ptr: the span is from frame ",
                     frame, ", but the newest frame is ", m.frame);
  const SlotArenas& s = m.slots[(frame - 1) % m.slots.size()];
  FRAMESTAGE_EXPECTS(s.frame == frame, misuse, "device_ptr: frame ", frame,
                     " is stale: its slot now holds frame ", s.frame);
  const auto where = s.arena->locate(ptr, bytes == 0 ? 1 : bytes);
  FRAMESTAGE_EXPECTS(where.has_value(), misuse, "device_ptr: ", bytes, " bytes at ", ptr,
                     " are not an allocation of frame ", frame, "'s arena");
  return s.arena->block(where->block).device + where->offset;
}

void Coordinator::upload_bytes(void* device_dst, const void* src, std::size_t bytes) {
  Impl& m = *impl_;
  m.expect_in_frame("upload");
  FRAMESTAGE_EXPECTS(device_dst != nullptr, misuse, "upload: null destination for ", bytes,
                     " bytes");
  if (bytes == 0) return;
  FRAMESTAGE_EXPECTS(src != nullptr, misuse, "upload: null source for ", bytes, " bytes");
  SlotArenas& s = m.current();
  // Payload first: if the descriptor table is full, no half-written descriptor is left behind.
  const auto payload = s.arena->allocate(bytes, FrameArena::kGranule);
  std::memcpy(payload.host, src, bytes);
  const auto entry = s.descriptors->allocate(sizeof(TransferDescriptor), FrameArena::kGranule);
  *reinterpret_cast<TransferDescriptor*>(entry.host) =
      TransferDescriptor{address(payload.device), address(device_dst), bytes, 0};
}

FrameTicket Coordinator::end_frame() {
  Impl& m = *impl_;
  m.expect_not_failed();
  FRAMESTAGE_EXPECTS(m.phase.load(std::memory_order_relaxed) == Phase::in_frame, misuse,
                     "end_frame without begin_frame (last frame ", m.frame, " already ended)");
  SlotArenas& s = m.current();
  const TransferPlan& plan = m.guarded([&]() -> const TransferPlan& {
    const TransferPlan& p =
        m.planner.plan({s.arena.get(), s.descriptors.get(), m.staged.all(), m.backend});
    m.scheduler.submit(m.slot, m.frame, p);
    return p;
  });

  FrameStats f;
  f.frame = m.frame;
  f.slot = m.slot;
  f.strategy = plan.strategy;
  f.staged_ranges = plan.staged_ranges;
  f.uploads = plan.uploads;
  f.superseded_uploads = plan.superseded_uploads;
  f.merged_overlaps = plan.merged_overlaps;
  f.mirror_bytes = plan.mirror_bytes;
  f.scattered_bytes = plan.scattered_bytes;
  f.direct_bytes = plan.direct_bytes;
  f.staging_copies = plan.staging_copies.size();
  f.staging_copy_bytes = plan.staging_copy_bytes;
  f.direct_copies = plan.direct_copies.size();
  f.scatter_launches = plan.scatters.size();
  f.arena_used_bytes = s.arena->used_bytes();
  f.arena_capacity_bytes = m.frame_start_capacity;
  f.arena_overflowed = s.arena->overflowed();
  m.stats.add(f);
  m.refresh_slot_stats();

  m.unretired_slot = m.slot;
  m.phase.store(Phase::between_frames, std::memory_order_release);
  return FrameTicket(m.backend, m.frame, m.slot, m.scheduler.consumer_stream(),
                     m.scheduler.ready_event(m.slot));
}

void Coordinator::synchronize() {
  Impl& m = *impl_;
  m.expect_not_failed();
  m.guarded([&] { m.scheduler.synchronize(); });
}

void Coordinator::set_consumer_stream(StreamView stream) {
  Impl& m = *impl_;
  m.expect_not_failed();
  FRAMESTAGE_EXPECTS(m.phase.load(std::memory_order_relaxed) == Phase::between_frames, misuse,
                     "set_consumer_stream inside frame ", m.frame, ": call it between frames");
  m.guarded([&] { m.scheduler.set_consumer_stream(stream); });
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
  return impl_->phase.load(std::memory_order_acquire) == Phase::in_frame;
}
bool Coordinator::failed() const noexcept {
  return impl_->phase.load(std::memory_order_acquire) == Phase::failed;
}

}  // namespace framestage
