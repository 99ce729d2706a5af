// The GPU measurements of `framestage bench`: each figure as a ratio to a baseline measured in
// the same run (one contiguous pinned copy of the same bytes is the ceiling).
#include "gpu_measurements.hpp"

#include "bench_kernels.hpp"

#include <framestage/cuda_backend.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace framestage::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTimeout{60'000};

double micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs `once` (which enqueues on `stream`) `reps` times; the median time from enqueue to done.
template <class F>
double time_enqueued(Backend& backend, StreamView stream, int reps, F&& once) {
  Event done(backend);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto start = Clock::now();
    once();
    backend.record_event(done.native(), stream);
    if (!backend.wait_event(done.native(), kTimeout)) throw Error(ErrorCategory::timeout, "bench");
    t.push_back(micros(Clock::now() - start));
  }
  return median(std::move(t));
}

// What the host writes into a frame's bytes: a different word everywhere, every frame.
void fill_frame(std::span<std::uint32_t> words, int frame) {
  for (std::size_t i = 0; i < words.size(); ++i)
    words[i] = static_cast<std::uint32_t>(i * 2654435761u + static_cast<std::uint32_t>(frame));
}

std::span<std::uint32_t> as_words(void* bytes, std::size_t count) {
  return {static_cast<std::uint32_t*>(bytes), count / sizeof(std::uint32_t)};
}

struct Items {
  std::vector<std::size_t> sizes;
  std::vector<std::size_t> offsets;  // into the destination buffer, in issue order
  std::size_t bytes = 0;
  std::size_t span = 0;  // destination bytes needed
};

// `count` items of 16-256 B, each in its own 512-byte slot of the destination (so destinations
// are scattered, never adjacent), in ascending slot order or shuffled.
Items make_items(std::size_t count, bool shuffled, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Items items;
  items.sizes.resize(count);
  items.offsets.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    items.sizes[i] = 16 + rng() % 241;
    items.offsets[i] = i * 512 + (rng() % 16) * 16;
    items.bytes += items.sizes[i];
  }
  if (shuffled) std::shuffle(items.offsets.begin(), items.offsets.end(), rng);
  items.span = count * 512 + 512;
  return items;
}

struct Row {
  std::string workload;
  std::string method;
  double us;
  double ceiling_us;
  double end_frame_us = -1;  // host time inside end_frame(), framestage rows only
};

void print_rows(const std::vector<Row>& rows) {
  std::printf("\n%-34s %-30s %12s %12s %14s\n", "workload", "method", "us/frame", "x ceiling",
              "end_frame us");
  for (const Row& r : rows) {
    std::printf("%-34s %-30s %12.1f %12.2f", r.workload.c_str(), r.method.c_str(), r.us,
                r.us / r.ceiling_us);
    if (r.end_frame_us >= 0) std::printf(" %14.1f", r.end_frame_us);
    std::printf("\n");
  }
}

