// Shared test helper: a Backend decorator that forwards every call to another backend and fails
// a chosen one, as a CUDA failure would, so tests can drive every error path of the coordinator
// without a GPU and without touching the runtime.
//
// Each call kind (a FaultSite) is counted from 1. arm(site, n, mode) makes call n of `site` fail:
//   FaultMode::once      that call throws; every other call works (a transient failure:
//                        Error(out_of_memory) for allocations, Error(cuda) otherwise);
//   FaultMode::sticky    that call and every later call but the releases throw Error(cuda), as
//                        after a sticky CUDA error (a kernel fault corrupts the context);
//   FaultMode::time_out  wait_event returns false (a hung device); other sites fail once.
// Device and pinned budgets make allocations beyond a byte count fail with out_of_memory, as on
// a device with less memory. Releases (free_*, destroy_*) are always forwarded: they never throw.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/error.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>

namespace framestage::testing {

/// @brief The backend calls a fault can be injected into, one per virtual call that may throw.
enum class FaultSite : std::uint8_t {
  pinned_allocation,
  device_allocation,
  mapped_address,
  stream_creation,
  event_creation,
  event_record,
  stream_wait,
  event_query,
  event_wait,
  stream_synchronize,
  copy,
  batch_copy,
  scatter_launch,
  gather_launch,
  device_read,
  capture_query,
  graph_capture,
  graph_launch,
};
inline constexpr std::size_t kFaultSiteCount = 18;
inline constexpr std::array<FaultSite, kFaultSiteCount> kFaultSites{
    FaultSite::pinned_allocation,
    FaultSite::device_allocation,
    FaultSite::mapped_address,
    FaultSite::stream_creation,
    FaultSite::event_creation,
    FaultSite::event_record,
    FaultSite::stream_wait,
    FaultSite::event_query,
    FaultSite::event_wait,
    FaultSite::stream_synchronize,
    FaultSite::copy,
    FaultSite::batch_copy,
    FaultSite::scatter_launch,
    FaultSite::gather_launch,
    FaultSite::device_read,
    FaultSite::capture_query,
    FaultSite::graph_capture,
    FaultSite::graph_launch,
};

/// @brief Short name of a site ("device_allocation", ...), for test names and messages.
inline std::string_view to_string(FaultSite site) noexcept {
  constexpr std::array<std::string_view, kFaultSiteCount> kNames{
      "pinned_allocation", "device_allocation",  "mapped_address", "stream_creation",
      "event_creation",    "event_record",       "stream_wait",    "event_query",
      "event_wait",        "stream_synchronize", "copy",           "batch_copy",
      "scatter_launch",    "gather_launch",      "device_read",    "capture_query",
      "graph_capture",     "graph_launch"};
  return kNames[static_cast<std::size_t>(site)];
}

/// @brief Names the site in GoogleTest's output.
inline void PrintTo(FaultSite site, std::ostream* out) {
  *out << to_string(site);
}

/// @brief The CUDA runtime call each site stands for, so messages read like real failures.
inline std::string_view cuda_call_of(FaultSite site) noexcept {
  constexpr std::array<std::string_view, kFaultSiteCount> kCalls{"cudaHostAlloc",
                                                                 "cudaMalloc",
                                                                 "cudaHostGetDevicePointer",
                                                                 "cudaStreamCreate",
                                                                 "cudaEventCreate",
                                                                 "cudaEventRecord",
                                                                 "cudaStreamWaitEvent",
                                                                 "cudaEventQuery",
                                                                 "cudaEventSynchronize",
                                                                 "cudaStreamSynchronize",
                                                                 "cudaMemcpyAsync",
                                                                 "cudaMemcpyBatchAsync",
                                                                 "scatter kernel launch",
                                                                 "gather kernel launch",
                                                                 "cudaMemcpy",
                                                                 "cudaStreamIsCapturing",
                                                                 "cudaStreamBeginCapture",
                                                                 "cudaGraphLaunch"};
  return kCalls[static_cast<std::size_t>(site)];
}

enum class FaultMode { once, sticky, time_out };

inline std::string_view to_string(FaultMode mode) noexcept {
  switch (mode) {
    case FaultMode::once:
      return "once";
    case FaultMode::sticky:
      return "sticky";
    case FaultMode::time_out:
      return "time_out";
  }
  return "unknown";
}

/// @brief Every message of an injected failure contains this, so tests can tell it apart.
inline constexpr std::string_view kInjectedMarker = "injected fault";

/// @brief Forwards to `inner`, failing the call a test armed.
///
/// **Ownership:** borrows `inner`, which must outlive it and every resource made through it.
/// **Thread safety:** every member may be called from any thread (counters are atomic); arm()
/// and the budgets are meant to be set while no other thread calls in.
class FaultInjectingBackend final : public Backend {
 public:
  explicit FaultInjectingBackend(Backend& inner) : inner_(&inner) {}

