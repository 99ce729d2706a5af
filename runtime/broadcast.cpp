#include <framestage/broadcast.hpp>
#include <framestage/detail/enum_words.hpp>
#include <framestage/detail/expects.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/stream_copy.hpp>

#include "device_address_check.hpp"
#include "frame_staging.hpp"
#include "frame_state.hpp"
#include "nvtx_range.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace framestage {

namespace {

constexpr std::size_t kMaxBlocks = 1 + FrameArena::kMaxOverflowBlocks;

// Bytes of one arena block: a staged span, an upload's payload, or a merged run of them.
using ArenaRange = StagedRange;

// One upload's payload in the arena; its destinations, one per device, are kept beside it.
struct UploadRecord {
  std::uint32_t block;
  std::uint32_t bytes;
  std::size_t offset;
};

// Uploads of one frame in issue order (the fetch_add order), each with one destination per
// device. Beyond `capacity` they go under a lock (grow) or are refused (fail).
class UploadList {
 public:
  UploadList(std::size_t capacity, std::size_t devices, OverflowPolicy policy)
      : records_(capacity), targets_(capacity * devices), devices_(devices), policy_(policy) {}

  void push(const UploadRecord& record, const std::uint64_t* targets) {
    const std::size_t i = count_.fetch_add(1, std::memory_order_relaxed);
    if (i < records_.size()) [[likely]] {
      records_[i] = record;
      std::copy_n(targets, devices_, targets_.data() + i * devices_);
      return;
    }
    FRAMESTAGE_EXPECTS(policy_ == OverflowPolicy::grow, out_of_memory,
                       "broadcast upload table overflow: more than max_uploads_per_frame (",
                       records_.size(),
                       ") uploads this frame; raise max_uploads_per_frame, or set overflow to "
                       "\"grow\"");
    std::lock_guard lock(mutex_);
    extra_records_.push_back(record);
    extra_targets_.insert(extra_targets_.end(), targets, targets + devices_);
  }

  // Owner thread, after every push of the frame.
  [[nodiscard]] std::size_t size() const { return fixed_count() + extra_records_.size(); }
  [[nodiscard]] const UploadRecord& record(std::size_t i) const {
    const std::size_t fixed = fixed_count();
    return i < fixed ? records_[i] : extra_records_[i - fixed];
  }
  [[nodiscard]] std::uint64_t target(std::size_t i, std::size_t device) const {
    const std::size_t fixed = fixed_count();
    return i < fixed ? targets_[i * devices_ + device]
                     : extra_targets_[(i - fixed) * devices_ + device];
  }
  void clear() {
    count_.store(0, std::memory_order_relaxed);
    extra_records_.clear();
    extra_targets_.clear();
  }

 private:
  [[nodiscard]] std::size_t fixed_count() const {
    return std::min(count_.load(std::memory_order_relaxed), records_.size());
  }

  std::vector<UploadRecord> records_;
  std::vector<std::uint64_t> targets_;  // devices_ per record
  std::size_t devices_;
  OverflowPolicy policy_;
  std::atomic<std::size_t> count_{0};
  std::mutex mutex_;
  std::vector<UploadRecord> extra_records_;
  std::vector<std::uint64_t> extra_targets_;
};

// A device block that mirrors one arena block on a device other than devices[0].
struct Mirror {
  const std::byte* host = nullptr;  // the arena block mirrored; null while there is none
  MemoryBlock device;
};

// One slot's memory on one device.
struct SlotDevice {
  std::array<Mirror, kMaxBlocks> mirrors{};  // devices 1..N-1; device 0 uses the arena's own
  MemoryBlock table_host;                    // pinned descriptors, written at end_frame
  MemoryBlock table_device;                  // where that device's scatters read them
};

struct Slot {
  std::unique_ptr<FrameArena> arena;  // on devices[0]: the one pinned copy of the frame
  std::vector<SlotDevice> devices;
  std::uint64_t frame = 0;  // the frame this slot holds; 0 = none yet
};

// One device's streams and events (made with that device's backend).
struct DeviceQueues {
  Stream consumer;  // scatters, ordered copies, and the user's kernels (ticket.stream)
  Event drained;    // synchronize's marker
  std::vector<Stream> slot_streams;
  std::vector<Event> copies_done;  // per slot: the frame's runs and table are on the device
  std::vector<Event> ready;        // per slot: the frame is complete on the device
  std::vector<Event> retired;      // per slot: the kernels that read the frame have run
};

// For the scatter: the uploads of a frame grouped by arena block.
struct BlockGroups {
  std::array<std::size_t, kMaxBlocks> first{};
  std::array<std::size_t, kMaxBlocks> count{};
};

// Word i names the route whose value is i.
constexpr std::array<std::string_view, 2> kRouteWords{"from_host", "via_first_device"};
static_assert(static_cast<std::size_t>(BroadcastRoute::via_first_device) == kRouteWords.size() - 1);

}  // namespace