// Items to scattered destinations: the ceiling, the hand-written alternatives, and framestage
// with each strategy. Every framestage result is checked byte for byte.
bool measure_items(Backend& backend, std::size_t count, bool shuffled, std::uint64_t seed,
                   std::vector<Row>& rows) {
  const Items items = make_items(count, shuffled, seed);
  const std::string name =
      std::to_string(count) + " items 16-256 B" + (shuffled ? ", random order" : ", ascending");
  MemoryBlock pinned(backend, MemoryKind::pinned, items.bytes);
  MemoryBlock device_copy(backend, MemoryKind::device, items.bytes);
  DeviceBuffer<std::byte> dst(backend, items.span);
  std::mt19937_64 rng(seed + 1);
  std::vector<std::byte> source(items.bytes);
  for (auto& b : source)
    b = static_cast<std::byte>(rng());
  std::memcpy(pinned.data(), source.data(), items.bytes);
  Stream stream(backend);

  const double ceiling = time_enqueued(backend, stream.view(), 50, [&] {
    backend.copy_async(device_copy.data(), pinned.data(), items.bytes, stream.view());
  });
  rows.push_back({name, "one contiguous copy (ceiling)", ceiling, ceiling});

  std::vector<CopyOp> copies(count);
  std::size_t at = 0;
  for (std::size_t i = 0; i < count; ++i) {
    copies[i] = {dst.data() + items.offsets[i], pinned.data() + at, items.sizes[i]};
    at += items.sizes[i];
  }
  const int slow_reps = count > 10'000 ? 3 : 20;
  rows.push_back({name, "cudaMemcpyAsync per item",
                  time_enqueued(backend, stream.view(), slow_reps,
                                [&] {
                                  for (const CopyOp& c : copies)
                                    backend.copy_async(c.dst, c.src, c.bytes, stream.view());
                                }),
                  ceiling});
  rows.push_back({name, "cudaMemcpyBatchAsync",
                  time_enqueued(backend, stream.view(), slow_reps,
                                [&] { backend.copy_batch_async(copies, stream.view()); }),
                  ceiling});

  bool all_match = true;
  for (const UploadStrategy strategy :
       {UploadStrategy::automatic, UploadStrategy::copy_scatter, UploadStrategy::zero_copy}) {
    Config config;
    config.strategy = strategy;
    config.upload_arena_bytes = std::max<std::size_t>(items.bytes * 2, std::size_t{1} << 20);
    config.max_uploads_per_frame = std::max<std::size_t>(count, 1024);
    config.arena_bytes = std::size_t{1} << 20;
    Coordinator coordinator(config, backend);
    std::vector<double> t;
    std::vector<double> host;
    UploadStrategy used = strategy;
    for (int frame = 0; frame < 40; ++frame) {
      coordinator.begin_frame();
      std::size_t from = 0;
      for (std::size_t i = 0; i < count; ++i) {
        auto span = coordinator.reserve_upload(dst.data() + items.offsets[i], items.sizes[i]);
        std::memcpy(span.data(), source.data() + from, items.sizes[i]);
        from += items.sizes[i];
      }
      const auto start = Clock::now();
      const FrameTicket ticket = coordinator.end_frame();
      const auto returned = Clock::now();
      ticket.wait(kTimeout);
      if (frame >= 5) {
        t.push_back(micros(Clock::now() - start));
        host.push_back(micros(returned - start));
      }
      used = coordinator.stats().last_frame.strategy;
    }
    // Check every destination byte of the last frame.
    const auto got = dst.to_host();
    std::size_t from = 0;
    for (std::size_t i = 0; i < count; ++i) {
      all_match &=
          std::memcmp(got.data() + items.offsets[i], source.data() + from, items.sizes[i]) == 0;
      from += items.sizes[i];
    }
    const std::string method = std::string("framestage ") +
                               (strategy == UploadStrategy::automatic ? "auto -> " : "forced ") +
                               std::string(to_string(used)) + ", " +
                               std::to_string(coordinator.stats().last_frame.scatter_launches) +
                               " chunk(s)";
    rows.push_back({name, method, median(std::move(t)), ceiling, median(std::move(host))});
  }
  return all_match;
}

