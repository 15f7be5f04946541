// flotilla-ring-demo: a producer and a consumer process stream messages over a shared-memory
// channel; the consumer is killed with SIGKILL and restarted while the stream runs, and the demo
// shows that every message was still delivered exactly once, in order, with no buffer leaked.
//
// Without --role this process is the supervisor. It starts itself again as the producer and the
// consumer (--role/--control-fd/--incarnation are for that and hidden from --help).
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "apps/ring_demo/format.hpp"
#include "apps/ring_demo/roles.hpp"

int main(int argc, char** argv) {
  using namespace flotilla::ring_demo;

  CLI::App app{
      "Flotilla ring recovery demo: a producer and a consumer process stream messages over a "
      "shared-memory channel while the supervisor kills the consumer (SIGKILL) and restarts it. "
      "Exits 0 only when every message arrived exactly once, in order, and no buffer leaked."};
  app.name("flotilla-ring-demo");

  DemoOptions options;
  app.add_option("--messages", options.messages, "How many messages to stream")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000'000}))
      ->capture_default_str();
  app.add_option("--kills", options.kills,
                 "How many times to kill and restart the consumer, evenly spread over the stream")
      ->check(CLI::Range(std::uint32_t{0}, std::uint32_t{50}))
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_seconds,
                 "Give up (and fail) after this many seconds; 0 = 30 s plus 1 s per million "
                 "messages")
      ->check(CLI::Range(std::uint32_t{0}, std::uint32_t{86'400}))
      ->capture_default_str();
  app.add_flag("--quiet", options.quiet, "Print only the summary, not progress and events");

  // The children's side (hidden: an empty group keeps them out of --help).
  std::string role_text;
  int control_fd = -1;
  std::uint64_t incarnation = 0;
  app.add_option("--role", role_text)->check(CLI::IsMember({"producer", "consumer"}))->group("");
  app.add_option("--control-fd", control_fd)->check(CLI::NonNegativeNumber)->group("");
  app.add_option("--incarnation", incarnation)->check(CLI::PositiveNumber)->group("");

  CLI11_PARSE(app, argc, argv);

  if (!role_text.empty() || control_fd >= 0 || incarnation != 0) {
    if (role_text.empty() || control_fd < 0 || incarnation == 0) {
      fmt::print(stderr,
                 "error: --role, --control-fd and --incarnation go together; they are how the "
                 "demo starts its own producer and consumer, not meant to be given by hand\n");
      return 2;
    }
    return run_child(*parse_role(role_text), control_fd, incarnation);
  }

  const std::uint64_t needed = kMinMessagesPerStretch * (std::uint64_t{options.kills} + 1);
  if (options.kills > 0 && options.messages < needed) {
    fmt::print(stderr,
               "error: --kills {} needs --messages of at least {} ({} per stretch between kills, "
               "so that each kill lands mid-stream); got {}\n",
               options.kills, grouped(needed), grouped(kMinMessagesPerStretch),
               grouped(options.messages));
    return 2;
  }
  return run_supervisor(options);
}
