#!/usr/bin/env python3
"""Unmodified lighttpd, nginx, redis, memcached and iperf3 on Flotilla against the same programs on
kernel sockets.

Side by side in one run, on the same veth topology: the clients (wrk, redis-benchmark, iperf3 -c)
run in a peer namespace and reach either

  kernel    the server in a namespace of its own, over a veth pair from the peer namespace
            (10.80.0.2), or
  flotilla  the server under `flotilla run` (libflotilla-preload.so) on a stack this script brings
            up with `flotilla up` (10.79.0.2, over the veth pair Flotilla's driver takes).

It measures lighttpd and nginx requests/s (wrk, a 1 KiB file, 64 connections; nginx with
--nginx-workers worker processes, with keep-alive and again with a connection per request), redis-benchmark SET and GET operations/s, memcached operations/s
(memcaslap, 8 connections, 90% gets, with -t 4 threads), iperf3 Gbit/s both ways, and in a separate pass (strace slows a program down a lot)
the system calls per request of lighttpd under wrk and of redis under redis-benchmark, counted on
the server by `strace -c -f -p PID` (which calls, and how many are not on files; it slows the server down several times, so
calls are batched less than at full speed) and, when `perf` is installed, by
`perf stat -e raw_syscalls:sys_enter -p PID` (a count at nearly full speed). Prints a table with both sides and the ratios
(flotilla / kernel) and writes the figures as JSON.

Needs root, the Debian packages of the programs measured (lighttpd, nginx-light, redis-server,
redis-tools, memcached, libmemcached-tools, iperf3, wrk, strace), and a
build (./dev build). Names are unique to this process (flo<pid>...); everything it made is removed
however it ends (Ctrl-C too).
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

KERNEL_CLIENT_ADDRESS = "10.80.0.1"  # the peer namespace's end of the kernel pair
KERNEL_SERVER_ADDRESS = "10.80.0.2"
STACK_ADDRESS = "10.79.0.2"          # tests/support/stack_harness.hpp StackNames defaults
LIGHTTPD_PORT = 8080
REDIS_PORT = 6379
IPERF_PORT = 5201
NGINX_PORT = 8081
MEMCACHED_PORT = 11211
SMALL_FILE_BYTES = 1024
# Counters that count waiting: the runtime's (dataplane/counters.hpp) and the preload library's.
WAKE_COUNTERS = ("futex_wakes", "sleeps", "yields", "waits_in_kernel")
# The programs each benchmark needs, besides ip and ethtool.
PROGRAMS = {
    "lighttpd": ["lighttpd", "wrk"],
    "nginx": ["nginx", "wrk"],
    "redis": ["redis-server", "redis-benchmark"],
    "memcached": ["memcached", "memcaslap"],
    "iperf3": ["iperf3"],
    "syscalls": ["lighttpd", "wrk", "redis-server", "redis-benchmark", "strace"],
}
BENCHMARKS = list(PROGRAMS)
# Calls on files, not sockets: lighttpd reads the file it serves with pread64 on every request,
# whatever the sockets are. strace's breakdown gives the count without them as well.
FILE_CALLS = {"pread64", "openat", "open", "newfstatat", "fstat", "statx", "lseek"}


class Stopped(Exception):
    """A stop signal arrived: unwind and clean up."""


def say(text):
    print(text, flush=True)


class CpuSample:
    """/proc/stat's machine-wide counters, for steal and background load."""

    def __init__(self):
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
        self.total = sum(fields)
        self.idle = fields[3] + fields[4]
        self.steal = fields[7]

    def steal_percent(self, later):
        return 100.0 * (later.steal - self.steal) / max(later.total - self.total, 1)

    def busy_percent(self, later):
        return 100.0 * (later.total - self.total - (later.idle - self.idle)) / max(later.total - self.total, 1)


def background_percent(window=0.5):
    before = CpuSample()
    time.sleep(window)
    return before.busy_percent(CpuSample())


def default_build_dir():
    given = os.environ.get("FLOTILLA_BUILD_ROOT")
    if given:
        return given
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build")


