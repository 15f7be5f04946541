#include "apps/tcp_common/tcp_component.hpp"

#include <cstdio>

namespace flotilla::apps {

std::vector<std::string> split_channels(std::string_view text) {
  std::vector<std::string> names;
  while (true) {
    const std::size_t comma = text.find(',');
    const std::string_view name = text.substr(0, comma);
    if (name.empty()) return {};
    names.emplace_back(name);
    if (comma == std::string_view::npos) return names;
    text.remove_prefix(comma + 1);
  }
}

std::optional<TcpComponent> attach_tcp_component(const char* program, const std::string& channels_text,
                                                 int* exit_code, const std::string& name_channel) {
  const std::vector<std::string> channels = split_channels(channels_text);
  if (channels.empty()) {
    std::fprintf(stderr, "%s: --channels must be names separated by commas, got '%s'\n", program,
                 channels_text.c_str());
    *exit_code = 2;
    return std::nullopt;
  }
  auto host = ComponentHost::attach(WaitPolicy::shared_core());
  if (!host) {
    std::fprintf(stderr, "%s: %s\n", program, host.error().message().c_str());
    *exit_code = 1;
    return std::nullopt;
  }
  auto sockets = sockets::TcpSockets::attach(*host.value(), channels, name_channel);
  if (!sockets) {
    std::fprintf(stderr, "%s: cannot use the channels '%s'%s%s: %s\n", program, channels_text.c_str(),
                 name_channel.empty() ? "" : " and the name channel ", name_channel.c_str(),
                 sockets.error().message().c_str());
    *exit_code = 2;
    return std::nullopt;
  }
  return TcpComponent{std::move(host.value()), std::move(sockets.value())};
}

}  // namespace flotilla::apps
