#!/usr/bin/env python3
"""Hare's file-system microbenchmarks on the file fleet against tmpfs, side by side.

For each server count (--servers, default 1,2,3) it brings up a stack of the file fleet alone
(`flotilla up` on a configuration of that many flotilla-fs servers and application seats, with its
own control socket) and runs every benchmark with 1 and 2 processes (--procs), each process in a
folder of its own:

  creates      create --files empty files in one directory
  writes       create --files files and write 10 x 4 KiB to each
  renames      rename --files files within their directory
  directories  create and remove --files directories
  rm-dense     remove --files files from one directory
  rm-sparse    remove --files files, one per directory, and the directories
  pfind-dense  list a tree of --files files in few directories (os.walk, as find does)
  pfind-sparse list a tree of --files files in one directory each
  extract      tar -x of a tree of --files small files

Each process is this script in its worker mode, an unmodified program: on the fleet it runs under
`flotilla run` (the preload library) in the fleet's prefix (/flotilla), on tmpfs it runs plainly
in a folder of /dev/shm. The worker makes what the benchmark needs, says it is ready, and times
only the benchmark itself, once every process is ready. Each fresh stack first runs one untimed
round of creates (its first calls pay for first touches of the servers' memory, which the
long-used tmpfs does not), then the benchmarks. It prints operations per second on each
side (with --repeat N, the best of N runs alternated between the sides), the ratio fleet / tmpfs
(with --messages, the requests the servers handled per operation of the timed part) and the median
ratio; --fuse adds the same run on `flotilla mount`
(FUSE, one request at a time: slower). Needs root (and /dev/fuse for --fuse), and a build.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

BENCHMARKS = ["creates", "writes", "renames", "directories", "rm-dense", "rm-sparse",
              "pfind-dense", "pfind-sparse", "extract"]
BLOCK = b"x" * 4096


def say(text):
    print(text, flush=True)


def create(path):
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))


def prepare(name, folder, files):
    """What a benchmark needs in place before the clock starts."""
    os.makedirs(folder, exist_ok=True)
    if name == "renames" or name == "rm-dense":
        for i in range(files):
            create(os.path.join(folder, f"f{i}"))
    elif name == "rm-sparse" or name == "pfind-sparse":
        for i in range(files):
            os.mkdir(os.path.join(folder, f"d{i}"))
            create(os.path.join(folder, f"d{i}", "f"))
    elif name == "pfind-dense":
        for d in range(max(1, files // 100)):
            os.mkdir(os.path.join(folder, f"d{d}"))
            for i in range(100):
                create(os.path.join(folder, f"d{d}", f"f{i}"))


def run_one(name, folder, files, archive):
    """The timed part; returns the operations it did."""
    if name == "creates":
        for i in range(files):
            create(os.path.join(folder, f"f{i}"))
        return files
    if name == "writes":
        for i in range(files):
            fd = os.open(os.path.join(folder, f"f{i}"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            for _ in range(10):
                os.write(fd, BLOCK)
            os.close(fd)
        return files
    if name == "renames":
        for i in range(files):
            os.rename(os.path.join(folder, f"f{i}"), os.path.join(folder, f"g{i}"))
        return files
    if name == "directories":
        count = files
        for i in range(count):
            os.mkdir(os.path.join(folder, f"d{i}"))
        for i in range(count):
            os.rmdir(os.path.join(folder, f"d{i}"))
        return 2 * count
    if name == "rm-dense":
        for i in range(files):
            os.unlink(os.path.join(folder, f"f{i}"))
        return files
    if name == "rm-sparse":
        for i in range(files):
            os.unlink(os.path.join(folder, f"d{i}", "f"))
            os.rmdir(os.path.join(folder, f"d{i}"))
        return files
    if name in ("pfind-dense", "pfind-sparse"):
        seen = 0
        for _, directories, names in os.walk(folder):
            seen += len(directories) + len(names)
        return seen
    if name == "extract":
        subprocess.run(["tar", "-C", folder, "-xf", archive], check=True)
        return files
    raise ValueError(name)


def worker(name, folder, files, archive):
    """One process of a benchmark: prepares, says "ready", waits for "go" on stdin, then prints the
    operations it did and the seconds they took."""
    prepare(name, folder, files)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("files_bench: the driver went away")
    began = time.perf_counter()
    operations = run_one(name, folder, files, archive)
    print(f"{operations} {time.perf_counter() - began}", flush=True)


def measure(name, base, procs, files, archive, launcher, requests=None):
    """Operations per second of `procs` worker processes, each in a folder of its own under `base`,
    each started by `launcher` + the worker's command line; and, when `requests` reads the file
    servers' request count, the messages per operation of the timed part (else None)."""
    workers = []
    before = after = 0
    try:
        for p in range(procs):
            command = launcher + [sys.executable, os.path.abspath(__file__), "--worker", name,
                                  os.path.join(base, f"{name}-p{p}"), str(files), archive]
            workers.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for w in workers:
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{name}: a worker failed while preparing ({' '.join(launcher) or 'tmpfs'})")
        if requests is not None:
            before = requests()
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        outcomes = []
        for w in workers:
            words = w.stdout.readline().split()
            if w.wait() != 0 or len(words) != 2:
                raise RuntimeError(f"{name}: a worker failed ({' '.join(launcher) or 'tmpfs'})")
            outcomes.append((int(words[0]), float(words[1])))
        if requests is not None:
            after = requests()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    operations = sum(o for o, _ in outcomes)
    seconds = max(s for _, s in outcomes)
    return operations / seconds, ((after - before) / operations if requests is not None else None)


