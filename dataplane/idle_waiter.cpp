#include "dataplane/idle_waiter.hpp"

namespace flotilla {

IdleWaiter::IdleWaiter(Doorbell& bell, CounterBlock& counters, WaitPolicy policy)
    : bell_(&bell),
      counters_(&counters),
      policy_(policy),
      use_umwait_(policy.allow_umwait && cpu_has_waitpkg()),
      // Start with the full budget; the gaps seen from then on move it.
      average_gap_ns_(static_cast<std::uint64_t>(policy.spin_max.count()) / 2) {}

}  // namespace flotilla
