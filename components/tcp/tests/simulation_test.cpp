// Deterministic simulation: two TCP engines over a seeded, impaired link (see sim.hpp). Every
// seed draws its own link, settings and transfer sizes; a failure names the seed and how to
// replay it alone (FLOTILLA_TCP_SEED=N).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "components/tcp/algorithms/seq.hpp"
#include "components/tcp/connection_table.hpp"
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

// --- a replica crash loses no connection (RestorePolicy::resume) ---------------------------------

// Host A carries three connections with host B over a clean link: B's bulk upload and download to
// A's listener, A's own connection to B's listener (both ways), and a short one to A's listener
// whose SYN is in A's SYN queue early on. Each end sends, shuts down (a FIN each way) and closes.
// `crash_at` (0: none): A's engine dies at the end of its crash_at-th call (or, with
// `before_send`, after publishing and before the call's segments left) and a new one resumes over
// the same table and rings.
struct CrashWorld {
  CrashWorld(std::uint64_t seed, std::uint64_t crash_at, bool before_send);
  bool run();
  void expect_everything_arrived(const std::string& what);
  // expected[i]'s client end got every byte, intact, without an error.
  void expect_stream_arrived(std::size_t i);

  static LinkConfig link_for(std::uint64_t seed);
  static EngineSettings settings_for(std::uint64_t seed);

  std::uint64_t seed;
  Network network;
  Host a;
  Host b;
  std::vector<std::pair<Endpoint*, std::uint64_t>> expected;  // the client ends and what they receive
  std::uint64_t crashes = 0;
  // Per connection (A's port, B's port): the highest acknowledgment B sent. A segment of A's that
  // ends more than a ring (the most B can announce) past it uses sequence numbers B never allowed.
  std::map<std::pair<std::uint16_t, std::uint16_t>, std::uint32_t> acked_by_b;
  std::uint64_t past_window = 0;
  std::string first_past_window;
};

LinkConfig CrashWorld::link_for(std::uint64_t seed) {
  LinkConfig link;  // nothing lost, so the peer has no reason to see a strange segment
  link.latency_ns = 100'000 + (seed * 7919) % 2'000'000;
  link.bandwidth_bps = seed % 2 == 0 ? 100'000'000 : 1'000'000'000;
  link.queue_bytes = 64 * 1024 * 1024;
  return link;
}

EngineSettings CrashWorld::settings_for(std::uint64_t seed) {
  EngineSettings settings;
  settings.max_connections = 8;
  settings.mss = seed % 3 == 0 ? 536 : 1460;
  settings.sack = seed % 4 != 1;
  settings.timestamps = seed % 5 != 2;
  settings.segment_batch = 4 + seed % 8;  // small: batches fill in the middle of calls too
  settings.secret[0] = settings.secret[1] = 0;  // drawn once, then kept in the table
  return settings;
}

