// Targeted TCP engine scenarios over the simulated network (sim.hpp): every RFC 9293 state
// transition, RFC 5961 challenge ACKs, zero window, SYN cookies, keepalive, RTO back-off, restart
// over a previous table, hostile segments and corrupt rings.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "components/tcp/tests/sim.hpp"

namespace flotilla::tcp::sim {
namespace {

constexpr std::uint32_t kClient = 0x0a000001;
constexpr std::uint32_t kServer = 0x0a000002;
constexpr std::uint32_t kNobody = 0x0a0000ff;  // no host: what is sent there is lost
constexpr std::uint16_t kPort = 80;
constexpr std::uint64_t kSecond = 1'000'000'000;

EngineSettings test_settings() {
  EngineSettings settings;
  settings.max_connections = 64;
  settings.secret[0] = 11;
  settings.secret[1] = 22;
  return settings;
}

// A client and a server host on a clean link, both engines reporting to `recorder`.
struct Pair {
  explicit Pair(TransitionRecorder* recorder = nullptr, EngineSettings settings = test_settings(),
                LinkConfig link = LinkConfig{}, std::size_t server_ring_bytes = 256 * 1024,
                std::size_t client_ring_bytes = 256 * 1024)
      : network(1, link),
        client(network, kClient, settings, 0, client_ring_bytes),
        server(network, kServer, settings, 0, server_ring_bytes) {
    if (recorder != nullptr) {
      set_transition_observer(client.engine(), recorder);
      set_transition_observer(server.engine(), recorder);
    }
  }

  // Listens, connects and runs until both ends are established. Neither side shuts down by itself.
  Endpoint* open(std::uint16_t client_port = 40000, const ConnectionOptions& options = {}) {
    if (!listening) {
      listener = server.engine().listen(0, kPort, 16, {}).value();
      listening = true;
    }
    server.accept_auto_shutdown = false;
    Endpoint* e = client.connect(kServer, client_port, kPort, options);
    if (e == nullptr) return nullptr;
    e->auto_shutdown = false;
    e->send_pattern = server.accept_pattern_base;
    e->receive_pattern = server.accept_pattern_base + 1;
    const std::size_t index = server.endpoints().size();
    network.run([&] { return e->established && server.endpoints().size() > index && server.endpoints()[index]->established; },
                network.now() + 10 * kSecond);
    return e;
  }
  Endpoint& server_end(std::size_t i = 0) { return *server.endpoints().at(i); }
  TcpState client_state(const Endpoint& e) {
    const auto info = client.engine().info(e.handle);
    return info ? info->state : TcpState::closed;
  }
  TcpState server_state(std::size_t i = 0) {
    const auto info = server.engine().info(server_end(i).handle);
    return info ? info->state : TcpState::closed;
  }
  void idle(std::uint64_t duration_ns) { network.run([] { return false; }, network.now() + duration_ns); }
  // Shuts an endpoint's sending side as its application would.
  void shut(Host& host, Endpoint& e) {
    e.shut = true;
    e.auto_shutdown = false;
    host.engine().shutdown_write(e.handle, network.now());
  }

  Network network;
  Host client;
  Host server;
  ListenerId listener = 0;
  bool listening = false;
};

// The sequence number right after the last byte (SYN, data, FIN) in `host`'s sent log for `port`.
std::uint32_t next_sequence_sent(const Host& host, std::uint16_t source_port) {
  std::uint32_t next = 0;
  bool any = false;
  for (const auto& bytes : host.sent_log) {
    auto copy = bytes;
    const auto segment = wire::TcpSegment::unchecked(copy);
    if (segment.source_port() != source_port || segment.has_flags(wire::kTcpRst)) continue;
    const std::uint32_t end = segment.sequence() + static_cast<std::uint32_t>(segment.sequence_length());
    if (!any || static_cast<std::int32_t>(end - next) > 0) next = end;
    any = true;
  }
  return next;
}

struct Parsed {
  std::uint32_t seq;
  std::uint32_t ack;
  std::uint8_t flags;
  std::size_t payload;
};
Parsed last_sent(const Host& host) {
  auto copy = host.sent_log.back();
  const auto segment = wire::TcpSegment::unchecked(copy);
  return Parsed{segment.sequence(), segment.acknowledgment(), segment.flags(), segment.payload().size()};
}

// Opens a connection, lets it settle, and returns the next sequence number the client will send
// (the server's rcv_nxt); from then on the server logs what it sends.
std::uint32_t open_settled(Pair& p, Endpoint*& e) {
  p.client.log_segments = true;
  e = p.open();
  if (e == nullptr) return 0;
  p.idle(kSecond);
  const std::uint32_t next = next_sequence_sent(p.client, 40000);
  p.server.log_segments = true;
  return next;
}

FourTuple client_tuple(std::uint16_t port = 40000) {
  return FourTuple{.local_address = kClient, .remote_address = kServer, .local_port = port, .remote_port = kPort};
}

void inject(Host& to, std::uint32_t from, std::vector<std::byte> bytes, std::uint64_t now) {
  to.engine().on_packet(from, to.address(), bytes, now);
}

// --- scenarios that reach every transition -------------------------------------------------------

// Client closes first, server later: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT, CLOSE-WAIT -> LAST-ACK.
void orderly_close(TransitionRecorder* recorder) {
  Pair p(recorder);
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  e->send_total = 100'000;
  e->auto_shutdown = true;
  p.network.run([&] { return p.server_end().peer_closed && p.client_state(*e) == TcpState::fin_wait_2; },
                p.network.now() + 10 * kSecond);
  ASSERT_EQ(p.client_state(*e), TcpState::fin_wait_2);
  ASSERT_EQ(p.server_state(), TcpState::close_wait);
  EXPECT_EQ(p.server_end().received, 100'000u);
  p.shut(p.server, p.server_end());
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 10 * kSecond);
  EXPECT_TRUE(e->released);
  EXPECT_TRUE(p.server_end().released);
  EXPECT_EQ(p.client.engine().connection_count(), 1u);  // TIME-WAIT
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
  p.idle(61 * kSecond);
  EXPECT_EQ(p.client.engine().connection_count(), 0u);
  EXPECT_TRUE(p.client.claimed().empty());
  EXPECT_FALSE(e->failed);
  p.server.engine().close_listener(p.listener);
}

// The server answers the client's FIN with its own at once: FIN+ACK takes FIN-WAIT-1 to TIME-WAIT.
void fin_ack_close(TransitionRecorder* recorder) {
  Pair p(recorder);
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  p.server_end().auto_shutdown = true;
  p.server_end().shutdown_after_peer_fin = true;
  p.shut(p.client, *e);
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 10 * kSecond);
  EXPECT_TRUE(e->released);
  EXPECT_EQ(p.client_state(*e), TcpState::closed);  // the handle is dead once released
  EXPECT_EQ(p.client.engine().connection_count(), 1u);
}

// Both ends shut at the same instant: the FINs cross (CLOSING on both sides).
void simultaneous_close(TransitionRecorder* recorder) {
  Pair p(recorder);
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  p.idle(kSecond);
  p.shut(p.client, *e);
  p.shut(p.server, p.server_end());
  EXPECT_EQ(p.client_state(*e), TcpState::fin_wait_1);
  EXPECT_EQ(p.server_state(), TcpState::fin_wait_1);
  p.network.run([&] { return p.client_state(*e) == TcpState::closing; }, p.network.now() + kSecond);
  EXPECT_EQ(p.client_state(*e), TcpState::closing);
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 10 * kSecond);
  EXPECT_EQ(p.client.engine().connection_count(), 1u);  // both in TIME-WAIT
  EXPECT_EQ(p.server.engine().connection_count(), 1u);
  p.idle(61 * kSecond);
  EXPECT_EQ(p.client.engine().connection_count(), 0u);
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
}

