/// @file nvtx_range.hpp
/// @brief Scoped NVTX ranges around frame phases, so Nsight Systems shows where a frame's time
/// goes. Compiles to nothing where the CUDA toolkit (and its header-only NVTX3) is absent.
#pragma once

#if FRAMESTAGE_HAS_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace framestage::detail {

class NvtxRange {
 public:
#if FRAMESTAGE_HAS_NVTX
  explicit NvtxRange(const char* name) noexcept {
    nvtxRangePushA(name);
  }
  ~NvtxRange() {
    nvtxRangePop();
  }
#else
  explicit NvtxRange(const char* /*name*/) noexcept {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace framestage::detail
