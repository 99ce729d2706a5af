// Shared test helper: a soak of randomised frames, every destination checked every frame.
//
// Several coordinators share one backend, each with a random config (every upload strategy,
// buffering 1..4, fail or grow, arenas and tables from tiny to roomy, thresholds and chunk sizes
// drawn too). Each global frame picks a coordinator and draws the frame: 1..max_threads threads,
// 0..max_ops operations (uploads, reserved uploads, mirrored spans of 1- to 16-byte elements,
// staged whole, twice, in part or not at all, and readbacks), sizes from a byte to hundreds of
// KiB, overlapping uploads within a thread (issued last wins). A coordinator writes frame k
// into ring buffer k % buffering, so frames stay in flight while the host fills the next ones.
// Before a slot is reused (and at the end), its frame is checked against the host reference:
// the whole ring buffer (a checksum and every byte), every staged mirror byte and every
// readback, which must hold the contents from before the frame's own uploads. An allocation a
// fail-policy coordinator refuses must throw out_of_memory and change nothing. A readback of a
// reused slot must throw misuse. Runs on the host backend (tests/test_soak.cpp) and a GPU
// (tests/test_cuda_soak.cu).
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/error.hpp>

#include "concurrent_workload.hpp"  // DeviceWriter

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace framestage::testing {

struct SoakOptions {
  std::uint64_t frames = 300;
  std::uint64_t seed = 1;
  unsigned max_threads = 4;
  std::size_t coordinators = 4;
  std::size_t destination_bytes = 64 << 10;  ///< each ring buffer
  std::size_t max_ops = 400;                 ///< per frame
  std::size_t max_item_bytes = 96 << 10;     ///< the largest upload, span or readback
};

struct SoakFigures {
  std::uint64_t frames = 0;
  std::uint64_t ops = 0;
  std::uint64_t uploads = 0;
  std::uint64_t reserved_uploads = 0;
  std::uint64_t mirrored = 0;
  std::uint64_t readbacks = 0;
  std::uint64_t refused = 0;  ///< out_of_memory under the fail policy (and nothing changed)
  std::uint64_t uploaded_bytes = 0;
  std::uint64_t bytes_checked = 0;
  std::uint64_t destinations_checked = 0;
  std::uint64_t bad_bytes = 0;
  std::uint64_t stale_readbacks_refused = 0;
  std::uint64_t arena_growths = 0;
  std::uint64_t arena_trims = 0;
  std::uint64_t checksum = 0xcbf29ce484222325;  ///< FNV-1a of every destination checked
  double seconds = 0;

  void print(const char* label) const {
    std::printf(
        "[ figures  ] %s: %llu frames, %llu operations (%llu uploads, %llu reserved, %llu "
        "mirrored, %llu readbacks, %llu refused), %llu bytes uploaded, %llu destinations and "
        "%llu bytes checked, %llu wrong, %llu stale readbacks refused, %llu growths, %llu trims, "
        "checksum %016llx, %.2f s\n",
        label, static_cast<unsigned long long>(frames), static_cast<unsigned long long>(ops),
        static_cast<unsigned long long>(uploads), static_cast<unsigned long long>(reserved_uploads),
        static_cast<unsigned long long>(mirrored), static_cast<unsigned long long>(readbacks),
        static_cast<unsigned long long>(refused), static_cast<unsigned long long>(uploaded_bytes),
        static_cast<unsigned long long>(destinations_checked),
        static_cast<unsigned long long>(bytes_checked), static_cast<unsigned long long>(bad_bytes),
        static_cast<unsigned long long>(stale_readbacks_refused),
        static_cast<unsigned long long>(arena_growths),
        static_cast<unsigned long long>(arena_trims), static_cast<unsigned long long>(checksum),
        seconds);
  }
};

/// Fills `bytes` from `seed` (splitmix64), the same bytes every time.
inline void fill_from_seed(std::span<std::byte> bytes, std::uint64_t seed) noexcept {
  std::uint64_t state = seed;
  std::size_t i = 0;
  while (i < bytes.size()) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    z ^= z >> 31;
    const std::size_t n = std::min<std::size_t>(8, bytes.size() - i);
    std::memcpy(bytes.data() + i, &z, n);
    i += n;
  }
}

