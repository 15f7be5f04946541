#include <map>
#include <random>

#include <gtest/gtest.h>

#include "components/name/tests/change_builders.hpp"
#include "components/name/tests/fleet_sim.hpp"

namespace flotilla::name {
namespace {

using testing::FleetSim;
using testing::SimOptions;

Change reg(std::string name, ComponentId owner, std::uint64_t incarnation = 1) {
  return testing::register_change(std::move(name), owner, incarnation);
}

Change unreg(std::string name, ComponentId owner) {
  return testing::owner_change(ChangeOp::unregister, std::move(name), owner);
}

SimOptions sim_options(std::size_t servers, std::uint64_t seed, std::uint64_t max_delay_ms = 0) {
  SimOptions options;
  options.servers = servers;
  options.seed = seed;
  options.max_delay_ms = max_delay_ms;
  return options;
}

NameErrc status_of(const FleetSim& sim, std::uint64_t cookie) {
  const NameMessage* answer = sim.reply(cookie);
  return answer ? answer->status : NameErrc::bad_request;  // bad_request: no reply at all
}

TEST(ArbitratedCommit, ContendedRegisterHasOneWinnerAtATime) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    FleetSim sim(sim_options(5, seed, 2));
    std::mt19937 random(static_cast<unsigned>(seed));
    for (int round = 0; round < 3; ++round) {
      std::vector<std::uint64_t> cookies;
      for (ComponentId owner = 10; owner < 18; ++owner) {
        cookies.push_back(sim.submit(static_cast<MemberId>(1 + random() % 5), reg("/svc/db", owner)));
      }
      ASSERT_FALSE(sim.run_until_idle(1'000'000) == 1'000'000) << "seed " << seed;
      ComponentId winner = kNoComponent;
      int exists = 0;
      for (std::size_t i = 0; i < cookies.size(); ++i) {
        const NameErrc status = status_of(sim, cookies[i]);
        if (status == NameErrc::ok) {
          EXPECT_EQ(winner, kNoComponent) << "two winners, seed " << seed;
          winner = static_cast<ComponentId>(10 + i);
        } else {
          EXPECT_EQ(status, NameErrc::exists) << to_string(status);
          ++exists;
        }
      }
      ASSERT_NE(winner, kNoComponent) << "seed " << seed;
      EXPECT_EQ(exists, 7);
      ASSERT_TRUE(sim.replicas_identical()) << "seed " << seed;
      for (MemberId id : sim.live()) {
        const Entry* entry = sim.server(id).table().find("/svc/db");
        ASSERT_NE(entry, nullptr);
        EXPECT_EQ(entry->owner, winner);
        EXPECT_EQ(entry->version, 1u);
      }
      // The winner leaves, so the next round contends again.
      const std::uint64_t leave = sim.submit(1, unreg("/svc/db", winner));
      sim.run_until_idle(1'000'000);
      ASSERT_EQ(status_of(sim, leave), NameErrc::ok);
    }
  }
}

TEST(ArbitratedCommit, TenThousandContendedAttemptsAllTerminate) {
  FleetSim sim(sim_options(4, 7, 3));
  std::mt19937 random(7);
  const std::vector<std::string> names = {"/a/0", "/a/1", "/a/2", "/a", "/b/0", "/b/1"};
  std::map<std::uint64_t, Change> sent;
  std::uint64_t steps = 0;
  constexpr int kAttempts = 10'000;
  constexpr int kBatch = 40;
  for (int done = 0; done < kAttempts; done += kBatch) {
    std::vector<std::uint64_t> batch;
    for (int i = 0; i < kBatch; ++i) {
      const std::string& name = names[random() % names.size()];
      const ComponentId owner = 20 + random() % 3;
      Change change = random() % 3 == 0 ? unreg(name, owner) : reg(name, owner, random() % 4);
      if (random() % 8 == 0) change.op = ChangeOp::reserve;
      const std::uint64_t cookie = sim.submit(static_cast<MemberId>(1 + random() % 4), change);
      sent.emplace(cookie, change);
      batch.push_back(cookie);
    }
    steps += sim.run_until_idle(2'000'000);
    for (std::uint64_t cookie : batch) {
      const NameMessage* answer = sim.reply(cookie);
      ASSERT_NE(answer, nullptr) << "attempt " << cookie << " never terminated";
      EXPECT_NE(answer->status, NameErrc::unavailable);
      EXPECT_NE(answer->status, NameErrc::conflict);  // conflicts are retried, never returned
    }
  }
  EXPECT_EQ(sent.size(), static_cast<std::size_t>(kAttempts));
  // Bounded: about 17 steps per attempt measured (seed 7); three times that is the ceiling.
  EXPECT_LT(steps, static_cast<std::uint64_t>(kAttempts) * 50);
  EXPECT_TRUE(sim.replicas_identical());
  std::uint64_t retries_and_waits = 0;
  for (MemberId id : sim.live()) {
    retries_and_waits += sim.server(id).counters().retries + sim.server(id).counters().waits;
  }
  EXPECT_GT(retries_and_waits, 0u) << "the load did not contend";
}

