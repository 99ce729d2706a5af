#include "bench_runner.hpp"

#include <framestage/coordinator.hpp>
#include <framestage/detail/enum_words.hpp>
#include <framestage/error.hpp>
#include <framestage/frame_arena.hpp>
#include <framestage/stats.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <numeric>
#include <thread>

namespace framestage::tools {
namespace {

using Clock = std::chrono::steady_clock;
// A frame of a slow strategy (100,000 pageable copies) takes about a second; this is far past it.
constexpr std::chrono::milliseconds kTimeout{120'000};
// What a destination holds before a strategy runs, so that a byte it failed to write shows.
constexpr std::byte kBackground{0xA5};

constexpr std::array<std::string_view, kAllStrategies.size()> kNames{
    "ceiling",
    "per-item",
    "per-item-pageable",
    "batch-async",
    "framestage",
    "framestage-copy-scatter",
    "framestage-zero-copy",
    "framestage-direct",
};
constexpr std::array<std::string_view, kAllStrategies.size()> kDescriptions{
    "one contiguous pinned copy of the same bytes",
    "cudaMemcpyAsync per item, pinned",
    "cudaMemcpyAsync per item, pageable",
    "cudaMemcpyBatchAsync of the items under 64 KiB in calls of up to 4,096 copies (under 16 B "
    "apart), larger ones one by one, pinned",
    "framestage, the planner's choice",
    "framestage, copy_scatter forced",
    "framestage, zero_copy forced",
    "framestage, direct forced",
};

double micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

std::size_t round_up(std::size_t bytes, std::size_t to) {
  return (bytes + to - 1) / to * to;
}

bool is_framestage(Strategy strategy) {
  return strategy >= Strategy::framestage;
}

struct FrameTime {
  double total_us;
  double host_us;
};

/// The buffers one workload's strategies share, and the strategies themselves.
class WorkloadBench {
 public:
  WorkloadBench(Backend& backend, const WorkloadSpec& spec, const BenchOptions& options,
                Progress& progress)
      : backend_(backend),
        spec_(spec),
        options_(options),
        progress_(progress),
        layout_(ItemLayout::make(spec)),
        source_(layout_.payload_bytes),
        pinned_(backend, MemoryKind::pinned, layout_.payload_bytes),
        destination_(backend, MemoryKind::device, layout_.destination_bytes),
        background_(layout_.destination_bytes, kBackground),
        stream_(backend),
        done_(backend) {
    for (const std::size_t bytes : layout_.bytes)
      granule_bytes_ += round_up(bytes, FrameArena::kGranule);
  }

  WorkloadResult run() {
    WorkloadResult out;
    out.spec = spec_;
    out.payload_bytes = layout_.payload_bytes;
    out.destination_bytes = layout_.destination_bytes;
    out.mean_item_bytes =
        static_cast<double>(layout_.payload_bytes) / static_cast<double>(spec_.items_per_frame);
    for (const Strategy strategy : kAllStrategies) {
      if (std::find(options_.strategies.begin(), options_.strategies.end(), strategy) ==
          options_.strategies.end()) {
        continue;
      }
      progress_.strategy_started(spec_.name, to_string(strategy));
      out.results.push_back(is_framestage(strategy) ? run_framestage(strategy)
                                                    : run_copies(strategy));
      progress_.strategy_finished();
      if (strategy == Strategy::framestage && options_.pipelined) {
        progress_.strategy_started(spec_.name, "pipelined");
        out.pipelined = run_pipelined(std::max<std::uint32_t>(
            3, static_cast<std::uint32_t>(out.results.back().frame_us.size())));
        progress_.strategy_finished();
      }
    }
    return out;
  }

 private:
  [[nodiscard]] bool mirror() const { return spec_.destination == DestinationPattern::mirror; }
  [[nodiscard]] std::uint32_t wanted_frames() const {
    return options_.frames.value_or(spec_.frames);
  }
  [[nodiscard]] std::uint64_t tag(std::size_t run, std::uint32_t frame) const {
    return (std::uint64_t{run + 1} << 32) | frame;
  }

  // Up to `warmup` warm-up frames, then as many measured frames as the budget allows (at
  // least 3, at most the workload's frames).
  template <class F>
  void run_frames(StrategyResult& result, std::uint32_t warmup, F&& frame) {
    const std::uint32_t wanted = wanted_frames();
    const double budget = options_.max_seconds_per_strategy;
    const auto start = Clock::now();
    const auto elapsed = [&] {
      return std::chrono::duration<double>(Clock::now() - start).count();
    };
    // A slow strategy (a second a frame) gains nothing from more than one warm-up frame.
    std::uint32_t warmed = 0;
    while (warmed < warmup && (warmed == 0 || budget <= 0 || elapsed() < budget / 4))
      frame(warmed++);
    const double frame_seconds = elapsed() / warmed;
    std::uint32_t count = wanted;
    if (budget > 0 && frame_seconds * wanted > budget) {
      count = std::max(std::min(3u, wanted), static_cast<std::uint32_t>(budget / frame_seconds));
    }
    progress_.frames_planned(count);
    result.warmup_frames = warmed;
    for (std::uint32_t f = 0; f < count; ++f) {
      const FrameTime t = frame(warmed + f);
      result.frame_us.push_back(t.total_us);
      result.host_us.push_back(t.host_us);
      progress_.frame_done();
    }
    result.time = Summary::of(result.frame_us);
    result.host = Summary::of(result.host_us);
    result.gbps = static_cast<double>(layout_.payload_bytes) / result.time.median_us / 1e3;
  }

  // Waits for everything enqueued on stream_ so far.
  void wait_stream() {
    backend_.record_event(done_.native(), stream_.view());
    if (!backend_.wait_event(done_.native(), kTimeout)) {
      throw Error(ErrorCategory::timeout, "framestage bench: a frame of workload \"" + spec_.name +
                                              "\" did not complete within 120 s");
    }
  }

  void reset_destination() {
    backend_.copy_async(destination_.data(), background_.data(), background_.size(),
                        stream_.view());
    wait_stream();
  }

  // Compares `got` with `expected` byte for byte and records the outcome.
  static void compare(StrategyResult& result, std::span<const std::byte> got,
                      std::span<const std::byte> expected) {
    result.checked_bytes += expected.size();
    if (std::memcmp(got.data(), expected.data(), expected.size()) == 0) return;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      if (got[i] != expected[i]) {
        if (result.mismatched_bytes++ == 0) result.first_mismatch = i;
      }
    }
  }

  // The whole destination buffer: the last frame's items over the background, nothing else.
  void check_destination(StrategyResult& result) {
    std::vector<std::byte> expected = background_;
    for (std::size_t i = 0; i < spec_.items_per_frame; ++i) {
      std::memcpy(expected.data() + layout_.destination_offsets[i],
                  source_.data() + layout_.source_offsets[i], layout_.bytes[i]);
    }
    std::vector<std::byte> got(expected.size());
    backend_.read_device(got.data(), destination_.data(), got.size());
    compare(result, got, expected);
    result.contents_ok = result.mismatched_bytes == 0;
  }

  // Each staged item's device mirror, read in as few reads as the addresses allow.
  void check_mirror(StrategyResult& result, const Coordinator& coordinator,
                    std::span<const FrameSpan<std::byte>> spans) {
    const std::size_t n = spans.size();
    std::vector<const std::byte*> device(n);
    for (std::size_t i = 0; i < n; ++i)
      device[i] = coordinator.device_ptr(spans[i]);
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return device[a] < device[b]; });
    std::vector<std::byte> got;
    constexpr std::size_t kJoinGap = std::size_t{1} << 20;
    for (std::size_t first = 0; first < n;) {
      const std::byte* begin = device[order[first]];
      const std::byte* end = begin + spans[order[first]].size();
      std::size_t last = first + 1;
      for (; last < n && device[order[last]] <= end + kJoinGap; ++last)
        end = std::max(end, device[order[last]] + spans[order[last]].size());
      got.resize(static_cast<std::size_t>(end - begin));
      backend_.read_device(got.data(), begin, got.size());
      for (std::size_t k = first; k < last; ++k) {
        const std::size_t i = order[k];
        compare(
            result,
            std::span(got).subspan(static_cast<std::size_t>(device[i] - begin), spans[i].size()),
            std::span(source_).subspan(layout_.source_offsets[i], layout_.bytes[i]));
      }
      first = last;
    }
    result.contents_ok = result.mismatched_bytes == 0;
  }

