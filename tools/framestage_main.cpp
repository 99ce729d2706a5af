// The `framestage` command-line program. `framestage bench` runs the built-in default workload
// on the best available backend, checks every destination byte, and prints what it did.
#include <framestage/framestage.hpp>

#if FRAMESTAGE_HAS_CUDA
#include "gpu_measurements.hpp"
#endif

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: framestage <command> [options]\n"
    "\n"
    "commands:\n"
    "  bench [--frames N] [--seed S] [--no-gpu-measurements]\n"
    "                                  run the default workload and check every byte; on a GPU,\n"
    "                                  then measure framestage against one contiguous copy,\n"
    "                                  per-item cudaMemcpyAsync and cudaMemcpyBatchAsync\n"
    "  --help                          show this text\n";

struct BenchOptions {
  std::uint64_t frames = 200;
  std::uint64_t seed = 1;
  bool skip_gpu_measurements = false;
};

// Default workload: each frame uploads `kItems` items of 16-256 B to scattered offsets of a
// persistent buffer, and stages one mirrored array of `kMirrorFloats` floats.
constexpr std::size_t kItems = 10'000;
constexpr std::size_t kDestinationBytes = std::size_t{8} << 20;
constexpr std::size_t kMirrorFloats = std::size_t{1} << 18;

int run_bench(const BenchOptions& options) {
  using namespace framestage;
  auto [backend, reason] = make_default_backend();
  std::printf("framestage bench: backend: %s\n", backend->describe().c_str());
  std::printf("framestage bench: %s\n", reason.c_str());
  if (backend->kind() == BackendKind::host) {
    std::printf("framestage bench: host emulation: times below are host memcpy, not GPU figures\n");
  }

  Config config;
  config.buffering = 3;
  config.arena_bytes = std::size_t{16} << 20;
  Coordinator coordinator(config, *backend);
  DeviceBuffer<std::byte> destination(*backend, kDestinationBytes);

  std::mt19937_64 rng(options.seed);
  std::vector<std::byte> expected(kDestinationBytes);
  std::vector<std::byte> item(256);
  std::size_t uploaded_bytes = 0;
  std::size_t mismatches = 0;
  std::chrono::nanoseconds total{0};

  // Device memory starts undefined: give the destination known contents through framestage.
  coordinator.begin_frame();
  coordinator.upload<std::byte>(destination.data(), expected);
  coordinator.end_frame().wait();

  for (std::uint64_t f = 0; f < options.frames; ++f) {
    const auto start = std::chrono::steady_clock::now();
    coordinator.begin_frame();
    // Ascending, non-overlapping destinations with random gaps: sparse updates of a state array.
    std::size_t offset = 0;
    const std::size_t stride = kDestinationBytes / kItems;
    for (std::size_t i = 0; i < kItems; ++i, offset += stride) {
      const std::size_t bytes = 16 + rng() % 241;
      for (std::size_t b = 0; b < bytes; ++b)
        item[b] = static_cast<std::byte>(rng());
      coordinator.upload(destination.data() + offset,
                         std::span<const std::byte>(item.data(), bytes));
      std::memcpy(expected.data() + offset, item.data(), bytes);
      uploaded_bytes += bytes;
    }
    auto mirror = coordinator.frame_alloc<float>(kMirrorFloats);
    for (std::size_t i = 0; i < mirror.size(); ++i)
      mirror[i] = static_cast<float>(f * 7 + i);
    coordinator.stage_for_upload(mirror);
    const FrameTicket ticket = coordinator.end_frame();
    ticket.wait();
    total += std::chrono::steady_clock::now() - start;

    // Check every byte that arrived: the destination buffer and the mirror.
    const auto got = destination.to_host();
    mismatches += got != expected;
    std::vector<float> mirrored(kMirrorFloats);
    backend->read_device(mirrored.data(), coordinator.device_ptr(mirror),
                         mirrored.size() * sizeof(float));
    mismatches += !std::equal(mirrored.begin(), mirrored.end(), mirror.begin());
  }
  coordinator.synchronize();

  const auto& stats = coordinator.stats();
  const double ms_per_frame = std::chrono::duration<double, std::milli>(total).count() /
                              static_cast<double>(options.frames);
  std::printf("framestage bench: %llu frames x (%zu uploads of 16-256 B + %zu B mirrored)\n",
              static_cast<unsigned long long>(options.frames), kItems,
              kMirrorFloats * sizeof(float));
  std::printf(
      "framestage bench: last frame: strategy %s, %zu staging copies, %zu scatter launch(es), "
      "%zu direct copies\n",
      stats.last_frame.strategy == UploadStrategy::automatic
          ? "none"
          : std::string(to_string(stats.last_frame.strategy)).c_str(),
      stats.last_frame.staging_copies, stats.last_frame.scatter_launches,
      stats.last_frame.direct_copies);
  // Totals include the set-up frame that initialised the destination.
  std::printf(
      "framestage bench: %llu uploads (%zu bytes) measured; all frames: %zu copies + %zu "
      "scatter launches\n",
      static_cast<unsigned long long>(options.frames * kItems), uploaded_bytes,
      stats.staging_copies + stats.direct_copies, stats.scatter_launches);
  std::printf("framestage bench: %.3f ms per frame (begin_frame to ready, host clock)\n",
              ms_per_frame);
  std::printf("framestage bench: contents checked: %s\n",
              mismatches == 0 ? "every byte matches" : "MISMATCH");
  int status = mismatches == 0 ? 0 : 1;
#if FRAMESTAGE_HAS_CUDA
  if (backend->kind() == BackendKind::cuda && !options.skip_gpu_measurements) {
    status |= bench::run_gpu_measurements(*backend, options.seed);
  }
#endif
  return status;
}

bool parse_number(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  out = std::strtoull(text, &end, 10);
  return end != text && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "bench") != 0) {
    std::fprintf(stderr, "framestage: unknown command '%s'\n%s", argv[1], kUsage);
    return 2;
  }
  BenchOptions options;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-gpu-measurements") == 0) {
      options.skip_gpu_measurements = true;
      continue;
    }
    const bool has_value = i + 1 < argc;
    std::uint64_t* target = std::strcmp(argv[i], "--frames") == 0 ? &options.frames
                            : std::strcmp(argv[i], "--seed") == 0 ? &options.seed
                                                                  : nullptr;
    if (target == nullptr || !has_value || !parse_number(argv[i + 1], *target) ||
        (target == &options.frames && *target == 0)) {
      std::fprintf(stderr, "framestage bench: bad option '%s'\n%s", argv[i], kUsage);
      return 2;
    }
    ++i;
  }
  try {
    return run_bench(options);
  } catch (const framestage::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
