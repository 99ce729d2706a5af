// The C interface (framestage.h): each function catches every exception at the boundary and
// turns it into a status code and a per-thread message; the C++ types do the work.
#include <framestage/framestage.h>

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/coordinator.hpp>
#include <framestage/detail/enum_words.hpp>
#include <framestage/detail/expects.hpp>
#include <framestage/error.hpp>
#include <framestage/host_backend.hpp>

#if FRAMESTAGE_HAS_CUDA
#include <framestage/cuda_backend.hpp>
#endif

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>

namespace fs = framestage;

/// The C handle: the backend it owns, and the coordinator on it (declared after, so destroyed
/// first: it waits for its frames while the backend still exists).
struct framestage_coordinator {
  std::unique_ptr<fs::Backend> backend;
  std::string description;
  std::unique_ptr<fs::Coordinator> coordinator;
  /// framestage_device_alloc's blocks, so a stray free is caught and destroy frees the rest.
  std::mutex device_mutex;
  std::unordered_set<void*> device_blocks;

  ~framestage_coordinator() {
    coordinator.reset();
    for (void* block : device_blocks)
      backend->free_device(block);
  }
};

/// A captured tick, owned by the C caller.
struct framestage_tick_graph {
  fs::TickGraph graph;
};

namespace {

thread_local std::string last_error;

// Assigning can itself fail to allocate; the boundary must not throw, so the message is lost then.
void set_last_error(std::string_view message) noexcept {
  try {
    last_error.assign(message);
  } catch (...) {
    last_error.clear();
  }
}

// Status i answers the category whose value is i.
constexpr std::array<framestage_status, 6> kCategoryStatus{
    FRAMESTAGE_ERROR_BAD_CONFIG, FRAMESTAGE_ERROR_MISUSE,  FRAMESTAGE_ERROR_OUT_OF_MEMORY,
    FRAMESTAGE_ERROR_CUDA,       FRAMESTAGE_ERROR_TIMEOUT, FRAMESTAGE_ERROR_FAILED_STATE};
static_assert(static_cast<std::size_t>(fs::ErrorCategory::failed_state) ==
              kCategoryStatus.size() - 1);

framestage_status to_status(fs::ErrorCategory category) noexcept {
  return fs::detail::entry_of(category, kCategoryStatus, FRAMESTAGE_ERROR_INTERNAL);
}

/// Runs `body`, the whole of a C function, and maps whatever it throws to a status.
template <class Body>
framestage_status guarded(Body&& body) noexcept {
  try {
    body();
    return FRAMESTAGE_OK;
  } catch (const fs::Error& e) {
    set_last_error(e.what());
    return to_status(e.category());
  } catch (const std::bad_alloc&) {
    set_last_error("framestage: out_of_memory: a host allocation failed (std::bad_alloc)");
    return FRAMESTAGE_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    try {
      set_last_error(std::string("framestage: internal: ") + e.what());
    } catch (...) {
      set_last_error("framestage: internal: an exception the C API did not expect");
    }
    return FRAMESTAGE_ERROR_INTERNAL;
  } catch (...) {
    set_last_error("framestage: internal: an exception the C API did not expect");
    return FRAMESTAGE_ERROR_INTERNAL;
  }
}

/// Throws Error(misuse) naming the function and the argument when `ptr` is null.
void expect_arg(const void* ptr, const char* function, const char* argument) {
  FRAMESTAGE_EXPECTS(ptr != nullptr, misuse, function, ": ", argument, " is NULL");
}

fs::Coordinator& coordinator_of(const framestage_coordinator* handle, const char* function) {
  expect_arg(handle, function, "coordinator");
  return *handle->coordinator;
}

/// snprintf's contract: as much as fits plus a NUL, and the full length.
void write_string(const std::string& text, char* buffer, std::size_t capacity, std::size_t* length,
                  const char* function) {
  FRAMESTAGE_EXPECTS(buffer != nullptr || capacity == 0, misuse, function,
                     ": buffer is NULL but capacity is ", capacity);
  if (capacity > 0) {
    const std::size_t n = std::min(text.size(), capacity - 1);
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
  }
  if (length != nullptr) *length = text.size();
}

/// The "backend" key, which the C layer handles, and the rest of the document for Config.
struct CreateOptions {
  std::string backend = "auto";
  fs::Config config;
};

CreateOptions parse_create_options(const char* config_json) {
  CreateOptions options;
  if (config_json == nullptr || *config_json == '\0') return options;
  // Ordered, so that Config sees the keys in the user's order and names the same first error.
  auto document = nlohmann::ordered_json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  if (!document.is_object()) {
    // Config::from_json says what is wrong with the text, in its own words.
    options.config = fs::Config::from_json(config_json);
    return options;
  }
  if (const auto it = document.find("backend"); it != document.end()) {
    const bool known = it->is_string() && (*it == "auto" || *it == "cuda" || *it == "host");
    FRAMESTAGE_EXPECTS(known, bad_config,
                       "config key \"backend\": expected \"auto\", \"cuda\" or \"host\", got ",
                       it->dump());
    options.backend = it->get<std::string>();
    document.erase(it);
  }
  options.config = fs::Config::from_json(document.dump());
  return options;
}

fs::DefaultBackend make_backend(const std::string& choice, int device) {
  if (choice == "host") {
    return {std::make_unique<fs::HostBackend>(), "host emulation, as \"backend\": \"host\" asks"};
  }
  if (choice == "cuda") {
#if FRAMESTAGE_HAS_CUDA
    if (auto why = fs::CudaBackend::unavailable_reason(device)) {
      FRAMESTAGE_EXPECTS(false, cuda, "\"backend\": \"cuda\" asked for, but ", *why);
    }
    auto cuda = std::make_unique<fs::CudaBackend>(device);
    std::string reason = "as \"backend\": \"cuda\" asks";
    return {std::move(cuda), std::move(reason)};
#else
    FRAMESTAGE_EXPECTS(false, cuda,
                       "\"backend\": \"cuda\" asked for, but this build of framestage has no CUDA "
                       "backend (no nvcc at configure time)");
#endif
  }
  return fs::make_default_backend(device);
}

/// A C span as the FrameSpan the coordinator checks it against.
fs::FrameSpan<std::byte> frame_span(const framestage_span* span) {
  return fs::FrameSpan<std::byte>({static_cast<std::byte*>(span->data), span->bytes}, span->frame);
}

/// A block of N bytes aligned to N: frame_alloc<Block<N>> honours the alignment C asks for.
template <std::size_t N>
struct alignas(N) Block {
  std::byte bytes[N];
};

template <std::size_t N>
fs::FrameSpan<std::byte> frame_alloc_aligned(fs::Coordinator& c, std::size_t bytes) {
  const std::size_t blocks = bytes / N + (bytes % N != 0 ? 1 : 0);
  const auto span = c.frame_alloc<Block<N>>(blocks);
  return fs::FrameSpan<std::byte>({reinterpret_cast<std::byte*>(span.data()), bytes}, span.frame());
}

// frame_alloc_aligned<1>, <2>, <4> ... <256>, indexed by log2 of the alignment.
constexpr std::size_t kMaxFrameAllocAlignment = 256;
template <std::size_t... Log2>
constexpr auto frame_alloc_table(std::index_sequence<Log2...>) {
  return std::array{&frame_alloc_aligned<std::size_t{1} << Log2>...};
}
constexpr auto kFrameAllocAligned =
    frame_alloc_table(std::make_index_sequence<std::bit_width(kMaxFrameAllocAlignment)>{});

using ByteReadback = fs::Readback<std::byte>;
static_assert(std::is_trivially_copyable_v<ByteReadback>);
static_assert(sizeof(ByteReadback) <= sizeof(framestage_readback::internal));

ByteReadback readback_of(const framestage_readback* readback, const char* function) {
  expect_arg(readback, function, "readback");
  ByteReadback r;
  std::memcpy(static_cast<void*>(&r), readback->internal, sizeof r);
  return r;
}

fs::FrameTicket ticket_of(const framestage_ticket* ticket, const char* function) {
  expect_arg(ticket, function, "ticket");
  FRAMESTAGE_EXPECTS(ticket->backend != nullptr, misuse, function,
                     ": the ticket is empty (not from framestage_end_frame)");
  return fs::FrameTicket(static_cast<fs::Backend*>(ticket->backend), ticket->frame, ticket->slot,
                         fs::StreamView(ticket->stream), fs::EventView(ticket->event));
}

// framestage_device_write and framestage_device_read: the coordinator and both pointers checked,
// nothing to do for 0 bytes, then `copy(backend, consumer stream)`.
template <class Copy>
framestage_status device_copy(framestage_coordinator* coordinator, const char* function,
                              const void* dst, const char* dst_name, const void* src,
                              const char* src_name, std::size_t bytes, Copy&& copy) {
  return guarded([&] {
    const auto& c = coordinator_of(coordinator, function);
    expect_arg(dst, function, dst_name);
    expect_arg(src, function, src_name);
    if (bytes == 0) return;
    copy(*coordinator->backend, c.consumer_stream());
  });
}

}  // namespace

