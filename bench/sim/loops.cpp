// The two tick loops. Both make the same inputs with the same generators (heat.hpp) and launch
// the same kernels; they differ only in how bytes cross the bus and when the host waits.
#include "simulation.hpp"

#include <framestage/coordinator.hpp>
#include <framestage/device_buffer.hpp>
#include <framestage/tick_graph.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <span>

namespace framestage::sim {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::vector<std::size_t> probe_cells(const SimShape& shape) {
  std::vector<std::size_t> cells(shape.probes);
  for (std::uint32_t i = 0; i < shape.probes; ++i)
    cells[i] = probe_cell(shape, i);
  return cells;
}

SimResult sized_result(const SimShape& shape) {
  SimResult r;
  r.diagnostics.resize(shape.ticks);
  r.probes.resize(shape.ticks * shape.probes);
  return r;
}

void add_stall(RunTiming& timing, double stall_seconds) {
  timing.total_stall_seconds += stall_seconds;
  timing.max_stall_seconds = std::max(timing.max_stall_seconds, stall_seconds);
}

// The state both loops keep on the device: two temperature fields (stepped from one into the
// other), the heater field the host rewrites in strips, and the reduction's output.
struct DeviceState {
  DeviceState(Backend& backend, const SimShape& shape)
      : temperature{DeviceBuffer<float>(backend, shape.cells()),
                    DeviceBuffer<float>(backend, shape.cells())},
        heaters(backend, shape.cells()),
        diagnostics(backend, 1) {}

  // Everything starts at 0 degrees, with every heater off.
  void clear(SimKernels& kernels, Backend& backend, StreamView stream) {
    kernels.zero(stream, temperature[0].data(), temperature[0].size_bytes());
    kernels.zero(stream, heaters.data(), heaters.size_bytes());
    backend.synchronize(stream);
  }

  // Before tick `tick`, temperature[tick % 2] holds the state; the step writes the other one.
  [[nodiscard]] const DeviceBuffer<float>& before(std::uint64_t tick) const {
    return temperature[tick % 2];
  }
  [[nodiscard]] const DeviceBuffer<float>& after(std::uint64_t tick) const {
    return temperature[(tick + 1) % 2];
  }

  std::array<DeviceBuffer<float>, 2> temperature;
  DeviceBuffer<float> heaters;
  DeviceBuffer<Diagnostics> diagnostics;
};

void read_final_fields(const DeviceState& device, const SimShape& shape, SimResult& result) {
  result.final_state = device.before(shape.ticks).to_host();
  result.final_heaters = device.heaters.to_host();
}

// Arena sizes for one tick's inputs and readbacks, with room to spare; `grow` covers a
// miscount rather than failing the run.
Config coordinator_config(const SimShape& shape, std::uint32_t buffering) {
  Config config;
  config.buffering = buffering;
  const std::size_t boundary_bytes = kBoundarySides * shape.grid * sizeof(float);
  config.arena_bytes = std::max(std::size_t{1} << 20, 4 * boundary_bytes);
  // Payloads are 16-byte aligned and each has a 16-byte descriptor.
  // The graph loop uploads the boundary and parameters too.
  config.upload_arena_bytes =
      std::size_t{shape.heater_updates} * (SimShape::kMaxStripCells * sizeof(float) + 16) +
      boundary_bytes + (std::size_t{64} << 10);
  config.max_uploads_per_frame = shape.heater_updates + 16;
  config.readback_arena_bytes = std::size_t{shape.probes + 1} * 32 + (std::size_t{64} << 10);
  config.max_readbacks_per_frame = shape.probes + 1;
  config.overflow = OverflowPolicy::grow;
  return config;
}

}  // namespace

