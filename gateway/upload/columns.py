"""Column names and column types, chosen so that an import never changes a value.

Types: a column is INTEGER only when *every* non-empty value is written exactly as Python
would write that integer (``str(int(v)) == v``: no leading zeros, no ``+``, no ``_``, no spaces)
and fits in 64 bits; REAL only when every value is a plain decimal whose value a double holds
exactly; anything else (``00601``, ``nan``, ``Infinity``, ``1_000``, ``1e5``, ``0x10``, `` 5``)
makes the column TEXT. Values are checked a whole batch at a time with one regular expression
over the joined column, so the common case runs at C speed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from decimal import Decimal, InvalidOperation

from gateway.upload.errors import ImportFailed

INTEGER, REAL, TEXT = "INTEGER", "REAL", "TEXT"
ORDER = (INTEGER, REAL, TEXT)
MAX_NAME = 100
INT64 = 2**63
EXACT_FLOAT_INT = 2**53

_INT = re.compile(r"0|-?[1-9][0-9]*")
_DEC = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
# Scientific notation only with a signed exponent ("5.3e-05", as Python, R, JavaScript and
# spreadsheets write it); a bare "1e5" or "2E7" is more likely a code, so it stays text.
_EXP = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[eE][+-][0-9]{1,3}")
# Joined-column fast paths: empty lines are empty cells.
_INT_LINES = re.compile(r"(?:(?:0|-?[1-9][0-9]{0,17})?\n)*")
_NUM_LINES = re.compile(r"(?:(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-][0-9]{1,3})?)?\n)*")
# Tokens the fast path cannot vouch for: long ones (a double keeps ~15 digits) and exponents.
_SUSPECT = re.compile(r"[^\n]{16,}|[^\n]*[eE][^\n]*")


def classify(value: str) -> str | None:
    """The narrowest type that holds ``value`` exactly; None for an empty cell."""
    if value == "":
        return None
    if _INT.fullmatch(value):
        number = int(value)
        if -INT64 <= number < INT64:
            return INTEGER
        return TEXT
    if (_DEC.fullmatch(value) or _EXP.fullmatch(value)) and exact_decimal(value):
        return REAL
    return TEXT


def exact_decimal(value: str) -> bool:
    """True when the double nearest ``value`` has the same decimal value (``12.50`` yes)."""
    digits = len(value) - value.count("-") - value.count(".")
    if digits <= 15 and "e" not in value and "E" not in value:
        return True  # DBL_DIG: up to 15 significant digits always survive a double
    try:
        number = float(value)
        if repr(number) == value:
            return True
        return math.isfinite(number) and Decimal(repr(number)) == Decimal(value)
    except (InvalidOperation, ValueError, OverflowError):
        return False


class TypeTracker:
    """Widens one column's type as batches of its values go by: INTEGER -> REAL -> TEXT."""

    def __init__(self) -> None:
        self.type = INTEGER
        self.seen = False  # any non-empty value at all; an all-empty column is TEXT
        self.big_int = False  # an integer a double cannot hold, so REAL is not an option
        self.example: str | None = None  # the first value that forced TEXT
        self.has_empty = False  # an empty cell: this column cannot be the primary key

    def add_batch(self, values: tuple[str, ...] | list[str]) -> None:
        if not self.has_empty and "" in values:
            self.has_empty = True
        if self.type == TEXT:
            return
        joined = "\n".join(values) + "\n"
        if not self.seen and len(joined) > len(values):
            self.seen = True
        if self.type == INTEGER and _INT_LINES.fullmatch(joined):
            if not self.big_int and _SUSPECT.search(joined):
                self.big_int = any(abs(int(v)) > EXACT_FLOAT_INT for v in values if v)
            return
        if self.type == REAL and _NUM_LINES.fullmatch(joined):
            for match in _SUSPECT.finditer(joined):
                self._widen(match.group())
            return
        for value in values:
            self._widen(value)
            if self.type == TEXT:
                return

    def _widen(self, value: str) -> None:
        kind = classify(value)
        if kind is None:
            return
        if kind == INTEGER and abs(int(value)) > EXACT_FLOAT_INT:
            self.big_int = True
            if self.type == REAL:
                kind = TEXT
        if kind == REAL and self.big_int:
            kind = TEXT
        if ORDER.index(kind) > ORDER.index(self.type):
            self.type = kind
            if kind == TEXT:
                self.example = value[:40]

    @property
    def detected(self) -> str:
        return self.type if self.seen else TEXT

    def allowed(self) -> list[str]:
        """Overrides may only widen: TEXT always holds the original, REAL holds integers."""
        detected = self.detected
        if detected == INTEGER:
            return [INTEGER, TEXT] if self.big_int else [INTEGER, REAL, TEXT]
        return list(ORDER[ORDER.index(detected) :])


# -- names ----------------------------------------------------------------------------------
def clean_name(raw: str) -> str:
    """A column name: control characters and runs of white space become single spaces."""
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in raw)
    # Datasette quotes names as [name], so a ']' inside one breaks every query it builds.
    return " ".join(text.replace("]", ")").split())[:MAX_NAME]


def clean_headers(raw: list[str]) -> tuple[list[str], list[str]]:
    """Unique, non-blank column names (SQLite compares names case-insensitively) + notes."""
    names: list[str] = []
    notes: list[str] = []
    taken: set[str] = set()
    for i, original in enumerate(raw, start=1):
        name = clean_name(original)
        if not name:
            name = f"column_{i}"
            notes.append(f"Column {i} has no header; it is named {name!r}.")
        elif name != original:
            notes.append(f"Header {original[:60]!r} was cleaned to {name!r}.")
        unique = dedupe(name, taken)
        if unique != name:
            notes.append(f"Header {name!r} (column {i}) repeats an earlier one; named {unique!r}.")
        taken.add(unique.casefold())
        names.append(unique)
    return names, notes


def dedupe(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate.casefold() in taken:
        candidate = f"{name[: MAX_NAME - 6]}_{n}"
        n += 1
    return candidate


def check_table_name(raw: str) -> str:
    """Refuse names SQLite or the gateway reserve, rather than silently changing them."""
    name = raw.strip()
    if not name:
        raise ImportFailed("Give the table a name.")
    if len(name) > MAX_NAME:
        raise ImportFailed(f"The table name is {len(name)} characters; at most {MAX_NAME}.")
    if any(unicodedata.category(ch)[0] == "C" for ch in name):
        raise ImportFailed("The table name must not contain control characters or newlines.")
    if "]" in name:
        raise ImportFailed("Datasette cannot show a table whose name contains ']'.")
    if name.lower().startswith("sqlite_"):
        raise ImportFailed("Table names starting with 'sqlite_' are reserved by SQLite.")
    if name.lower().startswith("_gateway_"):
        raise ImportFailed("Table names starting with '_gateway_' are reserved.")
    if name.lower().startswith("_litestream_"):
        raise ImportFailed("Table names starting with '_litestream_' are reserved for backups.")
    return name


def table_name_from_file(filename: str) -> str:
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0] if "." in filename else filename
    name = clean_name(stem).strip()
    if name.lower().startswith(("sqlite_", "_gateway_")):
        name = "t_" + name
    return name[:MAX_NAME] or "data"


def quote(name: str) -> str:
    """Quote an identifier for SQL; names reach SQL only through here."""
    if "\x00" in name:
        raise ImportFailed("Names cannot contain NUL characters.")
    return '"' + name.replace('"', '""') + '"'
