// Unmodified programs on the file fleet through `flotilla run`: a stack of the fleet alone (two
// file servers, application seats); each test runs real programs (tar, sha256sum, cp, find, rm,
// sort, git, sh) once on the fleet under the preload library and once on tmpfs, and expects the
// same. Needs root (the supervisor's shared memory); run only under the integration lock.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
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
#include "recovery/default_config.hpp"
#include "sockets/fs/tests/file_trees.hpp"
#include "tests/support/stack_harness.hpp"

namespace {

namespace fsys = std::filesystem;
using namespace std::chrono_literals;
using flotilla::fs::testing::difference;
using flotilla::testing::build_root;
using flotilla::testing::CommandOutcome;
using flotilla::testing::wait_for;

CommandOutcome shell(const std::string& command) { return flotilla::testing::run_shell(command + " 2>&1"); }

constexpr char kFleet[] = "/flotilla";



class PreloadFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the supervisor's shared memory)";
    if (shell("command -v tar && command -v sha256sum && command -v git").exit_code != 0) {
      GTEST_SKIP() << "needs tar, sha256sum and git";
    }
    char pattern[] = "/dev/shm/flotilla-files-test-XXXXXX";  // tmpfs: the reference side
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    socket_ = (folder_ / "control.sock").string();
    fsys::create_directory(folder_ / "tmpfs");
    fsys::create_directory(folder_ / "scratch");  // the kernel's working directory of every program
    std::ofstream(folder_ / "fleet.toml")
        << "[supervisor]\nheartbeat_timeout_ms = 500\ncrash_limit = 100\ncrash_window_ms = 1000\n"
        << flotilla::recovery::bare_app_seats_config(8) << flotilla::recovery::file_fleet_config(2, 8);
    const CommandOutcome up = cli("up --config '" + (folder_ / "fleet.toml").string() + "'");
    ASSERT_EQ(up.exit_code, 0) << up.output;
    started_ = true;
  }

  void TearDown() override {
    if (started_) cli("down");
    if (!folder_.empty()) {
      std::error_code error;
      fsys::remove_all(folder_, error);
      EXPECT_FALSE(error) << "cannot remove " << folder_ << ": " << error.message();
    }
  }

  CommandOutcome cli(const std::string& arguments) const {
    return shell(build_root() + "/apps/flotilla --socket '" + socket_ + "' " + arguments);
  }
  // `script` run by sh under the preload library, FLEET... replaced by the directory it works in.
  CommandOutcome on_fleet(const std::string& script) const { return run_in(kFleet, script); }
  CommandOutcome on_tmpfs(const std::string& script) const { return run_in((folder_ / "tmpfs").string(), script); }
  CommandOutcome run_in(const std::string& directory, std::string script) const {
    for (std::size_t at = script.find("DIR"); at != std::string::npos; at = script.find("DIR", at + directory.size())) {
      script.replace(at, 3, directory);
    }
    std::string quoted;
    for (const char c : script) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return shell("cd '" + (folder_ / "scratch").string() + "' && " + build_root() + "/apps/flotilla --socket '" +
                 socket_ + "' run -- sh -c '" + quoted + "'");
  }
  // Every entry's path and type (and a symlink's target), then every regular file's checksum.
  std::string digest(const std::string& under, const std::string& tree) const {
    const std::string root = under + "/" + tree;
    auto run = [&](const std::string& script) { return run_in(under, script); };
    const CommandOutcome listing = run("find " + root + " -printf '%y %P %l\\n' | LC_ALL=C sort");
    const CommandOutcome sums =
        run("cd " + root + " && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum");
    return std::to_string(listing.exit_code) + std::to_string(sums.exit_code) + "\n" + listing.output + sums.output;
  }
  // The same script on both sides: the same output and exit code.
  void expect_same(const std::string& script) const {
    const CommandOutcome tmpfs = on_tmpfs(script);
    const CommandOutcome fleet = on_fleet(script);
    EXPECT_EQ(tmpfs.exit_code, fleet.exit_code) << script << "\ntmpfs:\n" << tmpfs.output << "\nfleet:\n" << fleet.output;
    EXPECT_EQ(tmpfs.output, fleet.output) << script;
  }

  std::string events() const { return flotilla::recovery::whole_event_log(socket_); }
  std::int64_t counter(const std::string& component, const std::string& name) const {
    return flotilla::fs::testing::counter(socket_, component, name);
  }
  // The tree generated, archived and extracted on tmpfs; its digest.
  std::string archive_tree(int files) {
    flotilla::fs::testing::generate_tree(folder_ / "source", files, 23);
    archive_ = (folder_ / "tree.tar").string();
    EXPECT_EQ(shell("tar -C '" + (folder_ / "source").string() + "' -cf '" + archive_ + "' .").exit_code, 0);
    const CommandOutcome extracted = on_tmpfs("mkdir DIR/tree && tar -C DIR/tree -xf " + archive_);
    EXPECT_EQ(extracted.exit_code, 0) << extracted.output;
    return digest((folder_ / "tmpfs").string(), "tree");
  }

  fsys::path folder_;
  std::string socket_;
  std::string archive_;
  bool started_ = false;
};