RunOutput run_naive(Backend& backend, SimKernels& kernels, const SimShape& shape) {
  const std::uint32_t n = shape.grid;
  const std::size_t boundary_count = kBoundarySides * n;
  const std::vector<std::size_t> probes = probe_cells(shape);

  Stream stream(backend);
  DeviceState device(backend, shape);
  DeviceBuffer<float> boundary(backend, boundary_count);
  DeviceBuffer<StepParams> params(backend, 1);
  // A tick's inputs in pinned memory (params, boundary, heater strips), reused every tick: the
  // synchronous reads at the end of a tick mean its copies have run.
  MemoryBlock inputs(
      backend, MemoryKind::pinned,
      sizeof(StepParams) + sizeof(float) * (boundary_count + std::size_t{shape.heater_updates} *
                                                                 SimShape::kMaxStripCells));
  MemoryBlock outputs(backend, MemoryKind::pinned,
                      sizeof(Diagnostics) + sizeof(float) * shape.probes);
  auto* params_in = reinterpret_cast<StepParams*>(inputs.data());
  auto* boundary_in = reinterpret_cast<float*>(inputs.data() + sizeof(StepParams));
  auto* diagnostics_out = reinterpret_cast<Diagnostics*>(outputs.data());
  auto* probes_out = reinterpret_cast<float*>(outputs.data() + sizeof(Diagnostics));
  struct Strip {
    std::size_t first;
    std::uint32_t count;
    const float* powers;
  };
  std::vector<Strip> strips;
  strips.reserve(shape.heater_updates);

  device.clear(kernels, backend, stream.view());
  RunOutput out;
  out.result = sized_result(shape);
  const auto start = Clock::now();
  for (std::uint64_t tick = 0; tick < shape.ticks; ++tick) {
    *params_in = step_params(tick);
    boundary_values(n, tick, {boundary_in, boundary_count});
    float* cursor = boundary_in + boundary_count;
    strips.clear();
    heater_updates(shape, tick, [&](std::size_t first, std::uint32_t count) {
      strips.push_back({first, count, cursor});
      const std::span<float> powers(cursor, count);
      cursor += count;
      return powers;
    });

    const auto submit_start = Clock::now();
    kernels.copy_to_device_async(params.data(), params_in, sizeof(StepParams), stream.view());
    kernels.copy_to_device_async(boundary.data(), boundary_in, boundary.size_bytes(),
                                 stream.view());
    for (const Strip& s : strips) {
      kernels.copy_to_device_async(device.heaters.data() + s.first, s.powers,
                                   s.count * sizeof(float), stream.view());
    }
    const float* after = device.after(tick).data();
    kernels.step(stream.view(), {device.before(tick).data(), device.after(tick).data(),
                                 device.heaters.data(), boundary.data(), params.data()});
    kernels.diagnose(stream.view(), after, device.diagnostics.data());
    out.timing.submit_seconds += seconds_between(submit_start, Clock::now());

    const auto reads_start = Clock::now();
    kernels.copy_to_host_sync(diagnostics_out, device.diagnostics.data(), sizeof(Diagnostics),
                              stream.view());
    for (std::uint32_t k = 0; k < shape.probes; ++k) {
      kernels.copy_to_host_sync(probes_out + k, after + probes[k], sizeof(float), stream.view());
    }
    add_stall(out.timing, seconds_between(reads_start, Clock::now()));
    out.result.diagnostics[tick] = *diagnostics_out;
    std::copy_n(probes_out, shape.probes, out.result.probes.begin() + tick * shape.probes);
  }
  out.timing.seconds = seconds_between(start, Clock::now());
  read_final_fields(device, shape, out.result);
  return out;
}

