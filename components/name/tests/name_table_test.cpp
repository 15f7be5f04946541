#include <gtest/gtest.h>

#include "components/name/name_path.hpp"
#include "components/name/name_table.hpp"
#include "components/name/tests/change_builders.hpp"

namespace flotilla::name {
namespace {

using testing::owner_change;

Change direct(std::string name, ComponentId owner, std::uint64_t incarnation = 1) {
  return testing::register_change(std::move(name), owner, incarnation);
}

Change with_op(ChangeOp op, std::string name, ComponentId owner, std::string member = "",
               std::uint32_t weight = 1) {
  return owner_change(op, std::move(name), owner, std::move(member), weight);
}

TEST(NamePath, AcceptsWellFormedNames) {
  EXPECT_EQ(validate_name("/net"), NameErrc::ok);
  EXPECT_EQ(validate_name("/net/tcp/0"), NameErrc::ok);
  EXPECT_EQ(validate_name("/A-z_0.9/x"), NameErrc::ok);
  EXPECT_EQ(validate_name("/" + std::string(47, 'a')), NameErrc::ok);
}

TEST(NamePath, RejectsMalformedNames) {
  for (std::string_view bad : {"", "/", "net", "net/tcp", "//net", "/net//tcp", "/net/", "/n t",
                               "/net/tcp*", "/ünï"}) {
    EXPECT_EQ(validate_name(bad), NameErrc::bad_name) << bad;
  }
  EXPECT_EQ(validate_name("/" + std::string(48, 'a')), NameErrc::bad_name);  // 49 bytes
  EXPECT_EQ(validate_name(std::string_view("/a\0b", 4)), NameErrc::bad_name);
}

TEST(NamePath, PrefixRelationsAreComponentWise) {
  EXPECT_TRUE(is_beneath("/net/tcp", "/net"));
  EXPECT_FALSE(is_beneath("/network", "/net"));
  EXPECT_FALSE(is_beneath("/net", "/net"));
  EXPECT_TRUE(names_overlap("/net", "/net/tcp/0"));
  EXPECT_FALSE(names_overlap("/net/a", "/net/b"));
  EXPECT_EQ(top_component("/net/tcp/0"), "net");
  EXPECT_NE(name_id("/net/tcp/0"), name_id("/net/tcp/1"));
}

TEST(NameTable, DirectRegisterLookupAndExpiry) {
  NameTable table(TableConfig{250});
  ASSERT_EQ(table.apply(direct("/net/tcp/0", 5)), NameErrc::ok);
  const LookupResult found = table.lookup("/net/tcp/0", 1000, 0);
  ASSERT_EQ(found.status, NameErrc::ok);
  EXPECT_EQ(found.endpoint, (Endpoint{5, 1, 1}));
  EXPECT_EQ(found.version, 1u);
  EXPECT_EQ(found.expires_ms, 1250u);
  EXPECT_EQ(table.lookup("/net/tcp/1", 1000, 0).status, NameErrc::not_found);
}

TEST(NameTable, OnlyTheOwnerRepointsAndVersionsGrow) {
  NameTable table;
  ASSERT_EQ(table.apply(direct("/svc", 5, 1)), NameErrc::ok);
  EXPECT_EQ(table.apply(direct("/svc", 6, 1)), NameErrc::exists);
  ASSERT_EQ(table.apply(direct("/svc", 5, 2)), NameErrc::ok);  // restart, new incarnation
  EXPECT_EQ(table.find("/svc")->version, 2u);
  EXPECT_EQ(table.find("/svc")->endpoint.incarnation, 2u);
  EXPECT_EQ(table.apply(with_op(ChangeOp::unregister, "/svc", 6)), NameErrc::not_owner);
  EXPECT_EQ(table.apply(with_op(ChangeOp::unregister, "/svc", 5)), NameErrc::ok);
  EXPECT_EQ(table.apply(with_op(ChangeOp::unregister, "/svc", 5)), NameErrc::not_found);
  EXPECT_EQ(table.apply(direct("/bad//name", 5)), NameErrc::bad_name);
  EXPECT_EQ(table.size(), 0u);
}

TEST(NameTable, IndirectLookupPicksByWeightAndSkipsMissingMembers) {
  NameTable table;
  ASSERT_EQ(table.apply(direct("/net/tcp/0", 10)), NameErrc::ok);
  ASSERT_EQ(table.apply(direct("/net/tcp/1", 11)), NameErrc::ok);
  ASSERT_EQ(table.apply(with_op(ChangeOp::add_member, "/net/tcp", 1, "/net/tcp/0", 1)), NameErrc::ok);
  ASSERT_EQ(table.apply(with_op(ChangeOp::add_member, "/net/tcp", 1, "/net/tcp/1", 3)), NameErrc::ok);
  ASSERT_EQ(table.apply(with_op(ChangeOp::add_member, "/net/tcp", 1, "/net/tcp/2", 5)), NameErrc::ok);
  EXPECT_EQ(table.find("/net/tcp")->version, 3u);
  int picks[2] = {0, 0};
  for (std::uint64_t random = 0; random < 400; ++random) {
    const LookupResult found = table.lookup("/net/tcp", 0, random);
    ASSERT_EQ(found.status, NameErrc::ok);
    ++picks[found.endpoint.component - 10];
  }
  EXPECT_EQ(picks[0], 100);  // weight 1 of 4 (/net/tcp/2 is not registered)
  EXPECT_EQ(picks[1], 300);
  EXPECT_EQ(table.apply(with_op(ChangeOp::add_member, "/net/tcp", 2, "/net/tcp/0")), NameErrc::not_owner);
  EXPECT_EQ(table.apply(with_op(ChangeOp::add_member, "/net/tcp/0", 10, "/x")), NameErrc::wrong_kind);
  EXPECT_EQ(table.apply(with_op(ChangeOp::add_member, "/g", 1, "/x", 0)), NameErrc::bad_request);
  ASSERT_EQ(table.apply(with_op(ChangeOp::remove_member, "/net/tcp", 1, "/net/tcp/1")), NameErrc::ok);
  EXPECT_EQ(table.lookup("/net/tcp", 0, 3).endpoint.component, 10u);
  ASSERT_EQ(table.apply(with_op(ChangeOp::unregister, "/net/tcp/0", 10)), NameErrc::ok);
  EXPECT_EQ(table.lookup("/net/tcp", 0, 3).status, NameErrc::not_found);
}

TEST(NameTable, ReservationKeepsOthersOut) {
  NameTable table;
  ASSERT_EQ(table.apply(with_op(ChangeOp::reserve, "/net", 1)), NameErrc::ok);
  EXPECT_EQ(table.apply(direct("/net/tcp/0", 2)), NameErrc::reserved);
  EXPECT_EQ(table.apply(with_op(ChangeOp::add_member, "/net/tcp", 2, "/net/tcp/0")), NameErrc::reserved);
  EXPECT_EQ(table.apply(direct("/net/tcp/0", 1)), NameErrc::ok);
  EXPECT_EQ(table.apply(direct("/network", 2)), NameErrc::ok);  // not beneath /net
  EXPECT_EQ(table.lookup("/net", 0, 0).status, NameErrc::not_found);
  // A sub-domain someone else already occupies cannot be reserved.
  ASSERT_EQ(table.apply(direct("/fs/disk", 3)), NameErrc::ok);
  EXPECT_EQ(table.apply(with_op(ChangeOp::reserve, "/fs", 4)), NameErrc::exists);
  EXPECT_EQ(table.apply(with_op(ChangeOp::reserve, "/fs", 3)), NameErrc::ok);
}

TEST(NameTable, DigestAndEqualityTrackEntriesAndVersions) {
  NameTable a;
  NameTable b;
  ASSERT_EQ(a.apply(direct("/x", 1)), NameErrc::ok);
  ASSERT_EQ(b.apply(direct("/x", 1)), NameErrc::ok);
  EXPECT_EQ(a.digest(), b.digest());
  EXPECT_TRUE(a.same_entries(b));
  ASSERT_EQ(b.apply(direct("/x", 1)), NameErrc::ok);  // same content, version 2
  EXPECT_NE(a.digest(), b.digest());
  EXPECT_FALSE(a.same_entries(b));
}

}  // namespace
}  // namespace flotilla::name
