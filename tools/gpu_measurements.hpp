// The GPU measurements of `framestage bench` (CUDA builds, run on a CUDA backend).
#pragma once

#include <framestage/framestage.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace framestage::bench {

/// What `framestage measure` runs.
struct MeasureOptions {
  std::uint64_t seed = 1;
  /// Steps to run, by name (tools/framestage_main.cpp lists them); empty: every step.
  std::vector<std::string> steps;
  /// CUDA ordinals the broadcast step sends to (repeats allowed: "0,0" is two backends on one
  /// GPU); empty: devices 0 and 1 where two are present, else the step says it is skipped.
  std::vector<int> broadcast_devices;
};

/// Measures uploads of many small items, the mirror path, host cost per item, pipelining and the
/// broadcast to several devices, each against a baseline from the same run, and prints the
/// table. Returns the exit status: non-zero if any delivered byte was wrong.
int run_gpu_measurements(Backend& backend, const MeasureOptions& options);

}  // namespace framestage::bench