// Finds the reply status after the fleet settles; asserts the fleet settles at all.
NameErrc settle(FleetSim& sim, std::uint64_t cookie) {
  EXPECT_LT(sim.run_until_idle(1'000'000), 1'000'000u);
  return status_of(sim, cookie);
}

int replicas_holding(FleetSim& sim, std::string_view name) {
  int holding = 0;
  for (MemberId id : sim.live()) holding += sim.server(id).table().find(name) != nullptr;
  return holding;
}

TEST(ArbitratedCommit, InitiatorKilledAfterPartialCommitIsCommittedBySurvivors) {
  FleetSim sim(sim_options(4, 3));
  sim.submit(2, reg("/svc/half", 5));
  // Step until some replica other than the initiator applied the commit, but not all did.
  int guard = 0;
  while (guard++ < 10'000) {
    ASSERT_TRUE(sim.step());
    int others = 0;
    for (MemberId id : {1, 3, 4}) others += sim.server(id).table().find("/svc/half") != nullptr;
    if (others >= 1 && others < 3) break;
  }
  sim.kill(2);
  sim.force_out_everywhere(2);
  EXPECT_LT(sim.run_until_idle(100'000), 100'000u);
  EXPECT_EQ(replicas_holding(sim, "/svc/half"), 3);
  EXPECT_TRUE(sim.replicas_identical());
  for (MemberId id : sim.live()) EXPECT_EQ(sim.server(id).members().size(), 3u);

  // Modifications go on without the dead member, and a new member catches up.
  EXPECT_EQ(settle(sim, sim.submit(3, reg("/svc/after", 6))), NameErrc::ok);
  const MemberId joiner = sim.join(1);
  EXPECT_EQ(settle(sim, sim.submit(joiner, reg("/svc/joined", 7))), NameErrc::ok);
  EXPECT_EQ(settle(sim, sim.submit(4, unreg("/svc/half", 5))), NameErrc::ok);
  EXPECT_TRUE(sim.replicas_identical());
  EXPECT_NE(sim.server(joiner).table().find("/svc/after"), nullptr);
  EXPECT_NE(sim.server(joiner).table().find("/svc/joined"), nullptr);
  EXPECT_EQ(sim.server(joiner).table().find("/svc/half"), nullptr);
}

TEST(ArbitratedCommit, InitiatorKilledBeforeCommitIsRolledBack) {
  FleetSim sim(sim_options(4, 4));
  sim.submit(2, reg("/svc/never", 5));
  int guard = 0;
  while (guard++ < 10'000) {  // until a survivor holds it prepared
    ASSERT_TRUE(sim.step());
    if (sim.server(3).prepared_count() > 0) break;
  }
  ASSERT_EQ(replicas_holding(sim, "/svc/never"), 0);
  sim.kill(2);
  sim.force_out_everywhere(2);
  EXPECT_LT(sim.run_until_idle(100'000), 100'000u);
  EXPECT_EQ(replicas_holding(sim, "/svc/never"), 0);
  for (MemberId id : sim.live()) EXPECT_EQ(sim.server(id).prepared_count(), 0u);
  EXPECT_EQ(settle(sim, sim.submit(1, reg("/svc/never", 6))), NameErrc::ok);
  EXPECT_TRUE(sim.replicas_identical());
}

TEST(ArbitratedCommit, RandomKillsMidTrafficLeaveSurvivorsConsistent) {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    FleetSim sim(sim_options(4, seed, 2));
    std::mt19937 random(static_cast<unsigned>(seed));
    for (int i = 0; i < 12; ++i) {
      sim.submit(static_cast<MemberId>(1 + random() % 4),
                 reg("/k/" + std::to_string(random() % 4), 30 + random() % 2));
    }
    for (std::uint64_t i = random() % 150; i > 0; --i) sim.step();
    const MemberId victim = static_cast<MemberId>(1 + random() % 4);
    sim.kill(victim);
    sim.force_out_everywhere(victim);
    ASSERT_LT(sim.run_until_idle(1'000'000), 1'000'000u) << "seed " << seed;
    ASSERT_TRUE(sim.replicas_identical()) << "seed " << seed;
    const MemberId survivor = sim.live().front();
    EXPECT_EQ(settle(sim, sim.submit(survivor, reg("/k/new", 40))), NameErrc::ok) << seed;
    const MemberId joiner = sim.join(survivor);
    EXPECT_EQ(settle(sim, sim.submit(joiner, unreg("/k/new", 40))), NameErrc::ok) << seed;
    EXPECT_TRUE(sim.replicas_identical()) << "seed " << seed;
  }
}

TEST(ArbitratedCommit, JoinWhileChangesAreInFlightConverges) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    FleetSim sim(sim_options(3, seed, 2));
    std::vector<std::uint64_t> cookies;
    for (int i = 0; i < 10; ++i) {
      cookies.push_back(sim.submit(static_cast<MemberId>(1 + i % 3),
                                   reg("/j/" + std::to_string(i), 50)));
    }
    for (int i = 0; i < 40; ++i) sim.step();
    const MemberId joiner = sim.join(static_cast<MemberId>(1 + seed % 3));
    ASSERT_LT(sim.run_until_idle(1'000'000), 1'000'000u);
    for (std::uint64_t cookie : cookies) EXPECT_EQ(status_of(sim, cookie), NameErrc::ok);
    ASSERT_TRUE(sim.replicas_identical()) << "seed " << seed;
    EXPECT_EQ(sim.server(joiner).table().size(), 10u);
  }
}

