// Crashes: random operations from several clients while servers crash at random points (between
// requests, and after running a request but before its replies left). Every operation must
// succeed (clients wait and retry), and the final tree must equal a model of the operations: every
// acknowledged change is there and nothing else. Each client works in its own distributed
// directory, so the model is the union of per-client sequential models.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "sockets/fs/tests/fleet_sim.hpp"
#include "sockets/fs/tests/fs_api.hpp"

namespace flotilla::fs::testing {
namespace {

#ifdef FLOTILLA_FS_SOAK
constexpr std::uint64_t kSeeds = 400;
constexpr int kOperations = 60;
#else
constexpr std::uint64_t kSeeds = 12;
constexpr int kOperations = 25;
#endif

constexpr char kDirectoryMark[] = "<dir>";

// path -> content, or kDirectoryMark for a directory.
using Model = std::map<std::string, std::string>;

// Random operations on `root` that the model says must succeed; checks each result.
void random_operations(FsApi& api, const std::string& root, std::uint64_t seed, int count,
                       Model& model) {
  std::mt19937_64 random(seed);
  ASSERT_EQ(api.mkdir(root, true), 0);
  model[root] = kDirectoryMark;
  auto files = [&] {
    std::vector<std::string> out;
    for (const auto& [path, content] : model) {
      if (content != kDirectoryMark && path.rfind(root + "/", 0) == 0) out.push_back(path);
    }
    return out;
  };
  auto empty_subdirectories = [&] {
    std::vector<std::string> out;
    for (const auto& [path, content] : model) {
      if (content != kDirectoryMark || path == root || path.rfind(root + "/", 0) != 0) continue;
      const bool empty = std::none_of(model.begin(), model.end(), [&](const auto& entry) {
        return entry.first.rfind(path + "/", 0) == 0;
      });
      if (empty) out.push_back(path);
    }
    return out;
  };
  auto directories = [&] {
    std::vector<std::string> out;
    for (const auto& [path, content] : model) {
      if (content == kDirectoryMark && path.rfind(root, 0) == 0) out.push_back(path);
    }
    return out;
  };
  auto pick = [&](const std::vector<std::string>& from) { return from[random() % from.size()]; };
  for (int i = 0; i < count; ++i) {
    const int choice = static_cast<int>(random() % 7);
    const std::string name = "n" + std::to_string(random() % 12);
    if (choice <= 1) {  // create or overwrite a file
      const std::string path = pick(directories()) + "/" + name;
      if (model.contains(path) && model[path] == kDirectoryMark) continue;
      const std::string content = "c" + std::to_string(random() % 100000) +
                                  std::string(random() % 3 == 0 ? 5000 : 10, 'x');
      ASSERT_EQ(api.spit(path, content), 0) << path;
      model[path] = content;
    } else if (choice == 2 && !files().empty()) {  // append
      const std::string path = pick(files());
      const int fd = api.open(path, O_WRONLY | O_APPEND);
      ASSERT_GE(fd, 0) << path;
      ASSERT_EQ(api.write(fd, "+more"), 5);
      ASSERT_EQ(api.close(fd), 0);
      model[path] += "+more";
    } else if (choice == 3 && !files().empty()) {  // rename, maybe over another file
      const std::string from = pick(files());
      const std::string to = pick(directories()) + "/" + name;
      if (from == to || (model.contains(to) && model[to] == kDirectoryMark)) continue;
      ASSERT_EQ(api.rename(from, to), 0) << from << " -> " << to;
      model[to] = model[from];
      model.erase(from);
    } else if (choice == 4 && !files().empty()) {  // unlink
      const std::string path = pick(files());
      ASSERT_EQ(api.unlink(path), 0) << path;
      model.erase(path);
    } else if (choice == 5) {  // mkdir
      const std::string path = root + "/d" + std::to_string(random() % 4);
      if (model.contains(path)) continue;
      ASSERT_EQ(api.mkdir(path, random() % 2 == 0), 0) << path;
      model[path] = kDirectoryMark;
    } else if (choice == 6 && !empty_subdirectories().empty()) {  // rmdir
      const std::string path = pick(empty_subdirectories());
      ASSERT_EQ(api.rmdir(path), 0) << path;
      model.erase(path);
    }
  }
}

// Walks the fleet's tree under `root` into a model.
void read_tree(FsApi& api, const std::string& root, Model& out) {
  out[root] = kDirectoryMark;
  std::vector<std::string> names;
  ASSERT_EQ(api.readdir(root, names), 0) << root;
  std::set<std::string> unique(names.begin(), names.end());
  ASSERT_EQ(unique.size(), names.size()) << "readdir listed an entry twice in " << root;
  for (const std::string& name : names) {
    const std::string path = root + "/" + name;
    if (api.stat_type(path) == S_IFDIR) {
      read_tree(api, path, out);
    } else {
      std::string content;
      ASSERT_EQ(api.slurp(path, content), 0) << path;
      out[path] = content;
    }
  }
}

struct CrashTotals {
  std::uint64_t crashes = 0;
  std::uint64_t replayed = 0;
  std::uint64_t swallowed = 0;
};

void crash_run(std::uint64_t seed, double crash_chance, std::uint16_t servers,
               CrashTotals& totals) {
  SimOptions options;
  options.seed = seed;
  options.servers = servers;
  options.clients = 3;
  options.crash_chance = crash_chance;
  options.state_bytes = 256 * 1024;  // small: the logs wrap into checkpoints
  FleetSim sim(options);
  std::vector<Model> models(3);
  std::vector<FleetSim::Program> programs;
  for (std::size_t c = 0; c < 3; ++c) {
    programs.push_back([&, c](Client& client) {
      FleetApi api(client);
      random_operations(api, "c" + std::to_string(c), seed * 31 + c, kOperations, models[c]);
    });
  }
  ASSERT_TRUE(sim.run(programs)) << "seed " << seed;
  EXPECT_GT(sim.crashes(), 0u) << "seed " << seed;
  totals.crashes += sim.crashes();
  totals.replayed += sim.replayed();
  totals.swallowed += sim.swallowed();
  Model expected;
  for (const Model& model : models) expected.insert(model.begin(), model.end());
  Model found;
  ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
    FleetApi api(client);
    for (std::size_t c = 0; c < 3; ++c) read_tree(api, "c" + std::to_string(c), found);
  }));
  EXPECT_EQ(found.size(), expected.size()) << "seed " << seed;
  for (const auto& [path, content] : expected) {
    auto it = found.find(path);
    if (it == found.end()) {
      ADD_FAILURE() << "seed " << seed << ": missing " << path;
      continue;
    }
    EXPECT_EQ(it->second.size(), content.size()) << "seed " << seed << ": " << path;
    EXPECT_TRUE(it->second == content) << "seed " << seed << ": content of " << path;
  }
  for (const auto& [path, content] : found) {
    EXPECT_TRUE(expected.contains(path)) << "seed " << seed << ": extra " << path;
  }
  for (ServerIndex s = 0; s < sim.servers(); ++s) EXPECT_EQ(sim.server(s).stats().malformed, 0u);
}

