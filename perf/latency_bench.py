#!/usr/bin/env python3
"""Request/response latency on Flotilla against the kernel: one request at a time, and a fixed rate.

Side by side in one run, on the topology of perf/apps_bench.py (the clients in a peer namespace; the
servers in a kernel namespace of their own, or under `flotilla run` on a stack brought up for the
run), alternating the sides run by run:

  sockperf ping-pong   `sockperf pp --tcp -m 64`: one 64-byte message in flight; p50 and p99 of the
                       half round trip (sockperf's latency), in microseconds
  sockperf under load  `sockperf ul --tcp -m 64 --mps RATE` for each --rates: the same at a fixed
                       message rate
  redis GET, -c 1      `redis-benchmark -c 1 -t get`: p50 and p99 of the round trip, and requests/s

Both sides are pinned alike: every client with `taskset -c --client-cpu`, every server with
`taskset -c --server-cpu`. The stack's components are placed by the configuration: --wait and --core
set its [wait] policies and cores (a placement), e.g. --wait ip=poll --core ip=1.

After each Flotilla run it reads every component's counters (`flotilla counters`) and reports the
wake-ups per request on each hop: futex_wakes (a component woke a sleeping peer: a system call for
it, and the wake-up latency for the peer), sleeps (it slept on its doorbell), yields (it gave its
core away while traffic was warm), and for the program under the preload library waits_in_kernel
(it blocked in the kernel, e.g. epoll_wait).

Steal (host time taken from this VM) and background load (CPU share busy with other processes just
before each run, with ours idle) are printed beside every run and in the table: figures taken while
either is high are not comparable.

Needs root, sockperf and redis (./dev installs them) and a build. Benchmarks report; nothing here
asserts a time.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps_bench  # noqa: E402  (the topology, the servers' start-up and the clean-up)

SOCKPERF_PORT = 11111
WAIT_POLICIES = ("shared", "dedicated", "poll")


def say(text):
    print(text, flush=True)


class LatencyBench(apps_bench.Bench):
    def __init__(self, options):
        super().__init__(options)
        self.stack_settings = [f"wait.{setting}" for setting in options.wait]

    def edit_stack_config(self, config):
        """Pins the components --core names: `core = CPU` in their [[component]] table."""
        for name, cpu in self.options.core:
            pattern = re.compile(r'(\[\[component\]\]\nname = "' + re.escape(name) + r'"\n)')
            config, count = pattern.subn(lambda match: match.group(1) + f"core = {cpu}\n", config)
            if count != 1:
                raise RuntimeError(f"--core {name}={cpu}: the stack has no component or group '{name}'")
        return config

    def pinned(self, cpu, argv):
        return ["taskset", "-c", str(cpu)] + argv

    # -- servers ---------------------------------------------------------------------------------

    def start_sockperf(self, side):
        server = self.start(self.pinned(self.options.server_cpu, self.server_command(
            side, ["sockperf", "sr", "--tcp", "-i", "0.0.0.0", "-p", str(SOCKPERF_PORT)])), f"sockperf-sr-{side}.log")
        address = self.server_address(side)
        self.wait_until(lambda: self.port_open(address, SOCKPERF_PORT), server, 20, f"sockperf sr on {side}")
        return server

    def start_redis_pinned(self, side):
        server = self.start(self.pinned(self.options.server_cpu, self.server_command(side, [
            "redis-server", "--port", str(apps_bench.REDIS_PORT), "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--bind", "0.0.0.0", "--dir", self.folder])), f"redis-{side}.log")
        address = self.server_address(side)
        self.wait_until(lambda: self.port_open(address, apps_bench.REDIS_PORT), server, 20, f"redis on {side}")
        return server

    # -- counters ----------------------------------------------------------------------------------

    # -- clients -----------------------------------------------------------------------------------

    def client(self, argv, log_name, timeout):
        process = self.start(self.pinned(self.options.client_cpu, self.in_peer(argv)), log_name)
        status = self.finish(process, timeout)
        return status, self.output(process)

    def sockperf(self, side, mode, rate, log_name):
        seconds = self.options.seconds
        argv = ["sockperf", mode, "--tcp", "-i", self.server_address(side), "-p", str(SOCKPERF_PORT), "-t",
                str(seconds), "-m", "64"] + (["--mps", str(rate)] if rate else [])
        status, text = self.client(argv, log_name, seconds + 60)
        p50 = re.search(r"percentile 50\.000 =\s+([0-9.]+)", text)
        p99 = re.search(r"percentile 99\.000 =\s+([0-9.]+)", text)
        # Every message sent crosses the stack and is answered; under load sockperf times only a
        # sample of them (--reply-every), so the wake-ups are counted per message sent.
        sent = re.search(r"SentMessages=(\d+)", text)
        if status != 0 or not (p50 and p99 and sent):
            raise RuntimeError(f"sockperf {mode} against {side} failed ({status}):\n{text[-2000:]}")
        return {"p50": float(p50.group(1)), "p99": float(p99.group(1)), "requests": int(sent.group(1))}

    def redis_get(self, side, log_name):
        requests = self.options.redis_requests
        argv = ["redis-benchmark", "-h", self.server_address(side), "-p", str(apps_bench.REDIS_PORT), "-c", "1",
                "-n", str(requests), "-t", "get", "--csv"]
        status, text = self.client(argv, log_name, 600)
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...
        row = re.search(r'^"GET","([0-9.]+)","([0-9.]+)","([0-9.]+)","([0-9.]+)","([0-9.]+)","([0-9.]+)"', text, re.M)
        if status != 0 or row is None:
            raise RuntimeError(f"redis-benchmark -c 1 against {side} failed ({status}):\n{text[-2000:]}")
        return {"rps": float(row.group(1)), "p50": 1000 * float(row.group(4)), "p99": 1000 * float(row.group(6)),
                "requests": requests}

    # -- the benchmark -----------------------------------------------------------------------------

    def measure(self, results, key, what, start_server, run_client):
        """run_client(side, run) on both sides alternately, --runs times, with steal, background load
        and (Flotilla) wake-ups per request beside each run."""
        say(f"==> {what}")
        runs = {side: [] for side in self.sides}
        with self.serving(what, start_server) as failed:
            def attempt(side, run):
                """run_client's figures; None when the Flotilla side failed (reported, then left out)."""
                try:
                    return run_client(side, run)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    if side == "kernel":
                        raise
                    say(f"    {what} on {side} failed: {error}")
                    failed[side] = str(error)[:4000]
                    return None

            for side in self.sides:
                attempt(side, -1)  # warm: ARP, connections, caches
            for run in range(self.options.runs):
                for side in self.sides:
                    if side in failed:
                        continue
                    background = apps_bench.background_percent()
                    before_counters = self.counters() if side == "flotilla" else None
                    before = apps_bench.CpuSample()
                    figures = attempt(side, run)
                    if figures is None:
                        continue
                    figures["steal"] = before.steal_percent(apps_bench.CpuSample())
                    figures["background"] = background
                    if before_counters is not None:
                        figures["wakes"] = self.wakes_per_request(before_counters, self.counters(), figures["requests"])
                    say(f"    {side}, run {run + 1}/{self.options.runs}: p50 {figures['p50']:.1f} us, "
                        f"p99 {figures['p99']:.1f} us" + (f", {figures['rps']:.0f} req/s" if "rps" in figures else "")
                        + f", steal {figures['steal']:.1f}%, bg {background:.0f}%")
                    runs[side].append(figures)
        results[key] = {"what": what, "runs": runs, "failed": failed}

    def bench_sockperf(self, results):
        def ping_pong(side, run):
            return self.sockperf(side, "pp", 0, f"sockperf-pp-{side}-{run}.log")

        self.measure(results, "sockperf_pp", "sockperf ping-pong, TCP, 64 B", self.start_sockperf, ping_pong)
        for rate in self.options.rates:
            def under_load(side, run, rate=rate):
                return self.sockperf(side, "ul", rate, f"sockperf-ul{rate}-{side}-{run}.log")

            self.measure(results, f"sockperf_ul_{rate}", f"sockperf under load, TCP, 64 B, {rate} msg/s",
                         self.start_sockperf, under_load)

    def bench_redis(self, results):
        def get(side, run):
            return self.redis_get(side, f"redis-benchmark-c1-{side}-{run}.log")

        self.measure(results, "redis_c1", f"redis GET, redis-benchmark -c 1 -n {self.options.redis_requests}",
                     self.start_redis_pinned, get)


