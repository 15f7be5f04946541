#!/usr/bin/env python3
"""Where the CPU time of a TCP bulk stream goes on Flotilla, per component and per function.

It brings up a stack on the topology of perf/apps_bench.py, runs `iperf3 -s` under `flotilla run`
and an iperf3 client in the peer namespace (send: Flotilla sends, the client runs with -R;
receive: Flotilla receives), and while the stream runs samples every process of the stack and the
iperf3 server with `perf record -e cpu-clock` (time, not hardware cycles: this VM has no PMU
counters). Then it prints, per process: the CPU milliseconds sampled, that time per data frame the
driver moved in the stream's direction (ns per packet), and the functions that took the most of it,
user space and kernel ([k]). The driver's kernel time includes the kernel peer's receive path when
Flotilla sends: on veth the transmit runs the other end's receive inline, in the sender's context.

Needs root, perf (Debian's linux-perf) and iperf3 (./dev installs them), and a build. It measures;
nothing here asserts a time.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps_bench  # noqa: E402  (the topology, the servers' start-up and the clean-up)

SAMPLES_PER_SECOND = 1999
DIRECTIONS = ("send", "receive")
# The driver's counter of frames in the stream's direction: data leaves Flotilla on send.
FRAMES_COUNTER = {"send": "tx_frames", "receive": "rx_frames"}
say = apps_bench.say


class BulkProfile(apps_bench.Bench):
    def __init__(self, options):
        options.sides = ["flotilla"]
        options.kernel_offloads = "off"
        super().__init__(options)

    def stack_pids(self):
        """{pid: component name} of every running component (`flotilla status --json`)."""
        text = self.command([self.flotilla, "--socket", self.socket, "status", "--json"]).stdout
        return {entry["pid"]: entry["name"] for entry in json.loads(text)["components"] if entry.get("pid", 0) > 0}

    @staticmethod
    def group_pids(leader):
        """The processes of the program `flotilla run` started (its process group)."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == leader:  # field 5, pgrp
                found.append(int(name))
        return found

    def profile(self, direction, results):
        server = self.start_iperf3("flotilla")
        seconds = self.options.seconds
        argv = ["iperf3", "-c", self.server_address("flotilla"), "-p", str(apps_bench.IPERF_PORT),
                "-t", str(seconds + 4), "--connect-timeout", "5000"] + (["-R"] if direction == "send" else [])
        client = self.start(self.in_peer(argv), f"iperf3-client-{direction}.log")
        time.sleep(2)  # past the handshake and slow start
        processes = self.stack_pids()
        for pid in self.group_pids(server.pid):
            processes[pid] = "iperf3 (flotilla run)"
        names = with_threads(processes)
        data = os.path.join(self.folder, f"{direction}.data")
        before_all = self.counters()
        before = before_all.get("driver", {})
        say(f"    perf record of {len(processes)} processes for {seconds} s ({direction})")
        record = self.command(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(SAMPLES_PER_SECOND),
                               "-p", ",".join(str(pid) for pid in processes), "-o", data, "--", "sleep", str(seconds)],
                              timeout=seconds + 60, check=False)
        after_all = self.counters()
        after = after_all.get("driver", {})
        moved = {name: after.get(name, 0) - before.get(name, 0) for name in FRAMES_COUNTER.values()}
        if self.finish(client, seconds + 60) != 0:
            raise RuntimeError(f"iperf3 -c ({direction}) failed:\n{self.output(client)[-2000:]}")
        self.stop(server)
        if not os.path.exists(data):
            raise RuntimeError(f"perf record wrote nothing ({record.returncode}):\n{record.stdout[-2000:]}")
        report = self.command(["perf", "report", "-i", data, "--no-children", "-g", "none", "--sort", "pid,sym",
                               "--stdio", "-F", "sample,pid,sym"], timeout=300).stdout
        other = FRAMES_COUNTER["receive" if direction == "send" else "send"]
        results[direction] = {"frames": moved[FRAMES_COUNTER[direction]], "frames_back": moved[other],
                              "seconds": seconds, "processes": parse_report(report, names),
                              "wakes_per_thousand": self.wakes_per_request(
                                  before_all, after_all, moved[FRAMES_COUNTER[direction]] / 1000)}

    def bench_send(self, results):
        self.profile("send", results)

    def bench_receive(self, results):
        self.profile("receive", results)


