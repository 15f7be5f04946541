// Small CPU facts and instructions the runtime needs: cache-line size, pause, core pinning,
// and run-time detection of WAITPKG (UMONITOR/UMWAIT).
#pragma once

#include <cstddef>

#include "dataplane/result.hpp"

namespace flotilla {

inline constexpr std::size_t kCacheLine = 64;

inline void cpu_relax() { __builtin_ia32_pause(); }

// True when CPUID reports WAITPKG, so a waiter can use UMWAIT instead of a futex.
bool cpu_has_waitpkg();

// Pins the calling thread to one core.
Status pin_to_core(int core);

// Number of cores this process may run on.
int usable_cores();

}  // namespace flotilla
