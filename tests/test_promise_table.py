"""tests/README.md's promise table names only tests that exist (tests/check_promises.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.check_promises import ROOT, problems


def test_every_promise_names_existing_tests() -> None:
    assert problems() == []
    done = subprocess.run(
        [sys.executable, "-m", "tests.check_promises"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_a_row_naming_a_missing_test_is_caught(tmp_path: Path) -> None:
    table = tmp_path / "README.md"
    table.write_text(
        "| promise | test(s) |\n| --- | --- |\n"
        "| real | `tests/test_promise_table.py::test_every_promise_names_existing_tests` |\n"
        "| renamed | `tests/test_promise_table.py::test_that_was_renamed` |\n"
        "| moved | `tests/test_nowhere.py::test_x` |\n"
        "| untested | none yet |\n"
    )
    assert problems(table) == [
        "no test tests/test_promise_table.py::test_that_was_renamed: renamed",
        "no such file tests/test_nowhere.py: moved",
        "names no test: untested",
    ]
