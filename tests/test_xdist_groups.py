"""`make test PYTEST_XDIST="-n 2 --dist loadgroup"` runs pytest on two xdist workers: the tests
that must not run two at a time (tests/conftest.py: the load proofs, the Docker tests, the
Chromium tests) each carry exactly one xdist group, so each kind runs serially on one worker.
Checked on the real suite's collection, in a fresh pytest process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys, pytest

class Probe:
    def pytest_collection_finish(self, session):
        self.items = {
            item.nodeid: {
                "groups": [m.args[0] for m in item.iter_markers("xdist_group")],
                "marks": sorted({m.name for m in item.iter_markers()}),
            }
            for item in session.items
        }

probe = Probe()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"], plugins=[probe])
print("ITEMS " + json.dumps(probe.items))
sys.exit(code)
"""


def test_every_test_that_must_not_share_the_machine_is_in_its_one_xdist_group() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("ITEMS "), done.stdout[-2000:]
    items: dict[str, dict[str, list[str]]] = json.loads(line.removeprefix("ITEMS "))
    seen: dict[str, int] = {"load": 0, "docker": 0, "browser": 0}
    for nodeid, info in items.items():
        path = nodeid.split("::", 1)[0]
        if path.startswith("tests/load/test_load_"):
            expected = ["load"]
        elif "docker" in info["marks"]:
            expected = ["docker"]
        elif "browser" in info["marks"]:
            expected = ["browser"]
        else:
            expected = []
        # Two groups on one test would make a group of their own, run beside both.
        assert info["groups"] == expected, (nodeid, info)
        if expected:
            seen[expected[0]] += 1
    # The suite has each kind (e2e's Chromium tests under their own conftest included).
    assert all(seen.values()), seen
    assert any(n.startswith("tests/e2e/") and i["groups"] == ["browser"] for n, i in items.items())
