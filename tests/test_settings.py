"""Settings: one table, `settings.env` in step with it, bad values named clearly."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import (
    MAX_EXTENSIONS,
    SETTINGS,
    SETTINGS_FILE,
    SettingsError,
    load_settings,
    parse_extension_range,
    read_env_file,
)

ROOT = Path(__file__).resolve().parent.parent


def test_settings_env_lists_every_setting_with_its_default() -> None:
    in_file = read_env_file(SETTINGS_FILE)
    assert in_file == {s.name: s.default for s in SETTINGS}
    text = SETTINGS_FILE.read_text()
    for setting in SETTINGS:  # each has a comment line right above it
        before = text.split(f"\n{setting.name}=")[0].rstrip().splitlines()[-1]
        assert before.startswith("# "), setting.name


def test_defaults_are_the_embedded_demo() -> None:
    settings = load_settings(environ={})
    assert settings.demo and settings.memcached_url == "" and settings.store_prefix == "blf:"
    assert settings.ami_port == 5038


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "settings.env"
    env_file.write_text("AMI_HOST=pbx.example.com\nAMI_PORT=15038\n")
    settings = load_settings(environ={"AMI_PORT": "25038"}, env_file=env_file)
    assert settings.ami_host == "pbx.example.com" and settings.ami_port == 25038
    assert not settings.demo


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AMI_PORT", "abc"),
        ("AMI_PORT", "70000"),
        ("MEMCACHED_URL", "127.0.0.1:11211"),
        ("MEMCACHED_URL", "memcached://host"),
        ("MEMCACHED_URL", "memcached://host:port"),
        ("MEMCACHED_URL", "redis://host:6379"),
        ("STORE_PREFIX", "blf prefix"),
        ("AMI_PING_INTERVAL", "0"),
        ("AMI_PING_TIMEOUT", "-1"),
        ("PUBLISH_WINDOW", "soon"),
        ("DEMO_EXTENSIONS", "100-abc"),
        ("LOG_LEVEL", "LOUD"),
        ("AMI_HOST", "pbx host"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={name: value}, env_file=None)
    assert caught.value.name == name and str(caught.value).startswith(f"{name}: ")


def test_good_memcached_url() -> None:
    settings = load_settings(environ={"MEMCACHED_URL": "memcached://127.0.0.1:11211"}, env_file=None)
    assert settings.memcached_url == "memcached://127.0.0.1:11211"


@pytest.mark.parametrize(("name", "value"), [("AMI_PORT", "abc"), ("MEMCACHED_URL", "nonsense")])
def test_cli_stops_with_one_line_and_exit_2(name: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "watch", "--once"],
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and name in result.stderr
    assert "Traceback" not in result.stderr


# --- extension ranges (DEMO_EXTENSIONS, `simulate --extensions`) ---


def test_parse_extension_range() -> None:
    assert parse_extension_range("100-104") == ["100", "101", "102", "103", "104"]
    assert parse_extension_range(" 100-101, 200 ,300-301") == ["100", "101", "200", "300", "301"]
    assert parse_extension_range("7") == ["7"]
    assert parse_extension_range("100-101,101") == ["100", "101"]
    assert parse_extension_range("008-010") == ["008", "009", "010"]
    assert len(parse_extension_range(f"1-{MAX_EXTENSIONS}")) == MAX_EXTENSIONS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no extensions"),
        ("abc", "not an extension"),
        ("100-", "not an extension"),
        ("100,,101", "not an extension"),
        ("1e3", "not an extension"),
        ("149-100", "backwards"),
        (f"1-{MAX_EXTENSIONS + 1}", "more than"),
        ("1-9999999999999", "more than"),
    ],
)
def test_parse_extension_range_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_extension_range(text)