  /// @brief Makes call `nth` (counted from 1 since construction or reset_counts()) of `site`
  /// fail in `mode`. One fault is armed at a time; arming again replaces it.
  void arm(FaultSite site, std::uint64_t nth, FaultMode mode = FaultMode::once) {
    armed_site_.store(static_cast<int>(site), std::memory_order_relaxed);
    armed_nth_.store(nth, std::memory_order_relaxed);
    mode_.store(mode, std::memory_order_relaxed);
  }
  /// @brief No armed fault and no sticky error from here on.
  void disarm() {
    armed_site_.store(-1, std::memory_order_relaxed);
    sticky_.store(false, std::memory_order_relaxed);
  }
  /// @brief Device (or pinned) allocations that would take the live total past `bytes` throw
  /// Error(out_of_memory), as on a smaller device. The default: no limit.
  void set_device_budget(std::size_t bytes) { device_budget_.store(bytes); }
  void set_pinned_budget(std::size_t bytes) { pinned_budget_.store(bytes); }

  /// @brief Calls of `site` so far (failed ones included).
  [[nodiscard]] std::uint64_t calls(FaultSite site) const {
    return counts_[static_cast<std::size_t>(site)].load(std::memory_order_relaxed);
  }
  void reset_counts() {
    for (auto& c : counts_)
      c.store(0, std::memory_order_relaxed);
  }
  /// @brief Failures thrown (or time-outs reported) because of arm() or a sticky error; budget
  /// refusals are counted apart.
  [[nodiscard]] std::uint64_t injected() const { return injected_.load(); }
  [[nodiscard]] std::uint64_t budget_refusals() const { return budget_refusals_.load(); }
  /// @brief The message of the first injected failure ("" if none yet).
  [[nodiscard]] std::string first_message() const {
    std::lock_guard lock(mutex_);
    return first_message_;
  }
  /// @brief Streams and events made through this backend and not yet destroyed.
  [[nodiscard]] std::int64_t live_streams() const { return live_streams_.load(); }
  [[nodiscard]] std::int64_t live_events() const { return live_events_.load(); }
  [[nodiscard]] std::size_t live_device_bytes() const {
    std::lock_guard lock(mutex_);
    return live_[1];
  }

  /// @brief Classifies addresses as CUDA does on a GPU without pageable memory access
  /// (CudaBackend::classify_address): device allocations made through this backend are
  /// `device` with their range, pinned ones `device` without one, any other address
  /// `host_only`. Set it before making the coordinator, which asks checks_addresses() once.
  void emulate_address_checks(bool on) { address_checks_.store(on); }
  /// @brief classify_address calls so far.
  [[nodiscard]] std::uint64_t addresses_classified() const { return classified_.load(); }
  [[nodiscard]] bool checks_addresses() const noexcept override { return address_checks_.load(); }
  [[nodiscard]] AddressInfo classify_address(const void* ptr) override {
    classified_.fetch_add(1, std::memory_order_relaxed);
    const auto at = reinterpret_cast<std::uintptr_t>(ptr);
    std::lock_guard lock(mutex_);
    for (const auto& [begin, bytes_and_kind] : ranges_) {
      const auto [bytes, which] = bytes_and_kind;
      if (at < begin || at - begin >= bytes) continue;
      return which == 1 ? AddressInfo{AddressKind::device, begin, bytes}
                        : AddressInfo{AddressKind::device, 0, 0};
    }
    return {AddressKind::host_only, 0, 0};
  }

  [[nodiscard]] BackendKind kind() const noexcept override { return inner_->kind(); }
  [[nodiscard]] std::string describe() const override {
    return "fault injection over " + inner_->describe();
  }

  void* allocate_pinned(std::size_t bytes) override {
    fault(FaultSite::pinned_allocation, bytes);
    return track(inner_->allocate_pinned(bytes), bytes, 0);
  }
  void free_pinned(void* ptr) noexcept override {
    untrack(ptr, 0);
    inner_->free_pinned(ptr);
  }
  [[nodiscard]] void* mapped_device_address(void* pinned_ptr) override {
    fault(FaultSite::mapped_address);
    return inner_->mapped_device_address(pinned_ptr);
  }
  void* allocate_device(std::size_t bytes) override {
    fault(FaultSite::device_allocation, bytes);
    return track(inner_->allocate_device(bytes), bytes, 1);
  }
  void free_device(void* ptr) noexcept override {
    untrack(ptr, 1);
    inner_->free_device(ptr);
  }