class Bench:
    def __init__(self, options):
        self.options = options
        self.id = str(os.getpid() % 10_000_000)
        self.peer_ns = f"flo{self.id}p"
        self.kernel_ns = f"flo{self.id}k"
        self.client_interface = f"flo{self.id}a"
        self.server_interface = f"flo{self.id}b"
        self.folder = tempfile.mkdtemp(prefix="flotilla-apps-bench-")
        self.socket = os.path.join(self.folder, "control.sock")
        self.flotilla = os.path.join(options.build, "apps", "flotilla")
        self.children = []
        self.stack_up = False
        self.made_peer_ns = False
        self.made_kernel_ns = False
        self.sides = list(options.sides)
        self.skipped = {}  # side -> why it was not measured
        # Each throughput run's steal (the host's) and the background load just before it.
        self.loads = []
        self.stack_settings = []  # `flotilla up --set` values (perf/latency_bench.py's placements)

    # -- processes -------------------------------------------------------------------------------

    def command(self, argv, timeout=60, check=True):
        result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"'{' '.join(argv)}' failed ({result.returncode}):\n{result.stdout}")
        return result

    def start(self, argv, log_name):
        """A program in a session (process group) of its own, its output in a log file."""
        log = open(os.path.join(self.folder, log_name), "w")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        process.log_path = os.path.join(self.folder, log_name)
        self.children.append(process)
        return process

    def stop(self, process, first_signal=signal.SIGTERM):
        if process.poll() is None:
            try:
                os.killpg(process.pid, first_signal)
                process.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process in self.children:
            self.children.remove(process)

    def finish(self, process, timeout):
        """Waits for a program to end by itself; stops it and fails when it overruns."""
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(process)
            raise RuntimeError(f"'{' '.join(process.args)}' overran {timeout} s:\n{self.output(process)[-2000:]}")
        self.children.remove(process)
        return process.returncode

    @staticmethod
    def output(process):
        with open(process.log_path, errors="replace") as log:
            return log.read()

    def in_peer(self, argv):
        return ["ip", "netns", "exec", self.peer_ns] + argv

    def server_command(self, side, argv):
        if side == "kernel":
            return ["ip", "netns", "exec", self.kernel_ns] + argv
        return [self.flotilla, "--socket", self.socket, "run", "--"] + argv

    @staticmethod
    def server_address(side):
        return KERNEL_SERVER_ADDRESS if side == "kernel" else STACK_ADDRESS

    def port_open(self, address, port):
        probe = ("import socket,sys\ns=socket.socket()\ns.settimeout(0.3)\n"
                 f"sys.exit(s.connect_ex(('{address}',{port})))")
        return self.command(self.in_peer([sys.executable, "-c", probe]), check=False).returncode == 0

    def wait_until(self, condition, process, seconds, what):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: the server ended ({process.returncode}):\n{self.output(process)[-2000:]}")
            if condition():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what}: not ready after {seconds} s:\n{self.output(process)[-2000:]}")

    # -- topology --------------------------------------------------------------------------------

    def bring_up(self):
        if "flotilla" in self.sides:
            library = os.environ.get("FLOTILLA_PRELOAD") or os.path.join(self.options.build, "sockets",
                                                                          "libflotilla-preload.so")
            if not os.path.exists(library):
                self.skip("flotilla", f"{library} is not built")
        if "flotilla" in self.sides:
            say(f"==> stack: flotilla up on {self.socket}")
            config = self.command([os.path.join(self.options.build, "perf", "flotilla-stack-bench"),
                                   "apps-config", "--id", self.id]).stdout
            config_path = os.path.join(self.folder, "stack.toml")
            with open(config_path, "w") as file:
                file.write(self.edit_stack_config(config))
            self.stack_up = True  # from here on `flotilla down` runs at the end, whatever happens
            settings = [word for setting in self.stack_settings for word in ("--set", setting)]
            self.command([self.flotilla, "--socket", self.socket, "up", "--config", config_path] + settings,
                         timeout=120)
        else:
            self.made_peer_ns = True
            self.command(["ip", "netns", "add", self.peer_ns])
            self.command(["ip", "-n", self.peer_ns, "link", "set", "lo", "up"])
        # The kernel's servers: the same offload settings on the client's end as on the peer's end of
        # Flotilla's link (tests/support/kernel_namespace.hpp does the same for the C++ benchmarks).
        self.made_kernel_ns = True
        for step in (
            ["ip", "netns", "add", self.kernel_ns],
            ["ip", "link", "add", self.client_interface, "netns", self.peer_ns, "type", "veth", "peer", "name",
             self.server_interface, "netns", self.kernel_ns],
            ["ip", "-n", self.peer_ns, "addr", "add", KERNEL_CLIENT_ADDRESS + "/24", "dev", self.client_interface],
            ["ip", "-n", self.kernel_ns, "addr", "add", KERNEL_SERVER_ADDRESS + "/24", "dev", self.server_interface],
            ["ip", "-n", self.peer_ns, "link", "set", self.client_interface, "up"],
            ["ip", "-n", self.kernel_ns, "link", "set", self.server_interface, "up"],
            ["ip", "-n", self.kernel_ns, "link", "set", "lo", "up"],
            self.in_peer(["ethtool", "-K", self.client_interface, "tx", "off", "tso", "off", "gso", "off"]),
        ):
            self.command(step)
        if self.options.kernel_offloads == "off":
            self.command(["ip", "netns", "exec", self.kernel_ns, "ethtool", "-K", self.server_interface,
                          "tx", "off", "tso", "off", "gso", "off"])

    def edit_stack_config(self, config):
        """The stack's configuration as `flotilla up` gets it (a subclass may change it)."""
        return config

    def tear_down(self):
        for process in list(self.children):
            self.stop(process)
        if self.stack_up:
            self.command([self.flotilla, "--socket", self.socket, "down"], check=False)
            self.stack_up = False
        if self.made_kernel_ns:
            self.command(["ip", "netns", "del", self.kernel_ns], check=False)
            self.made_kernel_ns = False
        if self.made_peer_ns:
            self.command(["ip", "netns", "del", self.peer_ns], check=False)
            self.made_peer_ns = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def counters(self):
        """{component: {counter: value}} of the stack's components (`flotilla counters --all`)."""
        text = self.command([self.flotilla, "--socket", self.socket, "counters", "--all"]).stdout
        table, component = {}, None
        for line in text.splitlines():
            if line and not line[0].isspace():
                component = line.strip()
                table[component] = {}
            elif component is not None and line.split():
                name, value = line.split()[:2]
                if value.isdigit():
                    table[component][name] = int(value)
        return table

    @staticmethod
    def wakes_per_request(before, after, requests):
        """{component: {counter: per request}} of the wake counters that moved during the run."""
        out = {}
        for component, values in after.items():
            moved = {}
            for name in WAKE_COUNTERS:
                delta = values.get(name, 0) - before.get(component, {}).get(name, 0)
                if delta > 0:
                    moved[name] = delta / max(requests, 1)
            if moved:
                out[component] = moved
        return out

    def skip(self, side, why):
        say(f"    {side} side skipped: {why}")
        self.skipped[side] = why
        if side in self.sides:
            self.sides.remove(side)

    # -- servers ---------------------------------------------------------------------------------

    def web_root(self):
        """The folder both web servers serve, holding small.bin."""
        root = os.path.join(self.folder, "www")
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "small.bin"), "wb") as file:
            file.write(bytes(i % 251 for i in range(SMALL_FILE_BYTES)))
        return root

    def start_lighttpd(self, side):
        root = self.web_root()
        conf = os.path.join(self.folder, f"lighttpd-{side}.conf")
        with open(conf, "w") as file:
            file.write(f'server.document-root = "{root}"\nserver.bind = "0.0.0.0"\n'
                       f'server.port = {LIGHTTPD_PORT}\n'
                       f'server.errorlog = "{os.path.join(self.folder, f"lighttpd-{side}-error.log")}"\n'
                       'mimetype.assign = (".bin" => "application/octet-stream")\n')
        server = self.start(self.server_command(side, ["lighttpd", "-D", "-f", conf]), f"lighttpd-{side}.log")
        address = self.server_address(side)
        self.wait_until(lambda: self.port_open(address, LIGHTTPD_PORT), server, 20, f"lighttpd on {side}")
        return server

    def start_nginx(self, side):
        root = self.web_root()
        prefix = os.path.join(self.folder, f"nginx-{side}")
        os.makedirs(prefix, exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as file:
            # user root: the files are in a folder only root reads.
            file.write(f"user root;\nworker_processes {self.options.nginx_workers};\ndaemon off;\n"
                       f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
                       "events { worker_connections 1024; }\n"
                       f"http {{ access_log off; client_body_temp_path {prefix}/body;\n"
                       f"  server {{ listen {NGINX_PORT}; root {root}; }} }}\n")
        server = self.start(self.server_command(side, ["nginx", "-p", prefix, "-c", conf]), f"nginx-{side}.log")
        address = self.server_address(side)
        self.wait_until(lambda: self.port_open(address, NGINX_PORT), server, 20, f"nginx on {side}")
        return server

    def start_memcached(self, side):
        server = self.start(self.server_command(side, [
            "memcached", "-u", "root", "-t", "4", "-p", str(MEMCACHED_PORT), "-U", "0", "-l", "0.0.0.0"]),
            f"memcached-{side}.log")
        address = self.server_address(side)
        self.wait_until(lambda: self.port_open(address, MEMCACHED_PORT), server, 20, f"memcached on {side}")
        return server

    def start_redis(self, side):
        server = self.start(self.server_command(side, [
            "redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no", "--protected-mode", "no",
            "--bind", "0.0.0.0", "--dir", self.folder]), f"redis-{side}.log")
        address = self.server_address(side)
        self.wait_until(lambda: self.port_open(address, REDIS_PORT), server, 20, f"redis on {side}")
        return server

    def start_iperf3(self, side):
        server = self.start(self.server_command(side, ["iperf3", "-s", "-4", "-p", str(IPERF_PORT), "--forceflush"]),
                            f"iperf3-{side}.log")
        self.wait_until(lambda: "Server listening" in self.output(server), server, 20, f"iperf3 -s on {side}")
        return server

    # -- clients ---------------------------------------------------------------------------------

    def wrk(self, side, seconds, log_name, port=LIGHTTPD_PORT, connection_per_request=False):
        url = f"http://{self.server_address(side)}:{port}/small.bin"
        close = ["-H", "Connection: close"] if connection_per_request else []
        client = self.start(self.in_peer(["wrk", "-c", "64", "-t", "2", "-d", f"{seconds}s", "--timeout", "2s"] + close +
                                         [url]), log_name)
        status = self.finish(client, seconds + 60)
        text = self.output(client)
        rate = re.search(r"Requests/sec:\s+([0-9.]+)", text)
        count = re.search(r"([0-9]+) requests in", text)
        if status != 0 or rate is None or count is None:
            raise RuntimeError(f"wrk against {side} failed ({status}):\n{text[-2000:]}")
        socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        return {
            "requests_per_second": float(rate.group(1)),
            "requests": int(count.group(1)),
            "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        }

    def redis_benchmark(self, side, requests, log_name):
        client = self.start(self.in_peer(["redis-benchmark", "-h", self.server_address(side), "-p", str(REDIS_PORT),
                                          "-q", "-n", str(requests), "-c", "50", "-t", "set,get"]), log_name)
        status = self.finish(client, 300)
        text = self.output(client)
        rates = {name: re.search(name + r": ([0-9.]+) requests per second", text) for name in ("SET", "GET")}
        if status != 0 or None in rates.values() or re.search("error", text, re.IGNORECASE):
            raise RuntimeError(f"redis-benchmark against {side} failed ({status}):\n{text[-2000:]}")
        return {name: float(match.group(1)) for name, match in rates.items()}

    def memcaslap(self, side, seconds, log_name):
        """Operations/s of memcaslap's default mix (90% get, 10% set), 8 connections on 2 threads, with
        a tenth of the gets checked against what was set."""
        client = self.start(self.in_peer(["memcaslap", "-s", f"{self.server_address(side)}:{MEMCACHED_PORT}", "-T", "2",
                                          "-c", "8", "-t", f"{seconds}s", "-X", "64", "--verify=0.1"]), log_name)
        status = self.finish(client, seconds + 60)
        text = self.output(client)
        rate = re.search(r"Ops: (\d+) TPS: (\d+)", text)
        failed = re.search(r"verify_failed: (\d+)", text)
        if status != 0 or rate is None:
            raise RuntimeError(f"memcaslap against {side} failed ({status}):\n{text[-2000:]}")
        if failed and int(failed.group(1)) > 0:
            raise RuntimeError(f"memcaslap against {side}: {failed.group(1)} gets returned wrong values")
        return float(rate.group(2))

    def iperf3(self, side, reverse, seconds):
        argv = ["iperf3", "-c", self.server_address(side), "-p", str(IPERF_PORT), "-t", str(seconds), "-J",
                "--connect-timeout", "5000"] + (["-R"] if reverse else [])
        client = self.start(self.in_peer(argv), f"iperf3-client-{side}.json")
        status = self.finish(client, seconds + 60)
        text = self.output(client)
        try:
            report = json.loads(text)
            return report["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError) as error:
            raise RuntimeError(f"iperf3 against {side} failed ({status}, {error!r}):\n{text[-2000:]}")

    def count_syscalls(self, server, run_load, log_name, tool):
        """Counts the server's system calls while run_load() runs: `strace -c -f -p` (total and the
        most frequent calls; it slows the server down a lot) or `perf stat -e raw_syscalls:sys_enter
        -p` (a tracepoint count at nearly full speed). Returns ({calls, without_file_io, top}, run_load's
        result); strace alone tells which calls, so without_file_io and top are strace's."""
        with open(f"/proc/{server.pid}/comm") as comm:
            name = comm.read().strip()
        summary = os.path.join(self.folder, log_name)
        if tool == "strace":
            tracer = self.start(["strace", "-c", "-f", "-p", str(server.pid), "-o", summary], log_name + ".log")
            self.wait_until(lambda: "attached" in self.output(tracer), tracer, 10, f"strace on {name}")
        else:
            tracer = self.start(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", str(server.pid),
                                 "-o", summary], log_name + ".log")
        time.sleep(0.5)
        load = run_load()
        self.stop(tracer, signal.SIGINT)  # both write their summary when interrupted
        calls = {}
        total = None
        with open(summary) as file:
            for line in file:
                fields = line.split(",") if tool == "perf" else line.split()
                if tool == "perf":
                    if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
                        total = int(fields[0])
                    continue
                if not fields or not fields[0][0].isdigit():
                    continue
                if fields[-1] == "total":
                    total = int(fields[3])
                elif len(fields) >= 5:
                    calls[fields[-1]] = int(fields[3])
        if total is None:
            with open(summary) as file:
                raise RuntimeError(f"no {tool} summary for {name}:\n{file.read()[-2000:]}")
        top = dict(sorted(calls.items(), key=lambda item: -item[1])[:8])
        without_file_io = total - sum(n for call, n in calls.items() if call in FILE_CALLS) if calls else None
        return {"calls": total, "without_file_io": without_file_io, "top": top}, load

    # -- the benchmarks ----------------------------------------------------------------------------

    def each_side(self, what, body):
        """body(side) on every side still measured; a failing side is reported and dropped."""
        out = {}
        for side in list(self.sides):
            try:
                out[side] = body(side)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                if side == "kernel":
                    raise
                say(f"    {what} on {side} failed: {error}")
                out[side] = {"error": str(error)[:4000]}
        return out

    def runs(self, what, measure):
        """measure(side, run) alternating sides, --runs times; the figures of every run by side."""
        figures = {side: [] for side in self.sides}
        errors = {}
        for run in range(self.options.runs):
            for side in self.sides:
                if side in errors:
                    continue
                say(f"    {what}: {side}, run {run + 1}/{self.options.runs}")
                try:
                    background = background_percent()
                    before = CpuSample()
                    figures[side].append(measure(side, run))
                    steal = before.steal_percent(CpuSample())
                    self.loads.append({"what": what, "side": side, "steal": steal, "background": background})
                    say(f"      steal {steal:.1f}%, background {background:.0f}% before the run")
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    if side == "kernel":
                        raise
                    say(f"    {what} on {side} failed: {error}")
                    errors[side] = str(error)[:4000]
        return figures, errors

    @contextlib.contextmanager
    def serving(self, what, start_server):
        """Servers from start_server(side) on every side for the block, which sees in self.sides only
        the sides whose server started; yields the other sides' errors. The servers stop after."""
        servers = self.each_side(f"{what} start", start_server)
        failed = {side: server["error"] for side, server in servers.items() if isinstance(server, dict)}
        saved = self.sides
        self.sides = [side for side in saved if side not in failed]
        try:
            yield failed
        finally:
            self.sides = saved
            for server in servers.values():
                if not isinstance(server, dict):
                    self.stop(server)

    def bench_lighttpd(self, results):
        say("==> lighttpd: wrk -c 64 -t 2, 1 KiB file")
        measured = {}

        def measure(side, run):
            figures = self.wrk(side, self.options.seconds, f"wrk-{side}-{run}.log")
            say(f"      {figures['requests_per_second']:.0f} req/s, {figures['socket_errors']} socket errors, "
                f"{figures['non_2xx']} non-2xx")
            measured.setdefault(side, []).append(figures)
            return figures["requests_per_second"]

        with self.serving("lighttpd", self.start_lighttpd) as failed:
            for side in self.sides:
                self.wrk(side, 1, f"wrk-warmup-{side}.log")  # connections and caches warm
            figures, errors = self.runs("lighttpd", measure)
        results["lighttpd_requests_per_second"] = summarize(figures, {**failed, **errors}, extra={
            side: {"socket_errors": sum(m["socket_errors"] for m in runs), "non_2xx": sum(m["non_2xx"] for m in runs)}
            for side, runs in measured.items()})

    def bench_nginx(self, results):
        say(f"==> nginx, {self.options.nginx_workers} workers: wrk -c 64 -t 2, 1 KiB file, keep-alive and a "
            "connection per request")

        def measure_with(connection_per_request):
            def measure(side, run):
                kind = "close" if connection_per_request else "keepalive"
                figures = self.wrk(side, self.options.seconds, f"wrk-nginx-{kind}-{side}-{run}.log", NGINX_PORT,
                                   connection_per_request)
                say(f"      {figures['requests_per_second']:.0f} req/s, {figures['socket_errors']} socket errors, "
                    f"{figures['non_2xx']} non-2xx")
                if figures["socket_errors"] or figures["non_2xx"]:
                    raise RuntimeError(f"{figures['socket_errors']} socket errors, {figures['non_2xx']} non-2xx answers")
                return figures["requests_per_second"]
            return measure

        with self.serving("nginx", self.start_nginx) as failed:
            figures, errors = self.runs("nginx", measure_with(False))
            close_figures, close_errors = self.runs("nginx, a connection per request", measure_with(True))
        results["nginx_requests_per_second"] = summarize(figures, {**failed, **errors})
        results["nginx_close_requests_per_second"] = summarize(close_figures, {**failed, **close_errors})

    def bench_memcached(self, results):
        say("==> memcached -t 4: memcaslap -c 8 -T 2, 64-byte values, 90% gets")

        def measure(side, run):
            rate = self.memcaslap(side, self.options.seconds, f"memcaslap-{side}-{run}.log")
            say(f"      {rate:.0f} ops/s")
            return rate

        with self.serving("memcached", self.start_memcached) as failed:
            figures, errors = self.runs("memcached", measure)
        results["memcached_ops_per_second"] = summarize(figures, {**failed, **errors})

    def bench_redis(self, results):
        say(f"==> redis: redis-benchmark -n {self.options.redis_requests} -c 50 -t set,get")

        def measure(side, run):
            rates = self.redis_benchmark(side, self.options.redis_requests, f"redis-benchmark-{side}-{run}.log")
            say(f"      SET {rates['SET']:.0f}/s, GET {rates['GET']:.0f}/s")
            return rates

        with self.serving("redis", self.start_redis) as failed:
            figures, errors = self.runs("redis", measure)
        for name in ("SET", "GET"):
            results[f"redis_{name.lower()}_per_second"] = summarize(
                {side: [f[name] for f in runs] for side, runs in figures.items()}, {**failed, **errors})

    def bench_iperf3(self, results):
        say(f"==> iperf3: -t {self.options.iperf_seconds}, the client in the peer namespace")
        with self.serving("iperf3", self.start_iperf3) as failed:
            for reverse, key in ((False, "iperf3_to_server_gbps"), (True, "iperf3_from_server_gbps")):
                def measure(side, run):
                    gbps = self.iperf3(side, reverse, self.options.iperf_seconds)
                    say(f"      {gbps:.2f} Gbit/s")
                    return gbps

                figures, errors = self.runs("iperf3 -R" if reverse else "iperf3", measure)
                results[key] = summarize(figures, {**failed, **errors})

    def bench_syscalls(self, results):
        seconds = self.options.strace_seconds
        tools = ["strace"] + (["perf"] if shutil.which("perf") else [])
        say(f"==> system calls per request, counted on the server ({' and '.join(tools)}) under wrk ({seconds} s) "
            f"and redis-benchmark (-n {self.options.strace_redis_requests})")

        def lighttpd(side, tool):
            server = self.start_lighttpd(side)
            try:
                counts, load = self.count_syscalls(
                    server, lambda: self.wrk(side, seconds, f"wrk-{tool}-{side}.log"), f"{tool}-lighttpd-{side}.txt", tool)
            finally:
                self.stop(server)
            return counts, load["requests"]

        def redis(side, tool):
            server = self.start_redis(side)
            requests = self.options.strace_redis_requests
            try:
                counts, _ = self.count_syscalls(server, lambda: self.redis_benchmark(
                    side, requests, f"redis-benchmark-{tool}-{side}.log"), f"{tool}-redis-{side}.txt", tool)
            finally:
                self.stop(server)
            return counts, 2 * requests  # SET and GET

        for tool in tools:
            for name, body in (("lighttpd", lighttpd), ("redis", redis)):
                def measure(side):
                    counts, requests = body(side, tool)
                    say(f"    {name} on {side} ({tool}): {counts['calls']} calls / {requests} requests = "
                        f"{counts['calls'] / max(requests, 1):.3f}")
                    return dict(counts, requests=requests, per_request=counts["calls"] / max(requests, 1))

                counts = self.each_side(f"{name} under {tool}", measure)
                results[f"{name}_syscalls_per_request_{tool}"] = per_request_entry(counts, lambda f: f["per_request"])
                if tool == "strace":
                    results[f"{name}_socket_syscalls_per_request_strace"] = per_request_entry(
                        counts, lambda f: f["without_file_io"] / max(f["requests"], 1))


def per_request_entry(counts, per_request):
    """A table entry from each side's count_syscalls figures (or its error)."""
    entry = {"figures": counts}
    for side, figures in counts.items():
        entry[side] = None if "error" in figures else per_request(figures)
    if entry.get("kernel") and entry.get("flotilla") is not None:
        entry["ratio"] = entry["flotilla"] / entry["kernel"]
    return entry


def summarize(figures, errors, extra=None):
    """Median of each side's runs and the ratio flotilla / kernel."""
    entry = {}
    for side, runs in figures.items():
        if runs and side not in errors:
            entry[side] = statistics.median(runs)
            entry[f"{side}_runs"] = runs
    for side, error in errors.items():
        entry[f"{side}_error"] = error
    if extra:
        entry["checks"] = extra
    if entry.get("kernel") and entry.get("flotilla") is not None:
        entry["ratio"] = entry["flotilla"] / entry["kernel"]
    return entry


ROWS = [
    ("lighttpd_requests_per_second", "lighttpd 1 KiB, wrk -c 64 (req/s)", "{:.0f}"),
    ("nginx_requests_per_second", "nginx 1 KiB, wrk -c 64 (req/s)", "{:.0f}"),
    ("nginx_close_requests_per_second", "  the same, a connection per request (req/s)", "{:.0f}"),
    ("memcached_ops_per_second", "memcached -t 4, memcaslap -c 8 (ops/s)", "{:.0f}"),
    ("redis_set_per_second", "redis SET, -c 50 (ops/s)", "{:.0f}"),
    ("redis_get_per_second", "redis GET, -c 50 (ops/s)", "{:.0f}"),
    ("iperf3_to_server_gbps", "iperf3 client -> server (Gbit/s)", "{:.2f}"),
    ("iperf3_from_server_gbps", "iperf3 server -> client, -R (Gbit/s)", "{:.2f}"),
    ("lighttpd_syscalls_per_request_strace", "lighttpd system calls / request, strace", "{:.3f}"),
    ("lighttpd_socket_syscalls_per_request_strace", "  the same without file I/O (pread64...)", "{:.3f}"),
    ("redis_syscalls_per_request_strace", "redis system calls / request, strace", "{:.3f}"),
    ("redis_socket_syscalls_per_request_strace", "  the same without file I/O", "{:.3f}"),
    ("lighttpd_syscalls_per_request_perf", "lighttpd system calls / request, perf", "{:.3f}"),
    ("redis_syscalls_per_request_perf", "redis system calls / request, perf", "{:.3f}"),
]


def table(results):
    lines = [f"{'':42} {'kernel':>12} {'flotilla':>12} {'flotilla/kernel':>16}"]
    for key, label, form in ROWS:
        if key not in results:
            continue
        entry = results[key]
        cells = []
        for side in ("kernel", "flotilla"):
            value = entry.get(side)
            cells.append(form.format(value) if isinstance(value, (int, float)) else
                         ("failed" if f"{side}_error" in entry or (entry.get("figures", {}).get(side) or {}).get("error")
                          else "-"))
        ratio = entry.get("ratio")
        ratio_text = "-" if ratio is None else (f"{ratio * 100:.2f}%" if "syscalls" in key else f"{ratio:.2f}x")
        lines.append(f"{label:42} {cells[0]:>12} {cells[1]:>12} {ratio_text:>16}")
    return "\n".join(lines)


def split_sides_and_benchmarks(parser, options, benchmarks):
    """Turns --sides and --only into lists, refusing names it does not know."""
    options.sides = [s for s in options.sides.split(",") if s]
    options.only = [b for b in options.only.split(",") if b]
    for side in options.sides:
        if side not in ("kernel", "flotilla"):
            parser.error(f"unknown side '{side}'")
    for name in options.only:
        if name not in benchmarks:
            parser.error(f"unknown benchmark '{name}' ({', '.join(benchmarks)})")
    if not options.sides or not options.only:
        parser.error("nothing to measure")


def check_prerequisites(program, options, needed):
    """Exits with a clear message unless root, the programs in `needed` and (for the flotilla side)
    a build are there."""
    if os.geteuid() != 0:
        sys.exit(f"{program}: needs root (network namespaces, veth, XDP)")
    missing = sorted({p for p in needed if shutil.which(p) is None})
    if missing:
        sys.exit(f"{program}: not installed: {', '.join(missing)} (./dev installs them)")
    if "flotilla" in options.sides and not os.path.exists(os.path.join(options.build, "apps", "flotilla")):
        sys.exit(f"{program}: no build in {options.build} (./dev build, or --build DIR)")


def run_and_report(program, bench, options, table_of, footnote):
    """Brings `bench` up, runs bench_NAME for each of options.only, and takes everything down, on a
    signal too; then writes options.json and prints table_of(results) and `footnote`. Returns the
    exit status."""
    def stop_signal(number, _frame):
        raise Stopped(signal.Signals(number).name)

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop_signal)
    results = {}
    started = time.time()
    status = 0
    try:
        bench.bring_up()
        for name in options.only:
            getattr(bench, f"bench_{name}")(results)
    except Stopped as stop:
        say(f"{program}: {stop}: taking everything down")
        status = 130
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        say(f"{program}: {error}")
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.tear_down()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "options": {k: v for k, v in vars(options).items()},
        "skipped_sides": bench.skipped,
        "results": results,
        "loads": bench.loads,
    }
    with open(options.json, "w") as file:
        json.dump(report, file, indent=2)
    say("")
    say(table_of(results))
    if bench.loads:
        steals = [load["steal"] for load in bench.loads]
        backgrounds = [load["background"] for load in bench.loads]
        say(f"(over the {len(bench.loads)} throughput runs: steal at most {max(steals):.1f}%, background load just "
            f"before a run median {statistics.median(backgrounds):.0f}%, at most {max(backgrounds):.0f}%)")
    say(footnote)
    return status


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: ./dev bench apps --runs 5 --seconds 10   (or perf/apps_bench.py --build build ...)")
    parser.add_argument("--build", default=default_build_dir(),
                        help="the meson build folder (default: $FLOTILLA_BUILD_ROOT or build/ beside perf/)")
    parser.add_argument("--sides", default="kernel,flotilla",
                        help="which sides to measure, comma-separated: kernel, flotilla (default: both)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"which benchmarks, comma-separated: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each throughput figure per side, "
                        "alternating sides; the table shows medians (default: 3)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run (default: 5)")
    parser.add_argument("--nginx-workers", type=int, default=2, help="nginx worker_processes (default: 2)")
    parser.add_argument("--iperf-seconds", type=int, default=5, help="length of each iperf3 run (default: 5)")
    parser.add_argument("--redis-requests", type=int, default=100000,
                        help="redis-benchmark -n, per test (default: 100000)")
    parser.add_argument("--strace-seconds", type=int, default=5, help="wrk's length under strace (default: 5)")
    parser.add_argument("--strace-redis-requests", type=int, default=20000,
                        help="redis-benchmark -n under strace (default: 20000)")
    parser.add_argument("--kernel-offloads", choices=["default", "off"], default="default",
                        help="the kernel server's veth end: the kernel's defaults (checksum offload, TSO, GSO on), "
                             "or off like the peer's end of both links (default: default)")
    parser.add_argument("--json", default=None,
                        help="where to write the figures (default: BUILD/apps-bench.json)")
    options = parser.parse_args()
    split_sides_and_benchmarks(parser, options, BENCHMARKS)
    for name in ("runs", "seconds", "nginx_workers", "iperf_seconds", "redis_requests", "strace_seconds", "strace_redis_requests"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    options.json = options.json or os.path.join(options.build, "apps-bench.json")
    return options


def main():
    options = parse_arguments()
    check_prerequisites("apps_bench", options, ["ip", "ethtool"] + [p for name in options.only for p in PROGRAMS[name]])
    return run_and_report("apps_bench", Bench(options), options, table,
                          f"\n(medians of {options.runs} runs; system calls counted on the server in separate "
                          f"passes; figures in {options.json})")

if __name__ == "__main__":
    sys.exit(main())
