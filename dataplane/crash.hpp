// A deliberate crash (fault injection, test hooks) that the supervisor sees as a crash: death by
// SIGSEGV. The default action first: the sanitizers' runtime (./dev test --sanitize) handles
// SIGSEGV by printing a report and exiting with status 1, slowly enough to be taken for a hang.
#pragma once

#include <csignal>

namespace flotilla {

inline void crash_by_sigsegv() {
  std::signal(SIGSEGV, SIG_DFL);
  std::raise(SIGSEGV);
}

}  // namespace flotilla