// 16 MiB of frame_alloc data staged for the mirror, against the pinned H2D bandwidth of one
// large copy.
bool measure_mirror(Backend& backend, std::vector<Row>& rows, double& fraction) {
  constexpr std::size_t kBytes = std::size_t{16} << 20;
  constexpr std::size_t kLarge = std::size_t{256} << 20;
  Stream stream(backend);
  MemoryBlock pinned(backend, MemoryKind::pinned, kLarge);
  MemoryBlock device(backend, MemoryKind::device, kLarge);
  std::memset(pinned.data(), 1, kLarge);
  const double large_us = time_enqueued(backend, stream.view(), 10, [&] {
    backend.copy_async(device.data(), pinned.data(), kLarge, stream.view());
  });
  const double ceiling = time_enqueued(backend, stream.view(), 50, [&] {
    backend.copy_async(device.data(), pinned.data(), kBytes, stream.view());
  });
  // The same copy of bytes the host has just written, as every frame's are: the DMA then reads
  // lines that are still dirty in the CPU's caches.
  std::vector<double> fresh;
  Event copied(backend);
  for (int r = 0; r < 20; ++r) {
    fill_frame(as_words(pinned.data(), kBytes), r);
    const auto start = Clock::now();
    backend.copy_async(device.data(), pinned.data(), kBytes, stream.view());
    backend.record_event(copied.native(), stream.view());
    if (!backend.wait_event(copied.native(), kTimeout))
      throw Error(ErrorCategory::timeout, "bench");
    fresh.push_back(micros(Clock::now() - start));
  }
  const double fresh_us = median(std::move(fresh));
  // Diagnostic: the same just-written bytes split over concurrent copies on separate streams.
  std::vector<double> split_us;
  for (const int parts : {2, 4}) {
    std::vector<Stream> streams;
    std::vector<Event> events;
    for (int p = 0; p < parts; ++p) {
      streams.emplace_back(backend);
      events.emplace_back(backend);
    }
    std::vector<double> t;
    for (int r = 0; r < 20; ++r) {
      fill_frame(as_words(pinned.data(), kBytes), r);
      const auto start = Clock::now();
      const std::size_t part = kBytes / static_cast<std::size_t>(parts);
      for (int p = 0; p < parts; ++p) {
        const std::size_t at = part * static_cast<std::size_t>(p);
        backend.copy_async(device.data() + at, pinned.data() + at, part, streams[p].view());
        backend.record_event(events[p].native(), streams[p].view());
      }
      for (int p = 0; p < parts; ++p)
        (void)backend.wait_event(events[p].native(), kTimeout);
      t.push_back(micros(Clock::now() - start));
    }
    split_us.push_back(median(std::move(t)));
  }
  Config config;
  config.arena_bytes = kBytes + (std::size_t{1} << 20);
  config.upload_arena_bytes = std::size_t{1} << 20;
  Coordinator coordinator(config, backend);
  // Written in place with plain stores, or copied in from the simulation's own array with
  // stream_copy, whose lines do not stay modified in the CPU's caches.
  std::vector<std::uint32_t> state(kBytes / 4);
  bool match = true;
  const auto frames = [&](bool streamed) {
    std::vector<double> t;
    for (int frame = 0; frame < 40; ++frame) {
      coordinator.begin_frame();
      auto span = coordinator.frame_alloc<std::uint32_t>(kBytes / 4);
      if (streamed) {
        fill_frame(state, frame);
        stream_copy(span, std::span<const std::uint32_t>(state));
      } else {
        fill_frame(span, frame);
      }
      coordinator.stage_for_upload(span);
      const auto start = Clock::now();
      const FrameTicket ticket = coordinator.end_frame();
      ticket.wait(kTimeout);
      if (frame >= 5) t.push_back(micros(Clock::now() - start));
      if (frame == 39) {
        std::vector<std::uint32_t> got(span.size());
        backend.read_device(got.data(), coordinator.device_ptr(span), kBytes);
        match &= std::equal(got.begin(), got.end(), span.begin());
      }
    }
    return median(std::move(t));
  };
  const double us = frames(false);
  const double streamed_us = frames(true);
  const double gbps_large = static_cast<double>(kLarge) / large_us / 1e3;
  const double gbps = static_cast<double>(kBytes) / us / 1e3;
  const double streamed_gbps = static_cast<double>(kBytes) / streamed_us / 1e3;
  fraction = streamed_gbps / gbps_large;
  rows.push_back({"16 MiB staged (mirror)", "one contiguous copy (ceiling)", ceiling, ceiling});
  rows.push_back({"16 MiB staged (mirror)", "same copy, bytes just written", fresh_us, ceiling});
  {
    void* wc = allocate_write_combined(kBytes);
    std::vector<double> wc_us;
    Event done(backend);
    for (int r = 0; r < 20; ++r) {
      fill_frame(as_words(wc, kBytes), r);
      const auto start = Clock::now();
      backend.copy_async(device.data(), wc, kBytes, stream.view());
      backend.record_event(done.native(), stream.view());
      (void)backend.wait_event(done.native(), kTimeout);
      wc_us.push_back(micros(Clock::now() - start));
    }
    free_write_combined(wc);
    rows.push_back(
        {"16 MiB staged (mirror)", "just written, write-combined", median(wc_us), ceiling});
  }
  rows.push_back(
      {"16 MiB staged (mirror)", "just written, 2 concurrent copies", split_us[0], ceiling});
  rows.push_back(
      {"16 MiB staged (mirror)", "just written, 4 concurrent copies", split_us[1], ceiling});
  rows.push_back({"16 MiB staged (mirror)", "framestage, written in place", us, ceiling});
  rows.push_back({"16 MiB staged (mirror)", "framestage, stream_copy'd in", streamed_us, ceiling});
  std::printf(
      "mirror: pinned H2D %.1f GB/s (one 256 MiB copy of clean bytes); through framestage "
      "%.1f GB/s = %.1f%% with the frame copied in by stream_copy, %.1f GB/s = %.1f%% with it "
      "written in place; one plain copy of just-written bytes %.1f GB/s\n",
      gbps_large, streamed_gbps, fraction * 100, gbps, gbps / gbps_large * 100,
      static_cast<double>(kBytes) / fresh_us / 1e3);
  return match;
}

