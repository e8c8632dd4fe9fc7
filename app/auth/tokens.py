"""Signed embed links for CRMs: a JWT (HS256) minted by the CRM's server turned into a Scope,
and minted here for `blf-panel embed-url` and the tests. Pure: no I/O, the caller logs.
Do not break: a token never yields `ALL`; only HS256 with EMBED_SECRET (or the previous key).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import jwt

from app.directory import group_slug
from app.i18n import N_, _
from app.said import Said, shown
from app.schema import MAX_GROUP, MAX_NAME, clean_text
from app.scope import Scope
from app.settings import MIN_SECRET_KEY_BYTES
from app.states import EXTEN_RE

ALGORITHM = "HS256"
# 30 days: a link pasted into a CRM template for a month-long campaign still works; a link
# that leaks stops working within that month even if nobody rotates EMBED_SECRET.
MAX_LIFETIME = 30 * 24 * 3600
# Clocks of the CRM's server and the panel disagree by seconds under NTP, more without it.
LEEWAY = 30
# As many items per claim as an `?ext=` list may hold (app.main.MAX_VIEW_EXTENSIONS): 500
# extensions of 5 digits are about 4,000 bytes of JSON, 5,450 characters as a token; 6,000
# keeps `/events?token=...` inside nginx's 8 KB request line (large_client_header_buffers).
MAX_ITEMS = 500
MAX_TOKEN_LENGTH = 6000
SCOPE_CLAIMS = ("ext", "group", "firm")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# Algorithm names safe to repeat in a log line; anything else in the header is "unknown".
_KNOWN_ALGS = {"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"}
_KNOWN_ALGS |= {"ES512", "PS256", "PS384", "PS512", "EdDSA"}


class EmbedSettings(Protocol):
    embed_secret: str
    embed_secret_previous: str
    embed_audience: str


# What a refused embed frame says: English here, translated where it is sent (app.auth.identify).
NOT_VALID = N_("This embed link is not valid.")
EXPIRED = N_("This embed link has expired: reload the page that shows it.")


class TokenRejected(Exception):
    """The token gives no access. `reason`: one line for the log (English, no token content),
    Said where `blf-panel embed-url` shows it too (mint_token); `message`: the plain sentence
    for the frame."""

    def __init__(self, reason: str, message: str = NOT_VALID) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


def scope_from_token(token: str, settings: EmbedSettings) -> Scope:
    """What the bearer of `token` may see; TokenRejected when it gives no access."""
    if not settings.embed_secret:
        raise TokenRejected("embed links are off (EMBED_SECRET is empty)")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenRejected(f"token longer than {MAX_TOKEN_LENGTH} characters")
    if not _TOKEN_CHARS.fullmatch(token):
        raise TokenRejected("malformed token (not three base64url parts)")
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise TokenRejected("malformed token header") from None
    if alg != ALGORITHM:
        named = alg if isinstance(alg, str) and alg in _KNOWN_ALGS else "an unknown alg"
        raise TokenRejected(f"alg {named} refused: only {ALGORITHM}")
    claims = _verified_claims(token, settings)
    _check_lifetime(claims)
    return _scope_of(claims)


def _verified_claims(token: str, settings: EmbedSettings) -> dict[str, Any]:
    keys = [settings.embed_secret] + (
        [settings.embed_secret_previous] if settings.embed_secret_previous else []
    )
    for number, key in enumerate(keys):
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=settings.embed_audience or None,
                options={"require": ["exp"]},
                leeway=LEEWAY,
            )
        except jwt.InvalidSignatureError:
            if number == len(keys) - 1:
                raise TokenRejected("bad signature (tampered, or not signed with EMBED_SECRET)") from None
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", EXPIRED) from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected(f"no {error.claim} claim") from None
        except jwt.InvalidAudienceError:
            if settings.embed_audience:
                raise TokenRejected("wrong audience (aud is not EMBED_AUDIENCE)") from None
            raise TokenRejected("the token names an audience (aud) but EMBED_AUDIENCE is empty") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not valid yet (nbf or iat in the future)") from None
        except jwt.PyJWTError:
            raise TokenRejected("malformed token or claims") from None
    raise AssertionError("unreachable: the last key either decodes or raises")


def _check_lifetime(claims: Mapping[str, Any]) -> None:
    if claims["exp"] - time.time() > MAX_LIFETIME + LEEWAY:
        raise TokenRejected(f"exp more than {MAX_LIFETIME // 86400} days ahead")


def _scope_of(claims: Mapping[str, Any]) -> Scope:
    """The scope claims (`ext`, `group`, `firm`: a list of strings or one comma-separated
    string; `numbers`: true or false) as a Scope; at least one must name something."""
    found: dict[str, frozenset[str] | None] = {}
    for claim, field in (("ext", "extensions"), ("group", "groups"), ("firm", "firms")):
        items = _items(claim, claims.get(claim))
        found[field] = frozenset(items) if items else None
    if all(value is None for value in found.values()):
        raise TokenRejected(Said(N_("names no ext, group or firm (an embed link never sees everything)")))
    numbers = claims.get("numbers", True)
    if not isinstance(numbers, bool):
        raise TokenRejected(Said(N_("numbers must be true or false")))
    return Scope(show_numbers=numbers, **found)


def _items(claim: str, value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenRejected(Said(N_("%(claim)s must be a list of strings"), claim=claim))
    if len(value) > MAX_ITEMS:
        raise TokenRejected(Said(N_("%(claim)s lists more than %(most)d items"), claim=claim, most=MAX_ITEMS))
    items = [item.strip() for item in value if item.strip()]
    if claim == "ext":
        if not all(EXTEN_RE.fullmatch(item) for item in items):
            raise TokenRejected(Said(N_("ext holds something that is not an extension")))
        return items
    if claim == "group":  # matched by slug, as in `?group=` and the users file
        slugs = [group_slug(clean_text(item, MAX_GROUP)) for item in items]
        if not all(slugs):
            raise TokenRejected(Said(N_("group holds a name without letters or digits")))
        return slugs
    firms = [clean_text(item, MAX_NAME) for item in items]
    if firms != items:
        raise TokenRejected(
            Said(N_("firm holds a name that is not plain text of at most %(most)d characters"), most=MAX_NAME)
        )
    return firms


def mint_token(
    secret: str,
    *,
    ttl: float,
    extensions: Iterable[str] = (),
    groups: Iterable[str] = (),
    firms: Iterable[str] = (),
    show_numbers: bool = True,
    audience: str = "",
    now: float | None = None,
) -> str:
    """A token as a CRM mints one, valid for `ttl` seconds; ValueError on what
    `scope_from_token` would refuse (no scope, too long a lifetime, bad items, short key), in
    the CLI's language (`blf-panel embed-url` mints; English elsewhere)."""
    if len(secret.encode()) < MIN_SECRET_KEY_BYTES:
        raise ValueError(_("the secret must be %(least)d bytes or more") % {"least": MIN_SECRET_KEY_BYTES})
    if not 0 < ttl <= MAX_LIFETIME:
        raise ValueError(
            _("the lifetime must be above 0 and at most %(days)d days") % {"days": MAX_LIFETIME // 86400}
        )
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": issued, "exp": issued + int(ttl), "numbers": show_numbers}
    for claim, items in (("ext", extensions), ("group", groups), ("firm", firms)):
        if items := list(items):
            claims[claim] = items
    if audience:
        claims["aud"] = audience
    try:
        _scope_of(claims)  # the same checks as a CRM's token gets
    except TokenRejected as error:
        raise ValueError(shown(error.reason)) from None
    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(
            _("the token would be longer than %(most)d characters: name fewer items")
            % {"most": MAX_TOKEN_LENGTH}
        )
    return token


_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """`90s`, `30m`, `8h`, `7d` or plain seconds, as seconds (1 s to MAX_LIFETIME); ValueError
    in the CLI's language (`blf-panel embed-url --ttl`)."""
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*([smhd]?)\s*", text)
    if match is None:
        raise ValueError(_("%(text)r is not a duration like 90s, 30m, 8h or 7d") % {"text": text[:40]})
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_LIFETIME:
        raise ValueError(
            _("%(text)r: a link lives 1 s to %(days)d days")
            % {"text": text[:40], "days": MAX_LIFETIME // 86400}
        )
    return seconds