// Both ends connect to each other at once (no listener): SYN-SENT -> SYN-RECEIVED -> ESTABLISHED.
// With `close_early`, one end closes while still in SYN-RECEIVED (-> FIN-WAIT-1).
void simultaneous_open(TransitionRecorder* recorder, bool close_early) {
  Pair p(recorder);
  Endpoint* a = p.client.connect(kServer, 5000, 6000);
  Endpoint* b = p.server.connect(kClient, 6000, 5000);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  a->send_total = b->send_total = 50'000;
  a->send_pattern = b->receive_pattern = 7;
  b->send_pattern = a->receive_pattern = 8;
  p.network.run([&] { return p.client_state(*a) == TcpState::syn_received; }, kSecond);
  ASSERT_EQ(p.client_state(*a), TcpState::syn_received);
  if (close_early) {
    a->send_total = 0;
    p.shut(p.client, *a);
    EXPECT_EQ(p.client_state(*a), TcpState::fin_wait_1);
  }
  p.network.run([&] { return a->released && b->released; }, 30 * kSecond);
  EXPECT_TRUE(a->released);
  EXPECT_TRUE(b->released);
  EXPECT_FALSE(a->failed);
  EXPECT_FALSE(b->failed);
  EXPECT_EQ(b->received, a->send_total);
  EXPECT_EQ(a->received, b->send_total);
  EXPECT_EQ(a->mismatches + b->mismatches, 0u);
}

// Nobody listens: RST, ECONNREFUSED (SYN-SENT -> CLOSED).
void refused(TransitionRecorder* recorder) {
  Pair p(recorder);
  Endpoint* e = p.client.connect(kServer, 40000, 81);
  ASSERT_NE(e, nullptr);
  p.network.run([&] { return e->released; }, 10 * kSecond);
  EXPECT_TRUE(e->failed);
  EXPECT_EQ(e->error, ECONNREFUSED);
  EXPECT_EQ(p.server.counter("no_connection"), 1u);
  EXPECT_EQ(p.client.engine().connection_count(), 0u);
  EXPECT_TRUE(p.client.claimed().empty());
}

// abort() on an established connection: the peer gets a RST and ECONNRESET.
void reset_established(TransitionRecorder* recorder) {
  Pair p(recorder);
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  p.client.engine().abort(e->handle, p.network.now());
  EXPECT_TRUE(e->released);
  EXPECT_FALSE(e->failed);  // the application asked for it
  p.network.run([&] { return p.server_end().released; }, p.network.now() + kSecond);
  EXPECT_TRUE(p.server_end().failed);
  EXPECT_EQ(p.server_end().error, ECONNRESET);
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
}

// A half-open passive connection reset by its peer goes back to LISTEN (i.e. away).
void reset_syn_received(TransitionRecorder* recorder) {
  Pair p(recorder);
  ASSERT_TRUE(p.server.engine().listen(0, kPort, 16, {}).ok());
  const FourTuple fake{.local_address = kNobody, .remote_address = kServer, .local_port = 3333, .remote_port = kPort};
  wire::TcpOptions options;
  options.mss = 1460;
  inject(p.server, kNobody, craft_segment(fake, 1000, 0, wire::kTcpSyn, 65535, options), 0);
  EXPECT_EQ(p.server.engine().connection_count(), 1u);
  ASSERT_EQ(p.server.endpoints().size(), 1u);
  EXPECT_EQ(p.server_state(), TcpState::syn_received);
  // Not exact: a challenge ACK, nothing else.
  inject(p.server, kNobody, craft_segment(fake, 1005, 0, wire::kTcpRst, 0), 0);
  EXPECT_EQ(p.server.engine().connection_count(), 1u);
  EXPECT_EQ(p.server.counter("challenge_acks"), 1u);
  inject(p.server, kNobody, craft_segment(fake, 1001, 0, wire::kTcpRst, 0), 0);
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
  EXPECT_TRUE(p.server_end().released);
  EXPECT_FALSE(p.server_end().failed);
  EXPECT_TRUE(p.server.claimed().empty());
}

TEST(Transitions, EveryTransitionOfTheDiagramIsExercised) {
  TransitionRecorder recorder;
  orderly_close(&recorder);
  fin_ack_close(&recorder);
  simultaneous_close(&recorder);
  simultaneous_open(&recorder, false);
  simultaneous_open(&recorder, true);
  refused(&recorder);
  reset_established(&recorder);
  reset_syn_received(&recorder);
  using S = TcpState;
  const std::pair<S, S> expected[] = {
      {S::closed, S::listen},          {S::listen, S::closed},
      {S::closed, S::syn_sent},        {S::syn_sent, S::closed},
      {S::listen, S::syn_received},    {S::syn_received, S::listen},
      {S::syn_sent, S::syn_received},  {S::syn_sent, S::established},
      {S::syn_received, S::established}, {S::syn_received, S::fin_wait_1},
      {S::established, S::fin_wait_1}, {S::established, S::close_wait},
      {S::established, S::closed},     {S::fin_wait_1, S::fin_wait_2},
      {S::fin_wait_1, S::closing},     {S::fin_wait_1, S::time_wait},
      {S::fin_wait_2, S::time_wait},   {S::closing, S::time_wait},
      {S::close_wait, S::last_ack},    {S::last_ack, S::closed},
      {S::time_wait, S::closed},
  };
  for (const auto& [from, to] : expected) {
    EXPECT_TRUE(recorder.seen.contains({from, to})) << state_name(from) << " -> " << state_name(to);
  }
}

