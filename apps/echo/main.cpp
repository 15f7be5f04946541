// flotilla-echo: the three roles of the echo chain (client, middle, server) the
// supervisor tests run, plus `crash-at-start` for the crash-loop test. Started by the supervisor
// only; it takes everything else from the descriptors the supervisor hands it.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "dataplane/clock.hpp"
#include "dataplane/component_host.hpp"
#include "dataplane/crash.hpp"
#include "apps/echo/echo_protocol.hpp"

namespace flotilla::recovery::echo {
namespace {

template <class State>
State* state_in(ComponentHost& host) {
  if (host.state().size() < sizeof(State)) return nullptr;
  return reinterpret_cast<State*>(host.state().data());
}

// `rate`: requests per second, 0 for as fast as the chain goes.
int run_client(ComponentHost& host, std::uint64_t rate) {
  ChannelEnd* link = host.channel("client-middle");
  auto* state = state_in<ClientState>(host);
  if (link == nullptr || state == nullptr) return 2;
  bool answered[kWindow] = {};
  std::uint64_t lowest = 0;  // lowest unanswered sequence
  std::uint64_t last_progress = 0;
  const std::uint64_t started_ns = monotonic_ns();

  const auto send_from = [&](std::uint64_t first) {
    Message burst[kWindow];
    std::size_t count = 0;
    for (std::uint64_t s = first; s < state->sent_next.load(); ++s) {
      if (!answered[s % kWindow]) burst[count++] = make(kRequest, s);
    }
    auto sent = host.send(*link, std::span<const Message>(burst, count));
    return sent ? sent.value() : 0;
  };
  const auto resend_outstanding = [&] {
    if (lowest < state->sent_next.load()) {
      state->resent.fetch_add(send_from(lowest));
    }
  };

  host.on_peer_restarted([&](ComponentId, std::uint64_t) { resend_outstanding(); });
  (void)host.loop().add_input(link->in, [&](std::span<const Message> replies) {
    for (const Message& reply : replies) {
      if (!intact(reply, kReply)) {
        state->rejected.fetch_add(1);
        continue;
      }
      const std::uint64_t sequence = reply.read<Body>().sequence;
      if (sequence < lowest || sequence >= state->sent_next.load() || answered[sequence % kWindow]) {
        state->duplicates.fetch_add(1);
        continue;
      }
      answered[sequence % kWindow] = true;
      state->answered.fetch_add(1);
      while (lowest < state->sent_next.load() && answered[lowest % kWindow]) {
        answered[lowest % kWindow] = false;
        ++lowest;
      }
    }
    host.served();
  });
  // New requests while the window has room and the test has not said stop.
  (void)host.loop().add_poller([&] {
    const std::uint64_t stop = state->stop_after.load();
    std::uint64_t next = state->sent_next.load();
    bool worked = false;
    std::uint64_t allowed = ~std::uint64_t{0};
    if (rate != 0) allowed = static_cast<std::uint64_t>((monotonic_ns() - started_ns) * 1e-9 * rate);
    while (next - lowest < kWindow && (stop == 0 || next < stop) && next < allowed) {
      const Message request = make(kRequest, next);
      auto sent = host.send(*link, std::span(&request, 1));
      if (!sent || sent.value() == 0) break;
      state->sent_next.store(++next);
      worked = true;
    }
    if (stop != 0 && lowest >= stop) state->done.store(1);
    return worked;
  });
  // Anything lost to a garbled message or a crash at the wrong moment is resent when nothing
  // has been answered for a while.
  Timer retry([&](Timer& self) {
    if (state->answered.load() == last_progress) resend_outstanding();
    last_progress = state->answered.load();
    host.loop().timers().arm(self, host.loop().now_ms() + 20);
  });
  host.loop().timers().arm(retry, host.loop().now_ms() + 20);
  host.run();
  return 0;
}

int run_middle(ComponentHost& host) {
  ChannelEnd* client = host.channel("client-middle");
  ChannelEnd* server = host.channel("middle-server");
  if (client == nullptr || server == nullptr) return 2;
  const auto forward = [&](ChannelEnd& to, std::span<const Message> messages) {
    auto sent = host.send(to, messages);
    const std::size_t done = sent ? sent.value() : 0;
    // The far end resends what is lost here, so a full ring drops rather than blocks.
    if (done < messages.size()) host.counters().add(Counter::drops, messages.size() - done);
    host.served();
  };
  (void)host.loop().add_input(client->in, [&](std::span<const Message> m) { forward(*server, m); });
  (void)host.loop().add_input(server->in, [&](std::span<const Message> m) { forward(*client, m); });
  host.run();
  return 0;
}

int run_server(ComponentHost& host) {
  ChannelEnd* link = host.channel("middle-server");
  auto* state = state_in<ServerState>(host);
  if (link == nullptr || state == nullptr) return 2;
  (void)host.loop().add_input(link->in, [&](std::span<const Message> requests) {
    Message replies[ComponentLoop::kBurst];
    std::size_t count = 0;
    for (const Message& request : requests) {
      if (!intact(request, kRequest)) {
        state->rejected.fetch_add(1);
        continue;
      }
      const auto body = request.read<Body>();
      const std::uint64_t next = state->applied_next.load();
      if (body.sequence > next) {
        state->out_of_order.fetch_add(1);
        continue;
      }
      if (body.sequence == next) {
        state->sum.fetch_add(body.value);
        state->applied_next.store(next + 1);
      } else {
        state->duplicates.fetch_add(1);
      }
      replies[count++] = make(kReply, body.sequence);
    }
    (void)host.send(*link, std::span<const Message>(replies, count));
    host.served();
  });
  host.run();
  return 0;
}

}  // namespace
}  // namespace flotilla::recovery::echo

int main(int argc, char** argv) {
  using namespace flotilla::recovery;
  CLI::App app{"flotilla-echo: one role of the echo chain (client -> middle -> server). Started by "
               "the supervisor, which hands it its channels and state store."};
  app.name("flotilla-echo");
  std::string role;
  std::uint64_t rate = 0;
  app.add_option("--role", role, "Which part of the chain to play")
      ->required()
      ->check(CLI::IsMember({"client", "middle", "server", "crash-at-start"}));
  app.add_option("--rate", rate, "Client: requests per second (0: as fast as the chain goes)");
  std::string report;
  unsigned report_times = 1;
  app.add_option("--report", report, "At start, put this text in the supervisor's event log (tests)");
  app.add_option("--report-times", report_times, "How many times to send --report")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (role == "crash-at-start") flotilla::crash_by_sigsegv();
  auto host = flotilla::ComponentHost::attach(flotilla::WaitPolicy::shared_core());
  if (!host) {
    std::fprintf(stderr, "echo %s: %s\n", role.c_str(), host.error().message().c_str());
    return 3;
  }
  for (unsigned i = 0; !report.empty() && i < report_times; ++i) {
    // The control ring holds 64 messages: wait for room rather than lose one.
    while (!(*host)->report(report)) ::usleep(1000);
  }
  if (role == "client") return echo::run_client(**host, rate);
  if (role == "middle") return echo::run_middle(**host);
  return echo::run_server(**host);
}
