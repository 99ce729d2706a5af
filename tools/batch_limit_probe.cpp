// framestage_batch_limit_probe: how many copies one cudaMemcpyBatchAsync call takes on this GPU
// and driver before the driver faults, measured with the runtime alone (no framestage code).
//
// CUDA 13.0 with driver 580 dies with SIGSEGV inside cuMemcpyBatchAsync on one batch of about
// 16,000 or more pinned-to-device copies of mixed sizes that include copies under 16 B (issue
// 18); CudaBackend::kMaxBatchCopies keeps framestage under that. Each batch size runs in a child
// process of its own, so a fault ends that child only and the table says which sizes passed.
// Every copy's bytes are checked at the destination.
//
//   framestage_batch_limit_probe [--seed N] [COUNT ...]
//
// Prints one line per count: "ok", "wrong bytes", a CUDA error, or the signal that ended it.
// Exits 1 if a batch of at most CudaBackend::kMaxBatchCopies failed (framestage's limit is not
// safe on this driver), 0 otherwise, whatever the driver did above it.
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

// One batch of `count` log-uniform copies from pinned memory to scattered device destinations.
int one_batch(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> log_size(std::log(double(kMinBytes)),
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
  std::vector<void*> dsts(count);
  std::vector<const void*> srcs(count);
  for (std::size_t i = 0; i < count; ++i) {
    dsts[i] = static_cast<unsigned char*>(device) + offsets[i];
    srcs[i] = host + offsets[i];
  }
  // The attributes framestage's CudaBackend passes.
  cudaMemcpyAttributes attributes{};
  attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attributes.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  std::size_t first_copy_index = 0;
  if (auto s = cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), count, &attributes,
                                    &first_copy_index, 1, stream);
      s != cudaSuccess)
    return fail("cudaMemcpyBatchAsync", s);
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
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--help" || arg == "-h") {
      std::printf("usage: %s [--seed N] [COUNT ...]\n", argv[0]);
      return 0;
    } else {
      char* end = nullptr;
      const unsigned long long count = std::strtoull(arg.c_str(), &end, 10);
      if (end == arg.c_str() || *end != '\0' || count == 0) {
        std::fprintf(stderr, "%s: COUNT must be a positive integer, got '%s'\n", argv[0],
                     arg.c_str());
        return 2;
      }
      counts.push_back(count);
    }
  }
  if (counts.empty()) counts = {1024, 4096, 8192, 12288, 16384, 20000, 32768, 50000, 100000};
  std::sort(counts.begin(), counts.end());

  // CUDA is never initialised in this process: a child forked after that could not use it.
  const auto in_child = [](auto&& body) {
    std::fflush(stdout);
    const pid_t child = fork();
    if (child == 0) _exit(body());
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
        "batch limit probe: %s, driver API %d, copies of %zu-%zu B log-uniform, seed %llu\n",
        properties.name, driver, kMinBytes, kMaxBytes, static_cast<unsigned long long>(seed));
    std::fflush(stdout);
    return kOk;
  });
  if (!WIFEXITED(described) || WEXITSTATUS(described) != kOk) {
    std::fprintf(stderr, "%s: no usable CUDA device\n", argv[0]);
    return 2;
  }

  std::size_t largest_ok = 0;
  bool framestage_batch_failed = false;
  for (const std::size_t count : counts) {
    const int status = in_child([&] { return one_batch(count, seed + count); });
    std::string verdict = "ok";
    if (WIFSIGNALED(status)) {
      verdict = std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                strsignal(WTERMSIG(status)) + ")";
    } else if (WEXITSTATUS(status) == kWrong) {
      verdict = "wrong bytes at the destination";
    } else if (WEXITSTATUS(status) != kOk) {
      verdict = "CUDA error";
    }
    if (verdict == "ok") {
      largest_ok = count;
    } else if (count <= framestage::CudaBackend::kMaxBatchCopies) {
      framestage_batch_failed = true;
    }
    std::printf("  %7zu copies in one call: %s\n", count, verdict.c_str());
  }
  std::printf("largest batch that passed: %zu copies; framestage sends at most %zu a call: %s\n",
              largest_ok, framestage::CudaBackend::kMaxBatchCopies,
              framestage_batch_failed ? "NOT SAFE on this driver" : "safe");
  return framestage_batch_failed ? 1 : 0;
}
