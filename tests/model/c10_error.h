#pragma once
// Runs `fn`, expects a c10::Error, returns its message (without the C++ backtrace); a test failure when
// nothing is thrown.
#include <string>

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace cmn::testing {

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "expected a c10::Error";
  return "";
}

}  // namespace cmn::testing