TEST(Lifecycle, OrderlyClose) { orderly_close(nullptr); }
TEST(Lifecycle, FinAckClose) { fin_ack_close(nullptr); }
TEST(Lifecycle, SimultaneousClose) { simultaneous_close(nullptr); }
TEST(Lifecycle, SimultaneousOpen) { simultaneous_open(nullptr, false); }
TEST(Lifecycle, CloseInSynReceived) { simultaneous_open(nullptr, true); }
TEST(Lifecycle, ConnectionRefused) { refused(nullptr); }
TEST(Lifecycle, AbortResetsThePeer) { reset_established(nullptr); }
TEST(Lifecycle, ResetInSynReceived) { reset_syn_received(nullptr); }

// --- RFC 5961 -------------------------------------------------------------------------------------

TEST(Rfc5961, InWindowResetThatIsNotExactGetsAChallengeAck) {
  Pair p;
  p.client.log_segments = true;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  e->send_total = 5000;
  p.idle(kSecond);
  const std::uint32_t rcv_nxt = next_sequence_sent(p.client, 40000);
  p.server.log_segments = true;
  inject(p.server, kClient, craft_segment(client_tuple(), rcv_nxt + 100, 0, wire::kTcpRst, 0), p.network.now());
  EXPECT_EQ(p.server.counter("challenge_acks"), 1u);
  ASSERT_EQ(p.server.sent_log.size(), 1u);
  const Parsed ack = last_sent(p.server);
  EXPECT_EQ(ack.flags, wire::kTcpAck);
  EXPECT_EQ(ack.ack, rcv_nxt);
  EXPECT_EQ(p.server_state(), TcpState::established);
  // The exact one resets.
  inject(p.server, kClient, craft_segment(client_tuple(), rcv_nxt, 0, wire::kTcpRst, 0), p.network.now());
  EXPECT_TRUE(p.server_end().failed);
  EXPECT_EQ(p.server_end().error, ECONNRESET);
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
}

TEST(Rfc5961, SynOnAnEstablishedConnectionGetsAChallengeAck) {
  Pair p;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  p.server.log_segments = true;
  wire::TcpOptions options;
  options.mss = 1460;
  inject(p.server, kClient, craft_segment(client_tuple(), 123456, 0, wire::kTcpSyn, 1000, options), p.network.now());
  EXPECT_EQ(p.server.counter("challenge_acks"), 1u);
  ASSERT_EQ(p.server.sent_log.size(), 1u);
  EXPECT_EQ(last_sent(p.server).flags, wire::kTcpAck);
  EXPECT_EQ(p.server_state(), TcpState::established);
  // The connection still carries data both ways.
  e->send_total = 300'000;
  p.server_end().send_total = 200'000;
  e->auto_shutdown = true;
  p.server_end().auto_shutdown = true;
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 30 * kSecond);
  EXPECT_EQ(p.server_end().received, 300'000u);
  EXPECT_EQ(e->received, 200'000u);
  EXPECT_EQ(e->mismatches + p.server_end().mismatches, 0u);
}

TEST(Rfc5961, ChallengeAcksAreRateLimited) {
  Pair p;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  wire::TcpOptions options;
  for (int i = 0; i < 1500; ++i) {
    inject(p.server, kClient, craft_segment(client_tuple(), 5000 + i, 0, wire::kTcpSyn, 1000, options), p.network.now());
  }
  EXPECT_EQ(p.server.counter("challenge_acks"), 1000u);
  EXPECT_EQ(p.server.counter("challenge_acks_limited"), 500u);
  EXPECT_EQ(p.server_state(), TcpState::established);
}

// --- flow control and timers ----------------------------------------------------------------------

TEST(FlowControl, ZeroWindowThenReopenLosesNothing) {
  Pair p(nullptr, test_settings(), LinkConfig{}, 64 * 1024);
  p.server.accept_reading = false;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  e->send_total = 1'000'000;
  e->auto_shutdown = true;
  p.idle(30 * kSecond);
  EXPECT_EQ(p.server_end().received, 0u);
  // The ring is full, to within the window scale's granularity (64 KiB needs a shift of 1): the
  // last bytes are too few for the sender's silly-window rule.
  EXPECT_GE(p.server_end().app_receive.readable(), 64u * 1024 - 2);
  EXPECT_GT(p.client.counter("persist_probes"), 2u);
  EXPECT_FALSE(e->failed);
  EXPECT_EQ(p.client_state(*e), TcpState::established);
  p.server_end().reading = true;
  p.server_end().auto_shutdown = true;
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 60 * kSecond);
  EXPECT_EQ(p.server_end().received, 1'000'000u);
  EXPECT_EQ(p.server_end().mismatches, 0u);
  EXPECT_FALSE(e->failed);
}

TEST(FlowControl, APeerThatVanishesBehindAZeroWindowIsGivenUp) {
  EngineSettings settings = test_settings();
  settings.data_retries = 4;
  Pair p(nullptr, settings, LinkConfig{}, 64 * 1024);
  p.server.accept_reading = false;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  e->send_total = 1'000'000;
  p.idle(10 * kSecond);
  EXPECT_GT(p.client.counter("persist_probes"), 0u);
  EXPECT_FALSE(e->failed);  // answered probes keep it alive
  p.network.tap = [](std::uint32_t, std::uint32_t, std::vector<std::byte>&) { return false; };
  p.network.run([&] { return e->released; }, p.network.now() + 3600 * kSecond);
  EXPECT_TRUE(e->failed);
  EXPECT_EQ(e->error, ETIMEDOUT);
}

TEST(Timers, KeepaliveKillsADeadPeer) {
  Pair p;
  ConnectionOptions options;
  options.keepalive = true;
  options.keepalive_idle_s = 10;
  options.keepalive_interval_s = 2;
  options.keepalive_count = 3;
  Endpoint* e = p.open(40000, options);
  ASSERT_NE(e, nullptr);
  // A live peer answers the probes: nothing happens.
  p.idle(60 * kSecond);
  EXPECT_FALSE(e->failed);
  EXPECT_GT(p.client.counter("keepalive_probes"), 3u);
  const std::uint64_t probes_before = p.client.counter("keepalive_probes");
  // Then the peer vanishes.
  p.network.tap = [](std::uint32_t, std::uint32_t, std::vector<std::byte>&) { return false; };
  const std::uint64_t vanished = p.network.now();
  p.network.run([&] { return e->released; }, p.network.now() + 100 * kSecond);
  EXPECT_TRUE(e->failed);
  EXPECT_EQ(e->error, ETIMEDOUT);
  EXPECT_EQ(p.client.counter("keepalive_probes") - probes_before, 3u);
  EXPECT_GE(p.network.now() - vanished, 3 * 2 * kSecond);
  EXPECT_LE(p.network.now() - vanished, (10 + 4 * 2) * kSecond);
}

