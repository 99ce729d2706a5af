// framestage_sim: a 2-D heat diffusion whose host changes thousands of heater strips every tick
// and reads diagnostics back every tick, run as a user would write it by hand (naive) and
// through a Coordinator (framestage); it prints both tick rates and checks that both computed
// the same thing.
#include "simulation.hpp"

#include <framestage/cuda_backend.hpp>
#include <framestage/error.hpp>
#include <framestage/host_backend.hpp>

#include "cli_style.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace framestage::sim {
namespace {

// Exit codes: ctest reads kSkipped as "skipped" (SKIP_RETURN_CODE).
constexpr int kOk = 0;
constexpr int kMismatch = 1;
constexpr int kUsage = 2;
constexpr int kSkipped = 77;

constexpr const char* kDescription =
    R"(A 2-D heat diffusion: every tick the host rewrites thousands of heater strips (16-64 B each),
the boundary temperatures and the step parameters, the GPU steps the grid and reduces it, and
the host reads the total heat, the peak temperature and a few probe cells back.
  naive       one cudaMemcpyAsync per input item from pinned memory, the kernels, then a
              synchronous copy of each diagnostic and probe: the host stalls every tick
  framestage  the same inputs written once into a Coordinator's frame (frame_alloc,
              reserve_upload), coalesced at end_frame(); diagnostics read back with the frame
              (triple buffering) and consumed three ticks later; kernels launched one by one
  graph       framestage with the tick captured once (capture_tick): each frame's transfers
              and the kernels run as one graph launch, end_frame(TickGraph&)
All run the same kernels on the same inputs and must agree; the program fails if they do not.
--step-launches N steps the grid in N kernels (bands of rows), the shape of tick a graph
replay pays off on.)";

constexpr const char* kExitStatus =
    "exit status: 0 all results agree, 1 a mismatch or error, 2 bad usage, 77 --backend cuda "
    "where no CUDA device can be used.";

struct Options {
  std::optional<std::uint32_t> grid;
  std::optional<std::uint64_t> ticks;
  std::optional<std::uint32_t> heaters;
  std::uint32_t probes = 32;
  std::uint32_t step_launches = 1;
  std::string variant = "all";
  std::string backend = "auto";
  bool check = false;

  // "both" is naive and framestage, as before the graph variant existed.
  [[nodiscard]] bool naive() const {
    return variant == "naive" || variant == "both" || variant == "all";
  }
  [[nodiscard]] bool framestage() const {
    return variant == "framestage" || variant == "both" || variant == "all";
  }
  [[nodiscard]] bool graph() const { return variant == "graph" || variant == "all"; }
};

// An option whose default depends on the backend: unset unless given.
template <class T>
void add_optional(CLI::App& app, const char* name, std::optional<T>& value, const char* help) {
  app.add_option_function<T>(
      name, [&value](const T& v) { value = v; }, help);
}

// The command line, in the framestage program's style (tools/framestage_main.cpp).
void describe_options(CLI::App& app, Options& o) {
  tools::apply_cli_style(app, kExitStatus);
  add_optional(app, "--grid", o.grid,
               "cells per side (default 1024 on a GPU, 256 on host emulation)");
  add_optional(app, "--ticks", o.ticks,
               "ticks to run (default 400 on a GPU, 60 on host emulation)");
  add_optional(app, "--heaters", o.heaters,
               "heater strips rewritten per tick (default 10000, at most N*N/16)");
  app.add_option("--probes", o.probes, "probe cells read back per tick")->capture_default_str();
  app.add_option("--step-launches", o.step_launches,
                 "kernel launches per step, one band of rows each")
      ->capture_default_str();
  app.add_option("--variant", o.variant,
                 "naive, framestage, graph, both (naive and framestage) or all")
      ->check(CLI::IsMember({"naive", "framestage", "graph", "both", "all"}))
      ->capture_default_str();
  app.add_option("--backend", o.backend,
                 "auto (CUDA if a device is present), host (emulation) or cuda")
      ->check(CLI::IsMember({"auto", "host", "cuda"}))
      ->capture_default_str();
  app.add_flag("--check", o.check,
               "also run the physics in plain C++ and hold every variant to it");
}

// The backend asked for, or why it cannot be had (then the run is skipped).
struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string note;  // why auto chose the host, or why cuda cannot be had
};

