// framestage_batch_limit_probe: how many copies one cudaMemcpyBatchAsync call takes on this GPU
// and driver before the driver faults, measured with the runtime alone (no framestage code).
//
// CUDA 13.0 with driver 580 dies with SIGSEGV inside cuMemcpyBatchAsync on one batch of about
// 16,000 or more pinned-to-device copies of mixed sizes that include copies under 16 B, and on
// an H100 8,192 of them in shuffled order failed with cudaErrorLaunchFailure (issue 18);
// CudaBackend::kMaxBatchCopies keeps framestage under that. Each batch size runs in a child
// process of its own, so a fault ends that child only and the table says which sizes passed.
// Every copy's bytes are checked at the destination.
//
//   framestage_batch_limit_probe [--seed N] [--order ascending|random|both] [--split N]
//                                [--repeat R] [--min-bytes B] [--no-overlap-hint] [--access-any]
//                                [COUNT ...]
//
// --order: destinations in ascending address order, or shuffled as a random frame issues them
// (both by default). --split N sends each list as consecutive calls of at most N copies on one
// stream, as CudaBackend does (0, the default: one call). --repeat R submits the list R times
// before the stream is synchronised. --no-overlap-hint and --access-any change the attributes
// framestage passes (cudaMemcpyFlagPreferOverlapWithCompute, cudaMemcpySrcAccessOrderStream).
// Prints one line per case: "ok", "wrong bytes", a CUDA error, or the signal that ended it (a child
// that takes over 20 s is killed and reported so). Exits 1 if a list of at most
// CudaBackend::kMaxBatchCopies failed (framestage's limit is not safe on this driver), 0 otherwise,
// whatever the driver did above it.
#include <framestage/cuda_backend.hpp>

#include <cuda_runtime_api.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kMinBytes = 1;
constexpr std::size_t kMaxBytes = 16384;

// Child exit codes.
constexpr int kOk = 0;
constexpr int kWrong = 3;
constexpr int kCudaError = 4;

int fail(const char* call, cudaError_t status) {
  std::fprintf(stderr, "  %s: %s (%s)\n", call, cudaGetErrorName(status),
               cudaGetErrorString(status));
  return kCudaError;
}

struct Case {
  std::size_t count = 0;
  bool shuffled = false;
  std::size_t split = 0;  // at most this many copies a call; 0: one call
  std::size_t repeat = 1;
  std::size_t min_bytes = kMinBytes;
  bool overlap_hint = true;  // cudaMemcpyFlagPreferOverlapWithCompute, as framestage passes
  bool stream_order = true;  // cudaMemcpySrcAccessOrderStream, as framestage passes; else Any
};

