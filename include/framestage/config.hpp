/// @file config.hpp
/// @brief Coordinator settings, with JSON in and out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace framestage {

/// @brief What happens when a frame needs more arena or descriptor space than a slot has.
enum class OverflowPolicy {
  fail,  ///< the allocation throws Error(out_of_memory); what was staged before stays intact
  grow,  ///< the slot takes an overflow block now and a larger arena from its next use on
};

/// @brief How the small uploads of a frame reach their destinations.
enum class UploadStrategy {
  automatic,     ///< the planner picks per frame from the thresholds below
  copy_scatter,  ///< one coalesced H2D copy into device staging, then one scatter kernel
  zero_copy,     ///< one scatter kernel that reads the pinned arena directly (mapped memory)
  direct,        ///< one cudaMemcpyAsync per upload (what a user would write by hand; about
                 ///< 3 us of host time each on an H100, so only for few, large uploads)
};

[[nodiscard]] std::string_view to_string(OverflowPolicy policy) noexcept;
[[nodiscard]] std::string_view to_string(UploadStrategy strategy) noexcept;

/// @brief Everything a Coordinator is built from. Plain values; validate() checks them.
///
/// JSON keys are the member names. `buffering` also accepts "single", "double" and "triple";
/// `overflow` takes "fail" or "grow"; `strategy` takes "auto", "copy_scatter", "zero_copy" or
/// "direct". Keys left out keep their defaults.
struct Config {
  /// Slots in flight: 1 (single), 2 (double), 3 (triple) buffering, up to kMaxBuffering.
  std::uint32_t buffering = 3;
  /// Pinned arena per slot for frame_alloc and upload payloads, in bytes (mirrored on device).
  std::size_t arena_bytes = std::size_t{64} << 20;
  /// Pinned bytes per slot for the payloads of upload() and reserve_upload() (mirrored in device
  /// staging). At most 64 GiB: payload positions are 32-bit counts of 16-byte granules.
  std::size_t upload_arena_bytes = std::size_t{32} << 20;
  /// Upload descriptors (one per upload() call) a slot's table holds per frame.
  std::size_t max_uploads_per_frame = std::size_t{1} << 17;
  /// Pinned (and device staging) bytes per slot for readback regions and their descriptors.
  /// At most 64 GiB, as upload_arena_bytes.
  std::size_t readback_arena_bytes = std::size_t{16} << 20;
  /// Readback descriptors (one per readback() call) a slot's table holds per frame.
  std::size_t max_readbacks_per_frame = std::size_t{1} << 17;
  /// CUDA device ordinal (ignored by the host backend).
  int device = 0;
  /// Uploads of at least this many bytes go as their own copy-engine copy.
  std::size_t direct_copy_threshold_bytes = std::size_t{256} << 10;
  /// Frames whose small uploads total at most this many bytes use the zero-copy scatter.
  std::size_t zero_copy_max_bytes = std::size_t{64} << 10;
  /// Staged ranges closer than this are copied as one range, gap included.
  std::size_t merge_gap_bytes = std::size_t{64} << 10;
  /// Copy-and-scatter frames are copied in chunks, and each chunk's scatter runs while the next
  /// chunk is on the wire. The last chunk holds about this many payload bytes and each earlier
  /// one kPipelineChunkGrowth times as many (the first takes the rest; at most
  /// kMaxPipelineChunks): only the last, small chunk's scatter is left once the copies end, and
  /// few copies are enqueued.
  std::size_t pipeline_chunk_bytes = std::size_t{256} << 10;
  /// How small uploads travel; `automatic` lets the planner choose.
  UploadStrategy strategy = UploadStrategy::automatic;
  /// What an allocation that does not fit does.
  OverflowPolicy overflow = OverflowPolicy::fail;
  /// A grown arena trims back to what recent frames used after this many frames in a row that
  /// did not fill it (grow policy only).
  std::uint32_t trim_after_frames = 16;
  /// begin_frame waits at most this long for its slot before it throws Error(timeout).
  std::uint32_t slot_timeout_ms = 10'000;

  static constexpr std::uint32_t kMaxBuffering = 8;
  static constexpr std::uint32_t kMaxPipelineChunks = 8;
  /// A scatter moves bytes over 5x faster than PCIe, so chunk k's scatter ends before chunk
  /// k + 1 (an eighth of its size) has landed.
  static constexpr std::size_t kPipelineChunkGrowth = 8;
  /// Readbacks are gathered first and copied back second, so their first chunk holds about
  /// pipeline_chunk_bytes and each later one this many times more: a chunk's descriptor table
  /// and gather cost about a quarter of its copy back per byte, so the next chunk is ready before
  /// the copy back of this one ends.
  static constexpr std::size_t kReadbackChunkGrowth = 4;

  /// @brief Checks every member: buffering 1..8, arena_bytes 4 KiB..1 TiB, upload_arena_bytes
  /// and readback_arena_bytes 4 KiB..64 GiB, max_uploads_per_frame and max_readbacks_per_frame
  /// 1..2^26, pipeline_chunk_bytes >= 4 KiB, device >= 0,
  /// direct_copy_threshold_bytes, trim_after_frames and slot_timeout_ms >= 1; zero_copy_max_bytes
  /// and merge_gap_bytes take any value (0 turns zero-copy, or merging across gaps, off).
  /// @throws Error(bad_config) naming the first invalid member and its allowed values.
  void validate() const;

  /// @brief Parses a JSON object; unknown keys, wrong types and bad values are rejected.
  /// @throws Error(bad_config) with a message that names the key and the values allowed.
  [[nodiscard]] static Config from_json(std::string_view json_text);

  /// @brief Reads and parses a JSON file.
  /// @throws Error(bad_config) if the file cannot be read or its contents are invalid.
  [[nodiscard]] static Config from_file(const std::string& path);

  /// @brief A JSON object with every member; from_json(to_json()) gives back an equal Config.
  [[nodiscard]] std::string to_json() const;

  friend bool operator==(const Config&, const Config&) = default;
};

}  // namespace framestage