TEST(ArbitratedCommit, ArbiterKilledMidChangeDoesNotBlock) {
  FleetSim sim(sim_options(4, 5));
  const MemberId arbiter = sim.server(1).arbiter_for("/arb/x");
  const MemberId initiator = arbiter == 1 ? 2 : 1;
  const std::uint64_t cookie = sim.submit(initiator, reg("/arb/x", 5));
  int guard = 0;
  while (guard++ < 10'000 && sim.server(arbiter).locks_held() == 0) ASSERT_TRUE(sim.step());
  sim.kill(arbiter);
  sim.force_out_everywhere(arbiter);
  EXPECT_EQ(settle(sim, cookie), NameErrc::ok);
  EXPECT_EQ(settle(sim, sim.submit(initiator, unreg("/arb/x", 5))), NameErrc::ok);
  EXPECT_TRUE(sim.replicas_identical());
}

TEST(ArbitratedCommit, DeadMemberNotForcedOutFailsChangesDefinitively) {
  SimOptions options;
  options.servers = 3;
  options.base.request_deadline_ms = 2'000;
  FleetSim sim(options);
  sim.kill(3);
  const std::uint64_t cookie = sim.submit(1, reg("/stuck", 5));
  EXPECT_EQ(settle(sim, cookie), NameErrc::unavailable);
  EXPECT_GE(sim.now(), 2'000u);
  EXPECT_EQ(sim.server(1).table().find("/stuck"), nullptr);
}

TEST(ArbitratedCommit, LookupThroughAServer) {
  SimOptions options;
  options.base.table.ttl_ms = 300;
  FleetSim sim(options);
  ASSERT_EQ(settle(sim, sim.submit(1, reg("/net/tcp/0", 9, 4))), NameErrc::ok);
  const std::uint64_t cookie = sim.lookup(3, "/net/tcp/0");
  ASSERT_EQ(settle(sim, cookie), NameErrc::ok);
  const NameMessage* answer = sim.reply(cookie);
  EXPECT_EQ(answer->endpoint, (Endpoint{9, 1, 4}));
  EXPECT_EQ(answer->expires_ms, sim.now() + 300);
  EXPECT_EQ(settle(sim, sim.lookup(2, "/net/tcp/1")), NameErrc::not_found);
}

TEST(ArbitratedCommit, MalformedMessagesAreCountedAndDropped) {
  SimOptions options;
  FleetSim sim(options);
  NameMessage prepare;
  prepare.kind = NameMsgKind::prepare;
  prepare.from = 2;
  prepare.txn = TxnId{0, 1, 2, 0};
  put_change(prepare, reg("/evil", 66));

  NameMessage bad_kind = prepare;
  bad_kind.kind = static_cast<NameMsgKind>(200);
  NameMessage bad_name = prepare;
  bad_name.name[2] = '\n';
  NameMessage stranger = prepare;
  stranger.from = 99;
  stranger.txn.initiator = 99;
  NameMessage reply_to_server = prepare;
  reply_to_server.kind = NameMsgKind::reply;
  for (const NameMessage& message : {bad_kind, bad_name, stranger, reply_to_server}) {
    sim.inject(1, message);
  }
  sim.run_until_idle(1000);
  EXPECT_EQ(sim.server(1).counters().malformed, 3u);
  EXPECT_EQ(sim.server(1).counters().not_member, 1u);
  EXPECT_EQ(sim.server(1).prepared_count(), 0u);
  EXPECT_EQ(sim.server(1).table().size(), 0u);
  EXPECT_EQ(settle(sim, sim.submit(1, reg("/fine", 5))), NameErrc::ok);  // still serving
}

}  // namespace
}  // namespace flotilla::name