std::string_view to_string(BroadcastRoute route) noexcept {
  return detail::word_of(route, kRouteWords);
}

// ---- BroadcastTicket -------------------------------------------------------------------------

const detail::BroadcastTarget& BroadcastTicket::target(std::size_t device, const char* call) const {
  FRAMESTAGE_EXPECTS(!targets_.empty(), misuse, "BroadcastTicket::", call, " on an empty ticket");
  FRAMESTAGE_EXPECTS(device < targets_.size(), misuse, "BroadcastTicket::", call, ": device index ",
                     device, " out of range: frame ", frame_, " went to ", targets_.size(),
                     " devices");
  return targets_[device];
}

StreamView BroadcastTicket::stream(std::size_t device) const {
  return target(device, "stream").stream;
}

EventView BroadcastTicket::event(std::size_t device) const {
  return target(device, "event").ready;
}

bool BroadcastTicket::ready() const {
  FRAMESTAGE_EXPECTS(!targets_.empty(), misuse, "BroadcastTicket::ready on an empty ticket");
  return std::all_of(targets_.begin(), targets_.end(), [](const detail::BroadcastTarget& t) {
    return t.backend->event_ready(t.ready.native());
  });
}

void BroadcastTicket::wait(std::chrono::milliseconds timeout) const {
  using Clock = std::chrono::steady_clock;
  FRAMESTAGE_EXPECTS(!targets_.empty(), misuse, "BroadcastTicket::wait on an empty ticket");
  const auto start = Clock::now();
  for (std::size_t k = 0; k < targets_.size(); ++k) {
    const auto spent = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    const auto left = std::max(timeout - spent, std::chrono::milliseconds{0});
    FRAMESTAGE_EXPECTS(targets_[k].backend->wait_event(targets_[k].ready.native(), left), timeout,
                       "frame ", frame_, " not complete on device ", k, " (",
                       targets_[k].backend->describe(), ") after ", timeout.count(), " ms");
  }
}

// ---- Broadcast -------------------------------------------------------------------------------

struct Broadcast::Impl {
  Impl(detail::FrameStaging& f, std::span<Backend* const> devs, BroadcastRoute r)
      : frames(f),
        config(f.config),
        state(f.state),
        devices(validated(devs, r)),
        route(r),
        uploads(config.max_uploads_per_frame, devs.size(), config.overflow) {
    slots.resize(config.buffering);
    for (Slot& s : slots) {
      s.arena = std::make_unique<FrameArena>(*devices[0], config.arena_bytes, config.overflow,
                                             "broadcast arena",
                                             "raise arena_bytes, or set overflow to \"grow\"");
      s.devices.resize(devices.size());
      ensure_mirrors(s, 1);
    }
    queues.resize(devices.size());
    for (std::size_t k = 0; k < devices.size(); ++k) {
      Backend& b = *devices[k];
      addresses.emplace_back(b);
      DeviceQueues& q = queues[k];
      q.consumer = Stream(b);
      q.drained = Event(b);
      for (std::uint32_t i = 0; i < config.buffering; ++i) {
        q.slot_streams.emplace_back(b);
        q.copies_done.emplace_back(b);
        q.ready.emplace_back(b);
        q.retired.emplace_back(b);
      }
    }
    targets.resize(config.buffering);
    for (std::uint32_t i = 0; i < config.buffering; ++i) {
      for (std::size_t k = 0; k < devices.size(); ++k)
        targets[i].push_back({devices[k], queues[k].consumer.view(), queues[k].ready[i].view()});
    }
  }

