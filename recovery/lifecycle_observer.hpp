// What the supervisor's lifecycle code tells the parts beside it (the registrar, the application
// seats): a component's incarnation started, exited, was stopped, sent something on its control
// ring that the lifecycle does not handle; and that a round of watching ended. The lifecycle code
// calls these in the order events happen and knows nothing of what the observers do.
#pragma once

#include "dataplane/message.hpp"

namespace flotilla::recovery {

struct ComponentView;

class LifecycleObserver {
 public:
  virtual ~LifecycleObserver() = default;
  // A new incarnation was spawned (a start or a restart); its status is running.
  virtual void started(const ComponentView&) {}
  // Its process exited or was killed, before its buffers are reclaimed.
  virtual void exited(const ComponentView&) {}
  // Supervisor::stop() shut it down (its process, if the supervisor started one, is reaped).
  virtual void stopped(const ComponentView&) {}
  // A message on its control ring of a kind the lifecycle code does not handle.
  virtual void control_message(const ComponentView&, const Message&) {}
  // The end of every Supervisor::poll round.
  virtual void polled() {}
};

}  // namespace flotilla::recovery
