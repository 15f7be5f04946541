// Differential test: the same seeded random operations run against the fleet and against a real
// tmpfs directory, and every result (return code, file content, directory listing) must agree.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <set>
#include <sstream>

#include "sockets/fs/tests/fleet_sim.hpp"
#include "sockets/fs/tests/fs_api.hpp"

namespace flotilla::fs::testing {
namespace {

#ifdef FLOTILLA_FS_SOAK
constexpr std::uint64_t kSeeds = 300;
#else
constexpr std::uint64_t kSeeds = 25;
#endif
constexpr int kOperations = 150;

std::string temporary_directory() {
  for (const char* root : {"/dev/shm", "/tmp"}) {
    std::string pattern = std::string(root) + "/flotilla-fs-diff-XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) return pattern;
  }
  return {};
}

// One operation's observable result, as text.
using Trace = std::vector<std::string>;

void run_operations(FsApi& api, std::uint64_t seed, Trace& trace) {
  std::mt19937_64 random(seed);
  const std::vector<std::string> dirs = {"", "d1/", "d2/", "d1/e/"};
  const std::vector<std::string> names = {"a", "b", "c", "d1", "d2", "d3", "e"};
  auto path = [&] {
    const std::string& dir = dirs[random() % dirs.size()];
    return dir + names[random() % names.size()];
  };
  auto sorted_listing = [&](const std::string& dir) {
    std::vector<std::string> listing;
    const int rc = api.readdir(dir.empty() ? "" : dir, listing);
    std::sort(listing.begin(), listing.end());
    std::ostringstream out;
    out << rc << ":";
    for (const auto& name : listing) out << name << ",";
    return out.str();
  };
  for (int i = 0; i < kOperations; ++i) {
    std::ostringstream line;
    const std::string p = path();
    const std::string q = path();
    line << i << " ";
    switch (random() % 11) {
      case 0:
      case 1: {
        const std::string content(random() % 6000, static_cast<char>('a' + random() % 26));
        line << "spit " << p << " " << api.spit(p, content);
        break;
      }
      case 2: {
        const int fd = api.open(p, O_WRONLY | O_APPEND);
        line << "append " << p << " " << (fd < 0 ? fd : 0);
        if (fd >= 0) {
          line << " " << api.write(fd, "+tail") << " " << api.close(fd);
        }
        break;
      }
      case 3: {
        std::string content;
        const int rc = api.slurp(p, content);
        line << "slurp " << p << " " << rc << " " << content.size() << " "
             << std::hash<std::string>{}(content);
        break;
      }
      case 4:
        line << "unlink " << p << " " << api.unlink(p);
        break;
      case 5: {
        // A directory does not replace another here: the fleet refuses even an empty one.
        if (api.stat_type(p) == S_IFDIR && api.stat_type(q) == S_IFDIR) {
          line << "skip";
          break;
        }
        line << "rename " << p << " " << q << " " << api.rename(p, q);
        break;
      }
      case 6:
        line << "mkdir " << p << " " << api.mkdir(p, random() % 2 == 0);
        break;
      case 7:
        line << "rmdir " << p << " " << api.rmdir(p);
        break;
      case 8: {
        const int type = api.stat_type(p);
        line << "stat " << p << " " << type;
        if (type == S_IFREG) line << " " << api.stat_size(p);  // directory sizes differ by design
        break;
      }
      case 9:
        line << "truncate " << p << " " << api.truncate(p, random() % 9000);
        break;
      default:
        line << "readdir " << dirs[random() % dirs.size()] << " "
             << sorted_listing(dirs[random() % dirs.size()]);
        break;
    }
    trace.push_back(line.str());
  }
  for (const std::string& dir : dirs) trace.push_back("final " + dir + " " + sorted_listing(dir));
}

void compare_with_tmpfs(std::uint64_t seed, double crash_chance) {
  {
    Trace expected;
    const std::string dir = temporary_directory();
    ASSERT_FALSE(dir.empty());
    {
      PosixApi posix(dir);
      run_operations(posix, seed, expected);
    }
    std::filesystem::remove_all(dir);

    Trace found;
    SimOptions options;
    options.seed = seed;
    options.crash_chance = crash_chance;
    options.state_bytes = 256 * 1024;
    FleetSim sim(options);
    ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
      FleetApi fleet(client);
      run_operations(fleet, seed, found);
    }));
    ASSERT_EQ(found.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(found[i], expected[i]) << "seed " << seed;
    }
    if (crash_chance > 0) {
      EXPECT_GT(sim.crashes(), 0u) << "seed " << seed;
    }
  }
}

TEST(Differential, RandomOperationsAgreeWithTmpfs) {
  for (std::uint64_t seed = 1; seed <= kSeeds; ++seed) compare_with_tmpfs(seed, 0.0);
}

// Servers crash at random points during the same operations, and the program still sees exactly
// what tmpfs gave: no wrong answer, no lost or doubled change.
TEST(Differential, CrashesAreInvisibleToThePrograms) {
  for (std::uint64_t seed = 1; seed <= kSeeds; ++seed) compare_with_tmpfs(500 + seed, 0.02);
}

}  // namespace
}  // namespace flotilla::fs::testing
