// `flotilla demo`, shortened: 8 s of iperf3 on Flotilla with three crashes (pf, ip, the driver) on a
// stack of this test's own names. Checks the report has a row per fault with numeric times, that
// the connection lived through each, that the timeline's bytes agree with iperf3's own total
// within 10%, and that the SVG parses as XML with one marker per fault. Root and iperf3 needed.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
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

// The number at `key` of `object`; -1 when it is missing or not a number (null, for one).
double number(const nlohmann::json& object, const std::string& key) {
  return object.contains(key) && object[key].is_number() ? object[key].get<double>() : -1;
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
  std::ofstream(config) << stack_config(names, "pass all", recovery::app_seats_config(1) + recovery::kNameFleetConfig);
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

  const std::string text = slurp(out / "report.json");
  ASSERT_FALSE(text.empty()) << demo.output;
  const auto report = nlohmann::json::parse(text, nullptr, false);
  ASSERT_TRUE(report.is_object()) << text.substr(0, 400);
  // One row per fault, each with numeric detection and recovery times, each survived.
  const nlohmann::json rows = report.value("faults", nlohmann::json::array());
  ASSERT_TRUE(rows.is_array()) << text.substr(0, 400);
  ASSERT_EQ(rows.size(), 3u) << text;
  const std::vector<std::string> components{"pf", "ip", "driver"};
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].value("component", ""), components[i]) << rows[i];
    EXPECT_GE(number(rows[i], "detection_ms"), 0) << rows[i];
    EXPECT_GE(number(rows[i], "recovery_ms"), 0) << rows[i];
    EXPECT_TRUE(rows[i].value("survived", false)) << rows[i];
  }
  EXPECT_TRUE(report.value("stream_survived", false)) << text.substr(0, 400);
  const double sent = number(report.value("iperf3", nlohmann::json::object()), "sent_bytes");
  const double sampled = number(report, "sampled_bytes");
  ASSERT_GT(sent, 0) << text.substr(0, 400);
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
