/// @file heat.hpp
/// @brief The demo's physics: 2-D heat diffusion on an n x n grid, with heaters and boundary
/// temperatures the host changes every tick. Shared by the CUDA kernels, the host-emulation
/// tasks and the loops that feed them; the plain C++ reference (reference.cpp) does not use it.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define FRAMESTAGE_SIM_HD __host__ __device__
#else
#define FRAMESTAGE_SIM_HD
#endif

namespace framestage::sim {

/// @brief The size of a run. Every input follows from it and the tick number, so two runs of the
/// same shape see the same inputs, byte for byte.
struct SimShape {
  std::uint32_t grid = 1024;              ///< cells per side
  std::uint32_t heater_updates = 10'000;  ///< heater strips rewritten per tick (16-64 B each)
  std::uint32_t probes = 32;              ///< cells whose temperature is read back every tick
  std::uint64_t ticks = 400;
  /// The step's kernel launches: one per band of rows, as codes that step a grid in pieces do
  /// (a tick of many small kernels is what a graph replay pays off on).
  std::uint32_t step_launches = 1;

  [[nodiscard]] std::size_t cells() const noexcept { return std::size_t{grid} * grid; }
  /// Cells per heater stripe: update i of a tick lies inside stripe i, so updates ascend and
  /// never overlap.
  [[nodiscard]] std::size_t stripe_cells() const noexcept { return cells() / heater_updates; }

  /// @throws std::invalid_argument naming the value that does not fit.
  void validate() const {
    if (grid < 4 || grid > 16384) {
      throw std::invalid_argument("grid must be 4..16384, got " + std::to_string(grid));
    }
    if (heater_updates < 1 || stripe_cells() < kMaxStripCells) {
      throw std::invalid_argument("heater updates must be 1.." +
                                  std::to_string(cells() / kMaxStripCells) + " for grid " +
                                  std::to_string(grid) + ", got " + std::to_string(heater_updates));
    }
    if (probes < 1 || probes > cells()) {
      throw std::invalid_argument("probes must be 1.." + std::to_string(cells()) + ", got " +
                                  std::to_string(probes));
    }
    if (ticks < 1) throw std::invalid_argument("ticks must be >= 1");
    if (step_launches < 1 || step_launches > grid) {
      throw std::invalid_argument("step launches must be 1.." + std::to_string(grid) +
                                  " for grid " + std::to_string(grid) + ", got " +
                                  std::to_string(step_launches));
    }
  }

