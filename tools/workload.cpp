#include "workload.hpp"

#include "default_suite.hpp"

#include <framestage/detail/enum_words.hpp>
#include <framestage/error.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

namespace framestage::tools {
namespace {

using json = nlohmann::json;

constexpr std::array<std::string_view, 3> kDistributionWords{"fixed", "uniform", "log_uniform"};
constexpr std::array<std::string_view, 3> kDestinationWords{"scattered", "contiguous", "mirror"};
constexpr std::array<std::string_view, 2> kOrderWords{"ascending", "random"};
static_assert(static_cast<std::size_t>(SizeDistribution::log_uniform) ==
              kDistributionWords.size() - 1);
static_assert(static_cast<std::size_t>(DestinationPattern::mirror) == kDestinationWords.size() - 1);
static_assert(static_cast<std::size_t>(IssueOrder::random) == kOrderWords.size() - 1);
// Word i names the buffering depth 1 + i, as in Config.
constexpr std::array<std::string_view, 3> kBufferingWords{"single", "double", "triple"};
constexpr std::array<std::string_view, 10> kKeys{
    "name",  "description", "items_per_frame", "item_bytes", "destination",
    "order", "frames",      "buffering",       "threads",    "seed"};

std::string in_quotes(std::string_view text) {
  return "'" + std::string(text) + "'";
}

template <std::size_t N>
std::string one_of(const std::array<std::string_view, N>& words) {
  std::string out;
  for (std::size_t i = 0; i < N; ++i) {
    out += (i == 0 ? "" : i + 1 == N ? " or " : ", ");
    out += "\"" + std::string(words[i]) + "\"";
  }
  return out;
}

/// Reads one workload object and says exactly which key is wrong.
class Reader {
 public:
  Reader(const json& object, std::string_view origin) : object_(object), origin_(origin) {}

  [[noreturn]] void fail(std::string_view key, const std::string& expected) const {
    fail_at(key, expected, find(key));
  }
  [[noreturn]] void fail_whole(const std::string& message) const {
    throw Error(ErrorCategory::bad_config, "workload " + in_quotes(origin_) + ": " + message);
  }

  [[nodiscard]] const json* find(std::string_view key) const {
    const auto it = object_.find(std::string(key));
    return it == object_.end() ? nullptr : &*it;
  }

  std::uint64_t integer(std::string_view key, std::uint64_t min, std::uint64_t max,
                        std::uint64_t fallback, bool required = false) const {
    return integer_in(object_, key, key, min, max, fallback, required);
  }

  // `path` is how the key is named in messages ("item_bytes.min").
  std::uint64_t integer_in(const json& object, std::string_view key, std::string_view path,
                           std::uint64_t min, std::uint64_t max, std::uint64_t fallback,
                           bool required) const {
    const auto it = object.find(std::string(key));
    const std::string expected =
        "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    if (it == object.end()) {
      if (required) fail_at(path, expected, nullptr);
      return fallback;
    }
    if (it->is_number_unsigned()) {
      const auto value = it->get<std::uint64_t>();
      if (value >= min && value <= max) return value;
    }
    fail_at(path, expected, &*it);
  }

  template <std::size_t N>
  std::size_t word(std::string_view key, const std::array<std::string_view, N>& words,
                   std::size_t fallback, bool required = false) const {
    return word_in(object_, key, key, words, fallback, required);
  }

  template <std::size_t N>
  std::size_t word_in(const json& object, std::string_view key, std::string_view path,
                      const std::array<std::string_view, N>& words, std::size_t fallback,
                      bool required) const {
    const auto it = object.find(std::string(key));
    if (it == object.end()) {
      if (required) fail_at(path, one_of(words), nullptr);
      return fallback;
    }
    if (it->is_string()) {
      const auto& text = it->get_ref<const std::string&>();
      for (std::size_t i = 0; i < N; ++i)
        if (text == words[i]) return i;
    }
    fail_at(path, one_of(words), &*it);
  }

  std::string text(std::string_view key, bool required) const {
    const json* value = find(key);
    if (value == nullptr) {
      if (required) fail(key, "a string");
      return {};
    }
    if (!value->is_string()) fail(key, "a string");
    return value->get<std::string>();
  }

