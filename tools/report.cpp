#include "report.hpp"

#include <framestage/config.hpp>

#include <cinttypes>
#include <sstream>

#ifndef FRAMESTAGE_VERSION
#define FRAMESTAGE_VERSION "unknown"
#endif

namespace framestage::tools {
namespace {

using json = nlohmann::ordered_json;

std::string bytes_text(double bytes) {
  char text[32];
  if (bytes >= 1 << 20) {
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1 << 20));
  } else if (bytes >= 1 << 10) {
    std::snprintf(text, sizeof text, "%.1f KiB", bytes / (1 << 10));
  } else {
    std::snprintf(text, sizeof text, "%.0f B", bytes);
  }
  return text;
}

std::string row_label(const StrategyResult& result) {
  std::string label(to_string(result.strategy));
  if (result.strategy == Strategy::framestage && !result.planner_choice.empty()) {
    label += " -> " + result.planner_choice;
  }
  return label;
}

// How many times slower than `baseline` the row is; nullopt where either did not run.
std::optional<double> ratio(const StrategyResult& row, const StrategyResult* baseline) {
  if (baseline == nullptr || !row.skipped.empty() || baseline->time.median_us <= 0) {
    return std::nullopt;
  }
  return row.time.median_us / baseline->time.median_us;
}

json optional_number(std::optional<double> value) {
  return value ? json(*value) : json(nullptr);
}

std::string mismatch_text(std::size_t bytes, std::size_t first) {
  return "MISMATCH (" + std::to_string(bytes) + " bytes, first at offset " + std::to_string(first) +
         ")";
}

}  // namespace

bool BenchReport::contents_ok() const {
  for (const auto& workload : workloads)
    if (!workload.contents_ok()) return false;
  return true;
}

json to_json(const BenchReport& report) {
  json out;
  out["schema"] = "framestage-bench/1";
  out["framestage_version"] = FRAMESTAGE_VERSION;
  out["started_at"] = report.started_at;
  out["command_line"] = report.command_line;
  out["backend"] = {
      {"kind", report.device.kind == BackendKind::cuda ? "cuda" : "host"},
      {"description", report.device.description},
      {"emulation", report.device.emulation},
      {"reason", report.backend_reason},
      {"note", report.device.emulation ? json(kHostEmulationNote) : json(nullptr)},
  };
  out["device"] = report.device.to_json();
  out["config"] = json::parse(report.options.config.to_json());
  out["config_source"] = report.config_source;
  json strategies = json::array();
  for (const Strategy strategy : report.options.strategies)
    strategies.push_back(to_string(strategy));
  out["options"] = {
      {"strategies", strategies},
      {"frames", report.options.frames ? json(*report.options.frames) : json(nullptr)},
      {"max_seconds_per_strategy", report.options.max_seconds_per_strategy},
      {"pipelined", report.options.pipelined},
  };
  json workloads = json::array();
  for (const WorkloadResult& workload : report.workloads) {
    const StrategyResult* ceiling = workload.find(Strategy::ceiling);
    const StrategyResult* framestage = workload.find(Strategy::framestage);
    json w;
    w["name"] = workload.spec.name;
    w["spec"] = workload.spec.to_json();
    w["payload_bytes_per_frame"] = workload.payload_bytes;
    w["destination_bytes"] = workload.destination_bytes;
    w["mean_item_bytes"] = workload.mean_item_bytes;
    w["contents_ok"] = workload.contents_ok();
    if (workload.pipelined) {
      const PipelinedResult& p = *workload.pipelined;
      w["pipelined"] = {{"frames", p.frames},
                        {"period_us", p.period_us},
                        {"host_write_us", p.host_write_us},
                        {"gbps", p.gbps},
                        {"contents_ok", p.contents_ok}};
    } else {
      w["pipelined"] = nullptr;
    }
    json results = json::array();
    for (const StrategyResult& r : workload.results) {
      json row;
      row["strategy"] = to_string(r.strategy);
      row["description"] = describe(r.strategy);
      row["skipped"] = r.skipped.empty() ? json(nullptr) : json(r.skipped);
      if (r.skipped.empty()) {
        row["frames"] = r.frame_us.size();
        row["warmup_frames"] = r.warmup_frames;
        row["median_us"] = r.time.median_us;
        row["p95_us"] = r.time.p95_us;
        row["mean_us"] = r.time.mean_us;
        row["min_us"] = r.time.min_us;
        row["max_us"] = r.time.max_us;
        row["host_median_us"] = r.host.median_us;
        row["gbps"] = r.gbps;
        row["x_ceiling"] = optional_number(ratio(r, ceiling));
        row["x_framestage"] = optional_number(ratio(r, framestage));
        row["contents_ok"] = r.contents_ok;
        row["checked_bytes"] = r.checked_bytes;
        row["mismatched_bytes"] = r.mismatched_bytes;
        row["first_mismatch"] = r.mismatched_bytes > 0 ? json(r.first_mismatch) : json(nullptr);
        row["frame_us"] = r.frame_us;
        if (r.strategy >= Strategy::framestage) {
          row["planner_choice"] = r.planner_choice;
          row["last_frame"] = r.last_frame;
        }
      }
      results.push_back(std::move(row));
    }
    w["results"] = std::move(results);
    workloads.push_back(std::move(w));
  }
  out["workloads"] = std::move(workloads);
  out["contents_ok"] = report.contents_ok();
  out["complete"] = report.complete;
  out["failure"] = report.failure.empty() ? json(nullptr) : json(report.failure);
  return out;
}

