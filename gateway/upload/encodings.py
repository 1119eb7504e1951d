"""Which text encoding a file is in, how sure we are, and any encoding a user may choose.

Order of evidence: a byte-order mark (certain), a known binary signature (refused with a
message saying what the file is), strict UTF-8 (certain when valid: random legacy bytes are
almost never valid UTF-8), then ``charset-normalizer`` for the legacy encodings of the world's
newsrooms. Detection reads at most ``WINDOWS`` windows of ``WINDOW`` bytes spread over the file,
so a 100 MB file costs the same as a 512 KiB one (benchmarks/encoding_detect.py) and a file
whose first rows are plain ASCII is still judged on its later, accented rows.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.upload.errors import ImportFailed
from gateway.upload.signatures import refuse_known_binary

WINDOW = 64 * 1024
WINDOWS = 8
LOW = 0.8  # below this the page says the guess is uncertain
# Percentage points: candidates this close to the best are as plausible.
CHAOS_TIE = 1.0
COHERENCE_TIE = 5.0
# When another common encoding fits as well, this one is still the likely one: no warning.
PREFERRED = ("cp1252",)
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: its BOM starts the same way
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# What the forms suggest; any other codec Python knows is accepted too (``check``).
COMMON = (
    "utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1", "iso8859-15", "cp1250", "iso8859-2",
    "cp1251", "koi8-r", "koi8-u", "iso8859-5", "cp1253", "iso8859-7", "cp1254", "iso8859-9",
    "cp1255", "cp1256", "cp1257", "cp874", "cp1258", "shift_jis", "cp932", "euc-jp",
    "euc-kr", "cp949", "gb18030", "gbk", "big5", "big5hkscs", "mac-roman",
)  # fmt: skip


@dataclass(frozen=True)
class Guess:
    encoding: str
    confidence: float  # 0..1
    how: str  # "bom", "utf-8", "detected", "chosen" or "fallback"
    language: str | None = None
    alternatives: tuple[str, ...] = ()

    @property
    def low(self) -> bool:
        return self.confidence < LOW

    def as_json(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "confidence": round(self.confidence, 2),
            "low": self.low,
            "how": self.how,
            "language": self.language,
            "alternatives": list(self.alternatives),
        }


def canonical(name: str) -> str:
    return codecs.lookup(name).name


def check(name: str) -> str:
    """Any text encoding Python knows, by any of its names; a clear error otherwise."""
    raw = name.strip()
    try:
        "a".encode(raw)  # also refuses bytes-to-bytes codecs such as base64 or zlib
        return canonical(raw)
    except LookupError:
        raise ImportFailed(
            f"Unknown encoding {raw[:40]!r}. Use a name Python knows, such as "
            "utf-8, cp1252, cp1251, iso8859-7, shift_jis or gb18030."
        ) from None


def windows(path: Path) -> list[bytes]:
    """The head of the file, then whole-line windows spread evenly over the rest."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(WINDOW)
        out = [head]
        if size <= WINDOW * WINDOWS:
            rest = f.read()
            return [head + rest] if rest else out
        step = (size - WINDOW) // (WINDOWS - 1)
        for i in range(1, WINDOWS):
            f.seek(min(i * step, size - WINDOW))
            chunk = f.read(WINDOW)
            start, end = chunk.find(b"\n") + 1, chunk.rfind(b"\n") + 1
            if 0 < start < end:
                out.append(chunk[start:end])
    return out


def detect(path: Path) -> Guess:
    parts = windows(path)
    head = parts[0]
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return Guess(canonical(encoding), 1.0, "bom")
    refuse_known_binary(head)
    if any(b"\x00" in part for part in parts):
        return _without_bom(head)
    if all(_is_utf8(part, i == 0 and len(parts) == 1) for i, part in enumerate(parts)):
        return Guess("utf-8", 1.0, "utf-8")
    _refuse_mixed_utf8(head)
    return _legacy(b"\n".join(_whole_lines(p) for p in parts))


def _is_utf8(data: bytes, whole: bool) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # The head window of a large file may end inside a character.
        cut = exc.reason == "unexpected end of data" and exc.start >= len(data) - 3
        return cut and not whole


def _refuse_mixed_utf8(head: bytes) -> None:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = head[: exc.start]
        if any(b >= 0x80 for b in before):
            line = before.count(b"\n") + 1
            raise ImportFailed(
                f"The file mixes encodings: it starts as UTF-8 but has an invalid byte on line "
                f"{line}. Choose an encoding explicitly to import it anyway."
            ) from None


def _whole_lines(data: bytes) -> bytes:
    end = data.rfind(b"\n")
    return data[: end + 1] if end > 0 else data


def _without_bom(head: bytes) -> Guess:
    """NUL bytes: UTF-16 text without a byte-order mark (NULs in every other byte), or binary."""
    even, odd = head[0::2], head[1::2]
    for zeros, encoding in ((odd, "utf-16-le"), (even, "utf-16-be")):
        if zeros and zeros.count(0) > 0.8 * len(zeros):
            return Guess(encoding, 0.9, "detected")
    at = head.find(b"\x00")
    raise ImportFailed(
        f"This file contains a NUL byte at byte {at}, so it is not a text CSV file "
        "(it may be a spreadsheet or another binary file: save it as CSV and upload that)."
    )


def _legacy(sample: bytes) -> Guess:
    from charset_normalizer import from_bytes  # imported by the worker only

    # Plain ASCII lines say nothing about the encoding: judge the lines that can.
    telling = b"\n".join(line for line in sample.split(b"\n") if not line.isascii())
    matches = list(from_bytes(telling or sample))
    if not matches:
        return Guess("latin-1", 0.0, "fallback")  # decodes any byte; the page warns
    best_chaos = min(m.percent_chaos for m in matches)
    near = [m for m in matches if m.percent_chaos <= best_chaos + CHAOS_TIE]
    best_coherence = max(m.percent_coherence for m in near)
    ties = [m for m in near if m.percent_coherence >= best_coherence - COHERENCE_TIE]
    # The candidate whose letters read most like a language wins; among equals, the
    # encodings newsrooms use beat rare ones (mac-cyrillic, DOS code pages), in COMMON's order.
    # Each match stands for every encoding that decodes the sample to the same text.
    chosen = min(ties, key=lambda m: (-round(m.percent_coherence), _rank(_name(m))))
    name = _name(chosen)
    others = [m for m in ties if m is not chosen]
    alternatives = tuple(_name(m) for m in others)
    # A rare encoding that also fits is no reason for doubt; another common one is, unless it
    # fits only as well as cp1252, the likeliest of all.
    level = round(chosen.percent_coherence)
    doubts = [
        m for m in others
        if _name(m) in COMMON and not (name in PREFERRED and round(m.percent_coherence) == level)
    ]  # fmt: skip
    confidence = max(0.0, 1.0 - chosen.percent_chaos / 100)
    if doubts or (name not in COMMON and alternatives):
        confidence = min(confidence, 0.5)
    language = chosen.language if chosen.language and chosen.language != "Unknown" else None
    return Guess(name, confidence, "detected", language, alternatives)


def _name(match: Any) -> str:
    """The most common of the encodings that read a match's sample identically."""
    names = [canonical(n) for n in (match.encoding, *match.could_be_from_charset)]
    return min(names, key=_rank)


def _rank(name: str) -> int:
    return COMMON.index(name) if name in COMMON else len(COMMON)


def is_wide(encoding: str) -> bool:
    """UTF-16/32 text holds NUL bytes in every other byte: the NUL check must not apply."""
    return canonical(encoding).startswith(("utf-16", "utf-32"))