CrashWorld::CrashWorld(std::uint64_t seed_in, std::uint64_t crash_at, bool before_send)
    : seed(seed_in),
      network(seed_in, link_for(seed_in)),
      a(network, kServer, settings_for(seed_in), 0, 64 * 1024),
      b(network, kClient, settings_for(seed_in), 0, 64 * 1024) {
  const std::uint64_t upload = 40'000 + seed * 3001 % 60'000;
  const std::uint64_t download = 30'000 + seed * 7001 % 60'000;
  EXPECT_TRUE(a.engine().listen(0, 80, 4, {}).ok());
  EXPECT_TRUE(b.engine().listen(0, 81, 4, {}).ok());
  a.accept_send_total = download;
  a.accept_pattern_base = 100;
  b.accept_send_total = upload / 2;
  b.accept_pattern_base = 200;
  const auto client = [&](Host& host, std::uint32_t remote, std::uint16_t local_port, std::uint16_t remote_port,
                          std::uint64_t base, std::uint64_t send, std::uint64_t receive) {
    Endpoint* e = host.connect(remote, local_port, remote_port);
    EXPECT_NE(e, nullptr);
    if (e == nullptr) return;
    e->send_total = send;
    e->send_pattern = base;
    e->receive_pattern = base + 1;
    expected.push_back({e, receive});
  };
  client(b, kServer, 1024, 80, 100, upload, download);
  client(a, kClient, 1025, 81, 200, upload / 3, upload / 2);
  client(b, kServer, 1026, 80, 100, 1000, download);
  network.tap = [this](std::uint32_t source, std::uint32_t, std::vector<std::byte>& bytes) {
    auto copy = bytes;
    const auto segment = wire::TcpSegment::unchecked(copy);
    if (!segment.has_flags(wire::kTcpAck)) return true;
    if (source == kClient) {
      auto [at, fresh] = acked_by_b.try_emplace({segment.destination_port(), segment.source_port()},
                                                segment.acknowledgment());
      if (!fresh && seq_gt(segment.acknowledgment(), at->second)) at->second = segment.acknowledgment();
      return true;
    }
    const auto known = acked_by_b.find({segment.source_port(), segment.destination_port()});
    const std::uint32_t end = segment.sequence() + static_cast<std::uint32_t>(segment.sequence_length());
    if (known != acked_by_b.end() && seq_gt(end, known->second + 64 * 1024)) {
      if (past_window++ == 0) {
        first_past_window = "port " + std::to_string(segment.source_port()) + " sends up to " + std::to_string(end) +
                            ", B acknowledged " + std::to_string(known->second);
      }
    }
    return true;
  };
  a.flush_calls = 0;
  a.crash_at_flush = crash_at;
  a.crash_before_send = before_send;
}

