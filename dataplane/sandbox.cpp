#include "dataplane/sandbox.hpp"

#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <memory>
#include <string>

namespace flotilla {
namespace {

constexpr std::string_view kRuntimeCalls[] = {
    // waiting and the doorbells
    "futex", "poll", "ppoll", "read", "write", "readv", "writev", "sched_yield", "nanosleep", "clock_nanosleep",
    "restart_syscall",
    // time (the vDSO falls back to the calls for some clocks)
    "clock_gettime", "clock_getres", "gettimeofday", "getrusage",
    // memory: malloc and free outside the hot paths, and the unmapping at exit
    "brk", "mmap", "munmap", "mremap", "madvise", "mprotect",
    // stdio's first look at stderr
    "fstat", "newfstatat",
    // signals, the fault injection (raise, abort, pause) and exit
    "rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "sigaltstack", "getpid", "gettid", "tgkill", "pause",
    "exit", "exit_group", "close",
    // the lease's control socket: the supervisor's notices and the component's reports
    "sendto", "recvfrom", "sendmsg", "recvmsg", "getrandom",
#if defined(__SANITIZE_ADDRESS__)
    // The sanitizers' runtime (./dev test --sanitize) checks whether memory is readable by writing
    // it to a pipe it opens for the purpose (IsAccessibleMemoryRange, from UBSan's vptr checks),
    // and reads a thread's stack bounds when one starts (pthread_getattr_np: sched_getaffinity).
    "pipe2", "sched_getaffinity",
#endif
};

Status kernel_failure(const char* what, int error) {
  return Error{Errc::system, error, what};
}

struct FilterDeleter {
  void operator()(scmp_filter_ctx filter) const { seccomp_release(filter); }
};

}  // namespace

Status keep_only_capabilities(std::span<const int> kept) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> held{};
  if (::syscall(SYS_capget, &header, held.data()) != 0) return kernel_failure("capget", errno);
  const auto holds = [&](int capability) {
    return (held[static_cast<std::size_t>(capability) / 32].permitted >> (static_cast<unsigned>(capability) % 32) & 1u) != 0;
  };
  // The whole bounding set first, while CAP_SETPCAP is still held: no exec can bring a capability
  // back, and a later call (enter_sandbox after a narrowing) finds nothing left to drop there. A
  // process without CAP_SETPCAP (run by an unprivileged user) cannot narrow it, and has nothing an
  // exec could hand back: with no new privileges and no execve in any allow-list, none comes.
  if (holds(CAP_SETPCAP)) {
    for (int capability = 0; capability <= CAP_LAST_CAP; ++capability) {
      if (::prctl(PR_CAPBSET_READ, capability, 0, 0, 0) != 1) continue;
      if (::prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0) {
        return kernel_failure("PR_CAPBSET_DROP", errno);
      }
    }
  }
  std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
  for (const int capability : kept) {
    if (capability < 0 || capability > CAP_LAST_CAP) return Error{Errc::invalid_argument, 0, "no such capability"};
    // One it never had cannot be kept (capset would refuse the whole set); what needs it fails
    // later with its own error.
    if (!holds(capability)) continue;
    auto& word = data[static_cast<std::size_t>(capability) / 32];
    const std::uint32_t bit = 1u << (static_cast<unsigned>(capability) % 32);
    word.effective |= bit;
    word.permitted |= bit;
  }
  header = {_LINUX_CAPABILITY_VERSION_3, 0};
  if (::syscall(SYS_capset, &header, data.data()) != 0) return kernel_failure("capset", errno);
  return {};
}

namespace {

Status allow(scmp_filter_ctx filter, std::string_view name) {
  const int number = seccomp_syscall_resolve_name(std::string(name).c_str());
  if (number == __NR_SCMP_ERROR) return Error{Errc::invalid_argument, 0, "sandbox: unknown system call"};
  if (seccomp_rule_add(filter, SCMP_ACT_ALLOW, number, 0) != 0) return Error{Errc::system, 0, "seccomp_rule_add"};
  return {};
}

constexpr std::string_view kThreadStartCalls[] = {"set_robust_list", "rseq"};

Status allow_thread_starts(scmp_filter_ctx filter) {
  if (seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)) != 0) {
    return Error{Errc::system, 0, "seccomp_rule_add clone"};
  }
  if (seccomp_rule_add(filter, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0) {
    return Error{Errc::system, 0, "seccomp_rule_add clone3"};
  }
  for (const std::string_view name : kThreadStartCalls) {
    if (Status allowed = allow(filter, name); !allowed) return allowed;
  }
  return {};
}

}  // namespace

Status enter_sandbox(const SandboxPolicy& policy) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return kernel_failure("PR_SET_NO_NEW_PRIVS", errno);
  if (Status dropped = keep_only_capabilities(policy.kept_capabilities); !dropped) return dropped;
  std::unique_ptr<void, FilterDeleter> filter(seccomp_init(SCMP_ACT_KILL_PROCESS));
  if (!filter) return Error{Errc::system, 0, "seccomp_init"};
  if (seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1) != 0) return Error{Errc::system, 0, "seccomp TSYNC"};
  if (policy.starts_threads) {
    if (Status allowed = allow_thread_starts(filter.get()); !allowed) return allowed;
  }
  for (const std::string_view name : kRuntimeCalls) {
    if (Status allowed = allow(filter.get(), name); !allowed) return allowed;
  }
  for (const std::string_view name : policy.system_calls) {
    if (Status allowed = allow(filter.get(), name); !allowed) return allowed;
  }
  // ioctl only to ask whether stderr is a terminal (stdio does, once).
  if (seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TCGETS)) != 0) {
    return Error{Errc::system, 0, "seccomp_rule_add ioctl"};
  }
  if (const int loaded = seccomp_load(filter.get()); loaded != 0) return kernel_failure("seccomp_load", -loaded);
  return {};
}

}  // namespace flotilla
