// Two Flotilla stacks joined in shared memory (memwire), as a user without root runs them: the
// shipped configs/memwire-a.toml and memwire-b.toml, each under its own supervisor. B's client
// exchanges datagrams with A's echo server through both stacks; no kernel network is involved.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/stack/stack_fixture.hpp"

namespace flotilla::testing {
namespace {

std::string source_root() {
  const char* path = std::getenv("FLOTILLA_SOURCE_ROOT");
  return path != nullptr ? path : "";
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size()) {
    text.replace(at, from.size(), to);
  }
  return text;
}

class Memwire : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(build_root().empty() || source_root().empty())
        << "FLOTILLA_BUILD_ROOT/FLOTILLA_SOURCE_ROOT are not set (run through meson test)";
    char pattern[] = "/tmp/flotilla-memwire-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    folder_ = pattern;
    const std::string id = std::to_string(::getpid());
    wire_ = "/dev/shm/flotilla-memwire-test-" + id;
    report_ = (folder_ / "client.report").string();
    for (const char* side : {"a", "b"}) {
      std::ifstream shipped(source_root() + "/configs/memwire-" + side + ".toml");
      std::stringstream text;
      text << shipped.rdbuf();
      ASSERT_FALSE(text.str().empty()) << "configs/memwire-" << side << ".toml";
      std::string config = replace_all(text.str(), "/dev/shm/flotilla-memwire", wire_);
      config = replace_all(config, "/tmp/flotilla-memwire.report", report_);
      std::ofstream(folder_ / (std::string(side) + ".toml")) << config;
    }
  }

  void TearDown() override {
    for (const char* side : {"a", "b"}) {
      if (run_cli(socket(side) + " status").exit_code == 0) {
        EXPECT_EQ(run_cli(socket(side) + " down").exit_code, 0);
      }
    }
    if (!folder_.empty()) std::filesystem::remove_all(folder_);
    if (!wire_.empty()) std::filesystem::remove(wire_);
  }

  std::string socket(const std::string& side) const { return "--socket " + (folder_ / (side + ".sock")).string(); }
  std::string up(const std::string& side) const {
    return socket(side) + " up --config " + (folder_ / (side + ".toml")).string();
  }

  std::filesystem::path folder_;
  std::string wire_;
  std::string report_;
};

TEST_F(Memwire, TwoStacksExchangeDatagramsWithoutRootOrKernelNetwork) {
  const CommandOutcome a = run_cli(up("a"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const CommandOutcome b = run_cli(up("b"));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  ASSERT_TRUE(wait_for([&] { return std::filesystem::exists(report_); }, 60s))
      << run_cli(socket("b") + " events").output << run_cli(socket("a") + " events").output;
  std::string line;
  std::getline(std::ifstream(report_), line);
  EXPECT_NE(line.find("sent=1000 verified=1000 mismatched=0"), std::string::npos) << line;
  EXPECT_NE(line.find("exposed=1"), std::string::npos) << line;
  // Nothing died on either side.
  EXPECT_EQ(run_cli(socket("a") + " events").output.find("exit "), std::string::npos);
  EXPECT_EQ(run_cli(socket("b") + " events").output.find("exit "), std::string::npos);
}

}  // namespace
}  // namespace flotilla::testing