TEST_F(PreloadFiles, TarExtractsFiveThousandFilesAndSha256sumMatchesTmpfs) {
  const std::string expected = archive_tree(5000);
  const CommandOutcome extracted = on_fleet("mkdir DIR/tree && tar -C DIR/tree -xf " + archive_);
  ASSERT_EQ(extracted.exit_code, 0) << extracted.output;
  EXPECT_EQ(difference(expected, digest(kFleet, "tree")), "");
}

TEST_F(PreloadFiles, TarMatchesTmpfsThoughAFileServerCrashesDuringIt) {
  const std::string expected = archive_tree(3000);
  // The crash comes once fs1 has served this many requests of the extraction, well before its end.
  flotilla::fs::testing::CrashAfterRequests crash(socket_, "fs1", 3000, [&] { return cli("inject fs1 crash").exit_code == 0; });
  const CommandOutcome extracted = on_fleet("mkdir DIR/tree && tar -C DIR/tree -xf " + archive_);
  const bool injected = crash.stop();
  ASSERT_EQ(extracted.exit_code, 0) << extracted.output;
  ASSERT_TRUE(injected) << "the extraction ended before the crash was due";
  ASSERT_TRUE(wait_for([&] { return events().find("fs1#2") != std::string::npos; }, 10s)) << events();
  EXPECT_EQ(difference(expected, digest(kFleet, "tree")), "") << events();
}

TEST_F(PreloadFiles, CopyFindRemoveAndSortWork) {
  flotilla::fs::testing::generate_tree(folder_ / "source", 600, 23);
  const std::string source = (folder_ / "source").string();
  expect_same("cp -r " + source + " DIR/copy && find DIR/copy -name \"file1*\" | sort | sed s,DIR,,");
  EXPECT_EQ(difference(digest((folder_ / "tmpfs").string(), "copy"), digest(kFleet, "copy")), "");
  expect_same("cp -r DIR/copy DIR/again && rm -r DIR/copy && ls DIR && find DIR/again -type f | wc -l");
  // A large file: sort reads it through stdio and writes its output the same way.
  std::ofstream lines(folder_ / "lines.txt");
  std::mt19937 random(5);
  for (int i = 0; i < 200000; ++i) lines << random() << " line " << i << "\n";
  lines.close();
  expect_same("cp " + (folder_ / "lines.txt").string() + " DIR/lines && sort DIR/lines -o DIR/sorted && sha256sum < DIR/sorted && wc -l DIR/sorted | sed s,DIR,,");
}

TEST_F(PreloadFiles, GitInitAddCommitWork) {
  flotilla::fs::testing::generate_tree(folder_ / "source", 200, 23);
  const std::string script =
      "cp -r " + (folder_ / "source").string() + " DIR/repo && cd DIR/repo && git init -q . && "
      "git add . && git -c user.name=t -c user.email=t@t commit -q -m first && git log --format=%s && "
      "git ls-files | wc -l && git status --porcelain && git fsck --no-progress && echo fsck ok";
  expect_same(script);
}

// Hare's example: the child execs echo on a descriptor it shares with its parent, then the parent
// writes through the same descriptor: the offset is one.
TEST_F(PreloadFiles, ForkAndExecShareTheDescriptorsOffset) {
  expect_same("exec 1>DIR/hare; /bin/echo hello; echo world.; exec 1>&2; cat DIR/hare");
  const CommandOutcome fleet = on_fleet("cat DIR/hare");
  EXPECT_EQ(fleet.output, "hello\nworld.\n");
}

TEST_F(PreloadFiles, AnOrphanStaysReadableAfterAnotherProcessUnlinksIt) {
  expect_same("echo kept > DIR/orphan && exec 3<DIR/orphan && rm DIR/orphan && cat <&3 && ls DIR");
}

TEST_F(PreloadFiles, CloseToOpenHoldsBetweenProcesses) {
  expect_same("echo one > DIR/shared && cat DIR/shared && echo two >> DIR/shared && sh -c \"cat DIR/shared\" && "
              "printf three > DIR/shared && cat DIR/shared");
}

TEST_F(PreloadFiles, ReaddirListsEveryEntryOnce) {
  expect_same("mkdir DIR/many && i=0; while [ $i -lt 500 ]; do : > DIR/many/f$i; i=$((i+1)); done; "
              "ls -a DIR/many | sort | uniq -d; ls DIR/many | wc -l");
}

TEST_F(PreloadFiles, ARenameIsAtomicForAConcurrentReader) {
  // A reader reads the name over and over while it is replaced by renames: it sees the old or the
  // new content, never neither. The name exists before the reader starts: `echo old > DIR/name &&
  // (...) &` would put the first write in the background too, and a read ahead of it would see no
  // file on either side.
  expect_same("echo old > DIR/name; (i=0; while [ $i -lt 200 ]; do echo new$i > DIR/tmp$i; mv DIR/tmp$i DIR/name; i=$((i+1)); done) & "
              "i=0; bad=0; while [ $i -lt 200 ]; do x=$(cat DIR/name) || bad=1; case $x in old|new*) ;; *) bad=2;; esac; i=$((i+1)); done; wait; echo bad=$bad; cat DIR/name");
}

}  // namespace
