#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "components/name/name_client.hpp"
#include "components/name/name_table.hpp"

namespace flotilla::name {
namespace {

// A name table standing in for the fleet, and components that answer check_intended with
// whatever names they currently hold.
class World {
 public:
  World() : table_(TableConfig{100}) {}

  void start(ComponentId component, std::string name, std::uint64_t incarnation) {
    Change change;
    change.op = ChangeOp::register_direct;
    change.name = name;
    change.owner = component;
    change.endpoint = Endpoint{component, 0, incarnation};
    ASSERT_EQ(table_.apply(change), NameErrc::ok);
    held_[component] = {Registration{name_id(name), incarnation}};
  }
  // The component restarts: new incarnation, not registered under anything yet.
  void crash(ComponentId component) { held_[component].clear(); }
  void remove(ComponentId component, std::string name) {
    Change change;
    change.op = ChangeOp::unregister;
    change.name = std::move(name);
    change.owner = component;
    ASSERT_EQ(table_.apply(change), NameErrc::ok);
  }

  NameClient client() {
    return NameClient([this](std::string_view name) { return table_.lookup(name, now, 0); });
  }
  NameClient::SendFn sender() {
    return [this](const Endpoint& to, const IntendedHeader& header) {
      ++deliveries;
      return check_intended(header, held_[to.component]);
    };
  }

  std::uint64_t now = 1000;
  int deliveries = 0;

 private:
  NameTable table_;
  std::map<ComponentId, std::vector<Registration>> held_;
};

TEST(CheckIntended, AcceptsOnlyTheNameAtThatIncarnation) {
  const std::vector<Registration> mine = {{name_id("/a"), 3}, {name_id("/b"), 3}};
  EXPECT_EQ(check_intended({name_id("/a"), 3}, mine), Delivery::accepted);
  EXPECT_EQ(check_intended({name_id("/b"), 3}, mine), Delivery::accepted);
  EXPECT_EQ(check_intended({name_id("/a"), 2}, mine), Delivery::stale);
  EXPECT_EQ(check_intended({name_id("/c"), 3}, mine), Delivery::stale);
  EXPECT_EQ(check_intended({name_id("/a"), 3}, {}), Delivery::stale);
}

class NameClientTest : public ::testing::Test {
 protected:
  NameErrc send(std::string_view name, std::uint64_t later_ms = 0) {
    return client.send(name, world.now + later_ms, world.sender());
  }

  World world;
  NameClient client = world.client();
};

TEST_F(NameClientTest, CachesUntilExpiry) {
  world.start(5, "/svc", 1);
  ASSERT_EQ(send("/svc"), NameErrc::ok);
  ASSERT_EQ(send("/svc", 99), NameErrc::ok);
  EXPECT_EQ(client.fleet_lookups(), 1u);
  ASSERT_EQ(send("/svc", 100), NameErrc::ok);  // expired
  EXPECT_EQ(client.fleet_lookups(), 2u);
}

TEST_F(NameClientTest, StaleEntryAfterRestartIsRefreshedAndRetriedOnce) {
  world.start(5, "/svc", 1);
  ASSERT_EQ(send("/svc"), NameErrc::ok);
  world.crash(5);
  world.start(5, "/svc", 2);  // re-registered by its new incarnation; the cache still says 1
  world.deliveries = 0;
  EXPECT_EQ(send("/svc", 1), NameErrc::ok);
  EXPECT_EQ(world.deliveries, 2);  // stale, then accepted
  EXPECT_EQ(client.stale_retries(), 1u);
  EXPECT_EQ(client.fleet_lookups(), 2u);
  EXPECT_EQ(client.resolve("/svc", world.now + 2).endpoint.incarnation, 2u);
}

TEST_F(NameClientTest, StaleTwiceFailsWithAClearError) {
  world.start(5, "/svc", 1);
  world.crash(5);  // restarted but has not registered again: the table still names incarnation 1
  world.deliveries = 0;
  EXPECT_EQ(send("/svc"), NameErrc::stale);
  EXPECT_EQ(world.deliveries, 2);  // exactly one retry
  EXPECT_EQ(client.cache().size(), 0u);
  EXPECT_STREQ(to_string(NameErrc::stale), "receiver no longer holds that name at that incarnation");
}

TEST_F(NameClientTest, DeletedNameFailsCleanly) {
  world.start(5, "/svc", 1);
  ASSERT_EQ(send("/svc"), NameErrc::ok);
  world.remove(5, "/svc");
  world.crash(5);
  world.deliveries = 0;
  EXPECT_EQ(send("/svc", 1), NameErrc::not_found);
  EXPECT_EQ(world.deliveries, 1);  // the cached attempt, then the lookup finds nothing
  EXPECT_EQ(client.cache().size(), 0u);
  EXPECT_EQ(send("/never"), NameErrc::not_found);
}

TEST_F(NameClientTest, BadNamesAreRejectedWithoutAsking) {
  for (std::string_view bad : {"", "svc", "/svc/", "/a b", "/x//y"}) {
    EXPECT_EQ(send(bad), NameErrc::bad_name) << bad;
  }
  EXPECT_EQ(client.resolve("/" + std::string(60, 'a'), world.now).status, NameErrc::bad_name);
  EXPECT_EQ(client.fleet_lookups(), 0u);
  EXPECT_EQ(world.deliveries, 0);
}

}  // namespace
}  // namespace flotilla::name