// 100,000 regions of 16-256 B read back, against one contiguous device-to-host copy of the same
// bytes; every region of the last frame is checked.
bool measure_readback(Backend& backend, std::uint64_t seed, std::vector<Row>& rows) {
  constexpr std::size_t kRegions = 100'000;
  const Items items = make_items(kRegions, false, seed);
  const std::string name = "100000 readbacks 16-256 B";
  DeviceBuffer<std::byte> device(backend, items.span);
  std::vector<std::byte> contents(items.span);
  std::mt19937_64 rng(seed + 2);
  for (auto& b : contents)
    b = static_cast<std::byte>(rng());
  backend.copy_async(device.data(), contents.data(), contents.size(), {});
  backend.synchronize({});
  MemoryBlock pinned(backend, MemoryKind::pinned, items.bytes);
  Stream stream(backend);
  const double ceiling = time_enqueued(backend, stream.view(), 50, [&] {
    backend.copy_async(pinned.data(), device.data(), items.bytes, stream.view());
  });
  rows.push_back({name, "one contiguous D2H copy (ceiling)", ceiling, ceiling});

  Config config;
  config.readback_arena_bytes = items.bytes * 2;
  config.max_readbacks_per_frame = kRegions;
  Coordinator coordinator(config, backend);
  std::vector<Readback<std::byte>> taken(kRegions);
  std::vector<double> t;
  std::vector<double> host;
  bool match = true;
  for (int frame = 0; frame < 40; ++frame) {
    coordinator.begin_frame();
    for (std::size_t i = 0; i < kRegions; ++i)
      taken[i] = coordinator.readback(device.data() + items.offsets[i], items.sizes[i]);
    const auto start = Clock::now();
    (void)coordinator.end_frame();
    const auto returned = Clock::now();
    taken.back().wait(kTimeout);
    if (frame >= 5) {
      t.push_back(micros(Clock::now() - start));
      host.push_back(micros(returned - start));
    }
  }
  for (std::size_t i = 0; i < kRegions; ++i) {
    match &=
        std::memcmp(taken[i].get().data(), contents.data() + items.offsets[i], items.sizes[i]) == 0;
  }
  rows.push_back(
      {name,
       "framestage, " + std::to_string(coordinator.stats().last_frame.readbacks) + " gathered",
       median(std::move(t)), ceiling, median(std::move(host))});
  return match;
}