bool CrashWorld::run() {
  const auto finished = [&] {
    for (Host* host : {&a, &b}) {
      if (host->endpoints().size() != expected.size()) return false;  // each client end has its accepted end
      for (const auto& e : host->endpoints()) {
        if (!e->released || e->app_receive.readable() != 0) return false;
      }
    }
    return true;
  };
  for (;;) {
    try {
      return network.run(finished, 600'000'000'000ull);
    } catch (const SimulatedCrash&) {
      if (++crashes > 10) return false;  // a crash loop: the poison rule did not hold
      a.crash_at_flush = 0;
      a.restart(network.now(), RestorePolicy::resume);
    }
  }
}

void CrashWorld::expect_stream_arrived(std::size_t i) {
  const auto& [e, receive] = expected.at(i);
  EXPECT_FALSE(e->failed) << "stream " << i << " error " << e->error;
  EXPECT_EQ(e->received, receive) << "stream " << i;
  EXPECT_EQ(e->mismatches, 0u) << "stream " << i;
  EXPECT_EQ(e->received_hash, pattern_hash(e->receive_pattern, receive)) << "stream " << i;
}

void CrashWorld::expect_everything_arrived(const std::string& what) {
  SCOPED_TRACE(what);
  for (std::size_t i = 0; i < expected.size(); ++i) expect_stream_arrived(i);
  for (Host* host : {&a, &b}) {
    for (const auto& e : host->endpoints()) {
      EXPECT_FALSE(e->failed) << "error " << e->error;
      EXPECT_EQ(e->mismatches, 0u);
      EXPECT_TRUE(e->peer_closed);
    }
  }
  // The peer never saw a segment it had to refuse or answer with RST. Segments the crash lost are
  // resent, as after any loss: a retransmission of what B already holds counts as out of window at
  // B, and a SYN-ACK resent by both ends' timers draws a challenge ACK; so those two counters are
  // not asserted, and the tap checks that nothing A sent lies past what B ever let it send.
  for (const char* name : {"resets_received", "paws_rejected", "bad_ack", "no_connection", "bad_flags"}) {
    EXPECT_EQ(b.counter(name), 0u) << "peer counter " << name;
  }
  EXPECT_EQ(a.counter("restore_failed"), 0u);
  EXPECT_EQ(a.counter("resets_sent") + b.counter("resets_sent"), 0u);
  EXPECT_EQ(a.uncovered_segments, 0u) << a.first_uncovered;
  EXPECT_EQ(b.uncovered_segments, 0u) << b.first_uncovered;
  EXPECT_EQ(past_window, 0u) << first_past_window;
}

// Prints every segment as it is delivered (through the world's tap), for a replayed run.
void print_segments(CrashWorld& world) {
  auto inner = world.network.tap;
  world.network.tap = [&world, inner](std::uint32_t source, std::uint32_t destination, std::vector<std::byte>& bytes) {
    auto copy = bytes;
    const auto segment = wire::TcpSegment::unchecked(copy);
    std::printf("%.6f %s %u->%u seq %u ack %u flags %#x length %zu window %u (A calls %llu)\n",
                static_cast<double>(world.network.now()) / 1e9, source == kServer ? "A" : "B", segment.source_port(),
                segment.destination_port(), segment.sequence(), segment.acknowledgment(), segment.flags(),
                segment.payload().size(), segment.window(), static_cast<unsigned long long>(world.a.flush_calls));
    return inner(source, destination, bytes);
  };
}

TEST(Recovery, ACrashAtEveryStepLosesNoConnection) {
  // FLOTILLA_TCP_CRASH=SEED,K replays one run (K odd: the crash comes before the call's segments
  // leave), with every segment printed.
  if (const char* only = std::getenv("FLOTILLA_TCP_CRASH")) {
    char* rest = nullptr;
    const std::uint64_t seed = std::strtoull(only, &rest, 10);
    const std::uint64_t k = std::strtoull(rest != nullptr && *rest == ',' ? rest + 1 : "0", nullptr, 10);
    CrashWorld world(seed, k, k % 2 == 1);
    print_segments(world);
    ASSERT_TRUE(world.run());
    world.expect_everything_arrived("seed " + std::to_string(seed) + ", crash at call " + std::to_string(k));
    return;
  }
  std::uint64_t runs = 0;
  std::uint64_t restored = 0;
  std::uint64_t tails_resent = 0;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    std::uint64_t calls = 0;
    {
      CrashWorld clean(seed, 0, false);
      ASSERT_TRUE(clean.run()) << "seed " << seed << " without a crash";
      clean.expect_everything_arrived("seed " + std::to_string(seed) + " without a crash");
      calls = clean.a.flush_calls;
    }
    ASSERT_GT(calls, 20u);
    for (std::uint64_t k = 1; k <= calls; ++k) {
      const bool before_send = k % 2 == 1;
      const std::string what = "seed " + std::to_string(seed) + ", A crashes at call " + std::to_string(k) + " of " +
                               std::to_string(calls) + (before_send ? " before sending" : " after sending");
      CrashWorld world(seed, k, before_send);
      ASSERT_TRUE(world.run()) << what << ": not finished";
      ASSERT_EQ(world.crashes, 1u) << what;
      world.expect_everything_arrived(what);
      restored += world.a.counter("restored");
      tails_resent += world.a.counter("restored_tail_resends");
      ++runs;
      if (::testing::Test::HasFailure()) return;
    }
  }
  std::printf("%llu crash runs, %llu connections restored, %llu tails sent again\n",
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(restored),
              static_cast<unsigned long long>(tails_resent));
  EXPECT_GT(restored, runs);
}

// A's table entry for its connection with local port `port` (the one in use).
Tcb* entry_of(Host& host, std::uint16_t local_port, std::uint16_t remote_port) {
  auto* entries = reinterpret_cast<Tcb*>(host.table().data() + sizeof(TableHeader));
  for (std::size_t i = 0; i < 8; ++i) {
    if (entries[i].state != static_cast<std::uint8_t>(TcpState::closed) && entries[i].tuple.local_port == local_port &&
        entries[i].tuple.remote_port == remote_port) {
      return &entries[i];
    }
  }
  return nullptr;
}

