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
    _on_off,
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


# --- FRAME_ANCESTORS, hosts, switches: what people write, and what it would do ---


@pytest.mark.parametrize("value", ["self", "none", "SELF", "https://crm.example.com self"])
def test_an_unquoted_csp_keyword_is_refused_and_the_message_shows_how(value: str) -> None:
    """Unquoted, `self` is a host name to CSP: the header would block every embed."""
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"FRAME_ANCESTORS": value}, env_file=None)
    message = str(caught.value)
    keyword = "'none'" if "none" in value else "'self'"
    assert "must be quoted" in message and f'FRAME_ANCESTORS="{keyword}"' in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("'self'", "'self'"),
        ("'none'", "'none'"),
        ("'self'  https://crm.example.com:8443", "'self' https://crm.example.com:8443"),
        ("https: *.example.com", "https: *.example.com"),
        ("https://crm.example.com/embed/", "https://crm.example.com/embed/"),
    ],
)
def test_csp_sources_and_quoted_keywords_are_accepted(value: str, header: str) -> None:
    assert load_settings(environ={"FRAME_ANCESTORS": value}, env_file=None).frame_ancestors == header


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'unsafe-inline'", "not a CSP keyword"),
        ("'self", "not a CSP keyword"),
        ("'none' https://crm.example.com", "stands alone"),
        ("'self'; script-src *", "not a CSP source list"),
        ("   ", "not a CSP source list"),
    ],
)
def test_other_csp_mistakes_are_refused(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ={"FRAME_ANCESTORS": value}, env_file=None)


@pytest.mark.parametrize(
    ("name", "value", "port_setting"),
    [
        ("AMI_HOST", "pbx.example.com:5038", "AMI_PORT=5038"),
        ("AMI_HOST", "10.0.0.5:5038", "AMI_PORT=5038"),
        ("AMI_HOST", "[fd00::5]:5038", "AMI_PORT=5038"),
        ("HOST", "0.0.0.0:8000", "PORT=8000"),
    ],
)
def test_a_host_with_a_port_says_where_the_port_goes(name: str, value: str, port_setting: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={name: value}, env_file=None)
    assert f"put the port in {port_setting}" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("pbx.example.com", "pbx.example.com"),
        ("pbx-1", "pbx-1"),
        ("10.0.0.5", "10.0.0.5"),
        ("fd00::5", "fd00::5"),
        ("::1", "::1"),
        ("[fd00::5]", "fd00::5"),  # brackets, as in a URL, are dropped: asyncio takes it bare
    ],
)
def test_host_names_and_addresses_ipv6_included(value: str, host: str) -> None:
    assert load_settings(environ={"AMI_HOST": value}, env_file=None).ami_host == host


@pytest.mark.parametrize("value", ["tcp://pbx", "pbx/ami", "[10.0.0.5]", "[pbx]", "pbx:ami", "a" * 64])
def test_what_is_no_host_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="not a host name or address"):
        load_settings(environ={"AMI_HOST": value}, env_file=None)


SWITCHES = [setting.name for setting in SETTINGS if setting.parse is _on_off]


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize(
    ("value", "meaning"),
    [("on", True), ("OFF", False), ("yes", True), ("No", False), ("true", True), ("FALSE", False)]
    + [("1", True), ("0", False)],
)
def test_every_switch_takes_the_usual_words(name: str, value: str, meaning: bool) -> None:
    assert getattr(load_settings(environ={name: value}, env_file=None), name.lower()) is meaning


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", ["maybe", "2", "enabled", ""])
def test_a_switch_refuses_anything_else(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match="is not on or off"):
        load_settings(environ={name: value}, env_file=None)


def test_the_switches_are_the_ones_we_think() -> None:
    assert {"COLLECTOR", "SHOW_CALLER_NUMBERS"} <= set(SWITCHES)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AMI_PORT", "abc"),
        ("MEMCACHED_URL", "nonsense"),
        ("FRAME_ANCESTORS", "self"),
        ("AMI_HOST", "pbx:5038"),
    ],
)
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
