// flotilla-fs: one file server of the file fleet (FsComponent, fs_component.hpp), run by the
// generic component main. The configuration starts N of them (`replicas = N`); each is given its
// index and the count, a channel to every client (application seats, the FUSE mount's seat among
// them), and the shared buffer cache region. Its tables live in its state-store region, so a
// restarted server comes back with every change it acknowledged.
#include <cstdio>
#include <string>

#include "components/fs/fs_component.hpp"
#include "components/formats/fs_block_cache.hpp"
#include "dataplane/component_main.hpp"

namespace {

using namespace flotilla;

struct FsProgram {
  static constexpr const char* kName = "flotilla-fs";
  static constexpr const char* kDescription =
      "flotilla-fs: one file server of the Flotilla file fleet (started by the supervisor)";

  struct Options {
    unsigned index = 0;
    unsigned servers = 1;
    std::string cache_region = fs::kFileCacheRegion;
    bool root_distributed = true;
  };

  static void declare_options(CLI::App& app, Options& options) {
    app.add_option("--index", options.index, "This server's index in the fleet (0 holds the root)")->required();
    app.add_option("--servers", options.servers, "How many file servers the fleet has")->required();
    app.add_option("--cache-region", options.cache_region, "The shared buffer cache region")->capture_default_str();
    app.add_option("--root-distributed", options.root_distributed,
                   "Spread the root directory's entries over every server")
        ->capture_default_str();
  }

  static Status check_options(Options& options) {
    static_assert(fs::kMaxServers == 256, "the message below names the limit");
    if (options.servers == 0 || options.servers > fs::kMaxServers) {
      return Error{Errc::invalid_argument, 0, "--servers must be 1..256"};
    }
    if (options.index >= options.servers) {
      return Error{Errc::invalid_argument, 0, "--index must be below --servers"};
    }
    return {};
  }

  // A file server's tables and blocks are in its regions, mapped at set-up: at run time it needs
  // only the runtime's calls (no files, no sockets).
  static SandboxPolicy sandbox() { return {}; }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    const std::span<std::byte> cache = host.region(options.cache_region);
    if (cache.empty()) {
      std::fprintf(stderr, "%s: no region '%s' (the buffer cache)\n", kName, options.cache_region.c_str());
      return Error{Errc::invalid_argument, 0, "the buffer cache region is missing"};
    }
    fs::ServerConfig config;
    config.self = static_cast<fs::ServerIndex>(options.index);
    config.servers = static_cast<std::uint16_t>(options.servers);
    config.root_distributed = options.root_distributed;
    auto created = fs::FsComponent::create(channels, config, host.state(), cache, host.named_counters());
    if (!created) return created.error();
    const fs::FileServer& server = created.value()->server();
    std::fprintf(stderr, "%s: server %u of %u, %zu inodes, %zu log records replayed, %zu clients\n", kName,
                 options.index, options.servers, server.inode_count(),
                 static_cast<std::size_t>(server.stats().replayed), channels.count());
    return std::unique_ptr<Component>(std::move(created.value()));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<FsProgram>(argc, argv); }
