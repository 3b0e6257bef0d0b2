"""The trims of engine.llm.litellm_trims that stand in for a step of litellm or httpx (issue 16,
goal 3): each gives the same answers as the step it replaces, and steps aside where it cannot be
sure to (a jar of another class, a cookie-bearing reply).

Real HTTP throughout: a small local server for the cookie jar, the fake OpenAI server for calls.
"""

from __future__ import annotations

import http.cookiejar
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from engine.llm.providers import load_litellm


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
