/// @file handle_view.hpp
/// @brief The one non-owning view of a backend handle, behind StreamView and EventView.
#pragma once

namespace framestage::detail {

/// Non-owning view of an opaque backend handle, passed by value. `Tag` only keeps the views of
/// different kinds of handle (streams, events) apart as types.
template <class Tag>
class HandleView {
 public:
  constexpr HandleView() = default;
  constexpr explicit HandleView(void* handle) : handle_(handle) {}
  /// @brief The backend's handle: a cudaStream_t or cudaEvent_t on the CUDA backend.
  [[nodiscard]] constexpr void* native() const noexcept { return handle_; }
  friend constexpr bool operator==(HandleView, HandleView) = default;

 private:
  void* handle_ = nullptr;
};

struct StreamTag;
struct EventTag;

}  // namespace framestage::detail