  ~Impl() {
    try {
      drain();
    } catch (const std::exception& e) {
      if (!state.holds_failure_like(e))
        std::fprintf(stderr, "framestage: broadcast shutdown: %s\n", e.what());
    }
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // The device list, checked (the config was, by the StagingFront).
  static std::vector<Backend*> validated(std::span<Backend* const> devs, BroadcastRoute r) {
    FRAMESTAGE_EXPECTS(!devs.empty(), misuse,
                       "Broadcast: the device list is empty; pass one backend per device");
    FRAMESTAGE_EXPECTS(devs.size() <= kMaxDevices, misuse, "Broadcast: at most ", kMaxDevices,
                       " devices, got ", devs.size());
    for (std::size_t k = 0; k < devs.size(); ++k) {
      FRAMESTAGE_EXPECTS(devs[k] != nullptr, misuse, "Broadcast: device backend ", k, " of ",
                         devs.size(), " is null");
    }
    if (r == BroadcastRoute::via_first_device) {
      for (std::size_t k = 1; k < devs.size(); ++k) {
        FRAMESTAGE_EXPECTS(
            devs[k]->kind() != BackendKind::host || devs[k] == devs[0], misuse,
            "Broadcast: via_first_device needs every device to wait on device 0's events, and "
            "host backend ",
            k,
            " is not device 0's instance (a HostBackend's events belong to it alone); pass the "
            "same HostBackend for every device, or use from_host");
      }
    }
    return {devs.begin(), devs.end()};
  }

  Slot& current() { return slots[frames.slot]; }

  // Gives devices 1..N-1 a mirror of each of the slot's first `blocks` arena blocks (kept while
  // it mirrors the same block and is large enough), and frees the mirrors of blocks beyond.
  // Only while no device uses the slot.
  void ensure_mirrors(Slot& s, std::size_t blocks) {
    for (std::size_t k = 1; k < devices.size(); ++k) {
      for (std::size_t b = 0; b < kMaxBlocks; ++b) {
        Mirror& m = s.devices[k].mirrors[b];
        if (b >= blocks) {
          m = Mirror{};
          continue;
        }
        const FrameArena::BlockView view = s.arena->block(b);
        if (m.host == view.host && m.device.bytes() >= view.capacity) continue;
        m = Mirror{};  // free first, so a grown block does not need both at once
        m.device = MemoryBlock(*devices[k], MemoryKind::device, view.capacity);
        m.host = view.host;
      }
    }
  }

  // Device k's copy of block b of the slot (views: the slot's blocks this frame).
  std::byte* mirror(Slot& s, std::size_t k, std::size_t b) {
    return k == 0 ? views[b].device : s.devices[k].mirrors[b].device.data();
  }

  // Waits for one of a slot's events on device k, or throws Error(timeout) naming the device.
  void wait_slot(std::size_t k, const Event& event, std::uint32_t i, const char* what) {
    Backend& b = *devices[k];
    FRAMESTAGE_EXPECTS(b.wait_event(event.native(), timeout()), timeout, "begin_frame: slot ", i,
                       " (frame ", slots[i].frame, ") still busy on device ", k, " (", b.describe(),
                       ") after ", config.slot_timeout_ms, " ms: ", what,
                       " have not finished; a kernel on that device's stream may be hung, or "
                       "slot_timeout_ms is too short");
  }

  // Blocks until every stream of every device has run what was enqueued on it.
  void drain() {
    for (std::size_t k = 0; k < devices.size(); ++k) {
      Backend& b = *devices[k];
      DeviceQueues& q = queues[k];
      const auto drain_stream = [&](StreamView stream) {
        b.record_event(q.drained.native(), stream);
        FRAMESTAGE_EXPECTS(b.wait_event(q.drained.native(), timeout()), timeout,
                           "synchronize: device ", k, " (", b.describe(), ") still busy after ",
                           config.slot_timeout_ms, " ms");
      };
      for (const Stream& stream : q.slot_streams)
        drain_stream(stream.view());
      drain_stream(q.consumer.view());
    }
  }

  [[nodiscard]] std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds{config.slot_timeout_ms};
  }

