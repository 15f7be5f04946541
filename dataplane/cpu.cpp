#include "dataplane/cpu.hpp"

#include <cpuid.h>
#include <sched.h>

namespace flotilla {

bool cpu_has_waitpkg() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & (1u << 5)) != 0;  // CPUID.(EAX=7,ECX=0):ECX[5] = WAITPKG
}

Status pin_to_core(int core) {
  if (core < 0 || core >= CPU_SETSIZE) return Error{Errc::invalid_argument, 0, "pin_to_core"};
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) return Error::from_errno("sched_setaffinity");
  return {};
}

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return CPU_COUNT(&set);
}

}  // namespace flotilla
