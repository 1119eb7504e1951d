"""Encoding detection on a large legacy-encoded CSV: the gateway's windows vs the whole file.

    .venv/bin/python benchmarks/encoding_detect.py            # --mb 100 --rounds 3

Builds a cp1251 CSV of ``--mb`` megabytes (Russian place names and numbers), then times, in
interleaved rounds, ``encodings.detect`` (up to 8 windows of 64 KiB, non-ASCII lines only) and
``charset_normalizer.from_path`` on the whole file (what "just call the detector" would do).
Prints seconds per detection, the ratio, and whether each picked an encoding that reads the
file correctly.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from charset_normalizer import from_path

from gateway.upload import encodings

ROWS = [
    "Москва,Центральный федеральный округ,12655050,55.7558",
    "Санкт-Петербург,Северо-Западный федеральный округ,5384342,59.9343",
    "Новосибирск,Сибирский федеральный округ,1633595,55.0084",
    "Екатеринбург,Уральский федеральный округ,1544376,56.8389",
]


def build(path: Path, mb: int) -> str:
    block = ("\n".join(f"{i},{row}" for i, row in enumerate(ROWS * 256)) + "\n").encode("cp1251")
    with open(path, "wb") as f:
        f.write("id,город,округ,население,широта\n".encode("cp1251"))
        for _ in range(mb * 1024 * 1024 // len(block) + 1):
            f.write(block)
    return "cp1251"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        truth = build(path, args.mb)
        size = path.stat().st_size
        sample = path.read_bytes()[: 1 << 20]
        windows: list[float] = []
        full: list[float] = []
        picked: dict[str, str] = {}
        for _ in range(args.rounds):
            start = time.perf_counter()
            guess = encodings.detect(path)
            windows.append(time.perf_counter() - start)
            picked["windows"] = guess.encoding
            start = time.perf_counter()
            best = from_path(path).best()
            full.append(time.perf_counter() - start)
            picked["whole file"] = best.encoding if best else "none"
        print(f"file: {size / 1e6:.0f} MB of {truth}, {args.rounds} interleaved rounds")
        for name, times in (("windows", windows), ("whole file", full)):
            ok = sample.decode(picked[name], "replace") == sample.decode(truth, "replace")
            print(
                f"{name:>10}: median {statistics.median(times):8.3f} s  "
                f"picked {picked[name]} ({'reads correctly' if ok else 'WRONG'})"
            )
        ratio = statistics.median(full) / statistics.median(windows)
        print(f"whole file / windows: {ratio:.0f}x")


if __name__ == "__main__":
    main()
