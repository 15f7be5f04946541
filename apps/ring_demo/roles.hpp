// The demo's three roles. One binary plays all of them: without --role it is the supervisor, which
// starts itself again as `--role producer` and `--role consumer`.
#pragma once

#include <cstdint>
#include <optional>

#include "apps/ring_demo/control.hpp"
#include "apps/ring_demo/demo_layout.hpp"
#include "dataplane/buffer_pool.hpp"
#include "dataplane/shared_region.hpp"

namespace flotilla::ring_demo {

struct DemoOptions {
  std::uint64_t messages = 30'000'000;  // about 3 s on a 2-core machine
  std::uint32_t kills = 2;
  std::uint32_t timeout_seconds = 0;  // 0: automatic, see effective_timeout_seconds()
  bool quiet = false;
};

// Messages each stretch between two kills must have, so that every kill lands mid-stream.
inline constexpr std::uint64_t kMinMessagesPerStretch = 1000;

// The run gives up (and fails) after this long: 30 s plus 1 s per million messages unless set;
// the stream runs at several million messages a second, so that leaves a wide margin.
inline std::uint32_t effective_timeout_seconds(const DemoOptions& options) {
  if (options.timeout_seconds != 0) return options.timeout_seconds;
  return static_cast<std::uint32_t>(30 + options.messages / 1'000'000);
}

int run_supervisor(const DemoOptions& options);

// Child side.
struct ChildRegions {
  std::optional<SharedRegion> channel;
  std::optional<SharedRegion> doorbell;
  std::optional<SharedRegion> stats;
  std::optional<SharedRegion> state;
  std::optional<SharedRegion> control;  // producer only
  std::optional<BufferPool> pool;

  Doorbells* bells = nullptr;
  RoleStats* role_stats = nullptr;
  StateStore* store = nullptr;  // mapped read-only in the producer
  const SupervisorControl* supervisor = nullptr;
  std::uint64_t messages = 0;
  std::uint64_t incarnation = 0;
  int control_fd = -1;
};

int run_child(Role role, int control_fd, std::uint64_t incarnation);
int run_producer(ChildRegions& regions);
int run_consumer(ChildRegions& regions);

}  // namespace flotilla::ring_demo
