// The `framestage` program end to end (tools/framestage_main.cpp): argument errors exit with 2
// and name the problem, bad workload and config files are refused with the key, and a bench run
// on the host backend checks every byte and writes a JSON report that parses back.
#include <framestage/config.hpp>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

struct Outcome {
  int status;
  std::string out;
  std::string err;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("framestage_cli_" + std::string(test->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `framestage <args>`; stdout and stderr are kept apart.
  Outcome run(const std::string& args) const {
    const fs::path out = dir_ / "stdout";
    const fs::path err = dir_ / "stderr";
    const std::string command = std::string(FRAMESTAGE_CLI) + " " + args + " >" + out.string() +
                                " 2>" + err.string() + " </dev/null";
    const int raw = std::system(command.c_str());
    Outcome result{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, read_file(out), read_file(err)};
    return result;
  }

  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path path = dir_ / name;
    std::ofstream(path) << text;
    return path;
  }

  // A workload small enough for a sanitizer build: 200 items, 3 frames.
  fs::path tiny_workload(const std::string& destination = "scattered") const {
    return write("tiny-" + destination + ".json", R"({"name": "tiny-)" + destination +
                                                      R"(", "items_per_frame": 200,
                     "item_bytes": {"distribution": "uniform", "min": 1, "max": 300},
                     "destination": ")" + destination +
                                                      R"(", "frames": 3, "threads": 2})");
  }

  fs::path dir_;
};

#define EXPECT_CONTAINS(text, fragment)                                                           \
  EXPECT_NE((text).find(fragment), std::string::npos) << "missing \"" << (fragment) << "\" in:\n" \
                                                      << (text)

TEST_F(Cli, NoCommandPrintsUsageAndFails) {
  const Outcome r = run("");
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, "Usage: framestage");
}

TEST_F(Cli, UnknownCommandIsNamed) {
  const Outcome r = run("frobnicate");
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, "unknown command 'frobnicate'");
}

TEST_F(Cli, EveryCommandHasHelp) {
  for (const std::string command : {"", "probe ", "bench ", "measure "}) {
    const Outcome r = run(command + "--help");
    EXPECT_EQ(r.status, 0) << command;
    EXPECT_CONTAINS(r.out, "Usage: framestage " + command);
  }
  EXPECT_CONTAINS(run("bench --help").out, "--strategies");
  EXPECT_CONTAINS(run("probe --help").out, "--save");
  EXPECT_CONTAINS(run("measure --help").out, "--broadcast-devices");
}

TEST_F(Cli, BadOptionsExitWithTwoAndNameTheOption) {
  const struct {
    std::string args;
    std::string fragment;
  } cases[] = {
      {"bench --frames zero", "--frames"},
      {"bench --frames 0", "--frames"},
      {"bench --strategies ceiling,warp-drive", "warp-drive"},
      {"bench --backend gpu", "--backend"},
      {"bench --max-seconds-per-strategy -1", "--max-seconds-per-strategy"},
      {"bench --colour", "--colour"},
      {"bench /nonexistent/w.json", "/nonexistent/w.json"},
      {"bench --config /nonexistent/c.json", "--config"},
      {"bench --json - --csv -", "--json - and --csv -"},
      {"probe --device -1", "--device"},
      {"measure --steps items,warp-drive", "warp-drive"},
      {"measure --broadcast-devices 0,-1", "--broadcast-devices"},
      {"probe --quick extra", "extra"},
  };
  for (const auto& c : cases) {
    const Outcome r = run(c.args);
    EXPECT_EQ(r.status, 2) << c.args << "\n" << r.err;
    EXPECT_CONTAINS(r.err, c.fragment);
  }
}

TEST_F(Cli, BadWorkloadFileIsRefusedNamingFileAndKey) {
  const fs::path bad = write("bad.json", R"({"name": "bad", "items_per_frame": "ten",
      "item_bytes": 64, "destination": "scattered"})");
  const Outcome r = run("bench --backend host " + bad.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, bad.string());
  EXPECT_CONTAINS(r.err, "key \"items_per_frame\": expected an integer from 1 to");
  EXPECT_CONTAINS(r.err, "got \"ten\"");
  EXPECT_EQ(r.out.find("framestage bench: backend"), std::string::npos) << "it ran anyway";

  const fs::path broken = write("broken.json", "{\"name\": ");
  const Outcome r2 = run("bench --backend host " + broken.string());
  EXPECT_EQ(r2.status, 2);
  EXPECT_CONTAINS(r2.err, "not valid JSON");
}

TEST_F(Cli, BadConfigFileIsRefusedNamingTheKey) {
  const fs::path config = write("config.json", R"({"strategy": "fastest"})");
  const Outcome r =
      run("bench --backend host --config " + config.string() + " " + tiny_workload().string());
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, config.string());
  EXPECT_CONTAINS(r.err, "strategy");
}

TEST_F(Cli, ListShowsTheDefaultSuiteWithoutRunning) {
  const Outcome r = run("bench --list");
  EXPECT_EQ(r.status, 0);
  EXPECT_CONTAINS(r.out, "items-100k");
  EXPECT_CONTAINS(r.out, "mirror-16mib");
  EXPECT_EQ(r.out.find("backend"), std::string::npos);
}