// 64 MiB uploaded and 64 MiB read back in one frame, against two plain copies at once.
bool measure_up_and_back(Backend& backend) {
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  DeviceBuffer<std::byte> up(backend, kBytes);
  DeviceBuffer<std::byte> down(backend, kBytes);
  MemoryBlock to_device(backend, MemoryKind::pinned, kBytes);
  MemoryBlock to_host(backend, MemoryKind::pinned, kBytes);
  std::memset(to_device.data(), 1, kBytes);
  Stream h2d(backend);
  Stream d2h(backend);
  Event down_done(backend);
  const double plain_us = time_enqueued(backend, h2d.view(), 20, [&] {
    backend.copy_async(up.data(), to_device.data(), kBytes, h2d.view());
    backend.copy_async(to_host.data(), down.data(), kBytes, d2h.view());
    backend.record_event(down_done.native(), d2h.view());
    backend.stream_wait_event(h2d.view(), down_done.native());
  });

  Config config;
  config.arena_bytes = std::size_t{1} << 20;
  config.upload_arena_bytes = kBytes + (std::size_t{1} << 20);
  config.readback_arena_bytes = kBytes + (std::size_t{1} << 20);
  Coordinator coordinator(config, backend);
  std::vector<std::uint32_t> state(kBytes / 4);
  std::vector<double> t;
  bool match = true;
  for (int frame = 0; frame < 20; ++frame) {
    fill_frame(state, frame);
    coordinator.begin_frame();
    const auto back = coordinator.readback(down.data(), kBytes);
    coordinator.upload<std::uint32_t>(reinterpret_cast<std::uint32_t*>(up.data()), state);
    const auto start = Clock::now();
    const FrameTicket ticket = coordinator.end_frame();
    ticket.wait(kTimeout);
    back.wait(kTimeout);
    if (frame >= 3) t.push_back(micros(Clock::now() - start));
    if (frame == 19) {
      // What went down this frame comes back next frame (readbacks precede the uploads).
      coordinator.begin_frame();
      const auto check =
          coordinator.readback(reinterpret_cast<const std::uint32_t*>(up.data()), state.size());
      (void)coordinator.end_frame();
      match = std::equal(state.begin(), state.end(), check.get(kTimeout).begin());
    }
  }
  const double us = median(std::move(t));
  const auto gbps = [](double micros_taken) {
    return 2.0 * static_cast<double>(kBytes) / micros_taken / 1e3;
  };
  std::printf(
      "upload + readback, 64 MiB each in one frame: %.0f us = %.1f GB/s together; two plain "
      "copies at once %.0f us = %.1f GB/s (%.0f%%)\n",
      us, gbps(us), plain_us, gbps(plain_us), plain_us / us * 100);
  return match;
}

// Host cost per item of frame_alloc + stage_for_upload, one thread.
double measure_host_cost(Backend& backend) {
  constexpr std::size_t kItemsPerFrame = 100'000;
  struct Item {
    float v[4];
  };
  Config config;
  config.arena_bytes = std::size_t{8} << 20;
  config.upload_arena_bytes = std::size_t{1} << 20;
  config.max_uploads_per_frame = kItemsPerFrame;  // also sizes the lock-free staged-range list
  Coordinator coordinator(config, backend);
  std::vector<double> t;
  for (int frame = 0; frame < 30; ++frame) {
    coordinator.begin_frame();
    const auto start = Clock::now();
    // The two calls alone: writing the item costs the same with or without framestage, and its
    // cache misses (a new line every four items) would swamp the figure with memory latency.
    for (std::size_t i = 0; i < kItemsPerFrame; ++i) {
      auto item = coordinator.frame_alloc<Item>(1);
      coordinator.stage_for_upload(item);
    }
    t.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count() /
                kItemsPerFrame);
    coordinator.end_frame().wait(kTimeout);
  }
  return median(std::move(t));
}

