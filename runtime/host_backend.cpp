#include <framestage/detail/expects.hpp>
#include <framestage/host_backend.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <new>
#include <unordered_map>
#include <vector>

namespace framestage {

namespace {

// Host "device" and "pinned" blocks are aligned like cudaMalloc's, so alignment bugs show here.
constexpr std::align_val_t kAllocationAlignment{256};

struct EventState;

struct Operation {
  enum class Kind { work, record, wait } kind;
  std::function<void()> work;   // Kind::work
  EventState* event = nullptr;  // Kind::record and Kind::wait
  std::uint64_t epoch = 0;      // which record of `event`
};

struct StreamState {
  std::deque<Operation> pending;
  std::vector<std::function<void()>>* captured = nullptr;  // set while a tick graph captures
};

// A tick graph: the work its capture kept, replayed after the transfers by every launch.
struct HostTickGraph {
  std::vector<std::function<void()>> work;
  std::size_t instances = 0;
};

struct EventState {
  std::uint64_t last_epoch = 0;
  // Records enqueued but not yet run: (epoch, stream holding it).
  std::vector<std::pair<std::uint64_t, StreamState*>> unrun;

  [[nodiscard]] bool done(std::uint64_t epoch) const {
    return std::none_of(unrun.begin(), unrun.end(),
                        [epoch](const auto& record) { return record.first == epoch; });
  }
};

}  // namespace

struct HostBackend::State {
  HostBackendOptions options;
  mutable std::mutex mutex;
  bool stalled = false;
  std::unordered_map<void*, std::size_t> allocations;
  std::vector<std::unique_ptr<StreamState>> streams;
  std::vector<std::unique_ptr<EventState>> events;
  std::vector<std::unique_ptr<EventState>> retired_events;

  StreamState& stream(StreamView view) {
    auto* s = static_cast<StreamState*>(view.native());
    FRAMESTAGE_EXPECTS(s != nullptr, misuse, "host backend: null stream handle");
    return *s;
  }
  static EventState& event(EventHandle handle) {
    FRAMESTAGE_EXPECTS(handle != nullptr, misuse, "host backend: null event handle");
    return *static_cast<EventState*>(handle);
  }

  void enqueue(StreamState& s, Operation op) {
    if (s.captured != nullptr) {
      FRAMESTAGE_EXPECTS(op.kind == Operation::Kind::work, misuse,
                         "host backend: an event record or wait on a stream under capture; a "
                         "tick graph's work enqueues copies and kernels only");
      s.captured->push_back(std::move(op.work));
      return;
    }
    s.pending.push_back(std::move(op));
    if (!options.deferred && !stalled) run_stream(s, nullptr, 0);
  }

  // Runs `s` from the front; stops after the record (`until`, `epoch`) when one is given.
  // Returns false if progress is impossible (stalled).
  bool run_stream(StreamState& s, const EventState* until, std::uint64_t epoch) {
    while (!s.pending.empty()) {
      if (stalled) return false;
      Operation op = std::move(s.pending.front());
      s.pending.pop_front();
      switch (op.kind) {
        case Operation::Kind::work:
          op.work();
          break;
        case Operation::Kind::wait:
          if (!run_until(*op.event, op.epoch)) {
            s.pending.push_front(std::move(op));
            return false;
          }
          break;
        case Operation::Kind::record: {
          auto& unrun = op.event->unrun;
          std::erase_if(unrun, [&](const auto& r) { return r.first == op.epoch; });
          if (op.event == until && op.epoch == epoch) return true;
          break;
        }
      }
    }
    return until == nullptr;
  }

  // Runs whatever the record `epoch` of `e` sits behind. A wait only ever names a record that
  // was enqueued before it, so this recursion cannot cycle.
  bool run_until(EventState& e, std::uint64_t epoch) {
    if (e.done(epoch)) return true;
    if (stalled) return false;
    auto it = std::find_if(e.unrun.begin(), e.unrun.end(),
                           [epoch](const auto& r) { return r.first == epoch; });
    return run_stream(*it->second, &e, epoch);
  }

  void* allocate(std::size_t bytes, const char* what) {
    void* ptr = ::operator new(std::max<std::size_t>(bytes, 1), kAllocationAlignment, std::nothrow);
    FRAMESTAGE_EXPECTS(ptr != nullptr, out_of_memory, "host backend: ", what, " of ", bytes,
                       " bytes failed");
    std::lock_guard lock(mutex);
    allocations.emplace(ptr, bytes);
    return ptr;
  }

