// Host cost per item of the staging calls, on 1, 2, 4, 8 and 16 threads (Google Benchmark).
//
// One iteration is one frame's staging phase: every thread issues its items of kItemBytes between
// two barriers, and only that phase is timed: the wall time from the barrier that releases the
// threads to the last one's finish (manual time). The threads wait for the release spinning, not
// asleep: woken one by one from a futex, the last of 16 threads started up to a few hundred
// microseconds after the first, which the phase (about 0.5 ms) counted as if the calls had been
// slow. begin_frame, end_frame and waiting for the frame happen outside it. items_per_second
// counts every thread's items, so items_per_second at N threads over that at 1 thread is the
// scaling. Benchmarks:
//   BM_FrameAllocStage  frame_alloc + write + stage_for_upload
//   BM_Upload           upload (the copy into pinned memory included)
//   BM_ReserveUpload    reserve_upload + write in place
//   BM_Readback         readback
//   BM_CopyBaseline     the same bytes written to pinned memory with no coordinator (the floor)
//   BM_CopyBaselineDma  the same bytes written into two pinned buffers in turn, each sent to the
//                       device in one copy after its frame: the floor with a real frame's memory
//                       traffic (what frame_alloc + stage_for_upload amounts to, as 2 slots)
//   BM_CoreBaseline     15-35 ns of arithmetic per item in registers, touching no memory: how
//                       far the machine's cores themselves scale (vCPUs that share physical
//                       cores, or that the hypervisor takes away, show here with no memory
//                       traffic mixed in)
// After the runs a table gives items/s, ns per item and the scaling from 1 thread for each (the
// median over --benchmark_repetitions, and the lowest and highest scaling among them), and how
// busy the threads were: each thread's time in its calls over the phase's, averaged. Scaling
// lost with busy near 1 is lost in the calls; with busy well below 1, to late starts or to one
// slow thread. `late` is the part of the phase lost to late starts (a thread's start after the
// first one's, over the phase, averaged), and the rest, 1 - busy - late, to waiting for the
// slowest. `in calls` is the scaling of the threads' own time in their calls (items/s over
// busy): what the calls cost with that many threads, whatever the threads' timing.
//
// How much each thread issues (flags of this program, before Google Benchmark's own; one of the
// first two):
//   --frame_items=N       the frame has N items, split evenly between the threads: the same
//                         frame, and the same memory, at every thread count (the default, with
//                         524,288 items: the scaling issue 7 asks for)
//   --items_per_thread=N  every thread issues N items: the frame grows with the threads, and so
//                         does the pinned memory it writes
//   --pin                 thread i of a run runs on CPU i only (where i < the CPUs the process
//                         may use), so that no two share a CPU and none migrates
// The backend is make_default_backend(): CUDA (real pinned memory) on a GPU machine.
//
//   ./build/framestage_micro                                   # everything
//   ./build/framestage_micro --benchmark_filter=BM_Upload      # one benchmark
//   ./build/framestage_micro --items_per_thread=4096 --benchmark_repetitions=5
//   ./build/framestage_micro --pin --benchmark_filter='BM_(Core|Upload)'
#include <framestage/framestage.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sched.h>

namespace {

using framestage::Config;
using framestage::Coordinator;
using framestage::DeviceBuffer;

constexpr std::size_t kItemBytes = 32;
constexpr int kMaxThreads = 16;
using Clock = std::chrono::steady_clock;

/// How the items of a frame are shared between the threads (set from the command line).
struct Workload {
  std::size_t frame_items = 524288;  // when not 0: a fixed frame, split between the threads
  std::size_t items_per_thread = 0;  // otherwise

