"""Check tests/README.md's promise table: every row names at least one test, and every named
test (``path::function``) exists as a function in that file.

    python -m tests.check_promises     # exit 1 with the broken rows named
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "README.md"
REF = re.compile(r"`([\w./-]+\.py)::(\w+)`")


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def problems(table: Path = TABLE) -> list[str]:
    found: list[str] = []
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")][
        2:
    ]  # after the header and its rule
    if not rows:
        return [f"{table}: no promise rows"]
    cache: dict[Path, set[str]] = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        promise, refs = cells[0], REF.findall(cells[-1])
        if not refs:
            found.append(f"names no test: {promise}")
        for file, name in refs:
            path = ROOT / file
            if not path.is_file():
                found.append(f"no such file {file}: {promise}")
                continue
            if path not in cache:
                cache[path] = defined_functions(path)
            if name not in cache[path] or not name.startswith("test_"):
                found.append(f"no test {file}::{name}: {promise}")
    return found


def main() -> None:
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
