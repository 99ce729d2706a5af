/// @file enum_words.hpp
/// @brief The one way an enum maps to its words (or any other per-value entry): a table indexed
/// by the value.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

namespace framestage::detail {

/// The entry of `table` for `value`, an enum whose values count 0, 1, ... in the table's order;
/// `fallback` for a value past the table's end (an enum cast from a bad integer). Each table's
/// owner checks with a static_assert that its last enumerator is the table's last entry.
template <class Enum, class T, std::size_t N>
[[nodiscard]] constexpr T entry_of(Enum value, const std::array<T, N>& table, T fallback) noexcept {
  const auto index = static_cast<std::size_t>(value);
  return index < N ? table[index] : fallback;
}

/// The word of `value` in `words`, "unknown" past their end: every enum's to_string.
template <class Enum, std::size_t N>
[[nodiscard]] constexpr std::string_view word_of(
    Enum value, const std::array<std::string_view, N>& words) noexcept {
  return entry_of(value, words, std::string_view{"unknown"});
}

}  // namespace framestage::detail