  /// A heater update rewrites 4, 8, 12 or 16 consecutive cells (16-64 B).
  static constexpr std::uint32_t kMaxStripCells = 16;
};

/// @brief Per-tick parameters, staged with the frame (frame_alloc) and read by the step kernel.
struct StepParams {
  float diffusion;    ///< alpha * dt / dx^2; at most 0.25 for the explicit scheme to be stable
  float heater_gain;  ///< heat added per tick per unit of heater power
};

/// @brief What the device reduces the state to every tick.
struct Diagnostics {
  double total_heat;       ///< sum of all cell temperatures
  float peak_temperature;  ///< the hottest cell
  float unused;            ///< keeps the size at 16 B with no indeterminate padding
};

/// @brief Boundary temperatures: top row, bottom row, left column, right column (n each).
inline constexpr std::size_t kBoundarySides = 4;

/// @brief Rows [first, end) of band `band` when an n-row grid is stepped in `bands` launches.
struct RowBand {
  std::uint32_t first;
  std::uint32_t end;
};
inline RowBand row_band(std::uint32_t n, std::uint32_t band, std::uint32_t bands) {
  return {static_cast<std::uint32_t>(std::uint64_t{n} * band / bands),
          static_cast<std::uint32_t>(std::uint64_t{n} * (band + 1) / bands)};
}

/// @brief One explicit step of one cell: the 5-point Laplacian, with the host-given boundary
/// temperatures as the neighbours outside the grid, plus the cell's heater.
FRAMESTAGE_SIM_HD inline float heat_cell(const float* state, const float* heaters,
                                         const float* boundary, StepParams params, std::uint32_t n,
                                         std::uint32_t x, std::uint32_t y) {
  const std::size_t c = std::size_t{y} * n + x;
  const float centre = state[c];
  const float north = y > 0 ? state[c - n] : boundary[x];
  const float south = y + 1 < n ? state[c + n] : boundary[n + x];
  const float west = x > 0 ? state[c - 1] : boundary[2 * n + y];
  const float east = x + 1 < n ? state[c + 1] : boundary[3 * n + y];
  return centre + params.diffusion * ((north + south) + (west + east) - 4.0f * centre) +
         params.heater_gain * heaters[c];
}

/// @brief Combines two partial diagnostics (for reductions).
FRAMESTAGE_SIM_HD inline Diagnostics combine(Diagnostics a, Diagnostics b) {
  return {a.total_heat + b.total_heat,
          a.peak_temperature > b.peak_temperature ? a.peak_temperature : b.peak_temperature, 0.0f};
}

namespace detail {

/// splitmix64: a counter-based generator, so any tick's inputs can be made on their own.
inline std::uint64_t mix(std::uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// A float in [0, 1) from the top 24 bits of `bits`.
inline float unit(std::uint64_t bits) noexcept {
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

inline constexpr double kTwoPi = 6.283185307179586;

}  // namespace detail

/// @brief The parameters of tick `tick`: constant diffusion, heater gain on a slow cycle.
inline StepParams step_params(std::uint64_t tick) {
  return {0.2f, static_cast<float>(1.0 + 0.5 * std::sin(static_cast<double>(tick) * 0.02))};
}

/// @brief Fills `out` (4n values) with tick `tick`'s boundary temperatures: a hot spot moving
/// along the top edge, a cold bottom, a warm left edge that breathes, a fixed right edge.
inline void boundary_values(std::uint32_t n, std::uint64_t tick, std::span<float> out) {
  const double phase = static_cast<double>(tick) * 0.05;
  for (std::uint32_t i = 0; i < n; ++i) {
    const double u = (i + 0.5) / n;
    out[i] = static_cast<float>(50.0 + 50.0 * std::sin(detail::kTwoPi * u + phase));
    out[n + i] = 0.0f;
    out[2 * n + i] = static_cast<float>(20.0 + 10.0 * std::cos(phase));
    out[3 * n + i] = 35.0f;
  }
}

/// @brief The heater updates of tick `tick`, in ascending cell order: for update i, calls
/// `sink(first_cell, count)`, which returns a span of `count` floats to write the strip's new
/// heater powers (in [0, 1)) into. Update i rewrites 4-16 cells inside stripe i.
template <class Sink>
void heater_updates(const SimShape& shape, std::uint64_t tick, Sink&& sink) {
  const std::size_t stripe = shape.stripe_cells();
  for (std::uint32_t i = 0; i < shape.heater_updates; ++i) {
    std::uint64_t state = detail::mix((tick << 32) ^ i);
    const std::uint32_t count = 4 * (1 + static_cast<std::uint32_t>(state & 3));
    // A position in [0, stripe - count] by multiply and shift, not a division.
    const std::size_t first = i * stripe + (((state >> 32) * (stripe - count + 1)) >> 32);
    const std::span<float> powers = sink(first, count);
    // Within a strip, one LCG step per value: the inputs cost both loops the same, and should
    // not hide the transfers the demo is about.
    for (std::uint32_t k = 0; k < count; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      powers[k] = detail::unit(state);
    }
  }
}

/// @brief The cell of probe `i`: rows spread evenly, columns along a golden-ratio sequence.
inline std::size_t probe_cell(const SimShape& shape, std::uint32_t i) {
  const std::uint32_t n = shape.grid;
  const auto y = static_cast<std::uint32_t>((i + 0.5) * n / shape.probes);
  const double golden = 0.6180339887498949 * (i + 1);
  const auto x = static_cast<std::uint32_t>((golden - std::floor(golden)) * n);
  return std::size_t{y} * n + x;
}

}  // namespace framestage::sim
