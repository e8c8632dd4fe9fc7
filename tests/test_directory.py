"""The directory file: names and groups for the tiles, every bad row named by its line."""

import logging
import os
from pathlib import Path
from typing import Any

import pytest

import app.directory
from app.directory import (
    MAX_GROUP,
    MAX_NAME,
    Directory,
    DirectoryFile,
    Entry,
    group_slug,
    parse_directory,
)

ROOT = Path(__file__).resolve().parent.parent
GOOD = """exten,name,group
101,Anna Smith,Sales
102,"Smith, Bob",Support
103,,Reception
104,Dan,
"""


def parse(text: str) -> tuple[Directory, list[str]]:
    return parse_directory(text, "directory.csv")


def test_a_good_file() -> None:
    directory, problems = parse(GOOD)
    assert problems == []
    assert directory.entries["101"] == Entry("101", "Anna Smith", ("Sales",))
    assert directory.name("101") == "Anna Smith"
    assert directory.name("102") == "Smith, Bob"
    assert directory.name("103") is None  # listed for its group only
    assert directory.groups("103") == ("Reception",)
    assert directory.name("104") == "Dan" and directory.groups("104") == ()
    assert directory.name("999") is None and directory.groups("999") == ()
    assert directory.all_groups() == ["Reception", "Sales", "Support"]


def test_the_example_in_docs_parses_without_problems() -> None:
    directory, problems = parse((ROOT / "docs" / "directory.example.csv").read_text(encoding="utf-8"))
    assert problems == []
    assert directory.groups("101") == ("Sales", "Reception")


def test_several_groups_keep_their_order_without_repeats() -> None:
    directory, problems = parse(
        "exten,name,group\n"
        "101,Anna,Sales;Reception; Sales ;;sales\n"
        "102,Bob,  reception ;R&D;O'Neil's team;first_floor.b-2\n"
    )
    assert problems == []
    assert directory.groups("101") == ("Sales", "Reception")
    # the same group spelled otherwise is the group as first seen
    assert directory.groups("102") == ("Reception", "R&D", "O'Neil's team", "first_floor.b-2")
    assert directory.all_groups() == ["first_floor.b-2", "O'Neil's team", "R&D", "Reception", "Sales"]


def test_bom_crlf_blank_lines_and_comments() -> None:
    text = "\ufeff# who is who\r\n\r\nexten,name,group\r\n  # a comment\r\n101,Anna,Sales\r\n\r\nab c,X,\r\n"
    directory, problems = parse(text)
    assert directory.name("101") == "Anna" and directory.groups("101") == ("Sales",)
    assert problems == [
        "directory.csv line 7: exten 'ab c' is not an extension (digits, letters, _+*#.-); row skipped"
    ]


def test_header_names_are_case_and_space_insensitive() -> None:
    directory, problems = parse("Exten, Name ,GROUP\n101,Anna,Sales\n")
    assert problems == [] and directory.name("101") == "Anna"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("ab c,X,Sales", "exten 'ab c' is not an extension (digits, letters, _+*#.-); row skipped"),
        (",X,Sales", "exten '' is not an extension (digits, letters, _+*#.-); row skipped"),
        (
            "101\x1b[2J,X,",
            "exten '101\\x1b[2J' is not an extension (digits, letters, _+*#.-); row skipped",
        ),
        (
            "105,Anna",
            "2 columns, expected 3 (exten,name,group; quote a name that holds a comma); row skipped",
        ),
        (
            "105,Smith, Bob,Sales",
            "4 columns, expected 3 (exten,name,group; quote a name that holds a comma); row skipped",
        ),
        ('105,"Anna,Sales', "not valid CSV (unexpected end of data); row skipped"),
    ],
)
def test_a_bad_row_is_named_and_skipped(row: str, message: str) -> None:
    text = f"exten,name,group\n101,Anna,Sales\n# comment\n{row}\n106,Eve,Support\n"
    directory, problems = parse(text)
    assert problems == [f"directory.csv line 4: {message}"]
    assert sorted(directory.entries) == ["101", "106"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ("Sales/EU", "group 'Sales/EU' may hold only letters, digits, spaces and -_.&'; group dropped"),
        ("<b>", "group '<b>' may hold only letters, digits, spaces and -_.&'; group dropped"),
        ("&", "group '&' needs a letter a-z or a digit for its URL; group dropped"),
        ("Продажи", "group 'Продажи' needs a letter a-z or a digit for its URL; group dropped"),
    ],
)
def test_a_bad_group_is_dropped_and_the_row_kept(groups: str, message: str) -> None:
    directory, problems = parse(f"exten,name,group\n101,Anna,Sales;{groups};Support\n")
    assert problems == [f"directory.csv line 2: {message}"]
    assert directory.groups("101") == ("Sales", "Support")


