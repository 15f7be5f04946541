// `flotilla demo`, shortened: 8 s of iperf3 on Flotilla with three crashes (pf, ip, the driver) on a
// stack of this test's own names. Checks the report has a row per fault with numeric times, that
// the connection lived through each, that the timeline's bytes agree with iperf3's own total
// within 10%, and that the SVG parses as XML with one marker per fault. Root and iperf3 needed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "recovery/default_config.hpp"
#include "tests/support/stack_harness.hpp"

namespace flotilla::testing {
namespace {

std::string slurp(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

double number(const std::string& text, const std::string& key) {
  std::smatch match;
  if (!std::regex_search(text, match, std::regex("\"" + key + "\":([-0-9.eE+]+)"))) return -1;
  return std::stod(match[1]);
}

TEST(Demo, ShortDemoSurvivesThreeCrashesAndReportsThem) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces, veth, XDP)";
  ASSERT_FALSE(build_root().empty()) << "the build folder is unknown";
  ASSERT_EQ(::system("command -v iperf3 >/dev/null 2>&1"), 0) << "iperf3 is not installed (./dev installs it)";
  char pattern[] = "/tmp/flotilla-demo-test-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  const std::filesystem::path folder = pattern;
  const StackNames names = unique_names();
  const std::filesystem::path config = folder / "stack.toml";
  std::ofstream(config) << stack_config(names, "pass all", recovery::app_slots_config(1) + recovery::kNameFleetConfig);
  const std::filesystem::path out = folder / "out";
  const CommandOutcome demo = run_cli("--socket " + (folder / "control.sock").string() + " demo --config " +
                                      config.string() + " --duration 8 --faults 2:pf,4:ip,6:driver --out " +
                                      out.string());
  // Whatever happened, nothing of the stack stays behind.
  recovery::NetworkConfig network;
  network.peer_namespace = names.peer_namespace;
  network.stack_interface = names.stack_interface;
  recovery::remove_embedded_network(network);
  EXPECT_EQ(demo.exit_code, 0) << demo.output;

  const std::string report = slurp(out / "report.json");
  ASSERT_FALSE(report.empty()) << demo.output;
  // One row per fault, each with numeric detection and recovery times, each survived.
  const std::regex row("\\{\"at_s\":[^}]*\\}");
  std::vector<std::string> rows;
  for (auto it = std::sregex_iterator(report.begin(), report.end(), row); it != std::sregex_iterator(); ++it) {
    rows.push_back(it->str());
  }
  ASSERT_EQ(rows.size(), 3u) << report;
  const std::vector<std::string> components{"pf", "ip", "driver"};
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_NE(rows[i].find("\"component\":\"" + components[i] + "\""), std::string::npos) << rows[i];
    EXPECT_GE(number(rows[i], "detection_ms"), 0) << rows[i];
    EXPECT_GE(number(rows[i], "recovery_ms"), 0) << rows[i];
    EXPECT_NE(rows[i].find("\"survived\":true"), std::string::npos) << rows[i];
  }
  EXPECT_NE(report.find("\"stream_survived\":true"), std::string::npos) << report.substr(0, 400);
  const double sent = number(report, "sent_bytes");
  const double sampled = number(report, "sampled_bytes");
  ASSERT_GT(sent, 0) << report.substr(0, 400);
  EXPECT_NEAR(sampled / sent, 1.0, 0.10) << "timeline " << sampled << " bytes, iperf3 " << sent;

  // The picture is XML with one marker per fault.
  const std::string check = "python3 -c \"import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); "
                            "print(sum(1 for g in r.iter('{http://www.w3.org/2000/svg}g') if g.get('class') == 'fault'))\" " +
                            (out / "timeline.svg").string();
  const CommandOutcome markers = run_shell(check);
  EXPECT_EQ(markers.exit_code, 0) << markers.output;
  EXPECT_EQ(markers.output, "3\n");
  std::filesystem::remove_all(folder);
}

}  // namespace
}  // namespace flotilla::testing
