// The TCP engine fed arbitrary segments against every connection state, over the deterministic
// simulation of its unit tests (components/tcp/tests/sim.hpp): a client and a server engine on a
// clean link, one connection between them. The input is a program: let the link and the timers
// run for a while (through SYN-SENT, SYN-RECEIVED, ESTABLISHED), shut down, close or abort either
// side (FIN-WAIT-1/2, CLOSING, CLOSE-WAIT, LAST-ACK, TIME-WAIT), open listeners, and inject segments
// with any flags, options and payload into either engine: their sequence and acknowledgment numbers
// are either anything or near what that side last sent and acknowledged, so they land in and
// around the window; the checksum is made valid unless the input says not to.
#include <algorithm>
#include <vector>

#include "components/tcp/tests/sim.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::tcp;
using namespace flotilla::tcp::sim;

constexpr std::uint32_t kClient = 0x0a000001;
constexpr std::uint32_t kServer = 0x0a000002;
constexpr std::uint16_t kPort = 80;
constexpr std::uint16_t kClientPort = 40000;

EngineSettings settings() {
  EngineSettings settings;
  settings.max_connections = 16;
  settings.max_listeners = 4;
  settings.secret[0] = 11;
  settings.secret[1] = 22;
  return settings;
}

// The newest segment `from` sent, as the numbers an injected one builds on.
struct Seen {
  std::uint32_t sequence = 0;
  std::uint32_t acknowledgment = 0;
};
Seen last_sent(const Host& from) {
  if (from.sent_log.empty()) return {};
  auto copy = from.sent_log.back();
  if (copy.size() < wire::kTcpHeaderBytes) return {};
  const auto segment = wire::TcpSegment::unchecked(copy);
  return {segment.sequence() + static_cast<std::uint32_t>(segment.sequence_length()), segment.acknowledgment()};
}

void inject(fuzz::FuzzInput& input, Host& to, Host& from, std::uint64_t now_ns) {
  const std::uint8_t shape = input.byte();
  const Seen seen = last_sent(from);
  const bool to_server = to.address() == kServer;
  wire::TcpHeader header;
  header.source_port = (shape & 1) ? input.take<std::uint16_t>() : (to_server ? kClientPort : kPort);
  header.destination_port = (shape & 1) ? input.take<std::uint16_t>() : (to_server ? kPort : kClientPort);
  const auto sequence_delta = input.take<std::int16_t>();
  const auto acknowledgment_delta = input.take<std::int16_t>();
  header.sequence = (shape & 2) ? input.take<std::uint32_t>() : seen.sequence + static_cast<std::uint32_t>(sequence_delta);
  const Seen other = last_sent(to);
  header.acknowledgment = (shape & 2) ? input.take<std::uint32_t>()
                                      : other.sequence + static_cast<std::uint32_t>(acknowledgment_delta);
  header.flags = input.byte();
  header.window = input.take<std::uint16_t>();
  header.urgent_pointer = (shape & 4) ? input.take<std::uint16_t>() : 0;
  const auto options = input.bytes(wire::kTcpMaxOptionBytes);
  header.options = options;
  const auto payload = input.bytes(1460);
  std::vector<std::byte> segment(wire::tcp_header_length(options.size()) + payload.size());
  std::copy(payload.begin(), payload.end(), segment.begin() + static_cast<std::ptrdiff_t>(segment.size() - payload.size()));
  const std::uint32_t source = (shape & 8) ? input.take<std::uint32_t>() : from.address();
  if (wire::emit_tcp(segment, header, source, to.address(), payload.size()) == 0) return;
  if (shape & 16) segment[16] ^= std::byte{0x5a};  // a bad checksum
  if (shape & 32) segment.resize(input.byte() % (segment.size() + 1));  // cut short
  to.engine().on_packet(source, to.address(), segment, now_ns);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::FuzzInput input(data, size);
  Network network(1, LinkConfig{});
  Host client(network, kClient, settings(), 0, 16 * 1024);
  Host server(network, kServer, settings(), 0, 16 * 1024);
  client.log_segments = server.log_segments = true;
  server.accept_auto_shutdown = false;
  server.accept_close_when_done = false;
  server.accept_send_total = input.take<std::uint16_t>();
  if (!server.engine().listen(0, kPort, 8, {})) fuzz::invariant_broken();
  Endpoint* endpoint = client.connect(kServer, kClientPort, kPort);
  if (endpoint != nullptr) {
    endpoint->auto_shutdown = false;
    endpoint->close_when_done = false;
    endpoint->send_total = input.take<std::uint16_t>();
  }
  int steps = 0;
  while (!input.empty() && ++steps < 256) {
    const std::uint8_t op = input.byte();
    const std::uint64_t now = network.now();
    switch (op % 10) {
      case 0:
      case 1:
        network.run([] { return false; }, now + (static_cast<std::uint64_t>(input.take<std::uint16_t>()) << (op / 10 % 20)));
        break;
      case 2:
        if (endpoint != nullptr && endpoint->has_handle) client.engine().shutdown_write(endpoint->handle, now);
        break;
      case 3:
        if (!server.endpoints().empty() && server.endpoints().back()->has_handle) {
          server.engine().shutdown_write(server.endpoints().back()->handle, now);
        }
        break;
      case 4:
        if (endpoint != nullptr && endpoint->has_handle && !endpoint->closed) {
          endpoint->closed = true;
          if (op & 0x80) {
            client.engine().abort(endpoint->handle, now);
          } else {
            client.engine().close(endpoint->handle, now);
          }
        }
        break;
      case 5:
        (void)server.engine().listen(0, input.take<std::uint16_t>(), input.byte(), {});
        break;
      case 6:
      case 7:
        inject(input, server, client, now);
        break;
      default:
        inject(input, client, server, now);
        break;
    }
    for (Host* host : {&client, &server}) {
      if (host->sent_log.size() > 64) host->sent_log.erase(host->sent_log.begin(), host->sent_log.end() - 64);
    }
  }
  // Whatever came in, the engines keep publishing before sending.
  fuzz::require(client.uncovered_segments == 0 && server.uncovered_segments == 0);
  return 0;
}