  [[noreturn]] void fail_at(std::string_view path, const std::string& expected,
                            const json* value) const {
    throw Error(
        ErrorCategory::bad_config,
        "workload " + in_quotes(origin_) + ": key \"" + std::string(path) + "\": expected " +
            expected + ", got " +
            (value == nullptr ? std::string("nothing (the key is required)") : value->dump()));
  }

 private:
  const json& object_;
  std::string_view origin_;
};

std::size_t align16(std::size_t bytes) {
  return (bytes + 15) / 16 * 16;
}

// A uniform double in [0, 1) from 53 bits, the same on every standard library.
double unit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace

std::string exact_size_text(std::size_t bytes) {
  if (bytes >= (std::size_t{1} << 20) && bytes % (std::size_t{1} << 20) == 0)
    return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (std::size_t{1} << 10) && bytes % (std::size_t{1} << 10) == 0)
    return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " B";
}

std::string_view to_string(SizeDistribution distribution) noexcept {
  return detail::word_of(distribution, kDistributionWords);
}
std::string_view to_string(DestinationPattern destination) noexcept {
  return detail::word_of(destination, kDestinationWords);
}
std::string_view to_string(IssueOrder order) noexcept {
  return detail::word_of(order, kOrderWords);
}

WorkloadSpec WorkloadSpec::from_json(std::string_view text, std::string_view origin) {
  json object;
  try {
    object = json::parse(text);
  } catch (const json::exception& e) {  // parse errors, and numbers out of range (fuzzing)
    throw Error(ErrorCategory::bad_config,
                "workload " + in_quotes(origin) + ": not valid JSON: " + e.what());
  }
  const Reader read(object, origin);
  if (!object.is_object()) read.fail_whole("expected a JSON object, got " + object.dump());
  for (const auto& [key, value] : object.items()) {
    if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end()) {
      std::string known;
      for (const auto k : kKeys)
        known += (known.empty() ? "" : ", ") + std::string(k);
      read.fail_whole("unknown key \"" + key + "\" (known keys: " + known + ")");
    }
  }

  WorkloadSpec spec;
  spec.name = read.text("name", true);
  const bool name_ok = !spec.name.empty() && spec.name.size() <= 64 &&
                       std::all_of(spec.name.begin(), spec.name.end(), [](char c) {
                         return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
                       });
  if (!name_ok) read.fail("name", "1 to 64 letters, digits, '.', '_' or '-'");
  spec.description = read.text("description", false);
  spec.items_per_frame = read.integer("items_per_frame", 1, kMaxItemsPerFrame, 0, true);

  // item_bytes: a number (every item that size) or {"distribution", "min", "max"}.
  const json* sizes = read.find("item_bytes");
  const std::string sizes_expected =
      "an integer from 1 to " + std::to_string(kMaxItemBytes) +
      " or an object {\"distribution\": " + one_of(kDistributionWords) + ", \"min\", \"max\"}";
  if (sizes == nullptr) read.fail("item_bytes", sizes_expected);
  if (sizes->is_number_unsigned()) {
    spec.size_distribution = SizeDistribution::fixed;
    spec.min_item_bytes = read.integer("item_bytes", 1, kMaxItemBytes, 0, true);
    spec.max_item_bytes = spec.min_item_bytes;
  } else if (sizes->is_object()) {
    for (const auto& [key, value] : sizes->items()) {
      if (key != "distribution" && key != "min" && key != "max") {
        read.fail_whole("unknown key \"item_bytes." + key + "\" (known: distribution, min, max)");
      }
    }
    spec.size_distribution = static_cast<SizeDistribution>(read.word_in(
        *sizes, "distribution", "item_bytes.distribution", kDistributionWords, 0, true));
    spec.min_item_bytes =
        read.integer_in(*sizes, "min", "item_bytes.min", 1, kMaxItemBytes, 0, true);
    const bool fixed = spec.size_distribution == SizeDistribution::fixed;
    spec.max_item_bytes = read.integer_in(*sizes, "max", "item_bytes.max", spec.min_item_bytes,
                                          kMaxItemBytes, spec.min_item_bytes, !fixed);
    if (fixed && spec.max_item_bytes != spec.min_item_bytes) {
      read.fail_at("item_bytes.max", "no \"max\" for a fixed size, or the same value as \"min\"",
                   &(*sizes)["max"]);
    }
  } else {
    read.fail("item_bytes", sizes_expected);
  }
  if (spec.items_per_frame * spec.max_item_bytes > kMaxFrameBytes) {
    read.fail_whole("items_per_frame (" + std::to_string(spec.items_per_frame) +
                    ") times the largest item (" + std::to_string(spec.max_item_bytes) +
                    " B) must be at most " + std::to_string(kMaxFrameBytes) + " bytes a frame");
  }

  spec.destination =
      static_cast<DestinationPattern>(read.word("destination", kDestinationWords, 0, true));
  spec.order = static_cast<IssueOrder>(read.word("order", kOrderWords, 0));
  if (spec.destination == DestinationPattern::mirror && spec.order != IssueOrder::ascending) {
    read.fail("order", "\"ascending\" for a mirror destination (frame_alloc order is the layout)");
  }
  spec.frames = static_cast<std::uint32_t>(read.integer("frames", 1, kMaxFrames, spec.frames));
  if (const json* buffering = read.find("buffering")) {
    std::uint64_t value = 0;
    if (buffering->is_string()) {
      const auto& word = buffering->get_ref<const std::string&>();
      for (std::size_t i = 0; i < kBufferingWords.size(); ++i)
        if (word == kBufferingWords[i]) value = i + 1;
    } else if (buffering->is_number_unsigned()) {
      value = buffering->get<std::uint64_t>();
    }
    if (value < 1 || value > kMaxBuffering) {
      read.fail("buffering", "an integer from 1 to " + std::to_string(kMaxBuffering) + " or " +
                                 one_of(kBufferingWords));
    }
    spec.buffering = static_cast<std::uint32_t>(value);
  }
  spec.threads = static_cast<std::uint32_t>(read.integer("threads", 1, kMaxThreads, spec.threads));
  spec.seed = read.integer("seed", 0, ~std::uint64_t{0}, spec.seed);
  return spec;
}