  StreamHandle create_stream() override {
    fault(FaultSite::stream_creation);
    StreamHandle stream = inner_->create_stream();
    live_streams_.fetch_add(1);
    return stream;
  }
  void destroy_stream(StreamHandle stream) noexcept override {
    if (stream != nullptr) live_streams_.fetch_sub(1);
    inner_->destroy_stream(stream);
  }
  EventHandle create_event() override {
    fault(FaultSite::event_creation);
    EventHandle event = inner_->create_event();
    live_events_.fetch_add(1);
    return event;
  }
  void destroy_event(EventHandle event) noexcept override {
    if (event != nullptr) live_events_.fetch_sub(1);
    inner_->destroy_event(event);
  }

  void record_event(EventHandle event, StreamView stream) override {
    fault(FaultSite::event_record);
    inner_->record_event(event, stream);
  }
  void stream_wait_event(StreamView stream, EventHandle event) override {
    fault(FaultSite::stream_wait);
    inner_->stream_wait_event(stream, event);
  }
  [[nodiscard]] bool event_ready(EventHandle event) override {
    fault(FaultSite::event_query);
    return inner_->event_ready(event);
  }
  [[nodiscard]] bool wait_event(EventHandle event, std::chrono::milliseconds timeout) override {
    if (!fault(FaultSite::event_wait)) return false;
    return inner_->wait_event(event, timeout);
  }
  void synchronize(StreamView stream) override {
    fault(FaultSite::stream_synchronize);
    inner_->synchronize(stream);
  }

  void copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) override {
    fault(FaultSite::copy);
    inner_->copy_async(dst, src, bytes, stream);
  }
  void copy_batch_async(std::span<const CopyOp> copies, StreamView stream) override {
    fault(FaultSite::batch_copy);
    inner_->copy_batch_async(copies, stream);
  }
  void scatter_async(const TransferDescriptor* table, std::size_t count, const std::byte* staging,
                     StreamView stream) override {
    fault(FaultSite::scatter_launch);
    inner_->scatter_async(table, count, staging, stream);
  }
  void gather_async(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                    StreamView stream) override {
    fault(FaultSite::gather_launch);
    inner_->gather_async(table, count, staging, stream);
  }
  void read_device(void* host_dst, const void* device_src, std::size_t bytes) override {
    fault(FaultSite::device_read);
    inner_->read_device(host_dst, device_src, bytes);
  }
  [[nodiscard]] GraphHandle create_tick_graph(
      std::size_t instances, const std::function<void(StreamView)>& work) override {
    fault(FaultSite::graph_capture);
    return inner_->create_tick_graph(instances, work);
  }
  void destroy_tick_graph(GraphHandle graph) noexcept override {
    inner_->destroy_tick_graph(graph);
  }
  void launch_tick_graph(GraphHandle graph, std::size_t instance, const TickTransfers& transfers,
                         StreamView stream) override {
    fault(FaultSite::graph_launch);
    inner_->launch_tick_graph(graph, instance, transfers, stream);
  }
  [[nodiscard]] bool is_capturing(StreamView stream) override {
    fault(FaultSite::capture_query);
    return capturing_.load() || inner_->is_capturing(stream);
  }
  /// @brief Reports every stream as under capture, as after a user's cudaStreamBeginCapture on
  /// the consumer stream.
  void emulate_capture(bool on) { capturing_.store(on); }

 private:
  static constexpr std::size_t kNoBudget = std::numeric_limits<std::size_t>::max();
  std::atomic<bool> capturing_{false};

