"""Who may use the console and the API: tokens parsed with clear errors, bearer tokens and
signed sessions, the loopback rule without tokens, roles, and cross-site requests refused."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st

from tracker.api_tokens import ApiToken, parse_fields, parse_tokens
from tracker.errors import ConfigurationError
from tracker.operations.actors import Actor
from tracker.settings import Settings
from tracker.web import csrf, failures, sessions
from tracker.web.access import Access, api_operator, api_viewer, is_loopback
from tracker.web.context import Operator
from tracker.web.limits import install_error_handlers
from tracker.web.pages import login

VIEWER = ApiToken("vera", "viewer", "v" * 24)
OPERATOR = ApiToken("otto", "operator", "o" * 24)


def app_with(access: Access) -> FastAPI:
    """The access rules on two probe routes, and the sign-in pages."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.operator = Operator(access)
    app.state.access = access
    failures.install(app)
    probe = APIRouter(prefix="/api/v1", dependencies=[Depends(csrf.same_origin)])

    @probe.get("/whoami")
    async def whoami(caller: Actor = Depends(api_viewer)) -> dict[str, str]:  # noqa: B008
        return {"name": caller.name, "role": caller.role, "via": caller.via}

    @probe.post("/act")
    async def act(caller: Actor = Depends(api_operator)) -> dict[str, str]:  # noqa: B008
        return {"name": caller.name}

    app.include_router(probe)
    app.include_router(login.router)
    return app


def client(access: Access, host: str = "127.0.0.1:9464") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app_with(access))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


# --- TRACKER_API_TOKENS and TRACKER_REDACT_FIELDS -------------------------------------------


def test_tokens_are_read_from_the_environment() -> None:
    # Given
    env = {
        "TRACKER_API_TOKENS": f"vera:viewer:{'v' * 24}, otto:operator:{'o' * 24}",
        "TRACKER_REDACT_FIELDS": "Email, card ,",
    }
    # When
    settings = Settings.from_env(env)
    # Then
    assert settings.api_tokens == (VIEWER, OPERATOR)
    assert settings.redact_fields == frozenset({"email", "card"})
    assert "v" * 24 not in repr(settings)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vera", r"entry 1 \(vera\): the role must be 'viewer' or 'operator'"),
        (f"vera:admin:{'x' * 20}", r"entry 1 \(vera\): the role must be"),
        ("vera:viewer:short", r"entry 1 \(vera\): the token must be 16 to 256"),
        (f"ok:viewer:{'a' * 20},:viewer:{'b' * 20}", r"entry 2: the name must be"),
        (f"a:viewer:{'a' * 20},a:operator:{'b' * 20}", r"entry 2 \(a\): the name is used twice"),
        (f"a:viewer:{'a' * 20},b:operator:{'a' * 20}", r"entry 2 \(b\): the token is the same"),
        ("a:viewer:" + "é" * 20, r"printable ASCII"),
    ],
)
def test_a_bad_token_entry_is_a_clear_error_that_never_shows_the_secret(
    value: str, message: str
) -> None:
    # When / Then
    with pytest.raises(ConfigurationError, match=message) as raised:
        Settings.from_env({"TRACKER_API_TOKENS": value})
    for secret in re.findall(r"[^:,]{16,}", value):
        assert secret not in str(raised.value)


def test_a_bad_redacted_field_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="TRACKER_REDACT_FIELDS"):
        parse_fields("email,$where")


@given(st.text(max_size=200))
def test_any_tokens_setting_parses_or_fails_with_a_configuration_error(value: str) -> None:
    # When
    try:
        tokens = parse_tokens(value)
    except ConfigurationError:
        return
    # Then: what parsed is usable as a bearer credential
    for token in tokens:
        assert token.role in ("viewer", "operator")
        assert len(token.token) >= 16
        assert token.token.isascii()


# --- sessions -------------------------------------------------------------------------------


def test_a_session_names_its_holder_until_it_expires() -> None:
    # Given
    cookie = sessions.sign(OPERATOR, now=1000.0)
    named = {OPERATOR.name: OPERATOR}.get
    # Then
    assert sessions.verify(cookie, named, now=1001.0) == "otto"
    assert sessions.verify(cookie, named, now=1000.0 + sessions.LIFETIME_SECONDS + 1) is None


def test_a_session_ends_when_its_token_changes() -> None:
    cookie = sessions.sign(OPERATOR)
    changed = ApiToken("otto", "operator", "n" * 24)
    assert sessions.verify(cookie, {"otto": changed}.get) is None


@given(st.text(max_size=600))
def test_no_forged_cookie_is_a_session(value: str) -> None:
    assert sessions.verify(value, {"otto": OPERATOR}.get) is None


def test_a_cookie_for_another_name_is_not_a_session() -> None:
    cookie = sessions.sign(VIEWER)
    forged = cookie.replace("vera.", "otto.", 1)
    assert sessions.verify(forged, {"otto": OPERATOR, "vera": VIEWER}.get) is None


# --- the loopback rule ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.com", ""])
def test_other_addresses(host: str) -> None:
    assert not is_loopback(host)


async def test_without_tokens_a_loopback_console_acts_as_local() -> None:
    # Given: no tokens, bound to 127.0.0.1
    http = client(Access((), "127.0.0.1"))
    # When
    whoami = await http.get("/api/v1/whoami")
    acted = await http.post("/api/v1/act")
    # Then
    assert whoami.json() == {"name": "local", "role": "operator", "via": "local"}
    assert acted.status_code == 200


