#include <framestage/config.hpp>
#include <framestage/error.hpp>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace framestage {
namespace {

/// Succeeds when `call` throws Error of `category` whose message contains every fragment.
template <class Call>
testing::AssertionResult throws_error(ErrorCategory category,
                                      const std::vector<std::string>& fragments, Call&& call) {
  try {
    std::forward<Call>(call)();
  } catch (const Error& error) {
    if (error.category() != category) {
      return testing::AssertionFailure()
             << "category " << to_string(error.category()) << ", expected " << to_string(category)
             << "; message: " << error.message();
    }
    for (const std::string& fragment : fragments) {
      if (error.message().find(fragment) == std::string::npos) {
        return testing::AssertionFailure()
               << "message lacks \"" << fragment << "\": " << error.message();
      }
    }
    return testing::AssertionSuccess();
  } catch (const std::exception& other) {
    return testing::AssertionFailure() << "threw something other than Error: " << other.what();
  }
  return testing::AssertionFailure() << "did not throw";
}

testing::AssertionResult rejects_json(std::string_view text,
                                      const std::vector<std::string>& fragments) {
  return throws_error(ErrorCategory::bad_config, fragments,
                      [&] { static_cast<void>(Config::from_json(text)); });
}

Config non_default_config() {
  Config config;
  config.buffering = 2;
  config.arena_bytes = std::size_t{1} << 30;
  config.max_uploads_per_frame = 1000;
  config.device = 3;
  config.direct_copy_threshold_bytes = 12345;
  config.zero_copy_max_bytes = 0;
  config.merge_gap_bytes = 17;
  config.strategy = UploadStrategy::zero_copy;
  config.overflow = OverflowPolicy::grow;
  config.trim_after_frames = 99;
  config.slot_timeout_ms = 4'294'967'295U;
  return config;
}

TEST(Config, DefaultsValidate) {
  EXPECT_NO_THROW(Config{}.validate());
}

TEST(Config, EmptyObjectGivesDefaults) {
  EXPECT_EQ(Config::from_json("{}"), Config{});
}

TEST(Config, RoundTripsNonDefaultValues) {
  const Config config = non_default_config();
  ASSERT_NE(config, Config{});
  EXPECT_EQ(Config::from_json(config.to_json()), config);
}

TEST(Config, ToJsonWritesEveryKeyWithNumbersAndWords) {
  const std::string text = non_default_config().to_json();
  for (const char* key : {"buffering", "arena_bytes", "max_uploads_per_frame", "device",
                          "direct_copy_threshold_bytes", "zero_copy_max_bytes", "merge_gap_bytes",
                          "strategy", "overflow", "trim_after_frames", "slot_timeout_ms"}) {
    EXPECT_NE(text.find('"' + std::string{key} + "\": "), std::string::npos) << key;
  }
  EXPECT_NE(text.find("\n  \"buffering\": 2,"), std::string::npos) << text;
  EXPECT_NE(text.find("\"strategy\": \"zero_copy\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"overflow\": \"grow\""), std::string::npos) << text;
}

TEST(Config, ParsesEveryKey) {
  const Config config = Config::from_json(R"({
    "buffering": 2, "arena_bytes": 1073741824, "max_uploads_per_frame": 1000, "device": 3,
    "direct_copy_threshold_bytes": 12345, "zero_copy_max_bytes": 0, "merge_gap_bytes": 17,
    "strategy": "zero_copy", "overflow": "grow", "trim_after_frames": 99,
    "slot_timeout_ms": 4294967295})");
  EXPECT_EQ(config, non_default_config());
}

TEST(Config, AcceptsRangeBoundaries) {
  const Config low = Config::from_json(
      R"({"buffering": 1, "arena_bytes": 4096, "max_uploads_per_frame": 1,
          "direct_copy_threshold_bytes": 1, "trim_after_frames": 1, "slot_timeout_ms": 1})");
  EXPECT_EQ(low.buffering, 1U);
  EXPECT_EQ(low.arena_bytes, 4096U);
  const Config high = Config::from_json(
      R"({"buffering": 8, "arena_bytes": 1099511627776, "max_uploads_per_frame": 67108864,
          "device": 2147483647, "zero_copy_max_bytes": 18446744073709551615})");
  EXPECT_EQ(high.buffering, Config::kMaxBuffering);
  EXPECT_EQ(high.arena_bytes, std::size_t{1} << 40);
  EXPECT_EQ(high.max_uploads_per_frame, std::size_t{1} << 26);
  EXPECT_EQ(high.device, 2147483647);
  EXPECT_EQ(high.zero_copy_max_bytes, ~std::size_t{0});
}

TEST(Config, EnumsHaveTheirJsonNames) {
  EXPECT_EQ(to_string(OverflowPolicy::fail), "fail");
  EXPECT_EQ(to_string(OverflowPolicy::grow), "grow");
  EXPECT_EQ(to_string(UploadStrategy::automatic), "auto");
  EXPECT_EQ(to_string(UploadStrategy::copy_scatter), "copy_scatter");
  EXPECT_EQ(to_string(UploadStrategy::zero_copy), "zero_copy");
  EXPECT_EQ(to_string(UploadStrategy::direct), "direct");
}

