// The supervisor's configuration: which components to start (binary, arguments, core), the
// channels between them, the buffer pool, the heartbeat limit and the restart policy. Read from
// TOML; every error names the line it is on.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace flotilla::recovery {

struct ComponentConfig {
  std::string name;
  std::string binary;  // a path, or a bare name looked up beside the supervisor's own binary
  std::vector<std::string> args;
  int core = -1;  // -1: let the kernel place it
  std::uint32_t state_bytes = 4096;  // the state-store region kept across restarts
};

struct ChannelConfig {
  std::string name;
  std::string a;  // component at side a
  std::string b;  // component at side b
  std::uint32_t capacity = 1024;
};

struct RegionConfig {
  std::string name;
  std::uint64_t bytes = 0;
  std::vector<std::string> writers;  // map it read-write
  std::vector<std::string> readers;  // map it read-only
};

struct RestartPolicy {
  std::uint32_t crash_limit = 5;                      // this many crashes ...
  std::chrono::milliseconds window{10'000};           // ... within this window: marked failed
  std::chrono::milliseconds max_backoff{500};         // restart delay doubles per recent crash
};

struct SupervisorConfig {
  std::chrono::milliseconds heartbeat_timeout{50};
  std::chrono::milliseconds startup_grace{2'000};     // before the first heartbeat is due
  RestartPolicy restart;
  std::uint32_t pool_buffers = 4096;
  std::uint32_t buffer_size = 2048;
  std::vector<ComponentConfig> components;
  std::vector<ChannelConfig> channels;
  std::vector<RegionConfig> regions;
};

struct ConfigError {
  std::string message;  // "<source>:<line>: what is wrong"
};

using ConfigOutcome = std::variant<SupervisorConfig, ConfigError>;

ConfigOutcome parse_config(std::string_view text, std::string_view source_name);
ConfigOutcome load_config_file(const std::string& path);

}  // namespace flotilla::recovery
