#include "recovery/config.hpp"

#include <algorithm>
#include <bit>
#include <optional>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "components/formats/fs_block_cache.hpp"
#include "components/formats/tcp_socket_page.hpp"
#include "dataplane/control_block.hpp"
#include "dataplane/idle_waiter.hpp"

namespace flotilla::recovery {
namespace {

// Thrown inside the parser only, and turned into a ConfigError at its edge.
struct Invalid {
  std::string message;
  std::uint32_t line;
  std::string origin;  // the text the node came from: the file, an override, or the seats' declarations
};

std::uint32_t line_of(const toml::node& node) { return node.source().begin.line; }

[[noreturn]] void fail(const toml::node& node, std::string message) {
  const auto& path = node.source().path;
  throw Invalid{std::move(message), line_of(node), path != nullptr ? *path : std::string()};
}

// A region is a sparse memfd: its size is address space (in the supervisor, which maps every seat's
// regions of every replica), and only what is written takes memory. 64 GiB fits 16,384 sockets of
// two 1 MiB rings, and 128 seats x 4 replicas of it stay within a quarter of the address space.
constexpr std::int64_t kMaxRegionBytes = std::int64_t{64} << 30;
// The least [files] cache_bytes allows.
constexpr std::int64_t kMinFileCacheBytes = std::int64_t{1} << 20;

// The source name of the declarations made from [limits] app_seats.
constexpr std::string_view kSeatsOrigin = "[limits] app_seats";

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
                       "crash_window_ms", "max_backoff_ms", "pool_buffers", "buffer_size", "sandbox"},
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
  if (const toml::node* sandbox = table->get("sandbox")) {
    if (!sandbox->is_boolean()) fail(*sandbox, "'sandbox' must be true or false");
    config.sandbox = *sandbox->value<bool>();
  }
}

void read_limits(const toml::table& root, SupervisorConfig& config) {
  const toml::node* node = root.get("limits");
  if (node == nullptr) return;
  const toml::table* table = node->as_table();
  if (table == nullptr) fail(*node, "[limits] must be a table");
  reject_unknown_keys(*table, {"app_seats", "tcp_sockets_per_seat", "tcp_ring_bytes", "seat_channel_capacity"},
                      "[limits]");
  Limits& limits = config.limits;
  limits.app_seats = integer<std::uint32_t>(*table, "app_seats", limits.app_seats, 0, kMaxAppSeats);
  limits.tcp_sockets_per_seat =
      integer<std::uint32_t>(*table, "tcp_sockets_per_seat", limits.tcp_sockets_per_seat, 1, 65536);
  limits.tcp_ring_bytes = integer<std::uint32_t>(*table, "tcp_ring_bytes", limits.tcp_ring_bytes, 4096, 1u << 30);
  if (!std::has_single_bit(limits.tcp_ring_bytes)) {
    fail(*table->get("tcp_ring_bytes"), "'tcp_ring_bytes' must be a power of two");
  }
  limits.seat_channel_capacity =
      integer<std::uint32_t>(*table, "seat_channel_capacity", limits.seat_channel_capacity, 2, kMaxRingCapacity);
  if (!std::has_single_bit(limits.seat_channel_capacity)) {
    fail(*table->get("seat_channel_capacity"), "'seat_channel_capacity' must be a power of two");
  }
  if (formats::TcpRegion::bytes_for(limits.tcp_sockets_per_seat, limits.tcp_ring_bytes) >
      static_cast<std::uint64_t>(kMaxRegionBytes)) {
    fail(table->get("tcp_sockets_per_seat") != nullptr ? *table->get("tcp_sockets_per_seat") : *node,
         "'tcp_sockets_per_seat' sockets of two 'tcp_ring_bytes' rings each need a region over 64 GiB");
  }
}

