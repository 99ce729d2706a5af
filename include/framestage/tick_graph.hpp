/// @file tick_graph.hpp
/// @brief A whole tick as one graph: a frame's transfers and the kernels that read them,
/// captured once and replayed every frame (Coordinator::capture_tick, end_frame(TickGraph&)).
#pragma once

#include <framestage/backend.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace framestage {

class Coordinator;

namespace detail {
/// Gives a tick graph back to the backend that made it.
struct TickGraphRelease {
  Backend* backend = nullptr;
  void operator()(void* graph) const noexcept { backend->destroy_tick_graph(graph); }
};
}  // namespace detail

/// @brief A captured tick: transfer nodes for a frame's uploads and readbacks, then the work a
/// user enqueued once, replayed by Coordinator::end_frame(TickGraph&) with each frame's own
/// contents and item counts. Made by Coordinator::capture_tick().
///
/// On CUDA it is a cudaGraph_t with one executable instance per slot (Config::buffering): a
/// launch sets only the transfer nodes whose addresses or sizes differ from that instance's last
/// launch, then calls cudaGraphLaunch. The host backend replays the captured work the same way.
///
/// **Ownership:** owns the graph; borrows the coordinator's backend, which must outlive it.
/// Destroying it while a launch is in flight is safe: the launch runs to its end.
/// **Thread safety:** the owner thread of its coordinator, as end_frame().
class TickGraph {
 public:
  TickGraph() = default;

  /// @brief False for a default-constructed or moved-from graph.
  [[nodiscard]] bool valid() const noexcept { return graph_ != nullptr; }
  /// @brief Frames this graph has run (end_frame(TickGraph&) calls that launched it).
  [[nodiscard]] std::uint64_t launches() const noexcept { return launches_; }

 private:
  friend class Coordinator;
  TickGraph(Backend& backend, GraphHandle graph, const Coordinator* owner) noexcept
      : graph_(graph, detail::TickGraphRelease{&backend}), owner_(owner) {}

  std::unique_ptr<void, detail::TickGraphRelease> graph_;  // move-only through it
  const Coordinator* owner_ = nullptr;
  std::uint64_t launches_ = 0;
};

}  // namespace framestage
