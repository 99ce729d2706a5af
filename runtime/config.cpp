#include <framestage/config.hpp>
#include <framestage/detail/enum_words.hpp>
#include <framestage/detail/expects.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <ostream>
#include <set>
#include <span>
#include <type_traits>
#include <utility>
#include <variant>

namespace framestage {
namespace {

// Ordered so that to_json writes the keys in the order of the table below.
using json = nlohmann::ordered_json;

constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();

// Word i names the enumerator whose value is i.
constexpr std::array<std::string_view, 2> kOverflowWords{"fail", "grow"};
constexpr std::array<std::string_view, 4> kStrategyWords{"auto", "copy_scatter", "zero_copy",
                                                         "direct"};
// Word i names the buffering depth 1 + i.
constexpr std::array<std::string_view, 3> kBufferingWords{"single", "double", "triple"};

static_assert(static_cast<std::size_t>(OverflowPolicy::grow) == kOverflowWords.size() - 1);
static_assert(static_cast<std::size_t>(UploadStrategy::direct) == kStrategyWords.size() - 1);

/// One JSON key: the member it fills, the values validate() allows, and the words that may stand
/// for a value (word i means min + i).
struct Field {
  std::string_view key;
  std::variant<std::uint32_t Config::*, std::size_t Config::*, int Config::*,
               UploadStrategy Config::*, OverflowPolicy Config::*>
      member;
  std::uint64_t min = 0;
  std::uint64_t max = kNoLimit;  // kNoLimit: whatever the member's type holds
  std::span<const std::string_view> words = {};
};

// zero_copy_max_bytes and merge_gap_bytes take any value: 0 turns the zero-copy path and range
// merging off, and a huge value sends every frame that way or merges everything.
constexpr std::array kFields{
    Field{"buffering", &Config::buffering, 1, Config::kMaxBuffering, kBufferingWords},
    Field{"arena_bytes", &Config::arena_bytes, 4096, std::uint64_t{1} << 40},
    Field{"upload_arena_bytes", &Config::upload_arena_bytes, 4096, std::uint64_t{1} << 36},
    Field{"max_uploads_per_frame", &Config::max_uploads_per_frame, 1, std::uint64_t{1} << 26},
    Field{"readback_arena_bytes", &Config::readback_arena_bytes, 4096, std::uint64_t{1} << 36},
    Field{"max_readbacks_per_frame", &Config::max_readbacks_per_frame, 1, std::uint64_t{1} << 26},
    Field{"device", &Config::device},
    Field{"direct_copy_threshold_bytes", &Config::direct_copy_threshold_bytes, 1},
    Field{"zero_copy_max_bytes", &Config::zero_copy_max_bytes},
    Field{"merge_gap_bytes", &Config::merge_gap_bytes},
    Field{"pipeline_chunk_bytes", &Config::pipeline_chunk_bytes, 4096},
    Field{"strategy", &Config::strategy, 0, kStrategyWords.size() - 1, kStrategyWords},
    Field{"overflow", &Config::overflow, 0, kOverflowWords.size() - 1, kOverflowWords},
    Field{"trim_after_frames", &Config::trim_after_frames, 1},
    Field{"slot_timeout_ms", &Config::slot_timeout_ms, 1},
};

constexpr auto kKeys = [] {
  std::array<std::string_view, kFields.size()> keys{};
  std::ranges::transform(kFields, keys.begin(), &Field::key);
  return keys;
}();

// Streamable message parts, so that every error is built by FRAMESTAGE_EXPECTS from pieces.

/// `config key "name": `
struct Key {
  std::string_view name;
};
std::ostream& operator<<(std::ostream& out, Key key) {
  return out << "config key \"" << key.name << "\": ";
}

/// `"a", "b", "c"`
struct Words {
  std::span<const std::string_view> words;
};
std::ostream& operator<<(std::ostream& out, Words list) {
  const char* separator = "";
  for (std::string_view word : list.words) {
    out << std::exchange(separator, ", ") << '"' << word << '"';
  }
  return out;
}

/// The values a field allows: `1..8 or "single", ...`, `>= 1` or `one of "fail", "grow"`.
struct Allowed {
  const Field& field;
};
std::ostream& operator<<(std::ostream& out, Allowed allowed) {
  const Field& field = allowed.field;
  if (!field.words.empty() && field.max - field.min + 1 == field.words.size()) {
    return out << "one of " << Words{field.words};
  }
  if (field.max == kNoLimit) {
    out << ">= " << field.min;
  } else {
    out << field.min << ".." << field.max;
  }
  if (!field.words.empty()) out << " or " << Words{field.words};
  return out;
}

/// The JSON type of a value, and the value itself where it is a scalar: `boolean true`.
struct Described {
  const json& value;
};
std::ostream& operator<<(std::ostream& out, Described described) {
  const json& value = described.value;
  if (value.is_object()) return out << "object";
  if (value.is_array()) return out << "array";
  if (value.is_number_float()) return out << "floating-point number " << value.dump();
  if (value.is_number_unsigned()) return out << "unsigned integer " << value.dump();
  if (value.is_number_integer()) return out << "negative integer " << value.dump();
  if (value.is_null()) return out << "null";
  return out << value.type_name() << ' ' << value.dump();
}

/// The index of the word `value` spells among `field.words`.
std::size_t read_word(const json& value, const Field& field) {
  const auto* text = value.get_ptr<const json::string_t*>();
  FRAMESTAGE_EXPECTS(text != nullptr, bad_config, Key{field.key}, "expected a string, one of ",
                     Words{field.words}, ", got ", Described{value});
  const auto found = std::ranges::find(field.words, std::string_view{*text});
  FRAMESTAGE_EXPECTS(found != field.words.end(), bad_config, Key{field.key}, "must be ",
                     Allowed{field}, "; got ", value.dump());
  return static_cast<std::size_t>(found - field.words.begin());
}

/// A non-negative JSON integer that fits in T; validate() checks the field's own range later.
template <class T>
T read_unsigned(const json& value, const Field& field) {
  FRAMESTAGE_EXPECTS(value.is_number_integer(), bad_config, Key{field.key},
                     "expected an unsigned integer", field.words.empty() ? "" : " or one of ",
                     Words{field.words}, ", got ", Described{value});
  // "-0" parses as a signed integer; it is still not negative.
  FRAMESTAGE_EXPECTS(value.is_number_unsigned() || value.get<std::int64_t>() >= 0, bad_config,
                     Key{field.key}, "must not be negative; got ", value.dump());
  const auto got = value.get<std::uint64_t>();
  FRAMESTAGE_EXPECTS(std::in_range<T>(got), bad_config, Key{field.key}, "must be at most ",
                     std::numeric_limits<T>::max(), " (the largest value its type holds); got ",
                     got);
  return static_cast<T>(got);
}

void read_field(Config& config, const Field& field, const json& value) {
  std::visit(
      [&](auto member) {
        using T = std::remove_cvref_t<decltype(config.*member)>;
        if (std::is_enum_v<T> || (value.is_string() && !field.words.empty())) {
          config.*member = static_cast<T>(field.min + read_word(value, field));
        } else if constexpr (!std::is_enum_v<T>) {
          config.*member = read_unsigned<T>(value, field);
        }
      },
      field.member);
}

/// A member's value as an integer: enumerators by their underlying value.
template <class T>
auto as_integer(T value) {
  if constexpr (std::is_enum_v<T>) {
    return static_cast<std::underlying_type_t<T>>(value);
  } else {
    return value;
  }
}

/// The whole file; Error(bad_config) naming the path and the reason if it cannot be read.
std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  bool read = file.is_open();
  std::string text;
  if (read) {
    // libstdc++'s filebuf throws when read() fails (a directory, an I/O error); others stop.
    try {
      text.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
      read = !file.bad();
    } catch (const std::ios_base::failure&) {
      read = false;
    }
  }
  FRAMESTAGE_EXPECTS(read, bad_config, "cannot read config file \"", path,
                     "\": ", std::strerror(errno));
  return text;
}

}  // namespace

