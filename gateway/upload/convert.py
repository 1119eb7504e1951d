"""Explicit conversions a journalist may choose on the review page: decimal commas, percent
signs, day-first or month-first dates.

Nothing here runs unless chosen. The analysis checks every conversion against every value of
the file and offers one only when each non-empty value converts and the result is an exact
number (or an ISO date); when a few values do not fit, the page names the first of them instead
of offering it. The import converts again and refuses, naming the row and value, if any value
does not convert (it cannot, for the same file), so a value is never lost or guessed.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.upload.columns import INTEGER, ORDER, REAL, TEXT, TypeTracker
from gateway.upload.errors import ImportFailed

# Thousands separators a decimal-comma number may use (consistently within one value): dot,
# space, no-break space, narrow no-break space (French), apostrophe (Swiss).
_COMMA_GROUP = r"[. \u00a0\u202f']"
_NUM_COMMA = rf"-?(?:0|[1-9][0-9]{{0,2}}(?:({_COMMA_GROUP})[0-9]{{3}})(?:\1[0-9]{{3}})*|[1-9][0-9]*)(?:,[0-9]+)?"  # noqa: E501
_NUM_POINT = r"-?(?:0|[1-9][0-9]{0,2}(?:,[0-9]{3})+|[1-9][0-9]*)(?:\.[0-9]+)?"
_PERCENT = r"[ \u00a0\u202f]?%"
_DATE = r"([0-9]{1,2})([./-])([0-9]{1,2})\2([0-9]{4})"


@dataclass(frozen=True)
class Conversion:
    name: str
    label: str  # what the option says, before its example
    pattern: re.Pattern[str]
    convert: Callable[[str], str]  # a value the pattern matched -> the value stored
    lines: re.Pattern[str]  # the pattern over a joined column (a fast path)
    changes: str  # for conversions of plain numbers: characters without which one is unchanged
    # ``convert`` over a whole joined column whose every line matched (one C-speed pass)
    convert_joined: Callable[[str], str] | None


_DROP_GROUPS = str.maketrans({ch: None for ch in ". \u00a0\u202f'"})


_PERCENT_TAIL = re.compile("[ \u00a0\u202f]?%\n")


def _joined_comma(joined: str) -> str:
    return _PERCENT_TAIL.sub("\n", joined).translate(_DROP_GROUPS).replace(",", ".")


def _joined_point(joined: str) -> str:
    return _PERCENT_TAIL.sub("\n", joined).replace(",", "")


def _number_comma(value: str) -> str:
    return value.rstrip("% \u00a0\u202f").translate(_DROP_GROUPS).replace(",", ".")


def _number_point(value: str) -> str:
    return value.rstrip("% \u00a0\u202f").replace(",", "")


def _date(day_first: bool) -> Callable[[str], str]:
    def convert(value: str) -> str:
        match = re.fullmatch(_DATE, value)
        if match is None:
            raise ValueError(value)
        a, _, b, year = match.groups()
        day, month = (int(a), int(b)) if day_first else (int(b), int(a))
        return datetime.date(int(year), month, day).isoformat()  # ValueError for 31.02.2024

    return convert


def _make(
    name: str,
    label: str,
    pattern: str,
    convert: Callable[[str], str],
    changes: str = "",
    convert_joined: Callable[[str], str] | None = None,
) -> Conversion:
    # The fast path needs no back-references across lines: a group is re-set on each line.
    lines = re.compile(rf"(?:(?:{pattern})?\n)*")
    return Conversion(name, label, re.compile(pattern), convert, lines, changes, convert_joined)


CONVERSIONS: dict[str, Conversion] = {
    c.name: c
    for c in (
        _make("decimal_comma", "number with a decimal comma", _NUM_COMMA, _number_comma,
              ",. \u00a0\u202f'eE", _joined_comma),
        _make("thousands_comma", "number with thousands commas", _NUM_POINT, _number_point, ",eE",
              _joined_point),
        _make(
            "percent_comma", "percent with a decimal comma → number", _NUM_COMMA + _PERCENT,
            _number_comma, "", _joined_comma,
        ),
        _make("percent", "percent → number", _NUM_POINT + _PERCENT, _number_point, "",
              _joined_point),
        _make("date_dmy", "date, day first → ISO", _DATE, _date(True)),
        _make("date_mdy", "date, month first → ISO", _DATE, _date(False)),
    )
}  # fmt: skip
# A conversion stops being tracked for a column once this many more values fail than fit.
GIVE_UP = 10


class ConversionTracker:
    """Follows one conversion over one column's batches during the analysis."""

    def __init__(self, conversion: Conversion) -> None:
        self.c = conversion
        self.alive = True
        self.fits = 0  # non-empty values that convert
        self.fails = 0
        self.first_fail: tuple[int, str] | None = None  # (data row, value)
        self.example: tuple[str, str] | None = None  # a value the conversion changes
        self.telling: tuple[str, str] | None = None  # one with a separator, when there is one
        self.types = TypeTracker()  # the type of the converted values

    def add_batch(
        self, values: tuple[str, ...] | list[str], first_row: int, column: TypeTracker
    ) -> None:
        """``column`` has seen this batch: while it is numeric, every value is a plain number."""
        if not self.alive:
            return
        c = self.c
        joined = "\n".join(values) + "\n"
        if c.changes and column.type != TEXT and not any(ch in joined for ch in c.changes):
            # Plain numbers without a separator convert to themselves: the column's own
            # tracker has checked them, so only its type is carried over (no second pass).
            self.fits += len(values) - values.count("")
            _merge(self.types, column)
            return
        if c.lines.fullmatch(joined):
            good = [v for v in values if v]
            converted = self._convert_all(good, first_row, values)
        else:
            good, converted, changed = [], [], False
            for i, value in enumerate(values):
                if not value:
                    continue
                out = self._one(value)
                if out is None:
                    self.fails += 1
                    if self.first_fail is None:
                        self.first_fail = (first_row + i, value[:40])
                    # Give up on a column that is mostly something else, or on one where the
                    # conversion has changed nothing yet (it cannot be offered any more, and
                    # a refusal of it would name no reason the user cares about).
                    if self.fails > self.fits + len(good) + GIVE_UP or (
                        self.fails > GIVE_UP and self.example is None and not changed
                    ):
                        self.alive = False
                        return
                    continue
                changed = changed or out != value
                good.append(value)
                converted.append(out)
        self.fits += len(good)
        if self.telling is None:
            # The example shown prefers a value with a separator: "1,234" tells a decimal
            # comma from a thousands comma, "45%" does not.
            for before, after in zip(good, converted, strict=True):
                if before != after:
                    self.example = self.example or (before[:40], after)
                    if "," in before or "." in before or c.name.startswith("date"):
                        self.example = self.telling = (before[:40], after)
                        break
        self.types.add_batch(converted)

    def _one(self, value: str) -> str | None:
        if not self.c.pattern.fullmatch(value):
            return None
        try:
            return self.c.convert(value)
        except ValueError:
            return None

    def _convert_all(
        self, good: list[str], first_row: int, values: tuple[str, ...] | list[str]
    ) -> list[str]:
        if self.c.name.startswith("date"):
            # Dates repeat: check each distinct value once against the calendar.
            seen: dict[str, str | None] = {v: self._one(v) for v in set(good)}
            if any(out is None for out in seen.values()):
                for i, value in enumerate(values):
                    if value and seen[value] is None:
                        self.fails += 1
                        if self.first_fail is None:
                            self.first_fail = (first_row + i, value[:40])
                self.alive = self.fails <= self.fits + len(good) + GIVE_UP
                good[:] = [v for v in good if seen[v] is not None]
            return [seen[v] for v in good]  # type: ignore[misc]
        if self.c.convert_joined is not None:
            out = self.c.convert_joined("\n".join(values) + "\n").split("\n")
            return [v for v in out[:-1] if v]  # every line matched: empty ones stay empty
        return [self.c.convert(v) for v in good]

    def result(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(an offer, a refusal worth showing): offered when every value converts, the
        conversion changes something and numbers stay exact; a refusal names the first
        value that does not fit when most values do."""
        c = self.c
        kind = self.types.detected
        numeric = not c.name.startswith("date")
        if self.example is None or self.fits == 0:
            return None, None
        if self.fails == 0:
            if numeric and kind == TEXT:
                return None, None  # too many digits to be exact: it stays text
            return {
                "name": c.name,
                "label": c.label,
                "type": kind if numeric else TEXT,
                "example": list(self.example),
            }, None
        if self.alive and self.first_fail is not None and self.fits >= self.fails:
            row, value = self.first_fail
            return None, {"name": c.name, "label": c.label, "fails": self.fails,
                          "row": row, "value": value}  # fmt: skip
        return None, None


def _merge(into: TypeTracker, column: TypeTracker) -> None:
    """Widen ``into`` as if it had seen the plain numbers ``column`` saw (INTEGER or REAL)."""
    into.seen = into.seen or column.seen
    if column.big_int:
        into.big_int = True
    kind = column.type
    if ORDER.index(kind) > ORDER.index(into.type):
        into.type = kind
    if into.big_int and into.type == REAL:
        into.type = TEXT  # as TypeTracker: a double cannot hold every integer seen


def trackers() -> list[ConversionTracker]:
    return [ConversionTracker(c) for c in CONVERSIONS.values()]


def summarise(column_trackers: list[ConversionTracker]) -> dict[str, list[dict[str, Any]]]:
    """The conversions offered for one column; when none is, the likeliest refusal."""
    offers, refused = [], []
    for t in column_trackers:
        offer, refusal = t.result()
        if offer:
            offers.append(offer)
        if refusal:
            refused.append(refusal)
    by_name = {o["name"]: o for o in offers}
    for comma, point in (("percent_comma", "percent"), ("decimal_comma", "thousands_comma")):
        # Both fit and agree on the telling example (no separator anywhere, e.g. "45%"):
        # offer one, not two options that do the same.
        if (
            comma in by_name
            and point in by_name
            and by_name[comma]
            == {**by_name[point], "name": comma, "label": by_name[comma]["label"]}
        ):
            offers.remove(by_name[comma])
    if offers:
        return {"conversions": offers, "not_converted": []}
    refused.sort(key=lambda r: r["fails"])
    return {"conversions": [], "not_converted": refused[:1]}


def converter(name: str, column: str) -> Callable[[str, int], str]:
    """The import's conversion of one cell; ``row`` is the data row, for the message."""
    c = CONVERSIONS[name]

    def convert(value: str, row: int) -> str:
        if value == "":
            return value
        out = None
        if c.pattern.fullmatch(value):
            try:
                out = c.convert(value)
            except ValueError:
                out = None
        if out is None:
            raise ImportFailed(
                f"Row {row}, column {column!r}: {value[:40]!r} is not a {c.label.split(' →')[0]};"
                " nothing was imported. Keep the column as text, or fix the file."
            )
        return out

    return convert


NUMERIC_RESULT = (INTEGER, REAL)
