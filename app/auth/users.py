"""Users of AUTH=users: the users file (one line `name:argon2-hash:role:scope:extension`),
password hashing with argon2 and the edits of `blf-panel user`. Do not break: a password
is never logged or written anywhere but as its argon2 hash, and a wrong name costs the
same hash check as a wrong password (timing tells no names).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.auth.files import WatchedFile
from app.i18n import _
from app.scope import ALL, Scope, ScopeError, parse_scope
from app.states import EXTEN_RE

ROLES = ("viewer", "supervisor", "admin")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
HEADER = "# blf-panel users: name:argon2-hash:role:scope:extension (edit with `blf-panel user`)"
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" would only cost CPU

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (64 MiB, t=3): ~50 ms here
# Checked when the name is unknown, so that answer takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class User:
    """Who makes a request: `request.state.user`. `scope` is what they may see (ALL for
    admins); `extension` is their own phone, when the users file names one."""

    name: str
    role: str = "viewer"
    scope: Scope = ALL
    extension: str | None = None

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Account:
    user: User
    password_hash: str

    def stamp(self, secret_key: str) -> str:
        """Changes when the password does: a session carries it, so `passwd` ends sessions.
        A keyed digest: the cookie, readable by its holder, shows nothing of the hash."""
        digest = hmac.new(secret_key.encode(), self.password_hash.encode(), hashlib.sha256)
        return digest.hexdigest()[:24]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(account: Account | None, password: str) -> bool:
    """Whether `password` is `account`'s; with no account, a dummy check of the same cost."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return (
            _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
            and account is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def make_user(name: str, role: str, scope: Scope, extension: str | None) -> User:
    return User(name, role, ALL if role == "admin" else scope, extension)


def parse_users(text: str, source: str) -> tuple[Mapping[str, Account], list[str]]:
    """The users file: accounts by lower-cased name, and one problem line per bad line."""
    accounts: dict[str, Account] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            account = parse_line(line)
        except ValueError as error:
            problems.append(f"{source} line {number}: {error}; line skipped")
            continue
        key = account.user.name.lower()
        if key in accounts:
            problems.append(f"{source} line {number}: {account.user.name} listed twice; the first kept")
            continue
        accounts[key] = account
    return MappingProxyType(accounts), problems


def parse_line(line: str) -> Account:
    parts = line.strip().split(":")
    if len(parts) != 5:
        raise ValueError("expected name:hash:role:scope:extension (5 fields)")
    name, password_hash, role, scope_text, extension = (part.strip() for part in parts)
    if not NAME_RE.fullmatch(name):
        raise ValueError("the name must be letters, digits and ._@+- (up to 64)")
    if not password_hash.startswith("$argon2"):
        raise ValueError("the password is not an argon2 hash (set it with blf-panel user passwd)")
    if role not in ROLES:
        raise ValueError(f"role {role[:20]!r} is not one of {', '.join(ROLES)}")
    try:
        scope = parse_scope(scope_text)
    except ScopeError as error:
        raise ValueError(f"scope: {error}") from None
    if extension and not EXTEN_RE.fullmatch(extension):
        raise ValueError("the extension is not an extension number")
    return Account(make_user(name, role, scope, extension or None), password_hash)


class UsersFile(WatchedFile[Mapping[str, Account]]):
    def __init__(self, path: str | Path) -> None:
        super().__init__(path, parse_users, MappingProxyType({}))

    def account(self, name: str) -> Account | None:
        return self.current().get(name.lower())


# --- the edits of `blf-panel user` (the file is written whole, atomically, mode 0600) ---


def format_line(name: str, password_hash: str, role: str, scope_text: str, extension: str | None) -> str:
    return f"{name}:{password_hash}:{role}:{scope_text}:{extension or ''}"


def edit_users(path: Path, name: str, line: str | None, *, must_exist: bool | None) -> None:
    """Replace (or add, or with `line` None remove) `name`'s line; other lines stay as
    they are, comments too. `must_exist`: True for passwd/remove, False for add; LookupError
    in the CLI's language otherwise (`blf-panel user` prints it)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else [HEADER]
    index = next(
        (i for i, text in enumerate(lines) if text.split(":", 1)[0].strip().lower() == name.lower()),
        None,
    )
    if must_exist is True and index is None:
        raise LookupError(_no_user(name, path))
    if must_exist is False and index is not None:
        raise LookupError(
            _("%(name)s is already in %(path)s (blf-panel user passwd %(name)s changes the password)")
            % {"name": name, "path": path}
        )
    if index is None:
        lines.append(line or "")
    elif line is None:
        del lines[index]
    else:
        lines[index] = line
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.chmod(temporary, 0o600)  # hashes can be attacked offline: readable by the panel only
        os.replace(temporary, path)  # a reader sees the old file or the new one, never half
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


MIN_PASSWORD = 10  # characters: `blf-panel user add|passwd` refuses shorter ones


def user_fields(path: Path, name: str) -> list[str]:
    """The five fields of `name`'s line as written (its scope as the admin wrote it)."""
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = [part.strip() for part in line.split(":")]
            if len(parts) == 5 and parts[0].lower() == name.lower():
                return parts
    raise LookupError(_no_user(name, path))


def _no_user(name: str, path: Path) -> str:
    return _("no user %(name)s in %(path)s") % {"name": name, "path": path}
