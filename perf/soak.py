#!/usr/bin/env python3
"""The long soak (issue 18): mixed traffic through a Flotilla stack while its components are crashed,
aborted and hung, then a report of what was lost and what grew.

The stack is brought up with `flotilla up` (as perf/apps_bench.py does), with unmodified iperf3,
redis-server and lighttpd on it under `flotilla run`. From the peer namespace, for the whole run:

  bulk    iperf3 runs of --iperf-seconds, alternately to and from the server;
  redis   redis-benchmark runs (-c 20, SET and GET);
  short   many short connections: one HTTP/1.0 GET from lighttpd each, the body checked;
  web     wrk runs (-c 16) against lighttpd;
  udp     datagrams to the stack's UDP echo server (port 7), each answer checked;
  checked connections of --checked-mib each to an echo server on the stack (Python under
          `flotilla run`), every byte that comes back compared with what was sent: the bytes
          verified end to end.

Every --fault-every seconds a component of the stack, taken in turn from a shuffled list of every
component and fault (crash, abort, hang), is given its fault with `flotilla inject`. Each minute a
progress line is printed. At the end it checks and reports:

  - faults injected and recoveries the event log shows, and whether any component was given up on;
  - servers that ended (each is started again, and fails the soak: no fault should end one);
  - each load's runs, and its failures: a failure that ended within --explain-seconds of a fault is
    explained by it, any other is unexplained (a connection lost for no reason);
  - the bytes verified end to end by the checked load, and any that came back wrong;
  - the private resident memory (RssAnon) and open descriptors of the supervisor and of each component at the
    start and at the end (a component restarted during the run is measured in its last incarnation);
  - the buffer pool: how many buffers were free and how many each component held at the start and at
    the end, once the loads have stopped; buffers leaked are those held by no running component,
    and what a component holds at the end past its start and its private cache.

It exits 0 when nothing was unexplained, no component was given up on, no byte came back wrong and
some were verified, no buffer leaked (every one free or held by a running component, none holding
more than --cache-buffers above its start), the supervisor's
descriptors are as many at the end as at the start and its memory and every component's stayed
within --rss-growth-mib of the start; 1 otherwise. Needs root, iperf3, redis-server, redis-tools, lighttpd
and wrk, and a build.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ left in perf/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps_bench  # noqa: E402  (beside this script)

FAULTS = ("crash", "abort", "hang")
UDP_ECHO_PORT = 7
CHECKED_PORT = 7100
# The checked load's server, under `flotilla run`: echoes every connection's bytes back.
CHECKED_SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen(64)
listener.setblocking(False)
sel.register(listener, selectors.EVENT_READ)
unsent = {}
print("listening", flush=True)
while True:
    for key, events in sel.select():
        s = key.fileobj
        if s is listener:
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            connection.setblocking(False)
            unsent[connection] = b""
            sel.register(connection, selectors.EVENT_READ)
            continue
        try:
            if events & selectors.EVENT_WRITE and unsent[s]:
                unsent[s] = unsent[s][s.send(unsent[s]):]
            if events & selectors.EVENT_READ:
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                unsent[s] += data
            sel.modify(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if unsent[s] else 0))
        except (OSError, ConnectionError):
            sel.unregister(s)
            s.close()
            del unsent[s]
"""
# The checked load's client, in the peer namespace: connections of RUN_BYTES, each 64 KiB chunk (from a
# seeded generator) sent and read back before the next; one line per connection: "time ok|fail|corrupt
# BYTES", BYTES being what came back and matched.
CHECKED_CLIENT = r"""
import hashlib, socket, sys, time
address, port, seconds, run_bytes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
until = time.monotonic() + seconds
n = 0
while time.monotonic() < until:
    verified, outcome = 0, "ok"
    try:
        with socket.create_connection((address, port), timeout=5) as s:
            s.settimeout(5)
            while verified < run_bytes and time.monotonic() < until:
                chunk = hashlib.shake_128(n.to_bytes(8, "big")).digest(65536)
                n += 1
                s.sendall(chunk)
                back = b""
                while len(back) < len(chunk):
                    data = s.recv(len(chunk) - len(back))
                    if not data:
                        raise ConnectionError("closed")
                    back += data
                if back != chunk:
                    outcome = "corrupt"
                    break
                verified += len(chunk)
    except (OSError, ConnectionError):
        outcome = "fail"
    print(f"{time.time():.3f} {outcome} {verified}", flush=True)
    if outcome != "ok":
        time.sleep(0.5)
"""
SHORT_CLIENT = r"""
import socket, sys, time
address, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
expected = bytes(i % 251 for i in range(1024))
until = time.monotonic() + seconds
while time.monotonic() < until:
    ok = False
    try:
        with socket.create_connection((address, port), timeout=3) as s:
            s.settimeout(3)
            s.sendall(b"GET /small.bin HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith(b"HTTP/1.0 200") and data.endswith(expected)
    except OSError:
        ok = False
    print(f"{time.time():.3f} {'ok' if ok else 'fail'}", flush=True)
"""
UDP_CLIENT = r"""
import os, socket, sys, time
address, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((address, port))
s.settimeout(0.5)
until = time.monotonic() + seconds
n = 0
while time.monotonic() < until:
    payload = n.to_bytes(8, "big") + os.urandom(64 + n % 1000)
    ok = False
    for attempt in range(3):
        s.send(payload)
        try:
            while True:
                if s.recv(2048) == payload:
                    ok = True
                    break
        except OSError:
            pass
        if ok:
            break
    print(f"{time.time():.3f} {'ok' if ok else 'fail'}", flush=True)
    n += 1
    time.sleep(0.01)
"""


