// flotilla-udp-echo: a UDP echo server or client on Flotilla's native socket API, run as a
// component of the stack (it needs a channel to the UDP server).
//   server: answers every datagram on --port with the same bytes.
//   client: sends --count datagrams to --peer, one at a time, with sizes cycling through
//           --min-size..--max-size and contents derived from the sequence number; checks each echo
//           byte for byte, resends after a timeout, and writes a one-line report to --report.
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "components/wire/address.hpp"
#include "dataplane/clock.hpp"
#include "dataplane/hash.hpp"
#include "dataplane/component_host.hpp"
#include "sockets/udp_sockets.hpp"

namespace {

using namespace flotilla;

void fill_pattern(std::uint64_t sequence, std::span<std::byte> out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(mix64(sequence * 65537 + i) & 0xff);
  }
}

struct ClientState {
  std::uint64_t sent = 0;
  std::uint64_t verified = 0;
  std::uint64_t mismatched = 0;
  std::uint64_t resends = 0;
  std::uint64_t stale = 0;
  std::uint64_t started_ns = 0;
  std::uint64_t last_send_ms = 0;
  bool done = false;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-udp-echo: UDP echo server or checking client on the Flotilla stack"};
  std::string role = "server";
  std::string channel = "udp-echo";
  std::uint16_t port = 7;
  std::string peer_text;
  std::uint64_t count = 10000;
  std::size_t min_size = 1;
  std::size_t max_size = 1472;
  std::string report_path;
  app.add_option("--role", role, "server or client")->check(CLI::IsMember({"server", "client"}))
      ->capture_default_str();
  app.add_option("--channel", channel, "Channel to the UDP server")->capture_default_str();
  app.add_option("--port", port, "Server: the port to answer on")->capture_default_str();
  app.add_option("--peer", peer_text, "Client: ADDRESS:PORT of the echo server");
  app.add_option("--count", count, "Client: datagrams to exchange")->capture_default_str();
  app.add_option("--min-size", min_size, "Client: smallest payload")->capture_default_str();
  app.add_option("--max-size", max_size, "Client: largest payload")->capture_default_str();
  app.add_option("--report", report_path, "Client: write the result line here");
  CLI11_PARSE(app, argc, argv);

  std::uint32_t peer_address = 0;
  std::uint16_t peer_port = 0;
  if (role == "client") {
    const auto peer = wire::parse_endpoint(peer_text);
    if (!peer) {
      std::fprintf(stderr, "flotilla-udp-echo: --peer must be ADDRESS:PORT (port 1-65535), got '%s'\n",
                   peer_text.c_str());
      return 2;
    }
    peer_address = peer->address;
    peer_port = peer->port;
    if (min_size == 0 || min_size > max_size || max_size > 1472) {
      std::fprintf(stderr, "flotilla-udp-echo: need 1 <= --min-size <= --max-size <= 1472\n");
      return 2;
    }
  }

  auto attached = ComponentHost::attach(WaitPolicy::shared_core());
  if (!attached) {
    std::fprintf(stderr, "flotilla-udp-echo: %s\n", attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  auto sockets_result = sockets::UdpSockets::attach(host, channel);
  if (!sockets_result) {
    std::fprintf(stderr, "flotilla-udp-echo: no channel '%s' to the UDP server\n", channel.c_str());
    return 2;
  }
  sockets::UdpSockets& sockets = *sockets_result.value();
  std::uint32_t socket = 0;
  bool bound = false;

  if (role == "server") {
    sockets.on_status([&](std::uint32_t, int error, std::uint16_t local_port) {
      bound = error == 0;
      std::fprintf(stderr, "flotilla-udp-echo: %s port %u\n", bound ? "serving" : "cannot bind", local_port);
    });
    sockets.on_datagram([&](const sockets::Datagram& datagram) {
      // A full channel loses this echo, as a kernel socket buffer would.
      (void)sockets.send_to(datagram.socket, datagram.remote_address, datagram.remote_port,
                            datagram.payload);
    });
    auto opened = sockets.open(port);
    if (!opened) return 1;
    socket = opened.value();
    host.run();
    return 0;
  }

  // The client: one datagram in flight at a time, so every echo is checked against exactly what
  // was sent (sizes down to 1 byte leave no room for a sequence number in the payload).
  ClientState state;
  std::vector<std::byte> expected(max_size);
  std::vector<std::byte> previous(max_size);
  std::size_t expected_size = 0;
  std::size_t previous_size = 0;
  auto size_of = [&](std::uint64_t sequence) {
    return min_size + static_cast<std::size_t>(sequence % (max_size - min_size + 1));
  };
  auto write_report = [&]() {
    const double seconds = static_cast<double>(monotonic_ns() - state.started_ns) / 1e9;
    const std::string line = "sent=" + std::to_string(state.sent) + " verified=" + std::to_string(state.verified) +
                             " mismatched=" + std::to_string(state.mismatched) +
                             " resends=" + std::to_string(state.resends) +
                             " stale=" + std::to_string(state.stale) + " seconds=" + std::to_string(seconds) +
                             " exposed=" + (sockets.exposed(socket) ? "1" : "0") +
                             " udp_dropped=" + std::to_string(sockets.dropped(socket)) + "\n";
    std::fputs(line.c_str(), stderr);
    if (report_path.empty()) return;
    const std::string temporary = report_path + ".tmp";
    if (FILE* file = std::fopen(temporary.c_str(), "w")) {
      std::fputs(line.c_str(), file);
      std::fclose(file);
      std::rename(temporary.c_str(), report_path.c_str());
    }
  };
  auto send_current = [&]() {
    if (sockets.send_to(socket, peer_address, peer_port, std::span(expected.data(), expected_size))) {
      state.last_send_ms = host.loop().now_ms();
    }
  };
  auto next = [&]() {
    if (state.sent == count) {
      state.done = true;
      write_report();
      return;
    }
    std::swap(previous, expected);
    previous_size = expected_size;
    expected_size = size_of(state.sent);
    fill_pattern(state.sent, std::span(expected.data(), expected_size));
    ++state.sent;
    send_current();
  };
  sockets.on_status([&](std::uint32_t, int error, std::uint16_t) {
    if (error != 0) {
      std::fprintf(stderr, "flotilla-udp-echo: cannot open a socket: error %d\n", error);
      return;
    }
    bound = true;
    state.started_ns = monotonic_ns();
    next();
  });
  sockets.on_datagram([&](const sockets::Datagram& datagram) {
    if (state.done) return;
    const auto matches = [&](const std::vector<std::byte>& want, std::size_t size) {
      return datagram.payload.size() == size &&
             std::equal(datagram.payload.begin(), datagram.payload.end(), want.begin());
    };
    if (matches(expected, expected_size)) {
      ++state.verified;
      next();
    } else if (matches(previous, previous_size)) {
      ++state.stale;  // the echo of a resent datagram, already counted
    } else {
      ++state.mismatched;
    }
  });
  Timer resend([&](Timer& self) {
    if (bound && !state.done && host.loop().now_ms() - state.last_send_ms >= 200) {
      ++state.resends;
      send_current();
    }
    host.loop().timers().arm(self, host.loop().now_ms() + 50);
  });
  host.loop().timers().arm(resend, host.loop().now_ms() + 50);
  auto opened = sockets.open(0);
  if (!opened) return 1;
  socket = opened.value();
  host.run();
  return 0;
}
