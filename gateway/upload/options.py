"""Turn what the user chose on the preview page (or sent to the API) into checked options.

The same function serves the form, the API's ``auto`` imports and the worker, so an option the
page would refuse is refused everywhere, before any byte is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.upload.columns import MAX_NAME, check_table_name, table_name_from_file
from gateway.upload.convert import CONVERSIONS
from gateway.upload.errors import ImportFailed

MODES = ("new", "append", "replace")
TRUE = ("1", "true", "on", "yes")


def resolve(form: Mapping[str, str], analysis: dict[str, Any], filename: str) -> dict[str, Any]:
    """Checked options: ``table``, ``mode``, ``pk``, ``empty_null``, a type per column and
    the conversions chosen (``type.<i>`` naming a conversion instead of a type)."""
    mode = (form.get("mode") or "new").strip().lower()
    if mode not in MODES:
        raise ImportFailed(f"Unknown mode {mode!r}: choose new, append or replace.")
    # No table field: named after the file (the API's default). A field left empty: refused.
    table = check_table_name(form["table"] if "table" in form else table_name_from_file(filename))
    columns = analysis["columns"]
    names = [c["name"] for c in columns]
    types: dict[str, str] = {}
    converts: dict[str, str] = {}
    for i, column in enumerate(columns):
        chosen = (form.get(f"type.{i}") or form.get(f"type.{column['name']}") or "").strip()
        if chosen.lower() in CONVERSIONS:
            # An explicit conversion: offered only if every value of the file converts.
            types[column["name"]] = _conversion(column, chosen.lower())
            converts[column["name"]] = chosen.lower()
            continue
        chosen = chosen.upper()
        if not chosen:
            chosen = column["type"]
        if chosen not in column["allowed"]:
            raise ImportFailed(
                f"Column {column['name']!r} cannot be {chosen}: it holds values such as "
                f"{column['example']!r}. It can be {' or '.join(column['allowed'])}."
            )
        types[column["name"]] = chosen
    rename, drop = _renames(form, columns, analysis.get("long_rows", 0) > 0)
    pk = (form.get("pk") or "").strip() or None
    if pk is not None:
        if pk not in names:
            raise ImportFailed(f"The primary key {pk!r} is not one of the columns.")
        if pk in drop:
            raise ImportFailed(f"The primary key {pk!r} is a column you chose to drop.")
        if mode == "append":
            raise ImportFailed("Appending keeps the existing table's primary key; leave it empty.")
        if columns[names.index(pk)].get("has_empty"):
            raise ImportFailed(f"The primary key {pk!r} has empty cells; choose another column.")
    return {
        "table": table,
        "mode": mode,
        "pk": pk,
        "empty_null": (form.get("empty_null") or "").strip().lower() in TRUE,
        "types": types,
        "rename": rename,
        "drop": drop,
        "convert": converts,
    }


def _conversion(column: dict[str, Any], name: str) -> str:
    """The type a chosen conversion gives the column; refused, naming the first value that
    does not convert, when it does not fit every value."""
    for offer in column.get("conversions", ()):
        if offer["name"] == name:
            return str(offer["type"])
    label = CONVERSIONS[name].label
    for refusal in column.get("not_converted", ()):
        if refusal["name"] == name:
            more = refusal["fails"] - 1
            raise ImportFailed(
                f"Column {column['name']!r} cannot be converted ({label}): row {refusal['row']}"
                f" holds {refusal['value']!r}"
                + (f" (and {more} more values do not convert)" if more else "")
                + ". Keep it as text, or fix the file and upload it again."
            )
    offered = ", ".join(o["name"] for o in column.get("conversions", ())) or "none"
    raise ImportFailed(
        f"Column {column['name']!r} cannot be converted ({label}): not every value has that "
        f"form, or nothing would change. Conversions that fit it: {offered}."
    )


def _renames(
    form: Mapping[str, str], columns: list[dict[str, Any]], extra: bool
) -> tuple[dict[str, str], list[str]]:
    """``name.<i>`` renames column i, ``drop.<i>`` leaves it out; the result must be valid."""
    rename: dict[str, str] = {}
    drop: list[str] = []
    final: set[str] = set()
    for i, column in enumerate(columns):
        name = column["name"]
        if (form.get(f"drop.{i}") or "").strip().lower() in TRUE:
            drop.append(name)
            continue
        wanted = " ".join((form.get(f"name.{i}") or name).split())
        if not wanted:
            raise ImportFailed(f"Column {i + 1} ({name!r}) needs a name, or choose to drop it.")
        if len(wanted) > MAX_NAME or "]" in wanted or any(ord(ch) < 32 for ch in wanted):
            raise ImportFailed(
                f"The column name {wanted[:40]!r} must be at most {MAX_NAME} characters, "
                "without ']' or control characters."
            )
        if wanted.casefold() in final or (extra and wanted.casefold().startswith("_extra")):
            raise ImportFailed(f"Two columns would be called {wanted!r}; rename one of them.")
        final.add(wanted.casefold())
        if wanted != name:
            rename[name] = wanted
    if len(drop) == len(columns):
        raise ImportFailed("Every column is dropped: keep at least one.")
    return rename, drop
