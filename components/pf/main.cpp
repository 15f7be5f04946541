// flotilla-pf: the packet filter process (PfServer, pf_server.hpp), run by the generic component
// main. It maps the buffer pool read-only and keeps its connection states in the state store.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <variant>

#include "components/formats/xdp_block_list.hpp"
#include "components/pf/pf_server.hpp"
#include "components/pf/rules.hpp"
#include "dataplane/component_main.hpp"

namespace {

using namespace flotilla;

struct PfProgram {
  static constexpr const char* kName = "flotilla-pf";
  static constexpr const char* kDescription =
      "flotilla-pf: the packet filter of the Flotilla stack (started by the supervisor)";

  struct Options {
    std::string rules_text;
    std::string rules_file;
    std::string channel = "ip-pf";
    std::string rules_source;  // what errors name instead of "rules" or the file
    std::optional<pf::RuleSet> rules;  // parsed by check_options
  };

  static void declare_options(CLI::App& app, Options& options) {
    app.add_option("--rules", options.rules_text, "Rule text (one rule per line)");
    app.add_option("--rules-file", options.rules_file, "Read the rules from this file")->check(CLI::ExistingFile);
    app.add_option("--channel", options.channel, "Channel to IP")->capture_default_str();
    app.add_option("--rules-source", options.rules_source,
                   "The name rule errors carry (the configuration file the rules came from)");
  }

  static Status check_options(Options& options) {
    std::string source = "rules";
    if (!options.rules_file.empty()) {
      std::ifstream file(options.rules_file);
      std::ostringstream contents;
      contents << file.rdbuf();
      options.rules_text = contents.str();
      source = options.rules_file;
    }
    if (!options.rules_source.empty()) source = options.rules_source;
    auto parsed = pf::parse_rules(options.rules_text, source);
    if (auto* error = std::get_if<pf::RuleError>(&parsed)) {
      std::fprintf(stderr, "%s: %s\n", kName, error->message.c_str());
      return Error{Errc::invalid_argument, 0, "--rules"};
    }
    options.rules = std::move(std::get<pf::RuleSet>(parsed));
    return {};
  }

  // Nothing beyond the runtime's calls: every packet and message moves through shared memory.
  static SandboxPolicy sandbox() { return {}; }

  static Result<std::unique_ptr<Component>> create(ComponentHost& host, ChannelOutputs& channels, Options& options) {
    const auto ip = required_channel(kName, channels, options.channel, "IP");
    if (!ip) return ip.error();
    auto server = pf::PfServer::create(channels, *ip, std::move(*options.rules), host.state(),
                                       host.region(formats::kXdpBlockListRegion), host.named_counters());
    if (!server) return server.error();
    std::fprintf(stderr, "%s: %zu rules, %zu states kept from before, %zu block rules for XDP\n", kName,
                 server.value()->filter().rules().size(), server.value()->restored_states(),
                 server.value()->offloaded_rules());
    return std::unique_ptr<Component>(std::move(server.value()));
  }
};

}  // namespace

int main(int argc, char** argv) { return component_main<PfProgram>(argc, argv); }
