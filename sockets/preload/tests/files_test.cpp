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

#include "sockets/fs/tests/file_trees.hpp"
#include "sockets/fs/tests/fleet_stack.hpp"
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
    const std::string problem = stack_.start("flotilla-files-test", 2, 8, extra_config());
    ASSERT_EQ(problem, "");
    folder_ = stack_.folder();
    socket_ = stack_.socket();
    fsys::create_directory(folder_ / "tmpfs");    // the reference side
    fsys::create_directory(folder_ / "scratch");  // the kernel's working directory of every program
  }
  // Appended to the stack's configuration.
  virtual std::string extra_config() const { return ""; }

  CommandOutcome cli(const std::string& arguments) const { return stack_.cli(arguments); }
  // `script` run by sh under the preload library, FLEET... replaced by the directory it works in.
  CommandOutcome on_fleet(const std::string& script) const { return run_in(kFleet, script); }
  CommandOutcome on_tmpfs(const std::string& script) const { return run_in((folder_ / "tmpfs").string(), script); }
  CommandOutcome run_in(const std::string& directory, std::string script) const {
    for (std::size_t at = script.find("DIR"); at != std::string::npos; at = script.find("DIR", at + directory.size())) {
      script.replace(at, 3, directory);
    }
    return shell("cd '" + (folder_ / "scratch").string() + "' && " + build_root() + "/apps/flotilla --socket '" +
                 socket_ + "' run -- " + flotilla::testing::shell_words({"sh", "-c", script}));
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

  std::string events() const { return stack_.events(); }
  // The tree generated, archived and extracted on tmpfs; its digest.
  std::string archive_tree(int files) {
    flotilla::fs::testing::generate_tree(folder_ / "source", files, 23);
    archive_ = (folder_ / "tree.tar").string();
    EXPECT_EQ(shell("tar -C '" + (folder_ / "source").string() + "' -cf '" + archive_ + "' .").exit_code, 0);
    const CommandOutcome extracted = on_tmpfs("mkdir DIR/tree && tar -C DIR/tree -xf " + archive_);
    EXPECT_EQ(extracted.exit_code, 0) << extracted.output;
    return digest((folder_ / "tmpfs").string(), "tree");
  }

  flotilla::fs::testing::FleetStack stack_;
  fsys::path folder_;
  std::string socket_;
  std::string archive_;
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

// A walker's opendir (Python's scandir of a path) makes no kernel descriptor on the fleet: the
// library lists through the client alone until dirfd() asks for one. On tmpfs the C library's
// opendir holds one, which shows the probe sees it.
TEST_F(PreloadFiles, OpendirHoldsNoKernelDescriptorUntilAskedFor) {
  const std::string probe =
      "mkdir DIR/walked && : > DIR/walked/f && python3 -c \"import os\n"
      "os.stat('DIR/walked')\n"  // the process's first fleet call leases its seat (descriptors)
      "before = len(os.listdir('/proc/self/fd'))\n"
      "stream = os.scandir('DIR/walked')\n"
      "print(len(os.listdir('/proc/self/fd')) - before, [e.name for e in stream])\n"
      "stream.close()\"";
  const CommandOutcome tmpfs = on_tmpfs(probe);
  const CommandOutcome fleet = on_fleet(probe);
  ASSERT_EQ(tmpfs.exit_code, 0) << tmpfs.output;
  ASSERT_EQ(fleet.exit_code, 0) << fleet.output;
  EXPECT_EQ(tmpfs.output, "1 ['f']\n");
  EXPECT_EQ(fleet.output, "0 ['f']\n");
}

// A fleet open's kernel descriptor is made while the server answers: an open the server refuses
// leaves none behind, and the next open still gets the lowest free number. `elsewhere` is made by
// another process, so this one's refusal comes from the server, not from names it knows; the
// refusals are repeated so that some of them surely wait for the server.
TEST_F(PreloadFiles, RefusedOpensLeaveNoDescriptorAndNumbersStayLowest) {
  expect_same(": > DIR/elsewhere && python3 -c \"\n"
              "import errno, os\n"
              "os.close(os.open('DIR/a', os.O_CREAT | os.O_WRONLY, 0o644))\n"
              "lowest = os.open('/dev/null', os.O_RDONLY)\n"
              "os.close(lowest)\n"
              "refused = set()\n"
              "for path, flags in [('DIR/missing', os.O_RDONLY), ('DIR/a', os.O_CREAT | os.O_EXCL | os.O_WRONLY),\n"
              "                    ('DIR/elsewhere', os.O_CREAT | os.O_EXCL | os.O_WRONLY),\n"
              "                    ('DIR/none/x', os.O_CREAT | os.O_WRONLY), ('DIR/a/x', os.O_RDONLY)] * 50:\n"
              "    try:\n"
              "        os.open(path, flags, 0o644)\n"
              "    except OSError as error:\n"
              "        refused.add(errno.errorcode[error.errno])\n"
              "print(sorted(refused))\n"
              "fd = os.open('DIR/b', os.O_CREAT | os.O_WRONLY, 0o644)\n"
              "other = os.open('DIR/a', os.O_RDONLY)\n"
              "print(fd == lowest, other == lowest + 1)\n"
              "os.close(fd)\n"
              "os.close(other)\n"
              "print(os.open('DIR/b', os.O_RDONLY) == lowest)\"");
}

// The library keeps the umask it last saw set: a change in the middle of a process still counts.
TEST_F(PreloadFiles, CreatesFollowTheUmaskAsItChanges) {
  expect_same("umask 077; : > DIR/private; mkdir DIR/private_dir; umask 022; : > DIR/public; "
              "mkdir DIR/public_dir; stat -c \"%a %n\" DIR/private DIR/private_dir DIR/public DIR/public_dir | sed s,DIR,,");
}

// fchmod, fchown and futimens change the descriptor's file, wherever its name went since.
TEST_F(PreloadFiles, DescriptorCallsFollowTheFileAcrossARenameAndAnUnlink) {
  expect_same("python3 -c \"\n"
              "import os\n"
              "fd = os.open('DIR/a', os.O_CREAT | os.O_WRONLY, 0o600)\n"
              "os.rename('DIR/a', 'DIR/b')\n"
              "os.fchmod(fd, 0o640)\n"
              "os.utime(fd, ns=(1000000000, 2000000000))\n"
              "os.fchown(fd, -1, os.getgid())\n"
              "st = os.stat('DIR/b')\n"
              "print(oct(st.st_mode & 0o777), st.st_mtime_ns, st.st_gid == os.getgid())\n"
              "os.unlink('DIR/b')\n"
              "os.fchmod(fd, 0o604)\n"
              "os.utime(fd, ns=(3000000000, 4000000000))\n"
              "st = os.fstat(fd)\n"
              "print(oct(st.st_mode & 0o777), st.st_mtime_ns, st.st_nlink)\n"
              "\"");
}

TEST_F(PreloadFiles, ARenameIsAtomicForAConcurrentReader) {
  // A reader reads the name over and over while it is replaced by renames: it sees the old or the
  // new content, never neither. The name exists before the reader starts: `echo old > DIR/name &&
  // (...) &` would put the first write in the background too, and a read ahead of it would see no
  // file on either side.
  expect_same("echo old > DIR/name; (i=0; while [ $i -lt 200 ]; do echo new$i > DIR/tmp$i; mv DIR/tmp$i DIR/name; i=$((i+1)); done) & "
              "i=0; bad=0; while [ $i -lt 200 ]; do x=$(cat DIR/name) || bad=1; case $x in old|new*) ;; *) bad=2;; esac; i=$((i+1)); done; wait; echo bad=$bad; cat DIR/name");
}


// Four processes create, write, rename and make and remove directories, each acknowledging every
// round it finished, while each file server is crashed 20 times (crash, abort and hang in turn):
// afterwards the fleet holds every acknowledged change and nothing else.
TEST_F(PreloadFiles, FourWritersLoseNothingThoughEachServerCrashesTwentyTimes) {
  constexpr int kCrashesEach = 20;
  const fsys::path scratch = folder_ / "scratch";
  std::ofstream(scratch / "go").put('\n');
  auto acknowledged = [&](int writer) {
    std::ifstream acks(scratch / ("acks" + std::to_string(writer)));
    int rounds = 0;
    for (std::string line; std::getline(acks, line);) ++rounds;
    return rounds;
  };
  auto all_acknowledged = [&] { return acknowledged(1) + acknowledged(2) + acknowledged(3) + acknowledged(4); };
  std::string crash_problem;
  int injected = 0;
  std::thread crasher([&] {
    const char* kinds[] = {"crash", "abort", "hang"};
    for (int k = 0; k < 2 * kCrashesEach; ++k) {
      // A crash at a point of progress: the writers acknowledged more since the last restart.
      const int before = all_acknowledged();
      const bool progress = wait_for([&] { return all_acknowledged() >= before + 2 || !fsys::exists(scratch / "go"); }, 60s);
      if (!progress || !fsys::exists(scratch / "go")) {
        crash_problem = "the writers made no progress after crash " + std::to_string(k);
        break;
      }
      const std::string server = "fs" + std::to_string(k % 2);
      const CommandOutcome inject = cli("inject " + server + " " + kinds[(k / 2) % 3]);
      if (inject.exit_code != 0) {
        crash_problem = inject.output;
        break;
      }
      ++injected;
      const std::string back = "recovered " + server + "#" + std::to_string(k / 2 + 2);
      if (!wait_for([&] { return events().find(back) != std::string::npos; }, 30s)) {
        crash_problem = "no '" + back + "' in the event log";
        break;
      }
    }
    fsys::remove(scratch / "go");
  });
  std::string writers;
  for (int i = 1; i <= 4; ++i) {
    const std::string w = std::to_string(i);
    writers += "(mkdir DIR/w" + w + " || exit 1; j=0; while [ -e " + (scratch / "go").string() +
               " ] && [ $j -lt 100000 ]; do j=$((j+1)); echo w" + w + "-$j > DIR/w" + w + "/t$j || exit 2; mv DIR/w" +
               w + "/t$j DIR/w" + w + "/f$j || exit 3; if [ $((j % 5)) = 0 ]; then mkdir DIR/w" + w +
               "/d$j && rmdir DIR/w" + w + "/d$j || exit 4; fi; echo $j >> " + (scratch / ("acks" + w)).string() +
               "; done) & p" + w + "=$!; ";
  }
  writers += "s=0; for p in $p1 $p2 $p3 $p4; do wait $p || s=$?; done; echo writers=$s";
  const CommandOutcome ran = on_fleet(writers);
  fsys::remove(scratch / "go");  // the writers stopped early: the crasher gives up
  crasher.join();
  ASSERT_EQ(ran.output, "writers=0\n") << ran.output << events();
  ASSERT_EQ(crash_problem, "") << events();
  ASSERT_EQ(injected, 2 * kCrashesEach);

  std::string expected_files;
  std::string expected_directories;
  for (int i = 1; i <= 4; ++i) {
    const std::string w = std::to_string(i);
    expected_directories += std::string(kFleet) + "/w" + w + "\n";
    for (int j = 1; j <= acknowledged(i); ++j) {
      expected_files += std::string(kFleet) + "/w" + w + "/f" + std::to_string(j) + ":w" + w + "-" + std::to_string(j) + "\n";
    }
  }
  const CommandOutcome files = on_fleet("find DIR -type f | xargs grep -H ''");
  const CommandOutcome directories = on_fleet("find DIR -mindepth 1 -type d");
  EXPECT_EQ(difference(expected_files, files.output), "");
  EXPECT_EQ(difference(expected_directories, directories.output), "");
}

// The prefix from the running stack's configuration ([files] prefix) rather than the default.
class PreloadFilesElsewhere : public PreloadFiles {
 protected:
  std::string extra_config() const override { return "[files]\nprefix = \"/fleet-elsewhere\"\n"; }
};

TEST_F(PreloadFilesElsewhere, TheConfiguredPrefixLeadsToTheFleet) {
  ASSERT_FALSE(fsys::exists("/fleet-elsewhere")) << "the kernel has /fleet-elsewhere: the test cannot tell the two apart";
  const CommandOutcome ran = run_in("/fleet-elsewhere", "echo kept > DIR/x && cat DIR/x && ls DIR && test ! -e /flotilla/x && echo not-under-the-default");
  EXPECT_EQ(ran.output, "kept\nx\nnot-under-the-default\n");
  EXPECT_FALSE(fsys::exists("/fleet-elsewhere"));
}

}  // namespace