  /// The items of a frame issued by `threads` threads.
  [[nodiscard]] std::size_t frame_total(std::size_t threads) const {
    return frame_items != 0 ? frame_items : items_per_thread * threads;
  }
  /// The items [first, first + count) that `thread` of `threads` issues.
  [[nodiscard]] std::pair<std::size_t, std::size_t> share(std::size_t thread,
                                                          std::size_t threads) const {
    if (frame_items == 0) return {thread * items_per_thread, items_per_thread};
    const std::size_t first = frame_items * thread / threads;
    return {first, frame_items * (thread + 1) / threads - first};
  }
};
Workload workload;
/// --pin: the CPUs the process may use, in order; thread i of a run is pinned to the i-th.
std::optional<std::vector<int>> pin_cpus;

/// Pins the calling thread to the `thread`-th CPU of pin_cpus, if --pin was given and there is
/// one; says so once if there are fewer CPUs than threads.
void pin_this_thread(std::size_t thread) {
  if (!pin_cpus) return;
  if (thread >= pin_cpus->size()) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      std::fprintf(stderr, "framestage_micro: --pin: %zu CPUs for thread %zu; it is not pinned\n",
                   pin_cpus->size(), thread);
    }
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET((*pin_cpus)[thread], &set);
  if (const int error = pthread_setaffinity_np(pthread_self(), sizeof set, &set); error != 0) {
    std::fprintf(stderr, "framestage_micro: --pin: CPU %d: %s\n", (*pin_cpus)[thread],
                 std::strerror(error));
  }
}

/// The CPUs this process may run on, lowest first.
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  return cpus;
}

/// Releases `threads` threads at once: each spins (yielding) until the last has arrived.
class SpinStart {
 public:
  explicit SpinStart(int threads) : threads_(threads) {}
  void arrive_and_wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == threads_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    // yield, not a bare spin: with a core per thread it returns at once, and where threads
    // outnumber cores (CI's 2) the spinners let the late ones run.
    while (generation_.load(std::memory_order_acquire) == generation)
      std::this_thread::yield();
  }

 private:
  const int threads_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> generation_{0};
};

/// What one benchmark run shares between its threads; made by Setup before they start.
struct Shared {
  explicit Shared(int threads)
      : sync(threads),
        start(threads),
        started(static_cast<std::size_t>(threads)),
        finished(static_cast<std::size_t>(threads)) {
    auto made = framestage::make_default_backend();
    backend = std::move(made.backend);
    Config c;
    c.buffering = 2;
    const std::size_t items = workload.frame_total(kMaxThreads);  // sized for the most threads
    c.arena_bytes = items * 48 + (std::size_t{kMaxThreads} << 16);
    c.upload_arena_bytes = items * kItemBytes * 2;
    c.max_uploads_per_frame = items;
    c.readback_arena_bytes = items * kItemBytes * 2;
    c.max_readbacks_per_frame = items;
    coordinator = std::make_unique<Coordinator>(c, *backend);
    destination = DeviceBuffer<std::byte>(*backend, items * kItemBytes);
    baseline =
        framestage::MemoryBlock(*backend, framestage::MemoryKind::pinned, items * kItemBytes);
    for (auto& frame : frames)
      frame = framestage::MemoryBlock(*backend, framestage::MemoryKind::pinned, items * kItemBytes);
    stream = framestage::Stream(*backend);
    source.resize(items * kItemBytes);
    for (std::size_t i = 0; i < source.size(); ++i)
      source[i] = static_cast<std::byte>(i / kItemBytes);
  }

  std::unique_ptr<framestage::Backend> backend;
  std::unique_ptr<Coordinator> coordinator;
  DeviceBuffer<std::byte> destination;
  framestage::MemoryBlock baseline;
  std::array<framestage::MemoryBlock, 2> frames;  // BM_CopyBaselineDma's, used in turn
  std::size_t frame_parity = 0;
  framestage::Stream stream;
  std::vector<std::byte> source;  // BM_Upload's items, in ordinary host memory
  std::barrier<> sync;
  SpinStart start;
  std::vector<Clock::time_point> started;
  std::vector<Clock::time_point> finished;
  double phase_seconds = 0;
  double busy_sum = 0;           // over the iterations: mean thread busy time / phase time
  double late_sum = 0;           // over the iterations: mean start after the first / phase time
  double end_frame_seconds = 0;  // over the iterations: the end_frame() calls
};

std::unique_ptr<Shared> shared;

void teardown(const benchmark::State&) {
  shared.reset();
}

enum class Kind {
  frame_alloc_stage,
  upload,
  reserve_upload,
  readback,
  baseline,
  baseline_dma,
  core_baseline
};

/// No coordinator frame: the floors.
constexpr bool is_floor(Kind kind) {
  return kind == Kind::baseline || kind == Kind::baseline_dma || kind == Kind::core_baseline;
}