// The application seats' components, channels and regions, as TOML: an external component per
// seat with a channel and a socket region to every TCP replica, a channel to the UDP server with
// its exposed-socket region, and with a file fleet (a [[component]] "fs" with replicas) a channel
// from every file server.
std::string seat_declarations(const Limits& limits, bool file_servers) {
  const std::string capacity = std::to_string(limits.seat_channel_capacity);
  const std::string tcp_bytes =
      std::to_string(formats::TcpRegion::bytes_for(limits.tcp_sockets_per_seat, limits.tcp_ring_bytes));
  std::string text;
  for (std::uint32_t i = 0; i < limits.app_seats; ++i) {
    const std::string name = "app" + std::to_string(i);
    text += "[[component]]\nname = \"" + name + "\"\nexternal = true\n"
            "[[channel]]\nname = \"tcp${replica}-" + name + "\"\na = \"tcp\"\nb = \"" + name +
            "\"\ncapacity = " + capacity + "\n"
            "[[region]]\nname = \"tcp${replica}-" + name + "-tcp\"\nbytes = " + tcp_bytes +
            "\nwriters = [\"tcp\", \"" + name + "\"]\n"
            "[[channel]]\nname = \"udp-" + name + "\"\na = \"udp\"\nb = \"" + name + "\"\ncapacity = " + capacity +
            "\n[[region]]\nname = \"udp-" + name + "-sockets\"\nbytes = 16384\nwriters = [\"udp\"]\n"
            "readers = [\"" + name + "\"]\n";
    if (file_servers) {
      text += "[[channel]]\nname = \"fs${replica}-" + name + "\"\na = \"fs\"\nb = \"" + name + "\"\ncapacity = 256\n";
    }
  }
  return text;
}

// The TCP replicas' state store holds a slot entry per socket of every seat.
void check_tcp_state_bytes(const toml::table& tcp, const Limits& limits) {
  const auto state_bytes = tcp["state_bytes"].value<std::int64_t>();
  const std::uint64_t slots =
      std::uint64_t{limits.app_seats} * limits.tcp_sockets_per_seat * formats::kTcpSlotEntryBytes;
  if (state_bytes && *state_bytes > 0 && static_cast<std::uint64_t>(*state_bytes) < slots) {
    fail(*tcp.get("state_bytes"), "'state_bytes' of \"tcp\" must hold a " + std::to_string(formats::kTcpSlotEntryBytes) +
                                      " B slot for each of 'app_seats' x 'tcp_sockets_per_seat' sockets: at least " +
                                      std::to_string(slots) + " and the connection table");
  }
}

// Appends the seats' declarations to the configuration's own (read from `root` afterwards).
void declare_seats(toml::table& root, const SupervisorConfig& config) {
  if (config.limits.app_seats == 0) return;
  bool replicas = false;
  bool udp = false;
  bool file_servers = false;
  if (const toml::array* components = array_of_tables(root, "component")) {
    for (const toml::node& node : *components) {
      const toml::table& table = *node.as_table();
      const auto name = table["name"].value<std::string_view>();
      replicas |= name == "tcp" && table.contains("replicas");
      if (name == "tcp" && table.contains("state_bytes")) check_tcp_state_bytes(table, config.limits);
      udp |= name == "udp";
      file_servers |= name == "fs" && table.contains("replicas");
    }
  }
  if (!replicas || !udp) {
    fail(*(*root.get("limits")->as_table()).get("app_seats"),
         "'app_seats' needs the TCP replicas (a [[component]] \"tcp\" with 'replicas') and the UDP server (\"udp\")");
  }
  toml::table seats = toml::parse(seat_declarations(config.limits, file_servers), std::string(kSeatsOrigin));
  for (const char* kind : {"component", "channel", "region"}) {
    if (root.get(kind) == nullptr) root.insert(kind, toml::array{});
    toml::array& into = *root.get(kind)->as_array();
    for (toml::node& table : *seats.get(kind)->as_array()) into.push_back(std::move(*table.as_table()));
  }
  // Each seat maps the file fleet's shared buffer cache too.
  if (!file_servers) return;
  for (toml::node& node : *root.get("region")->as_array()) {
    toml::table& region = *node.as_table();
    if (region["name"].value<std::string_view>() != fs::kFileCacheRegion) continue;
    if (region.get("writers") == nullptr || !region.get("writers")->is_array()) region.insert_or_assign("writers", toml::array{});
    for (std::uint32_t i = 0; i < config.limits.app_seats; ++i) {
      region.get("writers")->as_array()->push_back("app" + std::to_string(i));
    }
  }
}

std::optional<std::string> placeholder_value(const SupervisorConfig& config, const ComponentConfig& component,
                                             std::string_view key);

