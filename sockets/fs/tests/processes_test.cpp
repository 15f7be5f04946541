// Two acceptance points of the file fleet, with real processes: a program under `flotilla run`
// forks, and parent and child race each other on the fleet through the preload library, in step
// through kernel pipes. Each script also runs on tmpfs, without the library, with the same
// expectations; its last line is its verdict. Needs root (the supervisor's shared memory) and
// python3; run only under the integration lock.
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "sockets/fs/tests/fleet_stack.hpp"
#include "tests/support/stack_harness.hpp"

namespace {

using flotilla::testing::build_root;
using flotilla::testing::CommandOutcome;
using flotilla::testing::run_shell;

// rmdir racing with creates. Per try the parent makes r<i>, tells the child, and both go at once:
// the parent removes r<i>, the child creates r<i>/f. Whatever the order, a create that succeeded
// left a file that is still there (so the rmdir failed with ENOTEMPTY), and a directory whose rmdir
// succeeded is gone with everything in it: never an entry in a removed directory.
constexpr char kRmdirRace[] = R"(import errno, os, sys
base, tries = sys.argv[1], int(sys.argv[2])
os.makedirs(base, exist_ok=True)
go_r, go_w = os.pipe()
done_r, done_w = os.pipe()
child = os.fork()
if child == 0:
    created = []
    for i in range(tries):
        os.read(go_r, 1)
        try:
            os.close(os.open(f"{base}/r{i}/f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            created.append(i)
        except OSError as e:
            if e.errno != errno.ENOENT:
                print(f"create r{i}/f: {e}")
                os._exit(1)
    os.write(done_w, (" ".join(map(str, created)) + "\n").encode())
    os._exit(0)
removed = set()
for i in range(tries):
    os.mkdir(f"{base}/r{i}")
    os.write(go_w, b"g")
    try:
        os.rmdir(f"{base}/r{i}")
        removed.add(i)
    except OSError as e:
        if e.errno != errno.ENOTEMPTY:
            print(f"rmdir r{i}: {e}")
            sys.exit(1)
answer = b""
while not answer.endswith(b"\n"):
    answer += os.read(done_r, 65536)
_, status = os.waitpid(child, 0)
created = set(int(word) for word in answer.split())
bad = 0
for i in range(tries):
    exists = os.path.isdir(f"{base}/r{i}")
    has_file = os.path.exists(f"{base}/r{i}/f")
    if i in created and (i in removed or not has_file):
        bad += 1
        print(f"r{i}: its create succeeded, yet rmdir={'ok' if i in removed else 'refused'} file={has_file}")
    if i in removed and exists:
        bad += 1
        print(f"r{i}: removed, yet still listed")
    if i not in created and i not in removed:
        bad += 1
        print(f"r{i}: neither the create nor the rmdir succeeded")
listed = sorted(name for name in os.listdir(base) if name.startswith("r"))
expected = sorted(f"r{i}" for i in range(tries) if i not in removed)
if listed != expected:
    bad += 1
    print(f"the listing has {len(listed)} directories, {len(expected)} expected")
print(f"child {status}, bad {bad}")
)";

// A stale lookup. Per round the parent puts a new directory in place of dir (the old one renamed
// away) holding x with the round's text, and tells the child; the child, which looked dir and x up
// in the round before, reads dir/x and stats it by the same path: it must see this round's file,
// never the one its earlier lookups found.
constexpr char kStaleLookup[] = R"(import os, sys
base, rounds = sys.argv[1], int(sys.argv[2])
os.makedirs(base, exist_ok=True)
go_r, go_w = os.pipe()
back_r, back_w = os.pipe()
child = os.fork()
if child == 0:
    stale = 0
    for i in range(rounds):
        os.read(go_r, 1)
        wanted = f"round {i}".encode()
        with open(f"{base}/dir/x", "rb") as f:
            got = f.read()
        if got != wanted or os.stat(f"{base}/dir/x").st_size != len(wanted):
            stale += 1
            print(f"round {i}: read {got!r}")
        os.write(back_w, b"b")
    os._exit(min(stale, 100))
for i in range(rounds):
    os.mkdir(f"{base}/new")
    with open(f"{base}/new/x", "wb") as f:
        f.write(f"round {i}".encode())
    if i > 0:
        os.rename(f"{base}/dir", f"{base}/old{i}")
    os.rename(f"{base}/new", f"{base}/dir")
    os.write(go_w, b"g")
    os.read(back_r, 1)
_, status = os.waitpid(child, 0)
print(f"stale {os.waitstatus_to_exitcode(status)}")
)";

class FleetProcesses : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the supervisor's shared memory)";
    if (run_shell("command -v python3 >/dev/null").exit_code != 0) GTEST_SKIP() << "needs python3";
    ASSERT_EQ(stack_.start("flotilla-fs-processes-test", 2, 4, extra_config()), "");
  }
  virtual std::string extra_config() const { return ""; }

  // `script` run by python3 with ARGUMENTS, on the fleet under the preload library (in the fleet's
  // prefix) or plainly on tmpfs (in the stack's folder).
  CommandOutcome run(const char* script, bool on_fleet, const std::string& arguments) const {
    const std::filesystem::path file = stack_.folder() / "script.py";
    std::ofstream(file) << script;
    const std::string base = on_fleet ? "/flotilla/test" : (stack_.folder() / "tmpfs").string();
    const std::string launcher =
        on_fleet ? build_root() + "/apps/flotilla --socket '" + stack_.socket() + "' run -- " : std::string();
    return run_shell(launcher + "python3 '" + file.string() + "' '" + base + "' " + arguments + " 2>&1");
  }
  // The last line of `output`.
  static std::string verdict(const std::string& output) {
    std::string text = output;
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
  }

  flotilla::fs::testing::FleetStack stack_;
};

