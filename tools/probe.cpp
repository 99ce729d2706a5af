#include "probe.hpp"

#include "workload.hpp"

#include <framestage/coordinator.hpp>
#include <framestage/error.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#ifndef FRAMESTAGE_VERSION
#define FRAMESTAGE_VERSION "unknown"
#endif

namespace framestage::tools {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;
constexpr std::chrono::milliseconds kTimeout{60'000};
constexpr std::size_t kSmallCopyBytes = 64;
constexpr std::string_view kProbeSchema = "framestage-probe/1";

double micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double gbps(std::size_t bytes, double us) {
  return us > 0 ? static_cast<double>(bytes) / us / 1e3 : 0.0;
}

// A power of two near `bytes` (rounded in log scale), within [low, high].
std::size_t power_of_two_near(double bytes, std::size_t low, std::size_t high) {
  if (!(bytes > 0)) return low;
  const double rounded = std::exp2(std::round(std::log2(bytes)));
  return std::clamp(static_cast<std::size_t>(rounded), low, high);
}

class Prober {
 public:
  Prober(Backend& backend, const ProbeOptions& options)
      : backend_(backend), options_(options), stream_(backend), done_(backend) {}

  ProbeResult run() {
    ProbeResult r;
    r.device = describe_device(backend_);
    r.quick = options_.quick;
    r.copy_bytes = options_.quick ? std::size_t{1} << 20 : std::size_t{256} << 20;
    r.copy_repetitions = options_.quick ? 3 : 10;
    measure_ceilings(r);
    measure_call_costs(r);
    measure_scatter(r);
    measure_crossovers(r);
    calibrate(r);
    return r;
  }

 private:
  void wait(StreamView stream) {
    backend_.record_event(done_.native(), stream);
    if (!backend_.wait_event(done_.native(), kTimeout)) {
      throw Error(ErrorCategory::timeout, "framestage probe: a copy did not complete in 60 s");
    }
  }

  // Median time of `once` (which enqueues on stream_), from its first call to completion.
  template <class F>
  double time_enqueued(int reps, F&& once) {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
      const auto start = Clock::now();
      once();
      wait(stream_.view());
      t.push_back(micros(Clock::now() - start));
    }
    return median(std::move(t));
  }

  void measure_ceilings(ProbeResult& r) {
    const std::size_t bytes = r.copy_bytes;
    const int reps = r.copy_repetitions;
    MemoryBlock pinned(backend_, MemoryKind::pinned, bytes);
    MemoryBlock pinned_back(backend_, MemoryKind::pinned, bytes);
    MemoryBlock device(backend_, MemoryKind::device, bytes);
    MemoryBlock device_back(backend_, MemoryKind::device, bytes);
    std::memset(pinned.data(), 1, bytes);
    std::memset(pinned_back.data(), 2, bytes);
    backend_.copy_async(device_back.data(), pinned_back.data(), bytes, stream_.view());
    wait(stream_.view());
    const auto h2d = [&] {
      backend_.copy_async(device.data(), pinned.data(), bytes, stream_.view());
    };
    h2d();  // the first copy maps the pages; it is not counted
    wait(stream_.view());
    r.pinned_h2d_gbps = gbps(bytes, time_enqueued(reps, h2d));
    r.pinned_d2h_gbps =
        gbps(bytes, time_enqueued(reps, [&] {
               backend_.copy_async(pinned_back.data(), device_back.data(), bytes, stream_.view());
             }));
    // Both directions at once, each on its own stream: the two copy engines side by side.
    Stream other(backend_);
    Event other_done(backend_);
    std::vector<double> both;
    for (int i = 0; i < reps; ++i) {
      const auto start = Clock::now();
      backend_.copy_async(device.data(), pinned.data(), bytes, stream_.view());
      backend_.copy_async(pinned_back.data(), device_back.data(), bytes, other.view());
      backend_.record_event(other_done.native(), other.view());
      wait(stream_.view());
      if (!backend_.wait_event(other_done.native(), kTimeout)) {
        throw Error(ErrorCategory::timeout, "framestage probe: a D2H copy did not complete");
      }
      both.push_back(micros(Clock::now() - start));
    }
    r.bidirectional_gbps = gbps(2 * bytes, median(std::move(both)));
    std::vector<std::byte> pageable(bytes, std::byte{3});
    r.pageable_h2d_gbps =
        gbps(bytes, time_enqueued(reps, [&] {
               backend_.copy_async(device.data(), pageable.data(), bytes, stream_.view());
             }));
  }

  // Host time of `calls` enqueueing calls, then the work is waited for (not counted).
  template <class F>
  double enqueue_cost(int calls, F&& call) {
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i)
      call();
    const double us = micros(Clock::now() - start) / calls;
    wait(stream_.view());
    return us;
  }

