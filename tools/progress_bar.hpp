// A one-line progress bar for `framestage bench`, drawn on stderr only when it is a terminal.
#pragma once

#include "bench_runner.hpp"

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <string>

namespace framestage::tools {

/// @brief Counts strategy runs (and frames within the current one) and redraws a bar, at most
/// ten times a second. Draws nothing when disabled, so pipes and logs stay clean.
class ProgressBar final : public Progress {
 public:
  /// @param total_runs every strategy run of the whole bench (planned_runs summed)
  /// @param enabled    false: stay silent (output is not a terminal, or --quiet)
  ProgressBar(std::size_t total_runs, bool enabled);
  ~ProgressBar() override;

  /// @brief True when stderr is a terminal.
  [[nodiscard]] static bool stderr_is_terminal();

  void strategy_started(std::string_view workload, std::string_view strategy) override;
  void frames_planned(std::uint32_t frames) override;
  void frame_done() override;
  void strategy_finished() override;

  /// @brief Erases the bar, so that other output can be printed; the next update redraws it.
  void clear();

 private:
  void draw(bool force);

  std::size_t total_runs_;
  bool enabled_;
  std::size_t runs_done_ = 0;
  std::uint32_t frames_ = 0;
  std::uint32_t frames_done_ = 0;
  std::string label_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace framestage::tools
