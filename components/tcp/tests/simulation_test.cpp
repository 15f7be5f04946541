// Deterministic simulation: two TCP engines over a seeded lossy link (see sim.hpp).
#include <gtest/gtest.h>

#include <cstdlib>

#include "components/tcp/tests/sim.hpp"

namespace flotilla::tcp::sim {
namespace {

constexpr std::uint32_t kClient = 0x0a000001;
constexpr std::uint32_t kServer = 0x0a000002;

TEST(Simulation, CleanTransferBothWays) {
  Network network(1, LinkConfig{});
  EngineSettings settings;
  settings.max_connections = 16;
  Host client(network, kClient, settings, 0);
  Host server(network, kServer, settings, 0);
  ASSERT_TRUE(server.engine().listen(0, 80, 16, {}).ok());
  server.accept_send_total = 3'000'000;
  server.accept_pattern_base = 100;
  Endpoint* e = client.connect(kServer, 40000, 80);
  ASSERT_NE(e, nullptr);
  e->send_total = 2'000'000;
  e->send_pattern = 100;
  e->receive_pattern = 101;
  const bool done = network.run([&] { return e->released && server.endpoints().size() == 1 && server.endpoints()[0]->released; },
                                600'000'000'000ull);
  ASSERT_TRUE(done);
  Endpoint& s = *server.endpoints()[0];
  EXPECT_EQ(e->received, 3'000'000u);
  EXPECT_EQ(s.received, 2'000'000u);
  EXPECT_EQ(e->mismatches, 0u);
  EXPECT_EQ(s.mismatches, 0u);
  EXPECT_FALSE(e->failed);
  EXPECT_FALSE(s.failed);
  std::printf("virtual %.3f s, delivered %llu\n", network.now() / 1e9, (unsigned long long)network.delivered());
}

}  // namespace
}  // namespace flotilla::tcp::sim
