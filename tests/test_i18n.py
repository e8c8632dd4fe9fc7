"""Languages (app/i18n.py): which one a page and the CLI get, the catalogs and their plurals,
jinja2 with translations, the Russian catalog complete against the source, the .mo compiled
in memory when stale, and the CLI speaking Russian as a real process (watch, check, user,
embed-url) while its log lines stay English."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from jinja2 import DictLoader

from app import i18n
from app.capabilities import CAPABILITIES, action_finding, events_not_asked
from app.check import Row, render
from app.i18n import (
    LANGUAGES,
    cli_language,
    duration_words,
    environment_for,
    install_cli,
    load_catalog,
    negotiate,
    translations,
)
from app.said import shown
from app.scope import ScopeError, parse_scope
from app.settings import SettingsError, load_settings
from app.sim import Simulator
from app.sim.users import ManagerUser
from app.watch import STATE_WORDS
from tests.helpers import LogWatch

ROOT = Path(__file__).resolve().parent.parent
RU_PO = ROOT / "app" / "locale" / "ru" / "LC_MESSAGES" / "messages.po"
# The environment of a CLI run in a language: nothing of the test machine's locale leaks in.
NO_LOCALE = {"LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": "", "LANG": ""}


@pytest.fixture
def russian_cli() -> Iterator[None]:
    """The CLI's messages in Russian for one test, English again afterwards."""
    install_cli(translations("ru"))
    try:
        yield
    finally:
        install_cli(translations("en"))


# --- which language ---


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", "ru"),  # Chromium set to Russian
        ("en-US,en;q=0.9,ru;q=0.8", "en"),
        ("de-DE,de;q=0.9,ru;q=0.5,en;q=0.4", "ru"),  # the first we have, by q-value
        ("en;q=0.2, ru;q=0.8", "ru"),  # q-values, not the order, decide
        ("ru;q=0.5, en;q=0.5", "ru"),  # a tie: the earlier
        ("RU", "ru"),
        ("ru-Cyrl-RU", "ru"),
        ("fr, *;q=0.1", "en"),  # * is any: our first
        ("ru;q=0, *", "en"),  # refused, even through *
        ("en;q=0, *", "ru"),
        ("ru;q=0", "en"),
        ("de, fr", "en"),
        ("", "en"),
        (None, "en"),
        ("ru;q=2, en;q=abc, ru;q=0.5x", "en"),  # q above 1, not a number: not read
        ("ru_RU", "en"),  # a POSIX name is no language tag
        ("<script>, ru", "ru"),  # garbage skipped, the rest read
        (";;;,,,;q=", "en"),
        ("\x00ru", "en"),
        ("x" * 100_000 + ",ru", "en"),  # cut at 512 characters: ru is never reached
        ("de," * 40 + "ru", "en"),  # past 32 ranges
        ("de," * 20 + "ru", "ru"),
    ],
)
def test_negotiate_reads_accept_language_safely(header: str | None, language: str) -> None:
    assert negotiate(header, "") == language
    assert negotiate(header, "auto") == language


def test_the_language_setting_wins_over_the_browser() -> None:
    assert negotiate("ru-RU,ru;q=0.9", "en") == "en"
    assert negotiate("en-US", "ru") == "ru"
    assert negotiate(None, "ru") == "ru"


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("", ""),
        ("auto", ""),
        ("ru", "ru"),
        ("RU", "ru"),
        ("en", "en"),
        ("ru_RU:ru:en", "ru"),
        ("de:en", "en"),
    ],
)
def test_the_language_setting(value: str, parsed: str) -> None:
    assert load_settings({"LANGUAGE": value}, env_file=None).language == parsed


