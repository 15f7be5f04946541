#include "apps/cli/demo.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "apps/cli/program.hpp"
#include "recovery/control_socket.hpp"
#include "recovery/embedded_network.hpp"

namespace flotilla::cli {
namespace {

using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

constexpr int kIperfPort = 5201;

// Brings the stack down, saying what `flotilla down` said.
void bring_down(const DemoOptions& options) {
  std::string said;
  recovery::run_command({options.flotilla, "--socket", options.socket, "down"}, &said);
  std::fputs(said.c_str(), stdout);
}

struct Sample {
  double at;     // seconds since the stream started, when the counters were read
  double gbps;   // over the time since the sample before
  double bytes;  // acknowledged since the sample before
};

struct LoggedEvent {
  double at_ms;  // since the supervisor started
  std::string kind;
  std::string component;
  std::string detail;
};

// The supervisor's event log, its lines (recovery/event_log.cpp's format_event) taken apart.
std::vector<LoggedEvent> read_events(const std::string& socket) {
  std::vector<LoggedEvent> events;
  const std::regex line_pattern(R"(^\[\s*([0-9.]+) ms\] (\S+)\s+(\S+)#[0-9]+(?:  (.*))?$)");
  std::istringstream lines(recovery::whole_event_log(socket));
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (std::regex_match(line, match, line_pattern)) {
      events.push_back(LoggedEvent{std::stod(match[1]), match[2], match[3], match[4]});
    }
  }
  return events;
}

// Sum of a named counter over the TCP replicas (tcp0, tcp1, ...), and each replica's own value.
std::uint64_t replica_counter(const recovery::CounterTable& table, const std::string& name,
                              std::map<std::string, std::uint64_t>* each = nullptr) {
  std::uint64_t total = 0;
  static const std::regex replica_name("tcp[0-9]+");
  for (const auto& [component, values] : table) {
    if (!std::regex_match(component, replica_name)) continue;
    const auto found = values.find(name);
    const std::uint64_t value = found == values.end() ? 0 : found->second;
    total += value;
    if (each != nullptr) (*each)[component] = value;
  }
  return total;
}

// The value at or below which a share `p` of the values lie (nearest rank).
double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
  return values[std::min(values.size(), std::max<std::size_t>(rank, 1)) - 1];
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// What iperf3's JSON says: bytes sent and received over the whole test, and any error.
struct IperfSummary {
  bool parsed = false;
  double sent_bytes = 0;
  double received_bytes = 0;
  double seconds = 0;
  std::string error;
};

// iperf3 -J: {"end": {"sum_sent": {"bytes", "seconds", ...}, "sum_received": {"bytes", ...}},
// "error": "..."}. A report cut short (iperf3 killed) is not parsed.
IperfSummary read_iperf(const std::string& path) {
  IperfSummary summary;
  std::ifstream file(path);
  const auto report = nlohmann::json::parse(file, nullptr, false);
  if (!report.is_object()) return summary;
  const auto number_at = [&](const nlohmann::json::json_pointer& pointer) -> std::optional<double> {
    if (!report.contains(pointer) || !report.at(pointer).is_number()) return std::nullopt;
    return report.at(pointer).get<double>();
  };
  if (report.contains("error") && report["error"].is_string()) summary.error = report["error"].get<std::string>();
  const auto sent = number_at(nlohmann::json::json_pointer("/end/sum_sent/bytes"));
  const auto received = number_at(nlohmann::json::json_pointer("/end/sum_received/bytes"));
  const auto seconds = number_at(nlohmann::json::json_pointer("/end/sum_sent/seconds"));
  if (sent && received) {
    summary.parsed = true;
    summary.sent_bytes = *sent;
    summary.received_bytes = *received;
    summary.seconds = seconds.value_or(0);
  }
  return summary;
}

// The crashed carrier's bytes_acked (which spans incarnations) and first_ack_after_restore_us (the
// steady clock's time, in microseconds, of the first byte a peer acknowledged after its latest
// restart), read about every kFineIntervalMs for kFineWindowSeconds after a tcp-carrier fault: the
// 100 ms samples are too coarse to time a recovery of a few milliseconds.
struct ByteCount {
  double at;  // seconds since the stream started
  std::uint64_t bytes;
  std::uint64_t first_ack_us;
};
constexpr int kFineIntervalMs = 1;
constexpr double kFineWindowSeconds = 0.5;
constexpr double kFineRateWindowSeconds = 0.010;  // the rate "back" is judged over

struct FaultOutcome {
  DemoFault fault;
  std::string component;   // what was crashed
  double injected_at = -1;  // seconds into the stream
  std::uint64_t injected_us = 0;  // the same on the steady clock, in microseconds since its epoch
  std::optional<double> detection_ms;
  std::optional<double> recovery_ms;
  std::optional<double> startup_ms;  // from the restart (the new process) to its serving again
  double dip_gbps = 0;            // lowest sample after the fault
  double baseline_gbps = 0;       // median before it
  std::optional<double> dip_ms;   // until back above 90% of the baseline
  bool survived = false;          // the connection lived on after it
  std::vector<ByteCount> fine;    // tcp-carrier faults only
  // From the crash to the first byte the restarted carrier had acknowledged (moved): as the
  // replica timed it (first_ack_after_restore_us), and as the samples saw it (late by up to a
  // sample gap, which a loaded machine stretches to many milliseconds). Then to the first
  // kFineRateWindowSeconds at 90% of the baseline (back).
  std::optional<double> moved_ms;
  std::optional<double> sampled_moved_ms;
  std::optional<double> fine_back_ms;
};

// detection_ms, startup_ms and recovery_ms of `fault`, the `nth` crash injected into its component,
// from the event log.
void time_recovery(const std::vector<LoggedEvent>& events, std::size_t nth, FaultOutcome& fault) {
  const LoggedEvent* inject = nullptr;
  for (const LoggedEvent& event : events) {
    if (event.kind == "inject" && event.component == fault.component && nth-- == 0) {
      inject = &event;
      break;
    }
  }
  if (inject == nullptr) return;
  for (const LoggedEvent& event : events) {
    if (event.component != fault.component || event.at_ms < inject->at_ms) continue;
    if (event.kind == "inject" && &event != inject) break;  // the next fault's
    if (event.kind == "exit" && !fault.detection_ms) fault.detection_ms = event.at_ms - inject->at_ms;
    if (event.kind == "restart" && fault.detection_ms && !fault.startup_ms) fault.startup_ms = -event.at_ms;
    if ((event.kind == "recovered" || event.kind == "joined") && fault.detection_ms && !fault.recovery_ms) {
      fault.recovery_ms = event.at_ms - inject->at_ms;
      if (fault.startup_ms) *fault.startup_ms += event.at_ms;
    }
  }
}

// moved_ms, sampled_moved_ms and fine_back_ms of a tcp-carrier fault. For the samples: the process
// is dead by its exit event, and its successor cannot have acknowledged anything a sample later,
// so the first sample after the exit holds the dead incarnation's count, and the first larger one
// follows the successor's first byte.
void time_carrier_recovery(FaultOutcome& fault) {
  if (!fault.detection_ms || fault.fine.empty()) return;
  const std::uint64_t first_ack_us = fault.fine.back().first_ack_us;
  if (first_ack_us != fault.fine.front().first_ack_us && first_ack_us > fault.injected_us) {
    fault.moved_ms = static_cast<double>(first_ack_us - fault.injected_us) / 1000;
  }
  const double exit_at = fault.injected_at + *fault.detection_ms / 1000;
  const auto after_exit = std::find_if(fault.fine.begin(), fault.fine.end(),
                                       [&](const ByteCount& sample) { return sample.at > exit_at; });
  if (after_exit == fault.fine.end()) return;
  const auto moved = std::find_if(after_exit, fault.fine.end(),
                                  [&](const ByteCount& sample) { return sample.bytes > after_exit->bytes; });
  if (moved == fault.fine.end()) return;
  fault.sampled_moved_ms = (moved->at - fault.injected_at) * 1000;
  const double wanted_bytes_per_second = 0.9 * fault.baseline_gbps * 1e9 / 8;
  for (auto at = moved; at != fault.fine.end(); ++at) {
    // The latest sample at least a rate window before this one.
    auto from = at;
    while (from != fault.fine.begin() && at->at - from->at < kFineRateWindowSeconds) --from;
    if (at->at - from->at < kFineRateWindowSeconds) continue;
    const double rate = static_cast<double>(at->bytes - from->bytes) / (at->at - from->at);
    if (rate >= wanted_bytes_per_second) {
      fault.fine_back_ms = (at->at - fault.injected_at) * 1000;
      return;
    }
  }
}

// The file fleet's part of the demo: a tree written before the stack comes up is extracted into
// the fleet by an unmodified tar under `flotilla run` while a file server crashes, then every file's
// SHA-256 in the fleet is compared with the source's.
constexpr int kDemoTreeFiles = 2000;
// The crash comes once the fleet has served this many requests of the extraction (each file costs
// a few), well before its end.
constexpr std::uint64_t kCrashAfterRequests = 1500;

struct FileFault {
  FaultOutcome fault;  // detection and recovery, timed as the network faults are
  std::uint64_t requests_at_crash = 0;
  bool tar_ok = false;
  bool tree_matches = false;
  std::string problem;  // why it failed, for the report
};

// kDemoTreeFiles files of 0-8 KiB in 40 folders under `source`, tarred to `archive`.
bool make_demo_tree(const std::filesystem::path& source, const std::filesystem::path& archive, std::string& problem) {
  std::error_code error;
  std::filesystem::remove_all(source, error);
  std::uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < kDemoTreeFiles; ++i) {
    const std::filesystem::path folder = source / ("d" + std::to_string(i % 40));
    std::filesystem::create_directories(folder, error);
    std::string bytes(static_cast<std::size_t>((i * 131) % 8192), '\0');
    for (char& byte : bytes) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      byte = static_cast<char>(seed >> 56);
    }
    std::ofstream(folder / ("f" + std::to_string(i))) << bytes;
  }
  std::string said;
  if (recovery::run_command({"tar", "-C", source.string(), "-cf", archive.string(), "."}, &said) != 0) {
    problem = "tar -c of the source tree failed: " + said;
    return false;
  }
  return true;
}

