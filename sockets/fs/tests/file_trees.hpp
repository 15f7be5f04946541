// What the file fleet's end-to-end tests share: a generated tree of files to copy into the fleet,
// and the difference between two listings of one.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "recovery/control_socket.hpp"

namespace flotilla::fs::testing {

// A tree of `files` files over nested directories, sizes from empty to several blocks, contents
// from `seed`, and a few relative symlinks.
inline void generate_tree(const std::filesystem::path& root, int files, unsigned seed) {
  std::mt19937 random(seed);
  std::filesystem::create_directories(root);
  std::vector<std::filesystem::path> directories{root};
  for (int i = 0; i < files / 40; ++i) {
    const std::filesystem::path parent = directories[random() % directories.size()];
    directories.push_back(parent / ("dir" + std::to_string(i)));
    std::filesystem::create_directory(directories.back());
  }
  std::string content;
  for (int i = 0; i < files; ++i) {
    const std::filesystem::path& directory = directories[random() % directories.size()];
    const std::size_t size = random() % 4 == 0 ? random() % 20000 : random() % 600;
    content.resize(size);
    for (char& c : content) c = static_cast<char>('a' + random() % 26);
    std::ofstream(directory / ("file" + std::to_string(i) + ".txt"), std::ios::binary) << content;
    if (i % 250 == 0) {
      std::filesystem::create_symlink("file" + std::to_string(i) + ".txt", directory / ("link" + std::to_string(i)));
    }
  }
}

// The lines of `actual` that `expected` lacks and the other way round ("" when equal), a few of each.
inline std::string difference(const std::string& expected, const std::string& actual) {
  auto lines = [](const std::string& text) {
    std::multiset<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.insert(line);
    return out;
  };
  const auto want = lines(expected);
  const auto got = lines(actual);
  std::vector<std::string> missing;
  std::vector<std::string> extra;
  std::set_difference(want.begin(), want.end(), got.begin(), got.end(), std::back_inserter(missing));
  std::set_difference(got.begin(), got.end(), want.begin(), want.end(), std::back_inserter(extra));
  std::string report;
  for (std::size_t i = 0; i < missing.size() && i < 8; ++i) report += "missing: " + missing[i] + "\n";
  for (std::size_t i = 0; i < extra.size() && i < 8; ++i) report += "unexpected: " + extra[i] + "\n";
  if (!report.empty()) {
    report += std::to_string(missing.size()) + " missing, " + std::to_string(extra.size()) + " unexpected\n";
  }
  return report;
}

// Counter `name` of `component` as the supervisor at `socket` reports it (-1: none).
inline std::int64_t counter(const std::string& socket, const std::string& component, const std::string& name) {
  std::string refusal;
  auto reply = flotilla::recovery::control_request(socket, "counters", &refusal);
  if (!reply) return -1;
  const auto table = flotilla::recovery::parse_counters(reply.value());
  const auto c = table.find(component);
  if (c == table.end()) return -1;
  const auto value = c->second.find(name);
  return value == c->second.end() ? -1 : static_cast<std::int64_t>(value->second);
}

// Runs `crash` once file server `server` has served `requests` more requests than when this was
// made: a crash at a point of progress, not of time. Stops looking when destroyed.
class CrashAfterRequests {
 public:
  CrashAfterRequests(const std::string& socket, const std::string& server, std::int64_t requests,
                     std::function<bool()> crash)
      : due_(counter(socket, server, "fs_requests") + requests) {
    looker_ = std::thread([this, socket, server, crash = std::move(crash)] {
      while (!stop_.load()) {
        if (counter(socket, server, "fs_requests") >= due_) {
          crashed_ = crash();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  ~CrashAfterRequests() { stop(); }
  // Whether the crash was injected (false: the work ended first).
  bool stop() {
    stop_ = true;
    if (looker_.joinable()) looker_.join();
    return crashed_.load();
  }

 private:
  std::int64_t due_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> crashed_{false};
  std::thread looker_;
};

}  // namespace flotilla::fs::testing