WorkloadSpec WorkloadSpec::from_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorCategory::bad_config, "workload " + in_quotes(path.string()) +
                                               ": cannot be read: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return from_json(text.str(), path.string());
}

nlohmann::ordered_json WorkloadSpec::to_json() const {
  nlohmann::ordered_json out;
  out["name"] = name;
  out["description"] = description;
  out["items_per_frame"] = items_per_frame;
  nlohmann::ordered_json sizes;
  sizes["distribution"] = std::string(to_string(size_distribution));
  sizes["min"] = min_item_bytes;
  sizes["max"] = max_item_bytes;
  out["item_bytes"] = sizes;
  out["destination"] = std::string(to_string(destination));
  out["order"] = std::string(to_string(order));
  out["frames"] = frames;
  out["buffering"] = buffering;
  out["threads"] = threads;
  out["seed"] = seed;
  return out;
}

std::string WorkloadSpec::summary() const {
  std::string sizes = min_item_bytes == max_item_bytes
                          ? exact_size_text(min_item_bytes)
                          : exact_size_text(min_item_bytes) + "-" +
                                exact_size_text(max_item_bytes) + " (" +
                                std::string(to_string(size_distribution)) + ")";
  std::string out = std::to_string(items_per_frame) + (items_per_frame == 1 ? " item" : " items") +
                    " of " + sizes + ", " + std::string(to_string(destination));
  if (destination != DestinationPattern::mirror) out += ", " + std::string(to_string(order));
  out += ", " + std::to_string(threads) + (threads == 1 ? " thread" : " threads");
  out += ", buffering " + std::to_string(buffering);
  return out;
}

