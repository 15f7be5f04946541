#!/usr/bin/env python3
"""TCP bulk goodput of this tree's build against another commit's, side by side in one run.

It exports the base commit (default: the commit before HEAD) with `git archive` into
BUILD/compare/SHA/src, builds there what the bulk benchmark runs (the stack's binaries, the
supervisor, the CLI and flotilla-stack-bench; ccache makes a rebuild cheap and a second
invocation reuses it), then runs `flotilla-stack-bench tcp-bulk --runs 1 --paths flotilla` from
each build in turn, base then this tree, --runs times, and prints per case the medians, the ratio
this/base, and the steal and background load each run saw. A ratio below 1 is a regression when
the load columns are alike; on a loaded machine compare only rows whose bg% is low.

Needs root (the benchmark makes namespaces and veth), git, meson and ninja, and a build of this
tree (./dev build). It measures; nothing here asserts a speed.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

# What `flotilla-stack-bench tcp-bulk` needs: the supervisor starts the stack's binaries from its
# own folder.
TARGETS = ["apps/" + name for name in (
    "flotilla", "flotilla-supervisor", "flotilla-driver", "flotilla-ip", "flotilla-pf", "flotilla-tcp", "flotilla-udp",
    "flotilla-fs", "flotilla-echo", "flotilla-name-server", "flotilla-perf", "flotilla-udp-echo",
    "flotilla-tcp-echo")] + ["perf/flotilla-stack-bench"]
# A result line of tcp-bulk: run, case, path, Gbps, steal%, bg%, busy s/Gb, stack s/Gb.
RESULT_LINE = re.compile(r"^\s*\d+\s+(\S+ x\d+)\s+flotilla\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")
FIELDS = ("gbps", "steal", "bg", "busy_per_gb", "stack_per_gb")


def say(text):
    print(text, flush=True)


def run(argv, cwd=None, timeout=3600):
    result = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"'{' '.join(argv)}' failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return result.stdout


def build_base(root, build, revision):
    sha = run(["git", "-C", root, "rev-parse", "--verify", revision + "^{commit}"]).strip()
    place = os.path.join(build, "compare", sha[:12])
    source, base_build = os.path.join(place, "src"), os.path.join(place, "build")
    if not os.path.isdir(source):
        say(f"==> exporting {revision} ({sha[:12]}) to {source}")
        os.makedirs(source)
        archive = subprocess.Popen(["git", "-C", root, "archive", sha], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", source], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            shutil.rmtree(place, ignore_errors=True)
            raise RuntimeError(f"git archive {sha} failed")
    if not os.path.exists(os.path.join(base_build, "build.ninja")):
        say(f"==> meson setup {base_build}")
        run(["meson", "setup", base_build, source])
    say(f"==> building {len(TARGETS)} targets of {sha[:12]} (ccache makes a rebuild cheap)")
    run(["ninja", "-C", base_build] + TARGETS, timeout=7200)
    return sha, base_build


def bulk_once(build, options, streams, direction):
    """{field: value} of one tcp-bulk run of `build` on the Flotilla path."""
    argv = [os.path.join(build, "perf", "flotilla-stack-bench"), "tcp-bulk", "--runs", "1", "--paths", "flotilla",
            "--streams", str(streams), "--directions", direction, "--seconds", str(options.seconds)]
    output = run(argv, timeout=options.seconds * 10 + 300)
    for line in output.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            return dict(zip(FIELDS, (float(value) for value in match.groups()[1:])))
    raise RuntimeError(f"no result line in tcp-bulk's output:\n{output[-3000:]}")


def parse_arguments():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: ./dev bench compare --base HEAD~3 --runs 5 --streams 1   "
               "(or perf/compare_commits.py --build build ...)")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--build", default=os.environ.get("FLOTILLA_BUILD_ROOT") or os.path.join(here, "build"),
                        help="this tree's meson build folder (default: $FLOTILLA_BUILD_ROOT or build/)")
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare against (default: HEAD~1)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each case per build, alternating (default: 3)")
    parser.add_argument("--seconds", type=float, default=5, help="length of each transfer (default: 5)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1], help="parallel connections, one case each "
                        "(default: 1)")
    parser.add_argument("--directions", nargs="+", choices=["send", "receive"], default=["send", "receive"],
                        help="send: Flotilla sends; receive: Flotilla receives (default: both)")
    options = parser.parse_args()
    options.root = here
    if options.runs < 1 or options.seconds < 0.5 or any(s < 1 or s > 64 for s in options.streams):
        parser.error("--runs must be at least 1, --seconds at least 0.5, --streams 1-64")
    return options


def main():
    options = parse_arguments()
    if os.geteuid() != 0:
        sys.exit("compare_commits: needs root (network namespaces, veth, XDP)")
    for program in ("git", "meson", "ninja", "tar"):
        if shutil.which(program) is None:
            sys.exit(f"compare_commits: not installed: {program} (./dev installs it)")
    if not os.path.exists(os.path.join(options.build, "perf", "flotilla-stack-bench")):
        sys.exit(f"compare_commits: no build in {options.build} (./dev build, or --build DIR)")
    try:
        sha, base_build = build_base(options.root, options.build, options.base)
        builds = {"base": base_build, "this": options.build}
        cases = [(streams, direction) for streams in options.streams for direction in options.directions]
        figures = {(case, side): [] for case in cases for side in builds}
        for number in range(1, options.runs + 1):
            for case in cases:
                for side, build in builds.items():
                    result = bulk_once(build, options, *case)
                    figures[(case, side)].append(result)
                    say(f"run {number}/{options.runs}  {case[1]:<7} x{case[0]}  {side:<4} {result['gbps']:6.2f} Gbps  "
                        f"stack {result['stack_per_gb']:.3f} s/Gb  steal {result['steal']:.1f}%  bg {result['bg']:.0f}%")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        say(f"compare_commits: {error}")
        return 1
    head = run(["git", "-C", options.root, "rev-parse", "--short=12", "HEAD"]).strip()
    say(f"\nTCP bulk on the Flotilla path, medians of {options.runs} runs of {options.seconds:g} s, "
        f"this tree (HEAD {head}, with its uncommitted changes) vs base {sha[:12]} ({options.base}):")
    say(f"{'case':<14} {'base Gbps':>10} {'this Gbps':>10} {'this/base':>10} {'stack s/Gb base/this':>22} "
        f"{'steal% max':>11} {'bg% median':>11}")
    for case in cases:
        def median(side, field):
            return statistics.median(r[field] for r in figures[(case, side)])
        everything = figures[(case, "base")] + figures[(case, "this")]
        say(f"{case[1] + ' x' + str(case[0]):<14} {median('base', 'gbps'):10.2f} {median('this', 'gbps'):10.2f} "
            f"{median('this', 'gbps') / max(median('base', 'gbps'), 1e-9):9.2f}x "
            f"{median('base', 'stack_per_gb'):10.3f} / {median('this', 'stack_per_gb'):<9.3f} "
            f"{max(r['steal'] for r in everything):11.1f} {statistics.median(r['bg'] for r in everything):11.0f}")
    say("(Gbps and CPU per gigabit as flotilla-stack-bench tcp-bulk reports them; a fresh stack per run; bg%: "
        "other load just before each run, steal%: the host's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
