"""Names and groups for the tiles ("Anna (Sales)"), from the CSV file `DIRECTORY_FILE`:

    exten,name,group[,tenant]
    101,Anna Smith,Sales;Reception,acme
    102,"Smith, Bob",,acme

A header line, then one extension a line; several groups are separated by `;`. The
optional `tenant` column names the extension's firm; without it, TENANT_FROM_CONTEXT may
derive the firm from the hint's context (`from-internal-acme` -> acme). Blank lines
and lines starting with `#` are skipped; a UTF-8 BOM and CRLF are fine. A bad row is
reported (source and line number) and skipped; the other rows are kept.

Everything in the file is untrusted text. Names and groups are cleaned and capped here;
escaping them is the templates' job.
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from stat import S_ISREG
from types import MappingProxyType

from app.schema import MAX_GROUP, MAX_NAME, MAX_TENANT, clean_text
from app.states import EXTEN_RE

log = logging.getLogger(__name__)

HEADER = ["exten", "name", "group"]
HEADER_TENANT = [*HEADER, "tenant"]
MAX_FILE_BYTES = 4 * 1024 * 1024  # 5,000 extensions take about 250 KB
MAX_LOGGED_PROBLEMS = 50  # per change of the file; the rest are counted
_GROUP_RE = re.compile(r"[\w &'.-]+")  # \w: letters and digits of any script, and _
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NOT_SLUG = re.compile(r"[^a-z0-9_.\s-]")
_DASHES = re.compile(r"-{2,}")


_CACHED_SLUG = 4 * MAX_GROUP  # longer names (from URLs) are slugged but not kept


def group_slug(name: str) -> str:
    """The group's name in a URL (`?group=sales-marketing`): lowercase ASCII (accents
    dropped), spaces as `-`, only [a-z0-9-_.]. Also a firm's name (a tenant)."""
    # Only names a group can have are cached: 1,100 requests with 65 KB names kept
    # +190 MB per worker in the cache when every name was.
    return _cached_slug(name) if len(name) <= _CACHED_SLUG else _slug(name)


@lru_cache(maxsize=1024)
def _cached_slug(name: str) -> str:
    return _slug(name)