  // True if device k's destinations of this frame's uploads overlap (so one scatter, whose
  // targets must be disjoint, cannot deliver them).
  bool uploads_overlap(std::size_t k, std::size_t n) {
    // Uploads issued in address order (a sweep over a buffer) prove it in one pass.
    std::uint64_t end = 0;
    std::size_t i = 0;
    for (; i < n; ++i) {
      const std::uint64_t target = uploads.target(i, k);
      if (target < end) break;
      end = target + uploads.record(i).bytes;
    }
    if (i == n) return false;
    spans.clear();
    for (std::size_t j = 0; j < n; ++j) {
      const std::uint64_t target = uploads.target(j, k);
      spans.emplace_back(target, target + uploads.record(j).bytes);
    }
    std::sort(spans.begin(), spans.end());
    for (std::size_t j = 1; j < spans.size(); ++j) {
      if (spans[j].first < spans[j - 1].second) return true;
    }
    return false;
  }

  // Declaration order is destruction order reversed: the streams go first, so work a backend
  // still runs on destruction finds the memory it uses.
  detail::FrameStaging& frames;  // state, frame, slot, staged ranges: the StagingFront's
  const Config& config;
  detail::FrameState& state;
  std::vector<Backend*> devices;
  BroadcastRoute route;
  std::vector<Slot> slots;
  UploadList uploads;
  std::vector<DeviceQueues> queues;
  std::vector<detail::DeviceAddressCheck> addresses;  // one per device: host pointers refused
  std::vector<std::vector<detail::BroadcastTarget>> targets;  // per slot, what tickets point at

  BroadcastFrameStats last;

  // end_frame's scratch, kept so that a frame allocates nothing once they have grown.
  std::array<FrameArena::BlockView, kMaxBlocks> views{};
  std::vector<ArenaRange> ranges;
  std::vector<ArenaRange> runs;
  std::vector<std::size_t> order;  // upload indices grouped by block
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  std::vector<char> overlaps;  // per device
};

Broadcast::Broadcast(const Config& config, std::span<Backend* const> devices, BroadcastRoute route)
    : StagingFront("broadcast", config), impl_(std::make_unique<Impl>(staging(), devices, route)) {}

Broadcast::~Broadcast() = default;

void Broadcast::begin_frame() {
  const detail::NvtxRange range("framestage::Broadcast::begin_frame");
  Impl& m = *impl_;
  const std::uint32_t slot = m.frames.next_slot(m.slots.size());
  Slot& s = m.slots[slot];
  m.state.guarded([&] {
    // The user has enqueued the last frame's kernels by now: mark where its readers end.
    m.frames.retire_last_frame([&](std::uint32_t last) {
      for (std::size_t k = 0; k < m.devices.size(); ++k)
        m.devices[k]->record_event(m.queues[k].retired[last].native(), m.queues[k].consumer.view());
    });
    // Every device: the slot's copies (on device 0 under via_first_device, also what the other
    // devices copied from its mirror), then its readers, which ran after its scatters.
    for (std::size_t k = 0; k < m.devices.size(); ++k)
      m.wait_slot(k, m.queues[k].copies_done[slot], slot, "its copies");
    for (std::size_t k = 0; k < m.devices.size(); ++k)
      m.wait_slot(k, m.queues[k].retired[slot], slot, "the kernels that read it");
    (void)s.arena->reset(m.config.arena_bytes, m.config.trim_after_frames);
    m.ensure_mirrors(s, 1);
  });
  m.uploads.clear();
  s.frame = m.frames.frame + 1;
  m.frames.open(slot, *s.arena);
}