@pytest.mark.parametrize("value", ["russian", "de", "de_DE:de", "ru!", "x" * 300])
def test_a_bad_language_setting_names_it_and_the_languages(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LANGUAGE": value}, env_file=None)
    message = str(caught.value)
    assert message.startswith("LANGUAGE: ") and "en, ru" in message and len(message) < 200


@pytest.mark.parametrize(
    ("environ", "language"),
    [
        ({"LANGUAGE": "ru", "LANG": "en_US.UTF-8"}, "ru"),  # LANGUAGE wins
        ({"LANGUAGE": "ru_RU:ru:en"}, "ru"),
        ({"LANGUAGE": "nonsense!", "LANG": "ru_RU.UTF-8"}, "ru"),  # load_settings reports it
        ({"LANG": "ru_RU.UTF-8"}, "ru"),
        ({"LC_MESSAGES": "ru_RU.UTF-8", "LANG": "en_US.UTF-8"}, "ru"),
        ({"LC_ALL": "C.UTF-8", "LANG": "ru_RU.UTF-8"}, "en"),  # LC_ALL over LANG, as POSIX
        ({"LC_ALL": "", "LANG": "ru_RU@euro"}, "ru"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({"LANG": "POSIX"}, "en"),
        ({}, "en"),
    ],
)
def test_the_cli_language(environ: dict[str, str], language: str) -> None:
    assert cli_language(environ) == language


# --- plurals and durations ---

MINUTES = {1: "минута", 2: "минуты", 5: "минут", 11: "минут", 21: "минута", 22: "минуты", 25: "минут"}


@pytest.mark.parametrize(("count", "word"), MINUTES.items())
def test_russian_plurals(count: int, word: str) -> None:
    russian = translations("ru")
    assert russian.ngettext("%(num)s minute", "%(num)s minutes", count) % {"num": count} == f"{count} {word}"
    assert duration_words(count * 60 + 59, "ru") == f"{count} {word}"


def test_durations_in_words() -> None:
    assert duration_words(0, "en") == "0 seconds"
    assert duration_words(61, "en") == "1 minute"
    assert duration_words(3 * 3600, "en", ago=True) == "3 hours ago"
    assert duration_words(2 * 86_400, "ru") == "2 дня"
    assert duration_words(60, "ru", ago=True) == "1 минуту назад"  # accusative: its own message
    assert duration_words(5 * 60, "ru", ago=True) == "5 минут назад"
    assert duration_words(-5, "ru") == "0 секунд"
    assert duration_words(10_000 * 86_400, "ru") == "10\xa0000 дней"  # CLDR's grouping


def test_the_check_table_in_russian(russian_cli: None) -> None:
    rows = [Row("Ping", "ok"), Row("memcached", "missing", "x", "y", failing=True)]
    rows.append(Row("FullyBooted", "not seen"))
    lines = render(rows).splitlines()
    assert lines[0].split() == ["возможность", "состояние", "что", "теряется", "как", "исправить"]
    assert "в порядке" in lines[1] and "отсутствует" in lines[2] and "не замечено" in lines[3]
    assert lines[-1].startswith("1 нужная панели возможность отсутствует")
    assert "; 1 вид событий не замечен" in lines[-1]


# --- jinja2 ---

PAGE = (
    '<p title="{{ ngettext("%(num)s minute", "%(num)s minutes", n) }}">'
    "{% trans num=n %}{{ num }} minute{% pluralize %}{{ num }} minutes{% endtrans %}</p>"
    '<b>{{ _("%(value)r is not a number", value=name) }}</b>'
)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("ru", '<p title="22 минуты">22 минуты</p><b>{name} — не число</b>'),
        ("en", '<p title="22 minutes">22 minutes</p><b>{name} is not a number</b>'),
    ],
)
def test_templates_speak_the_language_and_keep_escaping(language: str, expected: str) -> None:
    env = environment_for(language, loader=DictLoader({"page.html": PAGE}))
    html = env.get_template("page.html").render(n=22, name='<img src=x onerror="alert(1)">')
    escaped = "&#39;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&#39;"
    assert html == expected.format(name=escaped)
    assert env.globals["language"] == language


