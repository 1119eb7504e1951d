"""Issue 19: every text encoding a journalist's tools produce imports correctly, and files that
are not text are refused with a message saying what they are.

The unit tests check detection on files written here; the gateway tests upload them through a
real gateway and read the values back through the team's real Datasette.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.upload import encodings
from gateway.upload.errors import ImportFailed
from tests.upload_support import Member, sign_in

# Realistic files: a header and a few rows of place names, as a newsroom would have them.
CITIES = {
    "ru": "город,округ,население\n" + "\n".join([
        "Москва,Центральный федеральный округ,12655050",
        "Санкт-Петербург,Северо-Западный федеральный округ,5384342",
        "Новосибирск,Сибирский федеральный округ,1633595",
        "Екатеринбург,Уральский федеральный округ,1544376",
        "Казань,Приволжский федеральный округ,1308660",
        "Нижний Новгород,Приволжский федеральный округ,1228199",
    ]),
    "el": "πόλη,περιφέρεια,πληθυσμός\n" + "\n".join([
        "Αθήνα,Αττική,664046", "Θεσσαλονίκη,Κεντρική Μακεδονία,325182",
        "Πάτρα,Δυτική Ελλάδα,167446", "Ηράκλειο,Κρήτη,144442", "Λάρισα,Θεσσαλία,144651",
        "Βόλος,Θεσσαλία,86046", "Ιωάννινα,Ήπειρος,65574", "Χανιά,Κρήτη,54559",
    ]),
    "zh": "城市,地区,人口\n" + "\n".join([
        "北京,华北,21540000", "上海,华东,24870000", "广州,华南,18680000",
        "深圳,华南,17560000", "成都,西南,20940000", "重庆,西南,32050000",
        "武汉,华中,13650000", "西安,西北,12950000",
    ]),
    "ja": "都市,地方,人口\n" + "\n".join([
        "東京,関東地方,13960000", "横浜,関東地方,3770000", "大阪,近畿地方,2750000",
        "名古屋,中部地方,2320000", "札幌,北海道地方,1970000", "福岡,九州地方,1610000",
        "神戸,近畿地方,1520000", "京都,近畿地方,1460000",
    ]),
    "ko": "도시,지역,인구\n" + "\n".join([
        "서울,수도권,9776000", "부산,영남,3429000", "인천,수도권,2947000",
        "대구,영남,2438000", "대전,충청,1475000", "광주,호남,1469000",
    ]),
    "fr": "nom,ville,population\n" + "\n".join([
        "René,Genève,203856", "François,Zürich,421878", "Zoë,Köln,1083498",
        "Gaëlle,Besançon,119198", "Jérôme,Nîmes,148561",
    ]),
}  # fmt: skip
LEGACY = [
    ("ru", "cp1251"), ("ru", "koi8-r"), ("el", "iso8859-7"), ("el", "cp1253"),
    ("zh", "gb18030"), ("ja", "shift_jis"), ("ja", "euc-jp"), ("ko", "euc-kr"), ("fr", "cp1252"),
]  # fmt: skip


def written(tmp_path: Path, data: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def unicode_text(rows: list[list[str]]) -> bytes:
    """What Excel's File > Save As > "Unicode Text" writes: UTF-16 LE, BOM, tabs, CRLF."""
    text = "\r\n".join("\t".join(row) for row in rows) + "\r\n"
    return b"\xff\xfe" + text.encode("utf-16-le")