TEST(Recovery, BytesMovedAfterTheLastPublishAreReconciledFromTheRings) {
  // The predecessor consumed acknowledged bytes from the send ring and published received bytes to
  // the receive ring, then died before its entry said so: the entry is behind the rings. Were the
  // entry believed, the peer would be asked for bytes the application already has, and they would
  // arrive twice.
  CrashWorld world(6, 0, false);
  Endpoint* upload = world.expected[0].first;  // B's end of B:1024 -> A:80
  ASSERT_TRUE(world.network.run([&] { return upload->received > 20'000 && upload->sent > 30'000; },
                                world.network.now() + 10'000'000'000ull));
  Tcb* entry = entry_of(world.a, 80, 1024);
  ASSERT_NE(entry, nullptr);
  ASSERT_GT(entry->head_seq - entry->iss, 3000u);
  ASSERT_GT(entry->rcv_nxt - entry->irs, 3000u);
  update_entry(*entry, [](Tcb& tcb) {
    tcb.send_ring_head -= 2000;
    tcb.head_seq -= 2000;
    tcb.snd_una -= 2000;
    tcb.receive_ring_tail -= 3000;
    tcb.rcv_nxt -= 3000;
  });
  world.a.restart(world.network.now(), RestorePolicy::resume);
  EXPECT_EQ(world.a.counter("restored"), 3u);
  ASSERT_TRUE(world.run());
  world.expect_everything_arrived("entry behind the rings");
}

// A replica that dies while sending loses the segments it built but never handed on. When they
// end what the application wrote (a response, the last of a file), no later segment makes the peer
// ask for them, and only the retransmission timeout would (200 ms at least, against round trips
// of about 2 ms here). The restored engine's probes draw a duplicate ACK or a SACK that shows the
// hole, and it sends the tail again at once.
TEST(Recovery, ARestoredConnectionMovesBytesAgainWithinAFewRoundTrips) {
  for (const bool sack : {true, false}) {
    for (const std::size_t lost : {1, 2, 3, 5, 8, 13, 21}) {
      const std::string what = std::string(sack ? "SACK" : "no SACK") + ", A crashes before sending a burst of " +
                               std::to_string(lost) + " segments that ends what it has to send";
      SCOPED_TRACE(what);
      LinkConfig link;
      link.latency_ns = 1'000'000;
      Network network(lost, link);
      EngineSettings settings;
      settings.max_connections = 8;
      settings.sack = sack;
      Host a(network, kServer, settings, 0);
      Host b(network, kClient, settings, 0);
      ASSERT_TRUE(b.engine().listen(0, 80, 4, {}).ok());
      b.accept_pattern_base = 7;  // what B's accepted end expects
      Endpoint* sender = a.connect(kClient, 1024, 80);
      ASSERT_NE(sender, nullptr);
      sender->send_pattern = 7;
      sender->auto_shutdown = false;
      sender->send_total = 512 * 1024;  // opens cwnd
      ASSERT_TRUE(network.run([&] { return !b.endpoints().empty() && b.endpoints()[0]->received == sender->send_total; },
                              10'000'000'000ull));
      Endpoint& receiver = *b.endpoints()[0];
      ASSERT_TRUE(network.run([&] { return a.engine().info(sender->handle)->bytes_in_flight == 0; },
                              network.now() + 1'000'000'000ull));
      // The burst: whole segments (no Nagle), written at once, built in one call and lost with it.
      const std::uint32_t mss = a.engine().info(sender->handle)->mss;
      sender->send_total += lost * mss;
      a.crash_at_batch_of = lost;
      bool crashed = false;
      try {
        network.run([] { return false; }, network.now() + 1'000'000'000ull);
      } catch (const SimulatedCrash&) {
        crashed = true;
      }
      ASSERT_TRUE(crashed);
      ASSERT_EQ(a.crashed_batch_segments, lost);
      const std::uint64_t crash_ns = network.now();
      a.restart(crash_ns, RestorePolicy::resume);
      ASSERT_EQ(a.counter("restored"), 1u);
      ASSERT_TRUE(network.run([&] { return receiver.received == sender->send_total; }, crash_ns + 1'000'000'000ull));
      EXPECT_LT(network.now() - crash_ns, 5 * 2 * link.latency_ns) << "the tail took until the RTO";
      EXPECT_EQ(a.counter("retransmission_timeouts"), 0u);
      ASSERT_TRUE(network.run([&] { return a.engine().info(sender->handle)->bytes_in_flight == 0; },
                              network.now() + 1'000'000'000ull));
      EXPECT_GT(a.counter("first_ack_after_restore_us"), crash_ns / 1000);
      EXPECT_LE(a.counter("first_ack_after_restore_us"), network.now() / 1000);
      // One or two lost segments are what the probes of the flight's ends send again; more leave a hole.
      if (lost > 2) {
        EXPECT_EQ(a.counter("restored_tail_resends"), 1u);
      }
      EXPECT_EQ(receiver.mismatches, 0u);
      EXPECT_FALSE(sender->failed);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

TEST(Recovery, AListenerSurvivesARestart) {
  CrashWorld world(2, 0, false);
  Endpoint* before = world.expected[0].first;
  ASSERT_TRUE(world.network.run([&] { return before->received > 10'000; }, world.network.now() + 10'000'000'000ull));
  world.a.restart(world.network.now(), RestorePolicy::resume);
  EXPECT_EQ(world.a.engine().restore_report().listeners, 1u);
  EXPECT_FALSE(world.a.engine().listen(0, 80, 4, {}).ok()) << "port 80 still has its listener";
  // A connection made after the restart is accepted, and the ones from before carry on.
  Endpoint* after = world.b.connect(kServer, 1027, 80);
  ASSERT_NE(after, nullptr);
  after->send_total = 5000;
  after->send_pattern = 100;
  after->receive_pattern = 101;
  world.expected.push_back({after, world.a.accept_send_total});
  ASSERT_TRUE(world.run());
  world.expect_everything_arrived("a connection accepted after the restart");
}

TEST(Recovery, ATornEntryFailsAloneWithAReset) {
  CrashWorld world(3, 0, false);
  Endpoint* upload = world.expected[0].first;
  ASSERT_TRUE(world.network.run([&] { return upload->received > 10'000; }, world.network.now() + 10'000'000'000ull));
  Tcb* torn = entry_of(world.a, 1025, 81);  // A's own connection to B's listener
  ASSERT_NE(torn, nullptr);
  std::atomic_ref<std::uint32_t>(torn->version).fetch_add(1);  // a writer died in the middle
  world.a.restart(world.network.now(), RestorePolicy::resume);
  EXPECT_EQ(world.a.counter("restore_failed"), 1u);
  EXPECT_EQ(world.a.counter("restored"), 2u);
  ASSERT_TRUE(world.run());
  Endpoint* a_end = world.expected[1].first;
  EXPECT_TRUE(a_end->failed);
  EXPECT_EQ(a_end->error, EIO);
  Endpoint& b_end = *world.b.endpoints().at(2);  // B accepted A's connection after its own two
  EXPECT_TRUE(b_end.failed);
  EXPECT_EQ(b_end.error, ECONNRESET);
  world.expect_stream_arrived(0);
  world.expect_stream_arrived(2);
}

TEST(Recovery, AConnectionInFlightAtTwoCrashesInARowIsDroppedAlone) {
  CrashWorld world(5, 0, false);
  // Every engine call that reports an event of B's third connection (port 1026) crashes.
  world.a.crash_on_events_port = 1026;
  ASSERT_TRUE(world.run());
  EXPECT_EQ(world.crashes, 2u);
  EXPECT_EQ(world.a.counter("poisoned_dropped"), 1u);
  const RestoreReport& report = world.a.engine().restore_report();
  EXPECT_TRUE(report.poisoned_dropped);
  EXPECT_EQ(report.poisoned.remote_port, 1026);
  Endpoint* poisoned = world.expected[2].first;
  EXPECT_TRUE(poisoned->failed);
  EXPECT_EQ(poisoned->error, ECONNRESET);
  std::size_t aborted = 0;
  for (const auto& e : world.a.endpoints()) aborted += e->failed && e->error == ECONNABORTED ? 1 : 0;
  EXPECT_EQ(aborted, 1u);
  world.expect_stream_arrived(0);
  world.expect_stream_arrived(1);
}

}  // namespace
}  // namespace flotilla::tcp::sim
