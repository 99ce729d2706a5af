// The default suite of `framestage bench`: the workload files named in tools/CMakeLists.txt,
// compiled into the program from bench/workloads/ (default_suite.cpp is generated).
#pragma once

#include <span>

namespace framestage::tools {

struct EmbeddedWorkload {
  const char* path;  ///< where the file lives in the source tree, for messages
  const char* text;  ///< its JSON
};

/// The default suite's files, in the order they run.
[[nodiscard]] std::span<const EmbeddedWorkload> embedded_default_workloads() noexcept;

}  // namespace framestage::tools
