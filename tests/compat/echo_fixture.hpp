// What the compat suite's echo servers share (compat-servers, compat-handoff): rounds of kernel
// clients echoing 64 KiB each through the server under test, and the TCP replicas' counts of
// connections and listeners taken over by other processes.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/apps/apps_fixture.hpp"
#include "tests/support/kernel_tcp.hpp"

namespace flotilla::testing {

class EchoServersTest : public AppsTest {
 protected:
  // `rounds` of 10 kernel clients at once on the server's `port`, each sending 64 KiB and
  // half-closing: each must get its bytes back, SHA-256 checked.
  void echo_rounds(std::uint16_t port, int rounds) {
    constexpr std::uint64_t kBytes = 64 * 1024;
    const std::string address = app_address();
    for (int round = 0; round < rounds; ++round) {
      std::vector<SourceResult> results(10);
      std::vector<std::thread> clients;
      for (auto& result : results) {
        clients.emplace_back([&] {
          result = in_namespace(names_.peer_namespace, [&] {
            return kernel_source({.address = address, .port = port, .bytes = kBytes, .deadline = 30s, .half_close = true});
          });
        });
      }
      for (auto& client : clients) client.join();
      for (std::size_t c = 0; c < results.size(); ++c) {
        EXPECT_TRUE(results[c].connected) << "round " << round << " connection " << c;
        EXPECT_EQ(results[c].echo.bytes, kBytes) << "round " << round << " connection " << c;
        EXPECT_EQ(results[c].echo.sha256, pattern_sha256(kBytes)) << "round " << round << " connection " << c;
      }
      if (HasFailure()) return;
    }
  }

  // On Flotilla: the TCP replicas moved at least `claims` connections into the seats of processes
  // that inherited them (none refused), and added at least `joins` listener group members.
  void expect_replica_counts(std::uint64_t claims, std::uint64_t joins) const {
    if (side_ != Side::flotilla) return;
    std::map<std::string, std::uint64_t> sums;
    for (const auto& [component, counters] : stack_.all_counters()) {
      if (component.rfind("tcp", 0) != 0) continue;
      for (const char* name : {"claims", "claims_refused", "group_joins"}) {
        sums[name] += counters.contains(name) ? counters.at(name) : 0;
      }
    }
    EXPECT_GE(sums["claims"], claims);
    EXPECT_EQ(sums["claims_refused"], 0u);
    EXPECT_GE(sums["group_joins"], joins);
  }
};

}  // namespace flotilla::testing
