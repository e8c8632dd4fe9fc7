"""The command line of `blf-panel`: its commands and options, and argparse in the CLI's language.

Built after `i18n.install_cli`: every help text and message goes through `_`, argparse's own
words too (`speak_argparse`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from app.i18n import N_, _, ngettext

# argparse's own words that reach our users. argparse looks each up through the `_` and
# `ngettext` it imported from gettext into its module (Python 3.11 to 3.13), its only hook for
# a translation: `speak_argparse` points them at ours. Marked here so that Babel extracts them.
ARGPARSE_WORDS = (
    N_("usage: "),
    N_("positional arguments"),
    N_("options"),
    N_("show this help message and exit"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("invalid %(type)s value: %(value)r"),
    N_("the following arguments are required: %s"),
    N_("expected one argument"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("ignored explicit argument %r"),
    N_("unrecognized arguments: %s"),
)


def speak_argparse() -> None:
    """argparse's own words (usage:, options, invalid choice: ...) from our catalog, in the
    language `i18n.install_cli` was given. Its two module-level names are the hook (see above)."""
    argparse._ = _  # type: ignore[attr-defined]
    argparse.ngettext = ngettext  # type: ignore[attr-defined]


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake shown against the command it was made in: that command's
    usage on one line, then one line saying what is wrong (exit 2)."""

    commands: argparse._SubParsersAction[_Parser] | None = None

    def add_subparsers(self, **kwargs: Any) -> argparse._SubParsersAction[_Parser]:
        self.commands = super().add_subparsers(**kwargs)
        return self.commands

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            # argparse hands a command's unknown options (`serve --prot`) up to the top-level
            # parser, which would show its own usage: show the command's instead.
            commands = self.commands
            chosen = commands.choices.get(getattr(parsed, commands.dest, "")) if commands else None
            (chosen or self).error(_("unrecognized arguments: %s") % " ".join(unknown))
        return parsed

    def error(self, message: str) -> NoReturn:
        usage = " ".join(self.format_usage().split())  # one line, whatever the terminal width
        error = _("%(prog)s: error: %(message)s") % {"prog": self.prog, "message": message}
        self.exit(2, f"{usage}\n{error}\n")


def _version() -> str:
    """The installed package's version (`blf-panel --version`)."""
    try:
        return importlib.metadata.version("blf-panel")
    except importlib.metadata.PackageNotFoundError:  # a source tree never installed
        return _("(not installed)")


def port_arg(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(_("%(value)r is not a TCP port") % {"value": value})
    return int(value)


Command = Callable[..., Any]


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    """The parser; `commands` maps each command's name to the function that runs it."""
    parser = _Parser(
        prog="blf-panel",
        description=_(
            "A live Busy Lamp Field panel for Asterisk: serve it, collect, watch, check, simulate."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"blf-panel {_version()}", help=_("show the version and exit")
    )
    chosen = parser.add_subparsers(required=True, metavar=_("COMMAND"), dest="subcommand")

    simulate = chosen.add_parser("simulate", help=_("run an AMI server that plays an Asterisk PBX"))
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=port_arg, default=5038)
    simulate.add_argument("--extensions", default="100-149", help=_("e.g. 100-149,200"))
    simulate.add_argument("--churn", type=float, default=0.0, help=_("random state changes per second"))
    simulate.add_argument("--username", help=_("AMI user (default: AMI_USERNAME)"))
    simulate.add_argument("--secret", help=_("AMI secret (default: AMI_SECRET)"))
    simulate.add_argument("--context", default="ext-local", help=_("dialplan context of the hints"))
    simulate.add_argument(
        "--names", metavar="FILE", help=_("CSV exten,name of caller IDs (default: generated)")
    )
    simulate.add_argument("--queues", action="store_true", help=_("the demo's queues even without --churn"))
    simulate.set_defaults(command=commands["simulate"])

    serve = chosen.add_parser(
        "serve", help=_("the web panel (uvicorn), with the collector unless COLLECTOR=off")
    )
    serve.add_argument("--host", help=_("listen address (default: HOST)"))
    serve.add_argument("--port", type=port_arg, help=_("listen port (default: PORT)"))
    serve.add_argument("--workers", type=int, help=_("worker processes (default: WORKERS)"))
    serve.add_argument("--root-path", help=_("path prefix behind a proxy (default: ROOT_PATH)"))
    serve.set_defaults(command=commands["serve"])

    collect = chosen.add_parser("collect", help=_("the collector alone: PBX to store, until stopped"))
    collect.set_defaults(command=commands["collect"])

    watch = chosen.add_parser("watch", help=_("print every extension and follow changes"))
    watch.add_argument("--once", action="store_true", help=_("print the table once and exit"))
    watch.add_argument("--json", action="store_true", help=_("JSON instead of a table"))
    watch.set_defaults(command=commands["watch"])

    check = chosen.add_parser("check", help=_("before going live: what the PBX and memcached give the panel"))
    check.add_argument("--wait", type=float, default=10.0, help=_("seconds to wait for events (default 10)"))
    check.set_defaults(command=commands["check"])

    user = chosen.add_parser("user", help=_("edit USERS_FILE: add, passwd, remove a user (AUTH=users)"))
    user.add_argument("action", choices=("add", "passwd", "remove"))
    user.add_argument("name", help=_("the user's sign-in name (letters, digits and ._@+-)"))
    user.add_argument("--role", choices=("viewer", "supervisor", "admin"), help=_("add: default viewer"))
    user.add_argument("--scope", help=_("what the user sees, e.g. 'firm=acme; group=sales' (add: default *)"))
    user.add_argument("--ext", help=_("the user's own extension (optional)"))
    user.set_defaults(command=commands["user"])

    embed_url = chosen.add_parser("embed-url", help=_("print a signed embed link (EMBED_SECRET) for testing"))
    embed_url.add_argument("--ext", default="", help=_("extensions, e.g. 101,102"))
    embed_url.add_argument("--group", default="", help=_("groups, e.g. sales,support"))
    embed_url.add_argument("--firm", default="", help=_("firms, e.g. acme"))
    embed_url.add_argument(
        "--numbers", choices=("on", "off"), default="on", help=_("outside callers' numbers")
    )
    embed_url.add_argument(
        "--ttl", default="8h", help=_("lifetime: 90s, 30m, 8h, 7d (default 8h, at most 30d)")
    )
    embed_url.add_argument("--base", help=_("the panel's URL (default: http://HOST:PORT/ROOT_PATH)"))
    embed_url.set_defaults(command=commands["embed-url"])
    return parser
