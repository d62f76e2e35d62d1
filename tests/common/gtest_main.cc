// The main() of every cmn test binary (except on CMN_MODEL_ONLY hosts): logging initialised once, as in the
// binaries (cmn/common/main_init.h), so no test prints "Logging before InitGoogleLogging()".
#include <gtest/gtest.h>

#include "cmn/common/main_init.h"

int main(int argc, char** argv) {
  cmn::init_logging(argv[0]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