def test_a_duplicate_extension_keeps_the_first() -> None:
    text = "exten,name,group\n101,Anna,Sales\n102,Bob,\n\n101,Impostor,Admins\n"
    directory, problems = parse(text)
    assert problems == ["directory.csv line 5: duplicate extension 101 (first on line 2); row skipped"]
    assert directory.name("101") == "Anna"
    assert directory.all_groups() == ["Sales"]  # nothing from the skipped row


def test_several_problems_each_with_its_line() -> None:
    text = "exten,name,group\n101,Anna,Sales\nx y,A,\n102,B\n101,C,\n103,Dan,Bad/Group\n"
    directory, problems = parse(text)
    assert [p.split(":")[0] for p in problems] == [f"directory.csv line {n}" for n in (3, 4, 5, 6)]
    assert sorted(directory.entries) == ["101", "103"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ext,name\n101,Anna\n", "line 1: header must be exten,name,group (got 'ext,name'); file ignored"),
        ("101,Anna,Sales\n", "line 1: header must be exten,name,group (got '101,Anna,Sales'); file ignored"),
        (
            "# names\n\nexten,group,name\n101,Sales,Anna\n",
            "line 3: header must be exten,name,group (got 'exten,group,name'); file ignored",
        ),
        ("", "line 1: header must be exten,name,group (got nothing); file ignored"),
        ("# only a comment\n\n", "line 1: header must be exten,name,group (got nothing); file ignored"),
    ],
)
def test_a_bad_or_missing_header_gives_an_empty_directory(text: str, message: str) -> None:
    directory, problems = parse(text)
    assert directory == Directory() and directory.all_groups() == []
    assert problems == [f"directory.csv {message}"]


def test_hostile_names_are_cleaned_and_capped_but_not_escaped() -> None:
    long = "A" * 10_000
    text = (
        "exten,name,group\n"
        "101,<script>alert(1)</script>,Sales\n"
        f"102,{long},{'G' * 10_000}\n"
        '103,"Ann\x00a\x07 \x1b[31mRed\x1b[0m\t\tSmith\x85\u2028 \u202egnp.exe\u200b",\n'
        "104,\x01\x02\u00ad,\n"
        "105,👩\u200d💻 Zoë (ZWJ kept),\n"
    )
    directory, problems = parse(text)
    assert problems == []
    assert directory.name("101") == "<script>alert(1)</script>"  # escaping is the templates' job
    assert directory.name("102") == "A" * MAX_NAME
    assert directory.groups("102") == ("G" * MAX_GROUP,)
    assert directory.name("103") == "Anna [31mRed[0m Smith gnp.exe"
    assert directory.name("104") is None
    assert directory.name("105") == "👩\u200d💻 Zoë (ZWJ kept)"


def test_names_and_groups_are_nfc() -> None:
    directory, _ = parse("exten,name,group\n101,Zoe\u0308,Bu\u0308ro\n102,X,B\u00fcro\n")
    assert directory.name("101") == "Zo\u00eb"
    assert directory.groups("101") == directory.groups("102") == ("B\u00fcro",)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Sales", "sales"),
        ("Sales & Marketing", "sales-marketing"),
        ("R&D", "rd"),
        ("O'Neil's team", "oneils-team"),
        ("Büro Süd", "buro-sud"),
        ("first_floor.b-2", "first_floor.b-2"),
        ("  Help -- Desk ", "help-desk"),
        ("<script>", "script"),
        ("Продажи", ""),
    ],
)
def test_group_slug(name: str, slug: str) -> None:
    assert group_slug(name) == slug
    assert group_slug(slug) == slug


def test_group_by_slug() -> None:
    directory, _ = parse("exten,name,group\n101,Anna,Sales & Marketing;Büro\n")
    assert directory.group_by_slug("sales-marketing") == "Sales & Marketing"
    assert directory.group_by_slug("Sales & Marketing") == "Sales & Marketing"
    assert directory.group_by_slug("buro") == "Büro"
    assert directory.group_by_slug("support") is None
    assert directory.group_by_slug("") is None


def test_entries_are_read_only() -> None:
    directory, _ = parse(GOOD)
    with pytest.raises(TypeError):
        directory.entries["999"] = Entry("999", "X", ())  # type: ignore[index]


# --- the file on disk ---


def write(path: Path, text: str, mtime_ns: int | None = None) -> None:
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = app.directory.parse_directory

    def counting(text: str, source: str = "directory", pattern: Any = None) -> tuple[Directory, list[str]]:
        calls.append(source)
        return real(text, source, pattern)

    monkeypatch.setattr(app.directory, "parse_directory", counting)
    return calls


