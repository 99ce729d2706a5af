// Shared test helper: many threads staging one frame at once, every destination byte checked.
//
// A pool of threads fills each frame together: each thread issues its own fixed list of items,
// a mix of frame_alloc + stage_for_upload (mirrored), upload, reserve_upload and readback. Odd
// threads issue theirs in shuffled order. Every byte a frame writes depends on the frame number
// (consecutive frames differ at every byte), so a lost, stale, misplaced or torn item shows as a
// wrong byte. After each frame the threads check, in parallel: the whole upload destination (the
// bytes no item covers must still hold their first contents), every mirrored span in the slot's
// device mirror, and every readback (which must see the previous frame's contents). The same code
// runs on the host backend (tests/test_concurrency.cpp) and on a GPU
// (tests/test_cuda_concurrency.cu); only how the test writes device memory at setup differs.
#pragma once

#include <framestage/backend.hpp>
#include <framestage/config.hpp>
#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/error.hpp>
#include <framestage/frame_arena.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace framestage::testing {

/// Writes `bytes` from host memory to device memory synchronously (test setup only).
using DeviceWriter = std::function<void(void* device_dst, const void* src, std::size_t bytes)>;

/// Byte `position` of the contents of frame `frame`. Frames that differ by less than 256 differ
/// at every byte (131 is odd), and a byte taken from another position differs too.
inline std::byte stress_pattern(std::uint64_t frame, std::uint64_t position) noexcept {
  return static_cast<std::byte>(position * 7 + (position >> 8) * 13 + (position >> 16) * 29 +
                                (position >> 24) * 53 + frame * 131 + 3);
}

inline void fill_stress_pattern(std::span<std::byte> bytes, std::uint64_t frame,
                                std::uint64_t position) noexcept {
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = stress_pattern(frame, position + i);
}

struct ConcurrentOptions {
  unsigned threads = 16;
  std::size_t items_per_thread = 2'000;
  std::uint64_t frames = 20;
  std::uint32_t buffering = 3;
  /// Grow policy from arenas and tables far too small for a frame, so the threads overflow
  /// together; fail policy with room for every item otherwise.
  bool tight_arenas = false;
  /// Upload and readback arenas large enough (8 MiB, 32,768 entries) for the threads to claim
  /// them in chunks (UploadArena's spare room), whatever the frame's size.
  bool chunked_arenas = false;
  std::uint64_t seed = 1;
};

/// What a run did; `bad_bytes` counts destination, mirror and readback bytes that were wrong.
struct ConcurrentFigures {
  std::uint64_t frames = 0;
  std::uint64_t items = 0;
  std::uint64_t mirrored = 0;
  std::uint64_t uploads = 0;
  std::uint64_t reserved_uploads = 0;
  std::uint64_t readbacks = 0;
  std::uint64_t bytes_checked = 0;
  std::uint64_t bad_bytes = 0;
  std::uint64_t arena_overflows = 0;
  double seconds = 0;

  void print(const char* label) const {
    std::printf(
        "[ figures  ] %s: %llu frames, %llu items (%llu mirrored, %llu uploads, %llu reserved, "
        "%llu readbacks), %llu bytes checked, %llu wrong, %llu overflowing frames, %.2f s\n",
        label, static_cast<unsigned long long>(frames), static_cast<unsigned long long>(items),
        static_cast<unsigned long long>(mirrored), static_cast<unsigned long long>(uploads),
        static_cast<unsigned long long>(reserved_uploads),
        static_cast<unsigned long long>(readbacks), static_cast<unsigned long long>(bytes_checked),
        static_cast<unsigned long long>(bad_bytes),
        static_cast<unsigned long long>(arena_overflows), seconds);
  }
};

/// Runs ConcurrentOptions::frames frames of `threads` x `items_per_thread` items on `backend`.
class ConcurrentWorkload {
 public:
  ConcurrentWorkload(Backend& backend, DeviceWriter write_device, ConcurrentOptions options)
      : backend_(backend), write_device_(std::move(write_device)), options_(options) {
    lay_out();
  }

