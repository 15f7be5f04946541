// What the TCP example programs do first: check the --channels list, become a component of the
// stack, and attach the native TCP socket API to the replicas behind those channels.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/component_host.hpp"
#include "sockets/tcp_sockets.hpp"

namespace flotilla::apps {

// "tcp0-perf,tcp1-perf" -> {"tcp0-perf", "tcp1-perf"}; empty when a name is empty.
std::vector<std::string> split_channels(std::string_view text);

struct TcpComponent {
  std::unique_ptr<ComponentHost> host;
  std::unique_ptr<sockets::TcpSockets> sockets;
};

// Nothing when it failed: it said why on stderr (prefixed with `program`) and set *exit_code to 2
// for bad input, 1 otherwise. With `name_channel` (a channel to a name server), new connections
// are placed by the name fleet (TcpSockets::attach).
std::optional<TcpComponent> attach_tcp_component(const char* program, const std::string& channels_text,
                                                 int* exit_code, const std::string& name_channel = "");

}  // namespace flotilla::apps
