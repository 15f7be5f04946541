#!/usr/bin/env python3
"""The layering check fails on each kind of forbidden edge, and passes on the tree as it is.

Each case copies the real source tree, adds one include across a forbidden edge to a real file,
and expects check_layers.py to fail naming that file, line and edge.
"""
import pathlib
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECK = ROOT / "tests" / "layering" / "check_layers.py"
SOURCE_FOLDERS = ["dataplane", "components", "drivers", "recovery", "sockets", "apps", "perf", "tests"]

# (file to edit, include to add, the edge the check must name)
FORBIDDEN = [
    ("dataplane/ring.hpp", "components/tcp/engine.hpp", "runtime may not include tcp"),
    ("components/wire/ipv4.hpp", "dataplane/ring.hpp", "wire may not include runtime"),
    ("components/udp/udp_server.cpp", "components/ip/ip_server.hpp", "udp may not include ip"),
    ("components/ip/ip_server.cpp", "components/tcp/engine.hpp", "ip may not include tcp"),
    ("drivers/packet_port.hpp", "components/wire/ipv4.hpp", "drivers may not include wire"),
    ("sockets/tcp_sockets.cpp", "components/tcp/engine.hpp", "sockets may not include tcp"),
    ("apps/cli/demo.cpp", "components/ip/route_table.hpp", "apps may not include ip"),
    ("recovery/supervisor.cpp", "components/pf/rules.hpp", "supervisor may not include pf"),
    ("components/formats/stack_messages.hpp", "recovery/supervisor.hpp",
     "formats may not include supervisor"),
]


def run_check(root: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), "--root", str(root)],
                          capture_output=True, text=True, timeout=120)


class LayeringCheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scratch = tempfile.TemporaryDirectory(prefix="flotilla-layers-")
        cls.tree = pathlib.Path(cls.scratch.name) / "tree"
        for folder in SOURCE_FOLDERS:
            shutil.copytree(ROOT / folder, cls.tree / folder,
                            ignore=shutil.ignore_patterns("build", ".git"))

    @classmethod
    def tearDownClass(cls):
        cls.scratch.cleanup()

    def test_the_tree_as_it_is_passes(self):
        result = run_check(self.tree)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_each_forbidden_edge_fails(self):
        for relative, include, edge in FORBIDDEN:
            with self.subTest(file=relative, include=include):
                path = self.tree / relative
                original = path.read_text()
                try:
                    lines = original.splitlines()
                    lines.append(f'#include "{include}"')
                    path.write_text("\n".join(lines) + "\n")
                    result = run_check(self.tree)
                    self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
                    self.assertIn(f"{relative}:{len(lines)}: {edge}", result.stdout)
                finally:
                    path.write_text(original)

    def test_test_code_may_include_anything(self):
        path = self.tree / "dataplane" / "tests" / "layering_probe.cpp"
        path.write_text('#include "components/tcp/engine.hpp"\n')
        try:
            self.assertEqual(run_check(self.tree).returncode, 0)
        finally:
            path.unlink()

    def test_a_tree_that_is_not_flotilla_is_refused(self):
        with tempfile.TemporaryDirectory() as empty:
            self.assertEqual(run_check(pathlib.Path(empty)).returncode, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