// Requests each file server (fs0, fs1, ...) has served.
std::map<std::string, std::uint64_t> fleet_requests(const std::string& socket) {
  std::map<std::string, std::uint64_t> served;
  std::string refusal;
  auto reply = recovery::control_request(socket, "counters", &refusal);
  if (!reply) return served;
  static const std::regex server_name("fs[0-9]+");
  for (const auto& [component, values] : recovery::parse_counters(reply.value())) {
    if (!std::regex_match(component, server_name)) continue;
    const auto found = values.find("fs_requests");
    served[component] = found == values.end() ? 0 : found->second;
  }
  return served;
}

std::string read_whole(const std::filesystem::path& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

// The extraction across the crash, then the comparison.
FileFault run_file_fault(const DemoOptions& options, const std::filesystem::path& out) {
  FileFault result;
  result.fault.component = options.file_server;
  const std::filesystem::path archive = out / "files-tree.tar";
  const std::string tree = options.files_prefix + "/demo-tree";
  const std::vector<std::string> run{options.flotilla, "--socket", options.socket, "run", "--"};
  const auto under_run = [&](std::vector<std::string> words) {
    words.insert(words.begin(), run.begin(), run.end());
    return words;
  };
  std::printf("==> tar -xf of %d files into %s under flotilla run; a file server (%s) crashes during it\n",
              kDemoTreeFiles, tree.c_str(), options.file_server.c_str());
  std::fflush(stdout);
  const std::map<std::string, std::uint64_t> before = fleet_requests(options.socket);
  Program tar(under_run({"sh", "-c", "mkdir -p '" + tree + "' && tar -xf '" + archive.string() + "' -C '" + tree + "'"}),
              out / "files-tar.log");
  while (tar.running() && !g_interrupted) {
    // "fs-busy": the server that has served the extraction most so far (its tree's home).
    std::uint64_t served = 0;
    std::uint64_t busiest = 0;
    for (const auto& [server, count] : fleet_requests(options.socket)) {
      const std::uint64_t grew = count - std::min(count, before.contains(server) ? before.at(server) : 0);
      served += grew;
      if (options.file_server == kBusyFileServer && grew >= busiest) {
        busiest = grew;
        result.fault.component = server;
      }
    }
    if (served >= kCrashAfterRequests) {
      std::string refusal;
      if (!recovery::control_request(options.socket, "inject " + result.fault.component + " crash", &refusal)) {
        result.problem = "inject " + result.fault.component + " failed: " + refusal;
      }
      result.requests_at_crash = served;
      result.fault.injected_at = 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const std::optional<int> status = tar.wait(std::chrono::seconds(120));
  result.tar_ok = status == 0;
  if (result.fault.injected_at < 0 && result.problem.empty()) result.problem = "the extraction ended before the crash";
  if (!result.tar_ok) {
    result.problem = "tar under flotilla run failed: " + read_whole(out / "files-tar.log");
    return result;
  }
  const std::string listing = "cd '%s' && find . -type f | LC_ALL=C sort | xargs sha256sum";
  char command[512];
  std::snprintf(command, sizeof(command), listing.c_str(), tree.c_str());
  Program fleet_sums(under_run({"sh", "-c", command}), out / "files-fleet.sha256");
  std::snprintf(command, sizeof(command), listing.c_str(), (out / "files-source").c_str());
  Program source_sums({"sh", "-c", command}, out / "files-source.sha256");
  const bool listed = fleet_sums.wait(std::chrono::seconds(60)) == 0 && source_sums.wait(std::chrono::seconds(60)) == 0;
  const std::string expected = read_whole(out / "files-source.sha256");
  const std::string got = read_whole(out / "files-fleet.sha256");
  result.tree_matches = listed && !expected.empty() && expected == got &&
                        std::count(expected.begin(), expected.end(), '\n') == kDemoTreeFiles;
  if (!result.tree_matches && result.problem.empty()) {
    result.problem = "the tree in the fleet differs from its source (" + (out / "files-fleet.sha256").string() +
                     " against " + (out / "files-source.sha256").string() + ")";
  }
  return result;
}

void write_svg(const std::string& path, const std::vector<Sample>& samples, const std::vector<FaultOutcome>& faults,
               double duration) {
  constexpr double kWidth = 960, kHeight = 360, kLeft = 60, kRight = 20, kTop = 30, kBottom = 40;
  // The axis ends at a multiple of 4 Gbit/s, so its four gridlines fall on whole numbers.
  double top_gbps = 1;
  for (const Sample& sample : samples) top_gbps = std::max(top_gbps, sample.gbps * 1.05);
  top_gbps = std::ceil(top_gbps / 4) * 4;
  const double span = std::max(duration, samples.empty() ? 1.0 : samples.back().at);
  const auto x = [&](double seconds) { return kLeft + (kWidth - kLeft - kRight) * seconds / span; };
  const auto y = [&](double gbps) { return kTop + (kHeight - kTop - kBottom) * (1 - gbps / top_gbps); };
  std::ofstream svg(path);
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" viewBox=\"0 0 " << kWidth << ' ' << kHeight << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kLeft << "\" y=\"18\" font-size=\"14\">Flotilla: iperf3 throughput while components crash</text>\n";
  for (int tick = 0; tick <= 4; ++tick) {
    const double gbps = top_gbps * tick / 4;
    svg << "<line x1=\"" << kLeft << "\" x2=\"" << kWidth - kRight << "\" y1=\"" << y(gbps) << "\" y2=\"" << y(gbps)
        << "\" stroke=\"#ddd\"/>\n<text x=\"" << kLeft - 6 << "\" y=\"" << y(gbps) + 4
        << "\" text-anchor=\"end\">" << gbps << "</text>\n";
  }
  svg << "<text x=\"14\" y=\"" << kHeight / 2 << "\" transform=\"rotate(-90 14 " << kHeight / 2
      << ")\" text-anchor=\"middle\">Gbit/s</text>\n"
      << "<text x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 8
      << "\" text-anchor=\"middle\">seconds</text>\n";
  for (int second = 0; second <= static_cast<int>(span); second += std::max(1, static_cast<int>(span / 10))) {
    svg << "<text x=\"" << x(second) << "\" y=\"" << kHeight - kBottom + 16 << "\" text-anchor=\"middle\">" << second
        << "</text>\n";
  }
  for (const FaultOutcome& fault : faults) {
    if (fault.injected_at < 0) continue;
    svg << "<g class=\"fault\"><line x1=\"" << x(fault.injected_at) << "\" x2=\"" << x(fault.injected_at) << "\" y1=\""
        << kTop << "\" y2=\"" << kHeight - kBottom << "\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"/>"
        << "<text x=\"" << x(fault.injected_at) + 3 << "\" y=\"" << kTop + 12 << "\" fill=\"#c0392b\">"
        << xml_escape(fault.component) << " crash</text></g>\n";
  }
  svg << "<polyline fill=\"none\" stroke=\"#2c6fbb\" stroke-width=\"1.5\" points=\"";
  for (const Sample& sample : samples) svg << x(sample.at) << ',' << y(sample.gbps) << ' ';
  svg << "\"/>\n</svg>\n";
}

std::string optional_ms(const std::optional<double>& value) {
  if (!value) return "-";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", *value);
  return text;
}

// Milliseconds, seconds and Gbit/s are reported to three decimals.
nlohmann::ordered_json rounded(std::optional<double> value) {
  if (!value) return nullptr;
  return std::round(*value * 1000) / 1000;
}

}  // namespace

Result<std::vector<DemoFault>> parse_fault_schedule(std::string_view text, double duration_seconds,
                                                     std::string* problem) {
  std::vector<DemoFault> faults;
  std::size_t at = 0;
  double previous = 0;
  while (at < text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string_view item = text.substr(at, comma - at);
    at = comma + 1;
    const std::size_t colon = item.find(':');
    double seconds = 0;
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == item.size()) {
      *problem = "'" + std::string(item) + "' is not SECONDS:COMPONENT";
      return Error{Errc::invalid_argument, 0, "fault schedule"};
    }
    const auto parsed = std::from_chars(item.data(), item.data() + colon, seconds);
    if (parsed.ec != std::errc() || parsed.ptr != item.data() + colon || !(seconds > previous) ||
        !(seconds < duration_seconds)) {
      *problem = "'" + std::string(item) + "': the time must be a number of seconds after the previous fault's and " +
                 "before the end of the stream";
      return Error{Errc::invalid_argument, 0, "fault schedule"};
    }
    previous = seconds;
    faults.push_back(DemoFault{seconds, std::string(item.substr(colon + 1))});
  }
  return faults;
}

int run_demo(const DemoOptions& options) {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "flotilla demo: needs root (it builds a network namespace and drives XDP)\n");
    return 1;
  }
  if (!on_path("iperf3")) {
    std::fprintf(stderr, "flotilla demo: iperf3 is not installed (./dev installs it)\n");
    return 1;
  }
  std::string refusal;
  if (recovery::control_request(options.socket, "status", &refusal)) {
    std::fprintf(stderr, "flotilla demo: a stack is already running at %s; stop it first (flotilla down)\n",
                 options.socket.c_str());
    return 1;
  }
  std::filesystem::create_directories(options.out_dir);
  const std::filesystem::path out(options.out_dir);

  struct sigaction action {};
  action.sa_handler = on_interrupt;
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);

  std::string problem;
  if (!options.file_server.empty() && !make_demo_tree(out / "files-source", out / "files-tree.tar", problem)) {
    std::fprintf(stderr, "flotilla demo: %s\n", problem.c_str());
    return 1;
  }

  const std::string& peer_namespace = options.peer_namespace;
  const std::string& peer_address = options.peer_address;
  std::printf("==> flotilla up (the kernel's iperf3 in namespace %s at %s)\n", peer_namespace.c_str(), peer_address.c_str());
  std::fflush(stdout);
  std::vector<std::string> up{options.flotilla, "--socket", options.socket, "up"};
  if (!options.config_path.empty()) up.insert(up.end(), {"--config", options.config_path});
  {
    Program starting(up, out / "up.log");
    if (starting.wait(std::chrono::seconds(60)) != 0) {
      std::fprintf(stderr, "flotilla demo: the stack did not come up:\n%s", starting.output().c_str());
      bring_down(options);
      return 1;
    }
  }
  // Whatever happens from here on, the stack goes down (after the programs, destroyed first).
  struct Teardown {
    const DemoOptions& options;
    ~Teardown() {
      std::printf("==> flotilla down\n");
      std::fflush(stdout);
      bring_down(options);
    }
  } teardown{options};

  Program server({"ip", "netns", "exec", peer_namespace, "iperf3", "-s", "-1", "-J", "-p", std::to_string(kIperfPort)},
                 (out / "iperf3-server.json").string());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // until it listens
  const int seconds = static_cast<int>(std::ceil(options.duration_seconds));
  // Every connection of the client on replica 0, so that "tcp-idle" is a replica it does not use and
  // "tcp-carrier" the one it does.
  Program client({options.flotilla, "--socket", options.socket, "run", "--", "iperf3", "-c", peer_address, "-p",
                  std::to_string(kIperfPort), "-t", std::to_string(seconds), "-J"},
                 (out / "iperf3-client.json").string(), {{"FLOTILLA_TCP_REPLICA", "0"}});
  std::printf("==> iperf3 -c %s -t %d on Flotilla (flotilla run), kernel iperf3 -s in %s; %zu faults\n",
              peer_address.c_str(), seconds, peer_namespace.c_str(), options.faults.size());

  const bool terminal = ::isatty(STDOUT_FILENO) != 0;
  std::vector<Sample> samples;
  std::vector<FaultOutcome> outcomes;
  for (const DemoFault& fault : options.faults) {
    FaultOutcome outcome;
    outcome.fault = fault;
    outcome.component = fault.target;
    outcomes.push_back(outcome);
  }
  std::size_t next_fault = 0;
  const auto started = Clock::now();
  auto last_sample = started;
  auto last_progress = started;
  std::uint64_t last_bytes = 0;
  std::map<std::string, std::uint64_t> last_each;
  std::map<std::string, std::uint64_t> second_ago_each;
  bool first = true;
  const auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - started).count(); };
  FaultOutcome* fine_fault = nullptr;  // the tcp-carrier fault being sampled finely, until fine_until
  auto fine_until = started;
  const auto sample_finely = [&] {
    auto reply = recovery::control_request(options.socket, "counters", &refusal);
    if (!reply) return;
    const auto table = recovery::parse_counters(reply.value());
    std::map<std::string, std::uint64_t> bytes;
    std::map<std::string, std::uint64_t> first_ack_us;
    replica_counter(table, "bytes_acked", &bytes);
    replica_counter(table, "first_ack_after_restore_us", &first_ack_us);
    fine_fault->fine.push_back(
        ByteCount{elapsed(), bytes[fine_fault->component], first_ack_us[fine_fault->component]});
  };
  while (!g_interrupted && client.running() && elapsed() < options.duration_seconds + 20) {
    const auto sample_due = last_sample + std::chrono::milliseconds(options.interval_ms);
    while (fine_fault != nullptr && Clock::now() < std::min(fine_until, sample_due)) {
      sample_finely();
      std::this_thread::sleep_until(std::min(Clock::now() + std::chrono::milliseconds(kFineIntervalMs), sample_due));
    }
    std::this_thread::sleep_until(sample_due);
    auto counters_reply = recovery::control_request(options.socket, "counters", &refusal);
    // The count is as of the reply, which a supervisor busy with a restart may give late: the rate
    // is over the time between replies, and a missed reply widens the next sample's span.
    const auto now = Clock::now();
    if (!counters_reply) continue;
    const double interval = std::chrono::duration<double>(now - last_sample).count();
    last_sample = now;
    const auto table = recovery::parse_counters(counters_reply.value());
    std::map<std::string, std::uint64_t> each;
    const std::uint64_t bytes = replica_counter(table, "bytes_acked", &each);
    const double moved = static_cast<double>(bytes - std::min(bytes, last_bytes));
    if (!first) samples.push_back(Sample{elapsed(), moved * 8 / interval / 1e9, moved});
    first = false;
    last_bytes = bytes;
    last_each = each;

    if (next_fault < outcomes.size() && elapsed() >= outcomes[next_fault].fault.at_seconds) {
      FaultOutcome& fault = outcomes[next_fault++];
      const bool idle = fault.fault.target == "tcp-idle";
      if (idle || fault.fault.target == "tcp-carrier") {
        // The replica whose acknowledged bytes grew least (idle) or most (carrier) over the last
        // second: a replica crash loses no connection, so the one under the stream may go too.
        std::string picked;
        std::uint64_t best = idle ? UINT64_MAX : 0;
        for (const auto& [name, value] : each) {
          const std::uint64_t grew = value - std::min(value, second_ago_each[name]);
          if (picked.empty() || (idle ? grew < best : grew > best)) best = grew, picked = name;
        }
        fault.component = !picked.empty() ? picked : idle ? "tcp1" : "tcp0";
      }
      fine_fault = nullptr;
      if (fault.fault.target == "tcp-carrier") {
        fine_fault = &fault;
        sample_finely();  // the count before the crash
      }
      fault.injected_at = elapsed();
      fault.injected_us = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch()).count());
      fine_until = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(kFineWindowSeconds));
      auto injected = recovery::control_request(options.socket, "inject " + fault.component + " crash", &refusal);
      if (!injected) std::printf("\n  inject %s failed: %s\n", fault.component.c_str(), refusal.c_str());
    }
    if (now - last_progress >= std::chrono::seconds(1)) {
      last_progress = now;
      second_ago_each = each;
      const double gbps = samples.empty() ? 0 : samples.back().gbps;
      // In place on a terminal, one line per second into a log.
      std::printf("%s  %5.1f s  %6.2f Gbit/s  faults injected %zu/%zu   %s", terminal ? "\r" : "", elapsed(), gbps,
                  next_fault, outcomes.size(), terminal ? "" : "\n");
      std::fflush(stdout);
    }
  }
  if (terminal) std::printf("\n");
  if (g_interrupted) std::printf("interrupted\n");
  // Let iperf3 write its report (it ends on its own after -t).
  for (int i = 0; i < 100 && client.running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const bool client_done = !client.running();
  const IperfSummary iperf = read_iperf((out / "iperf3-client.json").string());
  const bool stream_ok = client_done && client.exit_status() == 0 && iperf.parsed && iperf.error.empty();

  std::optional<FileFault> file_fault;
  if (!options.file_server.empty() && !g_interrupted) file_fault = run_file_fault(options, out);

  // How the replicas' loss recovery went, over the whole run.
  std::uint64_t retransmission_timeouts = 0;
  std::uint64_t restored_tails = 0;
  if (auto reply = recovery::control_request(options.socket, "counters", &refusal)) {
    const auto table = recovery::parse_counters(reply.value());
    retransmission_timeouts = replica_counter(table, "retransmission_timeouts");
    restored_tails = replica_counter(table, "restored_tail_resends");
  }

  // Detection and recovery from the event log, lined up with the stream's clock at each inject.
  const std::vector<LoggedEvent> events = read_events(options.socket);
  for (std::size_t index = 0; index < outcomes.size(); ++index) {
    FaultOutcome& fault = outcomes[index];
    if (fault.injected_at < 0) continue;
    // A fault's dip is looked for until the next fault (or 4 s).
    const double window_end = std::min(fault.injected_at + 4,
                                       index + 1 < outcomes.size() && outcomes[index + 1].injected_at >= 0
                                           ? outcomes[index + 1].injected_at
                                           : fault.injected_at + 4);
    // This fault is the n-th one injected into its component.
    std::size_t nth = 0;
    for (std::size_t earlier = 0; earlier < index; ++earlier) nth += outcomes[earlier].component == fault.component ? 1 : 0;
    time_recovery(events, nth, fault);
    std::vector<double> before;
    for (const Sample& sample : samples) {
      if (sample.at < fault.injected_at && sample.at >= fault.injected_at - 2) before.push_back(sample.gbps);
    }
    fault.baseline_gbps = median(before);
    fault.dip_gbps = fault.baseline_gbps;
    bool recovered = false;
    for (const Sample& sample : samples) {
      if (sample.at < fault.injected_at || sample.at > window_end) continue;
      fault.dip_gbps = std::min(fault.dip_gbps, sample.gbps);
      if (!recovered && sample.gbps >= 0.9 * fault.baseline_gbps) {
        recovered = true;
        fault.dip_ms = (sample.at - fault.injected_at) * 1000;
      }
    }
    time_carrier_recovery(fault);
    // The connection survived the fault when it lived to the end, or (when it died later) still
    // carried bytes after this fault's window.
    fault.survived = stream_ok;
    for (const Sample& sample : samples) fault.survived = fault.survived || (sample.at > window_end && sample.gbps > 0);
  }

  if (file_fault && file_fault->fault.injected_at >= 0) time_recovery(events, 0, file_fault->fault);

  // A component killed for a missed heartbeat, or given up, during the run.
  for (const LoggedEvent& event : events) {
    if (event.kind == "hang" || event.kind == "failed") {
      std::printf("%s %s at %.1f ms: %s\n", event.kind.c_str(), event.component.c_str(), event.at_ms, event.detail.c_str());
    }
  }

  double sampled_bytes = 0;
  for (const Sample& sample : samples) sampled_bytes += sample.bytes;

  std::printf("\n%-10s %12s %12s %10s %10s %10s %9s %9s %9s\n", "component", "detect ms", "recover ms", "base Gb/s",
              "dip Gb/s", "back ms", "moved ms", "10ms back", "survived");
  for (const FaultOutcome& fault : outcomes) {
    std::printf("%-10s %12s %12s %10.2f %10.2f %10s %9s %9s %9s\n", fault.component.c_str(),
                optional_ms(fault.detection_ms).c_str(), optional_ms(fault.recovery_ms).c_str(), fault.baseline_gbps,
                fault.dip_gbps, optional_ms(fault.dip_ms).c_str(), optional_ms(fault.moved_ms).c_str(),
                optional_ms(fault.fine_back_ms).c_str(), fault.injected_at < 0 ? "not run" : fault.survived ? "yes" : "NO");
  }
  const bool files_ok = !file_fault || (file_fault->tar_ok && file_fault->tree_matches && file_fault->problem.empty());
  if (file_fault) {
    std::printf("%-10s %12s %12s %10s %10s %10s %9s %9s %9s\n", file_fault->fault.component.c_str(),
                optional_ms(file_fault->fault.detection_ms).c_str(), optional_ms(file_fault->fault.recovery_ms).c_str(),
                "-", "-", "-", "-", "-", files_ok ? "yes" : "NO");
  }
  std::printf("(moved ms: from a tcp-carrier crash to the restarted replica's first acknowledged byte, on its clock; "
              "10ms back: to its first %d ms at 90%% of the baseline, from samples about every %d ms)\n",
              static_cast<int>(kFineRateWindowSeconds * 1000), kFineIntervalMs);
  std::printf("\niperf3: %s; sent %.0f bytes, the receiver got %.0f (%s)\n",
              stream_ok ? "the connection lived to the end" : ("failed: " + (iperf.error.empty() ? "exit code " + std::to_string(client.exit_status().value_or(-1)) : iperf.error)).c_str(),
              iperf.sent_bytes, iperf.received_bytes,
              !iperf.parsed ? "no report from iperf3"
              : iperf.sent_bytes == iperf.received_bytes ? "all of it"
                                                         : "iperf3 stops its clock with bytes still in flight");
  if (iperf.parsed && iperf.sent_bytes > 0) {
    std::printf("the timeline's bytes against iperf3's: %.1f%%\n", 100.0 * sampled_bytes / iperf.sent_bytes);
  }
  std::printf("TCP replicas: %llu retransmission timeouts, %llu restored tails sent again\n",
              static_cast<unsigned long long>(retransmission_timeouts), static_cast<unsigned long long>(restored_tails));
  if (file_fault && files_ok) {
    std::printf("files: tar extracted %d files into %s/demo-tree under flotilla run, %s crashed after %llu of its "
                "requests; every file's SHA-256 matches the source\n",
                kDemoTreeFiles, options.files_prefix.c_str(), file_fault->fault.component.c_str(),
                static_cast<unsigned long long>(file_fault->requests_at_crash));
  } else if (file_fault) {
    std::printf("files: FAILED: %s\n", file_fault->problem.c_str());
  }

  // Per kind of fault (when some were repeated): p50 / p99 / max of each time.
  struct Summary {
    std::vector<double> detection, recovery, startup, dip, moved, sampled_moved, fine_back;
    std::size_t faults = 0, not_back = 0, not_survived = 0;
  };
  std::map<std::string, Summary> summaries;
  bool repeated = false;
  for (const FaultOutcome& fault : outcomes) {
    Summary& summary = summaries[fault.fault.target];
    ++summary.faults;
    repeated = repeated || summary.faults > 1;
    if (fault.detection_ms) summary.detection.push_back(*fault.detection_ms);
    if (fault.recovery_ms) summary.recovery.push_back(*fault.recovery_ms);
    if (fault.dip_ms) summary.dip.push_back(*fault.dip_ms); else ++summary.not_back;
    if (fault.startup_ms && fault.recovery_ms) summary.startup.push_back(*fault.startup_ms);
    if (fault.moved_ms) summary.moved.push_back(*fault.moved_ms);
    if (fault.sampled_moved_ms) summary.sampled_moved.push_back(*fault.sampled_moved_ms);
    if (fault.fine_back_ms) summary.fine_back.push_back(*fault.fine_back_ms);
    if (!fault.survived) ++summary.not_survived;
  }
  const auto triple = [](const std::vector<double>& values) {
    char text[64];
    if (values.empty()) return std::string("-");
    std::snprintf(text, sizeof(text), "%.1f / %.1f / %.1f", percentile(values, 0.5), percentile(values, 0.99),
                  percentile(values, 1.0));
    return std::string(text);
  };
  if (repeated) {
    std::printf("\n%-12s %6s %24s %24s %24s %9s %9s\n", "fault", "count", "detect ms p50/p99/max",
                "recover ms p50/p99/max", "dip ms p50/p99/max", "not back", "conn lost");
    for (const auto& [target, summary] : summaries) {
      std::printf("%-12s %6zu %24s %24s %24s %9zu %9zu\n", target.c_str(), summary.faults, triple(summary.detection).c_str(),
                  triple(summary.recovery).c_str(), triple(summary.dip).c_str(), summary.not_back, summary.not_survived);
    }
  }
  for (const auto& [target, summary] : summaries) {
    if (summary.moved.empty()) continue;
    std::printf("%s: bytes moving again %s ms (p50/p99/max, %zu of %zu crashes; as the samples saw it %s), "
                "at 90%% again %s ms (%zu); the new process from its start to serving %s ms\n",
                target.c_str(), triple(summary.moved).c_str(), summary.moved.size(), summary.faults,
                triple(summary.sampled_moved).c_str(), triple(summary.fine_back).c_str(), summary.fine_back.size(),
                triple(summary.startup).c_str());
  }

  write_svg((out / "timeline.svg").string(), samples, outcomes, options.duration_seconds);
  using Json = nlohmann::ordered_json;
  // A carrier fault's 1 ms samples: [ms since the crash, bytes acknowledged since the sample before it].
  const auto fine_samples = [](const FaultOutcome& fault) {
    Json pairs = Json::array();
    for (const ByteCount& sample : fault.fine) {
      pairs.push_back({rounded((sample.at - fault.injected_at) * 1000),
                       sample.bytes - std::min(sample.bytes, fault.fine.front().bytes)});
    }
    return pairs;
  };
  Json report_counters = Json::object();
  Json faults = Json::array();
  for (const FaultOutcome& fault : outcomes) {
    faults.push_back({{"at_s", fault.fault.at_seconds},
                      {"target", fault.fault.target},
                      {"component", fault.component},
                      {"injected_at_s", rounded(fault.injected_at)},
                      {"detection_ms", rounded(fault.detection_ms)},
                      {"recovery_ms", rounded(fault.recovery_ms)},
                      {"startup_ms", rounded(fault.recovery_ms ? fault.startup_ms : std::nullopt)},
                      {"baseline_gbps", rounded(fault.baseline_gbps)},
                      {"dip_gbps", rounded(fault.dip_gbps)},
                      {"dip_ms", rounded(fault.dip_ms)},
                      {"moved_ms", rounded(fault.moved_ms)},
                      {"sampled_moved_ms", rounded(fault.sampled_moved_ms)},
                      {"fine_back_ms", rounded(fault.fine_back_ms)},
                      {"fine_samples", fine_samples(fault)},
                      {"survived", fault.injected_at < 0 ? Json(nullptr) : Json(fault.survived)}});
  }
  Json by_target = Json::object();
  report_counters["retransmission_timeouts"] = retransmission_timeouts;
  report_counters["restored_tail_resends"] = restored_tails;
  for (const auto& [target, summary] : summaries) {
    const auto stats = [](const std::vector<double>& values) -> Json {
      if (values.empty()) return nullptr;
      return {{"p50", rounded(percentile(values, 0.5))},
              {"p99", rounded(percentile(values, 0.99))},
              {"max", rounded(percentile(values, 1.0))}};
    };
    by_target[target] = {{"faults", summary.faults},
                         {"detection_ms", stats(summary.detection)},
                         {"recovery_ms", stats(summary.recovery)},
                         {"startup_ms", stats(summary.startup)},
                         {"dip_ms", stats(summary.dip)},
                         {"moved_ms", stats(summary.moved)},
                         {"sampled_moved_ms", stats(summary.sampled_moved)},
                         {"fine_back_ms", stats(summary.fine_back)},
                         {"not_back", summary.not_back},
                         {"not_survived", summary.not_survived}};
  }
  Json sample_pairs = Json::array();
  for (const Sample& sample : samples) sample_pairs.push_back({rounded(sample.at), rounded(sample.gbps)});
  const Json report = {{"duration_s", options.duration_seconds},
                       {"interval_ms", options.interval_ms},
                       {"fine_interval_ms", kFineIntervalMs},
                       {"stream_survived", stream_ok},
                       {"iperf3",
                        {{"sent_bytes", iperf.sent_bytes},
                         {"received_bytes", iperf.received_bytes},
                         {"seconds", iperf.seconds},
                         {"error", iperf.error}}},
                       {"sampled_bytes", sampled_bytes},
                       {"tcp_counters", std::move(report_counters)},
                       {"faults", std::move(faults)},
                       {"file_fault",
                        !file_fault ? Json(nullptr)
                                    : Json{{"component", file_fault->fault.component},
                                           {"files", kDemoTreeFiles},
                                           {"requests_at_crash", file_fault->requests_at_crash},
                                           {"detection_ms", rounded(file_fault->fault.detection_ms)},
                                           {"recovery_ms", rounded(file_fault->fault.recovery_ms)},
                                           {"tar_ok", file_fault->tar_ok},
                                           {"tree_matches", file_fault->tree_matches},
                                           {"problem", file_fault->problem}}},
                       {"summary", std::move(by_target)},
                       {"samples", std::move(sample_pairs)}};
  // iperf3's error text comes from outside: bytes that are not UTF-8 become U+FFFD.
  std::ofstream(out / "report.json") << report.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
  std::printf("wrote %s and %s\n", (out / "timeline.svg").c_str(), (out / "report.json").c_str());

  bool all_survived = stream_ok && files_ok;
  for (const FaultOutcome& fault : outcomes) all_survived = all_survived && fault.survived;
  return g_interrupted ? 130 : (all_survived ? 0 : 1);
}

}  // namespace flotilla::cli