// Host, copy and kernel stages of about the same length: the frame period with triple and with
// single buffering, against the longest stage.
void measure_pipeline(Backend& backend) {
  constexpr std::size_t kBytes = std::size_t{8} << 20;
  constexpr int kFrames = 200;
  Stream stream(backend);
  MemoryBlock pinned(backend, MemoryKind::pinned, kBytes);
  MemoryBlock device(backend, MemoryKind::device, kBytes);
  MemoryBlock sink(backend, MemoryKind::device, 64);
  const double copy_us = time_enqueued(backend, stream.view(), 20, [&] {
    backend.copy_async(device.data(), pinned.data(), kBytes, stream.view());
  });
  // The host stage writes the frame; it is padded to the copy's length if it is shorter.
  std::vector<double> fills;
  for (int r = 0; r < 10; ++r) {
    const auto start = Clock::now();
    fill_frame(as_words(pinned.data(), kBytes), r);
    fills.push_back(micros(Clock::now() - start));
  }
  const double stage_us = std::max(median(fills), copy_us);
  const auto stage_ns = static_cast<std::uint64_t>(stage_us * 1e3);

  for (const std::uint32_t buffering : {3u, 1u}) {
    Config config;
    config.buffering = buffering;
    config.arena_bytes = kBytes + (std::size_t{1} << 20);
    config.upload_arena_bytes = std::size_t{1} << 20;
    Coordinator coordinator(config, backend);
    Clock::time_point start{};
    Clock::time_point previous{};
    std::vector<double> host_stages;
    std::vector<double> periods;
    for (int frame = 0; frame < kFrames + 10; ++frame) {
      const auto now = Clock::now();
      if (frame == 10) start = now;
      if (frame > 10) periods.push_back(micros(now - previous));
      previous = now;
      coordinator.begin_frame();
      const auto stage_start = Clock::now();
      auto span = coordinator.frame_alloc<std::uint32_t>(kBytes / 4);
      fill_frame(span, frame);
      while (micros(Clock::now() - stage_start) < stage_us) {
      }
      host_stages.push_back(micros(Clock::now() - stage_start));
      coordinator.stage_for_upload(span);
      const FrameTicket ticket = coordinator.end_frame();
      launch_consume(coordinator.device_ptr(span), kBytes, stage_ns,
                     static_cast<std::uint32_t*>(static_cast<void*>(sink.data())),
                     ticket.stream().native());
    }
    coordinator.synchronize();
    const double mean_period = micros(Clock::now() - start) / kFrames;
    // The median frame-to-frame interval: the steady state, without the odd preempted frame.
    const double period = median(std::move(periods));
    // The host stage as it ran in the loop (filling pinned memory while DMA reads it can be
    // slower than the calibration), so the ratio is against the longest stage that happened.
    const double host_us = median(std::move(host_stages));
    const double longest = std::max({host_us, copy_us, stage_us});
    std::printf(
        "pipeline, %s buffering: host %.0f us, copy %.0f us, kernel %.0f us per stage; "
        "period %.0f us (median; mean %.0f us) = %.2f x the longest stage (sum of stages "
        "%.0f us)\n",
        buffering == 3 ? "triple" : "single", host_us, copy_us, stage_us, period, mean_period,
        period / longest, host_us + copy_us + stage_us);
  }
}

