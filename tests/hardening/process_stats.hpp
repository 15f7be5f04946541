// What the hardening tests read of a running process in /proc: the CPU time it has used (to see that
// it does not spin) and its private memory (to see that it stays bounded).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "perf/cpu_ticks.hpp"

namespace flotilla::testing {

// Ticks of CPU time (user and system, all threads) a process has used; -1 when it is gone.
inline std::int64_t cpu_ticks(pid_t pid) {
  const bench::ProcessTicks ticks = bench::ProcessTicks::read(pid);
  return ticks.alive ? static_cast<std::int64_t>(ticks.own) : -1;
}

// A process's private resident memory (RssAnon) in KiB; -1 when it is gone.
inline std::int64_t private_rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoll(line.substr(8));
  }
  return -1;
}

}  // namespace flotilla::testing
