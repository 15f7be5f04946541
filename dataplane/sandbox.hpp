// Least privilege for a component once it is set up: no new privileges, only the capabilities it
// names, and a seccomp allow-list of system calls. A call outside the list kills the process with
// SIGSYS; the supervisor logs the signal and restarts the component like any crash. A compromised
// packet filter then cannot open a socket or a file, or exec anything.
#pragma once

#include <span>
#include <string_view>

#include "dataplane/result.hpp"

namespace flotilla {

// Set (to anything) in a component's environment: it runs without its sandbox.
inline constexpr const char* kNoSandboxVariable = "FLOTILLA_NO_SANDBOX";

struct SandboxPolicy {
  // System calls by name (as in `man 2 syscalls`) beyond the runtime's own: waiting (futex, poll,
  // eventfd reads and writes), memory (malloc's mmap and brk), time, stderr, signals and exit, and
  // the fault injection's raise/abort/pause (the list is in sandbox.cpp).
  std::span<const std::string_view> system_calls;
  // CAP_* numbers the component keeps in its effective and permitted sets; every other one goes,
  // and the bounding set is emptied.
  std::span<const int> kept_capabilities;
  // The component starts threads in its loop: clone for threads only (CLONE_THREAD; clone3 answers
  // ENOSYS so glibc falls back to clone, whose flags a filter can read) and the calls a new thread
  // makes. A thread started before the sandbox would keep its capabilities (they are per thread),
  // so a component starts its threads afterwards and they inherit all of it.
  bool starts_threads = false;
};

// Empties the bounding set and drops every capability but `kept` from the effective and permitted
// sets of the calling thread (the components never exec, so the bounding set holds nothing back). A component that needs a few while it sets up (the driver opening its device) narrows to
// those first; enter_sandbox later drops the rest. Errc::invalid_argument: an unknown capability.
Status keep_only_capabilities(std::span<const int> kept);

// Sets PR_SET_NO_NEW_PRIVS, drops the capabilities not kept and installs the filter, in that
// order (the filter allows neither prctl nor capset afterwards). The filter covers every thread
// of the process (SECCOMP_FILTER_FLAG_TSYNC). Errc::invalid_argument: an
// unknown system call or capability; Errc::system: the kernel refused, with its errno.
Status enter_sandbox(const SandboxPolicy& policy);

}  // namespace flotilla