def make_archive(folder, files):
    tree = os.path.join(folder, "tree")
    for i in range(files):
        directory = os.path.join(tree, f"d{i % 50}")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"f{i}"), "wb") as out:
            out.write(BLOCK[: (i * 37) % 3000])
    archive = os.path.join(folder, "tree.tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname=".")
    shutil.rmtree(tree)
    return archive


def fleet_config(servers, seats):
    names = [f"app{i}" for i in range(seats)]
    components = "".join(f'\n[[component]]\nname = "{seat}"\nexternal = true\n' for seat in names)
    writers = ", ".join([f'"fs{i}"' for i in range(servers)] + [f'"{seat}"' for seat in names])
    channels = "".join(f'\n[[channel]]\nname = "fs${{replica}}-{seat}"\na = "fs"\nb = "{seat}"\ncapacity = 256\n'
                       for seat in names)
    return ("[supervisor]\nheartbeat_timeout_ms = 500\n" + components +
            f'\n[[component]]\nname = "fs"\nbinary = "flotilla-fs"\nreplicas = {servers}\n'
            'args = ["--index", "${replica.index}", "--servers", "${replica.count}"]\nstate_bytes = 16777216\n'
            f'\n[[region]]\nname = "fs-blocks"\nbytes = 268435456\nwriters = [{writers}]\n' + channels)


class Fleet:
    """A stack of `servers` file servers with `seats` application seats, mounted at `mount_point`
    when `fuse`; down and unmounted however it ends."""

    def __init__(self, build, servers, seats, folder, fuse):
        self.flotilla = os.path.join(build, "apps", "flotilla")
        self.folder = folder
        self.socket = os.path.join(folder, "control.sock")
        self.mount_point = os.path.join(folder, "mnt")
        self.config = os.path.join(folder, "fleet.toml")
        self.servers = servers
        self.seats = seats
        self.fuse = fuse
        self.mounter = None
        self.up = False

    def requests(self):
        """Requests the file servers have handled (their fs_requests counters, summed)."""
        text = subprocess.run([self.flotilla, "--socket", self.socket, "counters"], check=True,
                              capture_output=True, text=True).stdout
        return sum(int(line.split()[-1]) for line in text.splitlines() if line.split()[:1] == ["fs_requests"])

    def run_prefix(self):
        """What starts a program on this fleet through the preload library."""
        return [self.flotilla, "--socket", self.socket, "run", "--"]

    def __enter__(self):
        os.makedirs(self.mount_point, exist_ok=True)
        with open(self.config, "w") as out:
            out.write(fleet_config(self.servers, self.seats))
        subprocess.run([self.flotilla, "--socket", self.socket, "up", "--config", self.config], check=True,
                       stdout=subprocess.DEVNULL)
        self.up = True
        if not self.fuse:
            return self
        self.mounter = subprocess.Popen([self.flotilla, "--socket", self.socket, "mount", self.mount_point],
                                        stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not os.path.ismount(self.mount_point):
            if time.time() > deadline or self.mounter.poll() is not None:
                raise RuntimeError("the mount did not come up")
            time.sleep(0.05)
        return self

    def __exit__(self, *_):
        if self.mounter is not None and self.mounter.poll() is None:
            self.mounter.terminate()
            self.mounter.wait(timeout=30)
        if self.up:
            subprocess.run([self.flotilla, "--socket", self.socket, "down"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if os.path.ismount(self.mount_point):
            subprocess.run(["umount", "-l", self.mount_point])


def fleet_prefix(build):
    """The fleet's prefix as `flotilla config` gives it ([files] prefix)."""
    text = subprocess.run([os.path.join(build, "apps", "flotilla"), "config"], check=True,
                          capture_output=True, text=True).stdout
    table = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            table = line
        elif table == "[files]" and line.startswith("prefix"):
            return line.split("=", 1)[1].strip().strip('"')
    return "/flotilla"


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(
        description="Hare's microbenchmarks on the file fleet (programs under flotilla run) vs tmpfs",
        epilog="Needs root. About 1 min with the defaults on 2 vCPUs; one line per benchmark as it ends.")
    parser.add_argument("--build", default=os.path.join(here, "..", "..", "build"), help="the build folder")
    parser.add_argument("--servers", default="1,2,3", help="file server counts to run, comma-separated")
    parser.add_argument("--procs", default="1,2", help="process counts to run, comma-separated")
    parser.add_argument("--files", type=int, default=1000, help="files per process and benchmark")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="benchmarks to run, comma-separated")
    parser.add_argument("--messages", action="store_true",
                        help="also print the messages per operation the servers handled (fs_requests) in the "
                             "timed part")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per row and side, alternated; each side's best is kept (on a busy "
                             "machine one run swings 2-5x)")
    parser.add_argument("--fuse", action="store_true", help="also run each benchmark on `flotilla mount` (FUSE)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("files_bench: needs root (it starts a stack)")
    if args.repeat < 1:
        sys.exit("files_bench: --repeat takes a count of at least 1")
    if args.fuse and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        sys.exit("files_bench: FUSE is unavailable (/dev/fuse)")
    only = [b for b in args.only.split(",") if b]
    for b in only:
        if b not in BENCHMARKS:
            sys.exit(f"files_bench: unknown benchmark '{b}' ({', '.join(BENCHMARKS)})")
    try:
        servers_list = [int(s) for s in args.servers.split(",")]
        procs_list = [int(p) for p in args.procs.split(",")]
    except ValueError:
        sys.exit("files_bench: --servers and --procs take numbers, comma-separated")
    # A worker and the tar it starts each lease a seat; the mount one more.
    seats = 2 * max(procs_list) + (1 if args.fuse else 0)
    if seats > 7:
        sys.exit("files_bench: at most 3 processes (7 application seats)")
    build = os.path.abspath(args.build)
    prefix = fleet_prefix(build)

    work = tempfile.mkdtemp(prefix="flotilla-files-bench-", dir="/dev/shm")  # tmpfs: the reference
    ratios = []
    fuse_ratios = []
    try:
        archive = make_archive(work, args.files)
        header = f"{'benchmark':<13} {'servers':>7} {'procs':>5} {'fleet ops/s':>12} {'tmpfs ops/s':>12} {'ratio':>7}"
        if args.messages:
            header += f" {'msgs/op':>8}"
        if args.fuse:
            header += f" {'fuse ops/s':>11} {'ratio':>7}"
        say(header)
        for servers in servers_list:
            with Fleet(build, servers, seats, os.path.join(work, f"fleet{servers}"), args.fuse) as fleet:
                measure("creates", f"{prefix}/warm-up", max(procs_list), args.files, archive, fleet.run_prefix())
                subprocess.run(fleet.run_prefix() + ["rm", "-rf", f"{prefix}/warm-up"], check=True)
                for procs in procs_list:
                    for name in only:
                        reference = os.path.join(work, f"tmpfs-{servers}-{procs}")
                        fleet_rate = tmpfs_rate = 0.0
                        for attempt in range(args.repeat):
                            if attempt > 0:
                                shutil.rmtree(reference, ignore_errors=True)
                                subprocess.run(fleet.run_prefix() + ["rm", "-rf", f"{prefix}/run-{procs}"], check=True)
                            rate, messages = measure(name, f"{prefix}/run-{procs}", procs, args.files, archive,
                                                     fleet.run_prefix(), fleet.requests if args.messages else None)
                            fleet_rate = max(fleet_rate, rate)
                            tmpfs_rate = max(tmpfs_rate, measure(name, reference, procs, args.files, archive, [])[0])
                        ratio = fleet_rate / tmpfs_rate
                        ratios.append(ratio)
                        line = f"{name:<13} {servers:>7} {procs:>5} {fleet_rate:>12.0f} {tmpfs_rate:>12.0f} {ratio:>6.2f}x"
                        if args.messages:
                            line += f" {messages:>8.2f}"
                        if args.fuse:
                            fuse_rate, _ = measure(name, os.path.join(fleet.mount_point, f"run-{procs}"), procs,
                                                   args.files, archive, [])
                            fuse_ratios.append(fuse_rate / tmpfs_rate)
                            line += f" {fuse_rate:>11.0f} {fuse_rate / tmpfs_rate:>6.2f}x"
                        say(line)
                        # Emptied between benchmarks, outside the clock: the cache stays as roomy
                        # for the last benchmark as for the first.
                        shutil.rmtree(reference, ignore_errors=True)
                        subprocess.run(fleet.run_prefix() + ["rm", "-rf", f"{prefix}/run-{procs}"], check=True)
                        if args.fuse:
                            shutil.rmtree(os.path.join(fleet.mount_point, f"run-{procs}"), ignore_errors=True)
        say(f"median ratio fleet/tmpfs: {statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x "
            f"(goal: median >= 0.5x, none below 0.25x)")
        if fuse_ratios:
            say(f"median ratio fuse/tmpfs: {statistics.median(fuse_ratios):.2f}x, lowest {min(fuse_ratios):.2f}x")
        load = os.getloadavg()
        say(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
