// The exec family and posix_spawn: the Flotilla sockets the new program keeps are handed over
// (Runtime::hand_over, exec.cpp), and the new image takes them at load. The C library's own
// exec* functions call the kernel's execve directly, so each one is interposed; system() and
// popen() spawn inside the C library (its own posix_spawn, not the interposed one), so they are
// made here on the interposed posix_spawn, with the C library's documented behaviour.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "components/wire/address.hpp"
#include "dataplane/control_address.hpp"
#include "sockets/preload/calls.hpp"
#include "sockets/preload/files.hpp"
#include "sockets/preload/interfaces.hpp"
#include "sockets/preload/real_calls.hpp"
#include "sockets/preload/sanitizer_runtime.hpp"

extern char** environ;

namespace flotilla::preload {
namespace {

constexpr std::string_view kInheritVariable = "FLOTILLA_INHERIT=";
constexpr std::string_view kPreloadVariable = "LD_PRELOAD=";
constexpr std::string_view kSocketVariable = "FLOTILLA_SOCKET=";

// Where this library was loaded from ("" when the loader does not say).
std::string library_path() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&library_path), &info) == 0 || info.dli_fname == nullptr) return {};
  return info.dli_fname;
}

// `call(envp)` with what the new image needs to run on Flotilla in the environment it passes on:
// this library preloaded, where the stack is, the stack's interface and the grant, also when the
// program cleared its environment (nginx keeps TZ alone; postfix keeps a list of its own), and,
// when sockets go with it, the hand-over record (`in_place`: an exec, else a spawn). The record,
// pins and descriptor flags are undone when it returns (an exec that failed, or a spawn whose
// child has its copies).
template <class Call>
int with_handoff(char* const* envp, bool in_place, Call&& call) {
  Runtime& runtime = Runtime::get();
  Lock lock(runtime.mutex());
  // The grant as this process holds it now: a dup2 onto its number may have moved it.
  const std::string grant_prefix = std::string(flotilla::kGrantVariable) + "=";
  const int grant = runtime.grant();
  std::string grant_variable = grant_prefix + std::to_string(grant);
  Runtime::ExecHandoff handoff;
  const bool handing_over = runtime.hand_over(handoff, in_place);
  if (!handing_over) lock.unlock();
  std::vector<char*> environment;
  char* preload = nullptr;
  bool names_stack = false;
  bool names_interface = false;
  const std::string index_prefix = std::string(kInterfaceIndexVariable) + "=";
  const auto starts_with = [](const char* entry, std::string_view prefix) {
    return std::strncmp(entry, prefix.data(), prefix.size()) == 0;
  };
  for (char* const* entry = envp; entry != nullptr && *entry != nullptr; ++entry) {
    if (starts_with(*entry, kInheritVariable) || starts_with(*entry, grant_prefix)) continue;
    if (starts_with(*entry, kPreloadVariable)) {
      preload = *entry;
      continue;
    }
    names_stack = names_stack || starts_with(*entry, kSocketVariable);
    names_interface = names_interface || starts_with(*entry, index_prefix);
    environment.push_back(*entry);
  }
  std::string preload_variable = preload != nullptr ? preload : std::string(kPreloadVariable);
  const std::string library = library_path();
  if (!library.empty() && preload_variable.find(library) == std::string::npos) {
    const bool empty = preload_variable.size() == kPreloadVariable.size();
    const std::string loaded = preload_list(library);
    preload_variable.insert(kPreloadVariable.size(), empty ? loaded : loaded + ":");
  }
  environment.push_back(preload_variable.data());
  std::string socket_variable = std::string(kSocketVariable) + control_socket_path();
  if (!names_stack) environment.push_back(socket_variable.data());
  // And the stack's interface, which the new image's sockets report (IP_PKTINFO, getifaddrs).
  const auto stack = stack_interface();
  std::string index_variable;
  std::string address_variable;
  if (!names_interface && stack) {
    index_variable = index_prefix + std::to_string(stack->index);
    address_variable = std::string(kInterfaceAddressVariable) + "=" +
                       wire::format_cidr(wire::Ipv4Cidr{stack->address, stack->prefix_length});
    environment.push_back(index_variable.data());
    environment.push_back(address_variable.data());
  }
  if (grant >= 0) environment.push_back(grant_variable.data());
  std::string inherit_variable = std::string(kInheritVariable) + std::to_string(handoff.record);
  if (handing_over) environment.push_back(inherit_variable.data());
  environment.push_back(nullptr);
  if (!handing_over) return call(environment.data());
  // A vfork child's lock is its parent's thread's, which an exec would leave taken.
  if (runtime.in_vfork_child()) lock.unlock();
  const int result = call(environment.data());
  const int error = errno;
  if (!lock.owns_lock()) lock.lock();
  runtime.end_handoff(handoff);
  errno = error;
  return result;
}