  void measure_call_costs(ProbeResult& r) {
    const int calls = options_.quick ? 100 : 2000;
    MemoryBlock pinned(backend_, MemoryKind::pinned, 4096);
    MemoryBlock device(backend_, MemoryKind::device, 4096);
    std::memset(pinned.data(), 4, 4096);
    // One descriptor in device memory, for a real scatter kernel launch of 64 bytes.
    auto* table = reinterpret_cast<TransferDescriptor*>(pinned.data() + 1024);
    *table = TransferDescriptor{reinterpret_cast<std::uint64_t>(device.data() + 2048), 0,
                                static_cast<std::uint32_t>(kSmallCopyBytes)};
    backend_.copy_async(device.data() + 1024, table, sizeof(TransferDescriptor), stream_.view());
    wait(stream_.view());
    const auto* device_table = reinterpret_cast<const TransferDescriptor*>(device.data() + 1024);
    const auto copy = [&] {
      backend_.copy_async(device.data(), pinned.data(), kSmallCopyBytes, stream_.view());
    };
    // A first round of each warms the driver's paths up.
    (void)enqueue_cost(10, copy);
    r.copy_enqueue_us = enqueue_cost(calls, copy);
    const auto launch = [&] {
      backend_.scatter_async(device_table, 1, device.data(), stream_.view());
    };
    (void)enqueue_cost(10, launch);
    r.launch_enqueue_us = enqueue_cost(calls, launch);
    r.event_record_us =
        enqueue_cost(calls, [&] { backend_.record_event(done_.native(), stream_.view()); });
    r.small_copy_round_trip_us = time_enqueued(options_.quick ? 10 : 200, copy);
    // Many small copies back to back: what each costs once the queue is busy.
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i)
      copy();
    wait(stream_.view());
    r.small_copy_us = micros(Clock::now() - start) / calls;
  }

  void measure_scatter(ProbeResult& r) {
    const std::size_t bytes = options_.quick ? std::size_t{1} << 20 : std::size_t{64} << 20;
    constexpr std::size_t kPiece = std::size_t{64} << 10;
    const std::size_t count = bytes / kPiece;
    MemoryBlock staging(backend_, MemoryKind::device, bytes);
    MemoryBlock targets(backend_, MemoryKind::device, bytes);
    MemoryBlock pinned_table(backend_, MemoryKind::pinned, count * sizeof(TransferDescriptor));
    MemoryBlock table(backend_, MemoryKind::device, count * sizeof(TransferDescriptor));
    auto* descriptors = reinterpret_cast<TransferDescriptor*>(pinned_table.data());
    for (std::size_t i = 0; i < count; ++i) {
      // Reversed, so the kernel really moves every piece to another place.
      descriptors[i] = TransferDescriptor{
          reinterpret_cast<std::uint64_t>(targets.data() + (count - 1 - i) * kPiece),
          static_cast<std::uint32_t>(i * kPiece / kStagingGranule),
          static_cast<std::uint32_t>(kPiece)};
    }
    backend_.copy_async(table.data(), pinned_table.data(), pinned_table.bytes(), stream_.view());
    wait(stream_.view());
    const auto* device_table = reinterpret_cast<const TransferDescriptor*>(table.data());
    const auto scatter = [&] {
      backend_.scatter_async(device_table, count, staging.data(), stream_.view());
    };
    scatter();
    wait(stream_.view());
    r.scatter_gbps = gbps(bytes, time_enqueued(options_.quick ? 3 : 20, scatter));
  }

  // framestage frames of 128-byte uploads, zero-copy against copy + scatter, at growing sizes.
  void measure_crossovers(ProbeResult& r) {
    constexpr std::size_t kItem = 128;
    const std::vector<std::size_t> sizes =
        options_.quick ? std::vector<std::size_t>{std::size_t{4} << 10, std::size_t{64} << 10}
                       : std::vector<std::size_t>{std::size_t{4} << 10, std::size_t{16} << 10,
                                                  std::size_t{64} << 10, std::size_t{256} << 10,
                                                  std::size_t{1} << 20};
    const int frames = options_.quick ? 3 : 30;
    const std::size_t largest = sizes.back();
    MemoryBlock targets(backend_, MemoryKind::device, 2 * largest);
    for (const std::size_t bytes : sizes) {
      ProbeResult::Crossover c{bytes, 0, 0};
      for (const UploadStrategy strategy :
           {UploadStrategy::zero_copy, UploadStrategy::copy_scatter}) {
        Config config = options_.base;
        config.strategy = strategy;
        config.arena_bytes = std::size_t{64} << 10;
        config.upload_arena_bytes = 2 * largest;
        config.max_uploads_per_frame = std::max(config.max_uploads_per_frame, largest / kItem);
        Coordinator coordinator(config, backend_);
        std::vector<double> t;
        const int warmup = static_cast<int>(config.buffering) + 1;
        for (int frame = 0; frame < warmup + frames; ++frame) {
          coordinator.begin_frame();
          for (std::size_t i = 0; i < bytes / kItem; ++i) {
            auto span =
                coordinator.reserve_upload<std::byte>(targets.data() + 2 * kItem * i, kItem);
            std::memset(span.data(), frame, kItem);
          }
          const auto start = Clock::now();
          coordinator.end_frame().wait(kTimeout);
          if (frame >= warmup) t.push_back(micros(Clock::now() - start));
        }
        (strategy == UploadStrategy::zero_copy ? c.zero_copy_us : c.copy_scatter_us) =
            median(std::move(t));
      }
      r.crossovers.push_back(c);
    }
  }

  void calibrate(ProbeResult& r) {
    r.config = options_.base;
    if (r.device.emulation) {
      r.calibrated = false;
      r.calibration_note =
          "host emulation: nothing to calibrate; the config is the base config unchanged";
      return;
    }
    if (options_.quick) {
      r.calibrated = false;
      r.calibration_note = "--quick: too few samples to calibrate; the config is the base config";
      return;
    }
    // An upload goes as its own copy once scattering its bytes costs more than one more copy.
    r.config.direct_copy_threshold_bytes = power_of_two_near(
        r.small_copy_us * r.scatter_gbps * 1e3, std::size_t{64} << 10, std::size_t{16} << 20);
    // Two staged ranges are copied as one, gap included, while the gap costs less than a copy.
    r.config.merge_gap_bytes = power_of_two_near(r.small_copy_us * r.pinned_h2d_gbps * 1e3,
                                                 std::size_t{4} << 10, std::size_t{4} << 20);
    // Zero-copy while it beats copy + scatter, up to the largest size where it still did.
    std::size_t zero_copy = 0;
    for (const auto& c : r.crossovers) {
      if (c.zero_copy_us > c.copy_scatter_us) break;
      zero_copy = c.bytes;
    }
    r.config.zero_copy_max_bytes = zero_copy;
    r.calibrated = true;
    r.calibration_note =
        "direct_copy_threshold_bytes = small-copy cost x scatter bandwidth; merge_gap_bytes = "
        "small-copy cost x pinned H2D bandwidth (both to a power of two); zero_copy_max_bytes = "
        "the largest frame where zero-copy beat copy + scatter";
  }

  Backend& backend_;
  const ProbeOptions& options_;
  Stream stream_;
  Event done_;
};

}  // namespace

