// Workload files of `framestage bench` (tools/workload.cpp): what a valid file means, that every
// bad file is rejected with a message naming the key, and the layouts drawn from a spec.
#include "workload.hpp"

#include "default_suite.hpp"
#include "support/expect_error.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <set>
#include <string>
#include <vector>

namespace framestage::tools {
namespace {

using framestage::testing::throws_error;

// A valid workload with one key replaced (or removed, for a null value).
std::string with(const std::string& key, const nlohmann::json& value) {
  nlohmann::json object = {
      {"name", "t"},
      {"items_per_frame", 100},
      {"item_bytes", {{"distribution", "uniform"}, {"min", 16}, {"max", 256}}},
      {"destination", "scattered"},
  };
  if (value.is_null()) {
    object.erase(key);
  } else {
    object[key] = value;
  }
  return object.dump();
}

TEST(WorkloadSpec, ParsesEveryKeyAndRoundTrips) {
  const auto spec = WorkloadSpec::from_json(R"({
    "name": "w-1", "description": "d", "items_per_frame": 1000,
    "item_bytes": {"distribution": "log_uniform", "min": 16, "max": 4096},
    "destination": "contiguous", "order": "random", "frames": 7, "buffering": "double",
    "threads": 3, "seed": 42})",
                                            "test");
  EXPECT_EQ(spec.name, "w-1");
  EXPECT_EQ(spec.items_per_frame, 1000u);
  EXPECT_EQ(spec.size_distribution, SizeDistribution::log_uniform);
  EXPECT_EQ(spec.min_item_bytes, 16u);
  EXPECT_EQ(spec.max_item_bytes, 4096u);
  EXPECT_EQ(spec.destination, DestinationPattern::contiguous);
  EXPECT_EQ(spec.order, IssueOrder::random);
  EXPECT_EQ(spec.frames, 7u);
  EXPECT_EQ(spec.buffering, 2u);
  EXPECT_EQ(spec.threads, 3u);
  EXPECT_EQ(spec.seed, 42u);
  EXPECT_EQ(WorkloadSpec::from_json(spec.to_json().dump(), "again"), spec);
}

TEST(WorkloadSpec, DefaultsAndFixedSizes) {
  const auto spec = WorkloadSpec::from_json(with("item_bytes", 64), "test");
  EXPECT_EQ(spec.size_distribution, SizeDistribution::fixed);
  EXPECT_EQ(spec.min_item_bytes, 64u);
  EXPECT_EQ(spec.max_item_bytes, 64u);
  EXPECT_EQ(spec.order, IssueOrder::ascending);
  EXPECT_EQ(spec.frames, 100u);
  EXPECT_EQ(spec.buffering, 3u);
  EXPECT_EQ(spec.threads, 1u);
  EXPECT_EQ(spec.seed, 1u);
  const auto fixed =
      WorkloadSpec::from_json(with("item_bytes", {{"distribution", "fixed"}, {"min", 32}}), "test");
  EXPECT_EQ(fixed.max_item_bytes, 32u);
  EXPECT_EQ(WorkloadSpec::from_json(with("buffering", 5), "test").buffering, 5u);
}

struct BadFile {
  std::string text;
  std::string fragment;  // what the message must say
};

void PrintTo(const BadFile& bad, std::ostream* out) {
  *out << bad.text;
}

class RejectsBadFile : public ::testing::TestWithParam<BadFile> {};

TEST_P(RejectsBadFile, NamingTheKey) {
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, GetParam().fragment,
                           [&] { (void)WorkloadSpec::from_json(GetParam().text, "bad.json"); }));
}

