// libFuzzer target: the `framestage bench` workload parser, WorkloadSpec::from_json, on
// arbitrary bytes (built and run by tools/fuzz).
//
// Every input must either parse into a spec that survives a round trip through to_json() and
// has a summary (and, when small enough to draw quickly, a consistent ItemLayout), or be
// rejected with Error(bad_config) and a message naming the origin. Anything else is a finding.
#include "workload.hpp"

#include "default_suite.hpp"

#include <framestage/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <string_view>

// The built-in suite is generated into the build tree; the parser does not need it.
std::span<const framestage::tools::EmbeddedWorkload>
framestage::tools::embedded_default_workloads() noexcept {
  return {};
}

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_workload: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using framestage::tools::ItemLayout;
  using framestage::tools::WorkloadSpec;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const WorkloadSpec spec = WorkloadSpec::from_json(text, "fuzz-input");
    if (!(WorkloadSpec::from_json(spec.to_json().dump(), "round-trip") == spec)) {
      finding("the spec does not survive to_json/from_json");
    }
    if (spec.summary().empty()) finding("empty summary");
    if (spec.items_per_frame <= 2048 && spec.max_item_bytes <= 4096) {
      const ItemLayout layout = ItemLayout::make(spec);
      if (layout.bytes.size() != spec.items_per_frame ||
          std::accumulate(layout.bytes.begin(), layout.bytes.end(), std::size_t{0}) !=
              layout.payload_bytes) {
        finding("the item layout does not match the spec");
      }
    }
  } catch (const framestage::Error& e) {
    if (e.category() != framestage::ErrorCategory::bad_config ||
        e.message().find("fuzz-input") == std::string::npos) {
      std::fprintf(stderr, "fuzz_workload: rejected without a bad_config message: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