/// How many bytes of `got` differ from `want` (same size), and the offset of the first.
struct ByteMismatch {
  std::size_t count = 0;
  std::size_t first = 0;
};
inline ByteMismatch find_mismatch(std::span<const std::byte> got,
                                  std::span<const std::byte> want) noexcept {
  ByteMismatch m;
  if (std::memcmp(got.data(), want.data(), want.size()) == 0) return m;
  for (std::size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i] && m.count++ == 0) m.first = i;
  return m;
}

/// Calls `f.template operator()<T>()` with T an element of `element_bytes` (1, 2, 4 or 8: the
/// unsigned integer of that size; anything else: a 16-byte, 16-aligned element), so random
/// frames allocate arrays of every alignment a user's types have.
template <class F>
void with_element_type(std::size_t element_bytes, F&& f) {
  struct alignas(16) Wide {
    std::uint64_t low;
    std::uint64_t high;
  };
  switch (element_bytes) {
    case 1:
      f.template operator()<std::uint8_t>();
      break;
    case 2:
      f.template operator()<std::uint16_t>();
      break;
    case 4:
      f.template operator()<std::uint32_t>();
      break;
    case 8:
      f.template operator()<std::uint64_t>();
      break;
    default:
      f.template operator()<Wide>();
      break;
  }
}

/// Runs `body(t)` for t in [0, threads) on a fixed pool of threads, and waits for all of them.
class SoakThreads {
 public:
  explicit SoakThreads(unsigned threads) : sync_(static_cast<std::ptrdiff_t>(threads) + 1) {
    for (unsigned t = 0; t < threads; ++t) {
      threads_.emplace_back([this, t] {
        while (true) {
          sync_.arrive_and_wait();
          if (stop_) return;
          (*body_)(t);
          sync_.arrive_and_wait();
        }
      });
    }
  }
  ~SoakThreads() {
    stop_ = true;
    sync_.arrive_and_wait();
    for (std::thread& t : threads_)
      t.join();
  }
  SoakThreads(const SoakThreads&) = delete;
  SoakThreads& operator=(const SoakThreads&) = delete;

  void run(const std::function<void(unsigned)>& body) {
    body_ = &body;
    sync_.arrive_and_wait();
    sync_.arrive_and_wait();
  }

 private:
  std::barrier<> sync_;
  std::vector<std::thread> threads_;
  const std::function<void(unsigned)>* body_ = nullptr;
  bool stop_ = false;  // written before the barrier the threads then pass
};

class Soak {
 public:
  Soak(Backend& backend, DeviceWriter write_device, SoakOptions options)
      : backend_(backend), write_device_(std::move(write_device)), options_(options) {}

  /// The config of coordinator `k`, drawn from the seed (the first four take the four
  /// strategies and both policies).
  [[nodiscard]] static Config draw_config(std::size_t k, std::mt19937_64& rng) {
    Config c;
    c.buffering = 1 + static_cast<std::uint32_t>(rng() % 4);
    c.strategy = static_cast<UploadStrategy>(k < 4 ? k : rng() % 4);
    c.overflow =
        (k < 2 ? k % 2 == 1 : rng() % 2 == 1) ? OverflowPolicy::grow : OverflowPolicy::fail;
    c.arena_bytes = std::size_t{4096} << (rng() % 7);
    c.upload_arena_bytes = std::size_t{4096} << (rng() % 6);
    c.max_uploads_per_frame = std::size_t{16} << (rng() % 7);
    c.readback_arena_bytes = std::size_t{4096} << (rng() % 6);
    c.max_readbacks_per_frame = std::size_t{16} << (rng() % 6);
    c.direct_copy_threshold_bytes = std::size_t{256} << (rng() % 10);
    c.zero_copy_max_bytes = rng() % 3 == 0 ? 0 : std::size_t{1024} << (rng() % 7);
    c.merge_gap_bytes = rng() % 2 == 0 ? 0 : std::size_t{64} << (rng() % 10);
    c.pipeline_chunk_bytes = std::size_t{4096} << (rng() % 5);
    c.trim_after_frames = 1 + static_cast<std::uint32_t>(rng() % 8);
    c.slot_timeout_ms = 60'000;
    return c;
  }