extern "C" {

const char* framestage_last_error(void) {
  return last_error.c_str();
}

const char* framestage_status_string(framestage_status status) {
  switch (status) {
    case FRAMESTAGE_OK:
      return "FRAMESTAGE_OK";
    case FRAMESTAGE_ERROR_BAD_CONFIG:
      return "FRAMESTAGE_ERROR_BAD_CONFIG";
    case FRAMESTAGE_ERROR_MISUSE:
      return "FRAMESTAGE_ERROR_MISUSE";
    case FRAMESTAGE_ERROR_OUT_OF_MEMORY:
      return "FRAMESTAGE_ERROR_OUT_OF_MEMORY";
    case FRAMESTAGE_ERROR_CUDA:
      return "FRAMESTAGE_ERROR_CUDA";
    case FRAMESTAGE_ERROR_TIMEOUT:
      return "FRAMESTAGE_ERROR_TIMEOUT";
    case FRAMESTAGE_ERROR_FAILED_STATE:
      return "FRAMESTAGE_ERROR_FAILED_STATE";
    case FRAMESTAGE_ERROR_INTERNAL:
      return "FRAMESTAGE_ERROR_INTERNAL";
  }
  return "FRAMESTAGE_ERROR_UNKNOWN_STATUS";
}

framestage_status framestage_device_count(int* count) {
  return guarded([&] {
    expect_arg(count, "framestage_device_count", "count");
    int devices = 0;
#if FRAMESTAGE_HAS_CUDA
    // The backend is the only place that calls CUDA; it answers for one ordinal at a time.
    while (!fs::CudaBackend::unavailable_reason(devices))
      ++devices;
#endif
    *count = devices;
  });
}

framestage_status framestage_create(const char* config_json, framestage_coordinator** out) {
  return guarded([&] {
    expect_arg(out, "framestage_create", "out");
    const CreateOptions options = parse_create_options(config_json);
    auto handle = std::make_unique<framestage_coordinator>();
    auto [backend, reason] = make_backend(options.backend, options.config.device);
    handle->backend = std::move(backend);
    // A CUDA backend chosen by "auto" gives its description as the reason; say it once.
    handle->description = handle->backend->describe();
    if (reason != handle->description) handle->description += " (" + reason + ")";
    handle->coordinator = std::make_unique<fs::Coordinator>(options.config, *handle->backend);
    *out = handle.release();
  });
}

framestage_status framestage_destroy(framestage_coordinator* coordinator) {
  return guarded([&] { delete coordinator; });
}

framestage_status framestage_get_backend_kind(const framestage_coordinator* coordinator,
                                              framestage_backend_kind* kind) {
  return guarded([&] {
    expect_arg(coordinator, "framestage_get_backend_kind", "coordinator");
    expect_arg(kind, "framestage_get_backend_kind", "kind");
    *kind = coordinator->backend->kind() == fs::BackendKind::cuda ? FRAMESTAGE_BACKEND_CUDA
                                                                  : FRAMESTAGE_BACKEND_HOST;
  });
}

framestage_status framestage_describe(const framestage_coordinator* coordinator, char* buffer,
                                      std::size_t capacity, std::size_t* length) {
  return guarded([&] {
    expect_arg(coordinator, "framestage_describe", "coordinator");
    write_string(coordinator->description, buffer, capacity, length, "framestage_describe");
  });
}

framestage_status framestage_begin_frame(framestage_coordinator* coordinator) {
  return guarded([&] { coordinator_of(coordinator, "framestage_begin_frame").begin_frame(); });
}

framestage_status framestage_frame_alloc(framestage_coordinator* coordinator, std::size_t bytes,
                                         std::size_t alignment, framestage_span* span) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_frame_alloc");
    expect_arg(span, "framestage_frame_alloc", "span");
    const std::size_t align = alignment == 0 ? fs::kStagingGranule : alignment;
    FRAMESTAGE_EXPECTS(std::has_single_bit(align) && align <= kMaxFrameAllocAlignment, misuse,
                       "framestage_frame_alloc: alignment must be 0 or a power of two up to "
                       "256, got ",
                       alignment);
    const fs::FrameSpan<std::byte> s = kFrameAllocAligned[std::countr_zero(align)](c, bytes);
    *span = framestage_span{s.data(), s.size(), s.frame()};
  });
}

