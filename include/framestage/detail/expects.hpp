/// @file expects.hpp
/// @brief Precondition checks that throw framestage::Error with the failing condition named.
#pragma once

#include <framestage/error.hpp>

#include <sstream>
#include <string>

// The file's base name keeps messages short and free of build-machine paths.
#if defined(__FILE_NAME__)
#define FRAMESTAGE_SOURCE_FILE __FILE_NAME__
#else
#define FRAMESTAGE_SOURCE_FILE __FILE__
#endif

namespace framestage::detail {

/// Builds the message out of line so that the check itself stays a single branch.
template <class... Parts>
[[noreturn]] void throw_error(ErrorCategory category, const char* file, int line,
                              const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  out << " (" << file << ':' << line << ')';
  throw Error(category, out.str());
}

}  // namespace framestage::detail

/// @brief Throws framestage::Error(category, message) unless `condition` holds.
///
/// The message parts are streamed together, so they can name the argument and the value it got:
/// `FRAMESTAGE_EXPECTS(n > 0, misuse, "frame_alloc: count must be > 0, got ", n)`.
#define FRAMESTAGE_EXPECTS(condition, category, ...)                                    \
  do {                                                                                  \
    if (!(condition)) [[unlikely]] {                                                    \
      ::framestage::detail::throw_error(::framestage::ErrorCategory::category,          \
                                        FRAMESTAGE_SOURCE_FILE, __LINE__, __VA_ARGS__); \
    }                                                                                   \
  } while (false)

/// @brief Throws framestage::Error(category, message) unconditionally.
#define FRAMESTAGE_FAIL(category, ...)                                                             \
  ::framestage::detail::throw_error(::framestage::ErrorCategory::category, FRAMESTAGE_SOURCE_FILE, \
                                    __LINE__, __VA_ARGS__)
