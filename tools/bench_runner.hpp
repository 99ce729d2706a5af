// `framestage bench`'s measuring part: one workload, every strategy side by side, every
// destination byte checked against a host reference.
//
// What a frame's time is, for every strategy alike: from the call that starts moving the frame
// (the first copy, or end_frame()) until the host sees an event recorded after the last of it
// complete. The frame's bytes are written before the clock starts: into the pinned source for the
// baselines, into reserve_upload() / frame_alloc() space for framestage, so each starts with its
// data where it would be. The first frames of each strategy are warm-up and not counted.
#pragma once

#include "workload.hpp"

#include <framestage/backend.hpp>
#include <framestage/config.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace framestage::tools {

/// @brief The ways a frame's items can reach their destinations.
enum class Strategy {
  ceiling,                  ///< one contiguous pinned copy of the same bytes (the limit)
  per_item,                 ///< cudaMemcpyAsync per item from pinned memory
  per_item_pageable,        ///< cudaMemcpyAsync per item from pageable memory
  batch_async,              ///< CudaBackend::copy_batch_async (cudaMemcpyBatchAsync), pinned
  framestage,               ///< framestage with the configured strategy (the planner's choice)
  framestage_copy_scatter,  ///< framestage, copy_scatter forced
  framestage_zero_copy,     ///< framestage, zero_copy forced
  framestage_direct,        ///< framestage, direct forced
};

inline constexpr std::array kAllStrategies{
    Strategy::ceiling,
    Strategy::per_item,
    Strategy::per_item_pageable,
    Strategy::batch_async,
    Strategy::framestage,
    Strategy::framestage_copy_scatter,
    Strategy::framestage_zero_copy,
    Strategy::framestage_direct,
};

/// @brief "ceiling", "per-item", "per-item-pageable", "batch-async", "framestage",
/// "framestage-copy-scatter", "framestage-zero-copy", "framestage-direct".
[[nodiscard]] std::string_view to_string(Strategy strategy) noexcept;
[[nodiscard]] std::optional<Strategy> parse_strategy(std::string_view name) noexcept;
/// @brief What the strategy is, in a few words, for tables and --help.
[[nodiscard]] std::string_view describe(Strategy strategy) noexcept;

/// @brief Median, 95th percentile (nearest rank) and friends of a sample, in microseconds.
struct Summary {
  double median_us = 0;
  double p95_us = 0;
  double mean_us = 0;
  double min_us = 0;
  double max_us = 0;
  [[nodiscard]] static Summary of(std::vector<double> samples_us);
};

/// @brief What one strategy did on one workload.
struct StrategyResult {
  Strategy strategy = Strategy::ceiling;
  std::string skipped;  ///< why it did not run, or empty
  std::uint32_t warmup_frames = 0;
  std::vector<double> frame_us;  ///< measured frames
  std::vector<double> host_us;   ///< per frame: until the enqueueing call(s) returned
  Summary time;
  Summary host;
  double gbps = 0;  ///< payload bytes per frame / median time
  /// framestage strategies: the strategy of the last frame ("copy_scatter", "zero_copy",
  /// "direct"; "mirror_copies" for a frame of staged ranges only, "all_direct" for one whose
  /// uploads were all large enough to go as their own copies) and its FrameStats as JSON.
  std::string planner_choice;
  nlohmann::json last_frame;
  bool contents_ok = false;
  std::size_t checked_bytes = 0;
  std::size_t mismatched_bytes = 0;
  std::size_t first_mismatch = 0;  ///< byte offset in the checked buffer
};

/// @brief framestage's planner choice run the way a simulation runs it: frames back to back,
/// the host generating and writing frame N+1 while frame N is in flight, `buffering` slots.
struct PipelinedResult {
  std::uint32_t frames = 0;
  double period_us = 0;  ///< wall time per frame, the host's work included
  /// Median time the host spent writing a frame through framestage's calls, from arrays it
  /// already holds (begin_frame to the last call; the bench's byte generator is not in it).
  double host_write_us = 0;
  double gbps = 0;
  bool contents_ok = false;
};

struct WorkloadResult {
  WorkloadSpec spec;
  std::size_t payload_bytes = 0;
  std::size_t destination_bytes = 0;
  double mean_item_bytes = 0;
  std::vector<StrategyResult> results;
  std::optional<PipelinedResult> pipelined;

  /// @brief The result of `strategy` if it ran.
  [[nodiscard]] const StrategyResult* find(Strategy strategy) const;
  [[nodiscard]] bool contents_ok() const;
};

struct BenchOptions {
  Config config;  ///< framestage's settings; buffering comes from each workload
  std::vector<Strategy> strategies{kAllStrategies.begin(), kAllStrategies.end()};
  std::optional<std::uint32_t> frames;  ///< overrides every workload's frames
  /// A strategy whose frames are slow runs fewer of them (never fewer than 3) so that it takes
  /// about this long; 0 runs every frame.
  double max_seconds_per_strategy = 0.5;
  bool pipelined = true;
};

/// @brief Hears how a run goes; the default does nothing.
class Progress {
 public:
  virtual ~Progress() = default;
  /// A strategy (or "pipelined") of a workload starts.
  virtual void strategy_started(std::string_view /*workload*/, std::string_view /*strategy*/) {}
  /// Its warm-up is over and `frames` measured frames follow.
  virtual void frames_planned(std::uint32_t /*frames*/) {}
  virtual void frame_done() {}
  virtual void strategy_finished() {}
};

/// @brief Strategy runs of each workload with `options`: the units a progress bar counts.
[[nodiscard]] std::size_t planned_runs(const BenchOptions& options);

/// @brief Runs every strategy of `options` on `spec`, in kAllStrategies order.
/// @throws Error from the backend or the coordinator (a mismatch is a result, not an error).
[[nodiscard]] WorkloadResult run_workload(Backend& backend, const WorkloadSpec& spec,
                                          const BenchOptions& options, Progress& progress);

}  // namespace framestage::tools