TEST(Timers, RetransmissionBacksOffThenTimesOut) {
  EngineSettings settings = test_settings();
  settings.data_retries = 5;
  Pair p(nullptr, settings);
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  std::vector<std::uint64_t> sends;
  p.network.tap = [&](std::uint32_t source, std::uint32_t, std::vector<std::byte>& bytes) {
    const auto segment = wire::TcpSegment::unchecked(bytes);
    if (source == kClient && !segment.payload().empty()) sends.push_back(p.network.now());
    return false;
  };
  e->send_total = 1000;
  p.network.run([&] { return e->released; }, p.network.now() + 3600 * kSecond);
  EXPECT_TRUE(e->failed);
  EXPECT_EQ(e->error, ETIMEDOUT);
  ASSERT_EQ(sends.size(), 6u);  // the first send and 5 retransmissions
  for (std::size_t i = 2; i < sends.size(); ++i) {
    const std::uint64_t previous = sends[i - 1] - sends[i - 2];
    const std::uint64_t gap = sends[i] - sends[i - 1];
    EXPECT_EQ(gap, 2 * previous) << "retransmission " << i;
  }
  EXPECT_EQ(p.client.counter("connection_timeouts"), 1u);
  EXPECT_EQ(p.client.engine().connection_count(), 0u);
}

TEST(Timers, SynRetriesThenTimesOut) {
  EngineSettings settings = test_settings();
  settings.syn_retries = 3;
  Pair p(nullptr, settings);
  p.network.tap = [](std::uint32_t, std::uint32_t, std::vector<std::byte>&) { return false; };
  Endpoint* e = p.client.connect(kServer, 40000, kPort);
  ASSERT_NE(e, nullptr);
  p.network.run([&] { return e->released; }, 3600 * kSecond);
  EXPECT_TRUE(e->failed);
  EXPECT_EQ(e->error, ETIMEDOUT);
  EXPECT_EQ(p.client.counter("retransmits"), 3u);
  EXPECT_EQ(p.network.now(), 15 * kSecond);  // 1 + 2 + 4 + 8 s
}

// --- listening ------------------------------------------------------------------------------------

