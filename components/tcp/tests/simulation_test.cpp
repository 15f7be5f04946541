// Deterministic simulation: two TCP engines over a seeded, impaired link (see sim.hpp). Every
// seed draws its own link, settings and transfer sizes; a failure names the seed and how to
// replay it alone (FLOTILLA_TCP_SEED=N).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "components/tcp/tests/sim.hpp"

namespace flotilla::tcp::sim {
namespace {

constexpr std::uint32_t kClient = 0x0a000001;
constexpr std::uint32_t kServer = 0x0a000002;
constexpr std::uint64_t kSeeds = 200;
constexpr std::uint64_t kMiB = 1024 * 1024;

struct Scenario {
  LinkConfig link;
  EngineSettings settings;
  ConnectionOptions client_options;
  ConnectionOptions server_options;
  std::size_t ring_bytes = 256 * 1024;
  std::uint64_t upload = 0;    // client to server
  std::uint64_t download = 0;  // server to client
  std::uint64_t read_rate = 0;    // bytes/s the applications read at most (a slow reader)
  std::uint64_t pause_every = 0;  // the applications stop reading now and then (zero windows)
  std::uint64_t pause_ns = 0;
  bool server_waits_for_fin = false;  // the server shuts only after the client's FIN
};

std::string describe(const Scenario& s) {
  char text[512];
  std::snprintf(text, sizeof text,
                "loss %.4f dup %.4f reorder %.4f corrupt %.4f latency %llu us bw %llu bps queue %zu; "
                "read rate %llu B/s, pause %llu B / %llu ms, server waits for FIN %d, keepalive %d; mss %u ts %d sack %d ws %d ring %zu; %s/%s nodelay %d/%d; up %llu down %llu",
                s.link.loss, s.link.duplicate, s.link.reorder, s.link.corrupt,
                static_cast<unsigned long long>(s.link.latency_ns / 1000),
                static_cast<unsigned long long>(s.link.bandwidth_bps), s.link.queue_bytes,
                static_cast<unsigned long long>(s.read_rate), static_cast<unsigned long long>(s.pause_every),
                static_cast<unsigned long long>(s.pause_ns / 1'000'000),
                s.server_waits_for_fin, s.client_options.keepalive, s.settings.mss,
                s.settings.timestamps, s.settings.sack, s.settings.window_scaling, s.ring_bytes,
                s.client_options.congestion == CongestionAlgorithm::cubic ? "cubic" : "newreno",
                s.server_options.congestion == CongestionAlgorithm::cubic ? "cubic" : "newreno",
                s.client_options.nodelay, s.server_options.nodelay,
                static_cast<unsigned long long>(s.upload), static_cast<unsigned long long>(s.download));
  return text;
}

// What seed N runs: drawn from its own RNG so seeds are independent of each other.
Scenario scenario_for(std::uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + 1);
  const auto uniform = [&](double low, double high) { return std::uniform_real_distribution<double>(low, high)(rng); };
  const auto pick = [&](std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng); };
  Scenario s;
  const bool big = seed % 50 == 7;  // 4 seeds of 64 MiB each way
  s.link.loss = big ? 0.001 : (pick(4) == 0 ? 0 : uniform(0, 0.05));
  s.link.duplicate = big ? 0.001 : uniform(0, 0.02);
  s.link.reorder = big ? 0.002 : (pick(2) == 0 ? 0 : uniform(0, 0.1));
  s.link.corrupt = big ? 0.001 : uniform(0, 0.02);
  s.link.latency_ns = big ? 500'000 : 50'000 + pick(20'000'000);
  s.link.reorder_delay_ns = 100'000 + pick(5'000'000);
  static constexpr std::uint64_t kBandwidths[] = {10'000'000, 100'000'000, 1'000'000'000, 10'000'000'000};
  s.link.bandwidth_bps = big ? 10'000'000'000 : kBandwidths[pick(4)];
  s.link.queue_bytes = 64 * 1024 + pick(1024 * 1024);
  static constexpr std::uint16_t kMss[] = {536, 1460, 1460, 8960};
  s.settings.mss = big ? 8960 : kMss[pick(4)];
  s.settings.timestamps = pick(4) != 0;
  s.settings.sack = pick(4) != 0;
  s.settings.window_scaling = pick(5) != 0;
  s.settings.max_connections = 8;
  s.settings.secret[0] = seed;
  s.settings.secret[1] = ~seed;
  static constexpr std::size_t kRings[] = {16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024};
  s.ring_bytes = big ? 4 * kMiB : kRings[pick(4)];
  s.client_options.congestion = pick(2) == 0 ? CongestionAlgorithm::cubic : CongestionAlgorithm::newreno;
  s.server_options.congestion = pick(2) == 0 ? CongestionAlgorithm::cubic : CongestionAlgorithm::newreno;
  s.client_options.nodelay = pick(2) == 0;
  s.server_options.nodelay = pick(2) == 0;
  // Sizes log-uniform from 0 to 2 MiB, with an occasional empty direction.
  const auto size = [&] {
    if (pick(10) == 0) return std::uint64_t{0};
    return static_cast<std::uint64_t>(std::exp(uniform(0, std::log(2.0 * kMiB))));
  };
  s.upload = big ? 64 * kMiB : size();
  s.download = big ? 64 * kMiB : size();
  if (!big && pick(4) == 0) {
    s.pause_every = 1 + pick(512 * 1024);
    s.pause_ns = pick(3'000'000'000);
  } else if (pick(3) == 0) {
    // A batching reader: whatever is there, every so often (ACKs go out between its reads).
    s.pause_every = 1;
    s.pause_ns = 100'000 + pick(5'000'000);
  }
  if (!big && pick(4) == 0) s.read_rate = 100'000 + pick(20'000'000);
  s.server_waits_for_fin = pick(2) == 0;
  if (pick(3) == 0) {
    s.client_options.keepalive = s.server_options.keepalive = true;
    s.client_options.keepalive_idle_s = s.server_options.keepalive_idle_s = 1;
    s.client_options.keepalive_interval_s = s.server_options.keepalive_interval_s = 1;
  }
  return s;
}

// Totals over every seed of engine counters, to show (and assert) which paths the seeds reached.
struct Totals {
  std::map<std::string, std::uint64_t> counters;
  void add(Host& host) {
    NamedCounterTable& table = host.counters();
    for (std::size_t i = 0; i < table.published(); ++i) {
      counters[table.entries[i].name] += table.entries[i].read();
    }
  }
};

Totals& totals() {
  static Totals instance;
  return instance;
}

TransitionRecorder& all_seeds_transitions() {
  static TransitionRecorder recorder;
  return recorder;
}

void run_seed(std::uint64_t seed) {
  const Scenario s = scenario_for(seed);
  SCOPED_TRACE("seed " + std::to_string(seed) + " (replay alone: FLOTILLA_TCP_SEED=" + std::to_string(seed) +
               " tcp-simulation-test --gtest_filter='Simulation.Seeds'): " + describe(s));
  Network network(seed, s.link);
  Host client(network, kClient, s.settings, 0, s.ring_bytes);
  Host server(network, kServer, s.settings, 0, s.ring_bytes);
  set_transition_observer(client.engine(), &all_seeds_transitions());
  set_transition_observer(server.engine(), &all_seeds_transitions());
  ASSERT_TRUE(server.engine().listen(0, 80, 8, s.server_options).ok());
  server.accept_send_total = s.download;
  server.accept_pattern_base = seed * 2;
  server.accept_read_rate = s.read_rate;
  server.accept_pause_every = s.pause_every;
  server.accept_pause_ns = s.pause_ns;
  server.accept_shutdown_after_peer_fin = s.server_waits_for_fin;
  Endpoint* c = client.connect(kServer, static_cast<std::uint16_t>(1024 + seed), 80, s.client_options);
  ASSERT_NE(c, nullptr);
  c->send_total = s.upload;
  c->send_pattern = seed * 2;
  c->receive_pattern = seed * 2 + 1;
  c->read_rate = s.read_rate;
  c->pause_every = c->next_pause = s.pause_every;
  c->pause_ns = s.pause_ns;
  const auto finished = [&] {
    return c->released && server.endpoints().size() == 1 && server.endpoints()[0]->released &&
           c->app_receive.readable() == 0 && server.endpoints()[0]->app_receive.readable() == 0;
  };
  const bool done = network.run(finished, 3600'000'000'000ull);
  ASSERT_TRUE(done) << "not finished by virtual " << network.now() / 1e9 << " s; client sent " << c->sent
                    << " received " << c->received << " failed " << c->failed << " error " << c->error;
  ASSERT_EQ(server.endpoints().size(), 1u);
  const Endpoint& v = *server.endpoints()[0];
  EXPECT_FALSE(c->failed) << "client error " << c->error;
  EXPECT_FALSE(v.failed) << "server error " << v.error;
  EXPECT_EQ(client.oversize_segments + server.oversize_segments, 0u) << "segments larger than the MTU";
  // Publish before send: the table covered every segment when it left.
  EXPECT_EQ(client.uncovered_segments, 0u) << client.first_uncovered;
  EXPECT_EQ(server.uncovered_segments, 0u) << server.first_uncovered;
  // A sender that keeps to the windows it was given never finds the receiver's ring full.
  EXPECT_EQ(client.counter("receive_overflow") + server.counter("receive_overflow"), 0u);
  EXPECT_EQ(c->received, s.download);
  EXPECT_EQ(v.received, s.upload);
  EXPECT_EQ(c->mismatches, 0u) << "first at " << c->first_mismatch;
  EXPECT_EQ(v.mismatches, 0u) << "first at " << v.first_mismatch;
  EXPECT_EQ(c->received_hash, pattern_hash(c->receive_pattern, s.download));
  EXPECT_EQ(v.received_hash, pattern_hash(v.receive_pattern, s.upload));
  if (std::getenv("FLOTILLA_TCP_SEED") != nullptr) {
    std::printf("%s\n", describe(s).c_str());
    std::printf("seed %llu: virtual %.3f s, %llu segments delivered, %llu dropped; retransmits %llu/%llu, "
                "fast %llu/%llu, RTOs %llu/%llu, out of order %llu/%llu (dropped %llu/%llu)\n",
                static_cast<unsigned long long>(seed), network.now() / 1e9,
                static_cast<unsigned long long>(network.delivered()),
                static_cast<unsigned long long>(network.dropped()),
                static_cast<unsigned long long>(client.counter("retransmits")),
                static_cast<unsigned long long>(server.counter("retransmits")),
                static_cast<unsigned long long>(client.counter("fast_retransmits")),
                static_cast<unsigned long long>(server.counter("fast_retransmits")),
                static_cast<unsigned long long>(client.counter("retransmission_timeouts")),
                static_cast<unsigned long long>(server.counter("retransmission_timeouts")),
                static_cast<unsigned long long>(client.counter("out_of_order_segments")),
                static_cast<unsigned long long>(server.counter("out_of_order_segments")),
                static_cast<unsigned long long>(client.counter("out_of_order_dropped")),
                static_cast<unsigned long long>(server.counter("out_of_order_dropped")));
  }
  totals().add(client);
  totals().add(server);
  // TIME-WAIT ends, then nothing is left: no connection, no claimed flow, no timer.
  network.run([] { return false; }, network.now() + 2 * s.settings.time_wait_ns);
  EXPECT_EQ(client.engine().connection_count(), 0u);
  EXPECT_EQ(server.engine().connection_count(), 0u);
  EXPECT_TRUE(client.claimed().empty());
  EXPECT_TRUE(server.claimed().empty());
  EXPECT_EQ(client.engine().next_deadline_ns(), UINT64_MAX);
  EXPECT_EQ(server.engine().next_deadline_ns(), UINT64_MAX);
  // A flipped byte always breaks the checksum (or, in the data offset, the header length), and
  // nothing else does.
  EXPECT_EQ(client.counter("bad_checksum") + server.counter("bad_checksum") + client.counter("bad_header") +
                server.counter("bad_header"),
            network.corrupted_delivered());
}

TEST(Simulation, Seeds) {
  if (const char* only = std::getenv("FLOTILLA_TCP_SEED")) {
    run_seed(std::strtoull(only, nullptr, 10));
    return;
  }
  // FLOTILLA_TCP_SEED_COUNT=N runs seeds 0..N-1 instead (a longer soak).
  const char* count_text = std::getenv("FLOTILLA_TCP_SEED_COUNT");
  const std::uint64_t count = count_text != nullptr ? std::strtoull(count_text, nullptr, 10) : kSeeds;
  for (std::uint64_t seed = 0; seed < count; ++seed) {
    run_seed(seed);
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::string summary;
  for (const auto& [name, value] : totals().counters) summary += " " + name + "=" + std::to_string(value);
  std::printf("totals over %llu seeds:%s\n", static_cast<unsigned long long>(count), summary.c_str());
  // The impairments reached the paths they are there for.
  for (const char* name : {"bad_checksum", "retransmits", "fast_retransmits", "retransmission_timeouts",
                           "out_of_order_segments", "persist_probes", "out_of_window"}) {
    EXPECT_GT(totals().counters[name], 0u) << name;
  }
}

// Many connections at once over one lossy link: the flow index, the timer heap and the table with
// dozens of live entries, each connection's data still intact. (This found two ends that had both
// timed out ignoring each other's ACKs.)
void run_many(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  LinkConfig link;
  link.loss = std::uniform_real_distribution<double>(0, 0.03)(rng);
  link.reorder = std::uniform_real_distribution<double>(0, 0.05)(rng);
  link.duplicate = 0.005;
  link.corrupt = 0.005;
  link.bandwidth_bps = 1'000'000'000;
  link.queue_bytes = 128 * 1024;
  EngineSettings settings;
  settings.max_connections = 128;
  settings.secret[0] = seed;
  SCOPED_TRACE("many connections, seed " + std::to_string(seed) + " (replay alone: FLOTILLA_TCP_SEED=" +
               std::to_string(seed) + " --gtest_filter='Simulation.ManyConcurrentConnections')");
  Network network(seed, link);
  Host client(network, kClient, settings, 0, 64 * 1024);
  Host server(network, kServer, settings, 0, 64 * 1024);
  ASSERT_TRUE(server.engine().listen(0, 80, 128, {}).ok());
  server.accept_send_total = 100'000;
  server.accept_pattern_base = 10;
  std::vector<Endpoint*> clients;
  for (std::uint16_t i = 0; i < 100; ++i) {
    Endpoint* e = client.connect(kServer, static_cast<std::uint16_t>(20000 + i), 80);
    ASSERT_NE(e, nullptr);
    e->send_total = 1000 * (i + 1);
    e->send_pattern = 10;
    e->receive_pattern = 11;
    clients.push_back(e);
  }
  const auto all_released = [&] {
    if (server.endpoints().size() != clients.size()) return false;
    for (Endpoint* e : clients) {
      if (!e->released) return false;
    }
    for (const auto& e : server.endpoints()) {
      if (!e->released) return false;
    }
    return true;
  };
  const bool finished = network.run(all_released, 600'000'000'000ull);
  ASSERT_TRUE(finished) << "virtual " << network.now() / 1e9 << " s, " << server.endpoints().size()
                        << " server endpoints";
  std::uint64_t uploaded = 0;
  for (Endpoint* e : clients) {
    EXPECT_FALSE(e->failed);
    EXPECT_EQ(e->received, 100'000u);
    EXPECT_EQ(e->mismatches, 0u);
    uploaded += e->send_total;
  }
  std::uint64_t received = 0;
  for (const auto& e : server.endpoints()) {
    EXPECT_FALSE(e->failed);
    EXPECT_EQ(e->mismatches, 0u);
    received += e->received;
  }
  EXPECT_EQ(received, uploaded);
  EXPECT_EQ(client.oversize_segments + server.oversize_segments, 0u);
  EXPECT_EQ(client.uncovered_segments, 0u) << client.first_uncovered;
  EXPECT_EQ(server.uncovered_segments, 0u) << server.first_uncovered;
  network.run([] { return false; }, network.now() + 2 * settings.time_wait_ns);
  EXPECT_EQ(client.engine().connection_count(), 0u);
  EXPECT_EQ(server.engine().connection_count(), 0u);
}

TEST(Simulation, ManyConcurrentConnections) {
  if (const char* only = std::getenv("FLOTILLA_TCP_SEED")) {
    run_many(std::strtoull(only, nullptr, 10));
    return;
  }
  const char* count_text = std::getenv("FLOTILLA_TCP_SEED_COUNT");
  const std::uint64_t count = count_text != nullptr ? std::strtoull(count_text, nullptr, 10) / 20 : 10;
  for (std::uint64_t seed = 1; seed <= count; ++seed) {
    run_many(seed);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace flotilla::tcp::sim
