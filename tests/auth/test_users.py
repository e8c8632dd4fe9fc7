"""The users file, argon2, `blf-panel user`, and the slow-down schedule (pure parts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.auth.throttle import MAX_DELAY, Throttle, delay_after
from app.auth.users import UsersFile, check_password, parse_users
from app.scope import ALL, parse_scope
from tests.conftest import ROOT


def test_the_users_file_gives_users_with_their_scope(users_file: Path) -> None:
    accounts = UsersFile(users_file)
    anna = accounts.account("Anna")  # names match in any case
    assert anna is not None and anna.user.role == "viewer" and anna.user.extension == "101"
    assert anna.user.scope == parse_scope("ext=101,102")
    boss = accounts.account("boss")
    assert boss is not None and boss.user.scope == ALL  # an admin sees all, whatever the line says
    assert check_password(anna, "anna-secret-password")
    assert not check_password(anna, "wrong")
    assert not check_password(None, "anna-secret-password")


def test_bad_lines_are_named_and_skipped() -> None:
    text = "\n".join(
        [
            "ok:$argon2id$x:viewer:*:",
            "short:line",
            "bad:$argon2id$x:king:*:",
            "nohash:plain:viewer:*:",
            "x:$argon2id$y:viewer:wat:",
        ]
    )
    accounts, problems = parse_users(text, "users")
    assert list(accounts) == ["ok"]
    assert [p.split(":")[0] for p in problems] == [
        "users line 2",
        "users line 3",
        "users line 4",
        "users line 5",
    ]
    assert "king" in problems[1] and "argon2" in problems[2] and "scope" in problems[3]


def test_the_file_is_read_again_when_it_changes(tmp_path: Path, users_text: str) -> None:
    path = tmp_path / "users"
    path.write_text(users_text)
    users = UsersFile(path)
    assert users.account("carl") is not None
    path.write_text("\n".join(line for line in users_text.splitlines() if not line.startswith("carl")))
    assert users.account("carl") is None
    path.unlink()
    assert users.account("anna") is None  # a missing file lets nobody in, not the last good one


def test_slow_down_schedule_and_what_it_leaves_an_attacker() -> None:
    assert [delay_after(n) for n in range(5)] == [0] * 5
    assert [delay_after(n) for n in range(5, 13)] == [1, 2, 4, 8, 16, 32, 60, 60]
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0])
    tried = 0
    while now[0] < 3600:  # one name, guessed as fast as the throttle lets it through
        wait = throttle.wait("user:anna", "addr:10.0.0.9")
        if wait > 0:
            now[0] += wait
            continue
        throttle.failed("user:anna", "addr:10.0.0.9")
        tried += 1
    # 5 free, 6 more by t=63 s (1+2+...+32), then one a minute: 69 in the first hour.
    assert tried == 5 + 6 + int((3600 - 63 - 1) // MAX_DELAY) == 69
    throttle.failed("user:anna", "addr:10.0.0.9")
    throttle.succeeded("user:anna")  # a right password clears the name, not the address
    assert throttle.wait("user:anna") == 0 and throttle.wait("addr:10.0.0.9") == MAX_DELAY


def _user(args: list[str], users: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "USERS_FILE": str(users), "AUTH": "", "LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "user", *args],
        input=stdin,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_command_adds_changes_and_removes(tmp_path: Path) -> None:
    users = tmp_path / "users"
    added = _user(
        ["add", "dora", "--role", "supervisor", "--scope", "firm=acme; group=sales", "--ext", "205"],
        users,
        "dora-password-1\n",
    )
    assert added.returncode == 0, added.stderr
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    assert "dora-password-1" not in users.read_text()
    account = UsersFile(users).account("dora")
    assert account is not None and check_password(account, "dora-password-1")
    assert account.user.scope == parse_scope("firm=acme; group=sales") and account.user.extension == "205"
    again = _user(["add", "dora"], users, "other-password-2\n")
    assert again.returncode == 2 and "already" in again.stderr
    changed = _user(["passwd", "dora"], users, "dora-password-2\n")
    assert changed.returncode == 0, changed.stderr
    account = UsersFile(users).account("dora")
    assert account is not None and check_password(account, "dora-password-2")
    assert account.user.role == "supervisor" and account.user.extension == "205"  # kept
    short = _user(["passwd", "dora"], users, "short\n")
    assert short.returncode == 2 and "at least 10" in short.stderr
    assert _user(["remove", "dora"], users, "").returncode == 0
    assert UsersFile(users).account("dora") is None
    assert _user(["remove", "dora"], users, "").returncode == 2
