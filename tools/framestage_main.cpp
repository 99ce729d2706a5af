// The `framestage` command-line program:
//   framestage probe    the device's copy ceilings and per-call costs, and calibrated thresholds
//   framestage bench    workloads run with every transfer strategy side by side, every byte checked
//   framestage measure  the GPU measurements recorded in bench/RESULTS.md (issue 4), and the
//                       broadcast to several GPUs (issue 9)
#include "bench_runner.hpp"
#include "cli_style.hpp"
#include "device_info.hpp"
#include "probe.hpp"
#include "progress_bar.hpp"
#include "report.hpp"
#include "workload.hpp"

#include <framestage/error.hpp>

#if FRAMESTAGE_HAS_CUDA
#include "gpu_measurements.hpp"
#endif

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#ifndef FRAMESTAGE_VERSION
#define FRAMESTAGE_VERSION "unknown"
#endif

namespace {

using namespace framestage;
using namespace framestage::tools;

// Exit status: 0 success; 1 a run failed (a byte did not match, a device error); 2 the command
// line, a workload file or a config file is wrong.
constexpr int kFailed = 1;
constexpr int kUsage = 2;
constexpr const char* kExitStatuses =
    "exit status: 0 success, 1 a run failed (a byte did not match, a device error), 2 the "
    "command line, a workload file or a config file is wrong.";

const std::vector<std::string> kBackends{"auto", "cuda", "host"};
// The steps of `framestage measure`, in the order they run.
const std::vector<std::string> kMeasureSteps{"items",     "mirror",   "readback", "up-and-back",
                                             "host-cost", "pipeline", "broadcast"};

struct ProbeArgs {
  std::string backend = "auto";
  int device = 0;
  std::string save;
  std::string config;
  bool quick = false;
};

struct BenchArgs {
  std::vector<std::string> workloads;
  std::string backend = "auto";
  int device = 0;
  std::string config;
  std::vector<std::string> strategies;
  std::uint32_t frames = 0;
  double max_seconds_per_strategy = 0.5;
  std::string json;
  std::string csv;
  bool list = false;
  bool quiet = false;
  bool no_pipelined = false;
};

struct MeasureArgs {
  int device = 0;
  std::uint64_t seed = 1;
  std::vector<std::string> steps;
  std::vector<int> broadcast_devices;
};

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// Writes `text` to `path`, or to stdout for "-".
void write_output(const std::string& path, const std::string& text, const char* what) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) {
    throw Error(ErrorCategory::misuse,
                std::string(what) + " file '" + path + "' cannot be written");
  }
}