// 64 MiB written once into the broadcast's pinned arena and delivered to every device of
// `requested` (two by default), by each route, against one pinned copy of the same 64 MiB to the
// first device alone; after the timed frames, every byte of the last frame is checked on every
// device.
bool measure_broadcast(const std::vector<int>& requested) {
  constexpr std::size_t kBytes = std::size_t{64} << 20;
  constexpr int kWarmup = 3;
  constexpr int kFrames = 20;
  const int count = cuda_device_count();
  std::vector<int> ordinals = requested;
  if (ordinals.empty()) {
    if (count < 2) {
      std::printf("broadcast: skipped: needs 2 CUDA devices, found %d\n", count);
      return true;
    }
    ordinals = {0, 1};
  }
  for (const int ordinal : ordinals) {
    if (ordinal >= count) {
      throw Error(ErrorCategory::misuse, "--broadcast-devices names device " +
                                             std::to_string(ordinal) + ", but " +
                                             std::to_string(count) + " are present");
    }
  }
  std::vector<std::unique_ptr<CudaBackend>> backends;
  std::vector<Backend*> devices;
  std::string names;
  for (const int ordinal : ordinals) {
    backends.push_back(std::make_unique<CudaBackend>(ordinal));
    devices.push_back(backends.back().get());
    names += (names.empty() ? "" : "; ") + backends.back()->describe();
  }
  // Peer access, where the topology allows, lets via_first_device copy device to device instead
  // of through the host.
  std::string peer = "same device";
  for (std::size_t k = 1; k < ordinals.size(); ++k) {
    if (ordinals[k] == ordinals[0]) continue;
    const bool both = enable_peer_access(ordinals[k], ordinals[0]) &&
                      enable_peer_access(ordinals[0], ordinals[k]);
    peer = both && peer != "unavailable" ? "enabled" : "unavailable";
  }

  // The baseline: one pinned copy of 64 MiB to the first device, of bytes just written, as each
  // broadcast frame's are.
  Backend& first = *devices[0];
  MemoryBlock pinned(first, MemoryKind::pinned, kBytes);
  MemoryBlock device(first, MemoryKind::device, kBytes);
  Stream stream(first);
  Event copied(first);
  std::vector<double> copy_times;
  for (int r = 0; r < kWarmup + kFrames; ++r) {
    fill_frame(as_words(pinned.data(), kBytes), r);
    const auto start = Clock::now();
    first.copy_async(device.data(), pinned.data(), kBytes, stream.view());
    first.record_event(copied.native(), stream.view());
    if (!first.wait_event(copied.native(), kTimeout)) throw Error(ErrorCategory::timeout, "bench");
    if (r >= kWarmup) copy_times.push_back(micros(Clock::now() - start));
  }
  const double copy_us = median(std::move(copy_times));
  std::printf("\nbroadcast: 64 MiB to %zu devices (%s), peer access %s\n", devices.size(),
              names.c_str(), peer.c_str());
  std::printf("  one pinned copy to device %d, bytes just written: %.0f us = %.1f GB/s\n",
              ordinals[0], copy_us, static_cast<double>(kBytes) / copy_us / 1e3);

  bool match = true;
  for (const BroadcastRoute route : {BroadcastRoute::from_host, BroadcastRoute::via_first_device}) {
    Config config;
    config.arena_bytes = kBytes + (std::size_t{1} << 20);
    Broadcast broadcast(config, devices, route);
    std::vector<double> t;
    FrameSpan<std::uint32_t> last;
    for (int frame = 0; frame < kWarmup + kFrames; ++frame) {
      broadcast.begin_frame();
      last = broadcast.frame_alloc<std::uint32_t>(kBytes / 4);
      fill_frame(last, frame);
      broadcast.stage_for_upload(last);
      const auto start = Clock::now();
      const BroadcastTicket ticket = broadcast.end_frame();
      ticket.wait(kTimeout);
      if (frame >= kWarmup) t.push_back(micros(Clock::now() - start));
    }
    bool route_match = true;
    std::vector<std::uint32_t> got(last.size());
    for (std::size_t k = 0; k < devices.size(); ++k) {
      devices[k]->read_device(got.data(), broadcast.device_ptr(last, k), kBytes);
      route_match &= std::equal(got.begin(), got.end(), last.begin());
    }
    match &= route_match;
    const double us = median(std::move(t));
    std::printf(
        "  %-16s %.0f us per frame (median of %d) = %.2f x one copy; copies per device: %zu; "
        "contents %s\n",
        std::string(to_string(route)).c_str(), us, kFrames, us / copy_us,
        broadcast.last_frame().copy_runs, route_match ? "match on every device" : "MISMATCH");
  }
  return match;
}

}  // namespace

int run_gpu_measurements(Backend& backend, const MeasureOptions& options) {
  const auto wanted = [&](std::string_view step) {
    return options.steps.empty() ||
           std::find(options.steps.begin(), options.steps.end(), step) != options.steps.end();
  };
  const std::uint64_t seed = options.seed;
  std::printf("\n== GPU measurements on %s\n", backend.describe().c_str());
  std::vector<Row> rows;
  bool ok = true;
  if (wanted("items")) {
    ok &= measure_items(backend, 100'000, false, seed, rows);
    ok &= measure_items(backend, 100'000, true, seed, rows);
    ok &= measure_items(backend, 1'000, false, seed, rows);
  }
  if (wanted("mirror")) {
    double fraction = 0;
    ok &= measure_mirror(backend, rows, fraction);
  }
  if (wanted("readback")) ok &= measure_readback(backend, seed, rows);
  if (!rows.empty()) print_rows(rows);
  if (wanted("up-and-back")) ok &= measure_up_and_back(backend);
  if (wanted("host-cost")) {
    std::printf("\nhost cost, frame_alloc + stage_for_upload: %.1f ns per item (one thread)\n",
                measure_host_cost(backend));
  }
  if (wanted("pipeline")) measure_pipeline(backend);
  if (wanted("broadcast")) ok &= measure_broadcast(options.broadcast_devices);
  std::printf("GPU measurements: contents checked: %s\n", ok ? "every byte matches" : "MISMATCH");
  return ok ? 0 : 1;
}

}  // namespace framestage::bench
