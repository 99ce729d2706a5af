// Shared test helper: random frames of every shape a user can make, checked byte for byte.
//
// The frame checker draws each frame from every axis at once: item counts from one to past 2^20,
// sizes fixed, uniform or log-uniform from a byte to max_item_bytes, payloads from a few bytes
// to max_frame_bytes; destinations and sources at any alignment; ascending, descending, random
// and interleaved issue order with full and partial overlaps (the one issued last wins); 1 to
// max_threads threads writing disjoint regions; mirror allocations, upload, reserve_upload and
// readback mixed in one frame. Coordinators live for an epoch of frames with a config drawn for
// it: every strategy forced and automatic, buffering 1 to 8, fail and grow, arenas from tiny to
// roomy; a third end every frame as a tick graph's launch. Every fourth epoch aims at a planner
// boundary on purpose: payloads just below, at and above each pipeline chunk boundary (1 to
// kMaxPipelineChunks + 1 chunks), more than 2^17 and 2^20 uploads, an upload arena filled until it
// refuses, direct-copy batches past the driver's limit, frames of hundreds of MiB, and (where
// limits allow) one upload past 2 GiB, which travels split at the 32-bit descriptor length.
//
// A host model of the destination applies each accepted write in issue order; a write the fail
// policy refuses must throw out_of_memory and change nothing. Readbacks must return the
// contents from before their frame, mirrors the bytes written, and the destination's written
// range (plus a margin either side) must match the model whenever the pipeline drains, which it
// does at random points and at the end of every epoch; the whole destination is compared at the
// end. Every frame's draw comes from (seed, frame number) alone: FRAMESTAGE_CHECK_FRAME=N with
// the same seed replays frame N (its epoch's config, fresh state). The same code runs on the
// host backend (tests/test_frame_checker.cpp) and on a GPU (tests/test_cuda_frame_checker.cu).
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/error.hpp>
#include <framestage/tick_graph.hpp>