std::string_view to_string(OverflowPolicy policy) noexcept {
  return detail::word_of(policy, kOverflowWords);
}

std::string_view to_string(UploadStrategy strategy) noexcept {
  return detail::word_of(strategy, kStrategyWords);
}

void Config::validate() const {
  for (const Field& field : kFields) {
    std::visit(
        [&](auto member) {
          const auto value = as_integer(this->*member);
          FRAMESTAGE_EXPECTS(
              !std::cmp_less(value, field.min) && !std::cmp_greater(value, field.max), bad_config,
              Key{field.key}, "must be ", Allowed{field}, "; got ", value);
        },
        field.member);
  }
}

Config Config::from_json(std::string_view json_text) {
  // nlohmann keeps the last of repeated keys; a config that sets one twice is a mistake.
  std::set<std::string, std::less<>> seen_keys;
  const auto reject_repeated_keys = [&](int depth, json::parse_event_t event, json& parsed) {
    FRAMESTAGE_EXPECTS(event != json::parse_event_t::key || depth != 1 ||
                           seen_keys.insert(parsed.get<std::string>()).second,
                       bad_config, "config key \"", parsed.get<std::string>(),
                       "\" appears more than once");
    return true;
  };
  json document;
  try {
    document = json::parse(json_text.begin(), json_text.end(), reject_repeated_keys);
  } catch (const json::parse_error& error) {
    FRAMESTAGE_FAIL(bad_config, "config is not valid JSON (byte ", error.byte, "): ", error.what());
  } catch (const json::exception& error) {  // a number out of range, say (found by fuzzing)
    FRAMESTAGE_FAIL(bad_config, "config is not valid JSON: ", error.what());
  }
  FRAMESTAGE_EXPECTS(document.is_object(), bad_config, "config must be a JSON object, got ",
                     Described{document});

  Config config;
  for (const auto& [key, value] : document.items()) {
    const auto field = std::ranges::find(kFields, std::string_view{key}, &Field::key);
    FRAMESTAGE_EXPECTS(field != kFields.end(), bad_config, "config key \"", key,
                       "\" is not known; allowed keys: ", Words{kKeys});
    read_field(config, *field, value);
  }
  config.validate();
  return config;
}

Config Config::from_file(const std::string& path) {
  const std::string text = read_text(path);
  try {
    return from_json(text);
  } catch (const Error& error) {
    throw Error(ErrorCategory::bad_config, path + ": " + error.message());
  }
}

std::string Config::to_json() const {
  json document = json::object();
  for (const Field& field : kFields) {
    std::visit(
        [&](auto member) {
          const auto value = this->*member;
          if constexpr (std::is_enum_v<decltype(value)>) {
            document[std::string{field.key}] = std::string{to_string(value)};
          } else {
            document[std::string{field.key}] = value;
          }
        },
        field.member);
  }
  return document.dump(2);
}

}  // namespace framestage
