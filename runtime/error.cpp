#include <framestage/error.hpp>

namespace framestage {

std::string_view to_string(ErrorCategory category) noexcept {
  switch (category) {
    case ErrorCategory::bad_config:
      return "bad_config";
    case ErrorCategory::misuse:
      return "misuse";
    case ErrorCategory::out_of_memory:
      return "out_of_memory";
    case ErrorCategory::cuda:
      return "cuda";
    case ErrorCategory::timeout:
      return "timeout";
    case ErrorCategory::failed_state:
      return "failed_state";
  }
  return "unknown";
}

Error::Error(ErrorCategory category, const std::string& message)
    : std::runtime_error("framestage: " + std::string(to_string(category)) + ": " + message),
      category_(category),
      message_(message) {}

}  // namespace framestage