TEST(Crash, RandomOperationsWithCrashesMatchTheModel) {
  CrashTotals totals;
  for (std::uint64_t seed = 1; seed <= kSeeds; ++seed) crash_run(seed, 0.01, 3, totals);
  // The runs did crash servers after they logged a change but before its reply left.
  EXPECT_GT(totals.swallowed, 0u);
  EXPECT_GT(totals.replayed, 0u);
}

TEST(Crash, FrequentCrashesStillFinishRenamesAndRmdirs) {
  CrashTotals totals;
  for (std::uint64_t seed = 1; seed <= kSeeds / 2; ++seed) crash_run(1000 + seed, 0.05, 2, totals);
  EXPECT_GT(totals.crashes, kSeeds);
}

TEST(Crash, NoCrashesGiveTheSameTreeAsTheModel) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    SimOptions options;
    options.seed = seed;
    options.clients = 3;
    FleetSim sim(options);
    Model model;
    ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
      FleetApi api(client);
      random_operations(api, "solo", seed, 40, model);
      Model found;
      read_tree(api, "solo", found);
      EXPECT_EQ(found, model);
    }));
  }
}

// An rmdir interrupted between its phases by a crash of the directory's home server is finished
// after the restart; so is a cross-server rename interrupted between ADD_MAP and RM_MAP.
TEST(Crash, InterruptedCrossServerOperationsAreFinished) {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    SimOptions options;
    options.seed = seed;
    options.servers = 3;
    options.crash_chance = 0.15;
    FleetSim sim(options);
    ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
      FleetApi api(client);
      ASSERT_EQ(api.mkdir("gone", true), 0);
      ASSERT_EQ(api.spit("from", "moved"), 0);
      ASSERT_EQ(api.rename("from", "to"), 0);
      ASSERT_EQ(api.rmdir("gone"), 0);
    }));
    ASSERT_TRUE(sim.run_one(1, [&](Client& client) {
      FleetApi api(client);
      std::string out;
      ASSERT_EQ(api.slurp("to", out), 0);
      EXPECT_EQ(out, "moved");
      EXPECT_EQ(api.stat_size("from"), -ENOENT);
      EXPECT_EQ(api.stat_size("gone"), -ENOENT);
      std::vector<std::string> names;
      ASSERT_EQ(api.readdir("", names), 0);
      EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), std::set<std::string>{"to"});
    }));
  }
}

}  // namespace
}  // namespace flotilla::fs::testing
