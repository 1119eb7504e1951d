"""Guess how a delimited text file is written: its encoding and its delimiter.

Both guesses come from the first ``SAMPLE`` bytes; the full pass (``analyze.py``) then decodes
the whole file strictly, so a wrong guess becomes a clear error rather than mojibake.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from gateway.upload.errors import ImportFailed

SAMPLE = 64 * 1024
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16")
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
# Bytes cp1252 leaves undefined: a file holding them can only be latin-1.
CP1252_HOLES = (0x81, 0x8D, 0x8F, 0x90, 0x9D)


def read_sample(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SAMPLE)


def guess_encoding(sample: bytes) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        raise ImportFailed(
            "This file contains NUL bytes, so it is not a text CSV file "
            "(it may be binary, a spreadsheet, or UTF-16 without a byte-order mark)."
        )
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still UTF-8.
        if exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
        if _has_utf8_multibyte(sample[: exc.start]):
            line = sample[: exc.start].count(b"\n") + 1
            raise ImportFailed(
                f"The file mixes encodings: it starts as UTF-8 but has an invalid byte on line "
                f"{line}. Choose an encoding explicitly to import it anyway."
            ) from None
    if any(b in sample for b in CP1252_HOLES):
        return "latin-1"
    return "cp1252"


def _has_utf8_multibyte(data: bytes) -> bool:
    return any(b >= 0x80 for b in data)


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


def check_encoding(name: str) -> str:
    name = name.strip().lower()
    if name not in ENCODINGS:
        raise ImportFailed(f"Unknown encoding {name!r}: choose one of {', '.join(ENCODINGS)}.")
    return name


def check_delimiter(value: str) -> str:
    aliases = {v: k for k, v in DELIMITERS.items()} | {"\\t": "\t", "tsv": "\t", "csv": ","}
    value = aliases.get(value.strip().lower(), value)
    if value not in DELIMITERS:
        raise ImportFailed("The delimiter must be comma, tab, semicolon or pipe.")
    return value
