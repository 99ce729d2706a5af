#include "progress_bar.hpp"

#include <unistd.h>

#include <algorithm>

namespace framestage::tools {

ProgressBar::ProgressBar(std::size_t total_runs, bool enabled)
    : total_runs_(std::max<std::size_t>(total_runs, 1)), enabled_(enabled) {}

ProgressBar::~ProgressBar() {
  clear();
}

bool ProgressBar::stderr_is_terminal() {
  return ::isatty(STDERR_FILENO) == 1;
}

void ProgressBar::strategy_started(std::string_view workload, std::string_view strategy) {
  label_ = std::string(workload) + " / " + std::string(strategy);
  frames_ = 0;
  frames_done_ = 0;
  draw(true);
}

void ProgressBar::frames_planned(std::uint32_t frames) {
  frames_ = frames;
  draw(false);
}

void ProgressBar::frame_done() {
  ++frames_done_;
  draw(false);
}

void ProgressBar::strategy_finished() {
  ++runs_done_;
  frames_ = 0;
  frames_done_ = 0;
  draw(true);
}

void ProgressBar::clear() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[2K");
  std::fflush(stderr);
  drawn_ = false;
}

void ProgressBar::draw(bool force) {
  if (!enabled_) return;
  using namespace std::chrono_literals;
  const auto now = std::chrono::steady_clock::now();
  if (!force && drawn_ && now - last_draw_ < 100ms) return;
  last_draw_ = now;
  const double within = frames_ > 0 ? static_cast<double>(frames_done_) / frames_ : 0.0;
  const double done =
      std::min(1.0, (static_cast<double>(runs_done_) + within) / static_cast<double>(total_runs_));
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(done * kWidth);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(kWidth, '.');
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string frames;
  if (frames_ > 0)
    frames = "  frame " + std::to_string(frames_done_) + "/" + std::to_string(frames_);
  std::fprintf(stderr, "\r\033[2K[%s] %3.0f%%  %4.0f s  %s%s", bar.c_str(), done * 100, elapsed,
               label_.c_str(), frames.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace framestage::tools
