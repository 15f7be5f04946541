#!/usr/bin/env python3
"""Fails when a project #include crosses a forbidden edge between Flotilla's layers.

The layers and the edges each may take are listed once, below. A file belongs to the layer of the
longest folder prefix that names one; a file under any `tests/` folder is test code, which may
include anything (tests are not a layer). Only quoted includes of project files are checked.
"""
import argparse
import pathlib
import re
import sys

# Layer: the folders it owns.
LAYERS = {
    "runtime": ["dataplane"],
    "wire": ["components/wire"],
    "formats": ["components/formats"],
    "name": ["components/name"],
    "pf": ["components/pf"],
    "ip": ["components/ip"],
    "tcp": ["components/tcp"],
    "udp": ["components/udp"],
    "fs": ["components/fs"],
    "drivers": ["drivers"],
    "supervisor": ["recovery"],
    "sockets": ["sockets"],
    "apps": ["apps"],
    "perf": ["perf"],
    "fuzz": ["fuzz"],
}

PROTOCOLS = {"wire", "pf", "ip", "tcp", "udp", "fs"}

# Layer: the layers its files may include besides its own. The name fleet is not a network
# protocol: the supervisor registers components through its client, and so do applications.
ALLOWED = {
    "runtime": set(),
    "wire": set(),
    "formats": {"runtime", "wire"},
    "name": {"runtime", "formats"},
    "pf": {"runtime", "wire", "formats"},
    "ip": {"runtime", "wire", "formats"},
    "tcp": {"runtime", "wire", "formats"},
    "udp": {"runtime", "wire", "formats"},
    "fs": {"runtime", "wire", "formats"},
    "drivers": {"runtime", "formats"},
    "supervisor": {"runtime", "formats", "name"},
    "sockets": {"runtime", "formats", "wire", "name"},
    # The CLI and the example programs: the supervisor's client side and the application
    # libraries, never a protocol's internals.
    "apps": {"runtime", "formats", "wire", "name", "supervisor", "sockets"},
    "perf": set(LAYERS),
    # The fuzz harnesses drive each layer's real code, some through its test helpers.
    "fuzz": set(LAYERS),
}

# Programs in apps/ with one more edge, and why: the supervisor's process removes the runtime
# directories a killed DPDK driver leaves behind (drivers/dpdk/runtime_dirs.hpp needs no DPDK).
EXTRA_ALLOWED = {
    "apps/supervisor/": {"drivers"},
}

SOURCE_SUFFIXES = {".cpp", ".hpp", ".h", ".c"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(relative: str):
    best, best_length = None, -1
    for layer, folders in LAYERS.items():
        for folder in folders:
            if (relative == folder or relative.startswith(folder + "/")) and len(folder) > best_length:
                best, best_length = layer, len(folder)
    return best


def is_test_code(relative: str) -> bool:
    parts = relative.split("/")
    return "tests" in parts[:-1] or parts[0] == "tests"


def check(root: pathlib.Path):
    """Yields (file, line number, included path, from layer, to layer) for each forbidden include."""
    for path in sorted(root.rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if relative.startswith(("build/", ".git/")) or "/build/" in relative or is_test_code(relative):
            continue
        source = layer_of(relative)
        if source is None:
            continue
        allowed = ALLOWED[source] | {source}
        for prefix, extra in EXTRA_ALLOWED.items():
            if relative.startswith(prefix):
                allowed |= extra
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            target = layer_of(match.group(1))
            if target is None or target in allowed:
                continue
            yield relative, number, match.group(1), source, target


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Check that no #include crosses a forbidden edge between Flotilla's layers "
                    "(the allowed edges are listed in this script).")
    parser.add_argument("--root", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[2],
                        help="the source tree to check (default: this script's repository)")
    arguments = parser.parse_args()
    if not (arguments.root / "dataplane").is_dir():
        print(f"check_layers: {arguments.root} is not a Flotilla source tree (no dataplane/)",
              file=sys.stderr)
        return 2
    violations = list(check(arguments.root))
    for relative, number, included, source, target in violations:
        kind = " (a protocol)" if target in PROTOCOLS else ""
        print(f"{relative}:{number}: {source} may not include {target}{kind}: \"{included}\"")
    if violations:
        print(f"check_layers: {len(violations)} forbidden include(s)", file=sys.stderr)
        return 1
    print("check_layers: every include follows the allowed edges")
    return 0


if __name__ == "__main__":
    sys.exit(main())
