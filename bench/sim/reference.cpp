// The physics in plain C++, written apart from heat_cell and the loops on purpose: a padded grid
// whose ghost cells hold the boundary temperatures, and no framestage at all. Only the inputs
// (heat.hpp's generators) are shared, so a loop that drops, delays or misplaces bytes disagrees.
#include "simulation.hpp"

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>

namespace framestage::sim {

SimResult run_reference(const SimShape& shape) {
  const std::size_t n = shape.grid;
  const std::size_t row = n + 2;
  std::vector<float> grid(row * row, 0.0f);
  std::vector<float> next(row * row, 0.0f);
  std::vector<float> heaters(n * n, 0.0f);
  std::vector<float> boundary(kBoundarySides * n);

  SimResult result;
  for (std::uint64_t tick = 0; tick < shape.ticks; ++tick) {
    heater_updates(shape, tick, [&](std::size_t first, std::uint32_t count) {
      return std::span<float>(heaters.data() + first, count);
    });
    const StepParams params = step_params(tick);
    boundary_values(shape.grid, tick, boundary);
    for (std::size_t i = 0; i < n; ++i) {
      grid[i + 1] = boundary[i];                          // above row 0
      grid[(n + 1) * row + i + 1] = boundary[n + i];      // below row n - 1
      grid[(i + 1) * row] = boundary[2 * n + i];          // left of column 0
      grid[(i + 1) * row + n + 1] = boundary[3 * n + i];  // right of column n - 1
    }
    for (std::size_t y = 1; y <= n; ++y) {
      for (std::size_t x = 1; x <= n; ++x) {
        const float* c = &grid[y * row + x];
        const auto up = static_cast<std::ptrdiff_t>(row);
        const float laplacian = (c[-up] + c[up]) + (c[-1] + c[1]) - 4.0f * c[0];
        next[y * row + x] = c[0] + params.diffusion * laplacian +
                            params.heater_gain * heaters[(y - 1) * n + (x - 1)];
      }
    }
    std::swap(grid, next);

    Diagnostics d{0.0, grid[row + 1], 0.0f};
    for (std::size_t y = 1; y <= n; ++y) {
      for (std::size_t x = 1; x <= n; ++x) {
        d.total_heat += grid[y * row + x];
        d.peak_temperature = std::max(d.peak_temperature, grid[y * row + x]);
      }
    }
    result.diagnostics.push_back(d);
    for (std::uint32_t k = 0; k < shape.probes; ++k) {
      const std::size_t cell = probe_cell(shape, k);
      result.probes.push_back(grid[(cell / n + 1) * row + cell % n + 1]);
    }
  }
  result.final_state.reserve(n * n);
  for (std::size_t y = 1; y <= n; ++y) {
    result.final_state.insert(result.final_state.end(), grid.begin() + y * row + 1,
                              grid.begin() + y * row + 1 + n);
  }
  result.final_heaters = std::move(heaters);
  return result;
}

}  // namespace framestage::sim
