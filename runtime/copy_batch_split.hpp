/// @file copy_batch_split.hpp
/// @brief How CudaBackend::copy_batch_async groups a list of copies for the driver, as a pure
/// function so that the host tests check it: CUDA 13.0 with driver 580 faults on batches that
/// mix copies under 16 B with larger ones once they hold thousands of copies (issue 18).
#pragma once

#include <framestage/backend.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <vector>

namespace framestage::detail {

/// Where the groups' boundaries lie (CudaBackend's kMaxBatchCopies, kMinUnbatchedBytes and
/// kTinyCopyBytes on CUDA).
struct CopyBatchLimits {
  std::size_t max_copies_per_call;  ///< > 0
  std::size_t min_unbatched_bytes;  ///< copies this large go one by one
  std::size_t tiny_bytes;           ///< copies smaller than this are batched apart
};

/// One batch list in the arrays cudaMemcpyBatchAsync takes.
struct CopyBatchList {
  std::vector<void*> dsts;
  std::vector<const void*> srcs;
  std::vector<std::size_t> sizes;

  void clear() noexcept {
    dsts.clear();
    srcs.clear();
    sizes.clear();
  }
  void push(const CopyOp& copy) {
    dsts.push_back(copy.dst);
    srcs.push_back(copy.src);
    sizes.push_back(copy.bytes);
  }
};

/// A list of copies, grouped: the large ones to go one by one, then the tiny ones and the rest
/// as two batch lists, each to go as calls of at most max_copies_per_call. Empty copies are
/// dropped. Reused across calls, it allocates only when a list outgrows its last size.
struct CopyBatchSplit {
  std::vector<CopyOp> one_by_one;
  std::array<CopyBatchList, 2> batched;  ///< [0]: under tiny_bytes; [1]: the rest

  void assign(std::span<const CopyOp> copies, const CopyBatchLimits& limits) {
    max_copies_per_call_ = limits.max_copies_per_call;
    one_by_one.clear();
    for (CopyBatchList& list : batched)
      list.clear();
    for (const CopyOp& copy : copies) {
      if (copy.bytes == 0) continue;
      if (copy.bytes >= limits.min_unbatched_bytes) {
        one_by_one.push_back(copy);
      } else {
        batched[copy.bytes < limits.tiny_bytes ? 0 : 1].push(copy);
      }
    }
  }

  /// Calls `call(list, first, count)` for each driver call: consecutive runs of at most the
  /// last assign's `max_copies_per_call` copies of each batch list, the tiny list first.
  template <class Call>
  void for_each_call(Call&& call) const {
    for (const CopyBatchList& list : batched) {
      const std::size_t total = list.sizes.size();
      for (std::size_t first = 0; first < total; first += max_copies_per_call_)
        call(list, first, std::min(max_copies_per_call_, total - first));
    }
  }

 private:
  std::size_t max_copies_per_call_ = 1;
};

}  // namespace framestage::detail