// Replaces the `${...}` placeholders in a component's args.
void expand_args(const toml::table& table, const SupervisorConfig& config, ComponentConfig& component) {
  for (std::size_t a = 0; a < component.args.size(); ++a) {
    std::string& arg = component.args[a];
    const toml::node& where = *(*table.get("args")->as_array()).get(a);
    std::string expanded;
    std::size_t at = 0;
    while (true) {
      const std::size_t open = arg.find("${", at);
      if (open == std::string::npos) break;
      const std::size_t close = arg.find('}', open);
      if (close == std::string::npos) fail(where, "unterminated '${' in args");
      const std::string key = arg.substr(open + 2, close - open - 2);
      const auto value = placeholder_value(config, component, key);
      if (!value) fail(where, "unknown placeholder '${" + key + "}' in args");
      expanded += arg.substr(at, open - at) + *value;
      at = close + 1;
    }
    arg = expanded + arg.substr(at);
  }
}

void read_components(const toml::table& root, SupervisorConfig& config) {
  const toml::array* array = array_of_tables(root, "component");
  if (array == nullptr) return;
  std::set<std::string> names;
  for (const toml::node& node : *array) {
    const toml::table& table = *node.as_table();
    reject_unknown_keys(table, {"name", "binary", "args", "core", "state_bytes", "pool", "replicas", "external", "role"},
                        "[[component]]");
    ComponentConfig component;
    component.name = unique_name(table, node, names, "component");
    if (const toml::node* external = table.get("external")) {
      if (!external->is_boolean()) fail(*external, "'external' must be true or false");
      component.external = *external->value<bool>();
    }
    if (component.external) {
      for (const char* key : {"binary", "args", "core", "replicas", "role"}) {
        if (const toml::node* given = table.get(key)) {
          fail(*given, std::string("an external component is started with 'flotilla run', so '") + key +
                           "' means nothing for it");
        }
      }
    } else {
      component.binary = text(table, "binary", node);
      if (component.binary.empty()) fail(*table.get("binary"), "'binary' is empty");
    }
    if (const toml::node* role = table.get("role")) {
      const std::string given = text(table, "role", node);
      if (given != "name-server") fail(*role, "unknown role '" + given + "' (the one role is \"name-server\")");
      component.role = ComponentRole::name_server;
    }
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
    if (const toml::node* pool = table.get("pool")) {
      const std::string access = text(table, "pool", node);
      if (access != "read-write" && access != "read-only") {
        fail(*pool, "'pool' must be \"read-write\" or \"read-only\"");
      }
      component.pool_writable = access == "read-write";
    }
    const int replicas = table.get("replicas") == nullptr ? 0 : integer<int>(table, "replicas", 0, 1, 16);
    if (replicas == 0) {
      expand_args(table, config, component);
      config.components.push_back(std::move(component));
      continue;
    }
    for (int index = 0; index < replicas; ++index) {
      ComponentConfig copy = component;
      copy.group = component.name;
      copy.name = component.name + std::to_string(index);
      copy.replica_index = index;
      copy.replica_count = replicas;
      if (!names.insert(copy.name).second) fail(node, "replica name '" + copy.name + "' is already taken");
      expand_args(table, config, copy);
      config.components.push_back(std::move(copy));
    }
  }
  if (config.components.size() >= kSupervisorId) {  // the supervisor's own id is the last
    fail(*array, "at most " + std::to_string(kSupervisorId - 1) + " components");
  }
}