ProbeResult run_probe(Backend& backend, const ProbeOptions& options) {
  return Prober(backend, options).run();
}

void print_probe(std::FILE* out, const ProbeResult& r) {
  const bool host = r.device.emulation;
  if (host) std::fprintf(out, "framestage probe: %s\n", kHostEmulationNote.data());
  if (r.quick) {
    std::fprintf(out,
                 "framestage probe: --quick: small copies, few repetitions; not figures to "
                 "quote\n");
  }
  std::fprintf(out, "device:    %s\n", r.device.summary().c_str());
  std::fprintf(out,
               "ceilings:  pinned H2D %.1f GB/s, pinned D2H %.1f GB/s, both at once %.1f GB/s "
               "together, pageable H2D %.1f GB/s (%s copies, median of %d)\n",
               r.pinned_h2d_gbps, r.pinned_d2h_gbps, r.bidirectional_gbps, r.pageable_h2d_gbps,
               exact_size_text(r.copy_bytes).c_str(), r.copy_repetitions);
  std::fprintf(out,
               "per call:  %s %.2f us, kernel launch %.2f us, event record %.2f us (host time "
               "to enqueue); 64 B copy round trip %.1f us; 64 B copies back to back %.2f us "
               "each\n",
               host ? "copy_async" : "cudaMemcpyAsync", r.copy_enqueue_us, r.launch_enqueue_us,
               r.event_record_us, r.small_copy_round_trip_us, r.small_copy_us);
  std::fprintf(out, "scatter:   %.1f GB/s (64 KiB pieces, device to device)\n", r.scatter_gbps);
  std::fprintf(out, "frames of 128 B uploads, end_frame to arrival (zero-copy / copy+scatter):");
  for (const auto& c : r.crossovers)
    std::fprintf(out, "  %s %.1f / %.1f us", exact_size_text(c.bytes).c_str(), c.zero_copy_us,
                 c.copy_scatter_us);
  std::fprintf(out, "\n");
  std::fprintf(out,
               "planner:   %s: direct_copy_threshold_bytes %zu, zero_copy_max_bytes %zu, "
               "merge_gap_bytes %zu (pipeline_chunk_bytes %zu, not calibrated)\n",
               r.calibrated ? "calibrated" : "not calibrated", r.config.direct_copy_threshold_bytes,
               r.config.zero_copy_max_bytes, r.config.merge_gap_bytes,
               r.config.pipeline_chunk_bytes);
  std::fprintf(out, "           %s\n", r.calibration_note.c_str());
}