/// BM_CoreBaseline's item: multiply-xorshift rounds in registers. Items do not depend on each
/// other, so a core overlaps them as it overlaps calls: a core shared with another vCPU shows.
inline std::uint64_t mix(std::uint64_t word) {
  for (int round = 0; round < 24; ++round) {
    word *= 0x9E3779B97F4A7C15ULL;
    word ^= word >> 29;
  }
  return word;
}

// An item's contents are computed where they are written, as a simulation writes its state: four
// words, kept in registers. (Building them in a byte array first made every item wait on a
// store-forwarding stall of about 4 ns, which all threads then paid in parallel.) upload()
// copies from the caller's memory, so it reads its items from `source`, filled before timing.
template <Kind kKind>
void issue_items(std::size_t first, std::size_t count) {
  Coordinator& c = *shared->coordinator;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t at = (first + i) * kItemBytes;
    const std::uint64_t word = first + i;
    const std::array<std::uint64_t, kItemBytes / 8> item{word, word, word, word};
    if constexpr (kKind == Kind::frame_alloc_stage) {
      auto span = c.frame_alloc<std::byte>(kItemBytes);
      std::memcpy(span.data(), item.data(), kItemBytes);
      c.stage_for_upload(span);
    } else if constexpr (kKind == Kind::upload) {
      c.upload<std::byte>(shared->destination.data() + at,
                          std::span<const std::byte>(shared->source.data() + at, kItemBytes));
    } else if constexpr (kKind == Kind::reserve_upload) {
      auto span = c.reserve_upload<std::byte>(shared->destination.data() + at, kItemBytes);
      std::memcpy(span.data(), item.data(), kItemBytes);
    } else if constexpr (kKind == Kind::readback) {
      benchmark::DoNotOptimize(c.readback<std::byte>(shared->destination.data() + at, kItemBytes));
    } else if constexpr (kKind == Kind::baseline) {
      std::memcpy(shared->baseline.data() + at, item.data(), kItemBytes);
      benchmark::ClobberMemory();
    } else if constexpr (kKind == Kind::core_baseline) {
      benchmark::DoNotOptimize(mix(item[0]));
    } else {
      std::memcpy(shared->frames[shared->frame_parity].data() + at, item.data(), kItemBytes);
      benchmark::ClobberMemory();
    }
  }
}

/// What thread 0 does between frames, after the timed phase.
template <Kind kKind>
void close_frame(Shared& s, std::size_t threads) {
  if constexpr (kKind == Kind::baseline || kKind == Kind::core_baseline) {
    return;
  } else if constexpr (kKind == Kind::baseline_dma) {
    s.backend->copy_async(s.destination.data(), s.frames[s.frame_parity].data(),
                          workload.frame_total(threads) * kItemBytes, s.stream.view());
    s.backend->synchronize(s.stream.view());
    s.frame_parity ^= 1;
  } else {
    const auto began = Clock::now();
    const framestage::FrameTicket ticket = s.coordinator->end_frame();
    s.end_frame_seconds += std::chrono::duration<double>(Clock::now() - began).count();
    ticket.wait();
  }
}

/// Makes the run's coordinator and buffers, then fills and closes one frame per slot from this
/// thread, so that the timed frames find every page already touched (the host backend's memory
/// is faulted in on first use) and every arena at its steady size.
template <Kind kKind>
void setup(const benchmark::State& state) {
  shared = std::make_unique<Shared>(state.threads());
  const auto threads = static_cast<std::size_t>(state.threads());
  for (int frame = 0; frame < 2; ++frame) {
    if (!is_floor(kKind)) shared->coordinator->begin_frame();
    issue_items<kKind>(0, workload.frame_total(threads));
    close_frame<kKind>(*shared, threads);
  }
  shared->end_frame_seconds = 0;
}

