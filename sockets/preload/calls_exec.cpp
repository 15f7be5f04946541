// The exec family and posix_spawn: the Flotilla sockets the new program keeps are handed over
// (Runtime::hand_over, exec.cpp), and the new image takes them at load. The C library's own
// exec* functions call the kernel's execve directly, so each one is interposed; system() and
// popen() spawn inside the C library and hand nothing over.
#include <dlfcn.h>
#include <spawn.h>
#include <unistd.h>

#include <cstdarg>
#include <cstring>
#include <string>
#include <vector>

#include "sockets/preload/calls.hpp"
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

// `call(envp)` with the hand-over record named in the environment it passes on (`in_place`: an
// exec, else a spawn); the record, pins and descriptor flags are undone when it returns (an exec
// that failed, or a spawn whose child has its copies).
template <class Call>
int with_handoff(char* const* envp, bool in_place, Call&& call) {
  Runtime& runtime = Runtime::get();
  Lock lock(runtime.mutex());
  Runtime::ExecHandoff handoff;
  if (!runtime.hand_over(handoff, in_place)) {
    lock.unlock();
    return call(envp);
  }
  std::string variable(kInheritVariable);
  variable += std::to_string(handoff.record);
  std::vector<char*> environment;
  char* preload = nullptr;
  bool names_stack = false;
  for (char* const* entry = envp; entry != nullptr && *entry != nullptr; ++entry) {
    if (std::strncmp(*entry, kInheritVariable.data(), kInheritVariable.size()) == 0) continue;
    if (std::strncmp(*entry, kPreloadVariable.data(), kPreloadVariable.size()) == 0) {
      preload = *entry;
      continue;
    }
    names_stack = names_stack || std::strncmp(*entry, kSocketVariable.data(), kSocketVariable.size()) == 0;
    environment.push_back(*entry);
  }
  // Only an image that loads this library can take the sockets: a program that cleared its
  // environment (nginx keeps TZ alone) still passes it on, and where the stack is.
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
  environment.push_back(variable.data());
  environment.push_back(nullptr);
  const int result = call(environment.data());
  const int error = errno;
  runtime.end_handoff(handoff);
  errno = error;
  return result;
}

// The arguments of an execl-style call, up to its null pointer.
std::vector<char*> list_arguments(const char* first, va_list& arguments) {
  std::vector<char*> argv{const_cast<char*>(first)};
  while (argv.back() != nullptr) argv.push_back(va_arg(arguments, char*));
  return argv;
}

}  // namespace

__attribute__((constructor)) void take_sockets_handed_over() { Runtime::get().take_handoff(); }

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