def xlsx() -> bytes:
    """A minimal workbook with the entries of a real .xlsx (what Excel's files start with)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        z.writestr("xl/workbook.xml", '<?xml version="1.0"?><workbook/>')
        z.writestr("xl/worksheets/sheet1.xml", '<?xml version="1.0"?><worksheet/>')
    return out.getvalue()


@pytest.mark.parametrize(("lang", "encoding"), LEGACY)
def test_legacy_encodings_are_detected_so_the_text_round_trips(
    tmp_path: Path, lang: str, encoding: str
):
    text = CITIES[lang] + "\n"
    guess = encodings.detect(written(tmp_path, text.encode(encoding)))
    assert guess.how == "detected"
    # The name may differ (cp932 reads Shift-JIS, cp1253 reads these ISO-8859-7 letters):
    # what matters is that the file decodes to exactly the original text.
    assert text.encode(encoding).decode(guess.encoding) == text, guess
    assert not guess.low, guess


def test_bom_files_are_certain(tmp_path: Path):
    for data, expected in [
        (unicode_text([["a", "b"], ["Zoë", "1"]]), "utf-16"),
        (b"\xfe\xff" + "a\tb\r\n".encode("utf-16-be"), "utf-16"),
        (b"\xef\xbb\xbfa,b\n", "utf-8-sig"),
    ]:
        guess = encodings.detect(written(tmp_path, data))
        assert (guess.encoding, guess.confidence, guess.how) == (expected, 1.0, "bom")


def test_utf16_without_a_bom_is_recognised(tmp_path: Path):
    assert encodings.detect(written(tmp_path, "a,b\n1,2\n".encode("utf-16-le"))).encoding == (
        "utf-16-le"
    )


def test_ambiguous_single_byte_text_says_it_is_unsure(tmp_path: Path):
    polish = "miasto,ludność\nŁódź,672185\nKraków,779115\nGdańsk,470907\nWrocław,641607\n"
    guess = encodings.detect(written(tmp_path, polish.encode("iso8859-2")))
    if polish.encode("iso8859-2").decode(guess.encoding) != polish:
        assert guess.low and guess.alternatives, guess


def test_accents_far_into_a_large_file_are_judged_too(tmp_path: Path):
    # 2 MB of ASCII, then Cyrillic: the head alone would call it UTF-8 and fail later.
    data = b"id,name\n" + b"1,plain\n" * 250_000 + CITIES["ru"].encode("cp1251") + b"\n"
    guess = encodings.detect(written(tmp_path, data))
    assert guess.encoding == "cp1251", guess


@pytest.mark.parametrize(
    "name", ["cp1251", "KOI8-R", "iso-8859-7", "shift-jis", "GB18030", "big5", "latin_1"]
)
def test_any_python_text_encoding_is_accepted(name: str):
    assert encodings.check(name)


@pytest.mark.parametrize("name", ["klingon", "base64", "zlib", "rot13x", ""])
def test_unknown_and_non_text_encodings_are_refused(name: str):
    with pytest.raises(ImportFailed, match="Unknown encoding"):
        encodings.check(name)


@pytest.fixture
async def member(start_gateway, config: Config) -> Member:
    running = await start_gateway(config, teams=("alpha",))
    return await sign_in(running)


async def test_excel_unicode_text_imports(member: Member):
    rows = [["Name", "City", "Amount"], ["Zoë", "Köln", "12"], ["Москва", "東京", "7"]]
    job = await member.upload(unicode_text(rows), "Unicode Text.txt")
    assert job["state"] == "done", job
    assert job["analysis"]["encoding"] == "utf-16"
    assert job["analysis"]["delimiter_name"] == "tab"
    got = await member.rows(job["result"]["table_url"])
    assert [[r["Name"], r["City"], r["Amount"]] for r in got] == [
        ["Zoë", "Köln", 12],
        ["Москва", "東京", 7],
    ]
    # Choosing the encoding by hand works as well, big-endian included.
    big = b"\xfe\xff" + "a\tb\r\nΑθήνα\t1\r\n".encode("utf-16-be")  # noqa: RUF001
    job = await member.upload(big, "be.txt", encoding="utf-16")
    assert job["state"] == "done", job
    assert (await member.rows(job["result"]["table_url"]))[0]["a"] == "Αθήνα"


async def test_legacy_files_round_trip_into_datasette(member: Member):
    for lang, encoding in [
        ("ru", "cp1251"), ("ru", "koi8-r"), ("el", "iso8859-7"), ("ja", "shift_jis"),
        ("zh", "gb18030"), ("ko", "euc-kr"),
    ]:  # fmt: skip
        text = CITIES[lang] + "\n"
        job = await member.upload(text.encode(encoding), f"{lang}-{encoding}.csv")
        assert job["state"] == "done", job
        guess = job["analysis"]["encoding_guess"]
        assert guess["how"] == "detected" and guess["confidence"] >= 0.8, guess
        got = await member.rows(job["result"]["table_url"])
        header, *lines = [line.split(",") for line in CITIES[lang].splitlines()]
        assert [[str(r[h]) for h in header] for r in got] == lines, (lang, encoding)


async def test_any_encoding_can_be_chosen_and_unknown_ones_are_refused(member: Member):
    data = "город,n\nМосква,1\n".encode("koi8-u")  # noqa: RUF001
    job = await member.upload(data, "k.csv", encoding="KOI8-U")
    assert job["state"] == "done", job
    assert (await member.rows(job["result"]["table_url"]))[0]["город"] == "Москва"
    r = await member.post(b"a\n1\n", "x.csv", encoding="klingon")
    assert r.status_code == 400
    assert "Unknown encoding 'klingon'" in r.json()["detail"]


async def test_spreadsheets_and_binary_files_are_refused_with_their_names(member: Member):
    job = await member.upload(xlsx(), "budget.xlsx")
    assert job["state"] == "failed"
    assert "Excel workbook (.xlsx)" in job["error"] and "save it as CSV" in job["error"]
    # The same with an encoding chosen by hand.
    job = await member.upload(xlsx(), "budget.xlsx", encoding="utf-8")
    assert "Excel workbook (.xlsx)" in job["error"]
    xls = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)
    job = await member.upload(xls, "old.xls")
    assert "Excel 97-2003 workbook (.xls)" in job["error"]
    blob = bytes(range(256)) * 64
    job = await member.upload(blob, "blob.bin")
    assert job["state"] == "failed"
    assert "NUL byte at byte 0" in job["error"] and "not a text CSV file" in job["error"]


async def test_the_review_page_shows_the_guess_and_its_confidence(member: Member):
    r = await member.post(CITIES["ru"].encode("cp1251"), "ru.csv")
    job = await member.wait(r.json()["jobs"][0], ("ready",))
    async with member.browser() as c:
        page = (await c.get(job["page"])).text
    assert "encoding <strong>cp1251</strong>" in page
    assert "looks like Russian" in page and "% confidence" in page
    assert "Москва" in page  # the preview shows the decoded letters before anything is written
