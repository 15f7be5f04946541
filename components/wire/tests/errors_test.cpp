// WireError names and the Checked wrapper.
#include "components/wire/errors.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace flotilla::wire {
namespace {

TEST(WireErrors, NamesMatchEnumerators) {
  EXPECT_STREQ(wire_error_name(WireError::too_short), "too_short");
  EXPECT_STREQ(wire_error_name(WireError::bad_version), "bad_version");
  EXPECT_STREQ(wire_error_name(WireError::bad_header_length), "bad_header_length");
  EXPECT_STREQ(wire_error_name(WireError::bad_total_length), "bad_total_length");
  EXPECT_STREQ(wire_error_name(WireError::bad_length), "bad_length");
  EXPECT_STREQ(wire_error_name(WireError::bad_checksum), "bad_checksum");
  EXPECT_STREQ(wire_error_name(WireError::bad_option), "bad_option");
  EXPECT_STREQ(wire_error_name(WireError::unsupported), "unsupported");
}

TEST(WireErrors, CountCoversEveryDistinctName) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < kWireErrorCount; ++i) {
    names.insert(wire_error_name(static_cast<WireError>(i)));
  }
  EXPECT_EQ(names.size(), kWireErrorCount);
  EXPECT_EQ(names.count("unknown"), 0u);
  EXPECT_STREQ(wire_error_name(static_cast<WireError>(kWireErrorCount)), "unknown");
}

TEST(Checked, HoldsValueOrError) {
  struct Pair { int a; int b; };
  Checked<Pair> good(Pair{1, 2});
  ASSERT_TRUE(good.ok());
  EXPECT_TRUE(static_cast<bool>(good));
  EXPECT_EQ(good->b, 2);
  good.value().a = 7;
  EXPECT_EQ(good.value().a, 7);
  const Checked<Pair>& view = good;
  EXPECT_EQ(view.value().a, 7);

  Checked<Pair> bad(WireError::bad_checksum);
  EXPECT_FALSE(bad.ok());
  EXPECT_FALSE(static_cast<bool>(bad));
  EXPECT_EQ(bad.error(), WireError::bad_checksum);
}

}  // namespace
}  // namespace flotilla::wire