  void release(void* ptr, const char* what) noexcept {
    if (ptr == nullptr) return;
    {
      std::lock_guard lock(mutex);
      if (allocations.erase(ptr) == 0) {
        std::fprintf(stderr, "framestage: host backend: %s of %p, which it did not allocate\n",
                     what, ptr);
        return;
      }
    }
    ::operator delete(ptr, kAllocationAlignment);
  }
};

HostBackend::HostBackend(HostBackendOptions options) : state_(std::make_unique<State>()) {
  state_->options = options;
}

HostBackend::~HostBackend() {
  for (auto& [ptr, bytes] : state_->allocations)
    ::operator delete(ptr, kAllocationAlignment);
}

std::string HostBackend::describe() const {
  return state_->options.deferred ? "host emulation (no GPU), deferred completion"
                                  : "host emulation (no GPU)";
}

void* HostBackend::allocate_pinned(std::size_t bytes) {
  return state_->allocate(bytes, "pinned allocation");
}
void HostBackend::free_pinned(void* ptr) noexcept {
  state_->release(ptr, "free_pinned");
}
void* HostBackend::mapped_device_address(void* pinned_ptr) {
  return pinned_ptr;
}
void* HostBackend::allocate_device(std::size_t bytes) {
  return state_->allocate(bytes, "device allocation");
}
void HostBackend::free_device(void* ptr) noexcept {
  state_->release(ptr, "free_device");
}

StreamHandle HostBackend::create_stream() {
  std::lock_guard lock(state_->mutex);
  return state_->streams.emplace_back(std::make_unique<StreamState>()).get();
}

void HostBackend::destroy_stream(StreamHandle stream) noexcept {
  std::lock_guard lock(state_->mutex);
  auto* s = static_cast<StreamState*>(stream);
  // As with CUDA, work already enqueued still runs; a stalled backend drops it instead.
  state_->run_stream(*s, nullptr, 0);
  for (auto* list : {&state_->events, &state_->retired_events}) {
    for (auto& e : *list)
      std::erase_if(e->unrun, [s](const auto& r) { return r.second == s; });
  }
  std::erase_if(state_->streams, [s](const auto& p) { return p.get() == s; });
}

EventHandle HostBackend::create_event() {
  std::lock_guard lock(state_->mutex);
  return state_->events.emplace_back(std::make_unique<EventState>()).get();
}

void HostBackend::destroy_event(EventHandle event) noexcept {
  std::lock_guard lock(state_->mutex);
  // Pending records and waits may still name the event, so its state lives until the backend
  // does; only the handle is given up.
  auto it = std::find_if(state_->events.begin(), state_->events.end(),
                         [event](const auto& e) { return e.get() == event; });
  if (it == state_->events.end()) return;
  state_->retired_events.push_back(std::move(*it));
  state_->events.erase(it);
}

void HostBackend::record_event(EventHandle event, StreamView stream) {
  std::lock_guard lock(state_->mutex);
  auto& e = State::event(event);
  auto& s = state_->stream(stream);
  const auto epoch = ++e.last_epoch;
  e.unrun.emplace_back(epoch, &s);
  state_->enqueue(s, Operation{Operation::Kind::record, {}, &e, epoch});
}

void HostBackend::stream_wait_event(StreamView stream, EventHandle event) {
  std::lock_guard lock(state_->mutex);
  auto& e = State::event(event);
  state_->enqueue(state_->stream(stream), Operation{Operation::Kind::wait, {}, &e, e.last_epoch});
}

bool HostBackend::event_ready(EventHandle event) {
  std::lock_guard lock(state_->mutex);
  auto& e = State::event(event);
  return state_->run_until(e, e.last_epoch);
}

bool HostBackend::wait_event(EventHandle event, std::chrono::milliseconds /*timeout*/) {
  return event_ready(event);
}

void HostBackend::synchronize(StreamView stream) {
  std::lock_guard lock(state_->mutex);
  FRAMESTAGE_EXPECTS(state_->stream(stream).captured == nullptr, misuse,
                     "host backend: synchronize on a stream under capture (on a GPU: "
                     "cudaErrorStreamCaptureUnsupported)");
  FRAMESTAGE_EXPECTS(state_->run_stream(state_->stream(stream), nullptr, 0), timeout,
                     "host backend: stream synchronize cannot complete while the backend is "
                     "stalled");
}

void HostBackend::copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) {
  FRAMESTAGE_EXPECTS(bytes == 0 || (dst != nullptr && src != nullptr), misuse,
                     "copy_async: null pointer with ", bytes, " bytes");
  std::lock_guard lock(state_->mutex);
  state_->enqueue(state_->stream(stream), Operation{Operation::Kind::work, [dst, src, bytes] {
                                                      std::memcpy(dst, src, bytes);
                                                    }});
}

void HostBackend::copy_batch_async(std::span<const CopyOp> copies, StreamView stream) {
  for (const CopyOp& c : copies)
    copy_async(c.dst, c.src, c.bytes, stream);
}