void* Broadcast::device_address(const void* ptr, std::size_t bytes, std::uint64_t frame,
                                std::size_t device) const {
  const Impl& m = *impl_;
  const auto [s, where] = detail::locate_in_slot(m.frames, m.slots, ptr, bytes, frame);
  FRAMESTAGE_EXPECTS(device < m.devices.size(), misuse, "device_ptr: device index ", device,
                     " out of range: the broadcast has ", m.devices.size(), " devices");
  const FrameArena::BlockView view = s.arena->block(where.block);
  if (device == 0) return view.device + where.offset;
  const Mirror& mirror = s.devices[device].mirrors[where.block];
  FRAMESTAGE_EXPECTS(mirror.host == view.host && mirror.device.bytes() >= view.capacity, misuse,
                     "device_ptr: the span lies in overflow block ", where.block, " of frame ",
                     frame, "'s arena, whose mirror on device ", device,
                     " is made at end_frame; call device_ptr after end_frame");
  return mirror.device.data() + where.offset;
}

void Broadcast::upload_bytes(const std::uint64_t* targets, std::size_t count, const void* src,
                             std::size_t bytes) {
  Impl& m = *impl_;
  m.state.expect_in_frame("upload");
  const std::size_t n = m.devices.size();
  FRAMESTAGE_EXPECTS(count == n, misuse, "upload: ", count, " destinations for a broadcast to ", n,
                     " devices; pass one per device");
  for (std::size_t k = 0; k < n; ++k) {
    FRAMESTAGE_EXPECTS(targets[k] != 0, misuse, "upload: null destination for device ", k, " of ",
                       n, " (", bytes, " bytes)");
  }
  if (!detail::expect_upload_source(src, bytes)) return;
  for (std::size_t k = 0; k < n; ++k)
    m.addresses[k].expect(reinterpret_cast<const void*>(targets[k]), bytes, "upload",
                          "destination");
  std::array<std::uint64_t, kMaxDevices> at{};
  FrameArena& arena = *m.current().arena;
  const auto* from = static_cast<const std::byte*>(src);
  detail::for_each_upload_piece(
      bytes, kMaxUploadPieceBytes, [&](std::size_t offset, std::size_t piece) {
        for (std::size_t k = 0; k < n; ++k)
          at[k] = targets[k] + offset;
        std::byte* payload = arena.allocate(piece, kStagingGranule).host;
        const auto where = arena.locate(payload, piece);
        FRAMESTAGE_EXPECTS(where.has_value(), misuse, "upload: the arena lost an allocation of ",
                           piece, " bytes");
        FRAMESTAGE_EXPECTS(
            where->offset / kStagingGranule <= std::numeric_limits<std::uint32_t>::max(),
            out_of_memory, "upload: the payload lands at arena offset ", where->offset,
            ", beyond the 64 GiB an upload descriptor addresses; keep arena_bytes at "
            "most 64 GiB when uploading");
        m.uploads.push({where->block, static_cast<std::uint32_t>(piece), where->offset}, at.data());
        stream_copy(payload, from + offset, piece);
      });
}

void Broadcast::expect_replicated(std::size_t devices, std::size_t size, std::size_t first,
                                  std::size_t count) const {
  FRAMESTAGE_EXPECTS(devices == impl_->devices.size(), misuse, "upload: the Replicated buffer has ",
                     devices, " devices, the broadcast ", impl_->devices.size());
  FRAMESTAGE_EXPECTS(first <= size && count <= size - first, misuse, "upload: elements [", first,
                     ", ", first + count, ") do not fit a Replicated buffer of ", size);
}