template <Kind kKind>
void staging(benchmark::State& state) {
  const auto thread = static_cast<std::size_t>(state.thread_index());
  const auto [first, count] = workload.share(thread, static_cast<std::size_t>(state.threads()));
  Shared& s = *shared;
  pin_this_thread(thread);
  for (auto _ : state) {
    if (thread == 0 && !is_floor(kKind)) s.coordinator->begin_frame();
    s.sync.arrive_and_wait();   // the frame is open
    s.start.arrive_and_wait();  // every thread running: go
    s.started[thread] = Clock::now();
    issue_items<kKind>(first, count);
    s.finished[thread] = Clock::now();
    s.sync.arrive_and_wait();  // every thread is done
    if (thread == 0) {
      const auto began = *std::min_element(s.started.begin(), s.started.end());
      const auto last = *std::max_element(s.finished.begin(), s.finished.end());
      s.phase_seconds = std::chrono::duration<double>(last - began).count();
      double busy = 0;
      double late = 0;
      for (std::size_t t = 0; t < s.started.size(); ++t) {
        busy += std::chrono::duration<double>(s.finished[t] - s.started[t]).count();
        late += std::chrono::duration<double>(s.started[t] - began).count();
      }
      const double per_thread_phase = static_cast<double>(s.started.size()) * s.phase_seconds;
      s.busy_sum += busy / per_thread_phase;
      s.late_sum += late / per_thread_phase;
      close_frame<kKind>(s, static_cast<std::size_t>(state.threads()));
    }
    s.sync.arrive_and_wait();  // the frame is closed, and its phase time known
    state.SetIterationTime(s.phase_seconds);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * count));
  // Set by one thread only (Google Benchmark sums counters over the threads).
  if (thread == 0) {
    const auto frames = static_cast<double>(state.iterations());
    const std::size_t items = workload.frame_total(s.started.size());
    state.counters["busy"] = s.busy_sum / frames;
    state.counters["late"] = s.late_sum / frames;
    state.counters["end_frame_ns"] =
        s.end_frame_seconds * 1e9 / frames / static_cast<double>(items);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * count * kItemBytes));
}

// Defines the benchmark `fn` as staging<kind> and registers it on 1 to 16 threads.
#define FRAMESTAGE_STAGING_BENCHMARK(fn, kind) \
  void fn(benchmark::State& state) {           \
    staging<kind>(state);                      \
  }                                            \
  BENCHMARK(fn)                                \
      ->Setup(setup<kind>)                     \
      ->Teardown(teardown)                     \
      ->UseManualTime()                        \
      ->Threads(1)                             \
      ->Threads(2)                             \
      ->Threads(4)                             \
      ->Threads(8)                             \
      ->Threads(16)

FRAMESTAGE_STAGING_BENCHMARK(BM_FrameAllocStage, Kind::frame_alloc_stage);
FRAMESTAGE_STAGING_BENCHMARK(BM_Upload, Kind::upload);
FRAMESTAGE_STAGING_BENCHMARK(BM_ReserveUpload, Kind::reserve_upload);
FRAMESTAGE_STAGING_BENCHMARK(BM_Readback, Kind::readback);
FRAMESTAGE_STAGING_BENCHMARK(BM_CopyBaseline, Kind::baseline);
FRAMESTAGE_STAGING_BENCHMARK(BM_CopyBaselineDma, Kind::baseline_dma);
FRAMESTAGE_STAGING_BENCHMARK(BM_CoreBaseline, Kind::core_baseline);