framestage_status framestage_stage_for_upload(framestage_coordinator* coordinator,
                                              const framestage_span* span) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_stage_for_upload");
    expect_arg(span, "framestage_stage_for_upload", "span");
    c.stage_for_upload(frame_span(span));
  });
}

framestage_status framestage_device_ptr(const framestage_coordinator* coordinator,
                                        const framestage_span* span, void** device_ptr) {
  return guarded([&] {
    const auto& c = coordinator_of(coordinator, "framestage_device_ptr");
    expect_arg(span, "framestage_device_ptr", "span");
    expect_arg(device_ptr, "framestage_device_ptr", "device_ptr");
    *device_ptr = c.device_ptr(frame_span(span));
  });
}

framestage_status framestage_upload(framestage_coordinator* coordinator, void* device_dst,
                                    const void* src, std::size_t bytes) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_upload");
    FRAMESTAGE_EXPECTS(src != nullptr || bytes == 0, misuse, "framestage_upload: src is NULL for ",
                       bytes, " bytes");
    c.upload<std::byte>(static_cast<std::byte*>(device_dst),
                        {static_cast<const std::byte*>(src), bytes});
  });
}

framestage_status framestage_reserve_upload(framestage_coordinator* coordinator, void* device_dst,
                                            std::size_t bytes, framestage_span* span) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_reserve_upload");
    expect_arg(span, "framestage_reserve_upload", "span");
    const auto s = c.reserve_upload<std::byte>(static_cast<std::byte*>(device_dst), bytes);
    *span = framestage_span{s.data(), s.size(), s.frame()};
  });
}

