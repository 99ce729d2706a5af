// Shared test helper: how big the stress and soak tests run, from the environment.
//
//   FRAMESTAGE_TEST_SCALE=full   the full sizes (the 16 threads x 100,000 items, ...);
//                                unset or "ci": sizes that fit CI's 2 cores and sanitizer builds
//   FRAMESTAGE_TEST_QUICK=1      much smaller still, for runs under compute-sanitizer (wins)
//   FRAMESTAGE_STRESS_THREADS, FRAMESTAGE_STRESS_ITEMS, FRAMESTAGE_STRESS_FRAMES,
//   FRAMESTAGE_SOAK_FRAMES, FRAMESTAGE_SOAK_SEED
//                                explicit counts, overriding the scale
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace framestage::testing {

/// True when FRAMESTAGE_TEST_SCALE is "full".
inline bool scale_is_full() {
  const char* value = std::getenv("FRAMESTAGE_TEST_SCALE");
  if (value == nullptr || *value == '\0' || std::string_view(value) == "ci") return false;
  if (std::string_view(value) == "full") return true;
  throw std::invalid_argument(
      std::string("FRAMESTAGE_TEST_SCALE must be \"ci\" or \"full\", got \"") + value + "\"");
}

/// True when FRAMESTAGE_TEST_QUICK is set to anything but "0" (compute-sanitizer runs).
inline bool scale_is_quick() {
  const char* value = std::getenv("FRAMESTAGE_TEST_QUICK");
  return value != nullptr && *value != '\0' && std::string_view(value) != "0";
}

/// The positive integer in environment variable `name`, if it is set.
/// @throws std::invalid_argument (a test failure) if it is set to anything else.
inline std::optional<std::uint64_t> env_count(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  char* end = nullptr;
  const unsigned long long parsed = std::strtoull(value, &end, 10);
  if (end == value || *end != '\0' || parsed == 0 || *value == '-') {
    throw std::invalid_argument(std::string(name) + " must be a positive integer, got \"" + value +
                                "\"");
  }
  return parsed;
}

/// `env_count(name)` if set, else `quick` in quick mode, `full` at full scale, `ci` otherwise.
inline std::uint64_t scaled_count(const char* name, std::uint64_t ci, std::uint64_t full,
                                  std::uint64_t quick) {
  if (const auto set = env_count(name)) return *set;
  if (scale_is_quick()) return quick;
  return scale_is_full() ? full : ci;
}

}  // namespace framestage::testing
