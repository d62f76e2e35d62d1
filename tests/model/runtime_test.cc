#include <gtest/gtest.h>

#include "cmn/model/runtime.h"

namespace cmn::model {
namespace {

// scripts/setup.sh points libblas.so.3 at OpenBLAS; a machine set up otherwise must fail here, loudly.
TEST(Runtime, LibTorchCallsOpenBlas) {
  const BlasInfo info = active_blas();
  EXPECT_FALSE(info.library.empty()) << "no sgemm_ found in the process";
  EXPECT_TRUE(info.openblas) << "sgemm_ comes from " << info.library;
  EXPECT_TRUE(warn_if_slow_blas());
}

}  // namespace
}  // namespace cmn::model