// Every strategy on the host backend: contents checked, the table, the JSON report, the CSV.
TEST_F(Cli, HostBenchChecksEveryByteAndWritesReports) {
  const fs::path json_path = dir_ / "report.json";
  const fs::path csv_path = dir_ / "report.csv";
  const Outcome r =
      run("bench --backend host --max-seconds-per-strategy 0 --json " + json_path.string() +
          " --csv " + csv_path.string() + " " + tiny_workload("scattered").string() + " " +
          tiny_workload("mirror").string());
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_CONTAINS(r.out, "HOST EMULATION (no GPU)");
  EXPECT_CONTAINS(r.out, "every byte of every strategy matches");
  EXPECT_CONTAINS(r.out, "framestage-copy-scatter");
  EXPECT_TRUE(r.err.empty()) << "no progress bar when stderr is not a terminal: " << r.err;

  const auto report = nlohmann::json::parse(read_file(json_path));
  EXPECT_EQ(report["schema"], "framestage-bench/1");
  EXPECT_EQ(report["backend"]["emulation"], true);
  EXPECT_EQ(report["contents_ok"], true);
  // Rewritten after each workload; the last write says the run finished.
  EXPECT_EQ(report["complete"], true);
  EXPECT_TRUE(report["failure"].is_null());
  EXPECT_EQ(report["command_line"][1], "bench");
  ASSERT_EQ(report["workloads"].size(), 2u);
  EXPECT_EQ(report["workloads"][0]["name"], "tiny-scattered");
  EXPECT_EQ(report["workloads"][0]["spec"]["threads"], 2);
  std::size_t rows = 0;
  for (const auto& workload : report["workloads"]) {
    for (const auto& row : workload["results"]) {
      if (!row["skipped"].is_null()) continue;
      ++rows;
      EXPECT_EQ(row["contents_ok"], true) << row["strategy"];
      EXPECT_EQ(row["frames"], 3) << row["strategy"];
      EXPECT_GT(row["checked_bytes"].get<std::size_t>(), 0u);
    }
  }
  const std::string csv = read_file(csv_path);
  EXPECT_EQ(static_cast<std::size_t>(std::count(csv.begin(), csv.end(), '\n')), rows + 1);
}

// Whatever backend this machine has: CUDA on a GPU (byte for byte through the real device),
// the host backend elsewhere.
TEST_F(Cli, BenchOnTheDefaultBackendChecksEveryByte) {
  const Outcome r = run("bench --quiet --json - " + tiny_workload().string());
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  const auto report = nlohmann::json::parse(r.out);  // --json - : stdout is the JSON alone
  EXPECT_EQ(report["contents_ok"], true);
  EXPECT_EQ(report["workloads"][0]["results"].size(), 8u);
}

TEST_F(Cli, ProbeSavesAConfigThatConfigAndBenchLoad) {
  const fs::path probe_path = dir_ / "probe.json";
  const Outcome probe = run("probe --backend host --quick --save " + probe_path.string());
  ASSERT_EQ(probe.status, 0) << probe.out << probe.err;
  EXPECT_CONTAINS(probe.out, "HOST EMULATION");
  EXPECT_CONTAINS(probe.out, "ceilings:");
  EXPECT_CONTAINS(probe.out, "per call:");
  EXPECT_CONTAINS(probe.out, "direct_copy_threshold_bytes");

  const auto saved = nlohmann::json::parse(read_file(probe_path));
  EXPECT_EQ(saved["schema"], "framestage-probe/1");
  for (const char* key : {"pinned_h2d", "pinned_d2h", "bidirectional", "pageable_h2d"})
    EXPECT_GT(saved["ceilings_gbps"][key].get<double>(), 0) << key;
  for (const char* key : {"copy_enqueue", "kernel_launch_enqueue", "event_record"})
    EXPECT_TRUE(saved["per_call_us"][key].is_number()) << key;
  EXPECT_EQ(saved["calibration"]["calibrated"], false) << "host emulation calibrates nothing";
  const framestage::Config config = framestage::Config::from_json(saved["config"].dump());
  EXPECT_EQ(config, framestage::Config{});

  const fs::path json_path = dir_ / "report.json";
  const Outcome bench =
      run("bench --backend host --quiet --strategies ceiling,framestage --config " +
          probe_path.string() + " --json " + json_path.string() + " " + tiny_workload().string());
  ASSERT_EQ(bench.status, 0) << bench.out << bench.err;
  const auto report = nlohmann::json::parse(read_file(json_path));
  EXPECT_CONTAINS(report["config_source"].get<std::string>(), "a probe of");
  EXPECT_EQ(report["workloads"][0]["results"].size(), 2u);
  EXPECT_EQ(report["options"]["strategies"], nlohmann::json({"ceiling", "framestage"}));
}

TEST_F(Cli, ProbeSavedToStdoutIsTheJsonAlone) {
  const Outcome r = run("probe --backend host --quick --save -");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["schema"], "framestage-probe/1");
  EXPECT_CONTAINS(r.err, "ceilings:");
}

}  // namespace