#include "soak.hpp"  // fill_from_seed, SoakThreads, DeviceWriter

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace framestage::testing {

struct CheckerOptions {
  std::uint64_t seed = 1;
  std::uint64_t min_frames = 200;         ///< runs at least this many frames ...
  double min_seconds = 0;                 ///< ... and at least this long ...
  double max_seconds = 1e9;               ///< ... but starts no frame after this
  std::size_t world_bytes = 8 << 20;      ///< the destination every frame writes into
  std::size_t max_frame_bytes = 2 << 20;  ///< the largest frame payload
  std::size_t max_item_bytes = 1 << 20;
  std::size_t max_items = (1 << 17) + 4096;  ///< past 2^17; past 2^20 where it allows
  unsigned max_threads = 8;
  bool split_upload = false;  ///< one upload over 2 GiB (needs world_bytes past it)
  bool every_theme = true;    ///< run until every boundary theme has had an epoch
  std::optional<std::uint64_t> replay_frame;
  /// Self-test: at the first drain, one wrong byte goes into the destination beside a place
  /// written since the last one, as a stray write would; the run must report exactly it.
  bool sabotage = false;

  /// FRAMESTAGE_TEST_SCALE=full (issue 18): at least 120 s, no epoch begun after 200 s; a
  /// 2.25-GiB destination, frames to 512 MiB, items to 64 MiB, past 2^20 uploads in a frame,
  /// one upload past 2 GiB (the 32-bit split), 16 threads. On the host backend it needs about
  /// 5 GiB of memory.
  void set_full_scale() {
    max_threads = 16;
    min_seconds = 120;
    max_seconds = 200;
    world_bytes = (std::size_t{9} << 30) / 4;
    max_frame_bytes = std::size_t{512} << 20;
    max_item_bytes = std::size_t{64} << 20;
    max_items = (std::size_t{1} << 20) + 4096;
    split_upload = true;
  }
};

/// The planner boundary an epoch aims at; `mixed` draws from everything.
enum class CheckerTheme : std::uint8_t {
  mixed,
  chunk_boundaries,
  many_items,
  direct_batch,
  fill_arena,
  large,
  split_upload
};
inline constexpr std::array<const char*, 7> kCheckerThemeNames{
    "mixed", "chunk-boundaries", "many-items", "direct-batch", "fill-arena",
    "large", "split-upload"};

struct CheckerFigures {
  std::uint64_t frames = 0;
  std::uint64_t epochs = 0;
  std::uint64_t ops = 0;
  std::uint64_t refused = 0;
  std::uint64_t uploaded_bytes = 0;
  std::uint64_t bytes_checked = 0;
  std::uint64_t bad_bytes = 0;
  std::uint64_t most_items = 0;      ///< in one frame
  std::uint64_t largest_frame = 0;   ///< payload bytes of one frame
  std::uint64_t largest_upload = 0;  ///< one upload call
  std::array<std::uint64_t, 7> theme_frames{};
  std::array<std::uint64_t, 4> strategy_frames{};
  std::uint64_t tick_frames = 0;  ///< run as a tick graph's launch (end_frame(TickGraph&))
  double seconds = 0;

  void print(const char* label) const {
    std::printf(
        "[ figures  ] %s: %llu frames in %llu epochs, %llu operations (%llu refused), %llu bytes "
        "uploaded, %llu bytes checked, %llu wrong, most items in a frame %llu, largest frame "
        "%llu B, largest upload %llu B, %.1f s\n",
        label, static_cast<unsigned long long>(frames), static_cast<unsigned long long>(epochs),
        static_cast<unsigned long long>(ops), static_cast<unsigned long long>(refused),
        static_cast<unsigned long long>(uploaded_bytes),
        static_cast<unsigned long long>(bytes_checked), static_cast<unsigned long long>(bad_bytes),
        static_cast<unsigned long long>(most_items), static_cast<unsigned long long>(largest_frame),
        static_cast<unsigned long long>(largest_upload), seconds);
    std::printf("[ figures  ] frames per theme:");
    for (std::size_t i = 0; i < theme_frames.size(); ++i)
      std::printf(" %s %llu", kCheckerThemeNames[i],
                  static_cast<unsigned long long>(theme_frames[i]));
    std::printf("; per strategy:");
    for (std::size_t i = 0; i < strategy_frames.size(); ++i)
      std::printf(" %s %llu", std::string(to_string(static_cast<UploadStrategy>(i))).c_str(),
                  static_cast<unsigned long long>(strategy_frames[i]));
    std::printf("; as a tick graph %llu\n", static_cast<unsigned long long>(tick_frames));
  }
};

class FrameChecker {
 public:
  FrameChecker(Backend& backend, DeviceWriter write_device, CheckerOptions options)
      : backend_(backend), write_device_(std::move(write_device)), options_(options) {}

  CheckerFigures run() {
    const auto start = std::chrono::steady_clock::now();
    const auto elapsed = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    world_ = std::make_unique<DeviceBuffer<std::byte>>(backend_, options_.world_bytes);
    model_.assign(options_.world_bytes, std::byte{0});
    fill_from_seed(model_, mix(options_.seed, ~0ull));
    write_device_(world_->data(), model_.data(), model_.size());
    SoakThreads threads(options_.max_threads);
    std::uint64_t frame = 0;
    for (std::uint64_t epoch = 0; !stopped(); ++epoch) {
      if (!options_.replay_frame && figures_.frames >= options_.min_frames &&
          elapsed() >= options_.min_seconds &&
          (!options_.every_theme || epoch >= epochs_for_every_theme()))
        break;
      if (!options_.replay_frame && elapsed() >= options_.max_seconds) break;
      std::mt19937_64 rng(mix(options_.seed, epoch));
      const CheckerTheme theme = theme_of(epoch);
      const Config config = draw_config(theme, rng);
      std::uint64_t count = theme == CheckerTheme::many_items || theme == CheckerTheme::large ||
                                    theme == CheckerTheme::split_upload
                                ? 1 + rng() % 2
                                : 1 + rng() % 40;
      // Direct-batch frames carry about 300 MB each: up to 40 of them took 60% of a full-scale
      // run's time (host backend). Capped, not redrawn, so every earlier frame keeps its number
      // (frame 257 of seed 20261207 is a GPU regression test).
      if (theme == CheckerTheme::direct_batch) count = std::min<std::uint64_t>(count, 4);
      if (options_.replay_frame && *options_.replay_frame >= frame + count) {
        frame += count;
        continue;
      }
      // The time it starts at tells, in a log cut short, which epochs took the time.
      std::printf(
          "[ epoch    ] %llu: frames %llu-%llu, %s, strategy %s, buffering %u, %s%s, at %.1f s\n",
          static_cast<unsigned long long>(epoch), static_cast<unsigned long long>(frame),
          static_cast<unsigned long long>(frame + count - 1),
          kCheckerThemeNames[static_cast<std::size_t>(theme)],
          std::string(to_string(config.strategy)).c_str(), config.buffering,
          std::string(to_string(config.overflow)).c_str(),
          runs_as_tick(epoch, theme) ? ", tick graph" : "", elapsed());
      std::fflush(stdout);  // a hung epoch is the last one printed, even into a file
      run_epoch(epoch, theme, config, frame, count, threads);
      frame += count;
      ++figures_.epochs;
      if (options_.replay_frame) break;
    }
    if (!stopped()) compare_range(0, options_.world_bytes, "the whole destination at the end");
    world_.reset();
    figures_.seconds = elapsed();
    return figures_;
  }

 private:
  enum class Kind : std::uint8_t { upload, reserve, mirror, readback };
  struct Op {
    Kind kind = Kind::upload;
    std::size_t offset = 0;  // in the world (upload, reserve, readback)
    std::size_t bytes = 0;
    std::uint64_t seed = 0;
    std::uint8_t element_bytes = 1;  // mirror: 1, 2, 4, 8 or 16
    bool stage_twice = false;        // mirror
    bool accepted = false;
    FrameSpan<std::byte> span;  // mirror
    Readback<std::byte> readback;
    std::vector<std::byte> want;  // readback: the world before the frame
  };
  struct Pending {
    std::uint64_t frame = 0;  // the coordinator's number, for slot reuse
    std::uint64_t drawn = 0;  // the run's number, which FRAMESTAGE_CHECK_FRAME replays
    FrameTicket ticket;
    std::vector<Op> checks;  // accepted mirrors and readbacks
  };

  static std::uint64_t mix(std::uint64_t seed, std::uint64_t n) {
    std::uint64_t z = seed * 0x9e3779b97f4a7c15 + n + 0x632be59bd9b4e019;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  [[nodiscard]] bool stopped() const { return figures_.bad_bytes > 0 || failures_ > 0; }
  void fail(const std::string& message) {
    ++failures_;
    ADD_FAILURE() << message;
  }
  static std::size_t log_uniform(std::mt19937_64& rng, std::size_t low, std::size_t high) {
    if (high <= low) return low;
    std::uniform_real_distribution<double> d(std::log(double(low)), std::log(double(high) + 1));
    return std::clamp<std::size_t>(std::size_t(std::exp(d(rng))), low, high);
  }

  // A third of the epochs end their frames with end_frame(TickGraph&), drawn apart so frames
  // keep their contents; never direct-batch or split-upload ones (a graph sends no direct copy).
  bool runs_as_tick(std::uint64_t epoch, CheckerTheme theme) const {
    return theme != CheckerTheme::direct_batch && theme != CheckerTheme::split_upload &&
           mix(options_.seed ^ 0x71c6, epoch) % 3 == 0;
  }

  // A tick epoch's graph captures one copy of the destination (at most 16 MiB of it) into a
  // buffer of its own: after each frame it must hold the region with that frame's uploads.
  TickGraph capture_probe(Coordinator& c, std::uint64_t epoch) {
    const std::uint64_t draw = mix(options_.seed ^ 0x9b0e, epoch);
    probe_bytes_ = std::min<std::size_t>(options_.world_bytes, std::size_t{16} << 20);
    probe_offset_ = (draw >> 16) % (options_.world_bytes - probe_bytes_ + 1);
    probe_ = std::make_unique<DeviceBuffer<std::byte>>(backend_, probe_bytes_);
    return c.capture_tick([this, dst = probe_->data(), src = world_->data() + probe_offset_,
                           bytes = probe_bytes_](StreamView stream) {
      backend_.copy_async(dst, src, bytes, stream);
    });
  }

  // Every fourth epoch takes the next boundary theme; the 2-GiB upload comes once, early.
  static constexpr std::uint64_t kBoundaryThemes = 5;
  static constexpr std::size_t kGap = 16;  // the most space between one thread's writes
  CheckerTheme theme_of(std::uint64_t epoch) const {
    if (epoch % 4 != 3) return CheckerTheme::mixed;
    std::uint64_t turn = epoch / 4;
    if (options_.split_upload && turn == 1) return CheckerTheme::split_upload;
    if (options_.split_upload && turn > 1) --turn;
    return static_cast<CheckerTheme>(1 + turn % kBoundaryThemes);
  }
  // Epochs until every theme has had its turn.
  [[nodiscard]] std::uint64_t epochs_for_every_theme() const {
    return 4 * (kBoundaryThemes + (options_.split_upload ? 1 : 0));
  }

  Config draw_config(CheckerTheme theme, std::mt19937_64& rng) const {
    Config c;
    c.buffering = 1 + static_cast<std::uint32_t>(rng() % Config::kMaxBuffering);
    c.strategy = static_cast<UploadStrategy>(rng() % 4);
    c.overflow = rng() % 2 == 0 ? OverflowPolicy::grow : OverflowPolicy::fail;
    c.arena_bytes = std::size_t{4096} << (rng() % 13);
    c.upload_arena_bytes = std::size_t{4096} << (rng() % 13);
    c.max_uploads_per_frame = std::size_t{16} << (rng() % 14);
    c.readback_arena_bytes = std::size_t{4096} << (rng() % 10);
    c.max_readbacks_per_frame = std::size_t{16} << (rng() % 10);
    c.direct_copy_threshold_bytes = std::size_t{256} << (rng() % 14);
    c.zero_copy_max_bytes = rng() % 3 == 0 ? 0 : std::size_t{1024} << (rng() % 10);
    c.merge_gap_bytes = rng() % 2 == 0 ? 0 : std::size_t{64} << (rng() % 10);
    c.pipeline_chunk_bytes = std::size_t{4096} << (rng() % 8);
    c.trim_after_frames = 1 + static_cast<std::uint32_t>(rng() % 8);
    c.slot_timeout_ms = 120'000;
    switch (theme) {
      case CheckerTheme::mixed:
        break;
      case CheckerTheme::chunk_boundaries:
        c.strategy = rng() % 2 == 0 ? UploadStrategy::copy_scatter : UploadStrategy::automatic;
        c.overflow = OverflowPolicy::grow;
        c.direct_copy_threshold_bytes = std::size_t{1} << 30;  // every item packed
        break;
      case CheckerTheme::direct_batch:
        c.strategy = UploadStrategy::direct;
        [[fallthrough]];
      case CheckerTheme::many_items:
      case CheckerTheme::large:
      case CheckerTheme::split_upload:
        c.overflow = OverflowPolicy::grow;
        break;
      case CheckerTheme::fill_arena:
        // Small enough for any frame budget to overrun it.
        c.overflow = OverflowPolicy::fail;
        c.upload_arena_bytes = std::size_t{4096} << (rng() % 8);
        c.max_uploads_per_frame = std::size_t{16} << (rng() % 10);
        break;
    }
    return c;
  }

  // The items of frame `g`: sizes and kinds first, then places, overlaps and issue order.
  std::vector<std::vector<Op>> draw_frame(std::uint64_t g, CheckerTheme theme, const Config& config,
                                          unsigned& thread_count) {
    std::mt19937_64 rng(mix(options_.seed ^ 0x5eed, g));
    thread_count = 1 + static_cast<unsigned>(rng() % options_.max_threads);
    std::size_t items = log_uniform(rng, 1, std::min<std::size_t>(options_.max_items, 20'000));
    std::size_t budget = rng() % 20 == 0 ? log_uniform(rng, 1, options_.max_frame_bytes / 8)
                                         : log_uniform(rng, 1, 1 << 20);
    std::size_t low = 1;
    std::size_t high = log_uniform(rng, 1, std::min<std::size_t>(options_.max_item_bytes, 1 << 16));
    std::array<std::uint64_t, 4> weights{6, 3, 1, 1};
    if (theme == CheckerTheme::mixed)
      for (auto& w : weights)
        w = rng() % 4;
    switch (theme) {
      case CheckerTheme::mixed:
        break;
      case CheckerTheme::chunk_boundaries: {
        // One thread's items of one size, each a 16-byte descriptor and its payload in the
        // arena: as many as fill k chunks, one fewer or one more, so the frame ends just below,
        // on or just above a chunk boundary, for 1 to kMaxPipelineChunks + 1 chunks.
        const std::size_t k = 1 + rng() % (Config::kMaxPipelineChunks + 1);
        low = high = 1 + rng() % 256;
        const std::size_t per_item = kStagingGranule + (low + 15) / 16 * 16;
        items =
            std::max<std::size_t>(1, k * config.pipeline_chunk_bytes / per_item + rng() % 3 - 1);
        budget = items * low;
        weights = {3, 1, 0, 0};
        thread_count = 1;
        break;
      }
      case CheckerTheme::many_items: {
        const bool past_2_20 = options_.max_items > (std::size_t{1} << 20) && rng() % 2;
        items = std::min<std::size_t>(options_.max_items,
                                      (std::size_t{1} << (past_2_20 ? 20 : 17)) + 1 + rng() % 4096);
      }
        high = 1 + rng() % 8;
        budget = items * high;
        weights = {3, 1, 0, 0};
        break;
      case CheckerTheme::direct_batch:
        items = 16'384 + rng() % 40'000;
        high = std::min<std::size_t>(16384, options_.max_item_bytes);
        budget = std::size_t{1} << 40;
        weights = {1, 0, 0, 0};
        break;
      case CheckerTheme::fill_arena:
        items = 4 * config.max_uploads_per_frame + 64;
        high = std::min<std::size_t>(
            high, 4 * config.upload_arena_bytes / config.max_uploads_per_frame + 16);
        budget = 4 * config.upload_arena_bytes + 4096;
        weights = {1, 1, 0, 0};
        thread_count = 1;  // one thread: the last refusal ends a full arena
        break;
      case CheckerTheme::large:
        // Enough items to fill max_frame_bytes: the frame is cut to exactly that.
        items = 64 + rng() % 64;
        budget = options_.max_frame_bytes;
        low = std::max<std::size_t>(1, options_.max_item_bytes / 16);
        high = options_.max_item_bytes;
        break;
      case CheckerTheme::split_upload:
        items = 1;
        low = high = (std::size_t{1} << 31) + 4096 + 1 + rng() % 4096;
        budget = low;
        weights = {1, 0, 0, 0};
        break;
    }
    budget = std::min(budget, std::min(options_.max_frame_bytes, options_.world_bytes / 2));
    if (theme == CheckerTheme::split_upload) budget = low;
    // Fixed, uniform or log-uniform sizes (chunk boundaries need one size).
    const std::uint64_t shape = theme == CheckerTheme::chunk_boundaries ? 0 : rng() % 3;
    const std::size_t fixed = log_uniform(rng, low, high);
    const std::uint64_t weight_total =
        std::max<std::uint64_t>(1, weights[0] + weights[1] + weights[2] + weights[3]);

    std::vector<std::vector<Op>> ops(thread_count);
    std::size_t total = 0;
    for (std::size_t i = 0; i < items && total < budget; ++i) {
      Op op;
      std::uint64_t pick = rng() % weight_total;
      std::size_t kind = 0;
      while (kind < 3 && pick >= weights[kind])
        pick -= weights[kind++];
      op.kind = weights[0] + weights[1] + weights[2] + weights[3] == 0 ? Kind::upload
                                                                       : static_cast<Kind>(kind);
      op.bytes = shape == 0   ? fixed
                 : shape == 1 ? low + rng() % (high - low + 1)
                              : log_uniform(rng, low, high);
      op.bytes = std::min(op.bytes, budget - total);
      if (op.kind == Kind::reserve) op.bytes = std::min(op.bytes, std::size_t{1} << 31);
      op.seed = rng();
      op.element_bytes = static_cast<std::uint8_t>(1u << (rng() % 5));
      op.stage_twice = rng() % 4 == 0;
      total += op.bytes;
      ops[rng() % thread_count].push_back(std::move(op));
    }

    // Places: each thread's writes in a region of its own, ascending with gaps, from a random
    // base; then overlaps onto earlier writes, then the issue order.
    std::vector<std::size_t> spans(thread_count, 0);
    for (unsigned t = 0; t < thread_count; ++t)
      for (const Op& op : ops[t])
        if (op.kind == Kind::upload || op.kind == Kind::reserve) spans[t] += op.bytes + kGap;
    std::size_t whole = 0;
    for (const std::size_t s : spans)
      whole += s;
    if (whole > options_.world_bytes) {
      ADD_FAILURE() << "frame " << g << " does not fit the destination: " << whole << " bytes";
      ++failures_;
      for (auto& list : ops)
        list.clear();
      return ops;
    }
    std::size_t at = rng() % (options_.world_bytes - whole + 1);
    const bool overlaps = rng() % 3 == 0;
    const std::uint64_t order = rng() % 4;  // ascending, descending, random, interleaved
    for (unsigned t = 0; t < thread_count; ++t) {
      const std::size_t region_end = at + spans[t];
      std::vector<std::size_t> writes;
      for (std::size_t i = 0; i < ops[t].size(); ++i) {
        Op& op = ops[t][i];
        if (op.kind == Kind::readback) {
          op.bytes = std::max<std::size_t>(1, std::min(op.bytes, options_.world_bytes / 4));
          op.offset = rng() % (options_.world_bytes - op.bytes + 1);
          continue;
        }
        if (op.kind == Kind::mirror) continue;
        op.offset = at + rng() % kGap;
        at = op.offset + op.bytes;
        if (overlaps && !writes.empty() && rng() % 3 == 0) {
          const Op& earlier = ops[t][writes[rng() % writes.size()]];
          op.offset = earlier.offset + (rng() % 2 == 0 ? 0 : rng() % earlier.bytes);
          op.bytes = std::min(op.bytes, region_end - op.offset);
        }
        writes.push_back(i);
      }
      at = region_end;
      std::vector<Op>& list = ops[t];
      if (order == 1) std::reverse(list.begin(), list.end());
      if (order == 2) std::shuffle(list.begin(), list.end(), rng);
      if (order == 3) {
        std::vector<Op> woven;
        const std::size_t half = (list.size() + 1) / 2;
        for (std::size_t i = 0; i < half; ++i) {
          woven.push_back(std::move(list[i]));
          if (half + i < list.size()) woven.push_back(std::move(list[half + i]));
        }
        list = std::move(woven);
      }
    }
    return ops;
  }

  template <class T>
  void mirror(Coordinator& c, Op& op) {
    FrameSpan<T> span = c.frame_alloc<T>(std::max<std::size_t>(1, op.bytes / sizeof(T)));
    const std::span<std::byte> raw = std::as_writable_bytes(std::span<T>(span));
    fill_from_seed(raw, op.seed);
    op.span = FrameSpan<std::byte>(raw, span.frame());
    op.accepted = true;
    c.stage_for_upload(span);
    if (op.stage_twice) c.stage_for_upload(span);
  }

  void run_op(Coordinator& c, Op& op, std::vector<std::byte>& scratch) {
    std::byte* world = world_->data();
    switch (op.kind) {
      case Kind::upload: {
        // The source at an odd alignment as often as not.
        const std::size_t skew = op.seed % 16;
        scratch.resize(op.bytes + skew);
        fill_from_seed(std::span(scratch).subspan(skew, op.bytes), op.seed);
        c.upload<std::byte>(world + op.offset, std::span(scratch).subspan(skew, op.bytes));
        op.accepted = true;
        break;
      }
      case Kind::reserve: {
        FrameSpan<std::byte> span = c.reserve_upload<std::byte>(world + op.offset, op.bytes);
        fill_from_seed(span, op.seed);
        op.accepted = true;
        break;
      }
      case Kind::mirror:
        with_element_type(op.element_bytes, [&]<class T>() { mirror<T>(c, op); });
        break;
      case Kind::readback:
        op.readback = c.readback<std::byte>(world + op.offset, op.bytes);
        op.accepted = true;
        break;
    }
  }

  void run_epoch(std::uint64_t epoch, CheckerTheme theme, const Config& config, std::uint64_t first,
                 std::uint64_t count, SoakThreads& threads) {
    std::mt19937_64 rng(mix(options_.seed ^ 0xd8a1, epoch));
    std::deque<Pending> pending;
    dirty_.clear();
    dirty_bytes_ = 0;
    probe_ran_ = false;
    try {
      Coordinator c(config, backend_);
      TickGraph tick;
      if (runs_as_tick(epoch, theme)) tick = capture_probe(c, epoch);
      std::vector<std::vector<std::byte>> scratch(options_.max_threads);
      for (std::uint64_t g = first; g < first + count && !stopped(); ++g) {
        if (options_.replay_frame && g != *options_.replay_frame) continue;
        const std::uint64_t k = c.current_frame() + 1;
        while (!pending.empty() && pending.front().frame + config.buffering <= k) {
          check_pending(c, pending.front());
          pending.pop_front();
        }
        unsigned thread_count = 1;
        std::vector<std::vector<Op>> ops = draw_frame(g, theme, config, thread_count);
        // Readbacks see the world before this frame.
        for (auto& list : ops)
          for (Op& op : list)
            if (op.kind == Kind::readback)
              op.want.assign(model_.begin() + static_cast<std::ptrdiff_t>(op.offset),
                             model_.begin() + static_cast<std::ptrdiff_t>(op.offset + op.bytes));
        c.begin_frame();
        std::vector<std::string> errors(thread_count);
        std::vector<std::uint64_t> refused(thread_count, 0);
        const std::function<void(unsigned)> body = [&](unsigned t) {
          if (t >= thread_count) return;
          std::size_t refused_in_a_row = 0;
          for (Op& op : ops[t]) {
            try {
              run_op(c, op, scratch[t]);
              refused_in_a_row = 0;
            } catch (const Error& e) {
              if (e.category() == ErrorCategory::out_of_memory &&
                  config.overflow == OverflowPolicy::fail) {
                ++refused[t];
                // A full arena refuses the rest: a few more tries show it stays consistent.
                if (++refused_in_a_row == 16) return;
                continue;
              }
              errors[t] = "thread " + std::to_string(t) + ": " + e.what();
              return;
            }
          }
        };
        threads.run(body);
        for (const std::string& e : errors)
          if (!e.empty()) return fail("frame " + std::to_string(g) + ": " + e);
        Pending p;
        p.frame = k;
        p.drawn = g;
        last_drawn_ = g;
        p.ticket = tick.valid() ? c.end_frame(tick) : c.end_frame();
        figures_.tick_frames += (probe_ran_ = tick.valid()) ? 1 : 0;
        std::uint64_t frame_items = 0;
        std::uint64_t frame_bytes = 0;
        for (unsigned t = 0; t < thread_count; ++t) {
          figures_.refused += refused[t];
          for (Op& op : ops[t]) {
            ++figures_.ops;
            ++frame_items;
            const bool writes = op.kind == Kind::upload || op.kind == Kind::reserve;
            if (writes) {  // checked at the next drain, refused ones too: they must not land
              dirty_.emplace_back(op.offset, op.offset + op.bytes);
              dirty_bytes_ += op.bytes;
            }
            if (!op.accepted) continue;
            frame_bytes += op.bytes;
            if (writes) {
              fill_from_seed(std::span(model_).subspan(op.offset, op.bytes), op.seed);
              figures_.uploaded_bytes += op.bytes;
              figures_.largest_upload = std::max<std::uint64_t>(figures_.largest_upload, op.bytes);
            } else {
              p.checks.push_back(std::move(op));
            }
          }
        }
        if (theme == CheckerTheme::fill_arena && refused[0] == 0 && !ops[0].empty()) {
          fail("frame " + std::to_string(g) + ": the fill-arena frame was never refused");
        }
        figures_.most_items = std::max(figures_.most_items, frame_items);
        figures_.largest_frame = std::max(figures_.largest_frame, frame_bytes);
        ++figures_.frames;
        ++figures_.theme_frames[static_cast<std::size_t>(theme)];
        ++figures_.strategy_frames[static_cast<std::size_t>(config.strategy)];
        pending.push_back(std::move(p));
        // Drain now and then, and always before much unchecked data piles up.
        if (rng() % 4 == 0 || dirty_bytes_ > (256u << 20)) {
          drain(c, pending);
        }
      }
      drain(c, pending);
    } catch (const Error& e) {
      fail("epoch " + std::to_string(epoch) + ": " + e.what());
    }
    probe_.reset();
  }

  void drain(Coordinator& c, std::deque<Pending>& pending) {
    c.synchronize();
    for (Pending& p : pending)
      check_pending(c, p);
    pending.clear();
    // The places written since the last drain, each with a margin either side for a stray
    // write beside it, and places closer than kJoin compared as one with the gap between. Frames
    // land at random bases across the destination, so the hull of two frames is a third of it
    // on average (750 MiB at full scale): comparing the hull held the GPU run to about 4 frames
    // a second (H100, session 11). The whole destination is compared at the end.
    constexpr std::size_t kMargin = 4096;
    constexpr std::size_t kJoin = std::size_t{64} << 10;
    std::sort(dirty_.begin(), dirty_.end());
    if (options_.sabotage && !dirty_.empty()) {
      options_.sabotage = false;
      const std::size_t at = std::min(options_.world_bytes - 1, dirty_.front().second + 100);
      const std::byte wrong = model_[at] ^ std::byte{0x5a};
      write_device_(world_->data() + at, &wrong, 1);
    }
    std::size_t i = 0;
    while (i < dirty_.size()) {
      const std::size_t low = dirty_[i].first > kMargin ? dirty_[i].first - kMargin : 0;
      std::size_t high = dirty_[i].second;
      for (++i; i < dirty_.size() && dirty_[i].first <= high + kJoin; ++i)
        high = std::max(high, dirty_[i].second);
      compare_range(low, std::min(options_.world_bytes, high + kMargin),
                    "the destination, up to this frame");
    }
    dirty_.clear();
    dirty_bytes_ = 0;
    if (!probe_ran_) return;
    std::vector<std::byte> got(probe_bytes_);
    backend_.read_device(got.data(), probe_->data(), got.size());
    compare(got, std::span<const std::byte>(model_).subspan(probe_offset_, probe_bytes_),
            "the tick graph's captured copy, after the last frame", last_drawn_, probe_offset_);
  }

  void check_pending(const Coordinator& c, Pending& p) {
    p.ticket.wait(std::chrono::milliseconds{120'000});
    std::vector<std::byte> want;
    for (Op& op : p.checks) {
      if (op.kind == Kind::readback) {
        compare(op.readback.get(std::chrono::milliseconds{120'000}), op.want, "readback", p.drawn);
        continue;
      }
      want.resize(op.span.size());
      fill_from_seed(want, op.seed);
      std::vector<std::byte> got(op.span.size());
      backend_.read_device(got.data(), c.device_ptr(op.span), got.size());
      compare(got, want, "mirror", p.drawn);
    }
  }

  void compare_range(std::size_t low, std::size_t high, const char* what) {
    std::vector<std::byte> got(high - low);
    backend_.read_device(got.data(), world_->data() + low, got.size());
    compare(got, std::span<const std::byte>(model_).subspan(low, high - low), what, last_drawn_,
            low);
  }

  void compare(std::span<const std::byte> got, std::span<const std::byte> want, const char* what,
               std::uint64_t frame, std::size_t base = 0) {
    figures_.bytes_checked += want.size();
    const auto [differing, first] = find_mismatch(got, want);
    if (differing == 0) return;
    figures_.bad_bytes += differing;
    ADD_FAILURE() << what << " (frame " << frame << "): " << differing << " of " << want.size()
                  << " bytes wrong, the first at offset " << base + first << " (got "
                  << static_cast<unsigned>(got[first]) << ", want "
                  << static_cast<unsigned>(want[first]) << "); replay with the seed above and "
                  << "FRAMESTAGE_CHECK_FRAME";
  }

  Backend& backend_;
  DeviceWriter write_device_;
  CheckerOptions options_;
  std::unique_ptr<DeviceBuffer<std::byte>> world_;
  std::vector<std::byte> model_;
  std::uint64_t last_drawn_ = 0;                            // the newest frame drawn, for messages
  std::vector<std::pair<std::size_t, std::size_t>> dirty_;  // [begin, end) written, undrained
  std::size_t dirty_bytes_ = 0;
  std::unique_ptr<DeviceBuffer<std::byte>> probe_;  // a tick epoch's captured copy lands here
  std::size_t probe_offset_ = 0, probe_bytes_ = 0;
  bool probe_ran_ = false;  // a tick graph ran since the epoch began
  CheckerFigures figures_;
  std::uint64_t failures_ = 0;
};

}  // namespace framestage::testing