json to_json(const ProbeResult& r) {
  json out;
  out["schema"] = kProbeSchema;
  out["framestage_version"] = FRAMESTAGE_VERSION;
  out["backend"] = {{"kind", r.device.kind == BackendKind::cuda ? "cuda" : "host"},
                    {"description", r.device.description},
                    {"emulation", r.device.emulation},
                    {"note", r.device.emulation ? json(kHostEmulationNote) : json(nullptr)}};
  out["device"] = r.device.to_json();
  out["quick"] = r.quick;
  out["copy_bytes"] = r.copy_bytes;
  out["copy_repetitions"] = r.copy_repetitions;
  out["ceilings_gbps"] = {{"pinned_h2d", r.pinned_h2d_gbps},
                          {"pinned_d2h", r.pinned_d2h_gbps},
                          {"bidirectional", r.bidirectional_gbps},
                          {"pageable_h2d", r.pageable_h2d_gbps}};
  out["per_call_us"] = {{"copy_enqueue", r.copy_enqueue_us},
                        {"kernel_launch_enqueue", r.launch_enqueue_us},
                        {"event_record", r.event_record_us},
                        {"small_copy_round_trip", r.small_copy_round_trip_us},
                        {"small_copy_back_to_back", r.small_copy_us}};
  out["scatter_gbps"] = r.scatter_gbps;
  json crossovers = json::array();
  for (const auto& c : r.crossovers) {
    crossovers.push_back({{"bytes", c.bytes},
                          {"zero_copy_us", c.zero_copy_us},
                          {"copy_scatter_us", c.copy_scatter_us}});
  }
  out["zero_copy_vs_copy_scatter"] = std::move(crossovers);
  out["calibration"] = {{"calibrated", r.calibrated}, {"note", r.calibration_note}};
  out["config"] = json::parse(r.config.to_json());
  return out;
}

LoadedConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCategory::bad_config,
                "config file '" + path + "': cannot be read: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  LoadedConfig loaded;
  loaded.source = path;
  try {
    const auto document = nlohmann::json::parse(text.str(), nullptr, false);
    const auto schema = document.is_object() ? document.find("schema") : document.end();
    if (document.is_object() && schema != document.end() && schema->is_string() &&
        schema->get<std::string>().rfind("framestage-probe/", 0) == 0) {
      const auto config = document.find("config");
      if (config == document.end() || !config->is_object()) {
        throw Error(ErrorCategory::bad_config, "a probe file without a \"config\" object");
      }
      loaded.config = Config::from_json(config->dump());
      const auto device = document.find("device");
      if (device != document.end() && device->is_object()) {
        loaded.probed_device = device->value("name", device->value("description", ""));
      }
      loaded.source = path + " (a probe of " + loaded.probed_device + ")";
    } else {
      // Config::from_json names the key of a bad value, and rejects what is not JSON.
      loaded.config = Config::from_json(text.str());
    }
  } catch (const Error& e) {
    throw Error(ErrorCategory::bad_config, "config file '" + path + "': " + e.message());
  }
  return loaded;
}

}  // namespace framestage::tools
