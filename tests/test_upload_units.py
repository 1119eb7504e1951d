"""The upload without a server: type rules, names, sniffing, file ownership, what readers see."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from gateway.upload import encodings, importer, sniff
from gateway.upload.analyze import analyze
from gateway.upload.columns import (
    INTEGER,
    REAL,
    TEXT,
    TypeTracker,
    check_table_name,
    classify,
    clean_headers,
    quote,
)
from gateway.upload.errors import ImportFailed
from gateway.upload.options import resolve
from gateway.upload.receive import display_name


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("0", INTEGER), ("-12", INTEGER), ("9223372036854775807", INTEGER),
        ("9223372036854775808", TEXT), ("00601", TEXT), ("-0", TEXT), ("+5", TEXT),
        (" 5", TEXT), ("5 ", TEXT), ("1_000", TEXT), ("0x10", TEXT), ("1,000", TEXT),
        ("12.50", REAL), ("0.5", REAL), ("-3.25", REAL), (".5", TEXT), ("5.", TEXT),
        ("nan", TEXT), ("NaN", TEXT), ("inf", TEXT), ("Infinity", TEXT), ("-Infinity", TEXT),
        ("1e5", TEXT), ("2E7", TEXT), ("5.3e-05", REAL), ("1.5E+20", REAL), ("1e+400", TEXT),
        ("0.49543508709194095", REAL), ("0.1000000000000000055511151231257827", TEXT),
        ("", None),
    ],
)  # fmt: skip
def test_classify_counts_only_exact_numbers(value: str, kind: str | None):
    assert classify(value) == kind


@pytest.mark.parametrize(
    ("batches", "detected", "allowed"),
    [
        ([["1", "2", ""]], INTEGER, [INTEGER, REAL, TEXT]),
        ([["1", "2"], ["2.5"]], REAL, [REAL, TEXT]),
        ([["1"] * 5000, ["00601"]], TEXT, [TEXT]),
        ([["1", "9007199254740993"]], INTEGER, [INTEGER, TEXT]),  # a double would round it
        ([["1.5"], ["9007199254740993"]], TEXT, [TEXT]),
        ([["", ""]], TEXT, [TEXT]),
        ([["0.5", "5.3e-05"]], REAL, [REAL, TEXT]),
    ],
)
def test_tracker_widens_and_allows_only_lossless_overrides(batches, detected, allowed):
    tracker = TypeTracker()
    for batch in batches:
        tracker.add_batch(batch)
    assert (tracker.detected, tracker.allowed()) == (detected, allowed)


def test_headers_are_unique_and_readable():
    names, notes = clean_headers(["id", "ID", "", "a\nb", "x]", "id"])
    assert names == ["id", "ID_2", "column_3", "a b", "x)", "id_3"]
    assert len(notes) == 5


@pytest.mark.parametrize("name", ["", " ", "sqlite_x", "_gateway_x", "a\nb", "a]", "x" * 101])
def test_bad_table_names(name: str):
    with pytest.raises(ImportFailed):
        check_table_name(name)


def test_quote_escapes_double_quotes():
    conn = sqlite3.connect(":memory:")
    name = 'a"b; DROP TABLE t;--'
    conn.execute(f"CREATE TABLE {quote(name)} (x)")
    assert conn.execute("SELECT name FROM sqlite_master").fetchone()[0] == name


@pytest.mark.parametrize(
    ("sample", "encoding"),
    [
        (b"a,b\n1,2\n", "utf-8"),
        (b"\xef\xbb\xbfa,b\n", "utf-8-sig"),
        ("name,city\nRené,Zürich\nFrançois,Genève\n".encode("cp1252"), "cp1252"),
        ("a,b\n".encode("utf-16"), "utf-16"),
        ("a,b\n".encode("utf-16-be"), "utf-16-be"),
        ("a,b\n".encode("utf-32"), "utf-32"),
    ],
)
def test_guess_encoding(tmp_path: Path, sample: bytes, encoding: str):
    path = tmp_path / "f.csv"
    path.write_bytes(sample)
    assert encodings.detect(path).encoding == encoding


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [("a,b,c\n1,2,3\n", ","), ("a\tb\n1\t2\n", "\t"), ("a;b\n1,5;2\n", ";"), ("a|b\n1|2\n", "|")],
)
def test_guess_delimiter(text: str, delimiter: str):
    assert sniff.guess_delimiter(text) == delimiter


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("../../etc/passwd", "passwd"), ("..\\..\\x.csv", "x.csv"), (".hidden.csv", "hidden.csv"),
     ("a\x00b.csv", "ab.csv"), ("", "upload.csv"), ("..", "upload.csv")],
)  # fmt: skip
def test_display_name_is_never_a_path(raw: str, shown: str):
    assert display_name(raw) == shown


def test_wal_files_keep_the_database_owner(tmp_path: Path):
    # Runs as root (CI does, and so does the gateway that chowns docker volumes).
    db = tmp_path / "data.db"
    sqlite3.connect(db).close()
    os.chown(db, 10001, 10001)
    conn = importer.connect(db)
    conn.execute("CREATE TABLE t (x)")
    assert {os.stat(f"{db}{s}").st_uid for s in ("-wal", "-shm")} == {10001}
    conn.close()


@pytest.mark.parametrize("mode", ["new", "replace", "append"])
def test_readers_never_see_a_staging_table(tmp_path: Path, mode: str):
    # A Datasette that listed tables while one appeared and vanished between two of its
    # queries answered 500. After every statement the importer runs, a second connection
    # (Datasette's view of the file) must see either the old tables or the new, nothing else.
    db = tmp_path / "data.db"
    csv = tmp_path / "places.csv"
    csv.write_text("id,name\n" + "".join(f"{i},place {i}\n" for i in range(5000)))
    setup = importer.connect(db)
    setup.execute("CREATE TABLE places (id INTEGER, name TEXT)")
    setup.execute("INSERT INTO places VALUES (-1, 'old')")
    setup.close()
    analysis = analyze(csv)
    options = resolve({"mode": mode, "table": "places"}, analysis, "places.csv")
    reader = sqlite3.connect(db)
    seen: list[set[str]] = []

    def look(_sql: str) -> None:
        seen.append({r[0] for r in reader.execute("SELECT name FROM sqlite_master")})

    conn = importer.connect(db)
    conn.set_trace_callback(look)
    result = importer.run_import(
        conn, csv, analysis, options, "_gateway_staging_0123", job_id="0123"
    )
    conn.set_trace_callback(None)
    look("")
    conn.close()
    # The publication marker's table appears with the published rows (test_upload_publication).
    expected_final = {"places", "_gateway_imports"} | ({"places_2"} if mode == "new" else set())
    assert len(seen) > 3
    assert all(names in ({"places"}, expected_final) for names in seen), seen
    rows = reader.execute(f"SELECT count(*) FROM {quote(result['table'])}").fetchone()[0]
    assert rows == (5001 if mode == "append" else 5000)
    reader.close()