// [wait]: how components wait for work. `default` for every component, and a component's or a
// replicated group's name for that one or those; the component's own name wins over its group's.
void read_wait(const toml::table& root, SupervisorConfig& config) {
  const toml::node* node = root.get("wait");
  if (node == nullptr) return;
  const toml::table* table = node->as_table();
  if (table == nullptr) fail(*node, "[wait] must be a table");
  std::string choices;
  for (std::string_view name : WaitPolicy::kNames) choices += (choices.empty() ? "\"" : ", \"") + std::string(name) + "\"";
  const auto policy = [&](std::string_view key) -> std::optional<std::string> {
    const toml::node* value = table->get(key);
    if (value == nullptr) return std::nullopt;
    const auto name = value->value<std::string_view>();
    if (!value->is_string() || !WaitPolicy::named(*name)) {
      fail(*value, "[wait] " + std::string(key) + " must be one of " + choices +
                       (value->is_string() ? ", not \"" + std::string(*name) + "\"" : ""));
    }
    return std::string(*name);
  };
  for (const auto& [key, value] : *table) {
    if (key.str() == "default") continue;
    bool named = false;
    for (const ComponentConfig& component : config.components) {
      if (component.name != key.str() && component.group != key.str()) continue;
      if (component.external) fail(value, "[wait] " + std::string(key.str()) + ": a seat's program waits as it chooses");
      named = true;
    }
    if (!named) fail(value, "[wait] names no component or replica group '" + std::string(key.str()) + "'");
  }
  const std::optional<std::string> fallback = policy("default");
  for (ComponentConfig& component : config.components) {
    if (component.external) continue;
    std::optional<std::string> chosen = policy(component.name);
    if (!chosen && !component.group.empty()) chosen = policy(component.group);
    component.wait = chosen.value_or(fallback.value_or(""));
  }
}

// The replica count of the group `name` (0: not a replicated group).
int group_size(const SupervisorConfig& config, const std::string& name) {
  for (const ComponentConfig& component : config.components) {
    if (component.group == name) return component.replica_count;
  }
  return 0;
}

// `name` with every "${replica}" replaced by `index`.
std::string with_replica(std::string name, int index) {
  const std::string placeholder = "${replica}";
  for (std::size_t at = name.find(placeholder); at != std::string::npos; at = name.find(placeholder, at)) {
    name.replace(at, placeholder.size(), std::to_string(index));
  }
  return name;
}

// The replicated group among `names` (empty: none); fails on two different groups, and on a name
// that is not ${replica}-templated when there is a group.
std::string group_among(const toml::node& node, const SupervisorConfig& config, const std::string& own_name,
                        std::initializer_list<const std::vector<std::string>*> lists) {
  std::string group;
  for (const auto* list : lists) {
    for (const std::string& name : *list) {
      if (group_size(config, name) == 0 || name == group) continue;
      if (!group.empty()) fail(node, "names two replicated groups ('" + group + "' and '" + name + "')");
      group = name;
    }
  }
  if (!group.empty() && own_name.find("${replica}") == std::string::npos) {
    fail(node, "'" + own_name + "' joins the replicated group '" + group +
                   "', so its name must contain ${replica}");
  }
  return group;
}

