// What the supervisor's tests share: where meson put the component binaries, and driving a
// supervisor until something happens.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "recovery/application_seats.hpp"
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

// Creates a supervisor of `config`, attaches a registrar and application seats where their
// pointers are given, and starts it. Fails the test at the first step that fails (call it inside
// ASSERT_NO_FATAL_FAILURE).
inline void start_supervisor(SupervisorConfig config, const std::string& binary_dir,
                             std::unique_ptr<Supervisor>& supervisor,
                             std::unique_ptr<Registrar>* registrar = nullptr,
                             std::unique_ptr<ApplicationSeats>* seats = nullptr) {
  auto created = Supervisor::create(std::move(config), binary_dir);
  ASSERT_TRUE(created) << created.error().message();
  supervisor = std::move(created.value());
  if (registrar != nullptr) {
    auto attached = Registrar::attach(*supervisor);
    ASSERT_TRUE(attached) << attached.error().message();
    *registrar = std::move(attached.value());
  }
  if (seats != nullptr) {
    auto attached = ApplicationSeats::attach(*supervisor);
    ASSERT_TRUE(attached) << attached.error().message();
    *seats = std::move(attached.value());
  }
  ASSERT_TRUE(supervisor->start());
}

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
