// `framestage bench`'s runner (tools/bench_runner.cpp) on the host backend: every strategy
// delivers every byte of every destination pattern, and the check catches a byte that is wrong.
#include "bench_runner.hpp"

#include <framestage/host_backend.hpp>

#include <gtest/gtest.h>

#include <ostream>
#include <string>

namespace framestage::tools {
namespace {

WorkloadSpec tiny(const std::string& destination, const std::string& order, int threads) {
  nlohmann::json object = {
      {"name", "tiny-" + destination + "-" + order},
      {"items_per_frame", 300},
      {"item_bytes", {{"distribution", "log_uniform"}, {"min", 1}, {"max", 700}}},
      {"destination", destination},
      {"order", order},
      {"frames", 3},
      {"buffering", 2},
      {"threads", threads},
      {"seed", 7},
  };
  return WorkloadSpec::from_json(object.dump(), "test");
}

BenchOptions unlimited() {
  BenchOptions options;
  options.max_seconds_per_strategy = 0;  // every frame runs: the counts below are exact
  return options;
}

struct Case {
  std::string destination;
  std::string order;
  int threads;
  bool deferred;  // the host backend holds work back until something waits for it
};

void PrintTo(const Case& c, std::ostream* out) {
  *out << c.destination << ", " << c.order << ", " << c.threads << " thread(s)"
       << (c.deferred ? ", deferred" : "");
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return info.param.destination + "_" + info.param.order + "_" +
         std::to_string(info.param.threads) + "threads" + (info.param.deferred ? "_deferred" : "");
}

class EveryStrategy : public ::testing::TestWithParam<Case> {};

TEST_P(EveryStrategy, DeliversEveryByte) {
  const Case& c = GetParam();
  HostBackend backend(HostBackendOptions{.deferred = c.deferred});
  const WorkloadSpec spec = tiny(c.destination, c.order, c.threads);
  Progress quiet;
  const WorkloadResult result = run_workload(backend, spec, unlimited(), quiet);
  const bool mirror = c.destination == "mirror";
  const ItemLayout layout = ItemLayout::make(spec);
  EXPECT_EQ(result.payload_bytes, layout.payload_bytes);
  ASSERT_EQ(result.results.size(), kAllStrategies.size());
  for (const StrategyResult& r : result.results) {
    SCOPED_TRACE(std::string(to_string(r.strategy)));
    const bool forced = r.strategy > Strategy::framestage;
    if (mirror && forced) {
      EXPECT_FALSE(r.skipped.empty());
      continue;
    }
    EXPECT_TRUE(r.skipped.empty());
    EXPECT_TRUE(r.contents_ok);
    EXPECT_EQ(r.mismatched_bytes, 0u);
    EXPECT_EQ(r.frame_us.size(), 3u);
    EXPECT_GE(r.warmup_frames, 1u);
    EXPECT_GT(r.time.median_us, 0);
    // The ceiling and framestage's mirror check the payload; the rest the whole destination.
    const bool payload_only =
        r.strategy == Strategy::ceiling || (mirror && r.strategy == Strategy::framestage);
    EXPECT_EQ(r.checked_bytes, payload_only ? layout.payload_bytes : layout.destination_bytes);
    if (r.strategy >= Strategy::framestage) {
      EXPECT_FALSE(r.planner_choice.empty());
      EXPECT_TRUE(r.last_frame.is_object());
    }
  }
  if (!mirror) {
    EXPECT_EQ(result.find(Strategy::framestage_zero_copy)->planner_choice, "zero_copy");
    EXPECT_EQ(result.find(Strategy::framestage_copy_scatter)->planner_choice, "copy_scatter");
    EXPECT_EQ(result.find(Strategy::framestage_direct)->planner_choice, "direct");
  } else {
    EXPECT_EQ(result.find(Strategy::framestage)->planner_choice, "mirror_copies");
  }
  ASSERT_TRUE(result.pipelined.has_value());
  EXPECT_TRUE(result.pipelined->contents_ok);
  EXPECT_EQ(result.pipelined->frames, 3u);
  EXPECT_TRUE(result.contents_ok());
}

INSTANTIATE_TEST_SUITE_P(BenchRunner, EveryStrategy,
                         ::testing::Values(Case{"scattered", "ascending", 1, false},
                                           Case{"scattered", "random", 3, false},
                                           Case{"scattered", "ascending", 2, true},
                                           Case{"contiguous", "random", 1, true},
                                           Case{"contiguous", "ascending", 1, false},
                                           Case{"mirror", "ascending", 1, false},
                                           Case{"mirror", "ascending", 3, true}),
                         case_name);

/// A host backend that damages one byte of what it delivers, after delivering it: the first
/// destination byte of each copy, or the first target byte of each scatter.
class DamagingBackend final : public Backend {
 public:
  enum class Damage { copies, scatters };
  explicit DamagingBackend(Damage damage) : damage_(damage) {}