framestage_status framestage_request_readback(framestage_coordinator* coordinator,
                                              const void* device_src, std::size_t bytes,
                                              framestage_readback* readback) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_request_readback");
    expect_arg(readback, "framestage_request_readback", "readback");
    const ByteReadback r = c.readback<std::byte>(static_cast<const std::byte*>(device_src), bytes);
    framestage_readback out{r.frame(), r.size(), {}};
    std::memcpy(out.internal, static_cast<const void*>(&r), sizeof r);
    *readback = out;
  });
}

framestage_status framestage_readback_ready(const framestage_readback* readback, int* ready) {
  return guarded([&] {
    const ByteReadback r = readback_of(readback, "framestage_readback_ready");
    expect_arg(ready, "framestage_readback_ready", "ready");
    *ready = r.ready() ? 1 : 0;
  });
}

framestage_status framestage_readback_get(const framestage_readback* readback,
                                          std::uint32_t timeout_ms, const void** data) {
  return guarded([&] {
    const ByteReadback r = readback_of(readback, "framestage_readback_get");
    expect_arg(data, "framestage_readback_get", "data");
    *data = r.get(std::chrono::milliseconds{timeout_ms}).data();
  });
}

namespace {

void write_ticket(const framestage_coordinator* coordinator, const fs::FrameTicket& t,
                  framestage_ticket* ticket) {
  if (ticket == nullptr) return;
  *ticket = framestage_ticket{coordinator->backend.get(), t.frame(), t.slot(), t.stream().native(),
                              t.event().native()};
}

}  // namespace

framestage_status framestage_end_frame(framestage_coordinator* coordinator,
                                       framestage_ticket* ticket) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_end_frame");
    write_ticket(coordinator, c.end_frame(), ticket);
  });
}

framestage_status framestage_capture_tick(framestage_coordinator* coordinator,
                                          framestage_tick_work work, void* user_data,
                                          framestage_tick_graph** tick) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_capture_tick");
    FRAMESTAGE_EXPECTS(work != nullptr, misuse, "framestage_capture_tick: work is NULL");
    expect_arg(tick, "framestage_capture_tick", "tick");
    auto made = std::make_unique<framestage_tick_graph>();
    made->graph = c.capture_tick(
        [work, user_data](fs::StreamView stream) { work(stream.native(), user_data); });
    *tick = made.release();
  });
}

framestage_status framestage_end_frame_tick(framestage_coordinator* coordinator,
                                            framestage_tick_graph* tick,
                                            framestage_ticket* ticket) {
  return guarded([&] {
    auto& c = coordinator_of(coordinator, "framestage_end_frame_tick");
    expect_arg(tick, "framestage_end_frame_tick", "tick");
    write_ticket(coordinator, c.end_frame(tick->graph), ticket);
  });
}

framestage_status framestage_tick_graph_destroy(framestage_tick_graph* tick) {
  return guarded([&] { delete tick; });
}

framestage_status framestage_ticket_ready(const framestage_ticket* ticket, int* ready) {
  return guarded([&] {
    const fs::FrameTicket t = ticket_of(ticket, "framestage_ticket_ready");
    expect_arg(ready, "framestage_ticket_ready", "ready");
    *ready = t.ready() ? 1 : 0;
  });
}