BackendChoice make_backend(const std::string& which) {
  if (which == "host") return {std::make_unique<HostBackend>(), {}};
  if (which == "cuda") {
#if FRAMESTAGE_HAS_CUDA
    if (auto why = CudaBackend::unavailable_reason(0)) return {nullptr, *why};
    return {std::make_unique<CudaBackend>(0), {}};
#else
    return {nullptr, "this build has no CUDA backend (no nvcc at configure time)"};
#endif
  }
  auto [backend, why] = make_default_backend();
  if (backend->kind() == BackendKind::cuda) why.clear();
  return {std::move(backend), std::move(why)};
}

SimShape shape_for(const Options& o, bool on_gpu) {
  SimShape shape;
  // Host emulation steps the grid on one core: smaller defaults keep it to seconds.
  shape.grid = o.grid.value_or(on_gpu ? 1024 : 256);
  shape.ticks = o.ticks.value_or(on_gpu ? 400 : 60);
  const std::size_t most_heaters = shape.cells() / SimShape::kMaxStripCells;
  shape.heater_updates =
      o.heaters.value_or(static_cast<std::uint32_t>(std::min<std::size_t>(10'000, most_heaters)));
  shape.probes = o.probes;
  shape.step_launches = o.step_launches;
  shape.validate();
  return shape;
}

void print_row(const char* name, const RunOutput& run, const SimShape& shape,
               const char* blocked_in) {
  const double ticks = static_cast<double>(shape.ticks);
  std::printf("%-11s %12.1f %10.3f %11.3f %11.3f %10.1f   %s\n", name, ticks / run.timing.seconds,
              1e3 * run.timing.seconds / ticks, 1e3 * run.timing.max_stall_seconds,
              1e3 * run.timing.total_stall_seconds / ticks, 1e6 * run.timing.submit_seconds / ticks,
              blocked_in);
}

// The coordinator's work per tick, for a framestage loop's row.
void print_stats(const char* name, const RunOutput& run, const SimShape& shape) {
  const CoordinatorStats& s = run.stats;
  const auto per_tick = [&](std::size_t total) {
    return static_cast<double>(total) / static_cast<double>(shape.ticks);
  };
  std::printf(
      "  %s per tick: %.0f uploads in %.1f staging copies + %.1f scatter kernels, %.0f B "
      "mirrored, %.0f readbacks (%.0f B), %.2f graph launches\n",
      name, per_tick(s.uploads), per_tick(s.staging_copies), per_tick(s.scatter_launches),
      per_tick(s.mirror_bytes), per_tick(s.readbacks), per_tick(s.readback_bytes),
      per_tick(s.tick_graph_frames));
}

// Prints a comparison's outcome; returns whether it matched.
bool report(const char* what, const std::vector<std::string>& problems) {
  if (problems.empty()) {
    std::printf("%s: agree\n", what);
    return true;
  }
  std::printf("MISMATCH: %s:\n", what);
  for (const std::string& p : problems)
    std::printf("  %s\n", p.c_str());
  return false;
}

int run(const Options& o) {
  BackendChoice choice = make_backend(o.backend);
  if (!choice.backend) {
    std::printf("framestage_sim: no CUDA device can be used, skipping: %s\n", choice.note.c_str());
    return kSkipped;
  }
  Backend& backend = *choice.backend;
  const bool on_gpu = backend.kind() == BackendKind::cuda;
  const SimShape shape = shape_for(o, on_gpu);
  auto kernels = make_kernels(backend, shape);

  const double strip_kib = shape.heater_updates * 40.0 / 1024.0;  // 4-16 floats, 40 B on average
  std::printf("framestage_sim: 2-D heat diffusion, %u x %u cells, %llu ticks\n", shape.grid,
              shape.grid, static_cast<unsigned long long>(shape.ticks));
  std::printf(
      "  per tick: %u heater strips of 16-64 B (about %.0f KiB) uploaded, %zu boundary "
      "temperatures and the parameters staged, diagnostics and %u probes read back\n",
      shape.heater_updates, strip_kib, kBoundarySides * shape.grid, shape.probes);
  std::printf("  backend: %s%s%s\n", backend.describe().c_str(), choice.note.empty() ? "" : "; ",
              choice.note.c_str());
  if (!on_gpu) {
    std::printf(
        "  HOST EMULATION: the 'device' is this CPU; the figures below are host times, "
        "not GPU figures, and no speed-up is claimed\n");
  }

  // A short run of each loop first, so the timed runs do not pay for loading kernels and
  // first-touch allocations.
  if (on_gpu) {
    SimShape warm_up = shape;
    warm_up.ticks = std::min<std::uint64_t>(shape.ticks, 3);
    if (o.naive()) static_cast<void>(run_naive(backend, *kernels, warm_up));
    if (o.framestage()) static_cast<void>(run_framestage(backend, *kernels, warm_up));
    if (o.graph()) {
      static_cast<void>(run_framestage(backend, *kernels, warm_up, 3, TickLaunch::graph));
    }
  }

  std::optional<RunOutput> naive;
  std::optional<RunOutput> staged;
  std::optional<RunOutput> graphed;
  std::printf("  step: %u kernel launch%s a tick, then the reduction\n", shape.step_launches,
              shape.step_launches == 1 ? "" : "es");
  std::printf("\n%-11s %12s %10s %11s %11s %10s   %s\n", "variant", "ticks/s", "ms/tick",
              "max wait ms", "mean wait", "submit us", "host blocked in");
  if (o.naive()) {
    naive = run_naive(backend, *kernels, shape);
    print_row("naive", *naive, shape, "synchronous diagnostic copies");
  }
  if (o.framestage()) {
    staged = run_framestage(backend, *kernels, shape);
    print_row("framestage", *staged, shape, "begin_frame + readback waits (slot 3 frames old)");
  }
  if (o.graph()) {
    graphed = run_framestage(backend, *kernels, shape, 3, TickLaunch::graph);
    print_row("graph", *graphed, shape, "begin_frame + readback waits (slot 3 frames old)");
  }
  std::printf(
      "  submit: host time handing a tick to the device (copies and launches, or "
      "end_frame and launches, or end_frame(tick))\n");
  if (staged) print_stats("framestage", *staged, shape);
  if (graphed) print_stats("graph", *graphed, shape);
  if (naive && staged && on_gpu) {
    std::printf("speed-up of framestage over naive: %.1fx\n",
                naive->timing.seconds / staged->timing.seconds);
  }
  if (staged && graphed && on_gpu) {
    std::printf(
        "graph over stream-launched framestage: %.2fx the ticks per second, %.2fx the "
        "submit time\n",
        staged->timing.seconds / graphed->timing.seconds,
        graphed->timing.submit_seconds / staged->timing.submit_seconds);
  }

  bool ok = true;
  std::printf("\n");
  if (naive && staged) {
    ok &= report(
        "framestage vs naive (final fields and heat sums bit for bit or within 1e-9, "
        "every tick's diagnostics and probes)",
        compare(staged->result, naive->result, shape, kSameKernels));
  }
  if (graphed && (staged || naive)) {
    ok &= report(
        staged ? "graph vs framestage (the same bounds)" : "graph vs naive (the same bounds)",
        compare(graphed->result, staged ? staged->result : naive->result, shape, kSameKernels));
  }
  if (o.check) {
    const SimResult reference = run_reference(shape);
    if (naive) {
      ok &= report("naive vs plain C++ reference (within 1e-5; heaters bit for bit)",
                   compare(naive->result, reference, shape, kAgainstReference));
    }
    if (staged) {
      ok &= report("framestage vs plain C++ reference (within 1e-5; heaters bit for bit)",
                   compare(staged->result, reference, shape, kAgainstReference));
    }
    if (graphed) {
      ok &= report("graph vs plain C++ reference (within 1e-5; heaters bit for bit)",
                   compare(graphed->result, reference, shape, kAgainstReference));
    }
  }
  return ok ? kOk : kMismatch;
}

}  // namespace
}  // namespace framestage::sim

int main(int argc, char** argv) {
  using namespace framestage::sim;
  Options options;
  CLI::App app{kDescription, "framestage_sim"};
  describe_options(app, options);
  if (const auto status = framestage::tools::parse_command_line(app, argc, argv, kUsage)) {
    return *status;
  }
  try {
    return run(options);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "framestage_sim: %s\n", e.what());
    return kUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "framestage_sim: failed: %s\n", e.what());
    return kMismatch;
  }
}
