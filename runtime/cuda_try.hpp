/// @file cuda_try.hpp
/// @brief Checked CUDA runtime calls: the one way the CUDA backend and kernels report a failure.
///
/// Internal to the library (runtime/ and kernels/ only); users never see a CUDA header.
/// Every message has the form "<call> failed: <cudaGetErrorName> (<cudaGetErrorString>)
/// (<file>:<line>)", the same place for file:line as FRAMESTAGE_EXPECTS, built by
/// cuda_failure_message() for the throwing and the reporting macros alike.
#pragma once

#include <framestage/detail/expects.hpp>
#include <framestage/error.hpp>

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace framestage::detail {

/// @brief "<cudaGetErrorName> (<cudaGetErrorString>)", e.g. "cudaErrorNoDevice (no
/// CUDA-capable device is detected)".
[[nodiscard]] inline std::string describe_cuda_error(cudaError_t error) {
  std::string text = cudaGetErrorName(error);
  text += " (";
  text += cudaGetErrorString(error);
  text += ')';
  return text;
}

/// @brief "<what> failed: <name> (<text>) (<file>:<line>)".
[[nodiscard]] inline std::string cuda_failure_message(std::string_view what, cudaError_t error,
                                                      const char* file, int line) {
  std::string message(what);
  message += " failed: ";
  message += describe_cuda_error(error);
  message += " (";
  message += file;
  message += ':';
  message += std::to_string(line);
  message += ')';
  return message;
}

/// @brief Clears the calling thread's last-error slot after a failure has been handled.
///
/// A failing runtime call also leaves its error there, and a later kernel-launch check
/// (cudaGetLastError) would report it a second time. Sticky errors (a corrupted context) are
/// not cleared by this; every later call keeps returning them, which is what we want.
inline void clear_last_cuda_error() noexcept {
  static_cast<void>(cudaGetLastError());
}

/// @brief Throws Error(cuda) for the failed `call`; out of line so each check stays one branch.
[[noreturn]] inline void throw_cuda_error(cudaError_t error, const char* call, const char* file,
                                          int line) {
  clear_last_cuda_error();
  throw Error(ErrorCategory::cuda, cuda_failure_message(call, error, file, line));
}

/// @brief Throws for a failed allocation of `bytes`: Error(out_of_memory) when the device or
/// host ran out of memory, Error(cuda) for any other failure. `call` is the call's text; the
/// message names only the function ("cudaMalloc of 123456 bytes failed: ...").
[[noreturn]] inline void throw_cuda_alloc_error(cudaError_t error, const char* call,
                                                const char* file, int line, std::size_t bytes) {
  clear_last_cuda_error();
  const std::string_view call_text(call);
  std::string what(call_text.substr(0, call_text.find('(')));
  what += " of ";
  what += std::to_string(bytes);
  what += " bytes";
  throw Error(
      error == cudaErrorMemoryAllocation ? ErrorCategory::out_of_memory : ErrorCategory::cuda,
      cuda_failure_message(what, error, file, line));
}

/// @brief Writes "framestage: <call> failed: ..." on one stderr line, unless the runtime is
/// unloading (objects released at program exit, after CUDA began its own shutdown) or the same
/// error was the last one reported: after a sticky error (an illegal address, say) every
/// release of every stream, event and buffer fails with it, and one line says all there is.
inline void report_cuda_error(cudaError_t error, const char* call, const char* file,
                              int line) noexcept {
  clear_last_cuda_error();
  if (error == cudaErrorCudartUnloading) return;
  static std::atomic<int> last_reported{cudaSuccess};
  if (last_reported.exchange(error, std::memory_order_relaxed) == error) return;
  // Building the line allocates; if even that fails, a release path stays silent rather than
  // terminate the program.
  try {
    std::fprintf(stderr, "framestage: %s (further release failures with %s are not reported)\n",
                 cuda_failure_message(call, error, file, line).c_str(), cudaGetErrorName(error));
  } catch (...) {
  }
}

}  // namespace framestage::detail

/// The one shape of the checks below: runs `call` once and, unless it returned cudaSuccess, calls
/// `on_failure(status, call_text, file, line, extra...)`, out of line so each check stays one
/// branch.
#define FRAMESTAGE_DETAIL_CUDA_CHECK(call, call_text, on_failure, ...)                            \
  do {                                                                                            \
    if (const cudaError_t framestage_cuda_status = (call); framestage_cuda_status != cudaSuccess) \
        [[unlikely]] {                                                                            \
      on_failure(framestage_cuda_status, call_text, FRAMESTAGE_SOURCE_FILE,                       \
                 __LINE__ __VA_OPT__(, ) __VA_ARGS__);                                            \
    }                                                                                             \
  } while (false)

/// @brief Runs the CUDA runtime call `call`; throws Error(cuda) naming it unless it succeeds.
#define FRAMESTAGE_CUDA_TRY(call) \
  FRAMESTAGE_DETAIL_CUDA_CHECK(call, #call, ::framestage::detail::throw_cuda_error)

/// @brief Runs the allocating call `call` for `bytes`; throws Error(out_of_memory) on
/// cudaErrorMemoryAllocation and Error(cuda) on any other failure, both naming `bytes`.
#define FRAMESTAGE_CUDA_TRY_ALLOC(call, bytes) \
  FRAMESTAGE_DETAIL_CUDA_CHECK(call, #call, ::framestage::detail::throw_cuda_alloc_error, (bytes))

/// @brief For destructors and release functions: runs `call`, never throws, ignores
/// cudaErrorCudartUnloading and reports any other failure once on stderr.
#define FRAMESTAGE_CUDA_ASSERT_SAFE_SHUTDOWN(call) \
  FRAMESTAGE_DETAIL_CUDA_CHECK(call, #call, ::framestage::detail::report_cuda_error)