  // Counts the call; throws if it is the armed one or a sticky error is set. Returns false
  // where the call should report a time-out instead (event_wait in FaultMode::time_out).
  bool fault(FaultSite site, std::size_t bytes = 0) {
    const std::uint64_t n =
        counts_[static_cast<std::size_t>(site)].fetch_add(1, std::memory_order_relaxed) + 1;
    const bool allocation =
        site == FaultSite::pinned_allocation || site == FaultSite::device_allocation;
    if (sticky_.load(std::memory_order_relaxed)) {
      fail(site, n, bytes, ErrorCategory::cuda, "cudaErrorIllegalAddress",
           "an illegal memory access was encountered", "sticky, after an earlier fault");
    }
    if (armed_site_.load(std::memory_order_relaxed) != static_cast<int>(site) ||
        armed_nth_.load(std::memory_order_relaxed) != n) {
      if (allocation) check_budget(site, bytes);
      return true;
    }
    const FaultMode mode = mode_.load(std::memory_order_relaxed);
    if (mode == FaultMode::time_out && site == FaultSite::event_wait) {
      injected_.fetch_add(1);
      return false;
    }
    if (mode == FaultMode::sticky) {
      sticky_.store(true, std::memory_order_relaxed);
      fail(site, n, bytes, ErrorCategory::cuda, "cudaErrorIllegalAddress",
           "an illegal memory access was encountered", "sticky");
    }
    if (allocation) {
      fail(site, n, bytes, ErrorCategory::out_of_memory, "cudaErrorMemoryAllocation",
           "out of memory", "once");
    }
    fail(site, n, bytes, ErrorCategory::cuda, "cudaErrorLaunchFailure",
         "unspecified launch failure", "once");
  }

  [[noreturn]] void fail(FaultSite site, std::uint64_t n, std::size_t bytes, ErrorCategory category,
                         std::string_view name, std::string_view text, std::string_view how) {
    std::string message(cuda_call_of(site));
    if (site == FaultSite::pinned_allocation || site == FaultSite::device_allocation) {
      message += " of " + std::to_string(bytes) + " bytes";
    }
    message += " failed: ";
    message += name;
    message += " (";
    message += text;
    message += ") (";
    message += kInjectedMarker;
    message += ", ";
    message += how;
    message += ": ";
    message += to_string(site);
    message += " call " + std::to_string(n) + ")";
    injected_.fetch_add(1);
    {
      std::lock_guard lock(mutex_);
      if (first_message_.empty()) first_message_ = message;
    }
    throw Error(category, message);
  }

  void check_budget(FaultSite site, std::size_t bytes) {
    const std::size_t which = site == FaultSite::device_allocation ? 1 : 0;
    const std::size_t budget = which == 1 ? device_budget_.load() : pinned_budget_.load();
    if (budget == kNoBudget) return;
    std::lock_guard lock(mutex_);
    if (bytes <= budget && live_[which] <= budget - bytes) return;
    budget_refusals_.fetch_add(1);
    throw Error(ErrorCategory::out_of_memory,
                std::string(cuda_call_of(site)) + " of " + std::to_string(bytes) +
                    " bytes failed: cudaErrorMemoryAllocation (out of memory) (budget of " +
                    std::to_string(budget) + " bytes, " + std::to_string(live_[which]) +
                    " in use)");
  }

  void* track(void* ptr, std::size_t bytes, std::size_t which) {
    if (ptr == nullptr) return ptr;
    std::lock_guard lock(mutex_);
    ranges_[reinterpret_cast<std::uintptr_t>(ptr)] = {bytes, which};
    live_[which] += bytes;
    return ptr;
  }
  void untrack(void* ptr, std::size_t which) noexcept {
    if (ptr == nullptr) return;
    std::lock_guard lock(mutex_);
    const auto it = ranges_.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == ranges_.end()) return;
    live_[which] -= it->second.first;
    ranges_.erase(it);
  }

  Backend* inner_;
  std::array<std::atomic<std::uint64_t>, kFaultSiteCount> counts_{};
  std::atomic<int> armed_site_{-1};
  std::atomic<std::uint64_t> armed_nth_{0};
  std::atomic<FaultMode> mode_{FaultMode::once};
  std::atomic<bool> sticky_{false};
  std::atomic<std::uint64_t> injected_{0};
  std::atomic<std::uint64_t> budget_refusals_{0};
  std::atomic<std::int64_t> live_streams_{0};
  std::atomic<std::int64_t> live_events_{0};
  std::atomic<std::size_t> device_budget_{kNoBudget};
  std::atomic<std::size_t> pinned_budget_{kNoBudget};
  mutable std::mutex mutex_;
  std::string first_message_;
  // Live allocations by address: bytes, and 0 (pinned) or 1 (device).
  std::map<std::uintptr_t, std::pair<std::size_t, std::size_t>> ranges_;
  std::atomic<bool> address_checks_{false};
  std::atomic<std::uint64_t> classified_{0};
  std::array<std::size_t, 2> live_{};  // pinned, device
};

}  // namespace framestage::testing