  StrategyResult run_copies(Strategy strategy) {
    StrategyResult result;
    result.strategy = strategy;
    const bool pageable = strategy == Strategy::per_item_pageable;
    std::vector<CopyOp> copies;
    if (strategy != Strategy::ceiling) {
      const std::byte* from = pageable ? source_.data() : pinned_.data();
      copies.reserve(spec_.items_per_frame);
      for (std::size_t i = 0; i < spec_.items_per_frame; ++i) {
        copies.push_back({destination_.data() + layout_.destination_offsets[i],
                          from + layout_.source_offsets[i], layout_.bytes[i]});
      }
      reset_destination();
    } else if (ceiling_target_.bytes() == 0) {
      ceiling_target_ = MemoryBlock(backend_, MemoryKind::device, layout_.payload_bytes);
    }
    const std::size_t run = static_cast<std::size_t>(strategy);
    run_frames(result, 1, [&](std::uint32_t frame) {
      fill_frame_bytes(source_, tag(run, frame));
      if (!pageable) std::memcpy(pinned_.data(), source_.data(), layout_.payload_bytes);
      const auto start = Clock::now();
      if (strategy == Strategy::ceiling) {
        backend_.copy_async(ceiling_target_.data(), pinned_.data(), layout_.payload_bytes,
                            stream_.view());
      } else if (strategy == Strategy::batch_async) {
        backend_.copy_batch_async(copies, stream_.view());
      } else {
        for (const CopyOp& copy : copies)
          backend_.copy_async(copy.dst, copy.src, copy.bytes, stream_.view());
      }
      const auto enqueued = Clock::now();
      wait_stream();
      return FrameTime{micros(Clock::now() - start), micros(enqueued - start)};
    });
    if (strategy == Strategy::ceiling) {
      std::vector<std::byte> got(layout_.payload_bytes);
      backend_.read_device(got.data(), ceiling_target_.data(), got.size());
      compare(result, got, source_);
      result.contents_ok = result.mismatched_bytes == 0;
    } else {
      check_destination(result);
    }
    return result;
  }

