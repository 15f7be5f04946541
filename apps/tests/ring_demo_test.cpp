// Runs the built flotilla-ring-demo (path in $RING_DEMO) as a user would and checks what it says
// and how it exits.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

extern char** environ;

namespace {

struct RunResult {
  int status = -1;     // raw wait status
  std::string output;  // stdout and stderr, interleaved

  bool exited() const { return WIFEXITED(status); }
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

std::string demo_path() {
  const char* path = std::getenv("RING_DEMO");
  return path != nullptr ? path : "";
}

RunResult run_demo(const std::vector<std::string>& arguments) {
  RunResult result;
  const std::string path = demo_path();
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);

  std::vector<std::string> strings{path};
  strings.insert(strings.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    ::close(pipe_fds[0]);
    ADD_FAILURE() << "cannot run " << path << ": " << std::strerror(rc);
    return result;
  }
  char buffer[4096];
  for (;;) {
    const ssize_t got = ::read(pipe_fds[0], buffer, sizeof(buffer));
    if (got > 0) {
      result.output.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(pipe_fds[0]);
  while (::waitpid(pid, &result.status, 0) < 0 && errno == EINTR) {
  }
  return result;
}

std::size_t count_matches(const std::string& text, const std::regex& pattern) {
  return static_cast<std::size_t>(std::distance(
      std::sregex_iterator(text.begin(), text.end(), pattern), std::sregex_iterator()));
}

class RingDemo : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(demo_path().empty()) << "RING_DEMO must name the flotilla-ring-demo binary";
    ASSERT_EQ(::access(demo_path().c_str(), X_OK), 0) << demo_path() << " is not executable";
  }
};

TEST_F(RingDemo, SurvivesTwoConsumerKillsWithoutLosingAnything) {
  const RunResult run = run_demo({"--messages", "1000000", "--kills", "2"});
  SCOPED_TRACE(run.output);
  ASSERT_TRUE(run.exited()) << "demo did not exit normally";
  EXPECT_EQ(run.exit_code(), 0);
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(\n  lost +0\n)")));
  EXPECT_TRUE(std::regex_search(run.output,
                                std::regex(R"(\n  consumer incarnations +3 \(2 restarts\)\n)")));
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(\n  delivered in order +1,000,000 )")));
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(checksum +0x[0-9a-f]+ matches)")));
  EXPECT_TRUE(
      std::regex_search(run.output, std::regex(R"(\n  pool +4,096 of 4,096 buffers free)")));
  const std::regex kill_event(
      R"(consumer killed \(SIGKILL\) at [0-9,]+ delivered; restarted as incarnation [23] in )");
  const std::regex resend_event(R"(producer saw incarnation [23]: resending from #[0-9,]+ )");
  EXPECT_EQ(count_matches(run.output, kill_event), 2u);
  EXPECT_EQ(count_matches(run.output, resend_event), 2u);
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(\nresult: PASS)")));
}

TEST_F(RingDemo, SurvivesManyKills) {
  const RunResult run = run_demo({"--messages", "2000000", "--kills", "20", "--quiet"});
  SCOPED_TRACE(run.output);
  EXPECT_EQ(run.exit_code(), 0);
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(\n  lost +0\n)")));
  EXPECT_TRUE(
      std::regex_search(run.output, std::regex(R"(consumer incarnations +21 \(20 restarts\))")));
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(checksum +0x[0-9a-f]+ matches)")));
  EXPECT_NE(run.output.find("(nothing leaked)"), std::string::npos);
}

TEST_F(RingDemo, NoKillsStillDeliversEverything) {
  const RunResult run = run_demo({"--messages", "20000", "--kills", "0"});
  SCOPED_TRACE(run.output);
  EXPECT_EQ(run.exit_code(), 0);
  EXPECT_NE(run.output.find("started consumer"), std::string::npos);
  EXPECT_TRUE(std::regex_search(run.output, std::regex(R"(\n  lost +0\n)")));
  EXPECT_TRUE(
      std::regex_search(run.output, std::regex(R"(consumer incarnations +1 \(0 restarts\))")));
  EXPECT_EQ(run.output.find("consumer killed"), std::string::npos);
  EXPECT_NE(run.output.find("result: PASS"), std::string::npos);
}

TEST_F(RingDemo, QuietPrintsOnlyTheSummary) {
  const RunResult run = run_demo({"--messages", "50000", "--kills", "1", "--quiet"});
  SCOPED_TRACE(run.output);
  EXPECT_EQ(run.exit_code(), 0);
  // The kill still happens; only the running commentary is left out.
  EXPECT_TRUE(
      std::regex_search(run.output, std::regex(R"(consumer incarnations +2 \(1 restart\))")));
  EXPECT_EQ(run.output.find("started consumer"), std::string::npos);
  EXPECT_EQ(run.output.find("consumer killed (SIGKILL)"), std::string::npos);
  EXPECT_EQ(run.output.rfind("summary\n", 0), 0u) << "output should start with the summary";
  EXPECT_NE(run.output.find("result: PASS"), std::string::npos);
}

TEST_F(RingDemo, RejectsZeroMessages) {
  const RunResult run = run_demo({"--messages", "0"});
  ASSERT_TRUE(run.exited());
  EXPECT_NE(run.exit_code(), 0);
  EXPECT_NE(run.output.find("--messages"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("summary"), std::string::npos) << run.output;
}

TEST_F(RingDemo, RejectsMoreKillsThanTheStreamCanHold) {
  const RunResult run = run_demo({"--messages", "3000", "--kills", "5"});
  ASSERT_TRUE(run.exited());
  EXPECT_NE(run.exit_code(), 0);
  EXPECT_NE(run.output.find("error: --kills 5 needs --messages of at least 6,000"),
            std::string::npos)
      << run.output;
}

TEST_F(RingDemo, RejectsUnknownOption) {
  const RunResult run = run_demo({"--bogus"});
  ASSERT_TRUE(run.exited());
  EXPECT_NE(run.exit_code(), 0);
  EXPECT_NE(run.output.find("--bogus"), std::string::npos) << run.output;
}

TEST_F(RingDemo, HelpListsTheOptionsButNotTheInternalOnes) {
  const RunResult run = run_demo({"--help"});
  EXPECT_EQ(run.exit_code(), 0);
  EXPECT_NE(run.output.find("--messages"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("--kills"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("--quiet"), std::string::npos) << run.output;
  EXPECT_EQ(run.output.find("--control-fd"), std::string::npos) << run.output;
}

}  // namespace
