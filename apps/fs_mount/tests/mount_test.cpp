// `flotilla mount` end to end: a stack of the file fleet alone (two file servers, application
// seats), mounted with FUSE; `tar` extracts a generated tree of a few thousand files into the
// mount and sha256sum over every file matches the same tree on tmpfs. Then the same while a file
// server crashes in the middle of the extraction: the supervisor restarts it, its tables come back
// from its log, the mount's requests are retried, and the tree still matches. Needs root and
// /dev/fuse (skips without them); run only under the integration lock (fixed shared-memory names).
#include <sys/mount.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "sockets/fs/tests/file_trees.hpp"
#include "sockets/fs/tests/fleet_stack.hpp"
#include "tests/support/stack_harness.hpp"

namespace {

using namespace std::chrono_literals;
namespace fsys = std::filesystem;
using flotilla::fs::testing::difference;

using flotilla::testing::build_root;
using flotilla::testing::CommandOutcome;
using flotilla::testing::wait_for;

CommandOutcome shell(const std::string& command) { return flotilla::testing::run_shell(command + " 2>&1"); }

bool mounted(const fsys::path& directory) {
  std::ifstream mounts("/proc/self/mounts");
  for (std::string device, point, rest; mounts >> device >> point && std::getline(mounts, rest);) {
    if (point == directory.string()) return true;
  }
  return false;
}


// Every entry's path and type, then every regular file's checksum, in path order.
std::string digest(const fsys::path& root) {
  const CommandOutcome listing = shell("cd '" + root.string() + "' && find . -printf '%y %p %l\\n' | LC_ALL=C sort");
  const CommandOutcome sums = shell("cd '" + root.string() +
                             "' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum");
  return listing.output + sums.output;
}


class MountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a FUSE mount, the supervisor's shared memory)";
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "FUSE is unavailable: /dev/fuse is missing here";
    if (shell("command -v tar && command -v sha256sum").exit_code != 0) GTEST_SKIP() << "needs tar and sha256sum";
    ASSERT_EQ(stack_.start("flotilla-mount-test", 2, 2), "");
    folder_ = stack_.folder();
    socket_ = stack_.socket();
    mount_point_ = folder_ / "mnt";
    fsys::create_directory(mount_point_);
    flotilla::fs::testing::generate_tree(folder_ / "tree", kFiles, 17);
    ASSERT_EQ(shell("tar -C '" + (folder_ / "tree").string() + "' -cf '" + (folder_ / "tree.tar").string() + "' .")
                  .exit_code,
              0);
    reference_ = digest(folder_ / "tree");
    mounter_ = ::fork();
    if (mounter_ == 0) {
      const std::string flotilla = build_root() + "/apps/flotilla";
      ::execl(flotilla.c_str(), flotilla.c_str(), "--socket", socket_.c_str(), "mount", mount_point_.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_TRUE(wait_for([&] { return mounted(mount_point_); }, 10s)) << events();
  }

  void TearDown() override {
    if (mounter_ > 0) {
      ::kill(mounter_, SIGTERM);
      int status = 0;
      ::waitpid(mounter_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the mount did not end cleanly on SIGTERM";
      EXPECT_FALSE(mounted(mount_point_));
    }
    if (!mount_point_.empty() && mounted(mount_point_)) ::umount2(mount_point_.c_str(), MNT_DETACH);
  }

  CommandOutcome cli(const std::string& arguments) const { return stack_.cli(arguments); }
  std::string events() const { return stack_.events(); }
  std::int64_t counter(const std::string& component, const std::string& name) const {
    return stack_.counter(component, name);
  }
  CommandOutcome extract_into(const fsys::path& target) const {
    fsys::create_directory(target);
    return shell("tar -C '" + target.string() + "' -xf '" + (folder_ / "tree.tar").string() + "'");
  }

  static constexpr int kFiles = 3000;
  flotilla::fs::testing::FleetStack stack_;
  fsys::path folder_;
  fsys::path mount_point_;
  std::string socket_;
  std::string reference_;
  pid_t mounter_ = -1;
};

TEST_F(MountTest, TarIntoTheMountMatchesTmpfs) {
  const CommandOutcome extracted = extract_into(mount_point_ / "tree");
  ASSERT_EQ(extracted.exit_code, 0) << extracted.output;
  EXPECT_EQ(difference(reference_, digest(mount_point_ / "tree")), "");
  // A second look, through the caches the first one filled: the same.
  EXPECT_EQ(difference(reference_, digest(mount_point_ / "tree")), "");
  EXPECT_EQ(counter("fs0", "fs_malformed"), 0);
  EXPECT_EQ(counter("fs1", "fs_malformed"), 0);
}

TEST_F(MountTest, TarMatchesTmpfsThoughAFileServerCrashesDuringIt) {
  // The crash comes once fs1 has served this many requests of the extraction, well before its end.
  flotilla::fs::testing::CrashAfterRequests crash(socket_, "fs1", 3000, [&] { return cli("inject fs1 crash").exit_code == 0; });
  const CommandOutcome extracted = extract_into(mount_point_ / "tree");
  const bool injected = crash.stop();
  ASSERT_EQ(extracted.exit_code, 0) << extracted.output;
  ASSERT_TRUE(injected) << "the extraction ended before the crash was due";
  const std::string log = events();
  ASSERT_TRUE(wait_for([&] { return events().find("fs1#2") != std::string::npos; }, 10s)) << log;
  EXPECT_EQ(difference(reference_, digest(mount_point_ / "tree")), "") << events();
}

}  // namespace

// The programs of the preload test, through the mount: each script runs in the mount and in a
// tmpfs folder (DIR) and gives the same output.
TEST_F(MountTest, CopyFindRemoveSortAndGitWorkAsOnTmpfs) {
  const fsys::path tmpfs = folder_ / "tmpfs";
  fsys::create_directory(tmpfs);
  auto expect_same = [&](const std::string& script) {
    auto run_in = [&](const fsys::path& directory) {
      std::string text = script;
      for (std::size_t at = text.find("DIR"); at != std::string::npos; at = text.find("DIR", at)) {
        text.replace(at, 3, directory.string());
      }
      return shell("cd '" + directory.string() + "' && " + text);
    };
    const CommandOutcome reference = run_in(tmpfs);
    const CommandOutcome mount = run_in(mount_point_);
    EXPECT_EQ(reference.exit_code, mount.exit_code) << script << "\n" << mount.output;
    EXPECT_EQ(reference.output, mount.output) << script;
  };
  // A tree of its own, small enough that two copies fit the buffer cache beside each other.
  flotilla::fs::testing::generate_tree(folder_ / "small", 600, 23);
  const std::string tree = (folder_ / "small").string();
  expect_same("cp -r " + tree + " copy && find copy -name 'file1*' | LC_ALL=C sort");
  EXPECT_EQ(difference(digest(tmpfs / "copy"), digest(mount_point_ / "copy")), "");
  expect_same("cp -r copy again && rm -r copy && ls && find again -type f | wc -l");
  std::ofstream lines(folder_ / "lines.txt");
  std::mt19937 random(5);
  for (int i = 0; i < 100000; ++i) lines << random() << " line " << i << "\n";
  lines.close();
  expect_same("cp " + (folder_ / "lines.txt").string() + " lines && sort lines -o sorted && sha256sum < sorted && wc -l < sorted");
  if (shell("command -v git").exit_code != 0) GTEST_SKIP() << "needs git";
  expect_same("mkdir -p repo/sub && cd repo && for i in $(seq 150); do echo $i > f$i; echo $i$i > sub/g$i; done && "
              "git init -q . && git add . && "
              "git -c user.name=t -c user.email=t@t commit -q -m first && git log --format=%s && "
              "git ls-files | wc -l && git status --porcelain && git fsck --no-progress && echo fsck ok");
}