namespace {

// One loop for both directions, as the kernels have: only which side is staging differs.
template <bool kToTargets>
void run_descriptors(const TransferDescriptor* table, std::size_t count, std::byte* staging) {
  for (std::size_t i = 0; i < count; ++i) {
    const TransferDescriptor& d = table[i];
    std::byte* staged = staging + std::size_t{d.staging_granule} * kStagingGranule;
    auto* target = reinterpret_cast<std::byte*>(d.target);
    if constexpr (kToTargets) {
      std::memcpy(target, staged, d.bytes);
    } else {
      std::memcpy(staged, target, d.bytes);
    }
  }
}

}  // namespace

void HostBackend::scatter_async(const TransferDescriptor* table, std::size_t count,
                                const std::byte* staging, StreamView stream) {
  std::lock_guard lock(state_->mutex);
  // The table is read when the work runs, as a kernel reads it after the copy that delivered it.
  state_->enqueue(state_->stream(stream),
                  Operation{Operation::Kind::work, [table, count, staging] {
                              run_descriptors<true>(table, count, const_cast<std::byte*>(staging));
                            }});
}

void HostBackend::gather_async(const TransferDescriptor* table, std::size_t count,
                               std::byte* staging, StreamView stream) {
  std::lock_guard lock(state_->mutex);
  state_->enqueue(state_->stream(stream), Operation{Operation::Kind::work, [table, count, staging] {
                                                      run_descriptors<false>(table, count, staging);
                                                    }});
}

void HostBackend::read_device(void* host_dst, const void* device_src, std::size_t bytes) {
  std::memcpy(host_dst, device_src, bytes);
}

GraphHandle HostBackend::create_tick_graph(std::size_t instances,
                                           const std::function<void(StreamView)>& work) {
  FRAMESTAGE_EXPECTS(instances >= 1, misuse, "host backend: a tick graph needs an instance");
  auto graph = std::make_unique<HostTickGraph>();
  graph->instances = instances;
  const StreamHandle capture = create_stream();
  {
    std::lock_guard lock(state_->mutex);
    static_cast<StreamState*>(capture)->captured = &graph->work;
  }
  try {
    work(StreamView{capture});
  } catch (...) {
    destroy_stream(capture);
    throw;
  }
  destroy_stream(capture);
  return graph.release();
}

void HostBackend::destroy_tick_graph(GraphHandle graph) noexcept {
  // Launches hold copies of the work they enqueued, so nothing in flight refers to the graph.
  delete static_cast<HostTickGraph*>(graph);
}

void HostBackend::launch_tick_graph(GraphHandle graph, std::size_t instance, const TickTransfers& t,
                                    StreamView stream) {
  const auto* g = static_cast<const HostTickGraph*>(graph);
  FRAMESTAGE_EXPECTS(g != nullptr, misuse, "host backend: null tick graph");
  FRAMESTAGE_EXPECTS(instance < g->instances, misuse, "host backend: tick graph instance ",
                     instance, " of ", g->instances);
  // The graph's order: readbacks gathered and copied back, then the upload copy and the scatter,
  // then the captured work. (On a GPU the copy back may overlap the rest; it reads only
  // readback staging, which nothing else touches.)
  // Parts with nothing to do are skipped, as the CUDA backend disables their nodes.
  const auto copy = [&](const CopyOp& c) {
    if (c.bytes > 0) copy_async(c.dst, c.src, c.bytes, stream);
  };
  copy(t.readback_table);
  if (t.gather.count > 0) gather_async(t.gather.table, t.gather.count, t.gather.staging, stream);
  copy(t.readback_copy);
  copy(t.upload_copy);
  if (t.scatter.count > 0)
    scatter_async(t.scatter.table, t.scatter.count, t.scatter.staging, stream);
  for (const std::function<void()>& work : g->work)
    launch_host_task(stream, work);
}

bool HostBackend::is_capturing(StreamView stream) {
  std::lock_guard lock(state_->mutex);
  return state_->stream(stream).captured != nullptr;
}

void HostBackend::launch_host_task(StreamView stream, std::function<void()> task) {
  std::lock_guard lock(state_->mutex);
  state_->enqueue(state_->stream(stream), Operation{Operation::Kind::work, std::move(task)});
}

void HostBackend::set_stalled(bool stalled) {
  std::lock_guard lock(state_->mutex);
  state_->stalled = stalled;
  if (!stalled && !state_->options.deferred) {
    for (auto& s : state_->streams)
      state_->run_stream(*s, nullptr, 0);
  }
}

std::size_t HostBackend::pending_operations() const {
  std::lock_guard lock(state_->mutex);
  std::size_t n = 0;
  for (const auto& s : state_->streams)
    n += s->pending.size();
  return n;
}

std::size_t HostBackend::live_allocations() const {
  std::lock_guard lock(state_->mutex);
  return state_->allocations.size();
}

}  // namespace framestage
