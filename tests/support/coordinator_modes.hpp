// Shared test helper: the axes the host coordinator suites run over (buffering depth, and
// whether the host backend defers completion), their names, and a small coordinator config.
#pragma once

#include <framestage/config.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace framestage::testing {

/// A coordinator with arenas of 1 MiB, 4,096 uploads a frame and a 100-ms slot time-out.
inline Config small_coordinator_config(std::uint32_t buffering) {
  Config c;
  c.buffering = buffering;
  c.arena_bytes = std::size_t{1} << 20;
  c.upload_arena_bytes = std::size_t{1} << 20;
  c.max_uploads_per_frame = 4096;
  c.slot_timeout_ms = 100;
  return c;
}

struct CompletionMode {
  std::uint32_t buffering;
  bool deferred;  ///< the host backend completes work only when asked (as a GPU would, later)
};

/// 1 to 3 slots, with immediate and deferred completion.
inline auto all_completion_modes() {
  return ::testing::Values(CompletionMode{1, false}, CompletionMode{2, false},
                           CompletionMode{3, false}, CompletionMode{1, true},
                           CompletionMode{2, true}, CompletionMode{3, true});
}

/// "immediate_2_slots", "deferred_3_slots", ...
inline std::string completion_mode_name(const ::testing::TestParamInfo<CompletionMode>& info) {
  return std::string(info.param.deferred ? "deferred_" : "immediate_") +
         std::to_string(info.param.buffering) + "_slots";
}

}  // namespace framestage::testing