INSTANTIATE_TEST_SUITE_P(
    WorkloadSpec, RejectsBadFile,
    ::testing::Values(
        BadFile{"{\"name\": ", "workload 'bad.json': not valid JSON"},
        BadFile{"{\"items_per_frame\": 1e400}", "workload 'bad.json': not valid JSON"},
        BadFile{"[1, 2]", "expected a JSON object"},
        BadFile{with("colour", "red"), "unknown key \"colour\""},
        BadFile{with("name", nullptr), "key \"name\": expected a string, got nothing"},
        BadFile{with("name", "a b"), "key \"name\": expected 1 to 64 letters"},
        BadFile{with("items_per_frame", "ten"),
                "key \"items_per_frame\": expected an integer from 1 to 4194304, got \"ten\""},
        BadFile{with("items_per_frame", 0), "key \"items_per_frame\""},
        BadFile{with("items_per_frame", -5), "key \"items_per_frame\""},
        BadFile{with("items_per_frame", 1.5), "key \"items_per_frame\""},
        BadFile{with("items_per_frame", nullptr), "key \"items_per_frame\": expected an integer"},
        BadFile{with("item_bytes", nullptr), "key \"item_bytes\": expected an integer"},
        BadFile{with("item_bytes", "big"), "key \"item_bytes\""},
        BadFile{with("item_bytes", 0), "key \"item_bytes\""},
        BadFile{with("item_bytes", {{"distribution", "normal"}, {"min", 1}, {"max", 2}}),
                "key \"item_bytes.distribution\": expected \"fixed\", \"uniform\" or "
                "\"log_uniform\""},
        BadFile{with("item_bytes", {{"distribution", "uniform"}, {"min", 16}}),
                "key \"item_bytes.max\": expected an integer from 16"},
        BadFile{with("item_bytes", {{"distribution", "uniform"}, {"min", 64}, {"max", 16}}),
                "key \"item_bytes.max\""},
        BadFile{with("item_bytes", {{"distribution", "fixed"}, {"min", 64}, {"max", 128}}),
                "key \"item_bytes.max\""},
        BadFile{
            with("item_bytes", {{"distribution", "uniform"}, {"min", 1}, {"max", 2}, {"mean", 1}}),
            "unknown key \"item_bytes.mean\""},
        BadFile{with("destination", "everywhere"),
                "key \"destination\": expected \"scattered\", \"contiguous\" or \"mirror\""},
        BadFile{with("destination", nullptr), "key \"destination\""},
        BadFile{with("order", "sideways"), "key \"order\""},
        BadFile{with("frames", 0), "key \"frames\""},
        BadFile{with("buffering", "quadruple"),
                "key \"buffering\": expected an integer from 1 to 8 or \"single\""},
        BadFile{with("buffering", 9), "key \"buffering\""},
        BadFile{with("threads", 65), "key \"threads\": expected an integer from 1 to 64"},
        BadFile{with("seed", "lucky"), "key \"seed\""},
        BadFile{with("description", 3), "key \"description\": expected a string"},
        BadFile{R"({"name": "m", "items_per_frame": 10, "item_bytes": 64,
                    "destination": "mirror", "order": "random"})",
                "key \"order\": expected \"ascending\" for a mirror destination"},
        BadFile{R"({"name": "big", "items_per_frame": 4194304, "item_bytes": 512,
                    "destination": "scattered"})",
                "times the largest item (512 B) must be at most"}));

TEST(WorkloadSpec, UnreadableFileIsNamed) {
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, "workload '/nonexistent/w.json'",
                           [] { (void)WorkloadSpec::from_file("/nonexistent/w.json"); }));
}

TEST(ItemLayout, ScatteredDestinationsNeverTouch) {
  auto spec = WorkloadSpec::from_json(with("items_per_frame", 500), "test");
  for (const IssueOrder order : {IssueOrder::ascending, IssueOrder::random}) {
    spec.order = order;
    const ItemLayout layout = ItemLayout::make(spec);
    ASSERT_EQ(layout.bytes.size(), 500u);
    std::vector<std::pair<std::size_t, std::size_t>> ranges;
    std::size_t payload = 0;
    for (std::size_t i = 0; i < 500; ++i) {
      EXPECT_GE(layout.bytes[i], 16u);
      EXPECT_LE(layout.bytes[i], 256u);
      EXPECT_EQ(layout.source_offsets[i], payload);  // sources packed in issue order
      payload += layout.bytes[i];
      ranges.emplace_back(layout.destination_offsets[i],
                          layout.destination_offsets[i] + layout.bytes[i]);
    }
    EXPECT_EQ(layout.payload_bytes, payload);
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      EXPECT_LT(ranges[i - 1].second, ranges[i].first) << "item " << i << " touches the one before";
    EXPECT_LE(ranges.back().second, layout.destination_bytes);
    const bool ascending =
        std::is_sorted(layout.destination_offsets.begin(), layout.destination_offsets.end());
    EXPECT_EQ(ascending, order == IssueOrder::ascending);
  }
}

