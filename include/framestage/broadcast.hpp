/// @file broadcast.hpp
/// @brief One host frame, written once into a pinned arena, delivered to several devices.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/detail/staging_front.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/error.hpp>
#include <framestage/frame_span.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace framestage {

/// @brief How a broadcast frame's bytes reach devices 1..N-1.
enum class BroadcastRoute {
  /// Every device copies the frame from the pinned arena itself, on its own stream: N host-to-
  /// device copies of the same pinned bytes, which run in parallel where devices have links of
  /// their own.
  from_host,
  /// devices[0] copies the frame from the pinned arena; every other device then copies it from
  /// devices[0]'s mirror (device to device: over NVLink or peer PCIe where the devices have
  /// peer access, staged through the host by the driver where not). The host link carries the
  /// frame once. Every device must be able to wait on devices[0]'s events: always so on CUDA
  /// (a cross-device cudaStreamWaitEvent is legal); a HostBackend's events belong to one
  /// instance, so there every device must be the same HostBackend.
  via_first_device,
};

/// @brief "from_host" or "via_first_device".
[[nodiscard]] std::string_view to_string(BroadcastRoute route) noexcept;

namespace detail {
/// What a BroadcastTicket needs of one device: owned by the Broadcast, one per slot and device.
struct BroadcastTarget {
  Backend* backend = nullptr;
  StreamView stream;  ///< the device's consumer stream
  EventView ready;    ///< the slot's ready event on that device
};
}  // namespace detail

/// @brief Handle to a submitted broadcast frame: one stream and one event per device.
///
/// The frame is complete when every device's event has completed; work enqueued on
/// stream(device) after end_frame() already runs after that device's data has landed.
/// **Ownership:** refers to the Broadcast's streams and events; valid while it lives.
/// **Thread safety:** const members from any thread, but not at the same time as the
/// begin_frame() that reuses the slot (its events are reused then).
class BroadcastTicket {
 public:
  BroadcastTicket() = default;
  BroadcastTicket(std::uint64_t frame, std::uint32_t slot,
                  std::span<const detail::BroadcastTarget> targets)
      : frame_(frame), slot_(slot), targets_(targets) {}

