// The C library's own versions of the calls the preload library interposes, found once with
// dlsym(RTLD_NEXT). Every descriptor that is not a Flotilla socket goes straight to them.
#pragma once

#include <dlfcn.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>

namespace flotilla::preload {

// REAL(name) is the next definition of `name` after this library, resolved on first use. A
// function-local static per call site: the lookup runs once, thread-safely, and never on the
// program's load path (most descriptors a program uses are not ours).
template <class Function>
Function* resolve_real(const char* name) {
  return reinterpret_cast<Function*>(::dlsym(RTLD_NEXT, name));
}

#define REAL(name)                                                                             \
  ([]() {                                                                                      \
    static auto* const function = ::flotilla::preload::resolve_real<decltype(::name)>(#name); \
    return function;                                                                           \
  }())

}  // namespace flotilla::preload
