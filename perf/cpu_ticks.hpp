// CPU time as the kernel counts it, for the benchmarks' cost figures: the machine-wide counters of
// /proc/stat (busy, idle, steal) and one process's own and reaped children's time from
// /proc/<pid>/stat. All in clock ticks (sysconf(_SC_CLK_TCK) a second).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace flotilla::bench {

// The machine-wide CPU time counters of /proc/stat's "cpu" line.
struct CpuTicks {
  enum Field { user, nice, system, idle, iowait, irq, softirq, steal, count };
  std::array<std::uint64_t, count> ticks{};

  static CpuTicks read() {
    CpuTicks now;
    std::ifstream stat("/proc/stat");
    std::string label;
    stat >> label;
    for (auto& field : now.ticks) stat >> field;
    if (!stat || label != "cpu") now.ticks.fill(0);
    return now;
  }
  // Everything but idle and iowait: user and system time of every process, interrupts and
  // softirqs (where the kernel's own TCP/IP work mostly runs), and steal.
  std::uint64_t busy() const { return total() - ticks[idle] - ticks[iowait]; }
  std::uint64_t total() const {
    std::uint64_t sum = 0;
    for (const auto field : ticks) sum += field;
    return sum;
  }
};

// How busy other processes keep the CPUs while this one sleeps, from 0 to 1.
inline double others_cpu_share(std::chrono::milliseconds window) {
  const CpuTicks before = CpuTicks::read();
  std::this_thread::sleep_for(window);
  const CpuTicks after = CpuTicks::read();
  const std::uint64_t total = after.total() - before.total();
  return total == 0 ? 0 : static_cast<double>(after.busy() - before.busy()) / static_cast<double>(total);
}

inline double ticks_to_seconds(std::uint64_t ticks) {
  return static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// One process's CPU time from /proc/<pid>/stat: its own (utime + stime) and that of the children it
// has reaped (cutime + cstime), its parent and its process group. `alive` is false when the process
// is gone.
struct ProcessTicks {
  std::uint64_t own = 0;
  std::uint64_t reaped_children = 0;
  pid_t parent = -1;
  pid_t group = -1;
  bool alive = false;

  static ProcessTicks read(pid_t pid) {
    ProcessTicks out;
    std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (pid <= 0 || !std::getline(file, line)) return out;
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const std::size_t name_end = line.rfind(')');
    if (name_end == std::string::npos) return out;
    std::istringstream fields(line.substr(name_end + 1));
    std::string field;
    std::uint64_t times[4] = {};
    // After the name come state (field 3), ppid (4), pgrp (5) ... utime (14), stime (15), cutime (16), cstime (17).
    for (int number = 3; number <= 17 && fields >> field; ++number) {
      if (number == 4) out.parent = static_cast<pid_t>(std::stol(field));
      if (number == 5) out.group = static_cast<pid_t>(std::stol(field));
      if (number >= 14) times[number - 14] = std::stoull(field);
    }
    if (!fields) return out;
    out.own = times[0] + times[1];
    out.reaped_children = times[2] + times[3];
    out.alive = true;
    return out;
  }
};

}  // namespace flotilla::bench
