/// @file tick_graph.hpp
/// @brief A whole tick as one graph: a frame's transfers and the kernels that read them,
/// captured once and replayed every frame (Coordinator::capture_tick, end_frame(TickGraph&)).
#pragma once

#include <framestage/backend.hpp>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace framestage {

class Coordinator;

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
  TickGraph(TickGraph&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)),
        graph_(std::exchange(other.graph_, nullptr)),
        owner_(std::exchange(other.owner_, nullptr)),
        launches_(std::exchange(other.launches_, 0)) {}
  TickGraph& operator=(TickGraph&& other) noexcept {
    if (this != &other) {
      reset();
      backend_ = std::exchange(other.backend_, nullptr);
      graph_ = std::exchange(other.graph_, nullptr);
      owner_ = std::exchange(other.owner_, nullptr);
      launches_ = std::exchange(other.launches_, 0);
    }
    return *this;
  }
  TickGraph(const TickGraph&) = delete;
  TickGraph& operator=(const TickGraph&) = delete;
  ~TickGraph() { reset(); }

  /// @brief False for a default-constructed or moved-from graph.
  [[nodiscard]] bool valid() const noexcept { return graph_ != nullptr; }
  /// @brief Frames this graph has run (end_frame(TickGraph&) calls that launched it).
  [[nodiscard]] std::uint64_t launches() const noexcept { return launches_; }

 private:
  friend class Coordinator;
  TickGraph(Backend& backend, GraphHandle graph, const Coordinator* owner) noexcept
      : backend_(&backend), graph_(graph), owner_(owner) {}
  void reset() noexcept {
    if (graph_ != nullptr) backend_->destroy_tick_graph(graph_);
    graph_ = nullptr;
  }

  Backend* backend_ = nullptr;
  GraphHandle graph_ = nullptr;
  const Coordinator* owner_ = nullptr;
  std::uint64_t launches_ = 0;
};

}  // namespace framestage