  SoakFigures run() {
    const auto start = std::chrono::steady_clock::now();
    std::mt19937_64 rng(options_.seed);
    lanes_.clear();
    for (std::size_t k = 0; k < options_.coordinators; ++k) {
      auto lane = std::make_unique<Lane>();
      lane->config = draw_config(k, rng);
      std::printf(
          "[ soak     ] coordinator %zu: buffering %u, strategy %s, overflow %s, arena %zu, "
          "uploads %zu B / %zu, readbacks %zu B / %zu, direct from %zu B\n",
          k, lane->config.buffering, std::string(to_string(lane->config.strategy)).c_str(),
          std::string(to_string(lane->config.overflow)).c_str(), lane->config.arena_bytes,
          lane->config.upload_arena_bytes, lane->config.max_uploads_per_frame,
          lane->config.readback_arena_bytes, lane->config.max_readbacks_per_frame,
          lane->config.direct_copy_threshold_bytes);
      lane->coordinator = std::make_unique<Coordinator>(lane->config, backend_);
      for (std::uint32_t r = 0; r < lane->config.buffering; ++r) {
        lane->ring.emplace_back(backend_, options_.destination_bytes);
        std::vector<std::byte> first(options_.destination_bytes);
        fill_from_seed(first, rng());
        write_device_(lane->ring.back().data(), first.data(), first.size());
        lane->reference.push_back(std::move(first));
      }
      lanes_.push_back(std::move(lane));
    }
    SoakThreads threads(options_.max_threads);
    for (std::uint64_t g = 1; g <= options_.frames && !stopped(); ++g) {
      Lane& lane = *lanes_[rng() % lanes_.size()];
      one_frame(lane, rng, threads);
    }
    for (auto& lane : lanes_) {
      while (!lane->pending.empty() && !stopped()) {
        check(*lane, lane->pending.front());
        lane->pending.pop_front();
      }
      figures_.arena_growths += lane->coordinator->stats().arena_growths;
      figures_.arena_trims += lane->coordinator->stats().arena_trims;
    }
    lanes_.clear();
    figures_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return figures_;
  }

 private:
  enum class Kind : std::uint8_t { upload, reserve, mirror, readback };
  enum class Staging : std::uint8_t { whole, twice, first_half, none };
  struct Op {
    Kind kind = Kind::upload;
    std::uint8_t element_bytes = 1;  // mirror
    Staging staging = Staging::whole;
    std::size_t ring = 0;    // readback source
    std::size_t offset = 0;  // destination or readback source
    std::size_t bytes = 0;
    std::uint64_t seed = 0;
    std::vector<std::byte> want;  // readback: the source's contents before this frame
    // Results, written by the thread that runs the op.
    bool accepted = false;
    FrameSpan<std::byte> span;  // mirror
    std::size_t staged_bytes = 0;
    Readback<std::byte> readback;
  };
  struct MirrorCheck {
    FrameSpan<std::byte> span;
    std::size_t staged_bytes;
    std::uint64_t seed;
  };
  struct ReadbackCheck {
    Readback<std::byte> readback;
    std::vector<std::byte> want;
  };
  struct Pending {
    std::uint64_t frame = 0;
    std::size_t ring = 0;
    FrameTicket ticket;
    bool overflowed = false;
    std::vector<MirrorCheck> mirrors;
    std::vector<ReadbackCheck> readbacks;
  };
  struct Lane {
    Config config;
    std::vector<DeviceBuffer<std::byte>> ring;
    std::vector<std::vector<std::byte>> reference;
    // After the buffers, so it (waiting for its frames in flight) is destroyed before them.
    std::unique_ptr<Coordinator> coordinator;
    std::deque<Pending> pending;
    std::uint64_t frames = 0;
    std::optional<Readback<std::byte>> stale;  // its slot is reused by the next begin_frame
  };

  [[nodiscard]] bool stopped() const { return figures_.bad_bytes > 0 || failures_ > 0; }

  void fail(const std::string& message) {
    ++failures_;
    ADD_FAILURE() << message;
  }

  std::size_t draw_size(std::mt19937_64& rng, std::size_t limit) const {
    const std::uint64_t r = rng() % 100;
    std::size_t bytes = 0;
    if (r < 70) {
      bytes = 1 + rng() % 64;
    } else if (r < 96) {
      bytes = 65 + rng() % 2000;
    } else {
      bytes = 2048 + rng() % options_.max_item_bytes;
    }
    return std::min(bytes, limit);
  }

