// A program run in the background for a demo, a test or a benchmark: started in a process group
// of its own with its stdout and stderr going to a file, and stopped (the whole group: a program
// started through `ip netns exec` or `flotilla run` has children) when it overruns its time or the
// object goes out of scope. Control-path only.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace flotilla::cli {

class Program {
 public:
  // `env`: variables set for the program only.
  Program(std::vector<std::string> argv, std::filesystem::path log,
          const std::vector<std::pair<std::string, std::string>>& env = {})
      : log_(std::move(log)) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int out = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (out < 0 || in < 0) ::_exit(126);
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
      std::vector<char*> words;
      for (auto& word : argv) words.push_back(word.data());
      words.push_back(nullptr);
      ::execvp(words[0], words.data());
      ::_exit(127);
    }
    if (pid_ > 0) ::setpgid(pid_, pid_);  // the child does the same; whichever runs first wins
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  ~Program() { stop(); }

  bool started() const { return pid_ > 0 || exit_status_.has_value(); }
  // Whether it is still running (a program that ended is reaped here).
  bool running() { return pid_ > 0 && !reap(WNOHANG); }
  // Its process id, which is also its process group's; -1 once it ended.
  pid_t pid() const { return pid_; }
  // Its exit status once it ended (-1 when a signal ended it).
  std::optional<int> exit_status() const { return exit_status_; }

  // Waits up to `limit` for the program to end by itself and returns its exit status; nullopt
  // when it overran, and it is then stopped.
  std::optional<int> wait(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (running()) {
      if (std::chrono::steady_clock::now() > until) {
        stop();
        return std::nullopt;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return exit_status_;
  }

  // SIGTERM to the group, then SIGKILL after 5 s.
  void stop() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (running() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      (void)reap(0);
    }
  }

  std::string output() const {
    std::ifstream file(log_);
    return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }

 private:
  bool reap(int flags) {
    int status = 0;
    if (::waitpid(pid_, &status, flags) != pid_) return false;
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    return true;
  }

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::filesystem::path log_;
};

// Whether `program` is an executable in one of $PATH's folders.
inline bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  const std::string folders = path != nullptr ? path : "/usr/bin:/bin";
  for (std::size_t at = 0; at <= folders.size();) {
    const std::size_t end = std::min(folders.find(':', at), folders.size());
    if (::access((folders.substr(at, end - at) + "/" + program).c_str(), X_OK) == 0) return true;
    at = end + 1;
  }
  return false;
}

}  // namespace flotilla::cli