ItemLayout ItemLayout::make(const WorkloadSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  const std::size_t n = spec.items_per_frame;
  ItemLayout layout;
  layout.bytes.resize(n);
  layout.source_offsets.resize(n);
  layout.destination_offsets.resize(n);
  const double log_min = std::log(static_cast<double>(spec.min_item_bytes));
  const double log_max = std::log(static_cast<double>(spec.max_item_bytes) + 1.0);
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t bytes = spec.min_item_bytes;
    if (spec.size_distribution == SizeDistribution::uniform) {
      bytes += rng() % (spec.max_item_bytes - spec.min_item_bytes + 1);
    } else if (spec.size_distribution == SizeDistribution::log_uniform) {
      bytes = static_cast<std::size_t>(std::exp(log_min + unit(rng) * (log_max - log_min)));
      bytes = std::clamp(bytes, spec.min_item_bytes, spec.max_item_bytes);
    }
    layout.bytes[i] = bytes;
    layout.largest_item_bytes = std::max(layout.largest_item_bytes, bytes);
  }

  // Destinations in address order first; a random issue order then shuffles the items.
  switch (spec.destination) {
    case DestinationPattern::scattered: {
      // Each item in its own slot, twice the largest item, at a random 16-byte step inside it:
      // no two destinations touch, as in sparse updates of a state array.
      const std::size_t slot = 2 * align16(spec.max_item_bytes);
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t steps = (slot - layout.bytes[i]) / 16 + 1;
        layout.destination_offsets[i] = i * slot + (rng() % steps) * 16;
      }
      layout.destination_bytes = n * slot;
      break;
    }
    case DestinationPattern::contiguous:
    case DestinationPattern::mirror: {
      std::size_t at = 0;
      for (std::size_t i = 0; i < n; ++i) {
        layout.destination_offsets[i] = at;
        at += layout.bytes[i];
      }
      layout.destination_bytes = at;
      break;
    }
  }
  if (spec.order == IssueOrder::random) {
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i)
      order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::size_t> bytes(n);
    std::vector<std::size_t> destinations(n);
    for (std::size_t i = 0; i < n; ++i) {
      bytes[i] = layout.bytes[order[i]];
      destinations[i] = layout.destination_offsets[order[i]];
    }
    layout.bytes = std::move(bytes);
    layout.destination_offsets = std::move(destinations);
  }
  std::size_t at = 0;
  for (std::size_t i = 0; i < n; ++i) {
    layout.source_offsets[i] = at;
    at += layout.bytes[i];
  }
  layout.payload_bytes = at;
  return layout;
}

std::vector<WorkloadSpec> load_workloads(std::span<const std::filesystem::path> paths) {
  std::vector<WorkloadSpec> out;
  for (const auto& path : paths) {
    std::error_code error;
    if (std::filesystem::is_directory(path, error)) {
      std::vector<std::filesystem::path> files;
      for (const auto& entry : std::filesystem::directory_iterator(path))
        if (entry.is_regular_file() && entry.path().extension() == ".json")
          files.push_back(entry.path());
      if (files.empty()) {
        throw Error(ErrorCategory::bad_config,
                    "workload directory " + in_quotes(path.string()) + " holds no *.json files");
      }
      std::sort(files.begin(), files.end());
      for (const auto& file : files)
        out.push_back(WorkloadSpec::from_file(file));
    } else if (std::filesystem::exists(path, error)) {
      out.push_back(WorkloadSpec::from_file(path));
    } else {
      throw Error(ErrorCategory::bad_config,
                  "workload " + in_quotes(path.string()) + ": no such file or directory");
    }
  }
  std::set<std::string> names;
  for (const auto& spec : out) {
    if (!names.insert(spec.name).second) {
      throw Error(ErrorCategory::bad_config,
                  "two workloads are named \"" + spec.name + "\"; names must be unique");
    }
  }
  return out;
}

std::vector<WorkloadSpec> default_suite() {
  std::vector<WorkloadSpec> out;
  for (const EmbeddedWorkload& file : embedded_default_workloads())
    out.push_back(WorkloadSpec::from_json(file.text, file.path));
  return out;
}

void fill_frame_bytes(std::span<std::byte> bytes, std::uint64_t tag) noexcept {
  // A multiply-xorshift of (word index, tag): cheap, and no two words or tags alike.
  const std::uint64_t salt = (tag + 1) * 0xD1B54A32D192ED03ull;
  const std::size_t words = bytes.size() / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t x = (i ^ salt) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    std::memcpy(bytes.data() + 8 * i, &x, 8);
  }
  for (std::size_t i = words * 8; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::byte>((i ^ salt) * 0x9Dull >> 3);
}

}  // namespace framestage::tools