TEST(ItemLayout, ContiguousAndMirrorCoverTheBufferExactly) {
  for (const char* destination : {"contiguous", "mirror"}) {
    const auto spec = WorkloadSpec::from_json(with("destination", destination), "test");
    const ItemLayout layout = ItemLayout::make(spec);
    EXPECT_EQ(layout.destination_bytes, layout.payload_bytes);
    std::size_t at = 0;
    for (std::size_t i = 0; i < layout.bytes.size(); ++i) {
      EXPECT_EQ(layout.destination_offsets[i], at) << destination;
      at += layout.bytes[i];
    }
  }
}

TEST(ItemLayout, SameSpecSameLayoutAndSeedChangesIt) {
  auto spec = WorkloadSpec::from_json(with("order", "random"), "test");
  const ItemLayout a = ItemLayout::make(spec);
  EXPECT_EQ(a.bytes, ItemLayout::make(spec).bytes);
  EXPECT_EQ(a.destination_offsets, ItemLayout::make(spec).destination_offsets);
  spec.seed = 2;
  EXPECT_NE(a.bytes, ItemLayout::make(spec).bytes);
}

TEST(ItemLayout, LogUniformSizesStayInRange) {
  const auto spec = WorkloadSpec::from_json(
      with("item_bytes", {{"distribution", "log_uniform"}, {"min", 1}, {"max", 1 << 20}}), "t");
  const ItemLayout layout = ItemLayout::make(spec);
  const auto [smallest, largest] = std::minmax_element(layout.bytes.begin(), layout.bytes.end());
  EXPECT_GE(*smallest, 1u);
  EXPECT_LE(*largest, std::size_t{1} << 20);
  EXPECT_EQ(layout.largest_item_bytes, *largest);
}

TEST(FillFrameBytes, DependsOnTagAndPosition) {
  std::vector<std::byte> a(1001);
  std::vector<std::byte> b(1001);
  fill_frame_bytes(a, 1);
  fill_frame_bytes(b, 2);
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    same += a[i] == b[i];
  EXPECT_LT(same, 20u) << "two frames left mostly the same bytes";
  std::vector<std::byte> again(1001);
  fill_frame_bytes(again, 1);
  EXPECT_EQ(a, again);
}

TEST(LoadWorkloads, DirectoriesFilesAndDuplicateNames) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("framestage_test_workload_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "b.json") << with("name", "second");
  std::ofstream(dir / "a.json") << with("name", "first");
  std::ofstream(dir / "notes.txt") << "not a workload";
  const std::vector<std::filesystem::path> paths{dir};
  const auto specs = load_workloads(paths);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs[0].name, "first");  // by file name
  EXPECT_EQ(specs[1].name, "second");
  const std::vector<std::filesystem::path> twice{dir / "a.json", dir / "a.json"};
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, "two workloads are named \"first\"",
                           [&] { (void)load_workloads(twice); }));
  const std::vector<std::filesystem::path> missing{dir / "missing.json"};
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, "no such file or directory",
                           [&] { (void)load_workloads(missing); }));
  std::filesystem::remove_all(dir);
}

// The default suite is the files of bench/workloads/, compiled in: every file there parses, and
// every embedded workload is its file's current text.
TEST(DefaultSuite, IsTheFilesOfBenchWorkloads) {
  const std::filesystem::path source = FRAMESTAGE_SOURCE_DIR;
  const std::vector<std::filesystem::path> dir{source / "bench" / "workloads"};
  const auto files = load_workloads(dir);
  const auto suite = default_suite();
  ASSERT_FALSE(suite.empty());
  std::set<std::string> names;
  for (const auto& spec : files)
    names.insert(spec.name);
  for (const EmbeddedWorkload& embedded : embedded_default_workloads()) {
    const auto spec = WorkloadSpec::from_file(source / embedded.path);
    EXPECT_EQ(WorkloadSpec::from_json(embedded.text, embedded.path), spec)
        << embedded.path << " changed since the build: re-run cmake";
    EXPECT_TRUE(names.count(spec.name)) << embedded.path;
  }
}

}  // namespace
}  // namespace framestage::tools