async def test_without_tokens_another_bind_answers_403_naming_the_setting() -> None:
    # Given: no tokens, bound to every interface
    http = client(Access((), "0.0.0.0"))
    # When
    response = await http.get("/api/v1/whoami")
    page = await http.get("/login", headers={"accept": "text/html"})
    # Then
    assert response.status_code == 403
    assert "TRACKER_API_TOKENS" in response.json()["error"]
    assert page.status_code == 403
    assert "TRACKER_API_TOKENS" in page.text


async def test_without_tokens_a_foreign_host_name_is_refused() -> None:
    # Given: a page on another site whose name resolves to 127.0.0.1 (DNS rebinding)
    http = client(Access((), "127.0.0.1"), host="attacker.example:9464")
    # When
    response = await http.get("/api/v1/whoami")
    # Then
    assert response.status_code == 403


# --- tokens and roles -----------------------------------------------------------------------


async def test_with_tokens_every_call_needs_one() -> None:
    # Given
    http = client(Access((VIEWER, OPERATOR), "0.0.0.0"))
    # When
    missing = await http.get("/api/v1/whoami")
    wrong = await http.get("/api/v1/whoami", headers={"authorization": "Bearer " + "x" * 24})
    basic = await http.get("/api/v1/whoami", headers={"authorization": "Basic b3R0bzp4"})
    # Then
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Traceback" not in response.text


async def test_a_viewer_reads_and_an_operator_acts() -> None:
    # Given
    http = client(Access((VIEWER, OPERATOR), "0.0.0.0"))
    as_viewer = {"authorization": f"Bearer {VIEWER.token}"}
    as_operator = {"authorization": f"Bearer {OPERATOR.token}"}
    # When
    read = await http.get("/api/v1/whoami", headers=as_viewer)
    refused = await http.post("/api/v1/act", headers=as_viewer)
    acted = await http.post("/api/v1/act", headers=as_operator)
    # Then
    assert read.json() == {"name": "vera", "role": "viewer", "via": "api"}
    assert refused.status_code == 403
    assert "operator" in refused.json()["error"]
    assert acted.json() == {"name": "otto"}


@given(st.text(max_size=300))
async def test_no_arbitrary_authorization_header_gets_in(value: str) -> None:
    http = client(Access((VIEWER, OPERATOR), "0.0.0.0"))
    try:
        response = await http.get("/api/v1/whoami", headers={"authorization": value})
    except (UnicodeEncodeError, ValueError):
        return  # not a header a client can send
    assert response.status_code in (401, 403)


async def test_a_cookie_session_does_not_open_the_api() -> None:
    # Given: a signed-in console session (the API takes bearer tokens only, so a page on
    # another site can never act through it with the browser's cookies)
    http = client(Access((OPERATOR,), "0.0.0.0"))
    http.cookies.set(sessions.COOKIE, sessions.sign(OPERATOR))
    # When
    response = await http.get("/api/v1/whoami")
    # Then
    assert response.status_code == 401


# --- cross-site requests --------------------------------------------------------------------


async def test_a_post_from_another_site_is_refused() -> None:
    # Given: an open local console
    http = client(Access((), "127.0.0.1"))
    # When: a page elsewhere posts to it
    foreign = await http.post("/api/v1/act", headers={"origin": "http://evil.example"})
    fetched = await http.post("/api/v1/act", headers={"sec-fetch-site": "cross-site"})
    null = await http.post("/api/v1/act", headers={"origin": "null"})
    same = await http.post("/api/v1/act", headers={"origin": "http://127.0.0.1:9464"})
    # Then
    assert [r.status_code for r in (foreign, fetched, null)] == [403, 403, 403]
    assert same.status_code == 200


# --- signing in -----------------------------------------------------------------------------


async def test_signing_in_with_a_token_sets_a_session() -> None:
    # Given
    http = client(Access((OPERATOR,), "0.0.0.0"))
    form = await http.get("/login?next=/groups")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    # When
    wrong = await http.post(
        "/login", data={"token": "nope" * 5, "csrf_token": token[1], "next": "/groups"}
    )
    right = await http.post(
        "/login",
        data={"token": OPERATOR.token, "csrf_token": token[1], "next": "/groups"},
        follow_redirects=False,
    )
    # Then
    assert wrong.status_code == 401
    assert OPERATOR.token not in wrong.text
    assert right.status_code == 303
    assert right.headers["location"] == "/groups"
    cookie = right.cookies[sessions.COOKIE]
    assert sessions.verify(cookie, {"otto": OPERATOR}.get) == "otto"
    assert "httponly" in right.headers["set-cookie"].lower()
    assert "samesite=strict" in right.headers["set-cookie"].lower()


async def test_signing_in_without_the_csrf_token_is_refused() -> None:
    # Given
    http = client(Access((OPERATOR,), "0.0.0.0"))
    await http.get("/login")
    # When
    response = await http.post("/login", data={"token": OPERATOR.token})
    # Then
    assert response.status_code == 403
    assert sessions.COOKIE not in response.cookies


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil"])
async def test_signing_in_never_sends_the_browser_to_another_site(target: str) -> None:
    http = client(Access((OPERATOR,), "0.0.0.0"))
    form = await http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = await http.post(
        "/login",
        data={"token": OPERATOR.token, "csrf_token": token[1], "next": target},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/"