def _slug(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    words = _NOT_SLUG.sub("", text).split()
    return _DASHES.sub("-", "-".join(words)).strip("-")


@dataclass(frozen=True)
class Entry:
    exten: str
    name: str  # may be "": listed for its groups only
    groups: tuple[str, ...]
    tenant: str = ""  # the firm (a slug); "": none named here


@dataclass(frozen=True)
class Directory:
    entries: Mapping[str, Entry] = field(default_factory=lambda: MappingProxyType({}))
    tenant_pattern: re.Pattern[str] | None = None  # TENANT_FROM_CONTEXT

    def tenant(self, exten: str, context: str) -> str:
        """The extension's firm: the file's tenant column, else the first group of
        TENANT_FROM_CONTEXT matched on the whole context, else "" (no firm)."""
        entry = self.entries.get(exten)
        if entry is not None and entry.tenant:
            return entry.tenant
        return tenant_from_context(self.tenant_pattern, context)

    def name(self, exten: str) -> str | None:
        """The extension's name; None when it is not listed or listed without a name."""
        entry = self.entries.get(exten)
        return entry.name if entry is not None and entry.name else None

    def groups(self, exten: str) -> tuple[str, ...]:
        entry = self.entries.get(exten)
        return entry.groups if entry is not None else ()

    def all_groups(self) -> list[str]:
        return sorted(self._by_slug.values(), key=lambda group: (group.casefold(), group))

    def group_by_slug(self, slug: str) -> str | None:
        """The group a URL names; `Sales` and `sales` find the same one."""
        return self._by_slug.get(group_slug(slug))

    @cached_property
    def _by_slug(self) -> dict[str, str]:
        return {group_slug(g): g for entry in self.entries.values() for g in entry.groups}


def tenant_from_context(pattern: re.Pattern[str] | None, context: str) -> str:
    """The firm a context names (`from-internal-acme` -> acme with `from-internal-(.+)`)."""
    match = pattern.fullmatch(context) if pattern is not None else None
    return tenant_name(match.group(1) or "") if match else ""


def tenant_name(raw: str) -> str:
    """A firm's name as scopes and tiles know it: its slug (`ACME Ltd` -> acme-ltd)."""
    return group_slug(clean_text(raw, MAX_TENANT))[:MAX_TENANT]


def parse_directory(
    text: str, source: str = "directory", tenant_pattern: re.Pattern[str] | None = None
) -> tuple[Directory, list[str]]:
    """The directory in `text`, and one line for each problem found in it.

    Groups whose slugs are equal are one group, spelled as first seen ("Sales", "sales ").
    """
    entries: dict[str, Entry] = {}
    first_seen: dict[str, int] = {}  # exten -> line
    spellings: dict[str, str] = {}  # group slug -> group
    problems: list[str] = []
    header_line = 0
    columns = len(HEADER)
    for number, line in enumerate(_LINE_BREAK.split(text.removeprefix("\ufeff")), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source} line {number}"
        try:
            row = [value.strip() for value in next(csv.reader([line], strict=True, skipinitialspace=True))]
        except csv.Error as error:
            problems.append(f"{where}: not valid CSV ({error}); row skipped")
            continue
        if not header_line:
            if [value.lower() for value in row] not in (HEADER, HEADER_TENANT):
                problems.append(f"{where}: header must be exten,name,group (got {line[:60]!r}); file ignored")
                return Directory(tenant_pattern=tenant_pattern), problems
            columns = len(row)
            header_line = number
            continue
        if len(row) == 3 and columns == 4:
            row.append("")  # no firm named on this row
        if len(row) != columns:
            problems.append(
                f"{where}: {len(row)} columns, expected {columns} ({','.join(HEADER_TENANT[:columns])}; "
                "quote a name that holds a comma); row skipped"
            )
            continue
        exten, name, group_list = row[:3]
        tenant = tenant_name(row[3]) if columns == 4 else ""
        if columns == 4 and row[3] and not tenant:
            problems.append(f"{where}: tenant {row[3][:40]!r} needs a letter a-z or a digit; row skipped")
            continue
        if not EXTEN_RE.fullmatch(exten):
            problems.append(
                f"{where}: exten {exten[:40]!r} is not an extension (digits, letters, _+*#.-); row skipped"
            )
            continue
        if exten in first_seen:
            problems.append(
                f"{where}: duplicate extension {exten} (first on line {first_seen[exten]}); row skipped"
            )
            continue
        groups: list[str] = []
        for raw in group_list.split(";"):
            group = clean_text(raw, MAX_GROUP)
            if not group:
                continue  # "Sales;;Support", or no group at all
            slug = group_slug(group)
            if not _GROUP_RE.fullmatch(group):
                problems.append(
                    f"{where}: group {group!r} may hold only letters, digits, spaces and -_.&'; group dropped"
                )
            elif not re.search("[a-z0-9]", slug):
                problems.append(
                    f"{where}: group {group!r} needs a letter a-z or a digit for its URL; group dropped"
                )
            else:
                group = spellings.setdefault(slug, group)  # "sales" is the "Sales" seen before
                if group not in groups:
                    groups.append(group)
        entries[exten] = Entry(exten, clean_text(name, MAX_NAME), tuple(groups), tenant)
        first_seen[exten] = number
    if not header_line:
        problems.append(f"{source} line 1: header must be exten,name,group (got nothing); file ignored")
    return Directory(MappingProxyType(entries), tenant_pattern), problems


class DirectoryFile:
    """The file on disk, re-read when its mtime, size or inode changes (an editor that
    saves by renaming a new file over the old one changes the inode). A `load` that finds
    nothing changed costs one `stat`.

    A missing, unreadable or oversized file gives an *empty* directory (and one error line
    until the error changes), not the last good one: the panel then shows what the disk says
    now, so every worker and every restart agrees (a process started after the file went
    could not know the old names), and removing the file removes the names. Names are
    decoration: the lamps work without them.
    """

    def __init__(self, path: str | Path | None, tenant_from_context: str = "") -> None:
        self.path = Path(path) if path else None
        self.tenant_pattern = re.compile(tenant_from_context) if tenant_from_context else None
        self._directory = Directory(tenant_pattern=self.tenant_pattern)
        self._seen: object = None  # the stat signature read last, or the error logged last

    @property
    def directory(self) -> Directory:
        return self._directory

    def load(self) -> bool:
        """Re-read the file if it changed; True when the directory changed."""
        if self.path is None:  # firms may still come from the contexts: once, True
            first, self._seen = self._seen is None and self.tenant_pattern is not None, "no file"
            return first
        try:
            stat = self.path.stat()
            signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if signature == self._seen:
                return False
            if not S_ISREG(stat.st_mode):  # a FIFO would block the read
                return self._fail("not a regular file")
            if stat.st_size > MAX_FILE_BYTES:
                return self._fail(f"{stat.st_size} bytes, over the limit of {MAX_FILE_BYTES}")
            data = self.path.read_bytes()
        except OSError as error:
            return self._fail(error.strerror or str(error))
        try:
            text, problems = data.decode("utf-8-sig"), []
        except UnicodeDecodeError as error:  # a spreadsheet's "CSV" in Windows-1252, say
            text = data.decode("utf-8-sig", errors="replace")
            line = data[: error.start].count(b"\n") + 1
            problems = [
                f"{self.path} line {line}: not UTF-8 (save the file as UTF-8); bad bytes show as \ufffd"
            ]
        directory, more = parse_directory(text, str(self.path), self.tenant_pattern)
        problems += more
        self._seen = signature
        for problem in problems[:MAX_LOGGED_PROBLEMS]:
            log.warning("%s", problem)
        if len(problems) > MAX_LOGGED_PROBLEMS:
            log.warning("%s: %d more problems", self.path, len(problems) - MAX_LOGGED_PROBLEMS)
        log.info(
            "directory %s: %d extensions, %d groups",
            self.path,
            len(directory.entries),
            len(directory.all_groups()),
        )
        return self._replace(directory)

    def _fail(self, reason: str) -> bool:
        message = f"directory file {self.path}: {reason}; no names or groups shown"
        if message != self._seen:
            log.error("%s", message)
            self._seen = message
        return self._replace(Directory(tenant_pattern=self.tenant_pattern))

    def _replace(self, directory: Directory) -> bool:
        changed = directory != self._directory
        self._directory = directory
        return changed