  BackendKind kind() const noexcept override { return BackendKind::host; }
  std::string describe() const override { return "damaging host backend"; }
  void* allocate_pinned(std::size_t bytes) override { return host_.allocate_pinned(bytes); }
  void free_pinned(void* ptr) noexcept override { host_.free_pinned(ptr); }
  void* mapped_device_address(void* ptr) override { return host_.mapped_device_address(ptr); }
  void* allocate_device(std::size_t bytes) override { return host_.allocate_device(bytes); }
  void free_device(void* ptr) noexcept override { host_.free_device(ptr); }
  StreamHandle create_stream() override { return host_.create_stream(); }
  void destroy_stream(StreamHandle stream) noexcept override { host_.destroy_stream(stream); }
  EventHandle create_event() override { return host_.create_event(); }
  void destroy_event(EventHandle event) noexcept override { host_.destroy_event(event); }
  void record_event(EventHandle event, StreamView stream) override {
    host_.record_event(event, stream);
  }
  void stream_wait_event(StreamView stream, EventHandle event) override {
    host_.stream_wait_event(stream, event);
  }
  bool event_ready(EventHandle event) override { return host_.event_ready(event); }
  bool wait_event(EventHandle event, std::chrono::milliseconds timeout) override {
    return host_.wait_event(event, timeout);
  }
  void synchronize(StreamView stream) override { host_.synchronize(stream); }
  void copy_async(void* dst, const void* src, std::size_t bytes, StreamView stream) override {
    host_.copy_async(dst, src, bytes, stream);
    if (damage_ == Damage::copies && bytes > 0) flip(static_cast<std::byte*>(dst), stream);
  }
  void copy_batch_async(std::span<const CopyOp> copies, StreamView stream) override {
    for (const CopyOp& c : copies)
      copy_async(c.dst, c.src, c.bytes, stream);
  }
  void scatter_async(const TransferDescriptor* table, std::size_t count, const std::byte* staging,
                     StreamView stream) override {
    host_.scatter_async(table, count, staging, stream);
    if (damage_ != Damage::scatters) return;
    // The table is read when the scatter has run; dropped descriptors have no bytes.
    host_.launch_host_task(stream, [table, count] {
      for (std::size_t i = 0; i < count; ++i) {
        if (table[i].bytes > 0) {
          *reinterpret_cast<std::byte*>(table[i].target) ^= std::byte{0x5A};
          return;
        }
      }
    });
  }
  void gather_async(const TransferDescriptor* table, std::size_t count, std::byte* staging,
                    StreamView stream) override {
    host_.gather_async(table, count, staging, stream);
  }
  void read_device(void* dst, const void* src, std::size_t bytes) override {
    host_.read_device(dst, src, bytes);
  }
  GraphHandle create_tick_graph(std::size_t instances,
                                const std::function<void(StreamView)>& work) override {
    return host_.create_tick_graph(instances, work);
  }
  void destroy_tick_graph(GraphHandle graph) noexcept override { host_.destroy_tick_graph(graph); }
  void launch_tick_graph(GraphHandle graph, std::size_t instance, const TickTransfers& transfers,
                         StreamView stream) override {
    host_.launch_tick_graph(graph, instance, transfers, stream);
  }
  bool is_capturing(StreamView stream) override { return host_.is_capturing(stream); }