  /// The coordinator settings the layout needs (or, with tight_arenas, far too small ones).
  [[nodiscard]] Config config() const {
    Config c;
    c.buffering = options_.buffering;
    c.slot_timeout_ms = 60'000;
    if (options_.tight_arenas) {
      c.overflow = OverflowPolicy::grow;
      c.arena_bytes = 4096;
      c.upload_arena_bytes = 4096;
      c.max_uploads_per_frame = 16;
      c.readback_arena_bytes = 4096;
      c.max_readbacks_per_frame = 16;
      c.trim_after_frames = 2;
      return c;
    }
    const auto page = [](std::size_t bytes) {
      return std::max<std::size_t>(4096, (bytes + 4095) / 4096 * 4096);
    };
    // Threads claim the arena in chunks: each may leave most of its last one unused, and up to
    // one item's bytes at the end of every chunk.
    c.arena_bytes = page(mirror_bytes_ + mirror_bytes_ / 8 +
                         options_.threads * 2 * FrameArena::kChunkBytes + (64 << 10));
    c.upload_arena_bytes = page(upload_bytes_ + 4096);
    c.max_uploads_per_frame = std::max<std::size_t>(upload_count_, 1);
    c.readback_arena_bytes = page(readback_bytes_ + 4096);
    c.max_readbacks_per_frame = std::max<std::size_t>(readback_count_, 1);
    if (options_.chunked_arenas) {
      constexpr std::size_t kBytes = std::size_t{8} << 20;
      constexpr std::size_t kEntries = 32768;
      c.upload_arena_bytes = std::max(c.upload_arena_bytes, kBytes);
      c.max_uploads_per_frame = std::max(c.max_uploads_per_frame, kEntries);
      c.readback_arena_bytes = std::max(c.readback_arena_bytes, kBytes);
      c.max_readbacks_per_frame = std::max(c.max_readbacks_per_frame, kEntries);
    }
    return c;
  }

  [[nodiscard]] std::size_t destination_bytes() const noexcept { return destination_bytes_; }

