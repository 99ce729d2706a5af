/// @file workload.hpp
/// @brief What `framestage bench` runs: a frame of many items, described in a JSON file.
///
/// A workload file is one JSON object (bench/workloads/ holds the default suite):
///
/// ```json
/// {
///   "name": "items-100k",
///   "description": "100,000 small updates to scattered slots of a state array",
///   "items_per_frame": 100000,
///   "item_bytes": {"distribution": "uniform", "min": 16, "max": 256},
///   "destination": "scattered",
///   "order": "ascending",
///   "frames": 50,
///   "buffering": "triple",
///   "threads": 1,
///   "seed": 1
/// }
/// ```
///
/// `name`, `items_per_frame`, `item_bytes` and `destination` are required; the rest have the
/// defaults shown by WorkloadSpec. Unknown keys, wrong types and values out of range are
/// rejected with an Error(bad_config) naming the file, the key and what it allows.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace framestage::tools {

/// @brief How item sizes are drawn (fixed: every item is `min_item_bytes`).
enum class SizeDistribution { fixed, uniform, log_uniform };

/// @brief Where a frame's items go.
enum class DestinationPattern {
  scattered,   ///< each item to its own slot of a persistent device buffer (slots never touch)
  contiguous,  ///< items back to back in a persistent device buffer
  mirror,      ///< frame_alloc'd items staged for the slot's device mirror
};

/// @brief The order items are issued in (their destinations ascend, or are shuffled).
enum class IssueOrder { ascending, random };

[[nodiscard]] std::string_view to_string(SizeDistribution distribution) noexcept;
[[nodiscard]] std::string_view to_string(DestinationPattern destination) noexcept;
[[nodiscard]] std::string_view to_string(IssueOrder order) noexcept;

/// @brief One workload, as its JSON file describes it.
struct WorkloadSpec {
  static constexpr std::size_t kMaxItemsPerFrame = std::size_t{1} << 22;
  static constexpr std::size_t kMaxItemBytes = std::size_t{256} << 20;
  /// items_per_frame * the largest item size may not exceed this.
  static constexpr std::size_t kMaxFrameBytes = std::size_t{1} << 30;
  static constexpr std::uint32_t kMaxFrames = 1'000'000;
  static constexpr std::uint32_t kMaxBuffering = 8;
  static constexpr std::uint32_t kMaxThreads = 64;

  std::string name;  ///< letters, digits, '.', '_' and '-'
  std::string description;
  std::size_t items_per_frame = 0;
  SizeDistribution size_distribution = SizeDistribution::fixed;
  std::size_t min_item_bytes = 0;
  std::size_t max_item_bytes = 0;
  DestinationPattern destination = DestinationPattern::scattered;
  IssueOrder order = IssueOrder::ascending;
  std::uint32_t frames = 100;   ///< frames measured per strategy, at most (see bench's budget)
  std::uint32_t buffering = 3;  ///< the coordinator's slots
  std::uint32_t threads = 1;    ///< host threads that fill each framestage frame
  std::uint64_t seed = 1;       ///< item sizes, destinations and order

  /// @brief Parses and validates one workload object; `origin` names it in errors (a path).
  /// @throws Error(bad_config) naming `origin`, the key and the values allowed.
  [[nodiscard]] static WorkloadSpec from_json(std::string_view text, std::string_view origin);
  /// @throws Error(bad_config) if the file cannot be read or is not a valid workload.
  [[nodiscard]] static WorkloadSpec from_file(const std::filesystem::path& path);

  /// @brief Every key, defaults included; from_json(to_json().dump()) gives an equal spec.
  [[nodiscard]] nlohmann::ordered_json to_json() const;
  /// @brief One line for humans: "100000 items of 16-256 B (uniform), scattered, ascending".
  [[nodiscard]] std::string summary() const;

  friend bool operator==(const WorkloadSpec&, const WorkloadSpec&) = default;
};

/// @brief Where every item of a frame comes from and goes to, fixed for the whole run.
///
/// Sources are packed back to back in issue order (the bytes one contiguous copy would move);
/// destinations are offsets into the destination buffer (scattered, contiguous) or, for the
/// mirror pattern, the same packed offsets in the device mirror.
struct ItemLayout {
  std::vector<std::size_t> bytes;                ///< per item, in issue order
  std::vector<std::size_t> source_offsets;       ///< packed, in issue order
  std::vector<std::size_t> destination_offsets;  ///< per item, in issue order
  std::size_t payload_bytes = 0;                 ///< sum of bytes
  std::size_t destination_bytes = 0;             ///< the destination buffer's size
  std::size_t largest_item_bytes = 0;

  /// @brief Draws sizes and destinations from the spec's seed; the same spec, the same layout.
  [[nodiscard]] static ItemLayout make(const WorkloadSpec& spec);
};

/// @brief Workloads from files and directories (every `*.json` in a directory, by name).
/// @throws Error(bad_config) for a path that does not exist, a directory without workloads, a
///         bad file, or two workloads with the same name.
[[nodiscard]] std::vector<WorkloadSpec> load_workloads(
    std::span<const std::filesystem::path> paths);

/// @brief The built-in default suite: bench/workloads' default files, compiled in.
[[nodiscard]] std::vector<WorkloadSpec> default_suite();

/// @brief Writes the frame's contents for `tag` into `bytes`: every byte depends on its
/// position and the tag, so frames (and strategies) never leave the same bytes behind.
void fill_frame_bytes(std::span<std::byte> bytes, std::uint64_t tag) noexcept;

/// "64 KiB", "2 MiB" or "100 B": the largest unit that divides `bytes` exactly.
[[nodiscard]] std::string exact_size_text(std::size_t bytes);

}  // namespace framestage::tools
