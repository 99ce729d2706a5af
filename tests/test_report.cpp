// `framestage bench`'s report (tools/report.cpp): the JSON document's structure, the CSV and the
// table, from a real run on the host backend.
#include "report.hpp"

#include <framestage/host_backend.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <string>

namespace framestage::tools {
namespace {

BenchReport small_report() {
  static HostBackend backend;
  BenchReport report;
  report.command_line = {"framestage", "bench"};
  report.started_at = "2026-01-01T00:00:00Z";
  report.device = describe_device(backend);
  report.backend_reason = "test";
  report.config_source = "built-in defaults";
  report.options.max_seconds_per_strategy = 0;
  Progress quiet;
  for (const char* destination : {"scattered", "mirror"}) {
    nlohmann::json spec = {{"name", std::string("r-") + destination},
                           {"items_per_frame", 50},
                           {"item_bytes", 100},
                           {"destination", destination},
                           {"frames", 3}};
    report.workloads.push_back(
        run_workload(backend, WorkloadSpec::from_json(spec.dump(), "test"), report.options, quiet));
  }
  return report;
}

TEST(Report, JsonHasTheDocumentedStructure) {
  const BenchReport report = small_report();
  // Through text, as a reader of the file sees it.
  const auto json = nlohmann::json::parse(to_json(report).dump());
  EXPECT_EQ(json["schema"], "framestage-bench/1");
  for (const char* key : {"framestage_version", "started_at", "command_line", "backend", "device",
                          "config", "config_source", "options", "workloads", "contents_ok"}) {
    EXPECT_TRUE(json.contains(key)) << key;
  }
  EXPECT_EQ(json["backend"]["kind"], "host");
  EXPECT_EQ(json["backend"]["emulation"], true);
  EXPECT_NE(json["backend"]["note"].get<std::string>().find("HOST EMULATION"), std::string::npos);
  EXPECT_EQ(json["device"]["emulation"], true);
  // The config is a Config JSON: Config reads it back.
  EXPECT_EQ(Config::from_json(json["config"].dump()), report.options.config);
  EXPECT_EQ(json["options"]["strategies"].size(), kAllStrategies.size());
  EXPECT_EQ(json["contents_ok"], true);
  ASSERT_EQ(json["workloads"].size(), 2u);
  for (const auto& workload : json["workloads"]) {
    SCOPED_TRACE(workload["name"].get<std::string>());
    EXPECT_EQ(workload["spec"]["items_per_frame"], 50);
    EXPECT_EQ(workload["payload_bytes_per_frame"], 5000);
    EXPECT_EQ(workload["mean_item_bytes"], 100.0);
    EXPECT_EQ(workload["contents_ok"], true);
    EXPECT_EQ(workload["pipelined"]["contents_ok"], true);
    ASSERT_EQ(workload["results"].size(), kAllStrategies.size());
    for (const auto& row : workload["results"]) {
      SCOPED_TRACE(row["strategy"].get<std::string>());
      EXPECT_TRUE(row["description"].is_string());
      if (!row["skipped"].is_null()) {
        EXPECT_EQ(workload["spec"]["destination"], "mirror");
        EXPECT_FALSE(row.contains("median_us"));
        continue;
      }
      for (const char* key : {"frames", "median_us", "p95_us", "mean_us", "min_us", "max_us",
                              "host_median_us", "gbps", "x_ceiling", "x_framestage"}) {
        EXPECT_TRUE(row[key].is_number()) << key;
      }
      EXPECT_EQ(row["frames"], 3);
      EXPECT_EQ(row["frame_us"].size(), 3u);
      EXPECT_LE(row["p95_us"].get<double>(), row["max_us"].get<double>());
      EXPECT_EQ(row["contents_ok"], true);
      EXPECT_EQ(row["mismatched_bytes"], 0);
      EXPECT_TRUE(row["first_mismatch"].is_null());
      const bool framestage = row["strategy"].get<std::string>().rfind("framestage", 0) == 0;
      EXPECT_EQ(row.contains("planner_choice"), framestage);
      if (framestage) {
        EXPECT_TRUE(row["last_frame"].contains("scatter_launches"));
      }
      if (row["strategy"] == "ceiling") {
        EXPECT_DOUBLE_EQ(row["x_ceiling"].get<double>(), 1.0);
      }
      if (row["strategy"] == "framestage") {
        EXPECT_DOUBLE_EQ(row["x_framestage"].get<double>(), 1.0);
      }
    }
  }
}

TEST(Report, CsvHasARowPerStrategyThatRan) {
  const BenchReport report = small_report();
  std::istringstream csv(to_csv(report));
  std::string line;
  std::getline(csv, line);
  EXPECT_EQ(line.rfind("workload,destination,items_per_frame,", 0), 0u);
  std::size_t rows = 0;
  while (std::getline(csv, line)) {
    ++rows;
    EXPECT_NE(line.find(",true,true"), std::string::npos) << "contents_ok, emulation: " << line;
  }
  // Scattered: every strategy; mirror: the forced framestage strategies are skipped.
  EXPECT_EQ(rows, kAllStrategies.size() + kAllStrategies.size() - 3);
}

TEST(Report, TableSaysHostEmulationAndShowsEveryRow) {
  const BenchReport report = small_report();
  char* text = nullptr;
  std::size_t size = 0;
  std::FILE* out = open_memstream(&text, &size);
  print_table(out, report);
  std::fclose(out);
  const std::string table(text, size);
  std::free(text);
  EXPECT_NE(table.find("HOST EMULATION (no GPU)"), std::string::npos);
  EXPECT_NE(table.find("framestage -> mirror_copies"), std::string::npos);
  EXPECT_NE(table.find("framestage-zero-copy           skipped:"), std::string::npos);
  for (const Strategy strategy : kAllStrategies)
    EXPECT_NE(table.find(std::string(to_string(strategy))), std::string::npos);
  EXPECT_NE(table.find("pipelined:"), std::string::npos);
}

}  // namespace
}  // namespace framestage::tools