constexpr const char* kShell = "/bin/sh";

// The shell running `command`, as the C library starts it: `sh -c -- command`.
int spawn_shell(pid_t& pid, const char* command, const posix_spawn_file_actions_t* actions,
                const posix_spawnattr_t* attributes) {
  const char* argv[] = {"sh", "-c", "--", command, nullptr};
  return ::posix_spawn(&pid, kShell, actions, attributes, const_cast<char* const*>(argv), environ);
}

// waitpid without EINTR: the child's wait status, or -1 with errno.
int wait_status(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

// system(): SIGINT and SIGQUIT are ignored and SIGCHLD blocked in the caller while any system()
// runs (the first one in saves the dispositions, the last one out puts them back); the child
// starts with the caller's mask and those signals at their default (unless the caller ignored them).
struct SystemSignals {
  std::mutex mutex;
  int running = 0;
  struct sigaction interrupt {};
  struct sigaction quit {};
};
SystemSignals g_system_signals;

int run_system(const char* command) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  {
    std::lock_guard guard(g_system_signals.mutex);
    if (g_system_signals.running++ == 0) {
      (void)::sigaction(SIGINT, &ignore, &g_system_signals.interrupt);
      (void)::sigaction(SIGQUIT, &ignore, &g_system_signals.quit);
    }
  }
  sigset_t child_signal;
  sigset_t caller_mask;
  sigemptyset(&child_signal);
  sigaddset(&child_signal, SIGCHLD);
  (void)::sigprocmask(SIG_BLOCK, &child_signal, &caller_mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  if (g_system_signals.interrupt.sa_handler != SIG_IGN) sigaddset(&defaults, SIGINT);
  if (g_system_signals.quit.sa_handler != SIG_IGN) sigaddset(&defaults, SIGQUIT);
  posix_spawnattr_t attributes;
  (void)::posix_spawnattr_init(&attributes);
  (void)::posix_spawnattr_setsigmask(&attributes, &caller_mask);
  (void)::posix_spawnattr_setsigdefault(&attributes, &defaults);
  (void)::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int spawned = spawn_shell(pid, command, nullptr, &attributes);
  (void)::posix_spawnattr_destroy(&attributes);
  // A shell that cannot start is reported as one that exited with 127, as POSIX says.
  int status = spawned == 0 ? wait_status(pid) : W_EXITCODE(127, 0);
  const int error = errno;
  {
    std::lock_guard guard(g_system_signals.mutex);
    if (--g_system_signals.running == 0) {
      (void)::sigaction(SIGINT, &g_system_signals.interrupt, nullptr);
      (void)::sigaction(SIGQUIT, &g_system_signals.quit, nullptr);
    }
  }
  (void)::sigprocmask(SIG_SETMASK, &caller_mask, nullptr);
  errno = error;
  return status;
}

// The streams popen() opened and not yet closed, with their children: a child closes the others'
// descriptors (POSIX), and pclose waits for its stream's child only.
struct PipedChild {
  FILE* stream;
  int fd;  // the stream's descriptor (the stream itself may be gone: fclose'd, not pclose'd)
  pid_t pid;
};
std::mutex g_piped_mutex;
std::vector<PipedChild> g_piped;

FILE* open_piped(const char* command, const char* mode) {
  // One of "r" and "w", and (a C library extension) "e": the caller's end gets FD_CLOEXEC; in any
  // order, as the C library reads it.
  bool reading = false;
  bool writing = false;
  bool close_on_exec = false;
  for (const char* flag = mode; flag != nullptr && *flag != '\0'; ++flag) {
    reading = reading || *flag == 'r';
    writing = writing || *flag == 'w';
    close_on_exec = close_on_exec || *flag == 'e';
    if (*flag != 'r' && *flag != 'w' && *flag != 'e') reading = writing = true;  // refused below
  }
  if (reading == writing) {
    errno = EINVAL;
    return nullptr;
  }
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) return nullptr;
  const int ours = reading ? ends[0] : ends[1];
  const int theirs = reading ? ends[1] : ends[0];
  const int target = reading ? STDOUT_FILENO : STDIN_FILENO;
  std::lock_guard guard(g_piped_mutex);
  posix_spawn_file_actions_t actions;
  (void)::posix_spawn_file_actions_init(&actions);
  // dup2 onto itself clears FD_CLOEXEC (POSIX 2017, the C library since 2.29).
  int failed = ::posix_spawn_file_actions_adddup2(&actions, theirs, target);
  for (const PipedChild& other : g_piped) {
    // (A stream fclose'd instead of pclose'd is still listed: a descriptor no longer open would
    // fail the spawn.)
    if (failed == 0 && other.fd != target && ::fcntl(other.fd, F_GETFD) >= 0) {
      failed = ::posix_spawn_file_actions_addclose(&actions, other.fd);
    }
  }
  pid_t pid = 0;
  if (failed == 0) failed = spawn_shell(pid, command, &actions, nullptr);
  (void)::posix_spawn_file_actions_destroy(&actions);
  ::close(theirs);
  FILE* stream = nullptr;
  if (failed == 0) {
    if (!close_on_exec) (void)::fcntl(ours, F_SETFD, 0);
    stream = ::fdopen(ours, reading ? "r" : "w");
    if (stream == nullptr) failed = errno;
  }
  if (stream == nullptr) {
    ::close(ours);
    if (failed != 0 && pid > 0) (void)wait_status(pid);
    errno = failed;
    return nullptr;
  }
  g_piped.push_back({stream, ours, pid});
  return stream;
}

