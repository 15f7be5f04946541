// The one main() of every supervised component. A program names its component through a small
// description struct:
//   struct Program {
//     static constexpr const char* kName = "flotilla-pf";          // prefix of its stderr lines
//     static constexpr const char* kDescription = "...";           // its --help
//     struct Options { ... };
//     static void declare_options(CLI::App& app, Options& options);
//     static Status check_options(Options& options);               // optional; before attaching
//     static WaitPolicy wait_policy(const Options& options);       // optional; shared_core(), and
//                                                                  // the configuration's [wait] wins
//     static Result<std::unique_ptr<Component>> create(ComponentHost&, ChannelOutputs&, Options&);
//     static SandboxPolicy sandbox();                              // optional; see below
//   };
//   int main(int argc, char** argv) { return flotilla::component_main<Program>(argc, argv); }
// Exit codes: 2 for options or configuration that cannot work (create's Errc::invalid_argument),
// 1 when attaching or building fails otherwise. `--check` checks the options and exits (0 or 2)
// without attaching, so a tool can ask a component whether its configuration is good (the CLI
// asks pf about the rules before `up`).
// A program with sandbox() runs its message loop sandboxed (dataplane/sandbox.hpp): set up first
// (attach, create, start), then no new privileges, only the capabilities it keeps and only the
// system calls the runtime and it name. `--no-sandbox`, or FLOTILLA_NO_SANDBOX in the environment
// (the supervisor sets it for `[supervisor] sandbox = false`), leaves that out, for strace or gdb.
// The policy is `sandbox()` or, when it depends on the options, `sandbox(const Options&)`, which
// returns no policy (std::nullopt) for a configuration that cannot run sandboxed. A program with
// `setup_capabilities()` keeps only those capabilities from the start, while it sets up.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "dataplane/channel_outputs.hpp"
#include "dataplane/component.hpp"
#include "dataplane/component_host.hpp"
#include "dataplane/sandbox.hpp"

namespace flotilla {

// The channel named `name`, which the program `program` needs to reach `what` (for the message);
// Errc::invalid_argument, said on stderr, when the supervisor did not grant it.
inline Result<std::size_t> required_channel(const char* program, const ChannelOutputs& channels,
                                            const std::string& name, const char* what) {
  const std::size_t channel = channels.find(name);
  if (channel != ChannelOutputs::kNoChannel) return channel;
  std::fprintf(stderr, "%s: no channel '%s' to %s\n", program, name.c_str(), what);
  return Error{Errc::invalid_argument, 0, "a required channel is missing"};
}

template <class Program>
constexpr bool kHasSandbox = requires { Program::sandbox(); } ||
                             requires(const typename Program::Options& options) { Program::sandbox(options); };

template <class Program>
std::optional<SandboxPolicy> sandbox_policy(const typename Program::Options& options) {
  if constexpr (requires { Program::sandbox(options); }) {
    return Program::sandbox(options);
  } else {
    return Program::sandbox();
  }
}

template <class Program>
int component_main(int argc, char** argv) {
  CLI::App app{Program::kDescription};
  typename Program::Options options;
  Program::declare_options(app, options);
  bool check_only = false;
  app.add_flag("--check", check_only, "Check the options and exit (0: they are good, 2: they are not)");
  bool no_sandbox = false;
  if constexpr (kHasSandbox<Program>) {
    app.add_flag("--no-sandbox", no_sandbox,
                 "Run without the seccomp allow-list and with every capability (for strace and gdb)");
  }
  CLI11_PARSE(app, argc, argv);
  if constexpr (requires { Program::check_options(options); }) {
    if (Status checked = Program::check_options(options); !checked) {
      std::fprintf(stderr, "%s: %s\n", Program::kName, checked.error().message().c_str());
      return 2;
    }
  }
  if (check_only) return 0;
  std::optional<SandboxPolicy> sandbox;
  if constexpr (kHasSandbox<Program>) {
    if (!no_sandbox && std::getenv(kNoSandboxVariable) == nullptr) sandbox = sandbox_policy<Program>(options);
  }
  if constexpr (requires { Program::setup_capabilities(); }) {
    if (sandbox) {
      if (Status narrowed = keep_only_capabilities(Program::setup_capabilities()); !narrowed) {
        std::fprintf(stderr, "%s: capabilities: %s\n", Program::kName, narrowed.error().message().c_str());
        return 1;
      }
    }
  }
  WaitPolicy policy = WaitPolicy::shared_core();
  if constexpr (requires { Program::wait_policy(options); }) policy = Program::wait_policy(options);

  auto attached = ComponentHost::attach(policy);
  if (!attached) {
    std::fprintf(stderr, "%s: %s\n", Program::kName, attached.error().message().c_str());
    return 1;
  }
  ComponentHost& host = *attached.value();
  HostLink link(host);
  ChannelOutputs channels = ChannelOutputs::of_host(host, link);
  Result<std::unique_ptr<Component>> created = Program::create(host, channels, options);
  if (!created) {
    std::fprintf(stderr, "%s: %s\n", Program::kName, created.error().message().c_str());
    return created.error().code == Errc::invalid_argument ? 2 : 1;
  }
  Component& component = *created.value();
  ComponentRunner runner(host.loop(), channels, component);
  if (Status started = runner.start(); !started) {
    std::fprintf(stderr, "%s: %s\n", Program::kName, started.error().message().c_str());
    return 1;
  }
  host.on_peer_restarted([&component](ComponentId peer, std::uint64_t) { component.on_peer_restarted(peer); });
  if (sandbox) {
    if (Status entered = enter_sandbox(*sandbox); !entered) {
      std::fprintf(stderr, "%s: sandbox: %s (--no-sandbox runs without it)\n", Program::kName,
                   entered.error().message().c_str());
      return 1;
    }
  }
  host.run();
  return 0;
}

}  // namespace flotilla
