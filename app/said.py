"""A sentence for a person, kept with its English text and values until it is shown: the log
says it in English, the CLI or a page in its reader's language. For text a room writes once
that reaches both, e.g. a scope written wrongly (the users file's log line, `blf-panel user
add --scope`), what `blf-panel check` finds (the collector's log, the check's table), an
action's outcome (the audit line, the actor's tile) or a malformed URL (the error page).
"""

from __future__ import annotations

from app.i18n import _, translations


class Said(str):
    """English text that can also say itself in the CLI's language, as markupsafe's Markup is
    a str that knows it is safe. `message` is English, marked N_ where written (Babel extracts
    it there), filled with `values`; a value that is itself Said is translated with it.
    Wherever a str goes (a log line, an exception, a comparison) it is the English; `shown()`
    is the CLI's language (the catalog `i18n.install_cli` was given; English until then)."""

    message: str
    values: dict[str, object]

    def __new__(cls, message: str, /, **values: object) -> Said:
        said = super().__new__(cls, message % values if values else message)
        said.message, said.values = message, values
        return said

    def in_(self, language: str) -> str:
        """In `language` (a page's, one of i18n.LANGUAGES): for a reader on the web."""
        if not self.message:
            return ""
        values = {name: v.in_(language) if isinstance(v, Said) else v for name, v in self.values.items()}
        text = translations(language).gettext(self.message)
        return text % values if values else text

    def shown(self) -> str:
        if not self.message:  # gettext("") is the catalog's header, not an empty sentence
            return ""
        values = {name: v.shown() if isinstance(v, Said) else v for name, v in self.values.items()}
        return _(self.message) % values if values else _(self.message)


def shown(text: str) -> str:
    """`text` in the CLI's language where it is Said; any other str as it is."""
    return text.shown() if isinstance(text, Said) else text