def with_threads(processes):
    """{thread id: name}: a process's main thread under its own name, every other thread of it as
    "NAME/COMM" (perf report names threads, not processes)."""
    names = {}
    for pid, name in processes.items():
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            if int(tid) == pid:
                names[pid] = name
                continue
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                    names[int(tid)] = f"{name}/{comm.read().strip()}"
            except OSError:
                names[int(tid)] = f"{name}/{tid}"
    return names


def parse_report(text, names):
    """{process name: {"samples": n, "functions": [(samples, symbol)]}} from perf report's lines
    "SAMPLES PID:COMM [.] SYMBOL"."""
    processes = collections.defaultdict(lambda: {"samples": 0, "functions": []})
    line_pattern = re.compile(r"^\s*(\d+)\s+(\d+):\S*\s+(\[[.k]\])\s+(.*\S)\s*$")
    for line in text.splitlines():
        match = line_pattern.match(line)
        if not match:
            continue
        samples, pid, where, symbol = int(match.group(1)), int(match.group(2)), match.group(3), match.group(4)
        entry = processes[names.get(pid, f"pid {pid}")]
        entry["samples"] += samples
        entry["functions"].append((samples, ("[k] " if where == "[k]" else "") + symbol))
    return dict(processes)


def table_of(top):
    def table(results):
        lines = []
        for direction, result in results.items():
            frames = max(result["frames"], 1)
            processes = result["processes"]
            total = sum(p["samples"] for p in processes.values()) or 1
            lines.append(f"{direction}: {result['frames']} data frames in {result['seconds']} s "
                         f"({result['frames'] / result['seconds'] / 1e3:.0f}k/s, {result['frames_back'] / frames:.2f} frames back "
                         f"each, ACKs mostly); "
                         f"{total / SAMPLES_PER_SECOND:.2f} CPU s sampled, {total / SAMPLES_PER_SECOND / frames * 1e9:.0f} "
                         f"ns per frame in all")
            lines.append(f"  {'process':<24} {'CPU ms':>8} {'share':>6} {'ns/frame':>9}  top functions (share of the process)")
            for name, entry in sorted(processes.items(), key=lambda item: -item[1]["samples"]):
                milliseconds = entry["samples"] / SAMPLES_PER_SECOND * 1e3
                functions = sorted(entry["functions"], reverse=True)[:top]
                listed = ", ".join(f"{symbol} {count * 100 / entry['samples']:.0f}%" for count, symbol in functions)
                lines.append(f"  {name:<24} {milliseconds:8.0f} {entry['samples'] * 100 / total:5.1f}% "
                             f"{milliseconds * 1e6 / frames:9.0f}  {listed}")
            lines.append("  waiting per 1000 data frames (the components' counters): " + "; ".join(
                f"{name} " + " ".join(f"{counter} {value:.0f}" for counter, value in moved.items())
                for name, moved in sorted(result["wakes_per_thousand"].items())))
            lines.append("")
        return "\n".join(lines)
    return table


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: ./dev bench profile --only send --seconds 8   (or perf/bulk_profile.py --build build ...)")
    parser.add_argument("--build", default=apps_bench.default_build_dir(),
                        help="the meson build folder (default: $FLOTILLA_BUILD_ROOT or build/ beside perf/)")
    parser.add_argument("--only", default=",".join(DIRECTIONS),
                        help="which directions, comma-separated: send (Flotilla sends), receive (default: both)")
    parser.add_argument("--seconds", type=int, default=6, help="seconds sampled per direction (default: 6)")
    parser.add_argument("--top", type=int, default=6, help="functions listed per process (default: 6)")
    parser.add_argument("--json", default=None, help="where to write the figures (default: BUILD/bulk-profile.json)")
    options = parser.parse_args()
    options.sides = "flotilla"
    apps_bench.split_sides_and_benchmarks(parser, options, list(DIRECTIONS))
    if options.seconds < 1 or options.top < 1:
        parser.error("--seconds and --top must be at least 1")
    options.json = options.json or os.path.join(options.build, "bulk-profile.json")
    return options


def main():
    options = parse_arguments()
    apps_bench.check_prerequisites("bulk_profile", options, ["ip", "ethtool", "iperf3", "perf"])
    return apps_bench.run_and_report(
        "bulk_profile", BulkProfile(options), options, table_of(options.top),
        "(perf record -e cpu-clock of every component and the iperf3 server while one stream runs; ns/frame: the "
        "process's CPU time over the data frames the driver moved that way; the driver's [k] time includes the "
        f"kernel peer's receive path on veth; figures in {options.json})")


if __name__ == "__main__":
    sys.exit(main())
