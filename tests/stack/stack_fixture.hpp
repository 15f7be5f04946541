// The gtest fixture around a RunningStack (tests/support/stack_harness.hpp): skips without root
// (in SetUp, so the test body does not run), fails the test when the stack does not come up, and
// always tears it down.
#pragma once

#include <gtest/gtest.h>

#include "tests/support/stack_harness.hpp"

namespace flotilla::testing {

class StackTest : public ::testing::Test {
 protected:
  // Not being root is the one reason to skip: as root, a stack that cannot be built (no namespace,
  // no XDP) is a failure.
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, veth, XDP)";
  }

  // Brings the stack up; call as ASSERT_TRUE(start(...)) so the test stops when it does not come up.
  [[nodiscard]] ::testing::AssertionResult start(const std::string& rules = "pass all",
                                                 const std::string& extra = "",
                                                 const std::string& driver = "af_xdp",
                                                 const std::string& impair = "") {
    names_ = unique_names();
    const std::string problem = stack_.start(names_, stack_config(names_, rules, extra, driver, impair));
    if (!problem.empty()) return ::testing::AssertionFailure() << "the stack did not come up: " << problem;
    return ::testing::AssertionSuccess();
  }

  void TearDown() override { stack_.stop(); }

  recovery::CounterTable all_counters() const { return stack_.all_counters(); }
  std::int64_t counter(const std::string& component, const std::string& name) const {
    return stack_.counter(component, name);
  }
  std::string events() const { return stack_.events(); }
  CommandOutcome cli(const std::string& arguments) const { return stack_.cli(arguments); }

  StackNames names_;
  RunningStack stack_;
};

}  // namespace flotilla::testing
