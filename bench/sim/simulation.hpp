/// @file simulation.hpp
/// @brief The demo's two tick loops over the same physics, the plain C++ reference they are
/// checked against, and the comparison of their results.
#pragma once

#include "heat.hpp"
#include "kernels.hpp"

#include <framestage/backend.hpp>
#include <framestage/stats.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace framestage::sim {

/// @brief What a run produced: the diagnostics series and the final fields.
struct SimResult {
  std::vector<Diagnostics> diagnostics;  ///< one per tick, of the state after that tick's step
  std::vector<float> probes;             ///< ticks x probes: probe temperatures after each tick
  std::vector<float> final_state;        ///< n * n temperatures after the last tick
  std::vector<float> final_heaters;      ///< n * n heater powers after the last tick
};

/// @brief How long a loop took, and how long the host was blocked.
struct RunTiming {
  double seconds = 0;  ///< the tick loop: first tick's inputs to last diagnostics consumed
  /// The most one tick spent blocked: in begin_frame() and readback waits (framestage), in the
  /// synchronous diagnostic copies (naive).
  double max_stall_seconds = 0;
  double total_stall_seconds = 0;
  /// Host time spent handing each tick's work to the device: the copies and kernel launches
  /// (naive), end_frame() and the launches (framestage), end_frame(TickGraph&) (graph).
  double submit_seconds = 0;
};

/// @brief How the framestage loop launches a tick.
enum class TickLaunch {
  streams,  ///< end_frame(), then the kernels launched on the ticket's stream one by one
  graph,    ///< end_frame(TickGraph&): the frame's transfers and the kernels as one graph launch
};

/// @brief A loop's result, its timing, and (framestage) the coordinator's statistics.
struct RunOutput {
  SimResult result;
  RunTiming timing;
  CoordinatorStats stats;
};

/// @brief What a user writes by hand: every input item its own async copy from pinned memory,
/// the kernels, then a synchronous copy of each diagnostic and probe, which stalls every tick.
[[nodiscard]] RunOutput run_naive(Backend& backend, SimKernels& kernels, const SimShape& shape);

/// @brief The same ticks through a Coordinator with `buffering` slots: inputs written once
/// into frame allocations and reserved uploads, coalesced at end_frame(); diagnostics and probes
/// read back with the frame and consumed `buffering` frames later, just before begin_frame()
/// reuses their slot, so the host waits only for a slot that many frames old.
///
/// With TickLaunch::graph, the kernels are captured once (Coordinator::capture_tick: one graph
/// for even ticks and one for odd, as the two temperature fields swap) and each frame is one
/// end_frame(TickGraph&); the parameters and boundary then go to persistent device buffers with
/// reserve_upload, as a captured kernel reads fixed addresses.
[[nodiscard]] RunOutput run_framestage(Backend& backend, SimKernels& kernels, const SimShape& shape,
                                       std::uint32_t buffering = 3,
                                       TickLaunch launch = TickLaunch::streams);

/// @brief The physics in plain C++ on the host, with no framestage and no shared step code:
/// what --check and the tests hold both loops to.
[[nodiscard]] SimResult run_reference(const SimShape& shape);

/// @brief How close two results must be. Heater fields are always compared bit for bit: they
/// are copies of the inputs.
struct Tolerance {
  /// Largest |got - want| allowed for temperatures (cells, probes, peaks), as a fraction of the
  /// largest |temperature| in `want`; 0 asks for bit-identical values.
  double temperature;
  /// Largest relative difference allowed for a tick's total heat.
  double total_heat;
};

/// @brief Two loops running the same kernels: identical but for the order of the reduction.
inline constexpr Tolerance kSameKernels{0.0, 1e-9};
/// @brief A loop against run_reference: rounding may differ (fused multiply-adds on a device,
/// the order of the heat sum), by far less than one tick's change.
inline constexpr Tolerance kAgainstReference{1e-5, 1e-5};

/// @brief The differences between `got` and `want` beyond `tolerance`, one line each (at most a
/// few per field); empty when they match.
[[nodiscard]] std::vector<std::string> compare(const SimResult& got, const SimResult& want,
                                               const SimShape& shape, Tolerance tolerance);

}  // namespace framestage::sim
