#include "recovery/config.hpp"

#include <bit>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "recovery/control_block.hpp"

namespace flotilla::recovery {
namespace {

// Thrown inside the parser only, and turned into a ConfigError at its edge.
struct Invalid {
  std::string message;
  std::uint32_t line;
};

std::uint32_t line_of(const toml::node& node) { return node.source().begin.line; }

[[noreturn]] void fail(const toml::node& node, std::string message) {
  throw Invalid{std::move(message), line_of(node)};
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() >= kNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

void reject_unknown_keys(const toml::table& table, std::initializer_list<std::string_view> known,
                         std::string_view where) {
  for (const auto& [key, value] : table) {
    bool found = false;
    for (auto name : known) found |= key.str() == name;
    if (!found) fail(value, "unknown key '" + std::string(key.str()) + "' in " + std::string(where));
  }
}

template <class T>
T integer(const toml::table& table, std::string_view key, T fallback, std::int64_t low,
          std::int64_t high) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return fallback;
  const auto value = node->value<std::int64_t>();
  if (!value || !node->is_integer()) fail(*node, "'" + std::string(key) + "' must be an integer");
  if (*value < low || *value > high) {
    fail(*node, "'" + std::string(key) + "' must be between " + std::to_string(low) + " and " +
                    std::to_string(high));
  }
  return static_cast<T>(*value);
}

std::string text(const toml::table& table, std::string_view key, const toml::node& owner) {
  const toml::node* node = table.get(key);
  if (node == nullptr) fail(owner, "missing '" + std::string(key) + "'");
  if (!node->is_string()) fail(*node, "'" + std::string(key) + "' must be a string");
  return std::string(*node->value<std::string_view>());
}

// The table's 'name': valid, and not used before by another of the same kind.
std::string unique_name(const toml::table& table, const toml::node& owner, std::set<std::string>& taken,
                        const std::string& kind) {
  std::string name = text(table, "name", owner);
  if (!valid_name(name)) fail(*table.get("name"), kind + " name must be 1-31 characters of [A-Za-z0-9_.-]");
  if (!taken.insert(name).second) fail(*table.get("name"), kind + " '" + name + "' is declared twice");
  return name;
}

int component_index(const SupervisorConfig& config, const std::string& name) {
  for (std::size_t i = 0; i < config.components.size(); ++i) {
    if (config.components[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

const toml::array* array_of_tables(const toml::table& root, std::string_view key) {
  const toml::node* node = root.get(key);
  if (node == nullptr) return nullptr;
  const toml::array* array = node->as_array();
  if (array == nullptr || !array->is_array_of_tables()) {
    fail(*node, "'" + std::string(key) + "' must be an array of tables ([[" + std::string(key) + "]])");
  }
  return array;
}

void read_supervisor(const toml::table& root, SupervisorConfig& config) {
  const toml::node* node = root.get("supervisor");
  if (node == nullptr) return;
  const toml::table* table = node->as_table();
  if (table == nullptr) fail(*node, "[supervisor] must be a table");
  reject_unknown_keys(*table,
                      {"heartbeat_timeout_ms", "startup_grace_ms", "crash_limit",
                       "crash_window_ms", "max_backoff_ms", "pool_buffers", "buffer_size"},
                      "[supervisor]");
  config.heartbeat_timeout = std::chrono::milliseconds(
      integer<std::int64_t>(*table, "heartbeat_timeout_ms", config.heartbeat_timeout.count(), 5, 60'000));
  config.startup_grace = std::chrono::milliseconds(
      integer<std::int64_t>(*table, "startup_grace_ms", config.startup_grace.count(), 10, 600'000));
  config.restart.crash_limit =
      integer<std::uint32_t>(*table, "crash_limit", config.restart.crash_limit, 1, 1'000'000);
  config.restart.window = std::chrono::milliseconds(
      integer<std::int64_t>(*table, "crash_window_ms", config.restart.window.count(), 1, 86'400'000));
  config.restart.max_backoff = std::chrono::milliseconds(
      integer<std::int64_t>(*table, "max_backoff_ms", config.restart.max_backoff.count(), 0, 60'000));
  config.pool_buffers = integer<std::uint32_t>(*table, "pool_buffers", config.pool_buffers, 1, 1u << 20);
  config.buffer_size = integer<std::uint32_t>(*table, "buffer_size", config.buffer_size, 256, 4096);
  if (!std::has_single_bit(config.buffer_size)) {
    fail(*table->get("buffer_size"), "'buffer_size' must be a power of two");
  }
}

void read_components(const toml::table& root, SupervisorConfig& config) {
  const toml::array* array = array_of_tables(root, "component");
  if (array == nullptr) return;
  std::set<std::string> names;
  for (const toml::node& node : *array) {
    const toml::table& table = *node.as_table();
    reject_unknown_keys(table, {"name", "binary", "args", "core", "state_bytes"}, "[[component]]");
    ComponentConfig component;
    component.name = unique_name(table, node, names, "component");
    component.binary = text(table, "binary", node);
    if (component.binary.empty()) fail(*table.get("binary"), "'binary' is empty");
    if (const toml::node* args = table.get("args")) {
      const toml::array* list = args->as_array();
      if (list == nullptr) fail(*args, "'args' must be an array of strings");
      for (const toml::node& arg : *list) {
        if (!arg.is_string()) fail(arg, "'args' must be an array of strings");
        component.args.emplace_back(*arg.value<std::string_view>());
      }
    }
    component.core = integer<int>(table, "core", -1, -1, 1023);
    component.state_bytes = integer<std::uint32_t>(table, "state_bytes", 4096, 64, 1u << 30);
    config.components.push_back(std::move(component));
  }
  if (config.components.size() >= kSupervisorId) {  // the supervisor's own id is the last
    fail(*array, "at most " + std::to_string(kSupervisorId - 1) + " components");
  }
}

void read_channels(const toml::table& root, SupervisorConfig& config) {
  const toml::array* array = array_of_tables(root, "channel");
  if (array == nullptr) return;
  std::set<std::string> names;
  std::vector<std::uint32_t> per_component(config.components.size(), 0);
  for (const toml::node& node : *array) {
    const toml::table& table = *node.as_table();
    reject_unknown_keys(table, {"name", "a", "b", "capacity"}, "[[channel]]");
    ChannelConfig channel;
    channel.name = unique_name(table, node, names, "channel");
    channel.a = text(table, "a", node);
    channel.b = text(table, "b", node);
    const int a = component_index(config, channel.a);
    const int b = component_index(config, channel.b);
    if (a < 0) fail(*table.get("a"), "no component named '" + channel.a + "'");
    if (b < 0) fail(*table.get("b"), "no component named '" + channel.b + "'");
    if (a == b) fail(node, "a channel joins two different components");
    channel.capacity = integer<std::uint32_t>(table, "capacity", 1024, 2, kMaxRingCapacity);
    if (!std::has_single_bit(channel.capacity)) {
      fail(*table.get("capacity"), "'capacity' must be a power of two");
    }
    // One grant stays free for the supervisor's own link to a name server.
    for (int end : {a, b}) {
      if (++per_component[static_cast<std::size_t>(end)] > kMaxChannelsPerComponent - 1) {
        fail(node, "component '" + config.components[static_cast<std::size_t>(end)].name +
                       "' has more than " + std::to_string(kMaxChannelsPerComponent - 1) + " channels");
      }
    }
    config.channels.push_back(std::move(channel));
  }
}

std::vector<std::string> component_list(const toml::table& table, std::string_view key,
                                        const SupervisorConfig& config) {
  std::vector<std::string> names;
  const toml::node* node = table.get(key);
  if (node == nullptr) return names;
  const toml::array* list = node->as_array();
  if (list == nullptr) fail(*node, "'" + std::string(key) + "' must be an array of component names");
  for (const toml::node& item : *list) {
    if (!item.is_string()) fail(item, "'" + std::string(key) + "' must be an array of component names");
    std::string name(*item.value<std::string_view>());
    if (component_index(config, name) < 0) fail(item, "no component named '" + name + "'");
    names.push_back(std::move(name));
  }
  return names;
}

void read_regions(const toml::table& root, SupervisorConfig& config) {
  const toml::array* array = array_of_tables(root, "region");
  if (array == nullptr) return;
  std::set<std::string> names;
  std::vector<std::uint32_t> per_component(config.components.size(), 0);
  for (const toml::node& node : *array) {
    const toml::table& table = *node.as_table();
    reject_unknown_keys(table, {"name", "bytes", "writers", "readers"}, "[[region]]");
    RegionConfig region;
    region.name = unique_name(table, node, names, "region");
    if (table.get("bytes") == nullptr) fail(node, "missing 'bytes'");
    region.bytes = integer<std::uint64_t>(table, "bytes", 0, 1, std::int64_t{1} << 32);
    region.writers = component_list(table, "writers", config);
    region.readers = component_list(table, "readers", config);
    std::set<std::string> users;
    for (const auto* list : {&region.writers, &region.readers}) {
      for (const auto& name : *list) {
        if (!users.insert(name).second) fail(node, "component '" + name + "' is listed twice");
        if (++per_component[static_cast<std::size_t>(component_index(config, name))] >
            kMaxRegionsPerComponent) {
          fail(node, "component '" + name + "' has more than " +
                         std::to_string(kMaxRegionsPerComponent) + " regions");
        }
      }
    }
    if (users.empty()) fail(node, "region '" + region.name + "' has no writers or readers");
    config.regions.push_back(std::move(region));
  }
}

}  // namespace

ConfigOutcome parse_config(std::string_view text, std::string_view source_name) {
  const std::string source(source_name);
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& error) {
    return ConfigError{source + ":" + std::to_string(error.source().begin.line) + ": " +
                       std::string(error.description())};
  }
  SupervisorConfig config;
  try {
    reject_unknown_keys(root, {"supervisor", "component", "channel", "region"}, "the top level");
    read_supervisor(root, config);
    read_components(root, config);
    read_channels(root, config);
    read_regions(root, config);
  } catch (const Invalid& invalid) {
    return ConfigError{source + ":" + std::to_string(invalid.line) + ": " + invalid.message};
  }
  if (config.components.empty()) return ConfigError{source + ": no [[component]] declared"};
  return config;
}

ConfigOutcome load_config_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) return ConfigError{path + ": cannot open"};
  std::ostringstream contents;
  contents << file.rdbuf();
  return parse_config(contents.str(), path);
}

}  // namespace flotilla::recovery