  void one_frame(Lane& lane, std::mt19937_64& rng, SoakThreads& threads) {
    Coordinator& c = *lane.coordinator;
    const std::uint32_t depth = lane.config.buffering;
    const std::uint64_t k = lane.frames + 1;
    const std::size_t ring = k % depth;
    const std::size_t destination = options_.destination_bytes;
    // The slot and ring buffer this frame takes were last used `depth` frames ago: check that
    // frame while its readbacks and mirror are still there.
    while (!lane.pending.empty() && lane.pending.front().frame + depth <= k) {
      check(lane, lane.pending.front());
      lane.pending.pop_front();
      if (stopped()) return;
    }
    try {
      c.begin_frame();
    } catch (const Error& e) {
      fail(std::string("begin_frame: ") + e.what());
      return;
    }
    lane.frames = k;
    if (lane.stale) {
      try {
        (void)lane.stale->ready();
        fail("a readback whose slot was reused did not throw");
      } catch (const Error& e) {
        if (e.category() != ErrorCategory::misuse ||
            std::string(e.what()).find("is gone: its slot was reused") == std::string::npos) {
          fail(std::string("stale readback: ") + e.what());
        }
        ++figures_.stale_readbacks_refused;
      }
      lane.stale.reset();
    }

    // Draw the frame: threads, their disjoint write ranges, and the operations.
    const unsigned thread_count = 1 + static_cast<unsigned>(rng() % options_.max_threads);
    std::vector<std::size_t> cuts{0, destination};
    for (unsigned t = 1; t < thread_count; ++t)
      cuts.push_back(rng() % (destination + 1));
    std::sort(cuts.begin(), cuts.end());
    const auto op_count =
        static_cast<std::size_t>(std::exp(std::uniform_real_distribution<double>(
                                     0, std::log(static_cast<double>(options_.max_ops) + 1))(rng)) -
                                 1);
    std::array<std::uint64_t, 4> weights{};
    for (auto& w : weights)
      w = rng() % 4;
    if (weights[0] + weights[1] + weights[2] + weights[3] == 0) weights[0] = 1;
    const std::uint64_t weight_total = weights[0] + weights[1] + weights[2] + weights[3];
    const std::size_t previous_ring = (k - 1) % depth;

    std::vector<std::vector<Op>> ops(thread_count);
    for (std::size_t i = 0; i < op_count; ++i) {
      const auto t = static_cast<unsigned>(rng() % thread_count);
      std::uint64_t pick = rng() % weight_total;
      std::size_t kind = 0;
      while (pick >= weights[kind]) {
        pick -= weights[kind];
        ++kind;
      }
      Op op;
      op.kind = static_cast<Kind>(kind);
      op.seed = rng();
      const std::size_t begin = cuts[t];
      const std::size_t length = cuts[t + 1] - cuts[t];
      if ((op.kind == Kind::upload || op.kind == Kind::reserve) && length == 0) {
        op.kind = Kind::readback;
      }
      switch (op.kind) {
        case Kind::upload:
        case Kind::reserve:
          op.bytes = draw_size(rng, length);
          op.offset = begin + rng() % (length - op.bytes + 1);
          break;
        case Kind::mirror:
          op.element_bytes = static_cast<std::uint8_t>(1u << (rng() % 5));
          op.bytes =
              std::max<std::size_t>(draw_size(rng, options_.max_item_bytes) / op.element_bytes, 1) *
              op.element_bytes;
          op.staging = static_cast<Staging>(rng() % 4);
          break;
        case Kind::readback:
          op.ring = rng() % 2 == 0 ? ring : previous_ring;
          op.bytes = draw_size(rng, destination);
          op.offset = rng() % (destination - op.bytes + 1);
          // The reference is written after the threads: this is the contents before the
          // frame's own uploads, which is what the readback must return.
          op.want.assign(
              lane.reference[op.ring].begin() + static_cast<std::ptrdiff_t>(op.offset),
              lane.reference[op.ring].begin() + static_cast<std::ptrdiff_t>(op.offset + op.bytes));
          break;
      }
      ops[t].push_back(op);
    }

    // Fill it from the threads.
    std::vector<std::string> errors(thread_count);
    std::vector<std::uint64_t> refused(thread_count, 0);
    const std::function<void(unsigned)> body = [&](unsigned t) {
      if (t >= thread_count) return;
      for (Op& op : ops[t]) {
        try {
          run_op(lane, ring, op);
        } catch (const Error& e) {
          if (e.category() == ErrorCategory::out_of_memory &&
              lane.config.overflow == OverflowPolicy::fail) {
            ++refused[t];
            continue;
          }
          errors[t] = std::string("thread ") + std::to_string(t) + ": " + e.what();
          return;
        }
      }
    };
    threads.run(body);
    for (const std::string& e : errors) {
      if (!e.empty()) {
        fail("frame " + std::to_string(k) + ": " + e);
        return;
      }
    }

    Pending p;
    p.frame = k;
    p.ring = ring;
    try {
      p.ticket = c.end_frame();
    } catch (const Error& e) {
      // Even overlaps that the full arena cannot combine go out (as ordered copies): an
      // end_frame that throws here is a bug.
      fail("frame " + std::to_string(k) + ": end_frame: " + e.what());
      return;
    }
    p.overflowed = c.stats().last_frame.arena_overflowed;
    ++figures_.frames;
    // The frame's writes, in issue order per thread (threads write disjoint ranges).
    for (unsigned t = 0; t < thread_count; ++t) {
      figures_.refused += refused[t];
      for (Op& op : ops[t]) {
        ++figures_.ops;
        if (!op.accepted) continue;
        switch (op.kind) {
          case Kind::upload:
          case Kind::reserve: {
            std::span<std::byte> at(lane.reference[ring].data() + op.offset, op.bytes);
            fill_from_seed(at, op.seed);
            figures_.uploaded_bytes += op.bytes;
            ++(op.kind == Kind::upload ? figures_.uploads : figures_.reserved_uploads);
            break;
          }
          case Kind::mirror:
            ++figures_.mirrored;
            if (op.staged_bytes > 0) p.mirrors.push_back({op.span, op.staged_bytes, op.seed});
            break;
          case Kind::readback:
            ++figures_.readbacks;
            p.readbacks.push_back({op.readback, std::move(op.want)});
            break;
        }
      }
    }
    lane.pending.push_back(std::move(p));

    // Now and then the owner waits or polls early, as a real loop might.
    const std::uint64_t r = rng() % 16;
    try {
      if (r == 0) lane.pending.back().ticket.wait(std::chrono::milliseconds{60'000});
      if (r == 1) (void)lane.pending.back().ticket.ready();
      if (r == 2) c.synchronize();
    } catch (const Error& e) {
      fail(std::string("waiting early: ") + e.what());
    }
  }

  template <class T>
  void mirror(Coordinator& c, Op& op) {
    FrameSpan<T> span = c.frame_alloc<T>(op.bytes / sizeof(T));
    const std::span<std::byte> raw = std::as_writable_bytes(std::span<T>(span));
    fill_from_seed(raw, op.seed);
    op.span = FrameSpan<std::byte>(raw, span.frame());
    op.accepted = true;
    switch (op.staging) {
      case Staging::whole:
        c.stage_for_upload(span);
        op.staged_bytes = raw.size();
        break;
      case Staging::twice:
        c.stage_for_upload(span);
        c.stage_for_upload(span);
        op.staged_bytes = raw.size();
        break;
      case Staging::first_half: {
        const std::size_t half = span.size() / 2;
        c.stage_for_upload(FrameSpan<T>(std::span<T>(span).first(half), span.frame()));
        op.staged_bytes = half * sizeof(T);
        break;
      }
      case Staging::none:
        break;
    }
  }

  void run_op(Lane& lane, std::size_t ring, Op& op) {
    Coordinator& c = *lane.coordinator;
    std::byte* destination = lane.ring[ring].data();
    switch (op.kind) {
      case Kind::upload: {
        std::vector<std::byte> item(op.bytes);
        fill_from_seed(item, op.seed);
        c.upload<std::byte>(destination + op.offset, item);
        op.accepted = true;
        break;
      }
      case Kind::reserve: {
        FrameSpan<std::byte> span = c.reserve_upload<std::byte>(destination + op.offset, op.bytes);
        fill_from_seed(span, op.seed);
        op.accepted = true;
        break;
      }
      case Kind::mirror:
        with_element_type(op.element_bytes, [&]<class T>() { mirror<T>(c, op); });
        break;
      case Kind::readback: {
        op.readback = c.readback<std::byte>(lane.ring[op.ring].data() + op.offset, op.bytes);
        op.accepted = true;
        break;
      }
    }
  }

  void compare(const char* what, std::uint64_t frame, std::span<const std::byte> got,
               std::span<const std::byte> want) {
    figures_.bytes_checked += want.size();
    const auto [differing, first] = find_mismatch(got, want);
    if (differing == 0) return;
    figures_.bad_bytes += differing;
    ADD_FAILURE() << what << " of frame " << frame << ": " << differing << " of " << want.size()
                  << " bytes wrong, the first at " << first << " (got "
                  << static_cast<unsigned>(got[first]) << ", want "
                  << static_cast<unsigned>(want[first]) << ")";
  }

  void check(Lane& lane, Pending& p) {
    try {
      p.ticket.wait(std::chrono::milliseconds{60'000});
      std::vector<std::byte> got(options_.destination_bytes);
      backend_.read_device(got.data(), lane.ring[p.ring].data(), got.size());
      const std::vector<std::byte>& want = lane.reference[p.ring];
      std::uint64_t got_sum = figures_.checksum;
      std::uint64_t want_sum = figures_.checksum;
      for (std::size_t i = 0; i < got.size(); ++i) {
        got_sum = (got_sum ^ static_cast<std::uint64_t>(got[i])) * 0x100000001b3;
        want_sum = (want_sum ^ static_cast<std::uint64_t>(want[i])) * 0x100000001b3;
      }
      if (got_sum != want_sum) {
        ADD_FAILURE() << "checksum of ring buffer " << p.ring << " after frame " << p.frame
                      << " differs from the host reference's";
      }
      figures_.checksum = want_sum;
      ++figures_.destinations_checked;
      compare("destination", p.frame, got, want);

      // Mirrors: one read of the range they lie in, unless overflow blocks split the arena.
      std::uintptr_t low = std::numeric_limits<std::uintptr_t>::max();
      std::uintptr_t high = 0;
      std::vector<const std::byte*> device(p.mirrors.size());
      for (std::size_t i = 0; i < p.mirrors.size(); ++i) {
        device[i] = lane.coordinator->device_ptr(p.mirrors[i].span);
        low = std::min(low, reinterpret_cast<std::uintptr_t>(device[i]));
        high =
            std::max(high, reinterpret_cast<std::uintptr_t>(device[i]) + p.mirrors[i].staged_bytes);
      }
      std::vector<std::byte> range;
      if (!p.overflowed && high > low) {
        range.resize(high - low);
        backend_.read_device(range.data(), reinterpret_cast<const void*>(low), range.size());
      }
      std::vector<std::byte> one;
      std::vector<std::byte> expected;
      for (std::size_t i = 0; i < p.mirrors.size(); ++i) {
        const MirrorCheck& m = p.mirrors[i];
        expected.resize(m.span.size());
        fill_from_seed(expected, m.seed);
        const std::byte* at = nullptr;
        if (!range.empty()) {
          at = range.data() + (reinterpret_cast<std::uintptr_t>(device[i]) - low);
        } else {
          one.resize(m.staged_bytes);
          backend_.read_device(one.data(), device[i], m.staged_bytes);
          at = one.data();
        }
        compare("mirror", p.frame, {at, m.staged_bytes},
                std::span<const std::byte>(expected).first(m.staged_bytes));
      }
      for (const ReadbackCheck& r : p.readbacks) {
        compare("readback", p.frame, r.readback.get(std::chrono::milliseconds{60'000}), r.want);
      }
      if (!p.readbacks.empty()) lane.stale = p.readbacks.front().readback;
    } catch (const Error& e) {
      fail("checking frame " + std::to_string(p.frame) + ": " + e.what());
    }
  }

  Backend& backend_;
  DeviceWriter write_device_;
  SoakOptions options_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  SoakFigures figures_;
  std::uint64_t failures_ = 0;
};

}  // namespace framestage::testing