BroadcastTicket Broadcast::end_frame() {
  const detail::NvtxRange range("framestage::Broadcast::end_frame");
  Impl& m = *impl_;
  m.frames.expect_frame_open();
  Slot& s = m.current();
  const std::uint32_t slot = m.frames.slot;
  const std::size_t staged_calls = m.frames.staged.calls();
  const std::size_t devices = m.devices.size();
  const std::size_t blocks = s.arena->block_count();
  const std::size_t n = m.uploads.size();

  // Planning. It may throw out_of_memory (a mirror or table for grown data), but enqueues
  // nothing, so the frame stays open and end_frame may be called again.
  for (std::size_t b = 0; b < blocks; ++b)
    m.views[b] = s.arena->block(b);
  const auto staged = m.frames.staged.all();
  m.ranges.assign(staged.begin(), staged.end());
  for (std::size_t i = 0; i < n; ++i) {
    const UploadRecord& r = m.uploads.record(i);
    m.ranges.push_back({r.block, r.offset, r.bytes});
  }
  std::sort(m.ranges.begin(), m.ranges.end(), [](const ArenaRange& a, const ArenaRange& b) {
    return a.block != b.block ? a.block < b.block : a.offset < b.offset;
  });
  // Runs closer than this are copied as one, gap included (allocation padding at least).
  const std::size_t gap = std::max(m.config.merge_gap_bytes, FrameArena::kGranule);
  m.runs.clear();
  for (const ArenaRange& r : m.ranges) {
    if (!m.runs.empty()) {
      ArenaRange& run = m.runs.back();
      const std::size_t end = run.offset + run.bytes;
      if (run.block == r.block && (r.offset <= end || r.offset - end <= gap)) {
        run.bytes = std::max(end, r.offset + r.bytes) - run.offset;
        continue;
      }
    }
    m.runs.push_back(r);
  }
  std::size_t run_bytes = 0;
  for (const ArenaRange& r : m.runs)
    run_bytes += r.bytes;

  m.ensure_mirrors(s, blocks);
  m.overlaps.assign(devices, 0);
  BlockGroups groups;
  if (n > 0) {
    for (std::size_t k = 0; k < devices; ++k)
      m.overlaps[k] = m.uploads_overlap(k, n) ? 1 : 0;
    for (std::size_t i = 0; i < n; ++i)
      ++groups.count[m.uploads.record(i).block];
    for (std::size_t b = 1; b < kMaxBlocks; ++b)
      groups.first[b] = groups.first[b - 1] + groups.count[b - 1];
    m.order.resize(n);
    std::array<std::size_t, kMaxBlocks> next = groups.first;
    for (std::size_t i = 0; i < n; ++i)
      m.order[next[m.uploads.record(i).block]++] = i;
    // Each device's table, in pinned memory of that device's backend, grouped by block.
    for (std::size_t k = 0; k < devices; ++k) {
      if (m.overlaps[k] != 0) continue;
      SlotDevice& sd = s.devices[k];
      const std::size_t table_bytes = n * sizeof(TransferDescriptor);
      // Both sides checked: a growth that failed half way is redone on the next try.
      if (sd.table_host.bytes() < table_bytes || sd.table_device.bytes() < table_bytes) {
        const std::size_t grown = std::max(table_bytes, 2 * sd.table_host.bytes());
        sd.table_host = MemoryBlock();
        sd.table_device = MemoryBlock();
        sd.table_host = MemoryBlock(*m.devices[k], MemoryKind::pinned, grown);
        sd.table_device = MemoryBlock(*m.devices[k], MemoryKind::device, grown);
      }
      auto* table = reinterpret_cast<TransferDescriptor*>(sd.table_host.data());
      for (std::size_t j = 0; j < n; ++j) {
        const std::size_t i = m.order[j];
        const UploadRecord& r = m.uploads.record(i);
        table[j] =
            TransferDescriptor{m.uploads.target(i, k),
                               static_cast<std::uint32_t>(r.offset / kStagingGranule), r.bytes};
      }
    }
  }

  // Submission: per device, its copies on its slot stream, then its scatters on its consumer
  // stream. A backend failure here leaves the broadcast failed.
  std::size_t scatters = 0;
  m.state.guarded([&] {
    const bool peer = m.route == BroadcastRoute::via_first_device;
    for (std::size_t k = 0; k < devices; ++k) {
      Backend& b = *m.devices[k];
      DeviceQueues& q = m.queues[k];
      SlotDevice& sd = s.devices[k];
      const StreamView copies = q.slot_streams[slot].view();
      const bool table = n > 0 && m.overlaps[k] == 0;
      const std::size_t table_bytes = n * sizeof(TransferDescriptor);
      if (table) b.copy_async(sd.table_device.data(), sd.table_host.data(), table_bytes, copies);
      const bool from_device_0 = peer && k > 0;
      // Device 0's copies are enqueued by now: k = 0 went first.
      if (from_device_0) b.stream_wait_event(copies, m.queues[0].copies_done[slot].native());
      for (const ArenaRange& r : m.runs) {
        const std::byte* src =
            from_device_0 ? m.mirror(s, 0, r.block) + r.offset : m.views[r.block].host + r.offset;
        b.copy_async(m.mirror(s, k, r.block) + r.offset, src, r.bytes, copies);
      }
      b.record_event(q.copies_done[slot].native(), copies);

      const StreamView consumer = q.consumer.view();
      b.stream_wait_event(consumer, q.copies_done[slot].native());
      if (table) {
        const auto* device_table =
            reinterpret_cast<const TransferDescriptor*>(sd.table_device.data());
        for (std::size_t blk = 0; blk < blocks; ++blk) {
          if (groups.count[blk] == 0) continue;
          b.scatter_async(device_table + groups.first[blk], groups.count[blk], m.mirror(s, k, blk),
                          consumer);
          ++scatters;
        }
      } else {
        // Overlapping destinations: one copy each, in issue order, so the last one wins.
        for (std::size_t i = 0; i < n; ++i) {
          const UploadRecord& r = m.uploads.record(i);
          b.copy_async(reinterpret_cast<void*>(m.uploads.target(i, k)),
                       m.mirror(s, k, r.block) + r.offset, r.bytes, consumer);
        }
      }
      b.record_event(q.ready[slot].native(), consumer);
    }
  });

  BroadcastFrameStats& f = m.last;
  f = BroadcastFrameStats{};
  f.frame = m.frames.frame;
  f.slot = slot;
  f.staged_ranges = staged_calls;
  f.uploads = n;
  f.copy_runs = m.runs.size();
  f.copy_bytes = run_bytes;
  f.devices_with_overlaps =
      static_cast<std::size_t>(std::count(m.overlaps.begin(), m.overlaps.end(), char{1}));
  const std::size_t scattering = devices - f.devices_with_overlaps;
  f.scatter_launches = scattering > 0 ? scatters / scattering : 0;
  f.arena_used_bytes = s.arena->used_bytes();
  f.arena_overflowed = s.arena->overflowed();

  m.frames.close();
  return BroadcastTicket(m.frames.frame, slot, m.targets[slot]);
}

void Broadcast::synchronize() {
  const detail::NvtxRange range("framestage::Broadcast::synchronize");
  Impl& m = *impl_;
  m.state.expect_not_failed();
  m.state.guarded([&] { m.drain(); });
}

std::size_t Broadcast::devices() const noexcept {
  return impl_->devices.size();
}
Backend& Broadcast::backend(std::size_t device) const {
  FRAMESTAGE_EXPECTS(device < impl_->devices.size(), misuse, "backend: device index ", device,
                     " out of range: the broadcast has ", impl_->devices.size(), " devices");
  return *impl_->devices[device];
}
BroadcastRoute Broadcast::route() const noexcept {
  return impl_->route;
}
const BroadcastFrameStats& Broadcast::last_frame() const noexcept {
  return impl_->last;
}

}  // namespace framestage