def median_of(runs, name):
    values = [run[name] for run in runs if name in run]
    return statistics.median(values) if values else None


def median_wakes(runs):
    """{component: {counter: median per request}} over the runs."""
    names = {(component, counter) for run in runs for component, values in run.get("wakes", {}).items()
             for counter in values}
    out = {}
    for component, counter in sorted(names):
        values = [run.get("wakes", {}).get(component, {}).get(counter, 0.0) for run in runs]
        out.setdefault(component, {})[counter] = statistics.median(values)
    return out


def table(results):
    lines = [f"{'':50} {'kernel p50':>10} {'p99':>9} {'flotilla p50':>13} {'p99':>9} {'ratio p50':>10} {'p99':>6}"
             f" {'steal%':>7} {'bg%':>5}"]
    for entry in results.values():
        kernel, flotilla = entry["runs"].get("kernel", []), entry["runs"].get("flotilla", [])
        cells = []
        for runs in (kernel, flotilla):
            for name in ("p50", "p99"):
                value = median_of(runs, name)
                cells.append("-" if value is None else f"{value:.1f}")
        ratios = []
        for name in ("p50", "p99"):
            k, f = median_of(kernel, name), median_of(flotilla, name)
            ratios.append("-" if not k or f is None else f"{f / k:.2f}x")
        steal = median_of(kernel + flotilla, "steal")
        background = median_of(kernel + flotilla, "background")
        lines.append(f"{entry['what'] + ' (us)':50} {cells[0]:>10} {cells[1]:>9} {cells[2]:>13} {cells[3]:>9} "
                     f"{ratios[0]:>10} {ratios[1]:>6} {steal or 0:>7.1f} {background or 0:>5.0f}")
        k_rps, f_rps = median_of(kernel, "rps"), median_of(flotilla, "rps")
        if k_rps or f_rps:
            ratio = f"{f_rps / k_rps:.2f}x" if k_rps and f_rps else "-"
            lines.append(f"{'  requests/s':50} {k_rps or 0:>20.0f} {f_rps or 0:>23.0f} {ratio:>17}")
    lines.append("")
    lines.append("Wake-ups per request on each hop (Flotilla; medians):")
    for entry in results.values():
        wakes = median_wakes(entry["runs"].get("flotilla", []))
        if not wakes:
            continue
        lines.append(f"  {entry['what']}")
        for component, values in wakes.items():
            text = ", ".join(f"{name} {value:.2f}" for name, value in values.items())
            lines.append(f"    {component:14} {text}")
    return "\n".join(lines)


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: ./dev bench latency --runs 3 --wait ip=poll --core ip=1   "
               "(or perf/latency_bench.py --build build ...)")
    parser.add_argument("--build", default=apps_bench.default_build_dir(),
                        help="the meson build folder (default: $FLOTILLA_BUILD_ROOT or build/ beside perf/)")
    parser.add_argument("--sides", default="kernel,flotilla",
                        help="which sides to measure, comma-separated: kernel, flotilla (default: both)")
    parser.add_argument("--only", default="sockperf,redis",
                        help="which benchmarks, comma-separated: sockperf, redis (default: both)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each figure per side, alternating sides; the table shows medians (default: 3)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each sockperf run (default: 5)")
    parser.add_argument("--rates", default="10000,40000",
                        help="sockperf under-load message rates, comma-separated ('' for none; default: 10000,40000)")
    parser.add_argument("--redis-requests", type=int, default=50000,
                        help="redis-benchmark -n for each -c 1 run (default: 50000)")
    parser.add_argument("--client-cpu", type=int, default=0, help="the CPU every client is pinned to (default: 0)")
    parser.add_argument("--server-cpu", type=int, default=1, help="the CPU every server is pinned to (default: 1)")
    parser.add_argument("--wait", action="append", default=[], metavar="NAME=POLICY",
                        help="the stack's [wait] NAME (default, a component or a group such as tcp) = "
                             f"{', '.join(WAIT_POLICIES)}; repeatable")
    parser.add_argument("--core", action="append", default=[], metavar="NAME=CPU",
                        help="pin the stack's component (or group) NAME to CPU; repeatable")
    parser.add_argument("--kernel-offloads", choices=["default", "off"], default="off",
                        help="the kernel server's veth end: offloads off like the peer's end of both links, or "
                             "the kernel's defaults (default: off)")
    parser.add_argument("--json", default=None, help="where to write the figures (default: BUILD/latency-bench.json)")
    options = parser.parse_args()
    apps_bench.split_sides_and_benchmarks(parser, options, ["sockperf", "redis"])
    try:
        options.rates = [int(rate) for rate in options.rates.split(",") if rate]
    except ValueError:
        parser.error(f"--rates '{options.rates}': expected messages per second, comma-separated")
    if any(rate < 1 for rate in options.rates):
        parser.error("--rates must be positive")
    for name in ("runs", "seconds", "redis_requests"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    cpus = os.cpu_count() or 1
    for name in ("client_cpu", "server_cpu"):
        if not 0 <= getattr(options, name) < cpus:
            parser.error(f"--{name.replace('_', '-')} must be a CPU of this machine (0-{cpus - 1})")
    for setting in options.wait:
        name, _, policy = setting.partition("=")
        if not name or policy not in WAIT_POLICIES:
            parser.error(f"--wait '{setting}': expected NAME=POLICY, POLICY one of {', '.join(WAIT_POLICIES)}")
    cores = []
    for setting in options.core:
        name, _, cpu = setting.partition("=")
        if not name or not cpu.isdigit() or int(cpu) >= cpus:
            parser.error(f"--core '{setting}': expected NAME=CPU, CPU 0-{cpus - 1}")
        cores.append((name, int(cpu)))
    options.core = cores
    options.json = options.json or os.path.join(options.build, "latency-bench.json")
    return options


def main():
    options = parse_arguments()
    apps_bench.check_prerequisites(
        "latency_bench", options,
        ["ip", "ethtool", "taskset"] + (["sockperf"] if "sockperf" in options.only else []) +
        (["redis-server", "redis-benchmark"] if "redis" in options.only else []))
    say(f"latency_bench: clients on CPU {options.client_cpu}, servers on CPU {options.server_cpu}; placement: "
        f"wait {' '.join(options.wait) or '(the configuration)'}, cores "
        f"{' '.join(f'{n}={c}' for n, c in options.core) or '(unpinned)'}")
    return apps_bench.run_and_report(
        "latency_bench", LatencyBench(options), options, table,
        f"\n(medians of {options.runs} runs, sides alternating; latencies in microseconds: sockperf's half round "
        f"trip, redis-benchmark's round trip; steal% and bg% are medians over both sides' runs; figures in "
        f"{options.json})")


if __name__ == "__main__":
    sys.exit(main())
