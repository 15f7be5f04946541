// flotilla-perf: a bulk TCP sender or receiver on Flotilla's native socket API, run as a component
// of the stack (it needs a channel to each TCP replica). It prints the goodput every second and, at
// the end, one JSON line (also to --report). The bytes follow a fixed pattern (see
// apps/tcp_perf/perf_streams.hpp), so a receiver anywhere can check them; --verify checks every
// byte here and adds each stream's SHA-256 to the report.
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "apps/tcp_common/tcp_component.hpp"
#include "apps/tcp_perf/perf_streams.hpp"
#include "components/wire/address.hpp"
#include "dataplane/clock.hpp"

namespace {

using namespace flotilla;

// After the last byte is queued, how long to wait for the peer's acknowledgements before closing.
constexpr double kLingerSeconds = 10;

void write_report(const std::string& path, const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (path.empty()) return;
  const std::string temporary = path + ".tmp";
  FILE* file = std::fopen(temporary.c_str(), "w");
  if (file == nullptr) {
    std::fprintf(stderr, "flotilla-perf: cannot write %s\n", temporary.c_str());
    return;
  }
  std::fprintf(file, "%s\n", line.c_str());
  std::fclose(file);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::fprintf(stderr, "flotilla-perf: cannot rename %s to %s\n", temporary.c_str(), path.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-perf: bulk TCP sender or receiver on the Flotilla stack.\n"
               "Runs as a component under 'flotilla up', with a channel to each TCP replica."};
  std::string role;
  std::string peer_text;
  std::uint16_t port = 0;
  std::uint64_t bytes = 0;
  double seconds = 10;
  std::size_t streams = 1;
  std::string channels_text = "tcp0-perf,tcp1-perf";
  std::string name_channel;
  std::string report_path;
  bool verify = false;
  bool no_delay = false;
  double connect_retry = 0;
  bool exit_when_done = false;
  app.add_option("--role", role, "send (connect and send) or receive (listen and read)")
      ->required()
      ->check(CLI::IsMember({"send", "receive"}));
  app.add_option("--peer", peer_text, "send: the receiver, ADDRESS:PORT (e.g. 10.77.0.2:5001)");
  app.add_option("--port", port, "receive: the port to listen on (1-65535)")->check(CLI::Range(1, 65535));
  app.add_option("--bytes", bytes, "send: bytes per stream; 0 sends until --seconds have passed")
      ->capture_default_str();
  auto* seconds_option =
      app.add_option("--seconds", seconds,
                     "send: how long to send when --bytes is 0; receive: give up after this long "
                     "(default: wait until every stream has ended)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
  app.add_option("--streams", streams, "parallel connections (send) or connections to wait for (receive)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--channels", channels_text, "comma-separated channels to the TCP replicas")->capture_default_str();
  app.add_option("--name-channel", name_channel,
                 "send: a channel to a name server; each connection goes to the replica a lookup of /net/tcp "
                 "names (round robin without it)");
  app.add_option("--report", report_path, "write the final JSON line to this file too");
  app.add_flag("--verify", verify, "receive: check every byte against the pattern; both: report each stream's SHA-256");
  app.add_flag("--nodelay", no_delay, "send: TCP_NODELAY on every connection");
  app.add_option("--connect-retry", connect_retry,
                 "send: keep trying a refused connection for this many seconds (a receiver still starting)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--exit-when-done", exit_when_done,
               "exit after the report (by default it stays idle: the supervisor restarts a component that exits)");
  CLI11_PARSE(app, argc, argv);

  wire::Ipv4Endpoint peer{};
  if (role == "send") {
    const auto parsed = wire::parse_endpoint(peer_text);
    if (!parsed) {
      std::fprintf(stderr, "flotilla-perf: --role send needs --peer ADDRESS:PORT (port 1-65535), got '%s'\n",
                   peer_text.c_str());
      return 2;
    }
    peer = *parsed;
    if (bytes == 0 && seconds <= 0) {
      std::fprintf(stderr, "flotilla-perf: give --bytes or a --seconds above 0\n");
      return 2;
    }
  } else if (port == 0) {
    std::fprintf(stderr, "flotilla-perf: --role receive needs --port (1-65535)\n");
    return 2;
  }
  const double receive_deadline = seconds_option->count() > 0 ? seconds : 0;
  int exit_code = 0;
  auto component = apps::attach_tcp_component("flotilla-perf", channels_text, &exit_code, name_channel);
  if (!component) return exit_code;
  ComponentHost& host = *component->host;
  sockets::TcpSockets& sockets = *component->sockets;

  std::optional<apps::PerfSender> sender;
  std::optional<apps::PerfReceiver> receiver;
  if (role == "send") {
    sender.emplace(sockets, peer.address, peer.port, streams, bytes, verify,
                   sockets::SocketOptions{.no_delay = no_delay});
    sender->retry_refused_until(monotonic_ns() + static_cast<std::uint64_t>(connect_retry * 1e9));
  } else {
    receiver.emplace(sockets, port, streams, verify);
  }
  const Status started = sender ? sender->start() : receiver->start();
  if (!started) {
    std::fprintf(stderr, "flotilla-perf: %s\n", started.error().message().c_str());
    return 1;
  }

  const std::uint64_t start_ns = monotonic_ns();
  auto elapsed = [&] { return static_cast<double>(monotonic_ns() - start_ns) / 1e9; };
  double stopped_at = 0;          // sender: when the last byte was queued
  std::uint64_t first_byte_ns = 0;  // receiver: when the first byte arrived
  bool over = false;
  auto finish = [&](bool complete) {
    if (over) return;
    over = true;
    if (sender) sender->close(); else receiver->close();
    // The receiver's time starts with the first byte, not with the wait for the sender.
    const double active = first_byte_ns == 0 ? 0 : static_cast<double>(monotonic_ns() - first_byte_ns) / 1e9;
    const apps::PerfReport report = sender ? sender->report(elapsed()) : receiver->report(active);
    write_report(report_path, apps::report_json(report));
    if (!complete || report.failed_streams != 0 || report.mismatches != 0) exit_code = 1;
    if (exit_when_done) {
      host.loop().stop();
    } else {
      std::fprintf(stderr, "flotilla-perf: done (exit status would be %d); idle until the stack stops\n", exit_code);
    }
  };
  auto pump = [&]() -> bool {
    if (over) return false;
    const bool progress = sender ? sender->pump() : receiver->pump();
    if (receiver && first_byte_ns == 0 && receiver->bytes() > 0) first_byte_ns = monotonic_ns();
    if (sender) {
      if (bytes == 0 && seconds > 0 && elapsed() >= seconds) sender->stop();
      if (sender->finished()) finish(true);
    } else {
      if (const int error = receiver->listen_error(); error != 0) {
        std::fprintf(stderr, "flotilla-perf: cannot listen on port %u: %s\n", port, std::strerror(error));
        finish(false);
      } else if (receiver->finished()) {
        finish(true);
      }
    }
    return progress;
  };
  sockets.on_ready([&] { (void)pump(); });
  if (auto added = host.loop().add_poller(pump); !added) {
    std::fprintf(stderr, "flotilla-perf: %s\n", added.error().message().c_str());
    return 1;
  }

  std::uint64_t last_bytes = 0;
  double last_seconds = 0;
  Timer progress([&](Timer& self) {
    if (over) return;
    const double now = elapsed();
    const std::uint64_t total = sender ? sender->bytes() : receiver->bytes();
    std::printf("%s\n", apps::progress_line(now, apps::gbps(total - last_bytes, now - last_seconds)).c_str());
    std::fflush(stdout);
    last_bytes = total;
    last_seconds = now;
    if (sender && stopped_at == 0 && (bytes == 0 ? now >= seconds : total >= bytes * streams)) stopped_at = now;
    if (sender && stopped_at > 0 && now - stopped_at > kLingerSeconds) {
      std::fprintf(stderr, "flotilla-perf: not every byte was acknowledged %.0f s after the last was sent\n",
                   kLingerSeconds);
      finish(false);
      return;
    }
    if (receiver && receive_deadline > 0 && now >= receive_deadline) {
      std::fprintf(stderr, "flotilla-perf: %.1f s passed before every stream ended\n", receive_deadline);
      finish(false);
      return;
    }
    host.loop().timers().arm(self, host.loop().now_ms() + 1000);
  });
  host.loop().timers().arm(progress, host.loop().now_ms() + 1000);
  host.run();
  return exit_code;
}
