"""The error edge: one `is_transient` over the real exceptions of every library we call through,
and messages that name the next command."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StepFailed, TransientError, bad_endpoint, http_status, is_transient


def raised_from(outer: Exception, inner: Exception) -> Exception:
    """`outer` as it arrives when raised while handling `inner` (its __context__ set by Python)."""
    try:
        try:
            raise inner
        except Exception:  # noqa: BLE001 - any inner error: the test builds the chain libraries make
            raise outer  # noqa: B904 - the implicit context is the point: libraries raise like this
    except Exception as e:  # noqa: BLE001 - hand back whatever was raised, to inspect its chain
        return e


def test_builtin_timeouts_and_connection_errors_are_transient() -> None:
    for error in (
        TimeoutError("slow"),
        asyncio.TimeoutError(),
        ConnectionResetError("reset"),
        ConnectionRefusedError(),
        BrokenPipeError(),
    ):
        assert is_transient(error), error
    for error in (ValueError("bad"), KeyError("x"), RuntimeError("boom"), FileNotFoundError("f")):
        assert not is_transient(error), error


def test_the_marker_and_what_it_caused_are_transient() -> None:
    assert is_transient(TransientError("HTTP Error 429"))
    assert is_transient(raised_from(RuntimeError("while retrying"), TransientError("blocked")))


def test_a_status_decides_even_when_the_cause_looks_transient() -> None:
    class NotFound(Exception):
        status_code = 404

    assert not is_transient(raised_from(NotFound("no such model"), TimeoutError()))


def test_litellm_errors_by_their_status() -> None:
    litellm = pytest.importorskip("litellm")
    args = {"message": "m", "llm_provider": "openai", "model": "fake"}
    transient = [
        litellm.RateLimitError(**args),
        litellm.InternalServerError(**args),
        litellm.ServiceUnavailableError(**args),
        litellm.Timeout(**args),
        litellm.APIConnectionError(**args),
        litellm.APIError(status_code=502, **args),
    ]
    permanent = [litellm.AuthenticationError(**args), litellm.NotFoundError(**args), litellm.BadRequestError(**args)]
    for error in transient:
        assert is_transient(error), (type(error).__name__, http_status(error))
    for error in permanent:
        assert not is_transient(error), (type(error).__name__, http_status(error))
    assert [http_status(e) for e in permanent] == [401, 404, 400]


def test_httpx_and_openai_errors() -> None:
    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def status_error(code: int) -> Exception:
        return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))

    assert is_transient(httpx.ReadTimeout("read timed out", request=request))
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(httpx.RemoteProtocolError("peer closed connection", request=request))
    assert is_transient(status_error(503)) and is_transient(status_error(429))
    assert not any(is_transient(status_error(code)) for code in (400, 401, 403, 404))
    assert is_transient(openai.APITimeoutError(request=request))
    assert is_transient(openai.APIConnectionError(request=request))


def test_requests_errors_as_youtube_transcript_api_raises_them() -> None:
    requests = pytest.importorskip("requests")
    yta = pytest.importorskip("youtube_transcript_api")

    def http_error(code: int) -> Exception:
        response = requests.Response()
        response.status_code = code
        return requests.exceptions.HTTPError(f"{code} error", response=response)

    assert is_transient(requests.exceptions.ReadTimeout("Read timed out."))
    assert is_transient(requests.exceptions.ConnectionError("Connection aborted."))
    # the library raises YouTubeRequestFailed while handling requests' HTTPError
    assert is_transient(raised_from(yta.YouTubeRequestFailed("vid", http_error(503)), http_error(503)))
    assert not is_transient(raised_from(yta.YouTubeRequestFailed("vid", http_error(403)), http_error(403)))
    assert not is_transient(yta.TranscriptsDisabled("vid"))


def test_youtube_transcript_api_blocked_is_marked_transient_by_the_fetcher() -> None:
    yta = pytest.importorskip("youtube_transcript_api")
    from engine.sources.fetch import _blocked_is_transient

    def blocked() -> None:
        raise yta.IpBlocked("vid")  # its name for YouTube's 429: no status on it

    assert not is_transient(yta.IpBlocked("vid"))
    with pytest.raises(TransientError) as info:
        _blocked_is_transient(blocked)()
    assert is_transient(info.value) and isinstance(info.value.__cause__, yta.IpBlocked)


def test_yt_dlp_errors_through_their_wrappers() -> None:
    pytest.importorskip("yt_dlp")
    from yt_dlp.networking import Response
    from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, TransportError
    from yt_dlp.utils import DownloadError, ExtractorError

    def http(code: int) -> HTTPError:
        return HTTPError(Response(io.BytesIO(b""), "https://www.youtube.com/x", {}, status=code))

    assert is_transient(TransportError("The read operation timed out"))
    assert is_transient(IncompleteRead(partial=10, expected=100))
    assert is_transient(http(429)) and is_transient(http(503)) and not is_transient(http(404))
    wrapped = ExtractorError("Unable to download API page", cause=http(429))
    assert is_transient(wrapped)
    assert is_transient(DownloadError("ERROR: ...", exc_info=(type(wrapped), wrapped, None)))
    gone = ExtractorError("Video unavailable", cause=http(404))
    assert not is_transient(DownloadError("ERROR: ...", exc_info=(type(gone), gone, None)))


def test_yt_dlp_text_only_failures_are_marked_by_the_lister() -> None:
    pytest.importorskip("yt_dlp")
    from yt_dlp.utils import DownloadError

    from engine.sources.youtube import transient_by_text

    def fails(message: str) -> None:
        raise DownloadError(message)

    assert not is_transient(DownloadError("ERROR: HTTP Error 429: Too Many Requests"))  # text only
    with pytest.raises(TransientError):
        transient_by_text(lambda: fails("ERROR: [youtube] x: HTTP Error 429: Too Many Requests"))()
    with pytest.raises(DownloadError):  # not transient: passed through as it was
        transient_by_text(lambda: fails("ERROR: [youtube] x: Video unavailable"))()


def test_step_failed_ends_with_the_commands_to_run_next() -> None:
    error = StepFailed("train", "ab" * 32, ValueError("rank too big"), Path("my recipes/jane.yaml"), "3f2a9c0d1e2b")
    lines = str(error).splitlines()
    assert lines[0] == "step 'train' (abababababababab) failed: ValueError: rank too big"
    assert [line.split("  #")[0].strip() for line in lines[-3:]] == [
        "recipe run 'my recipes/jane.yaml'",
        "recipe run 'my recipes/jane.yaml' --force train",
        "recipe show 3f2a9c0d1e2b",
    ]
    assert (error.step, error.run_id, error.recipe_path) == ("train", "3f2a9c0d1e2b", "my recipes/jane.yaml")


def test_litellm_refusals_are_never_retried_whatever_their_status() -> None:
    litellm = pytest.importorskip("litellm")
    args = {"message": "m", "llm_provider": "openai", "model": "fake"}
    refusals = [
        litellm.BadRequestError(**args),
        litellm.ContextWindowExceededError(**args),
        litellm.ContentPolicyViolationError(**args),
        litellm.UnsupportedParamsError(**args),
        litellm.AuthenticationError(**args),
        litellm.PermissionDeniedError(response=_response(403), **args),
        litellm.NotFoundError(**args),
    ]
    for error in refusals:
        assert not is_transient(error), type(error).__name__
        error.status_code = 500  # a proxy in front may relabel it; the class still says never
        assert not is_transient(error), type(error).__name__


def _response(status: int) -> Any:
    import httpx

    return httpx.Response(status, request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"))


def test_a_request_that_cannot_be_sent_is_not_transient_though_litellm_calls_it_500() -> None:
    litellm = pytest.importorskip("litellm")
    httpx = pytest.importorskip("httpx")
    aiohttp = pytest.importorskip("aiohttp")
    args = {"message": "Connection error.", "llm_provider": "openai", "model": "fake"}
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    unsendable = [
        httpx.InvalidURL("/127.0.0.1:9/v1/chat/completions"),
        httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'.", request=request),
        aiohttp.client_exceptions.NonHttpUrlClientError("ftp://127.0.0.1/v1/chat/completions"),
        ValueError("Cannot combine AUTHORIZATION header with AUTH argument or credentials encoded in URL"),
        ValueError("Invalid IPv6 URL"),
        ValueError("Port out of range 0-65535"),
    ]
    for cause in unsendable:
        for wrapper in (litellm.InternalServerError(**args), litellm.APIConnectionError(**args)):
            error = raised_from(wrapper, cause)
            assert http_status(error) == 500
            assert not is_transient(error) and bad_endpoint(error), (type(wrapper).__name__, cause)


def test_a_garbled_reply_wrapped_as_500_stays_transient() -> None:
    """The other side of the rule above: a reply that is not JSON, or a broken connection, may
    come right on the next try, and nothing in its chain says otherwise."""
    litellm = pytest.importorskip("litellm")
    args = {"message": "Expecting value", "llm_provider": "openai", "model": "fake"}
    garbled = raised_from(litellm.InternalServerError(**args), json.JSONDecodeError("Expecting value", "<html>", 0))
    assert is_transient(garbled) and not bad_endpoint(garbled)
    refused = raised_from(litellm.InternalServerError(**args), ConnectionRefusedError(111, "Connect call failed"))
    assert is_transient(refused) and not bad_endpoint(refused)
    assert is_transient(litellm.APIError(status_code=425, **args))  # Too Early


def _duckdb_interrupted() -> BaseException:
    """DuckDB's own error for a query cancelled by SIGINT, raised by a real connection."""
    import threading

    import duckdb

    con = duckdb.connect()
    threading.Timer(0.3, con.interrupt).start()
    try:
        con.execute("SELECT count(*) FROM range(100000000000) a, range(1000) b").fetchall()
    except Exception as e:  # noqa: BLE001 - the error under test
        return e
    raise AssertionError("the query was not interrupted")


def test_duckdb_query_interrupted_is_ctrl_c_at_the_cli(tmp_path: Path) -> None:
    """Seen in CI: SIGINT during a store query came back as `RuntimeError: Query interrupted`,
    which read as a failed step (exit 1) instead of an interrupted run (exit 130)."""
    from engine.errors import is_interrupt

    assert is_interrupt(_duckdb_interrupted())  # a query cancelled through the connection
    raw = RuntimeError("Query interrupted")  # what a SIGINT during a query raised in CI, verbatim
    wrapped = StepFailed("questions", "k" * 64, raw, "r.yaml", "abc")
    wrapped.__cause__ = raw
    assert is_interrupt(raw) and is_interrupt(wrapped)
    assert not is_interrupt(RuntimeError("something else")) and not is_interrupt(ValueError("Query"))

    import click
    from click.testing import CliRunner

    from engine.cli import ErrorEdge

    @click.group(cls=ErrorEdge)
    def cli() -> None: ...

    @cli.command()
    def boom() -> None:
        raise wrapped

    result = CliRunner().invoke(cli, ["boom"])
    assert result.exit_code == 130 and "interrupted; finished steps are kept" in result.output
