/// @file device_buffer.hpp
/// @brief A persistent, typed device allocation: the usual destination of upload().
#pragma once

#include <framestage/backend.hpp>

#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

namespace framestage {

/// @brief `size()` elements of T in device memory, freed on destruction.
///
/// **Ownership:** move-only; owns its memory. The Backend must outlive it, and it must outlive
/// every frame that writes to it or kernel that reads it.
/// **Thread safety:** const members from any thread.
template <class T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "DeviceBuffer holds bytes copied by DMA");

 public:
  DeviceBuffer() = default;
  /// @throws Error(out_of_memory) naming the bytes requested.
  DeviceBuffer(Backend& backend, std::size_t count)
      : backend_(&backend),
        block_(count > 0 ? MemoryBlock(backend, MemoryKind::device, count * sizeof(T))
                         : MemoryBlock()),
        size_(count) {}

  /// @brief Device address of element 0 (not dereferenceable on the host with CUDA).
  [[nodiscard]] T* data() const noexcept { return reinterpret_cast<T*>(block_.data()); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// @brief The elements as a device-memory span, for passing to kernels.
  [[nodiscard]] std::span<T> device_span() const noexcept { return {data(), size_}; }

  /// @brief Synchronous copy of the contents to the host, for checks; waits for nothing, so
  /// wait for the frame that wrote them first.
  [[nodiscard]] std::vector<T> to_host() const {
    std::vector<T> out(size_);
    if (size_ > 0) backend_->read_device(out.data(), data(), size_bytes());
    return out;
  }

 private:
  Backend* backend_ = nullptr;
  MemoryBlock block_;
  std::size_t size_ = 0;
};

}  // namespace framestage
