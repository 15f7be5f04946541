#!/usr/bin/env python3
"""Hare's file-system microbenchmarks on the file fleet's FUSE mount against tmpfs, side by side.

For each server count (--servers, default 1,2,3) it brings up a stack of the file fleet alone
(`flotilla up` on a configuration of that many flotilla-fs servers and application seats, with its
own control socket), mounts it (`flotilla mount`), and runs every benchmark there and in a tmpfs
folder, with 1 and 2 processes (--procs), each process in a folder of its own:

  creates      create --files empty files in one directory
  writes       create --files files and write 10 x 4 KiB to each
  renames      rename --files files within their directory
  directories  create and remove --files/10 directories
  rm-dense     remove --files files from one directory
  rm-sparse    remove --files files, one per directory, and the directories
  pfind-dense  list a tree of --files files in few directories (find)
  pfind-sparse list a tree of --files files in one directory each (find)
  extract      tar -x of a tree of --files small files

It prints operations per second on each side and the ratio fleet / tmpfs, and the median ratio.
A first version: every operation goes through the FUSE mount (kernel round trips included), not
through the preload library. Needs root and /dev/fuse, and a build (./dev build).
"""

import argparse
import multiprocessing
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


def prepare(name, folder, files):
    """What a benchmark needs in place before the clock starts."""
    os.makedirs(folder, exist_ok=True)
    if name == "renames" or name == "rm-dense":
        for i in range(files):
            open(os.path.join(folder, f"f{i}"), "wb").close()
    elif name == "rm-sparse":
        for i in range(files):
            os.mkdir(os.path.join(folder, f"d{i}"))
            open(os.path.join(folder, f"d{i}", "f"), "wb").close()
    elif name == "pfind-dense":
        for d in range(max(1, files // 100)):
            os.mkdir(os.path.join(folder, f"d{d}"))
            for i in range(100):
                open(os.path.join(folder, f"d{d}", f"f{i}"), "wb").close()
    elif name == "pfind-sparse":
        for i in range(files):
            os.mkdir(os.path.join(folder, f"d{i}"))
            open(os.path.join(folder, f"d{i}", "f"), "wb").close()


def run_one(name, folder, files, archive):
    """The timed part; returns the operations it did."""
    if name == "creates":
        for i in range(files):
            open(os.path.join(folder, f"f{i}"), "wb").close()
        return files
    if name == "writes":
        for i in range(files):
            with open(os.path.join(folder, f"f{i}"), "wb", buffering=0) as out:
                for _ in range(10):
                    out.write(BLOCK)
        return files
    if name == "renames":
        for i in range(files):
            os.rename(os.path.join(folder, f"f{i}"), os.path.join(folder, f"g{i}"))
        return files
    if name == "directories":
        count = max(1, files // 10)
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


def worker(name, folder, files, archive, start, results):
    prepare(name, folder, files)
    start.wait()
    began = time.perf_counter()
    operations = run_one(name, folder, files, archive)
    results.put((operations, time.perf_counter() - began))


def measure(name, base, procs, files, archive):
    """Operations per second of `procs` processes, each in a folder of its own under `base`."""
    start = multiprocessing.Barrier(procs + 1)
    results = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=worker,
                                       args=(name, os.path.join(base, f"{name}-p{p}"), files, archive, start, results))
               for p in range(procs)]
    for w in workers:
        w.start()
    start.wait()
    outcomes = [results.get() for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise RuntimeError(f"{name}: a process failed")
    operations = sum(o for o, _ in outcomes)
    seconds = max(s for _, s in outcomes)
    return operations / seconds


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


def fleet_config(servers):
    seats = "".join(f'\n[[component]]\nname = "app{i}"\nexternal = true\n' for i in range(2))
    writers = ", ".join([f'"fs{i}"' for i in range(servers)] + ['"app0"', '"app1"'])
    channels = "".join(f'\n[[channel]]\nname = "fs${{replica}}-app{i}"\na = "fs"\nb = "app{i}"\ncapacity = 256\n'
                       for i in range(2))
    return ("[supervisor]\nheartbeat_timeout_ms = 500\n" + seats +
            f'\n[[component]]\nname = "fs"\nbinary = "flotilla-fs"\nreplicas = {servers}\n'
            'args = ["--index", "${replica.index}", "--servers", "${replica.count}"]\nstate_bytes = 16777216\n'
            f'\n[[region]]\nname = "fs-blocks"\nbytes = 268435456\nwriters = [{writers}]\n' + channels)


class Fleet:
    """A stack of `servers` file servers, mounted; down and unmounted however it ends."""

    def __init__(self, build, servers, folder):
        self.flotilla = os.path.join(build, "apps", "flotilla")
        self.folder = folder
        self.socket = os.path.join(folder, "control.sock")
        self.mount_point = os.path.join(folder, "mnt")
        self.config = os.path.join(folder, "fleet.toml")
        self.servers = servers
        self.mounter = None

    def __enter__(self):
        os.makedirs(self.mount_point, exist_ok=True)
        with open(self.config, "w") as out:
            out.write(fleet_config(self.servers))
        subprocess.run([self.flotilla, "--socket", self.socket, "up", "--config", self.config], check=True,
                       stdout=subprocess.DEVNULL)
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
        subprocess.run([self.flotilla, "--socket", self.socket, "down"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if os.path.ismount(self.mount_point):
            subprocess.run(["umount", "-l", self.mount_point])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Hare's microbenchmarks: the file fleet's mount vs tmpfs")
    parser.add_argument("--build", default=os.path.join(here, "..", "..", "build"), help="the build folder")
    parser.add_argument("--servers", default="1,2,3", help="file server counts to run, comma-separated")
    parser.add_argument("--procs", default="1,2", help="process counts to run, comma-separated")
    parser.add_argument("--files", type=int, default=1000, help="files per process and benchmark")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="benchmarks to run, comma-separated")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("files_bench: needs root (FUSE mount)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        sys.exit("files_bench: FUSE is unavailable (/dev/fuse)")
    only = [b for b in args.only.split(",") if b]
    for b in only:
        if b not in BENCHMARKS:
            sys.exit(f"files_bench: unknown benchmark '{b}' ({', '.join(BENCHMARKS)})")
    servers_list = [int(s) for s in args.servers.split(",")]
    procs_list = [int(p) for p in args.procs.split(",")]

    work = tempfile.mkdtemp(prefix="flotilla-files-bench-", dir="/dev/shm")  # tmpfs: the reference
    ratios = []
    try:
        archive = make_archive(work, args.files)
        say(f"{'benchmark':<13} {'servers':>7} {'procs':>5} {'fleet ops/s':>12} {'tmpfs ops/s':>12} {'ratio':>7}")
        for servers in servers_list:
            with Fleet(os.path.abspath(args.build), servers, os.path.join(work, f"fleet{servers}")) as fleet:
                for procs in procs_list:
                    for name in only:
                        reference = os.path.join(work, f"tmpfs-{servers}-{procs}")
                        on_fleet = os.path.join(fleet.mount_point, f"run-{procs}")
                        os.makedirs(reference, exist_ok=True)
                        os.makedirs(on_fleet, exist_ok=True)
                        fleet_rate = measure(name, on_fleet, procs, args.files, archive)
                        tmpfs_rate = measure(name, reference, procs, args.files, archive)
                        ratio = fleet_rate / tmpfs_rate
                        ratios.append(ratio)
                        say(f"{name:<13} {servers:>7} {procs:>5} {fleet_rate:>12.0f} {tmpfs_rate:>12.0f} {ratio:>6.2f}x")
        say(f"median ratio fleet/tmpfs: {statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x "
            f"(goal: median >= 0.5x, none below 0.25x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