 private:
  void flip(std::byte* byte, StreamView stream) {
    host_.launch_host_task(stream, [byte] { *byte ^= std::byte{0x5A}; });
  }
  HostBackend host_;
  Damage damage_;
};

TEST(BenchRunner, CatchesADamagedCopy) {
  DamagingBackend backend(DamagingBackend::Damage::copies);
  BenchOptions options = unlimited();
  options.strategies = {Strategy::ceiling, Strategy::per_item, Strategy::per_item_pageable,
                        Strategy::batch_async};
  options.pipelined = false;
  Progress quiet;
  const WorkloadResult result =
      run_workload(backend, tiny("scattered", "ascending", 1), options, quiet);
  ASSERT_EQ(result.results.size(), 4u);
  for (const StrategyResult& r : result.results) {
    SCOPED_TRACE(std::string(to_string(r.strategy)));
    EXPECT_FALSE(r.contents_ok);
    EXPECT_GT(r.mismatched_bytes, 0u);
  }
  EXPECT_FALSE(result.contents_ok());
}

TEST(BenchRunner, CatchesADamagedScatter) {
  DamagingBackend backend(DamagingBackend::Damage::scatters);
  BenchOptions options = unlimited();
  options.strategies = {Strategy::framestage_copy_scatter, Strategy::framestage_zero_copy};
  options.pipelined = false;
  Progress quiet;
  const WorkloadResult result =
      run_workload(backend, tiny("contiguous", "ascending", 1), options, quiet);
  ASSERT_EQ(result.results.size(), 2u);
  for (const StrategyResult& r : result.results) {
    SCOPED_TRACE(std::string(to_string(r.strategy)));
    EXPECT_FALSE(r.contents_ok);
    EXPECT_GE(r.mismatched_bytes, 1u);
  }
}

TEST(BenchRunner, SlowStrategiesRunThreeFrames) {
  HostBackend backend;
  BenchOptions options;
  options.max_seconds_per_strategy = 1e-9;  // every frame is over budget
  options.frames = 10;
  options.strategies = {Strategy::per_item, Strategy::framestage};
  options.pipelined = false;
  Progress quiet;
  const WorkloadResult result =
      run_workload(backend, tiny("scattered", "ascending", 1), options, quiet);
  for (const StrategyResult& r : result.results) {
    EXPECT_EQ(r.frame_us.size(), 3u) << to_string(r.strategy);
    EXPECT_EQ(r.warmup_frames, 1u) << "a slow strategy warms up with one frame";
  }
}

TEST(BenchRunner, StrategyNamesRoundTrip) {
  for (const Strategy strategy : kAllStrategies) {
    EXPECT_EQ(parse_strategy(to_string(strategy)), strategy);
    EXPECT_FALSE(describe(strategy).empty());
  }
  EXPECT_EQ(parse_strategy("per_item"), std::nullopt);
}

TEST(Summary, MedianAndNearestRankP95) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i)
    samples.push_back(i);
  const Summary s = Summary::of(samples);
  EXPECT_EQ(s.median_us, 51);
  EXPECT_EQ(s.p95_us, 95);
  EXPECT_EQ(s.min_us, 1);
  EXPECT_EQ(s.max_us, 100);
  EXPECT_DOUBLE_EQ(s.mean_us, 50.5);
  EXPECT_EQ(Summary::of({7}).p95_us, 7);
  EXPECT_EQ(Summary::of({3, 1, 2}).p95_us, 3);
}

}  // namespace
}  // namespace framestage::tools
