"""The first pass over an upload: encoding, delimiter, header, types, preview, ragged rows.

It reads the whole file, because a type guessed from the first rows would corrupt the one ZIP
code with a leading zero on row 900,000. The result is plain JSON stored on the job.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.upload import convert, encodings, sniff
from gateway.upload.columns import TypeTracker
from gateway.upload.errors import ImportFailed
from gateway.upload.signatures import refuse_known_binary
from gateway.upload.source import Rows

PREVIEW_ROWS = 20
PREVIEW_CELL = 200

Progress = Callable[[int, int], None]


def analyze(
    path: Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    if path.stat().st_size == 0:
        raise ImportFailed("The file is empty.")
    sample = sniff.read_sample(path)
    refuse_known_binary(sample)  # even when the user chose an encoding
    if encoding:
        guess = encodings.Guess(encodings.check(encoding), 1.0, "chosen")
    else:
        guess = encodings.detect(path)
    enc = guess.encoding
    text = sniff.decode_sample(sample, enc)
    if sniff.looks_binary(text):
        raise ImportFailed("This does not look like a text file (it is full of control bytes).")
    delim = sniff.check_delimiter(delimiter) if delimiter else sniff.guess_delimiter(text)

    with Rows(path, enc, delim) as rows:
        names = rows.read_header()
        trackers = [TypeTracker() for _ in names]
        conversions = [convert.trackers() for _ in names]  # offered only when they all fit
        preview: list[list[str]] = []
        for batch in rows.batches(progress):
            if len(preview) < PREVIEW_ROWS:
                preview += [[c[:PREVIEW_CELL] for c in r] for r in batch[:PREVIEW_ROWS]]
                preview = preview[:PREVIEW_ROWS]
            first_row = rows.rows - len(batch) + 1
            for tracker, column, values in zip(
                trackers, conversions, zip(*batch, strict=True), strict=True
            ):
                tracker.add_batch(values)
                for conversion in column:
                    conversion.add_batch(values, first_row, tracker)
        notes = list(rows.notes)
        if guess.low:
            notes.insert(0, _uncertain(guess))
        if rows.rows == 0:
            raise ImportFailed("The file has a header row but no data rows.")
        if rows.ragged:
            notes.append(
                f"{rows.ragged} rows do not have {len(names)} cells (lines "
                f"{', '.join(map(str, rows.ragged_lines[:10]))}"
                f"{', ...' if rows.ragged > 10 else ''}). Short rows are padded with empty "
                "cells; cells beyond the header are kept in an '_extra' column."
            )
        return {
            "encoding": enc,
            "encoding_guess": guess.as_json(),
            "delimiter": delim,
            "delimiter_name": sniff.DELIMITERS[delim],
            "columns": [
                {
                    "name": name,
                    "header": header[:PREVIEW_CELL],
                    "type": t.detected,
                    "allowed": t.allowed(),
                    "example": t.example,
                    "has_empty": t.has_empty,
                    **convert.summarise(conv),
                }
                for name, header, t, conv in zip(
                    names, rows.header_raw, trackers, conversions, strict=True
                )
            ],
            "rows": rows.rows,
            "preview": preview,
            "ragged": {"count": rows.ragged, "lines": rows.ragged_lines},
            "long_rows": rows.long_rows,
            "blank_lines": rows.blank_lines,
            "notes": notes,
        }


def _uncertain(guess: encodings.Guess) -> str:
    also = f" It could also be {', '.join(guess.alternatives[:4])}." if guess.alternatives else ""
    return (
        f"The encoding is uncertain: {guess.encoding} is only a guess "
        f"({round(guess.confidence * 100)}% confidence).{also} Check the letters in the preview: "
        "if they look wrong (such as Ã© or Ð¼Ð¾), choose another encoding below before importing."
    )