std::string to_csv(const BenchReport& report) {
  std::ostringstream out;
  out << "workload,destination,items_per_frame,mean_item_bytes,payload_bytes,strategy,"
         "planner_choice,frames,median_us,p95_us,mean_us,host_median_us,gbps,x_ceiling,"
         "x_framestage,contents_ok,emulation\n";
  const auto number = [](std::optional<double> value) {
    if (!value) return std::string();
    char text[32];
    std::snprintf(text, sizeof text, "%.4g", *value);
    return std::string(text);
  };
  for (const WorkloadResult& workload : report.workloads) {
    const StrategyResult* ceiling = workload.find(Strategy::ceiling);
    const StrategyResult* framestage = workload.find(Strategy::framestage);
    for (const StrategyResult& r : workload.results) {
      if (!r.skipped.empty()) continue;
      char figures[256];
      std::snprintf(figures, sizeof figures, "%zu,%.3f,%.3f,%.3f,%.3f,%.4f", r.frame_us.size(),
                    r.time.median_us, r.time.p95_us, r.time.mean_us, r.host.median_us, r.gbps);
      out << workload.spec.name << ',' << to_string(workload.spec.destination) << ','
          << workload.spec.items_per_frame << ',' << number(workload.mean_item_bytes) << ','
          << workload.payload_bytes << ',' << to_string(r.strategy) << ',' << r.planner_choice
          << ',' << figures << ',' << number(ratio(r, ceiling)) << ','
          << number(ratio(r, framestage)) << ',' << (r.contents_ok ? "true" : "false") << ','
          << (report.device.emulation ? "true" : "false") << '\n';
    }
  }
  return out.str();
}

void print_header(std::FILE* out, const BenchReport& report) {
  if (report.device.emulation)
    std::fprintf(out, "framestage bench: %s\n", kHostEmulationNote.data());
  std::fprintf(out, "framestage bench: backend: %s (%s)\n", report.device.description.c_str(),
               report.backend_reason.c_str());
  std::fprintf(out, "framestage bench: device: %s\n", report.device.summary().c_str());
  const Config& c = report.options.config;
  std::fprintf(out,
               "framestage bench: config (%s): strategy %s, direct_copy_threshold_bytes %zu, "
               "zero_copy_max_bytes %zu, merge_gap_bytes %zu, pipeline_chunk_bytes %zu; "
               "buffering per workload, arenas sized to it\n",
               report.config_source.c_str(), std::string(to_string(c.strategy)).c_str(),
               c.direct_copy_threshold_bytes, c.zero_copy_max_bytes, c.merge_gap_bytes,
               c.pipeline_chunk_bytes);
  std::fprintf(out,
               "framestage bench: a frame's time runs from the first call that moves it until "
               "the host sees it arrive,\n  its bytes already written to host memory; median "
               "and p95 over the measured frames; x = times the ceiling's or framestage's "
               "median\n");
}

void print_workload(std::FILE* out, const WorkloadResult& workload) {
  std::fprintf(out, "\n%s: %s\n", workload.spec.name.c_str(), workload.spec.summary().c_str());
  std::fprintf(out, "  %s per frame (mean item %s), destination buffer %s\n",
               bytes_text(static_cast<double>(workload.payload_bytes)).c_str(),
               bytes_text(workload.mean_item_bytes).c_str(),
               bytes_text(static_cast<double>(workload.destination_bytes)).c_str());
  std::fprintf(out, "  %-30s %6s %12s %12s %9s %10s %12s %11s  %s\n", "strategy", "frames",
               "median us", "p95 us", "GB/s", "x ceiling", "x framestage", "host us", "contents");
  const StrategyResult* ceiling = workload.find(Strategy::ceiling);
  const StrategyResult* framestage = workload.find(Strategy::framestage);
  const auto ratio_text = [](std::optional<double> value) {
    char text[32] = "-";
    if (value) std::snprintf(text, sizeof text, "%.2f", *value);
    return std::string(text);
  };
  for (const StrategyResult& r : workload.results) {
    if (!r.skipped.empty()) {
      std::fprintf(out, "  %-30s skipped: %s\n", row_label(r).c_str(), r.skipped.c_str());
      continue;
    }
    std::fprintf(
        out, "  %-30s %6zu %12.1f %12.1f %9.2f %10s %12s %11.1f  %s\n", row_label(r).c_str(),
        r.frame_us.size(), r.time.median_us, r.time.p95_us, r.gbps,
        ratio_text(ratio(r, ceiling)).c_str(), ratio_text(ratio(r, framestage)).c_str(),
        r.host.median_us,
        r.contents_ok ? "ok" : mismatch_text(r.mismatched_bytes, r.first_mismatch).c_str());
  }
  if (workload.pipelined) {
    const PipelinedResult& p = *workload.pipelined;
    std::fprintf(out,
                 "  pipelined: %.1f us per frame, %.2f GB/s: %u frames back to back over %u "
                 "slots, the host writing each from arrays it holds (%.1f us of it, %.1f ns an "
                 "item); contents %s\n",
                 p.period_us, p.gbps, p.frames, workload.spec.buffering, p.host_write_us,
                 1e3 * p.host_write_us / static_cast<double>(workload.spec.items_per_frame),
                 p.contents_ok ? "ok" : "MISMATCH");
  }
}

void print_table(std::FILE* out, const BenchReport& report) {
  print_header(out, report);
  for (const auto& workload : report.workloads)
    print_workload(out, workload);
}

}  // namespace framestage::tools