void read_channels(const toml::table& root, SupervisorConfig& config) {
  const toml::array* array = array_of_tables(root, "channel");
  if (array == nullptr) return;
  std::set<std::string> names;
  std::vector<std::uint32_t> per_component(config.components.size(), 0);
  for (const toml::node& node : *array) {
    const toml::table& table = *node.as_table();
    reject_unknown_keys(table, {"name", "a", "b", "capacity"}, "[[channel]]");
    ChannelConfig base;
    base.name = text(table, "name", node);
    base.a = text(table, "a", node);
    base.b = text(table, "b", node);
    for (const auto& [key, end] : {std::pair{"a", &base.a}, std::pair{"b", &base.b}}) {
      if (component_index(config, *end) < 0 && group_size(config, *end) == 0) {
        fail(*table.get(key), "no component named '" + *end + "'");
      }
    }
    const std::vector<std::string> ends{base.a, base.b};
    const std::string group = group_among(node, config, base.name, {&ends});
    base.capacity = integer<std::uint32_t>(table, "capacity", 1024, 2, kMaxRingCapacity);
    if (!std::has_single_bit(base.capacity)) {
      fail(*table.get("capacity"), "'capacity' must be a power of two");
    }
    const int copies = group.empty() ? 1 : group_size(config, group);
    for (int index = 0; index < copies; ++index) {
      ChannelConfig channel = base;
      if (!group.empty()) {
        channel.name = with_replica(base.name, index);
        for (std::string* end : {&channel.a, &channel.b}) {
          if (*end == group) *end = group + std::to_string(index);
        }
      }
      if (!valid_name(channel.name)) fail(*table.get("name"), "channel name must be 1-31 characters of [A-Za-z0-9_.-]");
      if (!names.insert(channel.name).second) fail(*table.get("name"), "channel '" + channel.name + "' is declared twice");
      const int a = component_index(config, channel.a);
      const int b = component_index(config, channel.b);
      if (a == b) fail(node, "a channel joins two different components");
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
    if (component_index(config, name) < 0 && group_size(config, name) == 0) {
      fail(item, "no component named '" + name + "'");
    }
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
    RegionConfig base;
    base.name = text(table, "name", node);
    if (table.get("bytes") == nullptr) fail(node, "missing 'bytes'");
    base.bytes = integer<std::uint64_t>(table, "bytes", 0, 1, kMaxRegionBytes);
    base.writers = component_list(table, "writers", config);
    base.readers = component_list(table, "readers", config);
    const std::string group = group_among(node, config, base.name, {&base.writers, &base.readers});
    const int copies = group.empty() ? 1 : group_size(config, group);
    for (int index = 0; index < copies; ++index) {
      RegionConfig region = base;
      if (!group.empty()) {
        region.name = with_replica(base.name, index);
        for (auto* list : {&region.writers, &region.readers}) {
          for (std::string& name : *list) {
            if (name == group) name = group + std::to_string(index);
          }
        }
      }
      if (!valid_name(region.name)) fail(*table.get("name"), "region name must be 1-31 characters of [A-Za-z0-9_.-]");
      if (!names.insert(region.name).second) fail(*table.get("name"), "region '" + region.name + "' is declared twice");
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
}

std::string optional_text(const toml::table& table, std::string_view key, std::string fallback) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return fallback;
  if (!node->is_string()) fail(*node, "'" + std::string(key) + "' must be a string");
  return std::string(*node->value<std::string_view>());
}

const toml::table* table_of(const toml::table& root, std::string_view key) {
  const toml::node* node = root.get(key);
  if (node == nullptr) return nullptr;
  const toml::table* table = node->as_table();
  if (table == nullptr) fail(*node, "[" + std::string(key) + "] must be a table");
  return table;
}

bool valid_interface_name(std::string_view name) {
  // The kernel's limit is IFNAMSIZ - 1; '/' and whitespace are refused by the kernel too.
  if (name.empty() || name.size() > 15) return false;
  for (char c : name) {
    if (c == '/' || c == ' ' || c == '\t' || c == '\n' || c == ':') return false;
  }
  return true;
}

void read_files(const toml::table& root, SupervisorConfig& config) {
  const toml::table* table = table_of(root, "files");
  if (table == nullptr) return;
  reject_unknown_keys(*table, {"prefix", "cache_bytes"}, "[files]");
  config.files_cache_bytes = integer<std::uint64_t>(*table, "cache_bytes", 0, kMinFileCacheBytes, kMaxRegionBytes);
  if (config.files_cache_bytes % fs::kBlockBytes != 0) {
    fail(*table->get("cache_bytes"), "'cache_bytes' must be a multiple of " + std::to_string(fs::kBlockBytes));
  }
  std::string prefix = optional_text(*table, "prefix", config.files_prefix);
  while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
  // The preload library keeps the prefix in a buffer of 256 bytes and compares it byte for byte.
  if (prefix.empty() || prefix.front() != '/' || prefix == "/" || prefix.size() > 255 ||
      prefix.find_first_of(" \t\n") != std::string::npos) {
    fail(*table->get("prefix"), "'prefix' must be an absolute path other than / (at most 255 bytes, no whitespace)");
  }
  config.files_prefix = std::move(prefix);
}

// [files] cache_bytes sizes the file fleet's cache region, wherever the configuration declared it.
void size_file_cache(const toml::table& root, SupervisorConfig& config) {
  if (config.files_cache_bytes == 0) return;
  for (RegionConfig& region : config.regions) {
    if (region.name == fs::kFileCacheRegion) region.bytes = config.files_cache_bytes;
  }
  const bool declared = std::any_of(config.regions.begin(), config.regions.end(),
                                    [](const RegionConfig& region) { return region.name == fs::kFileCacheRegion; });
  if (!declared) {
    fail(*root.get("files")->as_table()->get("cache_bytes"),
         "'cache_bytes' sizes the file fleet's cache, and no [[region]] named fs-blocks is declared");
  }
}

void read_network(const toml::table& root, SupervisorConfig& config) {
  const toml::table* table = table_of(root, "network");
  if (table == nullptr) return;
  config.has_network = true;
  reject_unknown_keys(*table,
                      {"driver", "namespace", "stack_interface", "peer_interface", "stack_address",
                       "peer_address", "gateway", "memwire_path", "memwire_side", "dpdk_device",
                       "create_peer", "impair"},
                      "[network]");
  NetworkConfig& network = config.network;
  network.driver = optional_text(*table, "driver", network.driver);
  if (network.driver != "af_xdp" && network.driver != "dpdk" && network.driver != "memwire") {
    fail(*table->get("driver"), "'driver' must be \"af_xdp\", \"dpdk\" or \"memwire\"");
  }
  network.peer_namespace = optional_text(*table, "namespace", network.peer_namespace);
  network.stack_interface = optional_text(*table, "stack_interface", network.stack_interface);
  network.peer_interface = optional_text(*table, "peer_interface", network.peer_interface);
  for (const char* key : {"stack_interface", "peer_interface"}) {
    const toml::node* node = table->get(key);
    if (node != nullptr && !valid_interface_name(*node->value<std::string_view>())) {
      fail(*node, "'" + std::string(key) + "' must be an interface name of 1-15 characters");
    }
  }
  if (table->get("namespace") != nullptr && !valid_name(network.peer_namespace)) {
    fail(*table->get("namespace"), "'namespace' must be 1-31 characters of [A-Za-z0-9_.-]");
  }
  network.stack_address = optional_text(*table, "stack_address", network.stack_address);
  network.peer_address = optional_text(*table, "peer_address", network.peer_address);
  network.gateway = optional_text(*table, "gateway", network.gateway);
  network.memwire_path = optional_text(*table, "memwire_path", network.memwire_path);
  network.memwire_side = optional_text(*table, "memwire_side", network.memwire_side);
  if (network.memwire_side != "a" && network.memwire_side != "b") {
    fail(*table->get("memwire_side"), "'memwire_side' must be \"a\" or \"b\"");
  }
  network.dpdk_device = optional_text(*table, "dpdk_device", network.dpdk_device);
  network.impair = optional_text(*table, "impair", network.impair);
  if (const toml::node* create = table->get("create_peer")) {
    if (!create->is_boolean()) fail(*create, "'create_peer' must be true or false");
    network.create_peer = *create->value<bool>();
  }
}

void read_filter(const toml::table& root, std::string_view text, SupervisorConfig& config) {
  const toml::table* table = table_of(root, "filter");
  if (table == nullptr) return;
  reject_unknown_keys(*table, {"rules"}, "[filter]");
  config.filter_rules = optional_text(*table, "rules", "");
  if (const toml::node* rules = table->get("rules")) {
    // A multi-line string whose opening quotes end their line starts on the next one (TOML drops
    // that newline), so rule errors can name the line in the file.
    std::uint32_t line = line_of(*rules);
    std::size_t at = 0;
    for (std::uint32_t l = 1; l < line && at != std::string_view::npos; ++l) {
      at = text.find('\n', at);
      if (at != std::string_view::npos) ++at;
    }
    if (at != std::string_view::npos) {
      const std::string_view first = text.substr(at, text.find('\n', at) - at);
      const std::size_t quotes = first.find("\"\"\"");
      if (quotes != std::string_view::npos &&
          first.find_first_not_of(" \t\r", quotes + 3) == std::string_view::npos) {
        ++line;
      }
    }
    config.filter_rules_line = line;
  }
}

// The value a `${...}` placeholder in a component's args stands for; nullopt when unknown.
std::optional<std::string> placeholder_value(const SupervisorConfig& config, const ComponentConfig& component,
                                             std::string_view key) {
  if (component.replica_count > 0) {
    if (key == "replica.index") return std::to_string(component.replica_index);
    if (key == "replica.count") return std::to_string(component.replica_count);
  }
  const NetworkConfig& n = config.network;
  const std::pair<std::string_view, const std::string*> known[] = {
      {"network.driver", &n.driver},
      {"network.namespace", &n.peer_namespace},
      {"network.stack_interface", &n.stack_interface},
      {"network.peer_interface", &n.peer_interface},
      {"network.stack_address", &n.stack_address},
      {"network.peer_address", &n.peer_address},
      {"network.gateway", &n.gateway},
      {"network.memwire_path", &n.memwire_path},
      {"network.memwire_side", &n.memwire_side},
      {"network.dpdk_device", &n.dpdk_device},
      {"network.impair", &n.impair},
      {"filter.rules", &config.filter_rules},
  };
  for (const auto& [name, value] : known) {
    if (name == key) return *value;
  }
  if (key == "limits.tcp_ring_bytes") return std::to_string(config.limits.tcp_ring_bytes);
  return std::nullopt;
}

// The tables an override may name: those of single values.
constexpr std::string_view kOverridableTables[] = {"supervisor", "network", "filter", "limits", "wait", "files"};

// Puts "TABLE.KEY=VALUE" into `root`; an error message when it is malformed. The value keeps the
// override as its source, so a bad one is reported as the override.
std::string apply_override(toml::table& root, const std::string& setting) {
  const std::size_t equals = setting.find('=');
  const std::size_t dot = setting.find('.');
  if (equals == std::string::npos || dot == std::string::npos || dot > equals || dot == 0 || dot + 1 == equals) {
    return "--set " + setting + ": expected TABLE.KEY=VALUE (e.g. limits.app_seats=6)";
  }
  const std::string table_name = setting.substr(0, dot);
  const std::string key = setting.substr(dot + 1, equals - dot - 1);
  const std::string value = setting.substr(equals + 1);
  if (std::find(std::begin(kOverridableTables), std::end(kOverridableTables), table_name) ==
      std::end(kOverridableTables)) {
    return "--set " + setting + ": no table '" + table_name + "' to set (supervisor, network, filter, limits, wait, files)";
  }
  const std::string origin = "--set " + setting;
  toml::table parsed;
  try {
    parsed = toml::parse(std::string_view("value = " + value), std::string_view(origin));
  } catch (const toml::parse_error&) {
    // Not a TOML value: the text itself, as a literal string (which holds anything but ''' and newlines).
    try {
      parsed = toml::parse(std::string_view("value = '''" + value + "'''"), std::string_view(origin));
    } catch (const toml::parse_error&) {
      return origin + ": not a value";
    }
  }
  if (root.get(table_name) == nullptr) root.insert(table_name, toml::table{});
  toml::table* table = root.get(table_name)->as_table();
  if (table == nullptr) return origin + ": '" + table_name + "' is not a table in the configuration";
  table->insert_or_assign(key, std::move(*parsed.get("value")));
  return "";
}

}  // namespace

ConfigOutcome parse_config(std::string_view text, std::string_view source_name,
                           std::span<const std::string> overrides) {
  const std::string source(source_name);
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& error) {
    return ConfigError{source + ":" + std::to_string(error.source().begin.line) + ": " +
                       std::string(error.description())};
  }
  for (const std::string& setting : overrides) {
    if (std::string problem = apply_override(root, setting); !problem.empty()) return ConfigError{problem};
  }
  SupervisorConfig config;
  try {
    reject_unknown_keys(root, {"supervisor", "component", "channel", "region", "network", "filter", "limits", "wait",
                         "files"},
                        "the top level");
    read_supervisor(root, config);
    read_limits(root, config);
    read_files(root, config);
    read_network(root, config);
    read_filter(root, text, config);
    declare_seats(root, config);
    read_components(root, config);
    read_wait(root, config);
    read_channels(root, config);
    read_regions(root, config);
    size_file_cache(root, config);
  } catch (const Invalid& invalid) {
    if (invalid.origin.empty() || invalid.origin == source) {
      return ConfigError{source + ":" + std::to_string(invalid.line) + ": " + invalid.message};
    }
    return ConfigError{invalid.origin + ": " + invalid.message};
  }
  if (config.components.empty()) return ConfigError{source + ": no [[component]] declared"};
  return config;
}

ConfigOutcome load_config_file(const std::string& path, std::span<const std::string> overrides) {
  std::ifstream file(path);
  if (!file) return ConfigError{path + ": cannot open"};
  std::ostringstream contents;
  contents << file.rdbuf();
  return parse_config(contents.str(), path, overrides);
}

}  // namespace flotilla::recovery