  Config framestage_config(Strategy strategy) const {
    Config config = options_.config;
    config.buffering = spec_.buffering;
    if (strategy == Strategy::framestage_copy_scatter)
      config.strategy = UploadStrategy::copy_scatter;
    if (strategy == Strategy::framestage_zero_copy) config.strategy = UploadStrategy::zero_copy;
    if (strategy == Strategy::framestage_direct) config.strategy = UploadStrategy::direct;
    // Arenas sized to the workload (the arena a pattern does not use kept small); every other
    // setting is the config's.
    constexpr std::size_t kSmall = std::size_t{64} << 10;
    if (mirror()) {
      // Threads claim the arena in chunks, and a chunk's tail can go unused.
      config.arena_bytes = round_up(granule_bytes_ + granule_bytes_ / 2 +
                                        4 * spec_.threads * FrameArena::kChunkBytes + kSmall,
                                    4096);
      config.upload_arena_bytes = kSmall;
    } else {
      config.arena_bytes = kSmall;
      config.upload_arena_bytes = round_up(granule_bytes_ + kSmall, 4096);
    }
    config.max_uploads_per_frame = std::max(config.max_uploads_per_frame, spec_.items_per_frame);
    // No workload reads back.
    config.readback_arena_bytes = kSmall;
    config.max_readbacks_per_frame = 1;
    return config;
  }

