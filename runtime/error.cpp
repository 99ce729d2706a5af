#include <framestage/detail/enum_words.hpp>
#include <framestage/error.hpp>

#include <array>
#include <cstddef>

namespace framestage {
namespace {

// Word i names the category whose value is i.
constexpr std::array<std::string_view, 6> kCategoryWords{"bad_config", "misuse",  "out_of_memory",
                                                         "cuda",       "timeout", "failed_state"};
static_assert(static_cast<std::size_t>(ErrorCategory::failed_state) == kCategoryWords.size() - 1);

}  // namespace

std::string_view to_string(ErrorCategory category) noexcept {
  return detail::word_of(category, kCategoryWords);
}

Error::Error(ErrorCategory category, const std::string& message)
    : std::runtime_error("framestage: " + std::string(to_string(category)) + ": " + message),
      category_(category),
      message_(message) {}

}  // namespace framestage
