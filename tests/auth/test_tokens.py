"""Signed embed links: what a token grants, every way one is refused (with a reason that
repeats nothing of the token), key rotation, and `blf-panel embed-url`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from app.auth.tokens import (
    MAX_ITEMS,
    MAX_LIFETIME,
    MAX_TOKEN_LENGTH,
    TokenRejected,
    mint_token,
    parse_ttl,
    scope_from_token,
)
from app.scope import Scope
from app.settings import Settings, SettingsError, load_settings

KEY = "k" * 40
OLD_KEY = "o" * 40
OTHER_KEY = "x" * 40


def settings(**environ: str) -> Settings:
    return load_settings(environ={"EMBED_SECRET": KEY, **environ}, env_file=None)


def signed(claims: dict, key: str = KEY, algorithm: str = "HS256", header: dict | None = None) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers=header)


def in_an_hour(**claims: object) -> dict:
    return {"exp": int(time.time()) + 3600, **claims}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def by_hand(header: dict, claims: dict, key: str | None = None) -> str:
    """A JWT assembled without PyJWT, as an attacker would: HS256 MAC with `key`, or no
    signature at all."""
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(signature)}"


def refused(token: str, config: Settings | None = None) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        scope_from_token(token, config or settings())
    error = caught.value
    # one line for the log, and nothing of the token in it (not even its claims' parts)
    assert "\n" not in error.reason and error.reason
    for part in token.split("."):
        if len(part) >= 8:
            assert part[:8] not in error.reason
    return error


# --- what a token grants ---


def test_a_valid_token_grants_exactly_its_claims() -> None:
    token = signed(in_an_hour(ext=["101", "102"], group=["Front desk"], firm=["acme"], numbers=False))
    assert scope_from_token(token, settings()) == Scope(
        firms=frozenset({"acme"}),
        groups=frozenset({"front-desk"}),  # a group by its slug, as in ?group=
        extensions=frozenset({"101", "102"}),
        show_numbers=False,
    )


def test_comma_separated_strings_work_and_numbers_default_to_shown() -> None:
    scope = scope_from_token(signed(in_an_hour(ext="101,102", firm="acme")), settings())
    assert scope == Scope(firms=frozenset({"acme"}), extensions=frozenset({"101", "102"}))
    assert scope.show_numbers and not scope.everything


def test_a_minted_token_verifies_and_carries_its_audience() -> None:
    config = settings(EMBED_AUDIENCE="blf-panel")
    token = mint_token(KEY, ttl=600, groups=["sales"], show_numbers=False, audience="blf-panel")
    assert scope_from_token(token, config) == Scope(groups=frozenset({"sales"}), show_numbers=False)
    claims = jwt.decode(token, KEY, algorithms=["HS256"], audience="blf-panel")
    assert claims["aud"] == "blf-panel" and 599 <= claims["exp"] - time.time() <= 600


# --- refused: time, signature, keys ---


def test_expired_token_is_refused_with_a_plain_message() -> None:
    error = refused(signed({"exp": int(time.time()) - 120, "ext": ["101"]}))
    assert error.reason == "expired"
    assert "expired" in error.message


def test_a_token_without_exp_is_refused() -> None:
    assert refused(signed({"ext": ["101"]})).reason == "no exp claim"


def test_exp_further_than_the_longest_lifetime_is_refused() -> None:
    far = int(time.time()) + MAX_LIFETIME + 3600
    assert "days ahead" in refused(signed({"exp": far, "ext": ["101"]})).reason
    near = int(time.time()) + MAX_LIFETIME - 60
    assert scope_from_token(signed({"exp": near, "ext": ["101"]}), settings()).extensions == {"101"}


def test_a_tampered_token_is_refused() -> None:
    token = signed(in_an_hour(ext=["101"]))
    head, _, signature = token.split(".")
    wider = b64(json.dumps(in_an_hour(ext=["101", "102", "103"])).encode())
    assert "bad signature" in refused(f"{head}.{wider}.{signature}").reason
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert "bad signature" in refused(f"{head}.{token.split('.')[1]}.{flipped}").reason


def test_a_token_signed_with_another_key_is_refused() -> None:
    assert "bad signature" in refused(signed(in_an_hour(ext=["101"]), key=OTHER_KEY)).reason


def test_the_previous_key_is_accepted_until_it_is_rotated_out() -> None:
    old_link = signed(in_an_hour(ext=["101"]), key=OLD_KEY)
    switching = settings(EMBED_SECRET=KEY, EMBED_SECRET_PREVIOUS=OLD_KEY)
    assert scope_from_token(old_link, switching).extensions == {"101"}
    assert scope_from_token(signed(in_an_hour(ext=["102"])), switching).extensions == {"102"}
    rotated = settings(EMBED_SECRET=OTHER_KEY, EMBED_SECRET_PREVIOUS=KEY)
    assert "bad signature" in refused(old_link, rotated).reason
    # and an expired link under the previous key says "expired", not "bad signature"
    expired_old = signed({"exp": int(time.time()) - 120, "ext": ["101"]}, key=OLD_KEY)
    assert refused(expired_old, switching).reason == "expired"


def test_embed_links_are_off_without_a_secret() -> None:
    token = signed(in_an_hour(ext=["101"]))
    assert "EMBED_SECRET is empty" in refused(token, settings(EMBED_SECRET="")).reason


# --- refused: audience ---


def test_audience_is_checked_when_embed_audience_is_set() -> None:
    config = settings(EMBED_AUDIENCE="blf-panel")
    assert "wrong audience" in refused(signed(in_an_hour(ext=["101"], aud="other-app")), config).reason
    assert refused(signed(in_an_hour(ext=["101"])), config).reason == "no aud claim"
    both = signed(in_an_hour(ext=["101"], aud=["crm", "blf-panel"]))
    assert scope_from_token(both, config).extensions == {"101"}


def test_a_token_naming_an_audience_is_refused_when_none_is_configured() -> None:
    assert "EMBED_AUDIENCE is empty" in refused(signed(in_an_hour(ext=["101"], aud="blf-panel"))).reason


# --- refused: algorithms ---


def test_alg_none_is_refused() -> None:
    claims = in_an_hour(ext=["101"])
    assert refused(by_hand({"alg": "none", "typ": "JWT"}, claims)).reason == "alg none refused: only HS256"
    # with a valid MAC under the key all the same: the header decides, and it is refused
    assert "alg none refused" in refused(by_hand({"alg": "none"}, claims, key=KEY)).reason
    assert "alg an unknown alg refused" in refused(by_hand({"alg": "NONE"}, claims)).reason


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with our 40 bytes
def test_other_algorithms_are_refused() -> None:
    claims = in_an_hour(ext=["101"])
    assert "alg HS512 refused" in refused(signed(claims, algorithm="HS512")).reason
    # RS256 with the shared secret as an HMAC key: the classic key-confusion attack
    assert "alg RS256 refused" in refused(by_hand({"alg": "RS256", "typ": "JWT"}, claims, key=KEY)).reason
    assert "unknown alg" in refused(by_hand({"alg": "<script>"}, claims, key=KEY)).reason
    assert "unknown alg" in refused(by_hand({"typ": "JWT"}, claims, key=KEY)).reason


# --- refused: shape and size ---


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "ey!.ey.sig", "eyJhbGciOiJIUzI1NiJ9.%20.x", "ñ.ñ.ñ", "a.b.c\n"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert "malformed" in refused(token).reason


def test_an_oversize_token_is_refused_before_it_is_decoded() -> None:
    padding = "x" * MAX_TOKEN_LENGTH
    token = signed(in_an_hour(ext=["101"], padding=padding))
    assert refused(token).reason == f"token longer than {MAX_TOKEN_LENGTH} characters"


def test_oversize_claims_are_refused() -> None:
    many = [str(n) for n in range(1000, 1000 + MAX_ITEMS + 1)]
    # short enough a token: the claim's own bound refuses it
    assert refused(signed(in_an_hour(group=["g"] * (MAX_ITEMS + 1)))).reason == (
        f"group lists more than {MAX_ITEMS} items"
    )
    with pytest.raises(ValueError, match="items|characters"):
        mint_token(KEY, ttl=60, extensions=many)
    assert scope_from_token(signed(in_an_hour(ext=many[:MAX_ITEMS])), settings()).extensions == set(
        many[:MAX_ITEMS]
    )


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, "names no ext, group or firm"),
        ({"ext": [], "group": [], "firm": ""}, "names no ext, group or firm"),
        ({"ext": " , "}, "names no ext, group or firm"),
        ({"sub": "admin", "role": "admin"}, "names no ext, group or firm"),
        ({"ext": [101, 102]}, "ext must be a list of strings"),
        ({"ext": {"101": True}}, "ext must be a list of strings"),
        ({"ext": ["101", "<script>"]}, "ext holds something that is not an extension"),
        ({"group": ["!!!"]}, "group holds a name without letters or digits"),
        ({"firm": ["acme\u202e"]}, "firm holds a name that is not plain text"),
        ({"ext": ["101"], "numbers": "off"}, "numbers must be true or false"),
    ],
)
def test_claims_that_grant_nothing_or_are_wrong_are_refused(claims: dict, reason: str) -> None:
    assert reason in refused(signed(in_an_hour(**claims))).reason


def test_mint_refuses_what_a_panel_would_refuse() -> None:
    with pytest.raises(ValueError, match="names no ext"):
        mint_token(KEY, ttl=60)
    with pytest.raises(ValueError, match="30 days"):
        mint_token(KEY, ttl=MAX_LIFETIME + 1, extensions=["101"])
    with pytest.raises(ValueError, match="32 bytes"):
        mint_token("short", ttl=60, extensions=["101"])


# --- settings and the command line ---


def test_a_short_secret_is_a_bad_setting_that_does_not_show_it() -> None:
    for name in ("EMBED_SECRET", "EMBED_SECRET_PREVIOUS"):
        with pytest.raises(SettingsError) as caught:
            load_settings(environ={name: "hunter2-hunter2"}, env_file=None)
        assert caught.value.name == name and "hunter2" not in str(caught.value)
    with pytest.raises(SettingsError, match="EMBED_AUDIENCE"):
        load_settings(environ={"EMBED_AUDIENCE": "two words"}, env_file=None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("8h", 28800), ("7d", 604800), ("45", 45)]
)
def test_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0", "31d", "8 hours", "-1h", "1.5h", ""])
def test_bad_ttl(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_embed_url_prints_a_url_whose_token_verifies(blf) -> None:
    env = {"EMBED_SECRET": KEY, "EMBED_AUDIENCE": "crm-test"}
    process = blf(
        "embed-url",
        "--ext",
        "101,102",
        "--numbers",
        "off",
        "--ttl",
        "8h",
        "--base",
        "https://pbx.example/blf/",
        env=env,
    )
    assert process.proc.wait(20) == 0, process.proc.stderr.read()
    url = process.proc.stdout.read().strip()
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "pbx.example", "/blf/embed")
    (token,) = parse_qs(parts.query)["token"]
    config = settings(EMBED_AUDIENCE="crm-test")
    assert scope_from_token(token, config) == Scope(extensions=frozenset({"101", "102"}), show_numbers=False)
    lifetime = jwt.decode(token, KEY, algorithms=["HS256"], audience="crm-test")["exp"] - time.time()
    assert 8 * 3600 - 60 < lifetime <= 8 * 3600


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--ext", "101"], {"EMBED_SECRET": ""}, "needs EMBED_SECRET"),
        (["--ttl", "8h"], {"EMBED_SECRET": KEY}, "name what the link shows"),
        (["--ext", "101", "--ttl", "40d"], {"EMBED_SECRET": KEY}, "30 days"),
        (["--ext", "101", "--base", "ftp://x"], {"EMBED_SECRET": KEY}, "not an http:// or https:// URL"),
    ],
)
def test_embed_url_mistakes_are_one_line_and_exit_2(
    blf, args: list[str], env: dict[str, str], says: str
) -> None:
    process = blf("embed-url", *args, env=env)
    assert process.proc.wait(20) == 2
    stderr = process.proc.stderr.read()
    assert says in stderr and stderr.count("\n") == 1 and process.proc.stdout.read() == ""


def test_the_readme_python_example_mints_a_token_the_panel_accepts(monkeypatch) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Embedding in a CRM: signed links", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("EMBED_SECRET", KEY)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    src = urlsplit(str(namespace["iframe_src"]))
    assert src.path == "/blf/embed"
    (token,) = parse_qs(src.query)["token"]
    assert scope_from_token(token, settings()) == Scope(
        extensions=frozenset({"101", "102"}), show_numbers=False
    )
