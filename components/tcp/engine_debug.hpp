// Test hooks into the TCP engine that are not part of its API: the deterministic simulation uses
// them to see every state transition the engine makes, and the unit tests to see its memory.
#pragma once

#include <cstddef>

#include "components/tcp/engine.hpp"

namespace flotilla::tcp {

class TransitionObserver {
 public:
  virtual ~TransitionObserver() = default;
  // A connection (or, for closed->listen and listen->closed, a listener) changed state.
  virtual void on_transition(TcpState from, TcpState to) = 0;
};

// `observer` (nullptr: none) hears every transition of `engine` from now on; it must outlive it.
void set_transition_observer(Engine& engine, TransitionObserver* observer);

// How many chunks of connection slots `engine` has allocated (its private memory grows by chunks).
std::size_t connection_chunks(const Engine& engine);

}  // namespace flotilla::tcp