framestage_status framestage_ticket_wait(const framestage_ticket* ticket,
                                         std::uint32_t timeout_ms) {
  return guarded([&] {
    ticket_of(ticket, "framestage_ticket_wait").wait(std::chrono::milliseconds{timeout_ms});
  });
}

framestage_status framestage_synchronize(framestage_coordinator* coordinator) {
  return guarded([&] { coordinator_of(coordinator, "framestage_synchronize").synchronize(); });
}

framestage_status framestage_consumer_stream(const framestage_coordinator* coordinator,
                                             void** stream) {
  return guarded([&] {
    const auto& c = coordinator_of(coordinator, "framestage_consumer_stream");
    expect_arg(stream, "framestage_consumer_stream", "stream");
    *stream = c.consumer_stream().native();
  });
}

framestage_status framestage_set_consumer_stream(framestage_coordinator* coordinator,
                                                 void* stream) {
  return guarded([&] {
    coordinator_of(coordinator, "framestage_set_consumer_stream")
        .set_consumer_stream(fs::StreamView(stream));
  });
}

framestage_status framestage_current_frame(const framestage_coordinator* coordinator,
                                           std::uint64_t* frame) {
  return guarded([&] {
    const auto& c = coordinator_of(coordinator, "framestage_current_frame");
    expect_arg(frame, "framestage_current_frame", "frame");
    *frame = c.current_frame();
  });
}

framestage_status framestage_stats_json(const framestage_coordinator* coordinator, char* buffer,
                                        std::size_t capacity, std::size_t* length) {
  return guarded([&] {
    const auto& c = coordinator_of(coordinator, "framestage_stats_json");
    write_string(c.stats().to_json(), buffer, capacity, length, "framestage_stats_json");
  });
}

framestage_status framestage_config_json(const framestage_coordinator* coordinator, char* buffer,
                                         std::size_t capacity, std::size_t* length) {
  return guarded([&] {
    const auto& c = coordinator_of(coordinator, "framestage_config_json");
    write_string(c.config().to_json(), buffer, capacity, length, "framestage_config_json");
  });
}

framestage_status framestage_device_alloc(framestage_coordinator* coordinator, std::size_t bytes,
                                          void** device_ptr) {
  return guarded([&] {
    expect_arg(coordinator, "framestage_device_alloc", "coordinator");
    expect_arg(device_ptr, "framestage_device_alloc", "device_ptr");
    FRAMESTAGE_EXPECTS(bytes > 0, misuse, "framestage_device_alloc: bytes must be > 0, got 0");
    std::lock_guard lock(coordinator->device_mutex);
    coordinator->device_blocks.reserve(coordinator->device_blocks.size() + 1);
    void* block = coordinator->backend->allocate_device(bytes);
    coordinator->device_blocks.insert(block);  // cannot throw: reserved above
    *device_ptr = block;
  });
}

framestage_status framestage_device_free(framestage_coordinator* coordinator, void* device_ptr) {
  return guarded([&] {
    expect_arg(coordinator, "framestage_device_free", "coordinator");
    if (device_ptr == nullptr) return;
    std::lock_guard lock(coordinator->device_mutex);
    FRAMESTAGE_EXPECTS(coordinator->device_blocks.erase(device_ptr) == 1, misuse,
                       "framestage_device_free: ", device_ptr,
                       " is not from this coordinator's framestage_device_alloc, or was freed");
    coordinator->backend->free_device(device_ptr);
  });
}

framestage_status framestage_device_write(framestage_coordinator* coordinator, void* device_dst,
                                          const void* host_src, std::size_t bytes) {
  return device_copy(coordinator, "framestage_device_write", device_dst, "device_dst", host_src,
                     "host_src", bytes, [&](fs::Backend& backend, fs::StreamView stream) {
                       // On the consumer stream: the write lands after the frames' scatters and
                       // kernels there.
                       backend.copy_async(device_dst, host_src, bytes, stream);
                       backend.synchronize(stream);
                     });
}

framestage_status framestage_device_read(framestage_coordinator* coordinator, void* host_dst,
                                         const void* device_src, std::size_t bytes) {
  return device_copy(coordinator, "framestage_device_read", host_dst, "host_dst", device_src,
                     "device_src", bytes, [&](fs::Backend& backend, fs::StreamView stream) {
                       backend.synchronize(stream);
                       backend.read_device(host_dst, device_src, bytes);
                     });
}

}  // extern "C"