TEST_F(FleetProcesses, RmdirRacingWithCreatesNeverLeavesAnEntryInARemovedDirectory) {
  for (const bool on_fleet : {false, true}) {
    const CommandOutcome outcome = run(kRmdirRace, on_fleet, "10000");
    EXPECT_EQ(outcome.exit_code, 0) << (on_fleet ? "fleet: " : "tmpfs: ") << outcome.output;
    EXPECT_EQ(verdict(outcome.output), "child 0, bad 0") << (on_fleet ? "fleet: " : "tmpfs: ") << outcome.output;
  }
}

TEST_F(FleetProcesses, AStaleLookupIsNeverUsedAfterAnotherProcessRenamedThePath) {
  for (const bool on_fleet : {false, true}) {
    const CommandOutcome outcome = run(kStaleLookup, on_fleet, "1000");
    EXPECT_EQ(outcome.exit_code, 0) << (on_fleet ? "fleet: " : "tmpfs: ") << outcome.output;
    EXPECT_EQ(verdict(outcome.output), "stale 0") << (on_fleet ? "fleet: " : "tmpfs: ") << outcome.output;
  }
}

// [files] cache_bytes: a write past the cache fails with ENOSPC, and the program is told once.
class FleetSmallCache : public FleetProcesses {
 protected:
  std::string extra_config() const override { return "[files]\ncache_bytes = 1048576\n"; }
};

TEST_F(FleetSmallCache, AWritePastTheCacheFailsWithEnospcAndOneLine) {
  const CommandOutcome outcome =
      run_shell(build_root() + "/apps/flotilla --socket '" + stack_.socket() +
                "' run -- dd if=/dev/zero of=/flotilla/big bs=65536 count=32 2>&1");
  EXPECT_NE(outcome.exit_code, 0) << outcome.output;
  EXPECT_NE(outcome.output.find("No space left on device"), std::string::npos) << outcome.output;
  const std::string line = "flotilla: the file fleet's buffer cache is full";
  const std::size_t first = outcome.output.find(line);
  EXPECT_NE(first, std::string::npos) << outcome.output;
  EXPECT_EQ(outcome.output.find(line, first + 1), std::string::npos) << outcome.output;
}

}  // namespace
