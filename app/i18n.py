"""Languages: which one a viewer or a CLI user gets, its message catalog, and durations in words.

The panel speaks English and Russian (`LANGUAGES`). Every word a person reads comes from the
catalogs in app/locale, extracted by Babel from app/**.py and the templates (babel.cfg):
- pages: `environment_for(language, ...)`, a jinja2 environment with the i18n extension and
  that language's catalog; the language of a request is `negotiate(Accept-Language, LANGUAGE)`.
- the CLI: `_`, `ngettext` and `N_` here, speaking the catalog `install_cli` was given once at
  start (`cli_translations`: LANGUAGE, else the POSIX locale). Until then, and in every web
  process, they speak English.
Log lines stay in English on purpose: they are for the sysadmin's log search and bug reports,
read next to the PBX's and nginx's English logs, not for the operator at the panel.

The .mo files are built, not committed (scripts/venv.sh runs `pybabel compile` after the install
and whenever a .po is newer than its .mo). A missing or stale one (a checkout run without the
script, a .po edited since) is compiled from the .po in memory at first use, with one log line.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from babel import support
from babel.messages import mofile, pofile
from babel.numbers import format_decimal
from jinja2 import Environment, select_autoescape

log = logging.getLogger(__name__)

LANGUAGES: tuple[str, ...] = ("en", "ru")
DEFAULT_LANGUAGE = "en"  # the language of the source strings, and of every fallback here
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"

# Accept-Language is the browser's, i.e. anyone's text. Browsers send under 100 characters
# (Chromium with ten languages set: about 120); past 512 the rest is not read, nor past 32 ranges.
MAX_ACCEPT_LANGUAGE = 512
MAX_RANGES = 32
# One range of RFC 9110 §12.5.4: a language tag or *, and a q-value of at most 3 decimals.
_RANGE_RE = re.compile(
    r"\s*(\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)\s*(?:;\s*[qQ]\s*=\s*(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?))?\s*"
)
# A POSIX locale name (ru_RU.UTF-8, ru_RU@euro, C) or a language tag (ru-RU).
_LOCALE_RE = re.compile(
    r"([A-Za-z]{1,8})(?:[_-][A-Za-z0-9]{1,8})*(?:\.[A-Za-z0-9_-]{1,20})?(?:@[A-Za-z0-9]{1,20})?"
)


def language_of(name: str) -> str | None:
    """The panel's language for a language tag (ru-RU) or a POSIX locale (ru_RU.UTF-8; C and
    POSIX are English), or None: a language we do not have, or not a name at all."""
    name = name.strip()
    match = _LOCALE_RE.fullmatch(name)
    if match is None:
        return None
    language = match.group(1).lower()
    if language in ("c", "posix"):
        return DEFAULT_LANGUAGE
    return language if language in LANGUAGES else None


def negotiate(accept_language: str | None, configured: str = "") -> str:
    """The language of one page. `configured`, the LANGUAGE setting, wins when it names one of
    LANGUAGES; empty (or "auto") leaves it to the browser: the range of highest q-value we have
    (the earlier on a tie; ru-RU counts as ru, * as any, q=0 refuses), else English.
    A malformed range is skipped and an over-long header cut: never an error."""
    chosen = configured.strip().lower()
    if chosen in LANGUAGES:
        return chosen
    ranked: list[tuple[float, int, str]] = []
    refused: set[str] = set()
    ranges = (accept_language or "")[:MAX_ACCEPT_LANGUAGE].split(",")[:MAX_RANGES]
    for position, item in enumerate(ranges):
        match = _RANGE_RE.fullmatch(item)
        if match is None:
            continue
        tag = match.group(1).lower()
        language = "*" if tag == "*" else tag.split("-")[0]
        quality = float(match.group(2) or 1)
        if quality == 0:
            refused.add(language)
        elif language == "*" or language in LANGUAGES:
            ranked.append((-quality, position, language))
    for _quality, _position, language in sorted(ranked):
        if language == "*":
            return next((lang for lang in LANGUAGES if lang not in refused), DEFAULT_LANGUAGE)
        if language not in refused:
            return language
    return DEFAULT_LANGUAGE


# --- catalogs ---


@functools.cache
def translations(language: str) -> support.NullTranslations:
    """The catalog of `language` (one of LANGUAGES), loaded once per process. English, the
    language of the source strings, needs none (its plurals are gettext's own n != 1)."""
    if language not in LANGUAGES:
        raise ValueError(f"{language!r} is not one of {', '.join(LANGUAGES)}")
    folder = LOCALE_DIR / language / "LC_MESSAGES"
    catalog = load_catalog(folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo", language)
    if catalog is None and language != DEFAULT_LANGUAGE:
        log.warning("no message catalog for %s in %s: showing English", language, folder)
    return catalog or support.NullTranslations()


def load_catalog(po: Path, mo: Path, language: str) -> support.Translations | None:
    """The compiled .mo when it is at least as new as its .po; else the .po compiled in memory
    (fuzzy entries left out, as `pybabel compile` does); None when there is neither."""
    po_time = po.stat().st_mtime if po.is_file() else None
    if mo.is_file() and (po_time is None or mo.stat().st_mtime >= po_time):
        with mo.open("rb") as file:
            return support.Translations(file, domain=DOMAIN)
    if po_time is None:
        return None
    with po.open("rb") as file:
        catalog = pofile.read_po(file, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalog)
    compiled.seek(0)
    log.info(
        "compiled %s in memory (%s): run scripts/run, or pybabel compile -d app/locale",
        po,
        ("its .mo is older" if mo.is_file() else "no .mo"),
    )
    return support.Translations(compiled, domain=DOMAIN)


# --- pages ---


def environment_for(language: str, **options: Any) -> Environment:
    """A jinja2 Environment that speaks `language` (one of LANGUAGES): `options` are
    Environment's own (loader, trim_blocks, ...); autoescape is on unless they say otherwise.
    With the i18n extension and the newstyle gettext installed, templates write
    `{{ _("Free") }}`, `{{ ngettext("%(num)d minute", "%(num)d minutes", n) }}` and
    `{% trans count=n %}{{ count }} caller{% pluralize %}{{ count }} callers{% endtrans %}`;
    the translated text and its arguments are escaped like any other output.
    One environment per language: installing a catalog writes the environment's globals
    (`language` is one of them, for `<html lang>`)."""
    options.setdefault("autoescape", select_autoescape(default=True, default_for_string=True))
    extensions = [*options.pop("extensions", ()), "jinja2.ext.i18n"]
    env = Environment(extensions=extensions, **options)
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals["language"] = language
    return env


# The words of each unit of `duration_words`, plain and "ago": Russian puts the unit in another
# case there ("1 минута", "1 минуту назад"), so the two are messages of their own.
_DURATION_WORDS: dict[tuple[int, bool], Callable[[support.NullTranslations, int], str]] = {
    (86_400, False): lambda catalog, n: catalog.ngettext("%(num)s day", "%(num)s days", n),
    (86_400, True): lambda catalog, n: catalog.ngettext("%(num)s day ago", "%(num)s days ago", n),
    (3600, False): lambda catalog, n: catalog.ngettext("%(num)s hour", "%(num)s hours", n),
    (3600, True): lambda catalog, n: catalog.ngettext("%(num)s hour ago", "%(num)s hours ago", n),
    (60, False): lambda catalog, n: catalog.ngettext("%(num)s minute", "%(num)s minutes", n),
    (60, True): lambda catalog, n: catalog.ngettext("%(num)s minute ago", "%(num)s minutes ago", n),
    (1, False): lambda catalog, n: catalog.ngettext("%(num)s second", "%(num)s seconds", n),
    (1, True): lambda catalog, n: catalog.ngettext("%(num)s second ago", "%(num)s seconds ago", n),
}


def duration_words(seconds: float, language: str, *, ago: bool = False) -> str:
    """A duration in its largest whole unit, in words: "4 minutes", "1 hour" ("4 минуты",
    "1 час"), or with `ago` "4 minutes ago", for a title or a tooltip rendered on the server
    (a tile's live count is CSS's). The number is Babel's (CLDR) format, the words are the
    catalog's: its Plural-Forms choose among "минута", "минуты", "минут"."""
    whole = max(0, int(seconds))
    unit = next(size for size in (86_400, 3600, 60, 1) if whole >= size or size == 1)
    words = _DURATION_WORDS[unit, ago](translations(language), whole // unit)
    return words % {"num": format_decimal(whole // unit, locale=language)}


# --- the CLI ---

_cli: support.NullTranslations = support.NullTranslations()


def install_cli(catalog: support.NullTranslations) -> None:
    """The catalog `_` and `ngettext` speak from now on in this process (the CLI, once at start)."""
    global _cli
    _cli = catalog


def _(message: str) -> str:
    """A CLI message in the installed language (English until `install_cli`)."""
    return _cli.gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """The plural form of a CLI message for `count`, in the installed language."""
    return _cli.ngettext(singular, plural, count)


def N_(message: str) -> str:  # gettext's name, which Babel extracts by default
    """Marks text built at import time for extraction; it is translated where shown, with `_`."""
    return message


def cli_language(environ: Mapping[str, str]) -> str:
    """The CLI's language: LANGUAGE when it names one we have (GNU gettext's list form too:
    ru_RU:ru:en, its first we have), else the POSIX locale (the first set of LC_ALL,
    LC_MESSAGES, LANG), else English. Lenient: a bad LANGUAGE is for load_settings to report
    (in the language found here)."""
    for item in environ.get("LANGUAGE", "").split(":")[:MAX_RANGES]:
        if (language := language_of(item)) is not None:
            return language
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := environ.get(name, "").strip():
            return language_of(value) or DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def cli_translations(environ: Mapping[str, str]) -> support.NullTranslations:
    """The catalog of `cli_language(environ)`; `environ` is the settings' text (settings.env
    under the environment), which holds LANGUAGE, LC_ALL, LC_MESSAGES and LANG."""
    return translations(cli_language(environ))