// `count` log-uniform copies from pinned memory to scattered device destinations.
int one_batch(const Case& c, std::uint64_t seed) {
  const std::size_t count = c.count;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_size(std::log(double(c.min_bytes)),
                                                  std::log(double(kMaxBytes) + 1));
  std::vector<std::size_t> sizes(count);
  std::vector<std::size_t> offsets(count);
  std::size_t total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    sizes[i] = std::min(kMaxBytes, std::size_t(std::exp(log_size(rng))));
    offsets[i] = total;
    total += sizes[i] + rng() % 8;  // odd gaps: destinations at any alignment
  }
  void* pinned = nullptr;
  void* device = nullptr;
  cudaStream_t stream = nullptr;
  if (auto s = cudaMallocHost(&pinned, total); s != cudaSuccess) return fail("cudaMallocHost", s);
  if (auto s = cudaMalloc(&device, total); s != cudaSuccess) return fail("cudaMalloc", s);
  if (auto s = cudaMemset(device, 0, total); s != cudaSuccess) return fail("cudaMemset", s);
  if (auto s = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); s != cudaSuccess)
    return fail("cudaStreamCreateWithFlags", s);
  auto* host = static_cast<unsigned char*>(pinned);
  for (std::size_t i = 0; i < total; ++i)
    host[i] = static_cast<unsigned char>(rng() | 1);  // never 0, the destination's background
  std::vector<std::size_t> order(count);
  for (std::size_t i = 0; i < count; ++i)
    order[i] = i;
  if (c.shuffled) std::shuffle(order.begin(), order.end(), rng);
  std::vector<void*> dsts(count);
  std::vector<const void*> srcs(count);
  std::vector<std::size_t> listed_sizes(count);
  for (std::size_t k = 0; k < count; ++k) {
    const std::size_t i = order[k];
    dsts[k] = static_cast<unsigned char*>(device) + offsets[i];
    srcs[k] = host + offsets[i];
    listed_sizes[k] = sizes[i];
  }
  // The attributes framestage's CudaBackend passes, unless the case says otherwise.
  cudaMemcpyAttributes attributes{};
  attributes.srcAccessOrder =
      c.stream_order ? cudaMemcpySrcAccessOrderStream : cudaMemcpySrcAccessOrderAny;
  attributes.flags = c.overlap_hint ? cudaMemcpyFlagPreferOverlapWithCompute : 0;
  const std::size_t per_call = c.split == 0 ? count : c.split;
  for (std::size_t r = 0; r < c.repeat; ++r) {
    for (std::size_t first = 0; first < count; first += per_call) {
      const std::size_t n = std::min(per_call, count - first);
      std::size_t first_copy_index = 0;
      if (auto s = cudaMemcpyBatchAsync(dsts.data() + first, srcs.data() + first,
                                        listed_sizes.data() + first, n, &attributes,
                                        &first_copy_index, 1, stream);
          s != cudaSuccess)
        return fail("cudaMemcpyBatchAsync", s);
    }
  }
  if (auto s = cudaStreamSynchronize(stream); s != cudaSuccess)
    return fail("cudaStreamSynchronize", s);
  std::vector<unsigned char> got(total);
  if (auto s = cudaMemcpy(got.data(), device, total, cudaMemcpyDeviceToHost); s != cudaSuccess)
    return fail("cudaMemcpy", s);
  for (std::size_t i = 0; i < count; ++i)
    if (std::memcmp(got.data() + offsets[i], host + offsets[i], sizes[i]) != 0) return kWrong;
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t seed = 18;
  std::vector<std::size_t> counts;
  std::vector<bool> orders = {false, true};
  Case shape;
  const auto number = [&](const char* what, const std::string& text, std::size_t least) {
    char* end = nullptr;
    const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
    if (end == text.c_str() || *end != '\0' || value < least) {
      std::fprintf(stderr, "%s: %s must be an integer of at least %zu, got '%s'\n", argv[0], what,
                   least, text.c_str());
      std::exit(2);
    }
    return static_cast<std::size_t>(value);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--seed" && has_value) {
      seed = number("--seed", argv[++i], 0);
    } else if (arg == "--order" && has_value) {
      const std::string order = argv[++i];
      if (order == "ascending") {
        orders = {false};
      } else if (order == "random") {
        orders = {true};
      } else if (order == "both") {
        orders = {false, true};
      } else {
        std::fprintf(stderr, "%s: --order must be ascending, random or both, got '%s'\n", argv[0],
                     order.c_str());
        return 2;
      }
    } else if (arg == "--split" && has_value) {
      shape.split = number("--split", argv[++i], 0);
    } else if (arg == "--repeat" && has_value) {
      shape.repeat = number("--repeat", argv[++i], 1);
    } else if (arg == "--min-bytes" && has_value) {
      shape.min_bytes = number("--min-bytes", argv[++i], 1);
      if (shape.min_bytes > kMaxBytes) {
        std::fprintf(stderr, "%s: --min-bytes must be at most %zu\n", argv[0], kMaxBytes);
        return 2;
      }
    } else if (arg == "--no-overlap-hint") {
      shape.overlap_hint = false;
    } else if (arg == "--access-any") {
      shape.stream_order = false;
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: %s [--seed N] [--order ascending|random|both] [--split N] [--repeat R] "
          "[--min-bytes B] [--no-overlap-hint] [--access-any] [COUNT ...]\n",
          argv[0]);
      return 0;
    } else {
      counts.push_back(number("COUNT", arg, 1));
    }
  }
  if (counts.empty())
    counts = {256, 1024, 2048, 4096, 8192, 8193, 12288, 16384, 20000, 32768, 50000, 100000};
  std::sort(counts.begin(), counts.end());

  // CUDA is never initialised in this process: a child forked after that could not use it.
  const auto in_child = [](auto&& body) {
    std::fflush(stdout);
    const pid_t child = fork();
    if (child == 0) {
      alarm(20);  // a hung driver ends the child with SIGALRM, not the probe
      _exit(body());
    }
    int status = 0;
    waitpid(child, &status, 0);
    return status;
  };
  const int described = in_child([&] {
    cudaDeviceProp properties{};
    if (auto s = cudaGetDeviceProperties(&properties, 0); s != cudaSuccess)
      return fail("cudaGetDeviceProperties", s);
    int driver = 0;
    cudaDriverGetVersion(&driver);
    std::printf(
        "batch limit probe: %s, driver API %d, copies of %zu-%zu B log-uniform, seed %llu, "
        "%zu copies a call at most (0: all), each list %zu times, overlap hint %s, source "
        "access order %s\n",
        properties.name, driver, shape.min_bytes, kMaxBytes, static_cast<unsigned long long>(seed),
        shape.split, shape.repeat, shape.overlap_hint ? "on" : "off",
        shape.stream_order ? "stream" : "any");
    std::fflush(stdout);
    return kOk;
  });
  if (!WIFEXITED(described) || WEXITSTATUS(described) != kOk) {
    std::fprintf(stderr, "%s: no usable CUDA device\n", argv[0]);
    return 2;
  }

  std::size_t largest_ok = 0;
  bool framestage_batch_failed = false;
  for (const bool shuffled : orders)
    for (const std::size_t count : counts) {
      Case c = shape;
      c.count = count;
      c.shuffled = shuffled;
      const int status = in_child([&] { return one_batch(c, seed + count); });
      std::string verdict = "ok";
      if (WIFSIGNALED(status)) {
        verdict = std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                  strsignal(WTERMSIG(status)) + ")";
      } else if (WEXITSTATUS(status) == kWrong) {
        verdict = "wrong bytes at the destination";
      } else if (WEXITSTATUS(status) != kOk) {
        verdict = "CUDA error";
      }
      const std::size_t per_call = c.split == 0 ? count : std::min(count, c.split);
      if (verdict == "ok") {
        largest_ok = std::max(largest_ok, per_call);
      } else if (per_call <= framestage::CudaBackend::kMaxBatchCopies) {
        framestage_batch_failed = true;
      }
      std::printf("  %7zu copies, %-9s order, %7zu a call: %s\n", count,
                  shuffled ? "random" : "ascending", per_call, verdict.c_str());
    }
  std::printf("largest call that passed: %zu copies; framestage sends at most %zu a call: %s\n",
              largest_ok, framestage::CudaBackend::kMaxBatchCopies,
              framestage_batch_failed ? "NOT SAFE on this driver" : "safe");
  return framestage_batch_failed ? 1 : 0;
}