def say(text):
    print(text, flush=True)


def process_figures(pid):
    """(private resident memory (RssAnon) in KiB, open descriptors) of a process, or None when it is
    gone. Shared memory is left out: a replica's socket rings count once their pages are touched,
    which is use, not a leak."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


class Soak(apps_bench.Bench):
    def __init__(self, options):
        super().__init__(options)
        self.lock = threading.Lock()
        self.outcomes = {name: [] for name in ("bulk", "redis", "short", "web", "udp", "checked")}  # (time, ok, detail)
        self.verified_bytes = 0  # by the checked load: came back as sent
        self.corrupt = 0  # checked connections whose bytes came back wrong
        self.faults = []  # (time, component, fault, accepted)
        self.stopping = threading.Event()
        self.bulk_reverse = True
        self.server_ends = []  # (time, server, its last lines of output)
        self.supervisor = None

    def flotilla_cli(self, *words, check=True):
        return self.command([self.flotilla, "--socket", self.socket] + list(words), check=check)

    def status(self):
        return json.loads(self.flotilla_cli("status", "--json").stdout)["components"]

    def supervisor_pid(self):
        """The supervisor this script's `flotilla up` started: the process serving our socket."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    words = file.read().split(b"\0")
            except OSError:
                continue
            if any(word.endswith(b"flotilla-supervisor") for word in words[:1]) and \
                    any(self.folder.encode() in word for word in words):
                return int(entry)
        raise RuntimeError("cannot find the supervisor of this soak")

    def figures(self):
        """({name: (rss KiB, descriptors, buffers held)} of the supervisor and every running component,
        {"buffers": in the pool, "free": free now})."""
        status = json.loads(self.flotilla_cli("status", "--json").stdout)
        sup = process_figures(self.supervisor)
        out = {"supervisor": sup + (0,) if sup else None}
        for component in status["components"]:
            if component.get("pid", -1) > 0 and component["status"] == "running":
                figures = process_figures(component["pid"])
                out[component["name"]] = figures + (component.get("buffers", 0),) if figures else None
        return {name: value for name, value in out.items() if value is not None}, status.get("pool", {})

    def record(self, load, ok, detail=""):
        with self.lock:
            self.outcomes[load].append((time.time(), ok, detail))

    # -- loads ---------------------------------------------------------------------------------------

    def loop(self, load, body):
        """body() again and again until the end; each run's (ok, detail) recorded."""
        def run():
            while not self.stopping.is_set():
                try:
                    ok, detail = body()
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    ok, detail = False, str(error)[-300:]
                if not self.stopping.is_set() or ok:
                    self.record(load, ok, detail)
                if not ok:
                    time.sleep(1)  # a failing load does not spin
        thread = threading.Thread(target=run, name=load, daemon=True)
        thread.start()
        return thread

    def bulk_run(self):
        """One iperf3 run, the other direction from the last."""
        self.bulk_reverse = not self.bulk_reverse
        gbps = self.iperf3("flotilla", self.bulk_reverse, self.options.iperf_seconds)
        return True, f"{gbps:.2f} Gbit/s{' -R' if self.bulk_reverse else ''}"

    def redis_run(self):
        rates = self.redis_benchmark("flotilla", self.options.redis_requests, "redis-benchmark-soak.log")
        return True, f"SET {rates['SET']:.0f}/s GET {rates['GET']:.0f}/s"

    def web_run(self):
        figures = self.wrk("flotilla", 20, "wrk-soak.log")
        ok = figures["socket_errors"] == 0 and figures["non_2xx"] == 0
        return ok, f"{figures['requests']} requests, {figures['socket_errors']} socket errors, {figures['non_2xx']} non-2xx"

    def line_client(self, load, script, port, seconds, *extra):
        """A Python client in the peer namespace printing one 'time ok|fail' line per attempt (a third
        word: bytes verified)."""
        client = self.start(self.in_peer([sys.executable, "-c", script, apps_bench.STACK_ADDRESS, str(port),
                                          str(seconds)] + list(extra)), f"{load}-client.log")

        def follow():
            with open(client.log_path) as log:
                while True:
                    line = log.readline()
                    if not line:
                        if client.poll() is not None:
                            return
                        time.sleep(0.2)
                        continue
                    words = line.split()
                    if len(words) in (2, 3) and words[1] in ("ok", "fail", "corrupt"):
                        with self.lock:
                            self.outcomes[load].append((float(words[0]), words[1] == "ok", " ".join(words[1:])))
                            if len(words) == 3:
                                self.verified_bytes += int(words[2])
                                self.corrupt += words[1] == "corrupt"
        thread = threading.Thread(target=follow, name=load, daemon=True)
        thread.start()
        return thread

    # -- faults ----------------------------------------------------------------------------------------

    def fault_plan(self):
        components = [c["name"] for c in self.status() if c["status"] == "running" and not c["name"].startswith("app")]
        plan = [(component, fault) for component in components for fault in FAULTS]
        random.Random(self.options.seed).shuffle(plan)
        return plan

    # -- the run ---------------------------------------------------------------------------------------

    def soak(self):
        options = self.options
        self.bring_up()
        self.supervisor = self.supervisor_pid()
        starters = {"iperf3": self.start_iperf3, "redis": self.start_redis, "lighttpd": self.start_lighttpd,
                    "checked": self.start_checked_server}
        servers = {name: start("flotilla") for name, start in starters.items()}
        time.sleep(1)
        start_figures = self.figures()
        duration = options.minutes * 60
        say(f"==> soak: {options.minutes} min, a fault every {options.fault_every} s")
        threads = [
            self.loop("bulk", self.bulk_run),
            self.loop("redis", self.redis_run),
            self.loop("web", self.web_run),
            self.line_client("short", SHORT_CLIENT, apps_bench.LIGHTTPD_PORT, duration),
            self.line_client("udp", UDP_CLIENT, UDP_ECHO_PORT, duration),
            self.line_client("checked", CHECKED_CLIENT, CHECKED_PORT, duration, str(options.checked_mib << 20)),
        ]
        plan = self.fault_plan()
        say(f"    faults in turn over {len(plan)} (component, fault) pairs: "
            f"{', '.join(sorted({component for component, _ in plan}))}")
        started = time.monotonic()
        next_fault = started + options.fault_every
        next_report = started + 60
        while time.monotonic() - started < duration:
            time.sleep(0.2)
            now = time.monotonic()
            if now >= next_fault:
                component, fault = plan[len(self.faults) % len(plan)]
                accepted = self.flotilla_cli("inject", component, fault, check=False).returncode == 0
                self.faults.append((time.time(), component, fault, accepted))
                next_fault += options.fault_every
            for name, server in servers.items():
                if server.poll() is not None:
                    # Counted (no fault should end a server), then started again so its load goes on.
                    last = self.output(server).strip().splitlines()[-3:]
                    self.server_ends.append((time.time(), name, " | ".join(last)))
                    self.children.remove(server)
                    try:
                        servers[name] = starters[name]("flotilla")
                    except RuntimeError as error:
                        say(f"    {name} could not be started again: {str(error)[:300]}")
                        self.stopping.set()
            if now >= next_report:
                self.progress(now - started)
                next_report += 60
        self.stopping.set()
        say("==> soak: time is up; waiting for the loads' last runs")
        for thread in threads:
            thread.join(timeout=options.iperf_seconds + 90)
            if thread.is_alive():
                self.record(thread.name, False, "its last run did not finish: stalled")
        time.sleep(2)  # the last restart settles
        return start_figures, self.figures()

    def start_checked_server(self, side):
        server = self.start(self.server_command(side, [sys.executable, "-u", "-c", CHECKED_SERVER, str(CHECKED_PORT)]),
                            f"checked-{side}.log")
        self.wait_until(lambda: self.port_open(apps_bench.STACK_ADDRESS, CHECKED_PORT), server, 20,
                        f"the checked load's echo server on {side}")
        return server

    def progress(self, elapsed):
        with self.lock:
            loads = "  ".join(f"{load} {sum(ok for _, ok, _ in runs)}/{len(runs)}" for load, runs in self.outcomes.items())
            quiet = [load for load, runs in self.outcomes.items() if not runs or time.time() - runs[-1][0] > 60]
        if quiet:
            loads += f"  (no run finished in the last minute: {', '.join(quiet)})"
        sup = process_figures(self.supervisor)
        loads += f"  verified {self.verified_bytes / 2**20:.0f} MiB"
        say(f"  {elapsed / 60:4.1f} min  faults {len(self.faults)}  ok/runs: {loads}  "
            f"servers ended {len(self.server_ends)}  supervisor {sup[0] / 1024 if sup else 0:.1f} MiB anon, {sup[1] if sup else '?'} fds")


