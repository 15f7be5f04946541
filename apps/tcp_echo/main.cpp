// flotilla-tcp-echo: a TCP echo server on Flotilla's native socket API, run as a component of the
// stack (it needs a channel to each TCP replica). It listens on --port on every replica and sends
// every byte back on the connection it came from, many connections at once.
#include <cstdio>
#include <cstring>
#include <string>

#include <CLI/CLI.hpp>

#include "apps/tcp_common/tcp_component.hpp"
#include "apps/tcp_echo/echo_server.hpp"

int main(int argc, char** argv) {
  using namespace flotilla;
  CLI::App app{"flotilla-tcp-echo: TCP echo server on the Flotilla stack.\n"
               "Runs as a component under 'flotilla up', with a channel to each TCP replica."};
  std::uint16_t port = 7;
  std::uint16_t backlog = 128;
  std::string channels_text = "tcp0-echo,tcp1-echo";
  app.add_option("--port", port, "the port to listen on (1-65535)")->capture_default_str()->check(CLI::Range(1, 65535));
  app.add_option("--backlog", backlog, "connections each replica may hold for accept (1-65535)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--channels", channels_text, "comma-separated channels to the TCP replicas")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  int exit_code = 0;
  auto component = apps::attach_tcp_component("flotilla-tcp-echo", channels_text, &exit_code);
  if (!component) return exit_code;
  ComponentHost& host = *component->host;
  sockets::TcpSockets& sockets = *component->sockets;
  apps::EchoServer server(sockets, port, backlog);
  if (auto started = server.start(); !started) {
    std::fprintf(stderr, "flotilla-tcp-echo: %s\n", started.error().message().c_str());
    return 1;
  }

  bool announced = false;
  auto pump = [&]() -> bool {
    const bool progress = server.pump();
    if (const int error = server.listen_error(); error != 0 && exit_code == 0) {
      std::fprintf(stderr, "flotilla-tcp-echo: cannot listen on port %u: %s\n", port, std::strerror(error));
      exit_code = 1;
      host.loop().stop();
    } else if (!announced && server.listening()) {
      announced = true;
      std::fprintf(stderr, "flotilla-tcp-echo: serving port %u\n", port);
    }
    return progress;
  };
  sockets.on_ready([&] { (void)pump(); });
  if (auto added = host.loop().add_poller(pump); !added) {
    std::fprintf(stderr, "flotilla-tcp-echo: %s\n", added.error().message().c_str());
    return 1;
  }
  host.run();
  return exit_code;
}
