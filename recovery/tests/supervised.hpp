// What the supervisor's tests share: where meson put the component binaries, and driving a
// supervisor until something happens.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "recovery/registrar.hpp"
#include "recovery/supervisor.hpp"

namespace flotilla::recovery {

// The echo component (meson sets ECHO_COMPONENT); "" when run outside meson.
inline std::string echo_binary() {
  const char* path = std::getenv("ECHO_COMPONENT");
  return path != nullptr ? path : "";
}

// The folder of the component binaries (the echo component's).
inline std::string component_folder() { return std::filesystem::path(echo_binary()).parent_path().string(); }

// Runs the supervisor until `done()` or the deadline; returns whether done() became true.
template <class Done>
bool run_until(Supervisor& supervisor, Done&& done,
               std::chrono::milliseconds deadline = std::chrono::milliseconds(20'000)) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    supervisor.poll(std::chrono::milliseconds(2));
  }
  return true;
}

// Whether process `pid` runs `binary` by now: only then does it hold exactly the descriptors it was
// granted (between fork and exec it holds the supervisor's).
inline bool runs(pid_t pid, const std::string& binary) {
  std::error_code error;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", error) ==
         std::filesystem::canonical(binary, error);
}

inline const NameRow* row_of(const std::vector<NameRow>& rows, const std::string& name) {
  for (const NameRow& row : rows) {
    if (row.name == name) return &row;
  }
  return nullptr;
}

}  // namespace flotilla::recovery