@pytest.mark.parametrize("path", [None, ""])
def test_no_file_is_an_empty_directory(path: str | None, caplog: pytest.LogCaptureFixture) -> None:
    directory_file = DirectoryFile(path)
    assert directory_file.load() is False
    assert directory_file.directory == Directory()
    assert caplog.records == []


def test_a_missing_file_is_one_error_and_an_empty_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nope.csv"
    directory_file = DirectoryFile(path)
    assert directory_file.load() is False  # empty before, empty now
    assert directory_file.directory == Directory()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"directory file {path}: No such file or directory; no names or groups shown"
    ]
    assert directory_file.load() is False
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # not again

    write(path, GOOD)  # it appears
    assert directory_file.load() is True
    assert directory_file.directory.name("101") == "Anna Smith"


def test_a_file_that_goes_away_empties_the_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "directory.csv"
    write(path, GOOD)
    directory_file = DirectoryFile(str(path))
    assert directory_file.load() is True
    path.unlink()
    assert directory_file.load() is True
    assert directory_file.directory == Directory()
    assert any(r.levelno == logging.ERROR and str(path) in r.getMessage() for r in caplog.records)


def test_a_directory_or_an_oversized_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert DirectoryFile(tmp_path).load() is False
    assert "not a regular file" in caplog.records[-1].getMessage()
    path = tmp_path / "directory.csv"
    write(path, GOOD)
    monkeypatch.setattr(app.directory, "MAX_FILE_BYTES", 20)
    directory_file = DirectoryFile(path)
    assert directory_file.load() is False and directory_file.directory == Directory()
    assert "over the limit of 20" in caplog.records[-1].getMessage()


def test_a_changed_mtime_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "directory.csv"
    write(path, GOOD, mtime_ns=1_700_000_000_000_000_000)
    parses = count_parses(monkeypatch)
    directory_file = DirectoryFile(path)
    assert directory_file.load() is True
    assert directory_file.directory.name("101") == "Anna Smith"

    # same size, same inode: only the mtime tells
    write(path, GOOD.replace("Anna", "Anne"), mtime_ns=1_700_000_001_000_000_000)
    assert directory_file.load() is True
    assert directory_file.directory.name("101") == "Anne Smith"
    assert len(parses) == 2

    # touched, or edited without changing what the panel shows: read, but no change
    write(path, GOOD.replace("Anna", "Anne") + "# a comment\n", mtime_ns=1_700_000_002_000_000_000)
    assert directory_file.load() is False
    assert len(parses) == 3


def test_a_file_replaced_by_rename_reloads(tmp_path: Path) -> None:
    path = tmp_path / "directory.csv"
    write(path, GOOD, mtime_ns=1_700_000_000_000_000_000)
    directory_file = DirectoryFile(path)
    directory_file.load()
    new = tmp_path / "directory.csv.new"
    write(new, GOOD.replace("Anna", "Anne"), mtime_ns=1_700_000_000_000_000_000)  # same mtime and size
    new.replace(path)
    assert directory_file.load() is True
    assert directory_file.directory.name("101") == "Anne Smith"


def test_an_unchanged_file_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "directory.csv"
    write(path, GOOD + "x y,Bad,\n")
    parses = count_parses(monkeypatch)
    directory_file = DirectoryFile(path)
    assert directory_file.load() is True
    before = directory_file.directory
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path} line 6: exten 'x y' is not an extension (digits, letters, _+*#.-); row skipped"
    ]
    for _ in range(3):
        assert directory_file.load() is False
    assert len(parses) == 1
    assert directory_file.directory is before
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # logged once

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert directory_file.load() is False  # read again, the same directory
    assert len(parses) == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # once per change


def test_problems_logged_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app.directory, "MAX_LOGGED_PROBLEMS", 3)
    path = tmp_path / "directory.csv"
    write(path, "exten,name,group\n" + "x y,,\n" * 10)
    DirectoryFile(path).load()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4 and warnings[-1] == f"{path}: 7 more problems"


def test_a_file_not_in_utf8_is_read_with_one_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "directory.csv"
    path.write_bytes("exten,name,group\n101,Anna,Sales\n102,Jörg Müller,Sales\n".encode("cp1252"))
    directory_file = DirectoryFile(path)
    assert directory_file.load() is True
    assert directory_file.directory.name("101") == "Anna"
    assert directory_file.directory.name("102") == "J\ufffdrg M\ufffdller"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{path} line 3: not UTF-8 (save the file as UTF-8); bad bytes show as \ufffd"]


def test_a_bom_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "directory.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    directory_file = DirectoryFile(path)
    assert directory_file.load() is True
    assert directory_file.directory.all_groups() == ["Reception", "Sales", "Support"]
