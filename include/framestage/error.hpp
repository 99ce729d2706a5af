/// @file error.hpp
/// @brief The one exception type framestage throws, and its categories.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace framestage {

/// @brief What kind of failure an Error reports; callers switch on this, not on the text.
enum class ErrorCategory {
  bad_config,     ///< a Config value or JSON document is invalid
  misuse,         ///< an API call out of order, or with an argument the contract forbids
  out_of_memory,  ///< an arena, descriptor table or backend allocation could not be satisfied
  cuda,           ///< the CUDA runtime failed (the host backend reports its emulated faults so too)
  timeout,        ///< waiting for a slot or an event ran past its time limit
  failed_state,   ///< the coordinator failed earlier; the message carries the first error
};

/// @brief Short lower-case name of a category ("bad_config", "misuse", ...).
[[nodiscard]] std::string_view to_string(ErrorCategory category) noexcept;

/// @brief The exception every framestage call throws.
///
/// what() reads "framestage: <category>: <message>", so that a log line names both.
class Error : public std::runtime_error {
 public:
  Error(ErrorCategory category, const std::string& message);

  [[nodiscard]] ErrorCategory category() const noexcept { return category_; }
  /// @brief The message without the "framestage: <category>: " prefix.
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

 private:
  ErrorCategory category_;
  std::string message_;
};

namespace detail {
/// @brief Whether `e` is an Error of the cuda category.
[[nodiscard]] inline bool is_cuda_error(const std::exception& e) noexcept {
  const auto* error = dynamic_cast<const Error*>(&e);
  return error != nullptr && error->category() == ErrorCategory::cuda;
}
}  // namespace detail

}  // namespace framestage
