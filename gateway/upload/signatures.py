"""Recognise files that are not delimited text by their first bytes, and say what to do.

A journalist's most common wrong upload is a spreadsheet: the message names it and says to save
it as CSV, instead of a remark about NUL bytes.
"""

from __future__ import annotations

from gateway.upload.errors import ImportFailed

SAVE_AS_CSV = (
    "Open it in Excel, LibreOffice or Google Sheets and save it as CSV "
    "(File > Save As > CSV UTF-8), then upload the CSV file."
)
ZIP = b"PK\x03\x04"
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy Office files: .xls, .doc
OTHERS = {
    b"%PDF-": "a PDF document",
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip-compressed file (uncompress it first)",
    b"SQLite format 3\x00": "an SQLite database",
    b"{\\rtf": "an RTF document",
}


def refuse_known_binary(sample: bytes) -> None:
    """Raise a clear ``ImportFailed`` when the sample starts like a known binary format."""
    if sample.startswith(ZIP):
        # Entry names are stored uncompressed in each local header: an .xlsx holds xl/...
        if b"xl/" in sample:
            raise ImportFailed(f"This is an Excel workbook (.xlsx), not a CSV file. {SAVE_AS_CSV}")
        if b"opendocument.spreadsheet" in sample[:200]:  # the uncompressed first entry
            raise ImportFailed(f"This is a spreadsheet (.ods), not a CSV file. {SAVE_AS_CSV}")
        raise ImportFailed(
            "This is a ZIP archive, not a CSV file. Unpack it and upload the CSV files inside."
        )
    if sample.startswith(OLE2):
        raise ImportFailed(
            f"This is an Excel 97-2003 workbook (.xls), not a CSV file. {SAVE_AS_CSV}"
        )
    for magic, what in OTHERS.items():
        if sample.startswith(magic):
            raise ImportFailed(f"This is {what}, not a CSV file.")