int close_piped(FILE* stream) {
  pid_t pid = -1;
  {
    std::lock_guard guard(g_piped_mutex);
    for (auto entry = g_piped.begin(); entry != g_piped.end(); ++entry) {
      if (entry->stream != stream) continue;
      pid = entry->pid;
      g_piped.erase(entry);
      break;
    }
  }
  if (pid < 0) {
    errno = ECHILD;  // not a stream of popen's
    return -1;
  }
  (void)std::fclose(stream);
  return wait_status(pid);
}

// The arguments of an execl-style call, up to its null pointer.
std::vector<char*> list_arguments(const char* first, va_list& arguments) {
  std::vector<char*> argv{const_cast<char*>(first)};
  while (argv.back() != nullptr) argv.push_back(va_arg(arguments, char*));
  return argv;
}

}  // namespace

__attribute__((constructor)) void take_sockets_handed_over() {
  Runtime::get().take_handoff();
  for (int fd = 0; fd <= 2; ++fd) standard_stream_follows(fd);  // a socket handed over as stdin or stdout
}

}  // namespace flotilla::preload

using flotilla::preload::with_handoff;

FLOTILLA_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
  return with_handoff(envp, true, [&](char* const* env) { return REAL(execve)(path, argv, env); });
}

FLOTILLA_EXPORT int execveat(int dirfd, const char* path, char* const argv[], char* const envp[], int flags) {
  return with_handoff(envp, true, [&](char* const* env) { return REAL(execveat)(dirfd, path, argv, env, flags); });
}

FLOTILLA_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
  return with_handoff(envp, true, [&](char* const* env) { return REAL(fexecve)(fd, argv, env); });
}

FLOTILLA_EXPORT int execv(const char* path, char* const argv[]) { return execve(path, argv, environ); }

FLOTILLA_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
  return with_handoff(envp, true, [&](char* const* env) { return REAL(execvpe)(file, argv, env); });
}

FLOTILLA_EXPORT int execvp(const char* file, char* const argv[]) { return execvpe(file, argv, environ); }

FLOTILLA_EXPORT int execl(const char* path, const char* first, ...) {
  va_list arguments;
  va_start(arguments, first);
  std::vector<char*> argv = flotilla::preload::list_arguments(first, arguments);
  va_end(arguments);
  return execve(path, argv.data(), environ);
}

FLOTILLA_EXPORT int execlp(const char* file, const char* first, ...) {
  va_list arguments;
  va_start(arguments, first);
  std::vector<char*> argv = flotilla::preload::list_arguments(first, arguments);
  va_end(arguments);
  return execvpe(file, argv.data(), environ);
}

FLOTILLA_EXPORT int execle(const char* path, const char* first, ...) {
  va_list arguments;
  va_start(arguments, first);
  std::vector<char*> argv = flotilla::preload::list_arguments(first, arguments);
  char* const* envp = va_arg(arguments, char* const*);
  va_end(arguments);
  return execve(path, argv.data(), envp);
}

FLOTILLA_EXPORT int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
                                const posix_spawnattr_t* attributes, char* const argv[], char* const envp[]) {
  return with_handoff(envp, false, [&](char* const* env) { return REAL(posix_spawn)(pid, path, actions, attributes, argv, env); });
}

FLOTILLA_EXPORT int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* actions,
                                 const posix_spawnattr_t* attributes, char* const argv[], char* const envp[]) {
  return with_handoff(envp, false, [&](char* const* env) { return REAL(posix_spawnp)(pid, file, actions, attributes, argv, env); });
}

// system(NULL) says whether a shell is there.
FLOTILLA_EXPORT int system(const char* command) {
  if (command == nullptr) return ::access(flotilla::preload::kShell, X_OK) == 0 ? 1 : 0;
  return flotilla::preload::run_system(command);
}

FLOTILLA_EXPORT FILE* popen(const char* command, const char* mode) {
  return flotilla::preload::open_piped(command, mode);
}

FLOTILLA_EXPORT int pclose(FILE* stream) { return flotilla::preload::close_piped(stream); }
