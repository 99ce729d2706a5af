// The GPU measurements of `framestage bench` (CUDA builds, run on a CUDA backend).
#pragma once

#include <framestage/framestage.hpp>

#include <cstdint>

namespace framestage::bench {

/// Measures uploads of many small items, the mirror path, host cost per item and pipelining,
/// each against a baseline from the same run, and prints the table. Returns the exit status:
/// non-zero if any delivered byte was wrong.
int run_gpu_measurements(Backend& backend, std::uint64_t seed);

}  // namespace framestage::bench