TEST(Config, ValidateNamesTheBadMember) {
  Config config;
  config.arena_bytes = 100;
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config,
                           {"config key \"arena_bytes\": must be 4096..1099511627776; got 100"},
                           [&] { config.validate(); }));
  config = Config{};
  config.buffering = 12;
  EXPECT_TRUE(throws_error(
      ErrorCategory::bad_config,
      {R"(config key "buffering": must be 1..8 or "single", "double", "triple"; got 12)"},
      [&] { config.validate(); }));
  config = Config{};
  config.strategy = static_cast<UploadStrategy>(7);
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, {"\"strategy\"", "got 7"},
                           [&] { config.validate(); }));
}

TEST(Config, ErrorWhatCarriesTheCategory) {
  try {
    static_cast<void>(Config::from_json(R"({"device": -1})"));
    FAIL() << "did not throw";
  } catch (const Error& error) {
    EXPECT_EQ(std::string_view{error.what()}.substr(0, 24), "framestage: bad_config: ");
  }
}

class BufferingWord : public testing::TestWithParam<std::pair<const char*, std::uint32_t>> {};

TEST_P(BufferingWord, MapsToDepth) {
  const auto& [word, depth] = GetParam();
  EXPECT_EQ(Config::from_json(std::string{R"({"buffering": ")"} + word + "\"}").buffering, depth);
}

INSTANTIATE_TEST_SUITE_P(Config, BufferingWord,
                         testing::Values(std::pair{"single", 1U}, std::pair{"double", 2U},
                                         std::pair{"triple", 3U}));

class StrategyName : public testing::TestWithParam<UploadStrategy> {};

TEST_P(StrategyName, ParsesFromItsName) {
  const std::string text = R"({"strategy": ")" + std::string{to_string(GetParam())} + "\"}";
  EXPECT_EQ(Config::from_json(text).strategy, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Config, StrategyName,
                         testing::Values(UploadStrategy::automatic, UploadStrategy::copy_scatter,
                                         UploadStrategy::zero_copy, UploadStrategy::direct));

class OverflowName : public testing::TestWithParam<OverflowPolicy> {};

TEST_P(OverflowName, ParsesFromItsName) {
  const std::string text = R"({"overflow": ")" + std::string{to_string(GetParam())} + "\"}";
  EXPECT_EQ(Config::from_json(text).overflow, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Config, OverflowName,
                         testing::Values(OverflowPolicy::fail, OverflowPolicy::grow));

struct Rejected {
  const char* name;
  const char* json;
  std::vector<std::string> fragments;
};

void PrintTo(const Rejected& rejected, std::ostream* out) {
  *out << rejected.json;
}

class RejectedDocument : public testing::TestWithParam<Rejected> {};

TEST_P(RejectedDocument, ThrowsBadConfigNamingTheProblem) {
  EXPECT_TRUE(rejects_json(GetParam().json, GetParam().fragments)) << GetParam().json;
}