  [[nodiscard]] std::uint64_t frame() const noexcept { return frame_; }
  [[nodiscard]] std::uint32_t slot() const noexcept { return slot_; }
  /// @brief How many devices the frame went to.
  [[nodiscard]] std::size_t devices() const noexcept { return targets_.size(); }
  /// @brief Device `device`'s consumer stream: launch the kernels that read the frame there.
  /// @throws Error(misuse) if `device` is out of range.
  [[nodiscard]] StreamView stream(std::size_t device) const;
  /// @brief Completes when device `device` holds every byte of the frame. The event is reused
  /// when the slot is; after that it reports a later frame, whose completion implies this one's.
  /// @throws Error(misuse) if `device` is out of range.
  [[nodiscard]] EventView event(std::size_t device) const;
  /// @brief True once every device holds the frame's data. Does not block.
  /// @throws Error(misuse) on an empty ticket; Error(cuda) if a backend fails.
  [[nodiscard]] bool ready() const;
  /// @brief Blocks until ready(), waiting at most `timeout` in all.
  /// @throws Error(timeout) naming the first device not done in time; Error(misuse) on an empty
  ///         ticket; Error(cuda) if a backend fails.
  void wait(std::chrono::milliseconds timeout = std::chrono::milliseconds{10'000}) const;

 private:
  [[nodiscard]] const detail::BroadcastTarget& target(std::size_t device, const char* call) const;

  std::uint64_t frame_ = 0;
  std::uint32_t slot_ = 0;
  std::span<const detail::BroadcastTarget> targets_;
};

/// @brief What end_frame() submitted for the last frame; every count is per device.
struct BroadcastFrameStats {
  std::uint64_t frame = 0;
  std::uint32_t slot = 0;
  std::size_t staged_ranges = 0;     ///< stage_for_upload calls
  std::size_t uploads = 0;           ///< upload descriptors (one per upload, one per GiB above 1)
  std::size_t copy_runs = 0;         ///< merged arena runs: one copy each, to every device
  std::size_t copy_bytes = 0;        ///< bytes those copies move to each device, gaps included
  std::size_t scatter_launches = 0;  ///< on each device without overlapping uploads
  std::size_t devices_with_overlaps = 0;  ///< devices whose uploads went as ordered copies
  std::size_t arena_used_bytes = 0;       ///< arena bytes the frame used, padding included
  bool arena_overflowed = false;          ///< the frame needed overflow blocks (grow policy)
};

/// @brief One device buffer of `size()` elements per device: the destination of a broadcast
/// upload. Element i of every buffer receives the same bytes.
///
/// **Ownership:** move-only; owns its buffers. Every Backend must outlive it.
/// **Thread safety:** const members from any thread.
template <class T>
class Replicated {
  static_assert(std::is_trivially_copyable_v<T>, "Replicated holds bytes copied by DMA");

 public:
  Replicated() = default;
  /// @brief `count` elements on each device of `devices` (in that order).
  /// @throws Error(misuse) for a null backend; Error(out_of_memory) naming the bytes.
  Replicated(std::span<Backend* const> devices, std::size_t count) : size_(count) {
    buffers_.reserve(devices.size());
    pointers_.reserve(devices.size());
    for (std::size_t k = 0; k < devices.size(); ++k) {
      if (devices[k] == nullptr) {
        throw Error(ErrorCategory::misuse,
                    "Replicated: device backend " + std::to_string(k) + " is null");
      }
      pointers_.push_back(buffers_.emplace_back(*devices[k], count).data());
    }
  }

  [[nodiscard]] std::size_t devices() const noexcept { return buffers_.size(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  /// @brief Device `device`'s buffer (a device address there).
  /// @throws Error(misuse) if `device` is out of range.
  [[nodiscard]] T* data(std::size_t device) const { return buffer(device).data(); }
  /// @brief One pointer per device, in device order: what Broadcast::upload takes.
  [[nodiscard]] std::span<T* const> pointers() const noexcept { return pointers_; }
  /// @throws Error(misuse) if `device` is out of range.
  [[nodiscard]] const DeviceBuffer<T>& buffer(std::size_t device) const {
    if (device >= buffers_.size()) {
      throw Error(ErrorCategory::misuse, "Replicated: device index " + std::to_string(device) +
                                             " out of range: it has " +
                                             std::to_string(buffers_.size()) + " devices");
    }
    return buffers_[device];
  }
  /// @brief Synchronous copy of device `device`'s contents, for checks; waits for nothing.
  [[nodiscard]] std::vector<T> to_host(std::size_t device) const {
    return buffer(device).to_host();
  }

 private:
  std::vector<DeviceBuffer<T>> buffers_;
  std::vector<T*> pointers_;
  std::size_t size_ = 0;
};

/// @brief Delivers each frame, written once into one pinned arena, to N devices.
///
/// A frame: begin_frame(); any number of frame_alloc / stage_for_upload / upload calls;
/// end_frame(), which sends the frame to every device and returns one BroadcastTicket that
/// completes when every device has its data. Per slot (`buffering` of them) there is one
/// FrameArena on devices[0] (its pinned block is the one host copy of the frame; its device
/// block is device 0's mirror) and, on every other device, a device mirror of the same layout:
/// a span's bytes sit at the same offset on every device (device_ptr(span, k)). Overflow blocks
/// (OverflowPolicy::grow) are mirrored on every device at end_frame.
///
/// Pinned memory from Backend::allocate_pinned is portable and mapped on CUDA
/// (cudaHostAllocPortable | cudaHostAllocMapped, runtime/cuda_backend.cpp), so every device's
/// copy engine can read the same arena.
///
/// Per device, end_frame() enqueues on that device's slot stream one copy per merged run of the
/// frame's staged bytes (staged spans and upload payloads, sorted and merged across gaps under
/// max(merge_gap_bytes, 16); a frame that stages one contiguous range is one copy per device),
/// then, when the frame has uploads, one copy of that device's descriptor table (built in
/// pinned memory); then, on the device's consumer stream, after those copies, one scatter per
/// arena block holding uploads, and the slot's ready event for that device. Under
/// BroadcastRoute::via_first_device, devices 1..N-1 copy the runs from device 0's mirror instead,
/// after device 0's copies (a cross-device event wait).
///
/// Config: buffering, arena_bytes, max_uploads_per_frame (the lock-free capacity of the staged-
/// range list and of the upload table), merge_gap_bytes, overflow, trim_after_frames and
/// slot_timeout_ms apply as for a Coordinator. `device` is ignored (each backend names its
/// device), and so are the upload-arena, readback, strategy and threshold settings.
///
/// **Ownership:** the backends are borrowed, one per device (CudaBackend(k) for device k, or two
/// instances on one device), and must outlive the Broadcast. Each device's streams, events,
/// mirrors and descriptor tables are made with that device's backend.
/// **Thread safety:** frame_alloc, stage_for_upload, upload and device_ptr may be called from
/// many threads at once inside a frame; they take no lock while the arena and the
/// max_uploads_per_frame lists have room (stage_for_upload and upload add one fetch_add on a
/// shared counter to the arena's own allocation cost). begin_frame, end_frame,
/// synchronize and last_frame belong to one owner thread, and every other thread's calls for a
/// frame must happen before that frame's end_frame().
/// **Ordering:** device k's scatters run on its consumer stream (ticket.stream(k)) after all work
/// enqueued there before end_frame(). Kernels that read a frame's data on device k must be
/// enqueued on ticket.stream(k) before the next begin_frame(): that call marks where each
/// device's readers end, and a slot is reused only when every device's copies and readers of
/// its last frame have run. Of overlapping uploads in one frame, the one issued last wins on
/// every device (from different threads, "last" is unspecified): a device whose uploads
/// overlap gets them as one device-to-device copy each, in issue order, instead of a scatter.
/// **Errors:** misuse throws Error(misuse) and changes nothing. A backend failure in begin_frame,
/// end_frame or synchronize throws Error(cuda) and leaves the broadcast failed: every later call
/// throws Error(failed_state) with the first error's message. A time-out in begin_frame (one
/// device still busy after slot_timeout_ms) throws Error(timeout) naming the device, opens no
/// frame and may be retried. An allocation that does not fit throws Error(out_of_memory) as on a
/// Coordinator; in end_frame (a mirror or table for grown data) it happens before anything is
/// enqueued, and the frame stays open.
class Broadcast : public detail::StagingFront {
 public:
  /// Devices a broadcast may serve (an upload's destinations are passed on the stack).
  static constexpr std::size_t kMaxDevices = 16;
  /// Uploads larger than this travel as several descriptors of at most this size.
  static constexpr std::size_t kMaxUploadPieceBytes = std::size_t{1} << 30;

  /// @param devices one backend per device (1..kMaxDevices), borrowed; devices[0] holds the
  ///        pinned arenas.
  /// @throws Error(bad_config) for an invalid config (Config::validate); Error(misuse) for an
  ///         empty device list, more than kMaxDevices, a null backend, or via_first_device over
  ///         distinct HostBackend instances; Error(out_of_memory) if arenas, mirrors or tables do
  ///         not fit; Error(cuda) if streams or events cannot be made.
  Broadcast(const Config& config, std::span<Backend* const> devices,
            BroadcastRoute route = BroadcastRoute::from_host);
  /// Waits for every frame in flight on every device, then frees everything; never throws (a
  /// failure is reported once on stderr).
  ~Broadcast();
  Broadcast(const Broadcast&) = delete;
  Broadcast& operator=(const Broadcast&) = delete;

  /// @brief Opens the next frame in the next slot, waiting until every device is done with it.
  /// @throws Error(misuse) if a frame is open; Error(timeout) naming the device whose copies or
  ///         readers of the slot are still running after slot_timeout_ms; Error(out_of_memory)
  ///         if a grown arena or its mirrors cannot be allocated; Error(cuda).
  void begin_frame();

  // frame_alloc<T>(count) and stage_for_upload(span): detail::StagingFront.

  /// @brief Device `device`'s address of a span's mirror, for kernels on ticket.stream(device).
  /// Valid until the slot is reused. A span in an overflow block (grow policy) has mirrors on
  /// devices 1..N-1 only from its frame's end_frame() on.
  /// @throws Error(misuse) if `device` is out of range, the span's frame is not the newest or
  ///         its slot was reused, or the span is not from its frame's arena.
  template <class T>
  [[nodiscard]] T* device_ptr(FrameSpan<T> span, std::size_t device) const {
    return static_cast<T*>(device_address(span.data(), span.size_bytes(), span.frame(), device));
  }

  /// @brief Copies `src` once into the frame's pinned arena now, and delivers it with this frame
  /// to `per_device_dst[k]` on device k, for every device. `src` may be reused as soon as this
  /// returns.
  /// @throws Error(misuse) outside a frame, if per_device_dst does not hold one pointer per
  ///         device, or for a null destination; Error(out_of_memory) under OverflowPolicy::fail
  ///         when the arena is full, or the frame already has max_uploads_per_frame uploads.
  template <class T>
  void upload(std::span<T* const> per_device_dst, std::type_identity_t<std::span<const T>> src) {
    static_assert(std::is_trivially_copyable_v<T>, "uploads are copied by DMA");
    std::array<std::uint64_t, kMaxDevices> targets{};
    for (std::size_t k = 0; k < per_device_dst.size() && k < kMaxDevices; ++k)
      targets[k] = reinterpret_cast<std::uintptr_t>(per_device_dst[k]);
    upload_bytes(targets.data(), per_device_dst.size(), src.data(), src.size_bytes());
  }

  /// @brief upload() into elements [first, first + src.size()) of every device's buffer of
  /// `dst`, which must have been made for this broadcast's devices, in the same order.
  /// @throws Error(misuse) if `dst` has another number of devices or the range does not fit;
  ///         otherwise as upload().
  template <class T>
  void upload(const Replicated<T>& dst, std::size_t first,
              std::type_identity_t<std::span<const T>> src) {
    static_assert(std::is_trivially_copyable_v<T>, "uploads are copied by DMA");
    expect_replicated(dst.devices(), dst.size(), first, src.size());
    std::array<std::uint64_t, kMaxDevices> targets{};
    for (std::size_t k = 0; k < dst.devices(); ++k)
      targets[k] = reinterpret_cast<std::uintptr_t>(dst.pointers()[k] + first);
    upload_bytes(targets.data(), dst.devices(), src.data(), src.size_bytes());
  }

  /// @brief Sends the frame to every device (see the class comment) and closes it.
  /// @throws Error(misuse) without an open frame; Error(out_of_memory) if a mirror or table for
  ///         grown data cannot be allocated (nothing was enqueued; the frame stays open);
  ///         Error(cuda).
  [[nodiscard]] BroadcastTicket end_frame();

  /// @brief Blocks until every frame submitted so far has reached every device and its readers
  /// have run.
  /// @throws Error(timeout) naming the device still busy after slot_timeout_ms; Error(cuda).
  void synchronize();

  [[nodiscard]] std::size_t devices() const noexcept;
  /// @brief The backend of device `device`.
  /// @throws Error(misuse) if `device` is out of range.
  [[nodiscard]] Backend& backend(std::size_t device) const;
  [[nodiscard]] BroadcastRoute route() const noexcept;
  [[nodiscard]] const BroadcastFrameStats& last_frame() const noexcept;
  // config(), current_frame(), frame_open(), failed(): detail::StagingFront.

 private:
  void* device_address(const void* ptr, std::size_t bytes, std::uint64_t frame,
                       std::size_t device) const;
  /// `targets` holds `count` device addresses (count is checked against devices() first).
  void upload_bytes(const std::uint64_t* targets, std::size_t count, const void* src,
                    std::size_t bytes);
  void expect_replicated(std::size_t devices, std::size_t size, std::size_t first,
                         std::size_t count) const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace framestage