  // Writes the frame's items, from `source` (the frame's bytes in issue order), into the
  // coordinator from spec_.threads threads.
  void write_frame(Coordinator& coordinator, std::span<FrameSpan<std::byte>> spans,
                   const std::vector<std::byte>& source) {
    const auto write = [&](std::size_t begin, std::size_t end) {
      for (std::size_t i = begin; i < end; ++i) {
        const std::byte* from = source.data() + layout_.source_offsets[i];
        const std::size_t bytes = layout_.bytes[i];
        if (mirror()) {
          auto span = coordinator.frame_alloc<std::byte>(bytes);
          std::memcpy(span.data(), from, bytes);
          coordinator.stage_for_upload(span);
          spans[i] = span;
        } else {
          auto span = coordinator.reserve_upload<std::byte>(
              destination_.data() + layout_.destination_offsets[i], bytes);
          std::memcpy(span.data(), from, bytes);
        }
      }
    };
    const std::size_t n = spec_.items_per_frame;
    if (spec_.threads == 1) {
      write(0, n);
      return;
    }
    std::vector<std::exception_ptr> errors(spec_.threads);
    {
      std::vector<std::jthread> workers;
      for (std::size_t t = 0; t < spec_.threads; ++t) {
        workers.emplace_back([&, t] {
          try {
            write(n * t / spec_.threads, n * (t + 1) / spec_.threads);
          } catch (...) {
            errors[t] = std::current_exception();
          }
        });
      }
    }
    for (const auto& error : errors)
      if (error) std::rethrow_exception(error);
  }

  StrategyResult run_framestage(Strategy strategy) {
    StrategyResult result;
    result.strategy = strategy;
    if (mirror() && strategy != Strategy::framestage) {
      result.skipped =
          "a forced strategy decides how uploads travel; a mirror frame has none, only staged "
          "ranges";
      return result;
    }
    Coordinator coordinator(framestage_config(strategy), backend_);
    if (!mirror()) reset_destination();
    std::vector<FrameSpan<std::byte>> spans(mirror() ? spec_.items_per_frame : 0);
    const std::size_t run = static_cast<std::size_t>(strategy);
    // Every slot is used once before the clock counts.
    run_frames(result, spec_.buffering + 1, [&](std::uint32_t frame) {
      fill_frame_bytes(source_, tag(run, frame));
      coordinator.begin_frame();
      write_frame(coordinator, spans, source_);
      const auto start = Clock::now();
      const FrameTicket ticket = coordinator.end_frame();
      const auto returned = Clock::now();
      ticket.wait(kTimeout);
      return FrameTime{micros(Clock::now() - start), micros(returned - start)};
    });
    const FrameStats& last = coordinator.stats().last_frame;
    // A mirror frame has no uploads: its staged ranges travel as merged copies. A frame whose
    // uploads all reached direct_copy_threshold_bytes had no small ones to plan.
    result.planner_choice = last.uploads == 0 ? "mirror_copies"
                            : last.strategy == UploadStrategy::automatic
                                ? "all_direct"
                                : std::string(to_string(last.strategy));
    result.last_frame = nlohmann::json::parse(to_json(last));
    if (mirror()) {
      check_mirror(result, coordinator, spans);
    } else {
      check_destination(result);
    }
    coordinator.synchronize();
    return result;
  }

