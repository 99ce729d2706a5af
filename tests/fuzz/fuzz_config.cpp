// libFuzzer target: Config::from_json on arbitrary bytes (built and run by tools/fuzz).
//
// Every input must either parse into a valid Config that survives a round trip through
// to_json(), or be rejected with Error(bad_config) and a message. Anything else (another
// exception, a crash, a sanitizer report, a hang) is a finding: nothing but framestage::Error
// is caught here.
#include <framestage/config.hpp>
#include <framestage/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const framestage::Config config = framestage::Config::from_json(text);
    config.validate();
    if (!(framestage::Config::from_json(config.to_json()) == config)) {
      std::fprintf(stderr, "fuzz_config: the config does not survive to_json/from_json\n");
      std::abort();
    }
  } catch (const framestage::Error& e) {
    if (e.category() != framestage::ErrorCategory::bad_config || e.message().empty()) {
      std::fprintf(stderr, "fuzz_config: rejected without a bad_config message: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