def report(soak, start_figures, end_figures, options):
    """Prints the summary; returns whether the soak passed."""
    passed = True
    (start, start_pool), (end, end_pool) = start_figures, end_figures
    events = soak.flotilla_cli("events", check=False).stdout
    recovered = len(re.findall(r"\brecovered\b", events))
    given_up = re.findall(r"^\[[^\]]*\]\s+failed\s+(\S+)", events, re.MULTILINE)
    fault_times = [when for when, _, _, accepted in soak.faults if accepted]
    by_kind = {}
    for _, component, fault, accepted in soak.faults:
        by_kind[fault] = by_kind.get(fault, 0) + (1 if accepted else 0)
    say("")
    say(f"soak: {options.minutes} min, {len(fault_times)} faults injected "
        f"({', '.join(f'{n} {kind}' for kind, n in sorted(by_kind.items()))}), "
        f"{recovered} recoveries in the event log")
    if given_up:
        say(f"  given up on (crash limit): {', '.join(given_up)}")
        passed = False
    for when, name, last in soak.server_ends:
        say(f"  {name} ended at {time.strftime('%H:%M:%S', time.localtime(when))} (started again): {last[:300]}")
        passed = False
    say(f"  {'load':6} {'runs':>7} {'failed':>7} {'explained':>10} {'unexplained':>12}")
    for load, runs in soak.outcomes.items():
        failures = [when for when, ok, _ in runs if not ok]
        explained = sum(1 for when in failures
                        if any(0 <= when - fault <= options.explain_seconds for fault in fault_times))
        unexplained = len(failures) - explained
        say(f"  {load:6} {len(runs):7} {len(failures):7} {explained:10} {unexplained:12}")
        if unexplained:
            passed = False
            for when, ok, detail in runs:
                if not ok and not any(0 <= when - fault <= options.explain_seconds for fault in fault_times):
                    say(f"    unexplained at {time.strftime('%H:%M:%S', time.localtime(when))}: {detail[:200]}")
        if not runs:
            passed = False
            say(f"    {load}: no run finished")
    say(f"  bytes verified end to end: {soak.verified_bytes} ({soak.verified_bytes / 2**30:.2f} GiB); "
        f"connections whose bytes came back wrong: {soak.corrupt}")
    if soak.corrupt or not soak.verified_bytes:
        passed = False
    # A buffer is free, or held by a running component (its own or parked for it across a restart),
    # or stranded: held by nobody who will ever give it back. A component's holding may also grow
    # by its private cache (PoolCache::kCapacity) from start to end; more than that is a leak too.
    def stranded(figures, pool):
        return pool.get("buffers", 0) - pool.get("free", 0) - sum(v[2] for v in figures.values())
    grown = {name: end[name][2] - start[name][2] for name in set(start) & set(end)}
    leaking = {name: growth for name, growth in grown.items() if growth > options.cache_buffers}
    leaked = max(stranded(end, end_pool), 0) + sum(growth - options.cache_buffers for growth in leaking.values())
    say(f"  buffer pool: {end_pool.get('buffers', '?')} buffers; free {start_pool.get('free', '?')} at the start, "
        f"{end_pool.get('free', '?')} at the end; stranded (held by no running component) {stranded(start, start_pool)} "
        f"then {stranded(end, end_pool)}; buffers leaked: {leaked}")
    for name, growth in sorted(leaking.items()):
        say(f"    {name}: holds {growth} buffers more than at the start, past its cache of {options.cache_buffers}")
    if leaked:
        passed = False
    say(f"  {'process':12} {'anon start':>10} {'anon end':>10} {'fds start':>10} {'fds end':>8} "
        f"{'buffers start':>14} {'buffers end':>12}")
    limit = options.rss_growth_mib * 1024
    for name in sorted(set(start) | set(end)):
        before, after = start.get(name), end.get(name)
        cells = [f"{v[0] / 1024:.1f} MiB" if v else "-" for v in (before, after)]
        say(f"  {name:12} {cells[0]:>10} {cells[1]:>10} {before[1] if before else '-':>10} {after[1] if after else '-':>8} "
            f"{before[2] if before else '-':>14} {after[2] if after else '-':>12}")
        if before and after and after[0] - before[0] > limit:
            say(f"    {name}: private memory grew by {(after[0] - before[0]) / 1024:.1f} MiB")
            passed = False
    sup_start, sup_end = start.get("supervisor"), end.get("supervisor")
    if not sup_start or not sup_end or sup_end[1] != sup_start[1]:
        say("    supervisor: open descriptors differ between start and end")
        passed = False
    say(f"soak: {'passed' if passed else 'FAILED'}")
    return passed


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Example: ./dev soak --minutes 10   (or perf/soak.py --build build ...)")
    parser.add_argument("--build", default=apps_bench.default_build_dir(),
                        help="the meson build folder (default: $FLOTILLA_BUILD_ROOT or build/ beside perf/)")
    parser.add_argument("--minutes", type=float, default=10, help="how long the loads and faults run (default: 10)")
    parser.add_argument("--fault-every", type=float, default=10,
                        help="seconds between two faults (default: 10)")
    parser.add_argument("--explain-seconds", type=float, default=8,
                        help="a load's failure this soon after a fault is put down to it (default: 8)")
    parser.add_argument("--iperf-seconds", type=int, default=20, help="length of each iperf3 run (default: 20)")
    parser.add_argument("--redis-requests", type=int, default=20000, help="redis-benchmark -n per run (default: 20000)")
    parser.add_argument("--rss-growth-mib", type=int, default=16,
                        help="how much a process's resident memory may grow from start to end (default: 16)")
    parser.add_argument("--checked-mib", type=int, default=16,
                        help="MiB per connection of the checked load (default: 16)")
    parser.add_argument("--cache-buffers", type=int, default=256,
                        help="how many more buffers a component may hold at the end than at the start, in its "
                             "private cache (default: 256, PoolCache::kCapacity)")
    parser.add_argument("--seed", type=int, default=18, help="the order of the faults (default: 18)")
    parser.add_argument("--json", default=None, help="where to write the outcomes (default: BUILD/soak.json)")
    parser.add_argument("--skip-if-unable", action="store_true",
                        help="exit 77 (skipped, for meson test) instead of 1 when not root or a program is missing")
    options = parser.parse_args()
    if options.minutes <= 0 or options.fault_every <= 0 or options.iperf_seconds < 1 or options.redis_requests < 1 \
            or options.checked_mib < 1:
        parser.error("--minutes, --fault-every, --iperf-seconds, --redis-requests and --checked-mib must be positive")
    if options.cache_buffers < 0:
        parser.error("--cache-buffers cannot be negative")
    # What apps_bench.Bench reads.
    options.sides = ["flotilla"]
    options.kernel_offloads = "default"
    options.json = options.json or os.path.join(options.build, "soak.json")
    return options


