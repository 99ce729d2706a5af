// `framestage bench`'s output: the table, the JSON report and the CSV.
#pragma once

#include "bench_runner.hpp"
#include "device_info.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace framestage::tools {

/// @brief Everything one `framestage bench` run measured, and where.
struct BenchReport {
  std::vector<std::string> command_line;
  std::string started_at;  ///< UTC, ISO 8601
  DeviceInfo device;
  std::string backend_reason;  ///< why this backend (make_default_backend's reason)
  std::string config_source;   ///< "built-in defaults" or the --config file
  BenchOptions options;
  std::vector<WorkloadResult> workloads;
  /// @brief False while workloads remain (a report saved part way, or left by a crash).
  bool complete = false;
  /// @brief Why the run stopped early ("workload NAME: message"), or empty.
  std::string failure;

  /// @brief True when every strategy of every workload delivered every byte.
  [[nodiscard]] bool contents_ok() const;
};

/// @brief The report's JSON document; its structure ("schema": "framestage-bench/1"):
///
/// - `schema`, `framestage_version`, `started_at`, `command_line`
/// - `backend`: {`kind`, `description`, `emulation`, `reason`, `note`}; `device`: DeviceInfo
/// - `config`: the Config JSON framestage ran with (arenas are then sized per workload);
///   `config_source`
/// - `options`: {`strategies`, `frames`, `max_seconds_per_strategy`, `pipelined`}
/// - `workloads`: one object each: `name`, `spec` (the workload JSON, every key),
///   `payload_bytes_per_frame`, `destination_bytes`, `mean_item_bytes`, `contents_ok`,
///   `pipelined` (null or {`frames`, `period_us`, `host_write_us`, `gbps`, `contents_ok`}) and
///   `results`: one object per strategy: `strategy`, `description`, `skipped` (null or why),
///   `frames`, `warmup_frames`, `median_us`, `p95_us`, `mean_us`, `min_us`, `max_us`,
///   `host_median_us`, `gbps`, `x_ceiling`, `x_framestage` (null where that row did not run),
///   `contents_ok`, `checked_bytes`, `mismatched_bytes`, `first_mismatch`, `frame_us` (every
///   measured frame) and, for framestage rows, `planner_choice` and `last_frame` (FrameStats)
/// - `contents_ok`: every byte of every strategy matched
/// - `complete`: false in a report saved while workloads remained (bench rewrites its files after
///   each workload, so a crash leaves the ones finished); `failure`: null, or the error that
///   stopped the run, naming its workload
[[nodiscard]] nlohmann::ordered_json to_json(const BenchReport& report);

/// @brief One row per strategy that ran, with a header line.
[[nodiscard]] std::string to_csv(const BenchReport& report);

/// @brief The human-readable table of every workload.
void print_table(std::FILE* out, const BenchReport& report);

/// @brief The header of a run (backend, device, config), printed before the first workload.
void print_header(std::FILE* out, const BenchReport& report);

/// @brief One workload's table.
void print_workload(std::FILE* out, const WorkloadResult& result);

}  // namespace framestage::tools
