#include "drivers/dpdk/runtime_dirs.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>

namespace flotilla::drivers {

std::filesystem::path dpdk_runtime_parent() {
  if (::getuid() == 0) return "/var/run/dpdk";
  const char* xdg = ::getenv("XDG_RUNTIME_DIR");
  return std::filesystem::path(xdg != nullptr ? xdg : "/tmp") / "dpdk";
}

void remove_stale_dpdk_runtime_dirs() {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dpdk_runtime_parent(), error)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= 3 || name.compare(0, 3, "flo") != 0) continue;
    if (!std::all_of(name.begin() + 3, name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const long pid = std::strtol(name.c_str() + 3, nullptr, 10);
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    std::filesystem::remove_all(entry.path(), ignored);
  }
}

}  // namespace flotilla::drivers