def main():
    options = parse_arguments()
    try:
        apps_bench.check_prerequisites("soak", options, ["ip", "ethtool", "iperf3", "redis-server", "redis-benchmark",
                                                         "lighttpd", "wrk"])
    except SystemExit as refusal:
        if not options.skip_if_unable:
            raise
        print(f"{refusal} (skipped)")
        return 77
    soak = Soak(options)

    def stop_signal(number, _frame):
        raise apps_bench.Stopped(signal.Signals(number).name)

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, stop_signal)
    passed = False
    try:
        start, end = soak.soak()
        passed = report(soak, start, end, options)
        with open(options.json, "w") as file:
            json.dump({"minutes": options.minutes, "faults": soak.faults, "outcomes": soak.outcomes,
                       "server_ends": soak.server_ends, "start": start, "end": end,
                       "verified_bytes": soak.verified_bytes, "corrupt": soak.corrupt, "passed": passed}, file, indent=1)
    except apps_bench.Stopped as stop:
        say(f"soak: {stop}: taking everything down")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        say(f"soak: {error}")
    finally:
        soak.stopping.set()
        if not passed and soak.stack_up:
            # The programs' output and the event log, kept for a look at what went wrong.
            kept = os.path.join(options.build, "soak-logs")
            with open(os.path.join(soak.folder, "events.log"), "w") as file:
                file.write(soak.flotilla_cli("events", check=False).stdout)
            shutil.copytree(soak.folder, kept, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock", "www"))
            say(f"soak: the logs and the event log are in {kept}")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        soak.tear_down()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
