// `flotilla demo`: the recovery experiment end to end. It brings the stack up on the embedded
// network, streams an unmodified iperf3 on Flotilla (through the preload library) to a kernel
// iperf3 in the peer namespace, crashes components under the stream on a schedule, samples the
// throughput from the TCP replicas' counters, and reports per fault the detection and recovery
// times (from the supervisor's event log), the throughput dip and whether the connection lived,
// with a timeline picture (SVG) and a JSON report. The stack is brought down again whatever happens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "dataplane/result.hpp"

namespace flotilla::cli {

struct DemoFault {
  double at_seconds = 0;
  // A component name, "tcp-idle": the TCP replica that does not carry the stream, or
  // "tcp-carrier": the one that does.
  std::string target;
};

inline constexpr std::string_view kBusyFileServer = "fs-busy";

struct DemoOptions {
  double duration_seconds = 30;
  std::vector<DemoFault> faults;
  std::string out_dir = "demo-out";
  std::string socket;         // the supervisor's control socket
  std::string flotilla;       // the flotilla binary (to run up, down and run)
  std::string config_path;    // empty: the embedded default configuration
  // Where the kernel's iperf3 runs: the configuration's peer namespace and address.
  std::string peer_namespace = "flo-peer";
  std::string peer_address = "10.77.0.1";
  int interval_ms = 100;      // throughput sample period
  // After the stream: tar extracts a tree into the file fleet under `flotilla run` while this file
  // server crashes (kBusyFileServer: the one serving the extraction most), and the tree is compared
  // with its source (SHA-256); empty: not run.
  std::string file_server = std::string(kBusyFileServer);
  std::string files_prefix = "/flotilla";  // the configuration's [files] prefix
};

// "4:pf,8:ip,12:driver,16:tcp-idle,20:tcp-carrier,25:name0": seconds into the stream, then the
// component.
// Times must grow and lie inside (0, duration).
Result<std::vector<DemoFault>> parse_fault_schedule(std::string_view text, double duration_seconds,
                                                     std::string* problem);
inline constexpr std::string_view kDefaultFaultSchedule = "4:pf,8:ip,12:driver,16:tcp-idle,20:tcp-carrier,25:name0";

// Runs the demo; returns the process exit code (0: every fault was survived).
int run_demo(const DemoOptions& options);

}  // namespace flotilla::cli