INSTANTIATE_TEST_SUITE_P(
    Config, RejectedDocument,
    testing::Values(
        Rejected{"TrailingComma", R"({"buffering": 3,})", {"not valid JSON", "byte"}},
        Rejected{"Truncated", R"({"buffering": )", {"not valid JSON"}},
        Rejected{"Empty", "", {"not valid JSON"}},
        Rejected{"NumberTooLargeForADouble", R"({"buffering": 1e400})", {"not valid JSON"}},
        Rejected{"TopLevelArray", "[1, 2]", {"must be a JSON object, got array"}},
        Rejected{"TopLevelString", R"("buffering")", {"must be a JSON object, got string"}},
        Rejected{"UnknownKey",
                 R"({"bufering": 3})",
                 {R"("bufering" is not known)", R"("buffering", "arena_bytes")",
                  R"("slot_timeout_ms")"}},
        Rejected{"RepeatedKey",
                 R"({"buffering": 2, "device": 0, "buffering": 3})",
                 {R"(config key "buffering" appears more than once)"}},
        Rejected{"StringForInteger",
                 R"({"arena_bytes": "64M"})",
                 {R"(config key "arena_bytes": expected an unsigned integer, got string "64M")"}},
        Rejected{"Negative", R"({"arena_bytes": -1})", {R"("arena_bytes")", "negative", "-1"}},
        Rejected{"Float", R"({"buffering": 3.0})", {R"("buffering")", "floating-point", "3.0"}},
        Rejected{"FloatBeyondUint64",
                 R"({"merge_gap_bytes": 1e30})",
                 {R"("merge_gap_bytes")", "floating-point"}},
        Rejected{"Boolean",
                 R"({"max_uploads_per_frame": true})",
                 {R"("max_uploads_per_frame")", "got boolean true"}},
        Rejected{"Null", R"({"trim_after_frames": null})", {R"("trim_after_frames")", "got null"}},
        Rejected{"Object", R"({"device": {}})", {R"("device")", "got object"}},
        Rejected{"BufferingZero",
                 R"({"buffering": 0})",
                 {R"("buffering": must be 1..8 or "single", "double", "triple"; got 0)"}},
        Rejected{"BufferingNine", R"({"buffering": 9})", {R"("buffering")", "1..8", "got 9"}},
        Rejected{"BufferingWord",
                 R"({"buffering": "quadruple"})",
                 {R"("buffering")", R"("triple")", R"(got "quadruple")"}},
        Rejected{"BufferingBoolean",
                 R"({"buffering": false})",
                 {R"("buffering": expected an unsigned integer or one of "single")"}},
        Rejected{"OverflowWord",
                 R"({"overflow": "maybe"})",
                 {R"(config key "overflow": must be one of "fail", "grow"; got "maybe")"}},
        Rejected{
            "StrategyWord",
            R"({"strategy": "fast"})",
            {R"("strategy")", R"("auto", "copy_scatter", "zero_copy", "direct")", R"(got "fast")"}},
        Rejected{"StrategyNumber",
                 R"({"strategy": 1})",
                 {R"("strategy": expected a string)", "unsigned integer 1"}},
        Rejected{"ArenaTooSmall",
                 R"({"arena_bytes": 4095})",
                 {R"("arena_bytes")", "4096..1099511627776", "got 4095"}},
        Rejected{"ArenaTooLarge",
                 R"({"arena_bytes": 1099511627777})",
                 {R"("arena_bytes")", "got 1099511627777"}},
        Rejected{"MaxUploadsZero",
                 R"({"max_uploads_per_frame": 0})",
                 {R"("max_uploads_per_frame")", "1..67108864", "got 0"}},
        Rejected{"MaxUploadsTooMany",
                 R"({"max_uploads_per_frame": 67108865})",
                 {R"("max_uploads_per_frame")", "got 67108865"}},
        Rejected{"DeviceNegative", R"({"device": -1})", {R"("device")", "-1"}},
        Rejected{"DeviceBeyondInt",
                 R"({"device": 2147483648})",
                 {R"("device")", "at most 2147483647", "got 2147483648"}},
        Rejected{"DirectThresholdZero",
                 R"({"direct_copy_threshold_bytes": 0})",
                 {R"("direct_copy_threshold_bytes": must be >= 1; got 0)"}},
        Rejected{"TrimZero", R"({"trim_after_frames": 0})", {R"("trim_after_frames")", ">= 1"}},
        Rejected{"TimeoutZero", R"({"slot_timeout_ms": 0})", {R"("slot_timeout_ms")", "got 0"}},
        Rejected{"TimeoutBeyondUint32",
                 R"({"slot_timeout_ms": 4294967296})",
                 {R"("slot_timeout_ms")", "at most 4294967295", "got 4294967296"}}),
    [](const testing::TestParamInfo<Rejected>& instance) {
      return std::string{instance.param.name};
    });

/// A file in the temporary directory, named after the test, removed afterwards.
class ConfigFile : public testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             (std::string{"framestage_"} +
              testing::UnitTest::GetInstance()->current_test_info()->name() + ".json"))
                .string();
  }
  void TearDown() override { std::filesystem::remove(path_); }

  void write(std::string_view text) const {
    std::ofstream file(path_, std::ios::binary | std::ios::trunc);
    file << text;
    ASSERT_TRUE(file.good()) << path_;
  }

  std::string path_;
};

TEST_F(ConfigFile, ReadsGoodContent) {
  write(non_default_config().to_json());
  EXPECT_EQ(Config::from_file(path_), non_default_config());
}

TEST_F(ConfigFile, PrefixesContentErrorsWithThePath) {
  write(R"({"overflow": "maybe"})");
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, {path_ + ": config key \"overflow\""},
                           [&] { static_cast<void>(Config::from_file(path_)); }));
}

TEST_F(ConfigFile, PrefixesJsonErrorsWithThePath) {
  write("{");
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, {path_ + ": config is not valid JSON"},
                           [&] { static_cast<void>(Config::from_file(path_)); }));
}

TEST_F(ConfigFile, MissingFileNamesThePathAndReason) {
  const std::string missing = path_ + ".missing";
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config, {missing, "No such file or directory"},
                           [&] { static_cast<void>(Config::from_file(missing)); }));
}

TEST_F(ConfigFile, DirectoryNamesThePathAndReason) {
  const std::string directory = std::filesystem::temp_directory_path().string();
  EXPECT_TRUE(throws_error(ErrorCategory::bad_config,
                           {"cannot read config file \"" + directory + "\"", "Is a directory"},
                           [&] { static_cast<void>(Config::from_file(directory)); }));
}

}  // namespace
}  // namespace framestage