  PipelinedResult run_pipelined(std::uint32_t frames) {
    PipelinedResult result;
    result.frames = frames;
    Coordinator coordinator(framestage_config(Strategy::framestage), backend_);
    if (!mirror()) reset_destination();
    std::vector<FrameSpan<std::byte>> spans(mirror() ? spec_.items_per_frame : 0);
    std::vector<double> writes;
    constexpr std::size_t kRun = 100;  // a tag of its own
    progress_.frames_planned(frames);
    // The producer copies from arrays it already holds, as a simulation does: two frames'
    // contents made before the clock starts, used in turn, so the generator is in no figure.
    std::array<std::vector<std::byte>, 2> held;
    for (std::uint32_t k = 0; k < held.size(); ++k) {
      held[k].resize(layout_.payload_bytes);
      fill_frame_bytes(held[k], tag(kRun, k));
    }
    const auto one = [&](std::uint32_t frame) {
      coordinator.begin_frame();
      const auto opened = Clock::now();
      write_frame(coordinator, spans, held[frame % held.size()]);
      writes.push_back(micros(Clock::now() - opened));
      (void)coordinator.end_frame();
    };
    for (std::uint32_t f = 0; f < spec_.buffering; ++f)
      one(f);
    writes.clear();
    const auto start = Clock::now();
    for (std::uint32_t f = 0; f < frames; ++f) {
      one(spec_.buffering + f);
      progress_.frame_done();
    }
    coordinator.synchronize();
    result.period_us = micros(Clock::now() - start) / frames;
    result.host_write_us = Summary::of(writes).median_us;
    // The destination holds the last frame's bytes: the reference for the checks below.
    source_ = held[(spec_.buffering + frames - 1) % held.size()];
    result.gbps = static_cast<double>(layout_.payload_bytes) / result.period_us / 1e3;
    StrategyResult check;
    if (mirror()) {
      check_mirror(check, coordinator, spans);
    } else {
      check_destination(check);
    }
    result.contents_ok = check.contents_ok;
    return result;
  }

  Backend& backend_;
  const WorkloadSpec& spec_;
  const BenchOptions& options_;
  Progress& progress_;
  ItemLayout layout_;
  std::size_t granule_bytes_ = 0;      // the items rounded up to arena granules
  std::vector<std::byte> source_;      // the frame's bytes, packed in issue order: the reference
  MemoryBlock pinned_;                 // the same bytes in pinned memory, for the baselines
  MemoryBlock destination_;            // the items' destinations on the device
  MemoryBlock ceiling_target_;         // where the ceiling's one copy lands
  std::vector<std::byte> background_;  // what the destination holds before each strategy
  Stream stream_;
  Event done_;
};

}  // namespace

std::string_view to_string(Strategy strategy) noexcept {
  return detail::word_of(strategy, kNames);
}

std::optional<Strategy> parse_strategy(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == name) return kAllStrategies[i];
  return std::nullopt;
}

std::string_view describe(Strategy strategy) noexcept {
  return kDescriptions[static_cast<std::size_t>(strategy)];
}

Summary Summary::of(std::vector<double> samples_us) {
  Summary s;
  if (samples_us.empty()) return s;
  std::sort(samples_us.begin(), samples_us.end());
  const std::size_t n = samples_us.size();
  s.median_us = samples_us[n / 2];
  // Nearest rank: the smallest sample with at least 95% of the samples at or below it.
  s.p95_us = samples_us[static_cast<std::size_t>(std::ceil(0.95 * static_cast<double>(n))) - 1];
  s.mean_us = std::accumulate(samples_us.begin(), samples_us.end(), 0.0) / static_cast<double>(n);
  s.min_us = samples_us.front();
  s.max_us = samples_us.back();
  return s;
}

const StrategyResult* WorkloadResult::find(Strategy strategy) const {
  for (const auto& result : results)
    if (result.strategy == strategy && result.skipped.empty()) return &result;
  return nullptr;
}

bool WorkloadResult::contents_ok() const {
  for (const auto& result : results)
    if (result.skipped.empty() && !result.contents_ok) return false;
  return !pipelined || pipelined->contents_ok;
}

std::size_t planned_runs(const BenchOptions& options) {
  const bool framestage = std::find(options.strategies.begin(), options.strategies.end(),
                                    Strategy::framestage) != options.strategies.end();
  return options.strategies.size() + (framestage && options.pipelined ? 1 : 0);
}

WorkloadResult run_workload(Backend& backend, const WorkloadSpec& spec, const BenchOptions& options,
                            Progress& progress) {
  return WorkloadBench(backend, spec, options, progress).run();
}

}  // namespace framestage::tools