  /// Runs every frame; failures are reported through GoogleTest.
  ConcurrentFigures run() {
    ConcurrentFigures figures;
    Coordinator coordinator(config(), backend_);
    DeviceBuffer<std::byte> destination(backend_, destination_bytes_);
    {
      std::vector<std::byte> first(destination_bytes_);
      fill_stress_pattern(first, 0, 0);
      write_device_(destination.data(), first.data(), first.size());
    }
    destination_host_.assign(destination_bytes_, std::byte{0});
    workers_ = std::vector<Worker>(options_.threads);
    coordinator_ = &coordinator;
    destination_ = destination.data();
    stop_.store(false);

    std::barrier sync(static_cast<std::ptrdiff_t>(options_.threads) + 1);
    std::vector<std::thread> threads;
    threads.reserve(options_.threads);
    for (unsigned t = 0; t < options_.threads; ++t) {
      threads.emplace_back([this, t, &sync] { work(t, sync); });
    }
    const auto start = std::chrono::steady_clock::now();
    double next_progress = 10;
    for (std::uint64_t f = 1; f <= options_.frames; ++f) {
      frame_ = f;
      check_ = false;
      std::string failure;
      try {
        coordinator.begin_frame();
      } catch (const Error& e) {
        failure = std::string("begin_frame: ") + e.what();
      }
      if (!failure.empty()) {
        ADD_FAILURE() << "frame " << f << ": " << failure;
        break;
      }
      sync.arrive_and_wait();  // the threads fill the frame
      sync.arrive_and_wait();  // ... and are done
      for (const Worker& w : workers_) {
        if (!w.error.empty() && failure.empty()) failure = w.error;
      }
      bool overflowed = false;
      try {
        const FrameTicket ticket = coordinator.end_frame();
        ticket.wait(std::chrono::milliseconds{60'000});
        overflowed = coordinator.stats().last_frame.arena_overflowed;
        backend_.read_device(destination_host_.data(), destination.data(), destination_bytes_);
        read_mirrors(overflowed);
      } catch (const Error& e) {
        if (failure.empty()) failure = std::string("end of frame: ") + e.what();
      }
      check_ = failure.empty();
      sync.arrive_and_wait();  // the threads check the frame
      sync.arrive_and_wait();  // ... and are done
      if (!failure.empty()) {
        ADD_FAILURE() << "frame " << f << ": " << failure;
        break;
      }
      figures.frames = f;
      figures.arena_overflows += overflowed ? 1 : 0;
      // Where a slow run is, in its log (a hung one stops printing): every 10 seconds.
      if (const double s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          s >= next_progress) {
        std::printf("[ progress ] frame %llu of %llu after %.1f s\n",
                    static_cast<unsigned long long>(f),
                    static_cast<unsigned long long>(options_.frames), s);
        std::fflush(stdout);
        next_progress = s + 10;
      }
      for (Worker& w : workers_) {
        figures.items += w.mirrors.size() + w.uploads + w.reserved + w.readbacks.size();
        figures.mirrored += w.mirrors.size();
        figures.uploads += w.uploads;
        figures.reserved_uploads += w.reserved;
        figures.readbacks += w.readbacks.size();
        figures.bytes_checked += w.bytes_checked;
        figures.bad_bytes += w.bad_bytes;
        for (const std::string& m : w.mismatches)
          ADD_FAILURE() << "frame " << f << ": " << m;
      }
      if (figures.bad_bytes > 0) break;
    }
    stop_.store(true);
    sync.arrive_and_wait();  // releases the threads, which see stop_ and return
    for (std::thread& t : threads)
      t.join();
    figures.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    coordinator_ = nullptr;
    return figures;
  }

 private:
  enum class Kind : std::uint8_t { mirror, upload, reserve, readback };
  struct Item {
    Kind kind;
    std::uint8_t element_bytes;  // mirror: 1, 2, 4 or 8
    std::uint16_t bytes;
    std::uint64_t offset;  // destination (upload, reserve), source (readback), position (mirror)
  };
  struct MirrorRecord {
    FrameSpan<std::byte> span;
    const std::byte* device;
    std::uint64_t position;
  };
  struct ReadbackRecord {
    Readback<std::byte> readback;
    std::uint64_t source;
  };
  struct alignas(64) Worker {
    std::vector<MirrorRecord> mirrors;
    std::vector<ReadbackRecord> readbacks;
    std::uint64_t uploads = 0;
    std::uint64_t reserved = 0;
    std::uintptr_t mirror_low = std::numeric_limits<std::uintptr_t>::max();
    std::uintptr_t mirror_high = 0;
    std::string error;
    std::uint64_t bytes_checked = 0;
    std::uint64_t bad_bytes = 0;
    std::vector<std::string> mismatches;
  };

  static constexpr std::uint64_t kMirrorPositions = std::uint64_t{1} << 40;
  static constexpr std::size_t kMaxItemBytes = 512;

  void lay_out() {
    const unsigned threads = options_.threads;
    const std::size_t n = options_.items_per_thread;
    items_.assign(threads, {});
    region_begin_.assign(threads + 1, 0);
    for (unsigned t = 0; t < threads; ++t) {
      std::mt19937_64 rng(options_.seed * 1'000'003 + t);
      std::vector<Item>& list = items_[t];
      list.reserve(n);
      std::uint64_t cursor = 0;
      for (std::size_t i = 0; i < n; ++i) {
        Item item{static_cast<Kind>(rng() % 4), 1, 0, 0};
        std::size_t bytes = rng() % 64 == 0 ? 64 + rng() % (kMaxItemBytes - 63) : 1 + rng() % 48;
        switch (item.kind) {
          case Kind::mirror: {
            item.element_bytes = static_cast<std::uint8_t>(1u << (rng() % 4));
            bytes = std::max<std::size_t>(bytes / item.element_bytes, 1) * item.element_bytes;
            item.offset = kMirrorPositions + (std::uint64_t{t} * n + i) * kMaxItemBytes;
            mirror_bytes_ += (bytes + 15) / 16 * 16;
            break;
          }
          case Kind::upload:
          case Kind::reserve:
            cursor += rng() % 8;
            item.offset = cursor;  // relative to the thread's region until the regions are known
            cursor += bytes;
            upload_bytes_ += (bytes + 15) / 16 * 16;
            ++upload_count_;
            break;
          case Kind::readback:
            readback_bytes_ += (bytes + 15) / 16 * 16;
            ++readback_count_;
            break;
        }
        item.bytes = static_cast<std::uint16_t>(bytes);
        list.push_back(item);
      }
      if (t % 2 == 1) std::shuffle(list.begin(), list.end(), rng);
      region_begin_[t + 1] = region_begin_[t] + (cursor + 15) / 16 * 16;
    }
    destination_bytes_ = std::max<std::size_t>(region_begin_[threads], 4096);
    region_begin_[threads] = destination_bytes_;
    covered_.assign(destination_bytes_, 0);
    std::mt19937_64 rng(options_.seed);
    for (unsigned t = 0; t < threads; ++t) {
      for (Item& item : items_[t]) {
        if (item.kind == Kind::upload || item.kind == Kind::reserve) {
          item.offset += region_begin_[t];
          std::fill_n(covered_.begin() + static_cast<std::ptrdiff_t>(item.offset), item.bytes, 1);
        } else if (item.kind == Kind::readback) {
          item.offset = rng() % (destination_bytes_ - item.bytes + 1);
        }
      }
    }
  }

  // Before frame `frame`'s uploads, destination byte `offset` holds this.
  [[nodiscard]] std::byte destination_before(std::uint64_t frame, std::size_t offset) const {
    return stress_pattern(covered_[offset] != 0 ? frame - 1 : 0, offset);
  }

  template <class T>
  MirrorRecord mirror(std::size_t bytes, std::uint64_t position) {
    FrameSpan<T> span = coordinator_->frame_alloc<T>(bytes / sizeof(T));
    const std::span<std::byte> raw = std::as_writable_bytes(std::span<T>(span));
    fill_stress_pattern(raw, frame_, position);
    coordinator_->stage_for_upload(span);
    const FrameSpan<std::byte> as_bytes(raw, span.frame());
    return {as_bytes, coordinator_->device_ptr(as_bytes), position};
  }

  void fill(Worker& w, unsigned t) {
    std::array<std::byte, kMaxItemBytes> scratch{};
    for (const Item& item : items_[t]) {
      switch (item.kind) {
        case Kind::mirror: {
          MirrorRecord r{};
          switch (item.element_bytes) {
            case 1:
              r = mirror<std::uint8_t>(item.bytes, item.offset);
              break;
            case 2:
              r = mirror<std::uint16_t>(item.bytes, item.offset);
              break;
            case 4:
              r = mirror<std::uint32_t>(item.bytes, item.offset);
              break;
            default:
              r = mirror<std::uint64_t>(item.bytes, item.offset);
              break;
          }
          const auto address = reinterpret_cast<std::uintptr_t>(r.device);
          w.mirror_low = std::min(w.mirror_low, address);
          w.mirror_high = std::max(w.mirror_high, address + item.bytes);
          w.mirrors.push_back(r);
          break;
        }
        case Kind::upload: {
          const std::span<std::byte> bytes(scratch.data(), item.bytes);
          fill_stress_pattern(bytes, frame_, item.offset);
          coordinator_->upload<std::byte>(destination_ + item.offset, bytes);
          ++w.uploads;
          break;
        }
        case Kind::reserve: {
          FrameSpan<std::byte> bytes =
              coordinator_->reserve_upload<std::byte>(destination_ + item.offset, item.bytes);
          fill_stress_pattern(bytes, frame_, item.offset);
          ++w.reserved;
          break;
        }
        case Kind::readback:
          w.readbacks.push_back(
              {coordinator_->readback<std::byte>(destination_ + item.offset, item.bytes),
               item.offset});
          break;
      }
    }
  }

  // Owner thread, after the frame has landed: one read of the mirror range all spans lie in, or
  // (when the arena overflowed into separate blocks) none, and the threads read span by span.
  void read_mirrors(bool overflowed) {
    mirror_low_ = std::numeric_limits<std::uintptr_t>::max();
    std::uintptr_t high = 0;
    for (const Worker& w : workers_) {
      mirror_low_ = std::min(mirror_low_, w.mirror_low);
      high = std::max(high, w.mirror_high);
    }
    mirror_in_one_read_ = !overflowed && high > mirror_low_;
    if (!mirror_in_one_read_) return;
    mirror_host_.resize(high - mirror_low_);
    backend_.read_device(mirror_host_.data(), reinterpret_cast<const void*>(mirror_low_),
                         mirror_host_.size());
  }

  void mismatch(Worker& w, std::string what, std::size_t index, std::byte got, std::byte want) {
    ++w.bad_bytes;
    if (w.mismatches.size() < 5) {
      w.mismatches.push_back(what + " byte " + std::to_string(index) + ": got " +
                             std::to_string(static_cast<unsigned>(got)) + ", want " +
                             std::to_string(static_cast<unsigned>(want)));
    }
  }

  void check(Worker& w, unsigned t) {
    const std::uint64_t f = frame_;
    // The destination bytes of this thread's region (the last one takes the padding too).
    for (std::size_t i = region_begin_[t]; i < region_begin_[t + 1]; ++i) {
      const std::byte want = stress_pattern(covered_[i] != 0 ? f : 0, i);
      if (destination_host_[i] != want) mismatch(w, "destination", i, destination_host_[i], want);
    }
    w.bytes_checked += region_begin_[t + 1] - region_begin_[t];

    std::array<std::byte, kMaxItemBytes> scratch{};
    for (const MirrorRecord& r : w.mirrors) {
      const std::byte* got = nullptr;
      if (mirror_in_one_read_) {
        got = mirror_host_.data() + (reinterpret_cast<std::uintptr_t>(r.device) - mirror_low_);
      } else {
        backend_.read_device(scratch.data(), r.device, r.span.size());
        got = scratch.data();
      }
      for (std::size_t b = 0; b < r.span.size(); ++b) {
        const std::byte want = stress_pattern(f, r.position + b);
        if (got[b] != want) {
          mismatch(w, "mirror of item at position " + std::to_string(r.position), b, got[b], want);
        }
      }
      w.bytes_checked += r.span.size();
    }

    for (const ReadbackRecord& r : w.readbacks) {
      const std::span<const std::byte> got = r.readback.get(std::chrono::milliseconds{60'000});
      for (std::size_t b = 0; b < got.size(); ++b) {
        const std::byte want = destination_before(f, r.source + b);
        if (got[b] != want) {
          mismatch(w, "readback of destination offset " + std::to_string(r.source), b, got[b],
                   want);
        }
      }
      w.bytes_checked += got.size();
    }
  }

  void work(unsigned t, std::barrier<>& sync) {
    Worker& w = workers_[t];
    while (true) {
      sync.arrive_and_wait();
      if (stop_.load()) return;
      w.mirrors.clear();
      w.readbacks.clear();
      w.uploads = 0;
      w.reserved = 0;
      w.mirror_low = std::numeric_limits<std::uintptr_t>::max();
      w.mirror_high = 0;
      w.error.clear();
      w.bytes_checked = 0;
      w.bad_bytes = 0;
      w.mismatches.clear();
      try {
        fill(w, t);
      } catch (const std::exception& e) {
        w.error = "thread " + std::to_string(t) + ": " + e.what();
      }
      sync.arrive_and_wait();
      sync.arrive_and_wait();
      if (check_) {
        try {
          check(w, t);
        } catch (const std::exception& e) {
          w.mismatches.push_back("thread " + std::to_string(t) + " check: " + e.what());
          ++w.bad_bytes;
        }
      }
      sync.arrive_and_wait();
    }
  }

  Backend& backend_;
  DeviceWriter write_device_;
  ConcurrentOptions options_;
  std::vector<std::vector<Item>> items_;
  std::vector<std::size_t> region_begin_;
  std::vector<std::uint8_t> covered_;
  std::size_t destination_bytes_ = 0;
  std::size_t mirror_bytes_ = 0;
  std::size_t upload_bytes_ = 0;
  std::size_t upload_count_ = 0;
  std::size_t readback_bytes_ = 0;
  std::size_t readback_count_ = 0;

  // Per run; the barrier orders the owner's writes before the threads' reads and back.
  Coordinator* coordinator_ = nullptr;
  std::byte* destination_ = nullptr;
  std::uint64_t frame_ = 0;
  bool check_ = false;
  std::atomic<bool> stop_{false};
  std::vector<Worker> workers_;
  std::vector<std::byte> destination_host_;
  std::vector<std::byte> mirror_host_;
  std::uintptr_t mirror_low_ = 0;
  bool mirror_in_one_read_ = false;
};

}  // namespace framestage::testing