// --device, and --backend where `backend` is given: the options of every command that opens a
// device.
void add_device_options(CLI::App* command, int& device, std::string* backend = nullptr) {
  if (backend != nullptr) {
    command->add_option("--backend", *backend, "auto (CUDA if a device is present), cuda or host")
        ->check(CLI::IsMember(kBackends))
        ->capture_default_str();
  }
  command->add_option("--device", device, "CUDA device ordinal")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

// A comma-separated option whose every word must be one of `words`; its help ends with them.
CLI::Option* add_word_list_option(CLI::App* command, const std::string& name,
                                  std::vector<std::string>& values, const std::string& help,
                                  const std::vector<std::string>& words) {
  std::string listed;
  for (const std::string& word : words)
    listed += (listed.empty() ? "" : ", ") + word;
  return command->add_option(name, values, help + listed)
      ->delimiter(',')
      ->check(CLI::IsMember(words));
}

int run_probe_command(const ProbeArgs& args) {
  ProbeOptions options;
  options.quick = args.quick;
  if (!args.config.empty()) options.base = load_config(args.config).config;
  options.base.device = args.device;
  const OpenedBackend opened = open_backend(args.backend, args.device);
  // With --save -, stdout is the JSON alone.
  std::FILE* text = args.save == "-" ? stderr : stdout;
  std::fprintf(text, "framestage probe: backend: %s (%s)\n", opened.backend->describe().c_str(),
               opened.reason.c_str());
  std::fflush(text);
  const ProbeResult result = run_probe(*opened.backend, options);
  print_probe(text, result);
  if (!args.save.empty()) {
    write_output(args.save, to_json(result).dump(2) + "\n", "--save");
    if (args.save != "-") {
      std::fprintf(text, "framestage probe: saved to %s (bench --config %s uses its \"config\")\n",
                   args.save.c_str(), args.save.c_str());
    }
  }
  return 0;
}

int run_bench_command(const BenchArgs& args, const std::vector<std::string>& command_line) {
  if (args.json == "-" && args.csv == "-") {
    throw Error(ErrorCategory::misuse, "--json - and --csv - both ask for stdout; pick one");
  }
  BenchReport report;
  report.command_line = command_line;
  report.started_at = utc_now();
  BenchOptions& options = report.options;
  options.max_seconds_per_strategy = args.max_seconds_per_strategy;
  options.pipelined = !args.no_pipelined;
  if (args.frames > 0) options.frames = args.frames;
  if (!args.strategies.empty()) {
    options.strategies.clear();
    for (const Strategy strategy : kAllStrategies) {
      if (std::find(args.strategies.begin(), args.strategies.end(), to_string(strategy)) !=
          args.strategies.end()) {
        options.strategies.push_back(strategy);
      }
    }
  }
  std::string probed_device;
  report.config_source = "built-in defaults";
  if (!args.config.empty()) {
    LoadedConfig loaded = load_config(args.config);
    options.config = loaded.config;
    report.config_source = loaded.source;
    probed_device = loaded.probed_device;
  }
  options.config.device = args.device;

  std::vector<WorkloadSpec> specs;
  if (args.workloads.empty()) {
    specs = default_suite();
  } else {
    std::vector<std::filesystem::path> paths(args.workloads.begin(), args.workloads.end());
    specs = load_workloads(paths);
  }
  if (args.list) {
    for (const auto& spec : specs) {
      std::printf("%-24s %s; %u frames%s%s\n", spec.name.c_str(), spec.summary().c_str(),
                  spec.frames, spec.description.empty() ? "" : ": ", spec.description.c_str());
    }
    return 0;
  }

  const OpenedBackend opened = open_backend(args.backend, args.device);
  report.device = describe_device(*opened.backend);
  report.backend_reason = opened.reason;
  if (!probed_device.empty() && !report.device.emulation && probed_device != report.device.name) {
    std::fprintf(stderr, "framestage bench: warning: the config was probed on %s, and this is %s\n",
                 probed_device.c_str(), report.device.name.c_str());
  }
  // The table goes to stdout unless the JSON or the CSV does.
  std::FILE* table = args.quiet || args.json == "-" || args.csv == "-" ? nullptr : stdout;
  if (table != nullptr) {
    print_header(table, report);
    std::fflush(table);
  }
  ProgressBar progress(specs.size() * planned_runs(options),
                       !args.quiet && ProgressBar::stderr_is_terminal());
  // Files are rewritten after every workload, so a crash (a driver fault, say) loses only the
  // workload it hit; stdout gets the report once, at the end or on a caught error.
  const auto save = [&](bool to_files, bool to_stdout) {
    for (const auto& [path, what] : {std::pair{&args.json, "--json"}, {&args.csv, "--csv"}}) {
      if (path->empty() || (*path == "-" ? !to_stdout : !to_files)) continue;
      write_output(*path, *path == args.json ? to_json(report).dump(2) + "\n" : to_csv(report),
                   what);
    }
  };
  for (const auto& spec : specs) {
    try {
      report.workloads.push_back(run_workload(*opened.backend, spec, options, progress));
    } catch (const std::exception& e) {
      progress.clear();
      report.failure = "workload " + spec.name + ": " + e.what();
      save(true, true);
      throw;
    }
    progress.clear();
    if (table != nullptr) {
      print_workload(table, report.workloads.back());
      std::fflush(table);
    }
    save(true, false);
  }
  progress.clear();
  report.complete = true;
  save(true, true);

  std::FILE* verdict = table != nullptr ? table : stderr;
  if (report.contents_ok()) {
    std::fprintf(verdict,
                 "\nframestage bench: contents checked: every byte of every strategy "
                 "matches the host reference\n");
    return 0;
  }
  std::fprintf(verdict, "\nframestage bench: contents checked: MISMATCH in");
  for (const auto& workload : report.workloads) {
    for (const auto& result : workload.results)
      if (result.skipped.empty() && !result.contents_ok)
        std::fprintf(verdict, " %s/%s", workload.spec.name.c_str(),
                     std::string(to_string(result.strategy)).c_str());
    if (workload.pipelined && !workload.pipelined->contents_ok)
      std::fprintf(verdict, " %s/pipelined", workload.spec.name.c_str());
  }
  std::fprintf(verdict, "\n");
  return kFailed;
}

int run_measure_command(const MeasureArgs& args) {
#if FRAMESTAGE_HAS_CUDA
  const OpenedBackend opened = open_backend("cuda", args.device);
  bench::MeasureOptions options;
  options.seed = args.seed;
  options.steps = args.steps;
  options.broadcast_devices = args.broadcast_devices;
  return bench::run_gpu_measurements(*opened.backend, options);
#else
  (void)args;
  throw Error(ErrorCategory::cuda,
              "this build of framestage has no CUDA backend (no nvcc at configure time); the "
              "measurements need a GPU");
#endif
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> command_line(argv, argv + argc);
  CLI::App app{
      "framestage streams per-frame data from pinned host memory to GPU kernels, coalescing many "
      "small uploads into one copy and a scatter kernel. This program measures it.",
      "framestage"};
  app.set_version_flag("--version", FRAMESTAGE_VERSION);
  app.require_subcommand(1);
  apply_cli_style(app, kExitStatuses);

  ProbeArgs probe;
  CLI::App* probe_command = app.add_subcommand(
      "probe",
      "Measure the device: copy ceilings (pinned H2D, D2H, both at once, pageable H2D), per-call "
      "costs (a copy, a kernel launch, an event) and the planner thresholds they imply");
  add_device_options(probe_command, probe.device, &probe.backend);
  probe_command->add_option("--save", probe.save,
                            "write every figure and the calibrated config as JSON to FILE (- for "
                            "stdout); bench --config FILE loads it");
  probe_command
      ->add_option("--config", probe.config,
                   "base config (a Config JSON or a probe file); the probe replaces only "
                   "the thresholds it calibrates")
      ->check(CLI::ExistingFile);
  probe_command->add_flag("--quick", probe.quick,
                          "small copies and few repetitions: checks that the probe runs, "
                          "calibrates nothing");

  BenchArgs bench;
  std::vector<std::string> strategy_words;
  for (const Strategy strategy : kAllStrategies)
    strategy_words.emplace_back(to_string(strategy));
  CLI::App* bench_command = app.add_subcommand(
      "bench",
      "Run workloads with every strategy side by side (ceiling, per-item, per-item-pageable, "
      "batch-async, framestage and each framestage strategy forced), check every destination "
      "byte against a host reference, and print a table. With no workload it runs the built-in "
      "default suite (bench/workloads/).");
  bench_command
      ->add_option("workloads", bench.workloads,
                   "workload JSON files, or directories of them (default: the built-in suite)")
      ->check(CLI::ExistingPath);
  add_device_options(bench_command, bench.device, &bench.backend);
  bench_command
      ->add_option("--config", bench.config,
                   "framestage's config: a Config JSON file, or a file from probe --save")
      ->check(CLI::ExistingFile);
  add_word_list_option(bench_command, "--strategies", bench.strategies,
                       "comma-separated strategies to run (default: all): ", strategy_words);
  bench_command
      ->add_option(
          "--frames", bench.frames,
          "measured frames per strategy, for every workload (default: each workload's frames)")
      ->check(CLI::Range(1u, WorkloadSpec::kMaxFrames));
  bench_command
      ->add_option("--max-seconds-per-strategy", bench.max_seconds_per_strategy,
                   "run fewer frames (at least 3) of a strategy slower than this; 0: no limit")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  bench_command->add_option("--json", bench.json,
                            "write the report (every figure, the device, the config) as JSON to "
                            "FILE (- for stdout)");
  bench_command->add_option("--csv", bench.csv,
                            "write one row per strategy as CSV to FILE (- for stdout)");
  bench_command->add_flag("--list", bench.list, "list the workloads and exit");
  bench_command->add_flag("--quiet", bench.quiet, "no table and no progress bar");
  bench_command->add_flag("--no-pipelined", bench.no_pipelined,
                          "skip the back-to-back (pipelined) framestage run of each workload");

  MeasureArgs measure;
  CLI::App* measure_command = app.add_subcommand(
      "measure",
      "The GPU measurements of issue 4 (bench/RESULTS.md): 100,000 and 1,000 items against the "
      "ceiling, the 16 MiB mirror, host cost per item, and triple buffering; and issue 9's "
      "broadcast of 64 MiB to two GPUs against one copy to one. Needs a GPU.");
  add_device_options(measure_command, measure.device);
  measure_command->add_option("--seed", measure.seed, "item sizes and order")
      ->capture_default_str();
  add_word_list_option(measure_command, "--steps", measure.steps,
                       "comma-separated steps to run (default: all): ", kMeasureSteps);
  measure_command
      ->add_option("--broadcast-devices", measure.broadcast_devices,
                   "comma-separated CUDA ordinals the broadcast step sends to; repeats are allowed "
                   "(0,0: two backends on one GPU, for a smoke run). Default: 0,1 where two "
                   "devices are present, else the step is skipped")
      ->delimiter(',')
      ->check(CLI::NonNegativeNumber);

  if (argc < 2) {
    std::fputs(app.help().c_str(), stderr);
    return kUsage;
  }
  // CLI11 would only say that a subcommand is required; name the word it did not know.
  const auto commands = app.get_subcommands([](CLI::App*) { return true; });
  if (const std::string first = argv[1];
      !first.empty() && first[0] != '-' &&
      std::none_of(commands.begin(), commands.end(),
                   [&](CLI::App* command) { return command->check_name(first); })) {
    std::fprintf(stderr,
                 "framestage: unknown command '%s' (commands: probe, bench, measure; see "
                 "framestage --help)\n",
                 first.c_str());
    return kUsage;
  }
  if (const auto status = parse_command_line(app, argc, argv, kUsage)) return *status;

  const char* command = *probe_command ? "probe" : *bench_command ? "bench" : "measure";
  try {
    if (*probe_command) return run_probe_command(probe);
    if (*bench_command) return run_bench_command(bench, command_line);
    return run_measure_command(measure);
  } catch (const Error& e) {
    std::fprintf(stderr, "framestage %s: %s\n", command, e.what());
    return e.category() == ErrorCategory::bad_config || e.category() == ErrorCategory::misuse
               ? kUsage
               : kFailed;
  }
}
