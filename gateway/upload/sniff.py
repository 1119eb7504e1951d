"""Guess how a delimited text file is split: its delimiter, from the first ``SAMPLE`` bytes.

The encoding is found by ``encodings.py``; the full pass (``analyze.py``) then decodes the
whole file strictly, so a wrong guess becomes a clear error rather than mojibake.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gateway.upload.errors import ImportFailed

SAMPLE = 64 * 1024
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def read_sample(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SAMPLE)


def decode_sample(sample: bytes, encoding: str) -> str:
    # Drop a possibly cut last character: only the sample is decoded leniently.
    text = sample.decode(encoding, errors="replace")
    if len(sample) == SAMPLE:
        text = text[: text.rfind("\n") + 1] or text
    return text


def looks_binary(text: str) -> bool:
    """Many control characters (other than tab and newlines) mean this is not text."""
    if not text:
        return False
    controls = sum(1 for ch in text[:4096] if ord(ch) < 32 and ch not in "\t\r\n")
    return controls > max(8, len(text[:4096]) // 100)


def guess_delimiter(text: str) -> str:
    """The candidate giving the most consistent column count (>1) over the sample wins."""
    lines = text.splitlines()[:50]
    if not lines:
        return ","
    best, best_score = ",", (0, 0)
    for delim in DELIMITERS:
        try:
            rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delim))
        except csv.Error:
            continue
        widths = [len(r) for r in rows if r]
        if not widths or widths[0] < 2:
            continue
        consistent = sum(1 for w in widths if w == widths[0])
        score = (consistent, widths[0])
        if score > best_score:
            best, best_score = delim, score
    return best


def check_delimiter(value: str) -> str:
    aliases = {v: k for k, v in DELIMITERS.items()} | {"\\t": "\t", "tsv": "\t", "csv": ","}
    value = aliases.get(value.strip().lower(), value)
    if value not in DELIMITERS:
        raise ImportFailed("The delimiter must be comma, tab, semicolon or pipe.")
    return value