/// The console output, then a table of items/s per thread count and the scaling from 1 thread:
/// medians over the repetitions, with the range of the scaling between repetitions.
class ScalingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred || run.run_type != Run::RT_Iteration) continue;
      const auto rate = run.counters.find("items_per_second");
      const auto busy = run.counters.find("busy");
      const auto late = run.counters.find("late");
      const auto end_frame = run.counters.find("end_frame_ns");
      if (rate == run.counters.end() || busy == run.counters.end() || late == run.counters.end() ||
          end_frame == run.counters.end()) {
        continue;
      }
      Samples& samples = samples_[run.run_name.function_name][static_cast<int>(run.threads)];
      samples.rates.push_back(rate->second.value);
      samples.call_rates.push_back(rate->second.value / busy->second.value);
      samples.busy.push_back(busy->second.value);
      samples.late.push_back(late->second.value);
      samples.end_frame.push_back(end_frame->second.value);
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    if (workload.frame_items != 0) {
      std::printf("\nscaling: a frame of %zu items of %zu B split between the threads\n",
                  workload.frame_items, kItemBytes);
    } else {
      std::printf("\nscaling: %zu items of %zu B per thread per frame\n", workload.items_per_thread,
                  kItemBytes);
    }
    std::printf(
        "(wall time of the phase; medians of the repetitions; busy: a thread's time in its calls\n"
        "over the phase's, averaged: below 1, threads started late (late: the part lost so) or\n"
        "waited on the slowest; in calls: the scaling of items/s over busy, the threads' own\n"
        "time in their calls; end_frame: ns per item of the owner's end_frame() call, which\n"
        "follows the phase)%s\n",
        pin_cpus ? "; threads pinned to a CPU each" : "");
    std::printf("%-20s %7s %4s %12s %8s %8s %16s %5s %5s %8s %9s\n", "benchmark", "threads", "reps",
                "items/s", "ns/item", "scaling", "range of scaling", "busy", "late", "in calls",
                "end_frame");
    for (const auto& [name, by_threads] : samples_) {
      const auto one = by_threads.find(1);
      const double one_rate = one == by_threads.end() ? 0.0 : median(one->second.rates);
      const double one_call_rate = one == by_threads.end() ? 0.0 : median(one->second.call_rates);
      const auto ratio = [](double rate, double base) { return base == 0 ? 0.0 : rate / base; };
      for (const auto& [threads, samples] : by_threads) {
        const std::vector<double>& rates = samples.rates;
        const double rate = median(rates);
        const auto [low, high] = std::minmax_element(rates.begin(), rates.end());
        std::printf("%-20s %7d %4zu %12.4g %8.2f %7.2fx %6.2fx - %5.2fx %5.2f %5.2f %7.2fx %9.2f\n",
                    name.c_str(), threads, rates.size(), rate, 1e9 / rate, ratio(rate, one_rate),
                    ratio(*low, one_rate), ratio(*high, one_rate), median(samples.busy),
                    median(samples.late), ratio(median(samples.call_rates), one_call_rate),
                    median(samples.end_frame));
      }
    }
  }

 private:
  static double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  }

  struct Samples {
    std::vector<double> rates;       // items/s of each repetition
    std::vector<double> call_rates;  // and over busy: as if no thread started late or waited
    std::vector<double> busy;
    std::vector<double> late;
    std::vector<double> end_frame;  // ns per item of the owner's end_frame() call
  };
  std::map<std::string, std::map<int, Samples>> samples_;
};

/// Takes this program's flags out of argv (Google Benchmark rejects flags it does not know).
/// Returns false, having said why, for a malformed one.
bool take_workload_flags(int& argc, char** argv) {
  int kept = 1;
  bool sized = false;  // by one of the two flags
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--pin") {
      pin_cpus = allowed_cpus();
      continue;
    }
    std::size_t* into = nullptr;
    std::string value;
    for (auto [flag, field] : {std::pair{"--items_per_thread=", &workload.items_per_thread},
                               std::pair{"--frame_items=", &workload.frame_items}}) {
      if (arg.starts_with(flag)) {
        into = field;
        value = arg.substr(std::strlen(flag));
      }
    }
    if (into == nullptr) {
      argv[kept++] = argv[i];
      continue;
    }
    if (std::exchange(sized, true)) {
      std::fprintf(stderr, "framestage_micro: give one of --frame_items and --items_per_thread\n");
      return false;
    }
    workload = Workload{0, 0};
    std::size_t parsed = 0;
    try {
      // stoull would take "-1" as 2^64 - 1: only digits are a count.
      if (!value.empty() && value[0] >= '0' && value[0] <= '9') *into = std::stoull(value, &parsed);
    } catch (const std::exception&) {
      parsed = 0;
    }
    if (parsed == 0 || parsed != value.size() || *into == 0) {
      std::fprintf(stderr, "framestage_micro: %s wants a positive whole number\n", arg.c_str());
      return false;
    }
  }
  argc = kept;
  if (workload.frame_items != 0 && workload.frame_items < kMaxThreads) {
    std::fprintf(stderr, "framestage_micro: --frame_items must be at least %d (one per thread)\n",
                 kMaxThreads);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!take_workload_flags(argc, argv)) return 2;
  {
    auto made = framestage::make_default_backend();
    std::printf("framestage_micro: %s (%s)\n", made.backend->describe().c_str(),
                made.reason.c_str());
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ScalingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
