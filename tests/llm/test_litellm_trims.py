"""The trims of engine.llm.litellm_trims that stand in for a step of litellm or httpx (issue 16,
goal 3): each gives the same answers as the step it replaces, and steps aside where it cannot be
sure to (another class, a changed enum, a cookie-bearing reply).

Real HTTP throughout: a small local server for the cookie jar, the fake OpenAI server for calls.
"""

from __future__ import annotations

import enum
import http.cookiejar
import http.server
import pickle
import threading
from collections.abc import Iterator

import httpx
import pytest

from engine.llm.litellm_trims import iterate_from_a_tuple
from engine.llm.providers import load_litellm


def _members_as_enum_lists_them(enum_class: enum.EnumMeta) -> list:
    """The enum's members as Enum's own iteration gives them (by definition order)."""
    return [enum_class._member_map_[name] for name in enum_class._member_names_]


def test_litellms_providers_iterate_and_read_as_before() -> None:
    load_litellm()
    from litellm.types.utils import LlmProviders

    members = list(LlmProviders)
    assert members == _members_as_enum_lists_them(LlmProviders) and len(members) == len(LlmProviders) > 100
    assert [m.value for m in members] == [m._value_ for m in members]
    assert "openai" in [p.value for p in LlmProviders]  # the check litellm makes on each call
    assert LlmProviders("openai") is LlmProviders.OPENAI and LlmProviders.OPENAI == "openai"
    assert pickle.loads(pickle.dumps(LlmProviders.OPENAI)) is LlmProviders.OPENAI
    assert isinstance(LlmProviders, enum.EnumMeta) and list(reversed(LlmProviders)) == members[::-1]


def test_an_enum_extended_after_the_trim_iterates_with_its_new_member() -> None:
    """The tuple of members is a copy: an enum given a member later (as aenum's extend_enum does,
    appending to its list of names) must not iterate without it."""

    class Shade(str, enum.Enum):
        LIGHT = "light"
        DARK = "dark"

    assert iterate_from_a_tuple(Shade)
    assert list(Shade) == [Shade.LIGHT, Shade.DARK] and [s.value for s in Shade] == ["light", "dark"]
    extra = str.__new__(Shade, "dim")
    extra._name_, extra._value_ = "DIM", "dim"
    Shade._member_map_["DIM"] = extra
    Shade._member_names_.append("DIM")
    Shade._value2member_map_["dim"] = extra
    assert list(Shade) == [Shade.LIGHT, Shade.DARK, extra] and [s.value for s in Shade] == ["light", "dark", "dim"]


def test_an_enum_with_a_value_of_its_own_is_left_alone() -> None:
    class Odd(enum.Enum):
        ONE = 1

        @property  # type: ignore[override]
        def value(self) -> int:
            return 10 * self._value_

    kind = type(Odd)
    assert not iterate_from_a_tuple(Odd)
    assert type(Odd) is kind and Odd.ONE.value == 10


class _CookieServer(http.server.BaseHTTPRequestHandler):
    """Sets a cookie on /set, none on any other path; answers each request with the cookies it got."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = (self.headers.get("Cookie") or "").encode()
        self.send_response(200)
        if self.path.startswith("/set"):
            self.send_header("Set-Cookie", f"session={self.path.rsplit('/', 1)[-1]}; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


@pytest.fixture
def cookie_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CookieServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cookies_set_by_a_server_are_kept_and_sent_back(cookie_server: str) -> None:
    load_litellm()
    assert getattr(httpx.Cookies.extract_cookies, "_engine_wrapped", False)
    with httpx.Client(base_url=cookie_server) as client:
        assert client.get("/plain").text == ""
        assert client.get("/set/abc").text == ""
        assert client.get("/plain").text == "session=abc"  # a reply without a cookie keeps the jar
        client.get("/set/xyz")
        assert client.get("/plain").text == "session=xyz"
        assert [c.value for c in client.cookies.jar] == ["xyz"]


def test_a_cookie_jar_of_another_class_sees_every_reply(cookie_server: str) -> None:
    load_litellm()
    seen: list[str] = []

    class Watching(http.cookiejar.CookieJar):
        def extract_cookies(self, response: object, request: object) -> None:
            seen.append(request.get_full_url())  # type: ignore[attr-defined]
            super().extract_cookies(response, request)  # type: ignore[arg-type]

    with httpx.Client(base_url=cookie_server, cookies=Watching()) as client:
        client.get("/plain")
        client.get("/set/abc")
        assert client.get("/plain").text == "session=abc"
    assert seen == [f"{cookie_server}/plain", f"{cookie_server}/set/abc", f"{cookie_server}/plain"]
