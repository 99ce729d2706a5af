// `framestage probe`: what the device can do (copy ceilings, per-call costs) and the planner
// thresholds that follow from it, saved as JSON that `bench --config` and Config load.
#pragma once

#include "device_info.hpp"

#include <framestage/backend.hpp>
#include <framestage/config.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace framestage::tools {

struct ProbeOptions {
  Config base;  ///< settings kept as they are; the probe replaces the thresholds it calibrates
  bool quick =
      false;  ///< small copies and few repetitions: checks the probe runs, measures nothing
};

/// @brief What the probe measured, and the config it calibrated from it.
struct ProbeResult {
  DeviceInfo device;
  bool quick = false;
  std::size_t copy_bytes = 0;  ///< size of each bandwidth copy
  int copy_repetitions = 0;
  // Ceilings, GB/s (1e9 bytes a second), median of the repetitions.
  double pinned_h2d_gbps = 0;
  double pinned_d2h_gbps = 0;
  double bidirectional_gbps = 0;  ///< one H2D and one D2H copy at once, both directions' bytes
  double pageable_h2d_gbps = 0;
  // Per-call costs, microseconds.
  double copy_enqueue_us = 0;           ///< host time of one cudaMemcpyAsync call (64 B, pinned)
  double launch_enqueue_us = 0;         ///< host time of one kernel launch (the scatter kernel)
  double event_record_us = 0;           ///< host time of one cudaEventRecord
  double small_copy_round_trip_us = 0;  ///< a 64 B H2D copy enqueued and seen complete
  double small_copy_us = 0;             ///< per copy, when many 64 B copies run back to back
  double scatter_gbps = 0;              ///< the scatter kernel, device staging to device targets
  struct Crossover {
    std::size_t bytes;  ///< uploads of 128 B, this many bytes a frame
    double zero_copy_us;
    double copy_scatter_us;
  };
  std::vector<Crossover> crossovers;  ///< framestage frames, end_frame() to arrival, medians
  bool calibrated = false;
  std::string calibration_note;
  Config config;  ///< the base config with the calibrated thresholds
};

/// @brief Measures the device behind `backend` and calibrates the planner's thresholds (on the
/// CUDA backend; on the host backend the base config is kept and the note says so).
[[nodiscard]] ProbeResult run_probe(Backend& backend, const ProbeOptions& options);

void print_probe(std::FILE* out, const ProbeResult& result);

/// @brief The probe file: {"schema": "framestage-probe/1", ..., "config": {Config JSON}}.
/// Its "config" object is a Config JSON: `Config::from_json(probe["config"].dump())`.
[[nodiscard]] nlohmann::ordered_json to_json(const ProbeResult& result);

/// @brief A config for `bench --config` or `probe --config`, and where it came from.
struct LoadedConfig {
  Config config;
  std::string source;         ///< "<path>" or "<path> (probe of <device>)"
  std::string probed_device;  ///< the device a probe file was measured on, if it is one
};

/// @brief Reads a plain Config JSON file, or a probe file (its "config" object).
/// @throws Error(bad_config) naming the file and, for a bad value, the key.
[[nodiscard]] LoadedConfig load_config(const std::string& path);

}  // namespace framestage::tools