def test_each_language_has_its_own_environment() -> None:
    russian, english = environment_for("ru"), environment_for("en")
    template = '{{ _("not used") }}'
    assert russian.from_string(template).render() == "не используется"
    assert english.from_string(template).render() == "not used"


# --- the catalog ---


def extracted_messages() -> dict[tuple[str | None, str], list[str]]:
    """(context, msgid) -> where it is used, over the source tree as babel.cfg maps it."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as file:
        method_map, options_map = parse_mapping_cfg(file)
    found: dict[tuple[str | None, str], list[str]] = {}
    for filename, line, message, _comments, context in extract_from_dir(ROOT, method_map, options_map):
        msgid = message if isinstance(message, str) else message[0]
        found.setdefault((context, msgid), []).append(f"{filename}:{line}")
    return found


def test_the_russian_catalog_is_complete() -> None:
    """Every text marked in app/**.py and the templates has a Russian translation, not fuzzy,
    every plural form filled, its placeholders those of the English."""
    with RU_PO.open("rb") as file:
        catalog = read_po(file, locale="ru")
    assert catalog.num_plurals == 3
    found = extracted_messages()
    assert len(found) > 100, "extraction found (almost) nothing: babel.cfg or the keywords broke"
    missing = []
    for (context, msgid), where in sorted(found.items(), key=lambda item: item[1][0]):
        entry = catalog.get(msgid, context=context)
        strings = [] if entry is None else [entry.string] if isinstance(entry.string, str) else entry.string
        if entry is None or entry.fuzzy or not strings or not all(strings):
            state = "missing" if entry is None else "fuzzy" if entry.fuzzy else "untranslated"
            missing.append(f"  {where[0]}: {state}: {msgid!r}")
    assert not missing, f"{len(missing)} text(s) without a Russian translation in {RU_PO}:\n" + "\n".join(
        missing
    )
    errors = [f"  {message.id!r}: {problems}" for message, problems in catalog.check()]
    assert not errors, "translations whose placeholders differ:\n" + "\n".join(errors)


def test_the_template_and_the_catalogs_are_listed() -> None:
    """The .mo files are built, not committed; the sources ship (pyproject's package-data)."""
    assert "app/locale/*/LC_MESSAGES/*.mo" in (ROOT / ".gitignore").read_text().splitlines()
    assert (ROOT / "app" / "locale" / "messages.pot").is_file()
    assert set(LANGUAGES) == {"en", "ru"}


# --- the .mo, compiled in memory when missing or stale ---


def write_catalog(po: Path, mo: Path | None, free: str) -> None:
    """A one-message ru catalog saying `free` for "ok" as .po, and as .mo when `mo` is given."""
    catalog = Catalog(locale="ru", domain="messages")
    catalog.add("ok", free)
    if mo is not None:
        with mo.open("wb") as file:
            write_mo(file, catalog)
    else:
        with po.open("wb") as file:
            write_po(file, catalog)


def test_a_missing_or_stale_mo_is_compiled_from_the_po(tmp_path: Path, logs: LogWatch) -> None:
    po, mo = tmp_path / "messages.po", tmp_path / "messages.mo"
    write_catalog(po, None, "свободен")
    catalog = load_catalog(po, mo, "ru")
    assert catalog is not None and catalog.gettext("ok") == "свободен"
    assert logs.count("compiled") == 1 and "no .mo" in logs.records[-1].getMessage()

    write_catalog(po, mo, "устарело")  # a .mo older than its .po: the .po was edited since
    os.utime(mo, (po.stat().st_mtime - 60,) * 2)
    catalog = load_catalog(po, mo, "ru")
    assert catalog is not None and catalog.gettext("ok") == "свободен"
    assert logs.count("compiled") == 2 and "older" in logs.records[-1].getMessage()

    os.utime(mo, (po.stat().st_mtime + 60,) * 2)  # a fresh .mo is what is read
    catalog = load_catalog(po, mo, "ru")
    assert catalog is not None and catalog.gettext("ok") == "устарело"
    assert logs.count("compiled") == 2

    po.unlink()
    mo.unlink()
    assert load_catalog(po, mo, "ru") is None


def test_the_shipped_catalog_loads_without_its_mo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout run without scripts/run: only the .po is there."""
    folder = tmp_path / "ru" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    shutil.copy2(RU_PO, folder / "messages.po")
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    translations.cache_clear()
    try:
        assert translations("ru").gettext("not used") == "не используется"
        assert not (folder / "messages.mo").exists(), "compiled in memory, nothing written"
    finally:
        translations.cache_clear()


def test_the_catalog_compiles_like_pybabel_does() -> None:
    """The .po reads and compiles with Babel (what scripts/venv.sh runs), header not fuzzy."""
    with RU_PO.open("rb") as file:
        catalog = read_po(file, locale="ru")
    assert not catalog.fuzzy
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    assert len(compiled.getvalue()) > 10_000


# --- the CLI, as a real process ---


def test_settings_errors_speak_the_cli_language(russian_cli: None) -> None:
    with pytest.raises(SettingsError, match=r"^AMI_PORT: 'abc' — не порт TCP \(1-65535\)$"):
        load_settings({"AMI_PORT": "abc"}, env_file=None)


@pytest.mark.parametrize(
    "environ",
    [{"LANGUAGE": "ru"}, {"LANG": "ru_RU.UTF-8"}, {"LANGUAGE": "ru_RU:ru:en", "LANG": "en_US.UTF-8"}],
)
def test_the_cli_prints_a_bad_setting_in_russian(blf, environ: dict[str, str]) -> None:
    process = blf("watch", "--once", env={**NO_LOCALE, **environ, "AMI_PORT": "abc"})
    out, err = process.proc.communicate(timeout=30)
    assert process.proc.returncode == 2 and out == ""
    assert err == "blf-panel: неверная настройка AMI_PORT: 'abc' — не порт TCP (1-65535)\n"


def test_the_cli_stays_english_when_asked(blf) -> None:
    process = blf(
        "watch", "--once", env={**NO_LOCALE, "LANGUAGE": "en", "LANG": "ru_RU.UTF-8", "AMI_PORT": "x"}
    )
    _, err = process.proc.communicate(timeout=30)
    assert process.proc.returncode == 2
    assert err == "blf-panel: bad setting AMI_PORT: 'x' is not a TCP port (1-65535)\n"


def test_a_bad_language_is_reported_in_the_locale_language(blf) -> None:
    process = blf("watch", "--once", env={**NO_LOCALE, "LANGUAGE": "klingon", "LANG": "ru_RU.UTF-8"})
    _, err = process.proc.communicate(timeout=30)
    assert process.proc.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("blf-panel: неверная настройка LANGUAGE: 'klingon' — не язык панели: en, ru")


def test_the_cli_help_and_argparse_errors_in_russian(blf) -> None:
    helped = blf("--help", env={**NO_LOCALE, "LANGUAGE": "ru"})
    out, _ = helped.proc.communicate(timeout=30)
    assert helped.proc.returncode == 0
    assert out.startswith("использование: blf-panel [-h] [--version] КОМАНДА ...")
    assert "показать эту справку и выйти" in out and "параметры:" in out
    assert "запустить сервер AMI, изображающий АТС Asterisk" in out

    wrong = blf("user", "frob", "anna", env={**NO_LOCALE, "LANGUAGE": "ru"})
    _, err = wrong.proc.communicate(timeout=30)
    assert wrong.proc.returncode == 2 and "Traceback" not in err
    assert err.splitlines()[1].startswith(
        "blf-panel user: ошибка: аргумент action: недопустимый вариант: 'frob'"
    )


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("MEMCACHED_URL", "bogus", "'bogus' — не адрес вида memcached://ХОСТ:ПОРТ"),
        (
            "STORE_PREFIX",
            "a b",
            "в префиксе ключей 'a b' допустимы только латинские буквы, цифры и _:.- (не больше 32)",
        ),
        ("METRICS_LISTEN", "nine", "'nine' — не ПОРТ и не ХОСТ:ПОРТ"),
    ],
)
def test_the_store_and_metrics_settings_speak_the_cli_language(
    russian_cli: None, name: str, value: str, said: str
) -> None:
    """Their checks live with the store (app.store.contract) and the metrics, not in settings."""
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value}, env_file=None)
    assert str(caught.value) == f"{name}: {said}"


def test_what_check_finds_is_logged_in_english_and_shown_translated(russian_cli: None) -> None:
    """One finding, two readers: the collector's log line stays English while the CLI speaks
    Russian; `blf-panel check` shows the same finding in Russian."""
    pjsip = next(c for c in CAPABILITIES if c.name == "PJSIPShowEndpoint")
    refused = action_finding(pjsip, {"Response": "Error", "Message": "Permission denied"}, "blf")
    assert refused.line() == (
        "names from the PBX's PJSIP endpoints (their caller ID) unavailable: PJSIPShowEndpoint "
        "refused for AMI user 'blf' (Permission denied); fix: add system to the `write =` line "
        "of [blf] in manager.conf (DIRECTORY_FILE can give the names instead)"
    )
    assert shown(refused.why) == "PJSIPShowEndpoint запрещено пользователю AMI 'blf' (Permission denied)"
    assert shown(refused.fix) == (
        "добавьте system в строку `write =` секции [blf] в manager.conf (имена может дать DIRECTORY_FILE)"
    )
    (unasked, *_rest) = events_not_asked("system")
    assert (
        shown(unasked.fix) == "задайте AMI_EVENTS=call,agent" and unasked.fix == "set AMI_EVENTS=call,agent"
    )


def test_a_scope_error_is_english_in_the_log_and_russian_in_the_cli(russian_cli: None) -> None:
    with pytest.raises(ScopeError) as caught:
        parse_scope("firm=acme; colour=red")
    assert (
        str(caught.value) == "unknown scope key 'colour' (firm, group, ext, numbers)"
    )  # the users file's log
    assert (
        caught.value.said.shown() == "неизвестный ключ области видимости 'colour' (firm, group, ext, numbers)"
    )


def test_a_refused_embed_link_is_told_in_the_browser_language() -> None:
    """The frame's sentences are tokens.py's (the one place), translated where they are sent."""
    from app.auth.identify import said
    from app.auth.tokens import EXPIRED, TokenRejected

    request = {"query_string": b"token=x", "headers": [(b"accept-language", b"ru-RU,ru;q=0.9")]}
    assert (
        said(request, "", TokenRejected("bad signature").message)
        == "Эта ссылка для встраивания недействительна."
    )
    assert said(request, "", EXPIRED).startswith("Срок действия этой ссылки для встраивания истёк")
    assert said(request, "en", EXPIRED) == "This embed link has expired: reload the page that shows it."


RUSSIAN_STATES = {translations("ru").gettext(word) for word in STATE_WORDS.values()}
# A cell of the watch table: the extension, its state word, the time it changed (or --:--:--).
WATCH_CELL = re.compile(r"\s*(\d+) (\S+(?: \S+)*?) +(\d\d:\d\d:\d\d|--:--:--)")


def test_watch_once_prints_a_russian_table(blf) -> None:
    env = {**NO_LOCALE, "LANGUAGE": "ru", "AMI_HOST": "", "MEMCACHED_URL": "", "DEMO_EXTENSIONS": "100-149"}
    watch = blf("watch", "--once", env=env)
    out, err = watch.proc.communicate(timeout=30)
    assert watch.proc.returncode == 0, err
    head, *rows = out.splitlines()
    assert re.fullmatch(r"АТС на связи с \S+ \| версия \d+ \| 50 номеров \| обновлено \S+", head), head
    cells = [cell for row in rows for cell in WATCH_CELL.findall(row)]
    assert [exten for exten, _state, _time in cells] == [str(n) for n in range(100, 150)]
    assert {state for _exten, state, _time in cells} <= RUSSIAN_STATES
    assert "свободен" in out and "idle" not in out


def test_user_add_with_a_bad_scope_says_so_in_russian(blf, tmp_path: Path) -> None:
    users = tmp_path / "users"
    env = {**NO_LOCALE, "LANGUAGE": "ru", "USERS_FILE": str(users), "AUTH": ""}
    process = blf("user", "add", "dora", "--scope", "firm=acme; colour=red", env=env)
    out, err = process.proc.communicate(timeout=30)
    assert process.proc.returncode == 2 and out == ""
    assert (
        err
        == "blf-panel: user add: неизвестный ключ области видимости 'colour' (firm, group, ext, numbers)\n"
    )
    assert not users.exists()


@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        ("8 hours", "'8 hours' — не срок вида 90s, 30m, 8h или 7d"),
        ("40d", "'40d': ссылка живёт от 1 с до 30 дней"),
    ],
)
def test_embed_url_with_a_bad_ttl_says_so_in_russian(blf, ttl: str, said: str) -> None:
    env = {**NO_LOCALE, "LANGUAGE": "ru", "EMBED_SECRET": "k" * 40}
    process = blf("embed-url", "--ext", "101", "--ttl", ttl, env=env)
    out, err = process.proc.communicate(timeout=30)
    assert process.proc.returncode == 2 and out == ""
    assert err == f"blf-panel: embed-url: {said}\n"


async def test_check_against_the_simulator_prints_russian_rows(blf) -> None:
    """The rows of app/capabilities.py in Russian: a user that may not run PJSIPShowEndpoint
    (optional: exit 0) and, with no wait, events not seen, each with its fix."""
    user = ManagerUser("blf", "blfsecret", read="call", write="reporting")
    async with Simulator([str(n) for n in range(100, 105)], users=[user]) as sim:
        env = {**NO_LOCALE, "LANGUAGE": "ru", "AMI_HOST": "127.0.0.1", "AMI_PORT": str(sim.port)}
        check = blf("check", "--wait", "0", env={**env, "AMI_SECRET": "blfsecret", "MEMCACHED_URL": ""})
        out, err = await asyncio.to_thread(check.proc.communicate, timeout=60)
    assert check.proc.returncode == 0, err
    lines = out.splitlines()
    rows = {line.split("  ")[0]: line for line in lines[1 : lines.index("")]}
    assert lines[0].split()[:2] == ["возможность", "состояние"]
    assert rows["Ping"].split()[1:] == ["в", "порядке"]
    assert (
        "отсутствует (необязательно)  имена из PJSIP-эндпоинтов АТС (их caller ID)"
        in rows["PJSIPShowEndpoint"]
    )
    assert rows["PJSIPShowEndpoint"].endswith(
        "добавьте system в строку `write =` секции [blf] в manager.conf (имена может дать DIRECTORY_FILE)"
    )
    assert rows["события каналов"].endswith("позвоните, пока идёт `blf-panel check --wait 60`")
    assert "не замечено" in rows["события присутствия"] and "memcached" in rows
    assert (
        "PJSIPShowEndpoint: PJSIPShowEndpoint запрещено пользователю AMI 'blf' (Permission denied)" in lines
    )
    assert "FullyBooted: ни одного после входа (приходит только пользователю с правом чтения system)" in lines
    assert lines[-1].startswith("всё, что нужно панели, работает; 7 видов событий не замечены")
    assert not re.search(r"\b(missing|not seen|add|while|none)\b", out), out
    assert "waiting up to 0s for events" in err  # the log line stays English
