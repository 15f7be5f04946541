// The main of every GoogleTest program in the tree, in place of gtest_main. gtest's own main exits 0
// when every test skipped, and meson would count that run as passed; here it exits 77, meson's
// "skipped". A run that selected no test at all is a failure: a filter that matches nothing must
// not pass for a test that ran.
#include <cstdio>

#include <gtest/gtest.h>

namespace {

constexpr int kAllSkipped = 77;  // the GNU and meson convention for a skipped test program

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  if (GTEST_FLAG_GET(list_tests)) return failed;
  const ::testing::UnitTest& run = *::testing::UnitTest::GetInstance();
  if (run.test_to_run_count() == 0) {
    std::fprintf(stderr, "no test was selected to run\n");
    return 1;
  }
  if (failed == 0 && run.skipped_test_count() == run.test_to_run_count()) return kAllSkipped;
  return failed;
}
