// Shared test helper: assert that a call throws framestage::Error of a category, with a message
// fragment, so tests check what a user would switch on and read.
#pragma once

#include <framestage/error.hpp>

#include <gtest/gtest.h>

#include <sstream>
#include <string>

namespace framestage::testing {

/// How an error message prints an address (`operator<<` of a pointer), to match it by fragment.
inline std::string address_text(const void* p) {
  std::ostringstream out;
  out << p;
  return out.str();
}

template <class F>
::testing::AssertionResult throws_error(ErrorCategory category, const std::string& fragment,
                                        F&& call) {
  try {
    call();
  } catch (const Error& e) {
    if (e.category() != category) {
      return ::testing::AssertionFailure()
             << "category " << to_string(e.category()) << " instead of " << to_string(category)
             << ": " << e.what();
    }
    if (std::string(e.what()).find(fragment) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks \"" << fragment << "\": " << e.what();
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-framestage exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace framestage::testing