TEST(Listen, SynFloodPastTheBacklogIsServedBySynCookies) {
  Pair p;
  const ListenerId listener = p.server.engine().listen(0, kPort, 4, {}).value();
  (void)listener;
  wire::TcpOptions options;
  options.mss = 1460;
  for (std::uint16_t port = 2000; port < 2020; ++port) {
    const FourTuple fake{.local_address = kNobody, .remote_address = kServer, .local_port = port, .remote_port = kPort};
    inject(p.server, kNobody, craft_segment(fake, port * 1000u, 0, wire::kTcpSyn, 65535, options), 0);
  }
  EXPECT_EQ(p.server.engine().connection_count(), 4u);  // the SYN queue
  EXPECT_EQ(p.server.counter("syn_cookies_sent"), 16u);
  // A real client still gets through, on a cookie.
  Endpoint* e = p.client.connect(kServer, 40000, kPort);
  ASSERT_NE(e, nullptr);
  e->send_total = 300'000;
  p.server.accept_send_total = 200'000;
  p.server.accept_pattern_base = 0;
  e->send_pattern = 0;
  e->receive_pattern = 1;
  p.network.run([&] { return p.server.endpoints().size() == 5 && p.server.endpoints()[4]->established; },
                10 * kSecond);
  ASSERT_TRUE(e->established);
  ASSERT_EQ(p.server.endpoints().size(), 5u);
  EXPECT_EQ(p.server.counter("syn_cookies_sent"), 17u);
  EXPECT_EQ(p.server.counter("syn_cookies_accepted"), 1u);
  const auto info = p.client.engine().info(e->handle);
  ASSERT_TRUE(info.has_value()) << e->failed << " " << e->error << " " << e->released << " "
                                << p.server.endpoints()[4]->failed << " " << p.server.counter("resets_sent");
  EXPECT_FALSE(info->timestamps);  // a cookie carries only the MSS
  EXPECT_FALSE(info->sack_permitted);
  p.network.run([&] { return e->released && p.server.endpoints().size() == 5 && p.server.endpoints()[4]->released; },
                p.network.now() + 60 * kSecond);
  ASSERT_EQ(p.server.endpoints().size(), 5u);
  EXPECT_FALSE(e->failed) << e->error;
  EXPECT_FALSE(p.server.endpoints()[4]->failed) << p.server.endpoints()[4]->error;
  EXPECT_EQ(p.server.endpoints()[4]->received, 300'000u);
  EXPECT_EQ(e->received, 200'000u);
  EXPECT_EQ(e->mismatches + p.server.endpoints()[4]->mismatches, 0u);
  // The half-open ones expire after their SYN-ACK retries.
  p.idle(600 * kSecond);
  EXPECT_EQ(p.server.counter("syn_queue_expired"), 4u);
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
}

TEST(Listen, AnAckWithABadCookieIsReset) {
  Pair p;
  ASSERT_TRUE(p.server.engine().listen(0, kPort, 4, {}).ok());
  p.server.log_segments = true;
  inject(p.server, kClient, craft_segment(client_tuple(), 777, 12345, wire::kTcpAck, 1000), 0);
  EXPECT_EQ(p.server.counter("syn_cookies_invalid"), 1u);
  ASSERT_EQ(p.server.sent_log.size(), 1u);
  const Parsed reset = last_sent(p.server);
  EXPECT_EQ(reset.flags, wire::kTcpRst);
  EXPECT_EQ(reset.seq, 12345u);
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
}

TEST(Listen, SegmentsForNothingAreAnsweredWithResetButNeverAResetToAReset) {
  Pair p;
  p.server.log_segments = true;
  inject(p.server, kClient, craft_segment(client_tuple(), 10, 20, wire::kTcpAck, 1000), 0);
  ASSERT_EQ(p.server.sent_log.size(), 1u);
  EXPECT_EQ(last_sent(p.server).flags, wire::kTcpRst);
  EXPECT_EQ(last_sent(p.server).seq, 20u);
  const std::byte data[5] = {};
  inject(p.server, kClient, craft_segment(client_tuple(), 10, 0, wire::kTcpSyn, 1000, {}), 0);
  ASSERT_EQ(p.server.sent_log.size(), 2u);
  EXPECT_EQ(last_sent(p.server).flags, wire::kTcpRst | wire::kTcpAck);
  EXPECT_EQ(last_sent(p.server).seq, 0u);
  EXPECT_EQ(last_sent(p.server).ack, 11u);
  inject(p.server, kClient, craft_segment(client_tuple(), 10, 20, wire::kTcpRst | wire::kTcpAck, 1000, {}, data), 0);
  EXPECT_EQ(p.server.sent_log.size(), 2u);
  EXPECT_EQ(p.server.counter("no_connection"), 3u);
}

// --- hostile input, corrupt rings, restart --------------------------------------------------------

TEST(Hostile, MalformedSegmentsAreCountedAndChangeNothing) {
  Pair p;
  p.client.log_segments = true;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  e->send_total = 10'000;
  p.idle(kSecond);
  const std::uint32_t seq = next_sequence_sent(p.client, 40000);
  const auto before = p.server.engine().info(p.server_end().handle).value();
  p.server.log_segments = true;
  const std::byte data[100] = {std::byte{1}};
  const std::uint64_t now = p.network.now();

  auto flipped = craft_segment(client_tuple(), seq, 0, wire::kTcpAck, 1000, {}, data);
  flipped[30] ^= std::byte{0x40};
  inject(p.server, kClient, flipped, now);
  inject(p.server, kClient, craft_segment(client_tuple(), seq, 0, wire::kTcpSyn | wire::kTcpFin, 1000), now);
  inject(p.server, kClient, craft_segment(client_tuple(), seq, 0, wire::kTcpSyn | wire::kTcpRst, 1000), now);
  inject(p.server, kClient, craft_segment(client_tuple(), seq, 0, 0, 1000, {}, data), now);
  inject(p.server, kClient, craft_segment(client_tuple(), seq, 0, wire::kTcpFin | wire::kTcpPsh | wire::kTcpUrg, 1000), now);
  // An option that runs past the header.
  wire::TcpOptions timestamps;
  timestamps.timestamps = std::pair{1u, 2u};
  auto overflowing = craft_segment(client_tuple(), seq, 0, wire::kTcpAck, 1000, timestamps, data);
  overflowing[wire::kTcpHeaderBytes + 3] = std::byte{40};  // the timestamp option's length byte
  wire::TcpSegment::unchecked(overflowing).fill_checksum(kClient, kServer);
  inject(p.server, kClient, overflowing, now);
  // A known option with the wrong length (timestamps of 6 bytes).
  auto wrong_length = craft_segment(client_tuple(), seq, 0, wire::kTcpAck, 1000, timestamps, data);
  wrong_length[wire::kTcpHeaderBytes + 3] = std::byte{6};
  wire::TcpSegment::unchecked(wrong_length).fill_checksum(kClient, kServer);
  inject(p.server, kClient, wrong_length, now);
  // A data offset past the segment.
  auto long_header = craft_segment(client_tuple(), seq, 0, wire::kTcpAck, 1000);
  long_header[12] = std::byte{0xf0};
  wire::TcpSegment::unchecked(long_header).fill_checksum(kClient, kServer);
  inject(p.server, kClient, long_header, now);
  auto short_segment = craft_segment(client_tuple(), seq, 0, wire::kTcpAck, 1000);
  short_segment.resize(12);
  inject(p.server, kClient, short_segment, now);

  EXPECT_EQ(p.server.counter("bad_checksum"), 1u);
  EXPECT_EQ(p.server.counter("bad_flags"), 4u);
  EXPECT_EQ(p.server.counter("bad_options"), 2u);
  EXPECT_EQ(p.server.counter("bad_header"), 2u);
  EXPECT_TRUE(p.server.sent_log.empty());  // none of them is answered
  const auto after = p.server.engine().info(p.server_end().handle).value();
  EXPECT_EQ(after.state, TcpState::established);
  EXPECT_EQ(after.bytes_received, before.bytes_received);
  EXPECT_EQ(p.server_end().received, 10'000u);
  // And the connection works on.
  e->send_total = 50'000;
  e->auto_shutdown = true;
  p.server_end().auto_shutdown = true;
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 30 * kSecond);
  EXPECT_EQ(p.server_end().received, 50'000u);
  EXPECT_EQ(p.server_end().mismatches, 0u);
}

TEST(Hostile, OutOfWindowDataIsAnsweredWithAnAckAndDropped) {
  Pair p;
  Endpoint* e = nullptr;
  const std::uint32_t seq = open_settled(p, e);
  ASSERT_NE(e, nullptr);
  const std::byte data[100] = {std::byte{1}};
  inject(p.server, kClient, craft_segment(client_tuple(), seq + 10'000'000, 0, wire::kTcpAck, 1000, {}, data),
         p.network.now());
  EXPECT_EQ(p.server.counter("out_of_window"), 1u);
  ASSERT_EQ(p.server.sent_log.size(), 1u);
  EXPECT_EQ(last_sent(p.server).ack, seq);
  EXPECT_EQ(p.server.engine().info(p.server_end().handle)->bytes_received, 0u);
}

TEST(Hostile, AnAckForDataNeverSentIsCountedAndChallenged) {
  Pair p;
  Endpoint* e = nullptr;
  const std::uint32_t seq = open_settled(p, e);
  ASSERT_NE(e, nullptr);
  const auto before = p.server.engine().info(p.server_end().handle).value();
  inject(p.server, kClient, craft_segment(client_tuple(), seq, 0x40000000u, wire::kTcpAck, 1000), p.network.now());
  EXPECT_EQ(p.server.counter("bad_ack"), 1u);
  EXPECT_EQ(p.server.counter("challenge_acks"), 1u);
  ASSERT_EQ(p.server.sent_log.size(), 1u);
  EXPECT_EQ(last_sent(p.server).flags, wire::kTcpAck);
  const auto after = p.server.engine().info(p.server_end().handle).value();
  EXPECT_EQ(after.state, TcpState::established);
  EXPECT_EQ(after.bytes_acked, before.bytes_acked);
  EXPECT_EQ(after.send_window, before.send_window);
}

TEST(Hostile, ACorruptRingFailsOnlyItsConnection) {
  Pair p;
  Endpoint* first = p.open(40000);
  Endpoint* second = p.open(40001);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_EQ(p.server.endpoints().size(), 2u);
  Endpoint& victim = p.server_end(0);
  // The application side of the victim's send ring claims more bytes than the ring holds.
  victim.send_indices.tail.store(victim.send_data.size() * 3, std::memory_order_release);
  p.server.engine().on_send_ready(victim.handle, p.network.now());
  EXPECT_TRUE(victim.failed);
  EXPECT_EQ(victim.error, EIO);
  EXPECT_TRUE(victim.released);
  EXPECT_EQ(p.server.counter("ring_corrupt"), 1u);
  second->send_total = 200'000;
  second->auto_shutdown = true;
  p.server_end(1).send_total = 100'000;
  p.server_end(1).auto_shutdown = true;
  p.network.run([&] { return first->released && second->released && p.server_end(1).released; },
                p.network.now() + 30 * kSecond);
  EXPECT_TRUE(first->failed);
  EXPECT_EQ(first->error, ECONNRESET);
  EXPECT_FALSE(second->failed);
  EXPECT_EQ(p.server_end(1).received, 200'000u);
  EXPECT_EQ(second->received, 100'000u);
  EXPECT_EQ(second->mismatches + p.server_end(1).mismatches, 0u);
}

TEST(Restart, ASecondEngineOverTheTableResetsEverySynchronizedPeer) {
  Pair p;
  p.server.log_segments = true;
  Endpoint* first = p.open(40000);
  Endpoint* second = p.open(40001);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  p.server_end(0).send_total = 30'000;
  p.server_end(1).send_total = 70'000;
  p.idle(kSecond);
  ASSERT_EQ(first->received, 30'000u);
  const std::uint32_t next_first = next_sequence_sent(p.server, kPort);  // both share the port...
  (void)next_first;
  // ...so take each connection's next sequence from its own segments.
  std::uint32_t next[2] = {0, 0};
  for (const auto& bytes : p.server.sent_log) {
    auto copy = bytes;
    const auto segment = wire::TcpSegment::unchecked(copy);
    const int which = segment.destination_port() == 40000 ? 0 : 1;
    next[which] = segment.sequence() + static_cast<std::uint32_t>(segment.sequence_length());
  }
  p.server.sent_log.clear();
  p.server.restart(p.network.now());
  EXPECT_EQ(p.server.counter("reset_at_restart"), 2u);
  ASSERT_EQ(p.server.sent_log.size(), 2u);
  for (const auto& bytes : p.server.sent_log) {
    auto copy = bytes;
    const auto segment = wire::TcpSegment::unchecked(copy);
    EXPECT_TRUE(segment.has_flags(wire::kTcpRst));
    EXPECT_EQ(segment.sequence(), next[segment.destination_port() == 40000 ? 0 : 1]);
  }
  EXPECT_EQ(p.server.engine().connection_count(), 0u);
  p.network.run([&] { return first->released && second->released; }, p.network.now() + kSecond);
  EXPECT_EQ(first->error, ECONNRESET);
  EXPECT_EQ(second->error, ECONNRESET);
  // The new engine serves new connections.
  p.listening = false;
  Endpoint* third = p.open(40002);
  ASSERT_NE(third, nullptr);
  EXPECT_TRUE(third->established);
  // And a third incarnation finds a clean table: one connection to reset, not three.
  p.server.restart(p.network.now());
  EXPECT_EQ(p.server.counter("reset_at_restart"), 3u);
}

// The SYN `host` sent from `port`: its sequence number and timestamp value.
std::pair<std::uint32_t, std::uint32_t> syn_sent(const Host& host, std::uint16_t port) {
  for (const auto& bytes : host.sent_log) {
    auto copy = bytes;
    const auto segment = wire::TcpSegment::unchecked(copy);
    if (segment.source_port() != port || !segment.has_flags(wire::kTcpSyn)) continue;
    const auto options = wire::parse_tcp_options(segment.options());
    if (!options || !options->timestamps) break;
    return {segment.sequence(), options->timestamps->first};
  }
  ADD_FAILURE() << "no SYN with timestamps from port " << port;
  return {0, 0};
}

TEST(Restart, TheSecretStaysInTheTable) {
  // No secret in the settings: the first engine draws one, and its successors over the same table
  // keep it, so the ISN function and the timestamp offset stay the same.
  EngineSettings settings = test_settings();
  settings.secret[0] = settings.secret[1] = 0;
  for (const RestorePolicy policy : {RestorePolicy::reset, RestorePolicy::resume}) {
    Network network(1, LinkConfig{});
    Host host(network, kClient, settings, 0);
    host.log_segments = true;
    Endpoint* first = host.connect(kNobody, 40000, kPort);
    ASSERT_NE(first, nullptr);
    const auto before = syn_sent(host, 40000);
    host.engine().abort(first->handle, network.now());
    host.restart(network.now(), policy);
    host.restart(network.now(), policy);
    host.sent_log.clear();
    ASSERT_NE(host.connect(kNobody, 40000, kPort), nullptr);
    const auto after = syn_sent(host, 40000);
    EXPECT_EQ(after.first, before.first) << "same ISN for the same tuple at the same time";
    EXPECT_EQ(after.second, before.second) << "same timestamp offset";
    // A fresh table draws another secret.
    Host other(network, kClient, settings, 0);
    other.log_segments = true;
    ASSERT_NE(other.connect(kNobody, 40000, kPort), nullptr);
    const auto fresh = syn_sent(other, 40000);
    EXPECT_NE(fresh.second, before.second);
  }
}

TEST(Restart, AGarbageTableIsIgnored) {
  Pair p;
  EngineSettings settings = test_settings();
  std::vector<std::byte> memory(Engine::table_bytes(settings) + 64);
  auto* base = memory.data() + (64 - reinterpret_cast<std::uintptr_t>(memory.data()) % 64) % 64;
  std::span<std::byte> table(base, Engine::table_bytes(settings));
  std::mt19937_64 rng(5);
  for (auto& b : table) b = static_cast<std::byte>(rng());
  NamedCounterTable counters;
  auto engine = Engine::create(table, settings, p.server, counters, 0);
  ASSERT_TRUE(engine.ok());
  EXPECT_EQ(counters.counter("reset_at_restart").read(), 0u);
  EXPECT_EQ((*engine)->connection_count(), 0u);
}

// Writes the endpoint's next `count` pattern bytes into its send ring and tells the engine.
void write_pattern(Pair& p, Host& host, Endpoint& e, std::size_t count) {
  std::vector<std::byte> bytes(count);
  for (std::size_t i = 0; i < count; ++i) bytes[i] = static_cast<std::byte>(pattern_byte(e.send_pattern, e.sent + i));
  ASSERT_EQ(e.app_send.write(bytes), count);
  e.sent += count;
  e.send_total = e.sent;
  host.engine().on_send_ready(e.handle, p.network.now());
}

// A segment seen on the link, and when.
struct Sent {
  std::uint64_t at;
  std::size_t payload;
  std::uint8_t flags;
};

TEST(Nagle, SmallWritesWaitForTheAckUnlessNodelay) {
  for (const bool nodelay : {false, true}) {
    SCOPED_TRACE(nodelay ? "nodelay" : "nagle");
    Pair p;
    ConnectionOptions options;
    options.nodelay = nodelay;
    Endpoint* e = p.open(40000, options);
    ASSERT_NE(e, nullptr);
    e->send_total = 0;
    p.client.log_segments = true;
    write_pattern(p, p.client, *e, 100);
    write_pattern(p, p.client, *e, 100);
    std::size_t data_segments = 0;
    for (const auto& bytes : p.client.sent_log) {
      auto copy = bytes;
      if (!wire::TcpSegment::unchecked(copy).payload().empty()) ++data_segments;
    }
    EXPECT_EQ(data_segments, nodelay ? 2u : 1u);
    p.idle(kSecond);
    EXPECT_EQ(p.server_end().received, 200u);
    EXPECT_EQ(p.server_end().mismatches, 0u);
  }
}

TEST(DelayedAck, OneSegmentWaitsTwoFullSegmentsDoNot) {
  Pair p;
  ConnectionOptions options;
  options.nodelay = true;
  Endpoint* e = p.open(40000, options);
  ASSERT_NE(e, nullptr);
  // Warm up: the first data also opens the server's window from the SYN-ACK's 64 KiB to the
  // ring's 256 KiB, and that window update goes at once.
  write_pattern(p, p.client, *e, 10);
  p.idle(kSecond);
  std::vector<Sent> acks;
  p.network.tap = [&](std::uint32_t source, std::uint32_t, std::vector<std::byte>& bytes) {
    const auto segment = wire::TcpSegment::unchecked(bytes);
    if (source == kServer) acks.push_back(Sent{p.network.now(), segment.payload().size(), segment.flags()});
    return true;
  };
  const std::uint64_t start = p.network.now();
  write_pattern(p, p.client, *e, 10);
  p.idle(kSecond);
  ASSERT_EQ(acks.size(), 1u);
  // Delivered to the server after 1 ms (latency, plus serialization), ACKed 40 ms later, back at
  // the client 1 ms after.
  EXPECT_GE(acks[0].at - start, 42'000'000u);
  EXPECT_LT(acks[0].at - start, 42'100'000u);
  const auto info = p.client.engine().info(e->handle).value();
  acks.clear();
  const std::uint64_t second = p.network.now();
  write_pattern(p, p.client, *e, 2 * info.mss);
  p.idle(kSecond);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_LT(acks[0].at - second, 5'000'000u);  // at once, not after 40 ms
  EXPECT_EQ(p.server_end().received, 20u + 2 * info.mss);
}

TEST(Lifecycle, ANewSynReopensTimeWait) {
  Pair p;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  // The server closes first and so holds TIME-WAIT.
  e->shutdown_after_peer_fin = true;
  e->auto_shutdown = true;
  p.shut(p.server, p.server_end());
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 10 * kSecond);
  EXPECT_EQ(p.server.engine().connection_count(), 1u);
  EXPECT_EQ(p.client.engine().connection_count(), 0u);
  p.idle(kSecond);
  Endpoint* again = p.open(40000);  // the same 4-tuple
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->established);
  EXPECT_EQ(p.server.counter("time_wait_reopened"), 1u);
  ASSERT_EQ(p.server.endpoints().size(), 2u);
  again->send_total = 20'000;
  again->auto_shutdown = true;
  p.server_end(1).auto_shutdown = true;
  p.network.run([&] { return again->released && p.server_end(1).released; }, p.network.now() + 10 * kSecond);
  EXPECT_EQ(p.server_end(1).received, 20'000u);
  EXPECT_EQ(p.server_end(1).mismatches, 0u);
}

// The secret stays across a restart, so the restarted engine's ISNs and timestamps go on from its
// predecessor's: a peer in TIME-WAIT takes its new SYN for the same 4-tuple (RFC 6191: a higher
// timestamp and sequence number), where a redrawn secret would fail the check half the time.
TEST(Restart, APeerInTimeWaitTakesANewConnectionFromARestartedEngine) {
  EngineSettings settings = test_settings();
  settings.secret[0] = settings.secret[1] = 0;
  Pair p(nullptr, settings);
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  e->shutdown_after_peer_fin = true;
  e->auto_shutdown = true;
  p.shut(p.server, p.server_end());
  p.network.run([&] { return e->released && p.server_end().released; }, p.network.now() + 10 * kSecond);
  ASSERT_EQ(p.server.engine().connection_count(), 1u) << "the server holds TIME-WAIT";
  p.idle(kSecond);
  p.client.restart(p.network.now());
  Endpoint* again = p.open(40000);  // the same 4-tuple, from the new engine
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(again->established);
  EXPECT_EQ(p.server.counter("time_wait_reopened"), 1u);
  EXPECT_EQ(p.server.counter("paws_rejected") + p.server.counter("challenge_acks"), 0u);
}

// Both ends send at once, every bare ACK is lost for a while, so both time out and go back to
// their snd_una, below what the other already holds. Their bare ACKs must still be acceptable to
// each other (sequence = the highest sent, not the rewound snd_nxt), or neither ever hears the
// other again.
TEST(Retransmission, BothEndsTimingOutStillHearEachOther) {
  Pair p;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  const std::uint64_t until = p.network.now() + 5 * kSecond;
  p.network.tap = [&](std::uint32_t, std::uint32_t, std::vector<std::byte>& bytes) {
    const auto segment = wire::TcpSegment::unchecked(bytes);
    const bool bare = segment.payload().empty() && (segment.flags() & (wire::kTcpSyn | wire::kTcpFin)) == 0;
    return !(bare && p.network.now() < until);
  };
  e->send_total = 5 * 1448;
  p.server_end().send_total = 5 * 1448;
  p.network.run([&] { return p.client.counter("retransmission_timeouts") > 0 && p.server.counter("retransmission_timeouts") > 0; },
                until);
  EXPECT_GT(p.client.counter("retransmission_timeouts"), 0u);
  EXPECT_GT(p.server.counter("retransmission_timeouts"), 0u);
  p.network.run([&] {
    const auto a = p.client.engine().info(e->handle);
    const auto b = p.server.engine().info(p.server_end().handle);
    return a && b && a->bytes_in_flight == 0 && b->bytes_in_flight == 0;
  }, until + 10 * kSecond);
  const auto a = p.client.engine().info(e->handle);
  const auto b = p.server.engine().info(p.server_end().handle);
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(a->bytes_in_flight, 0u);
  EXPECT_EQ(b->bytes_in_flight, 0u);
  EXPECT_EQ(e->received, 5u * 1448);
  EXPECT_EQ(p.server_end().received, 5u * 1448);
}

TEST(Lifecycle, AFullTableRecyclesItsOldestTimeWait) {
  EngineSettings settings = test_settings();
  settings.max_connections = 3;
  Pair p(nullptr, settings);
  for (std::uint16_t port = 40000; port < 40003; ++port) {
    Endpoint* e = p.open(port);
    ASSERT_NE(e, nullptr);
    const std::size_t index = p.server.endpoints().size() - 1;
    p.server_end(index).shutdown_after_peer_fin = true;
    p.server_end(index).auto_shutdown = true;
    p.shut(p.client, *e);
    p.network.run([&] { return e->released && p.server_end(index).released; }, p.network.now() + 10 * kSecond);
    ASSERT_TRUE(e->released);
  }
  EXPECT_EQ(p.client.engine().connection_count(), 3u);  // all in TIME-WAIT: the table is full
  Endpoint* fourth = p.open(40003);
  ASSERT_NE(fourth, nullptr);
  EXPECT_TRUE(fourth->established);
  EXPECT_EQ(p.client.counter("time_wait_recycled"), 1u);
  EXPECT_EQ(p.client.engine().connection_count(), 3u);
  // The oldest went: a segment for it finds nothing (a RST answers), the others still answer.
  p.client.log_segments = true;
  const FourTuple first{.local_address = kServer, .remote_address = kClient, .local_port = kPort, .remote_port = 40000};
  inject(p.client, kServer, craft_segment(first, 1, 2, wire::kTcpAck, 100), p.network.now());
  EXPECT_EQ(p.client.counter("no_connection"), 1u);
}

TEST(Api, ConnectRejectsBadRingsAndTuplesInUse) {
  Pair p;
  Endpoint* e = p.client.connect(kServer, 40000, kPort);
  ASSERT_NE(e, nullptr);
  Endpoint other(4096);
  auto again = p.client.engine().connect(client_tuple(), other.engine_rings(), {}, 0);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::invalid_argument);
  StreamRings bad{formats::ByteRingConsumer(), formats::ByteRingProducer()};
  auto invalid = p.client.engine().connect(client_tuple(40001), bad, {}, 0);
  ASSERT_FALSE(invalid.ok());
  EXPECT_FALSE(p.server.engine().listen(0, 0, 1, {}).ok());
  ASSERT_TRUE(p.server.engine().listen(0, kPort, 1, {}).ok());
  EXPECT_FALSE(p.server.engine().listen(0, kPort, 1, {}).ok());
  EXPECT_TRUE(p.server.engine().listen(kServer, kPort, 1, {}).ok());  // a specific address beside any
}

TEST(Api, CloseWithUnreadDataResets) {
  Pair p;
  Endpoint* e = p.open();
  ASSERT_NE(e, nullptr);
  p.server_end().send_total = 1000;
  e->reading = false;
  p.idle(kSecond);
  p.client.engine().close(e->handle, p.network.now());
  EXPECT_TRUE(e->released);
  p.network.run([&] { return p.server_end().released; }, p.network.now() + kSecond);
  EXPECT_TRUE(p.server_end().failed);
  EXPECT_EQ(p.server_end().error, ECONNRESET);
}

// --- private memory follows the connections in use ------------------------------------------

// Two hosts sized like a replica (16,384 slots) with small rings.
struct WidePair : Pair {
  static EngineSettings wide_settings() {
    EngineSettings settings = test_settings();
    settings.max_connections = 16384;
    return settings;
  }
  WidePair() : Pair(nullptr, wide_settings(), LinkConfig{}, 4096, 4096) {}
  // Pair::open, nullptr unless both ends are established.
  Endpoint* open(std::uint16_t port) {
    Endpoint* e = Pair::open(port);
    return e != nullptr && e->established ? e : nullptr;
  }
};

TEST(Memory, AnEngineHoldsOnlyTheChunksOfConnectionsItUsed) {
  WidePair p;
  EXPECT_EQ(connection_chunks(p.client.engine()), 0u);
  EXPECT_EQ(connection_chunks(p.server.engine()), 0u);
  for (std::uint16_t port = 40000; port < 40003; ++port) ASSERT_NE(p.open(port), nullptr);
  EXPECT_EQ(connection_chunks(p.client.engine()), 1u);
  EXPECT_EQ(connection_chunks(p.server.engine()), 1u);
  // A slot freed is handed out again before another chunk is taken.
  Endpoint& first = *p.client.endpoints()[0];
  p.client.engine().abort(first.handle, p.network.now());
  p.network.run([] { return false; }, p.network.now() + kSecond);
  ASSERT_NE(p.open(40003), nullptr);
  EXPECT_EQ(p.client.engine().connection_count(), 3u);
  EXPECT_EQ(connection_chunks(p.client.engine()), 1u);
  // The 257th connection in use needs a second chunk, and no more.
  for (std::uint16_t port = 40004; p.client.engine().connection_count() < 257; ++port) {
    ASSERT_NE(p.open(port), nullptr) << port;
  }
  EXPECT_EQ(connection_chunks(p.client.engine()), 2u);
}

TEST(Memory, ARestartResumesConnectionsInAHighChunkAndAllocatesOnlyThatChunk) {
  WidePair p;
  for (std::uint16_t port = 40000; p.client.engine().connection_count() < 258; ++port) {
    ASSERT_NE(p.open(port), nullptr) << port;
  }
  // Only the connections in the second chunk (slots 256 and 257) stay.
  std::vector<Endpoint*> kept;
  for (auto& e : p.client.endpoints()) {
    if (e->handle.index >= 256) {
      kept.push_back(e.get());
    } else {
      p.client.engine().abort(e->handle, p.network.now());
    }
  }
  ASSERT_EQ(kept.size(), 2u);
  p.network.run([] { return false; }, p.network.now() + kSecond);
  ASSERT_EQ(p.client.engine().connection_count(), 2u);
  p.client.restart(p.network.now(), RestorePolicy::resume);
  EXPECT_EQ(p.client.counter("restored"), 2u);
  EXPECT_EQ(connection_chunks(p.client.engine()), 1u);
  for (Endpoint* e : kept) {
    const auto info = p.client.engine().info(e->handle);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->state, TcpState::established);
    e->send_total = 20'000;
  }
  // The restored connections move bytes, and a new one takes a free slot of the chunk there is
  // before another chunk is allocated.
  ASSERT_TRUE(p.network.run([&] {
    for (const auto& end : p.server.endpoints()) {
      if (end->received != 0 && end->received < 20'000) return false;
    }
    std::uint64_t total = 0;
    for (const auto& end : p.server.endpoints()) total += end->received;
    return total == 40'000;
  }, p.network.now() + 10 * kSecond));
  Endpoint* fresh = p.open(50000);
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(fresh->handle.index, 258u);
  EXPECT_EQ(connection_chunks(p.client.engine()), 1u);
}

}  // namespace
}  // namespace flotilla::tcp::sim
