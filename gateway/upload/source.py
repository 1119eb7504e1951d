"""Read a spooled file as CSV rows, strictly, with the same rules for analysis and import.

Both passes go through ``Rows`` so the import sees exactly what the analysis checked: the same
encoding, delimiter, header cleaning and ragged-row handling. Ragged rows are never dropped:
short rows are padded with empty cells, and the cells beyond the header of a long row are kept
as a JSON list in an extra ``_extra`` column (chosen over rejecting the file because a
journalist then still gets every value, and the job lists the line numbers to check).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.upload.columns import clean_headers, dedupe
from gateway.upload.encodings import is_wide
from gateway.upload.errors import ImportFailed

# A single field larger than this is refused: it keeps the worker's memory bounded.
FIELD_LIMIT = 16 * 1024 * 1024
MAX_COLUMNS = 2000  # SQLite's default SQLITE_MAX_COLUMN
BATCH = 20_000
RAGGED_LINES_KEPT = 100

csv.field_size_limit(min(FIELD_LIMIT, sys.maxsize))


class _NulCheckingReader(io.RawIOBase):
    """Raw file reader that refuses NUL bytes (binary data) as it streams.

    UTF-16 and UTF-32 text is full of NUL bytes, so for those encodings it only counts."""

    def __init__(self, path: Path, encoding: str) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 (closed in close())
        self.position = 0
        self.encoding = encoding
        self.check = not is_wide(encoding)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._f.readinto(buffer)
        # memoryview's "in" compares ints; search a bytes copy (a memcpy at most 1 MiB).
        nul = memoryview(buffer)[:n].tobytes().find(b"\x00") if n and self.check else -1
        if nul >= 0:
            at = self.position + nul
            raise ImportFailed(
                f"The file contains a NUL byte at byte {at}, so it is not {self.encoding} text. "
                "Excel's 'Unicode Text' is utf-16: choose that encoding. A spreadsheet or "
                "other binary file must be saved as CSV first."
            )
        self.position += n or 0
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


def locate_decode_error(path: Path, encoding: str) -> tuple[int, int]:
    """Exact byte offset and line of the first undecodable byte (only run on failure)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, lines = 0, 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from bytes the decoder held back plus this chunk.
                held = len(exc.object) - len(chunk)
                at = max(exc.start - held, 0)
                return offset + at, lines + chunk[:at].count(b"\n")
            offset += len(chunk)
            lines += chunk.count(b"\n")
    return offset, lines


class Rows:
    """Iterate a delimited file as batches of equal-length rows, tracking what was odd."""

    def __init__(self, path: Path, encoding: str, delimiter: str) -> None:
        self.path = path
        self.raw = _NulCheckingReader(path, encoding)
        buffered = io.BufferedReader(self.raw, buffer_size=1 << 20)
        self.text = io.TextIOWrapper(buffered, encoding=encoding, newline="")
        self.reader = csv.reader(self.text, delimiter=delimiter)
        self.header_raw: list[str] = []
        self.names: list[str] = []
        self.notes: list[str] = []
        self.rows = 0
        self.ragged = 0
        self.ragged_lines: list[int] = []
        self.blank_lines = 0
        self.long_rows = 0  # rows with more cells than the header
        self.extra: str | None = None  # name of the column holding extra cells, if any

    def __enter__(self) -> Rows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.text.close()

    @property
    def bytes_read(self) -> int:
        return self.raw.position

    def read_header(self, with_extra: bool = False) -> list[str]:
        header = self._next()
        while header == []:  # blank lines before the header carry nothing
            header = self._next()
        if header is None:
            raise ImportFailed("The file is empty: it has no header row.")
        if len(header) > MAX_COLUMNS:
            raise ImportFailed(
                f"The file has {len(header)} columns; SQLite tables hold at most {MAX_COLUMNS}."
            )
        self.header_raw = header
        self.names, self.notes = clean_headers(header)
        if with_extra:
            self.extra = dedupe("_extra", {n.casefold() for n in self.names})
        return self.names

    def batches(
        self, on_batch: Callable[[int, int], None] | None = None
    ) -> Iterator[list[list[str]]]:
        width = len(self.names)
        batch: list[list[str]] = []
        append = batch.append
        fix = self._fix
        while True:
            row = self._next()
            if row is None:
                break
            if len(row) != width:
                if not row:
                    self.blank_lines += 1
                    continue
                row = fix(row, width)
            append(row)
            if len(batch) >= BATCH:
                self.rows += len(batch)
                yield batch
                if on_batch:
                    on_batch(self.bytes_read, self.rows)
                batch = []
                append = batch.append
        if batch:
            self.rows += len(batch)
            yield batch
        if on_batch:
            on_batch(self.bytes_read, self.rows)

    def _next(self) -> list[str] | None:
        try:
            return next(self.reader)
        except StopIteration:
            return None
        except UnicodeDecodeError as exc:
            offset, line = locate_decode_error(self.path, self.text.encoding)
            raise ImportFailed(
                f"The file is not valid {self.text.encoding} on line {line} (byte {offset}: "
                f"{exc.reason}). Choose another encoding (for example cp1252) and try again."
            ) from None
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise ImportFailed(
                    f"A field on line {self.reader.line_num} is larger than the "
                    f"{FIELD_LIMIT // (1024 * 1024)} MiB limit for a single cell."
                ) from None
            raise ImportFailed(f"CSV error on line {self.reader.line_num}: {exc}.") from None

    def _fix(self, row: list[str], width: int) -> list[str]:
        self.ragged += 1
        if len(self.ragged_lines) < RAGGED_LINES_KEPT:
            self.ragged_lines.append(self.reader.line_num)
        if len(row) < width:
            return row + [""] * (width - len(row))
        self.long_rows += 1
        if self.extra is None:
            # Analysis pass: only the width matters here; the import adds the extra column.
            return row[:width]
        return [*row[:width], json.dumps(row[width:], ensure_ascii=False)]
