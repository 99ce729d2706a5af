// Comparing two runs: which fields differ, where, and by how much.
#include "simulation.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>

namespace framestage::sim {
namespace {

// Lines reported per field before the rest are only counted.
constexpr std::size_t kReportsPerField = 3;

class Checker {
 public:
  Checker(Tolerance tolerance, double temperature_scale)
      : tolerance_(tolerance), limit_(tolerance.temperature * temperature_scale) {}

  // Bit-identical when the tolerance is 0 (so -0.0 vs 0.0 and NaNs count too), else within it.
  [[nodiscard]] bool temperature_differs(float got, float want) const {
    if (tolerance_.temperature == 0)
      return std::bit_cast<std::uint32_t>(got) != std::bit_cast<std::uint32_t>(want);
    return !(std::fabs(static_cast<double>(got) - want) <= limit_);
  }
  [[nodiscard]] bool heat_differs(double got, double want) const {
    return !(std::fabs(got - want) <= tolerance_.total_heat * std::max(std::fabs(want), 1.0));
  }

  // Records a difference in `field`; only the first few get a line of their own.
  void report(const std::string& field, const std::string& line) {
    auto it = std::find_if(counts_.begin(), counts_.end(),
                           [&](const auto& entry) { return entry.first == field; });
    if (it == counts_.end()) it = counts_.insert(counts_.end(), {field, 0});
    if (++it->second <= kReportsPerField) problems_.push_back(field + ": " + line);
  }

  [[nodiscard]] std::vector<std::string> finish() {
    for (const auto& [field, count] : counts_) {
      if (count > kReportsPerField) {
        problems_.push_back(field + ": and " + std::to_string(count - kReportsPerField) +
                            " more differences");
      }
    }
    return std::move(problems_);
  }

 private:
  Tolerance tolerance_;
  double limit_;
  std::vector<std::pair<std::string, std::size_t>> counts_;  // per field, in first-seen order
  std::vector<std::string> problems_;
};

std::string values(double got, double want) {
  std::ostringstream s;
  s.precision(9);
  s << got << " instead of " << want << " (difference " << got - want << ")";
  return s.str();
}

double largest_magnitude(const SimResult& r) {
  double m = 1.0;
  for (float t : r.final_state)
    m = std::max(m, static_cast<double>(std::fabs(t)));
  for (float t : r.probes)
    m = std::max(m, static_cast<double>(std::fabs(t)));
  for (const Diagnostics& d : r.diagnostics)
    m = std::max(m, static_cast<double>(std::fabs(d.peak_temperature)));
  return m;
}

}  // namespace

std::vector<std::string> compare(const SimResult& got, const SimResult& want, const SimShape& shape,
                                 Tolerance tolerance) {
  const std::size_t cells = shape.cells();
  const std::size_t ticks = shape.ticks;
  if (got.diagnostics.size() != ticks || want.diagnostics.size() != ticks ||
      got.probes.size() != ticks * shape.probes || want.probes.size() != ticks * shape.probes ||
      got.final_state.size() != cells || want.final_state.size() != cells ||
      got.final_heaters.size() != cells || want.final_heaters.size() != cells) {
    return {"results have the wrong sizes for " + std::to_string(ticks) + " ticks, " +
            std::to_string(shape.probes) + " probes and " + std::to_string(cells) + " cells"};
  }
  Checker check(tolerance, largest_magnitude(want));
  const auto at = [&](std::size_t c) {
    return "cell " + std::to_string(c) + " (x " + std::to_string(c % shape.grid) + ", y " +
           std::to_string(c / shape.grid) + ")";
  };
  for (std::size_t c = 0; c < cells; ++c) {
    if (std::bit_cast<std::uint32_t>(got.final_heaters[c]) !=
        std::bit_cast<std::uint32_t>(want.final_heaters[c])) {
      check.report("final heaters",
                   at(c) + ": " + values(got.final_heaters[c], want.final_heaters[c]));
    }
  }
  for (std::size_t c = 0; c < cells; ++c) {
    if (check.temperature_differs(got.final_state[c], want.final_state[c])) {
      check.report("final temperature",
                   at(c) + ": " + values(got.final_state[c], want.final_state[c]));
    }
  }
  for (std::size_t t = 0; t < ticks; ++t) {
    const Diagnostics& g = got.diagnostics[t];
    const Diagnostics& w = want.diagnostics[t];
    if (check.heat_differs(g.total_heat, w.total_heat)) {
      check.report("total heat",
                   "tick " + std::to_string(t) + ": " + values(g.total_heat, w.total_heat));
    }
    if (check.temperature_differs(g.peak_temperature, w.peak_temperature)) {
      check.report("peak temperature", "tick " + std::to_string(t) + ": " +
                                           values(g.peak_temperature, w.peak_temperature));
    }
    for (std::uint32_t k = 0; k < shape.probes; ++k) {
      const std::size_t i = t * shape.probes + k;
      if (check.temperature_differs(got.probes[i], want.probes[i])) {
        check.report("probes", "tick " + std::to_string(t) + ", probe " + std::to_string(k) +
                                   " at " + at(probe_cell(shape, k)) + ": " +
                                   values(got.probes[i], want.probes[i]));
      }
    }
  }
  return check.finish();
}

}  // namespace framestage::sim
