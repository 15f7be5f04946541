// Application seats: the configuration's external components, which programs lease through the
// control socket (ComponentHost::lease, `flotilla run`) instead of being started by the supervisor.
// A seat is idle until a program leases it and idle again when the lease ends; either way its
// peers see a new incarnation, so they drop whatever the previous holder left behind. Each seat
// has an eventfd its holder sleeps on, which its peers write, and the supervisor's notices too.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"
#include "recovery/lifecycle_observer.hpp"
#include "recovery/supervisor.hpp"

namespace flotilla::recovery {

// A seat handed to a program: its name and the descriptors to send it, in the order of
// control_block.hpp (they stay the supervisor's: send, do not close).
struct Lease {
  std::string name;
  std::vector<int> fds;
};

class ApplicationSeats final : public LifecycleObserver {
 public:
  // Gives every external component of the supervisor's configuration its eventfd, and observes
  // the supervisor. Before Supervisor::start().
  static Result<std::unique_ptr<ApplicationSeats>> attach(Supervisor& supervisor);
  ~ApplicationSeats() override;
  ApplicationSeats(const ApplicationSeats&) = delete;
  ApplicationSeats& operator=(const ApplicationSeats&) = delete;

  // Leases an idle seat to the program `holder`; Errc::exhausted when all are leased.
  Result<Lease> lease(pid_t holder);
  // Ends the lease of the seat `name` (the program's connection closed); a seat that is not
  // leased is left alone.
  void release(std::string_view name);

  // The stack stops: a held seat's lease ends with it.
  void stopped(const ComponentView& component) override;

 private:
  struct Seat {
    ComponentId id;
    std::string name;
    UniqueFd wake;
    bool leased = false;
    pid_t holder = -1;
  };

  explicit ApplicationSeats(Supervisor& supervisor) : supervisor_(supervisor) {}
  Seat* find(std::string_view name);

  Supervisor& supervisor_;
  std::vector<Seat> seats_;
};

}  // namespace flotilla::recovery