RunOutput run_framestage(Backend& backend, SimKernels& kernels, const SimShape& shape,
                         std::uint32_t buffering, TickLaunch launch) {
  const std::uint32_t n = shape.grid;
  const std::size_t boundary_count = kBoundarySides * n;
  const std::vector<std::size_t> probes = probe_cells(shape);

  Coordinator frames(coordinator_config(shape, buffering), backend);
  DeviceState device(backend, shape);
  device.clear(kernels, backend, frames.consumer_stream());

  // A graph's kernels read fixed addresses: the parameters and boundary live in buffers of their
  // own, and tick f runs graph f % 2, whose step reads temperature[f % 2].
  const bool graph = launch == TickLaunch::graph;
  DeviceBuffer<StepParams> graph_params(backend, graph ? 1 : 0);
  DeviceBuffer<float> graph_boundary(backend, graph ? boundary_count : 0);
  std::array<TickGraph, 2> ticks;
  if (graph) {
    for (std::uint64_t parity = 0; parity < 2; ++parity) {
      ticks[parity] = frames.capture_tick([&](StreamView stream) {
        kernels.step(stream, {device.before(parity).data(), device.after(parity).data(),
                              device.heaters.data(), graph_boundary.data(), graph_params.data()});
        kernels.diagnose(stream, device.after(parity).data(), device.diagnostics.data());
      });
    }
  }

  // The readbacks of one frame: the diagnostics and probes of the tick before it.
  struct Pending {
    bool held = false;
    std::uint64_t tick = 0;
    Readback<Diagnostics> diagnostics;
    std::vector<Readback<float>> probes;
  };
  std::vector<Pending> ring(buffering);
  for (Pending& p : ring)
    p.probes.resize(shape.probes);

  RunOutput out;
  out.result = sized_result(shape);
  const auto consume = [&](Pending& p) {
    out.result.diagnostics[p.tick] = p.diagnostics.get()[0];
    for (std::uint32_t k = 0; k < shape.probes; ++k)
      out.result.probes[p.tick * shape.probes + k] = p.probes[k].get()[0];
    p.held = false;
  };

  const auto start = Clock::now();
  // Frame f carries tick f's inputs and reads back tick f - 1's results: a readback sees the
  // device after the kernels enqueued before end_frame(), before the frame's uploads land. One
  // frame more than there are ticks reads back the last one.
  for (std::uint64_t f = 0; f <= shape.ticks; ++f) {
    const bool steps = f < shape.ticks;
    Pending& pending = ring[f % buffering];
    const auto wait_start = Clock::now();
    // Frame f - buffering's readbacks, consumed just before begin_frame() reuses their slot:
    // the only waits, and only for a frame that many ticks old.
    if (pending.held) consume(pending);
    frames.begin_frame();
    add_stall(out.timing, seconds_between(wait_start, Clock::now()));

    FrameSpan<StepParams> params;
    FrameSpan<float> boundary;
    if (steps) {
      if (graph) {
        frames.reserve_upload<StepParams>(graph_params.data(), 1)[0] = step_params(f);
        boundary_values(n, f, frames.reserve_upload<float>(graph_boundary.data(), boundary_count));
      } else {
        params = frames.frame_alloc<StepParams>(1);
        params[0] = step_params(f);
        frames.stage_for_upload(params);
        boundary = frames.frame_alloc<float>(boundary_count);
        boundary_values(n, f, boundary);
        frames.stage_for_upload(boundary);
      }
      // Each strip is written once, straight into the upload arena.
      heater_updates(shape, f, [&](std::size_t first, std::uint32_t count) -> std::span<float> {
        return frames.reserve_upload<float>(device.heaters.data() + first, count);
      });
    }
    if (f > 0) {
      const float* state = device.after(f - 1).data();
      pending.held = true;
      pending.tick = f - 1;
      pending.diagnostics = frames.readback<Diagnostics>(device.diagnostics.data(), 1);
      for (std::uint32_t k = 0; k < shape.probes; ++k)
        pending.probes[k] = frames.readback<float>(state + probes[k], 1);
    }
    const auto submit_start = Clock::now();
    if (steps && graph) {
      static_cast<void>(frames.end_frame(ticks[f % 2]));
    } else {
      const FrameTicket ticket = frames.end_frame();
      if (steps) {
        kernels.step(ticket.stream(),
                     {device.before(f).data(), device.after(f).data(), device.heaters.data(),
                      frames.device_ptr(boundary), frames.device_ptr(params)});
        kernels.diagnose(ticket.stream(), device.after(f).data(), device.diagnostics.data());
      }
    }
    out.timing.submit_seconds += seconds_between(submit_start, Clock::now());
  }
  // The last frames' readbacks, oldest first; no begin_frame() will reuse their slots now.
  for (std::uint64_t f = shape.ticks + 1; f <= shape.ticks + buffering; ++f) {
    Pending& pending = ring[f % buffering];
    const auto wait_start = Clock::now();
    if (pending.held) consume(pending);
    add_stall(out.timing, seconds_between(wait_start, Clock::now()));
  }
  frames.synchronize();
  out.timing.seconds = seconds_between(start, Clock::now());
  out.stats = frames.stats();
  read_final_fields(device, shape, out.result);
  return out;
}

}  // namespace framestage::sim
