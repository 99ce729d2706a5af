#include <framestage/detail/staging_front.hpp>

#include "frame_staging.hpp"

namespace framestage::detail {

StagingFront::StagingFront(const char* owner, const Config& config)
    : staging_(std::make_unique<FrameStaging>(owner, config)) {}

StagingFront::~StagingFront() = default;

std::byte* StagingFront::allocate_bytes(std::size_t count, std::size_t bytes,
                                        std::size_t alignment) {
  return staging_->allocate(count, bytes, alignment);
}

void StagingFront::stage_bytes(const void* ptr, std::size_t bytes, std::uint64_t frame) {
  staging_->stage(ptr, bytes, frame);
}

const Config& StagingFront::config() const noexcept {
  return staging_->config;
}
std::uint64_t StagingFront::current_frame() const noexcept {
  return staging_->frame;
}
bool StagingFront::frame_open() const noexcept {
  return staging_->state.in_frame();
}
bool StagingFront::failed() const noexcept {
  return staging_->state.failed();
}

}  // namespace framestage::detail
