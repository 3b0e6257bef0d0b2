"""YouTube listing and transcript fetching with both libraries faked at their call boundary.

`yt_dlp.YoutubeDL` and `youtube_transcript_api.YouTubeTranscriptApi` are replaced by fakes that
serve recorded-shaped responses from tests/cases/youtube/ (flat channel listing, captions JSON,
timedtext XML, json3 subtitles). The transcript fakes build the library's real TranscriptList
and Transcript objects over a fake HTTP session, so its own parsing, 429 handling and
exceptions are exercised. Full runs go through engine.pipeline.runner.run_recipe on a real DuckDB store.
"""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import duckdb
import pytest
import requests
import youtube_transcript_api as yta
import yt_dlp
from yt_dlp.utils import DownloadError

from engine.errors import FetchFailed
from engine.inspect.show import failed_items
from engine.pipeline.runner import Paths, run_recipe
from engine.sources.fetch import TranscriptFetcher
from engine.sources.youtube import Lister, apply_filters, availability, listing_url, video_id
from engine.steps.base import RunOptions

CASES = Path(__file__).parents[1] / "cases" / "youtube"
CHANNEL = "https://www.youtube.com/@DrDemo"
QUIET = RunOptions(quiet=True)
COOKIES_FIX = (
    "set transcripts.cookies to a browser or cookies.txt of an account that can watch it, "
    "then recipe run --retry-failed"
)
MEMBERS_TEXT = "Join this channel to get access to members-only content like this video, and other exclusive perks."


class FakeClock:
    """Time that moves only when someone sleeps: backoff and rate limits without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _response(status: int, text: str, url: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code, resp._content, resp.url, resp.encoding = status, text.encode(), url, "utf-8"
    return resp


class FakeYouTube:
    """What YouTube answers, per video id; records every call made through either library."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.listing = json.loads((CASES / "channel_videos.json").read_text())
        self.api_lists: list[str] = []
        self.timedtext_gets: list[str] = []
        self.ytdlp_calls: list[str] = []
        self.ytdlp_params: list[dict] = []
        self.api_proxy_configs: list[object] = []  # the proxy_config each YouTubeTranscriptApi was built with
        self.members_only: set[str] = set()  # yt-dlp serves these only to a signed-in member (cookies)
        self.timedtext_status = {"ketones0007": [429, 429]}  # then 200
        self.api_errors = {  # raised by list(video_id), in the library's own exception types
            "nocapt00006": lambda v: yta.TranscriptsDisabled(v),
            "slowvid0008": lambda v: requests.exceptions.ReadTimeout(
                "HTTPSConnectionPool(host='www.youtube.com', port=443): Read timed out. (read timeout=30)"
            ),
            "members0003": lambda v: yta.VideoUnplayable(v, MEMBERS_TEXT, []),
        }
        self.aliases: dict[str, str] = {}  # new uploads reuse a recorded caption track
        slow = DownloadError(
            "ERROR: [youtube] slowvid0008: Unable to download API page: The read operation "
            "timed out (caused by TransportError('The read operation timed out'))"
        )
        self.ytdlp_errors: dict[str, list[Exception]] = {"https://www.youtube.com/watch?v=slowvid0008": [slow] * 10}
        monkeypatch.setattr(yt_dlp, "YoutubeDL", self._ydl_class())
        monkeypatch.setattr(yta, "YouTubeTranscriptApi", self._api_class())

    def add_upload(self, vid: str, title: str, captions_from: str = "insulin0001") -> None:
        self.aliases[vid] = captions_from
        entry = copy.deepcopy(self.listing["entries"][0])
        entry.update(id=vid, title=title, url=f"https://www.youtube.com/watch?v={vid}")
        self.listing["entries"].insert(0, entry)  # channels list newest first

    # -- youtube-transcript-api ----------------------------------------------------------------

    def _api_class(self) -> type:
        world = self

        class Session:
            def get(self, url: str, **kwargs: object) -> requests.Response:
                vid = re.search(r"[?&]v=([^&]+)", url).group(1)
                world.timedtext_gets.append(vid)
                statuses = world.timedtext_status.get(vid) or []
                if statuses:
                    return _response(statuses.pop(0), "Too Many Requests", url)
                return _response(200, (CASES / f"timedtext_{world.aliases.get(vid, vid)}.xml").read_text(), url)

        class FakeApi:
            def __init__(self, proxy_config: object = None, http_client: object = None) -> None:
                assert isinstance(http_client, requests.Session)
                world.api_proxy_configs.append(proxy_config)

            def list(self, vid: str) -> yta.TranscriptList:
                world.api_lists.append(vid)
                if vid in world.api_errors:
                    raise world.api_errors[vid](vid)
                path = CASES / f"captions_{world.aliases.get(vid, vid)}.json"
                if not path.exists():
                    raise yta.VideoUnavailable(vid)
                captions = path.read_text().replace(world.aliases.get(vid, vid), vid)
                return yta.TranscriptList.build(Session(), vid, json.loads(captions))

        return FakeApi

    # -- yt-dlp ------------------------------------------------------------------------------

    def _ydl_class(self) -> type:
        world = self

        class FakeYDL:
            def __init__(self, params: dict | None = None) -> None:
                self.params = params or {}
                world.ytdlp_params.append(self.params)

            def __enter__(self) -> FakeYDL:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def extract_info(self, url: str, download: bool = True) -> dict:
                assert download is False
                world.ytdlp_calls.append(url)
                if world.ytdlp_errors.get(url):
                    raise world.ytdlp_errors[url].pop(0)
                if url == f"{CHANNEL}/videos":
                    return copy.deepcopy(world.listing)
                vid = video_id(url)
                signed_in = "cookiefile" in self.params or "cookiesfrombrowser" in self.params
                if vid in world.members_only and not signed_in:
                    raise DownloadError(f"ERROR: [youtube] {vid}: {MEMBERS_TEXT}")
                recorded = world.aliases.get(vid, vid)
                path = CASES / f"ytdlp_info_{recorded}.json"
                if not path.exists():
                    raise DownloadError(
                        f"ERROR: [youtube] {vid}: Video unavailable. This video has been removed by the uploader"
                    )
                return json.loads(path.read_text().replace(recorded, vid))

            def urlopen(self, url: str) -> io.BytesIO:
                vid = re.search(r"[?&]v=([^&]+)", url).group(1)
                return io.BytesIO((CASES / f"json3_{world.aliases.get(vid, vid)}.json").read_bytes())

        return FakeYDL


def fetcher(clock: FakeClock, **kwargs: object) -> TranscriptFetcher:
    return TranscriptFetcher(sleep=clock.sleep, clock=clock, **kwargs)


class Source:
    """A youtube source as the recipe's dataclass would give it (defaults from the schema)."""

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(
            dict(
                url=CHANNEL,
                videos=(),
                max_videos=None,
                title_include=(),
                title_exclude=(),
                min_duration=None,
                max_duration=None,
                after=None,
                before=None,
                exclude_ids=(),
            ),
            **kw,
        )


# -- listing -----------------------------------------------------------------------------------


def test_channel_listing_maps_availability(yt: FakeYouTube) -> None:
    entries = Lister(sleep=lambda s: None).list_url(CHANNEL)
    assert yt.ytdlp_calls == [f"{CHANNEL}/videos"]  # the channel root asks for its videos tab
    assert yt.ytdlp_params[0]["extract_flat"] == "in_playlist"
    found = {e["id"]: e["availability"] for e in entries}
    assert found["members0003"] == "members-only"
    assert found["private0004"] == "private"
    assert found["livenow0005"] == "live"
    assert found["insulin0001"] == "public"
    assert len(entries) == 11


def test_filters_record_why_each_video_is_left_out(yt: FakeYouTube) -> None:
    entries = Lister(sleep=lambda s: None).list_url(CHANNEL)
    source = Source(
        min_duration=120, title_exclude=("(?i)\\binterview\\b",), exclude_ids=("nocapt00006",), max_videos=4
    )
    marked = {e["id"]: (e["status"], e["reason"]) for e in apply_filters(entries, source)}
    assert marked["members0003"] == ("skipped", f"members-only: {COOKIES_FIX}")
    assert marked["private0004"] == ("skipped", f"private: {COOKIES_FIX}")
    assert marked["shortie0009"] == ("dropped", "shorter than min_duration (41s < 120s)")
    assert marked["guestiv0010"][1].startswith("title matches title_exclude")
    assert marked["nocapt00006"] == ("dropped", "excluded id")
    kept = [vid for vid, (status, _) in marked.items() if status == "ok"]
    assert kept == ["insulin0001", "fastmyth002", "ketones0007", "slowvid0008"]
    assert marked["ghrelin0011"] == ("dropped", "beyond max_videos (4)")


def test_date_and_title_include_filters() -> None:
    from engine.sources.youtube import to_entry

    raws = [
        {"id": "a" * 11, "title": "Fasting 101", "upload_date": "20250105"},
        {"id": "b" * 11, "title": "Fasting 102", "timestamp": 1767225600},  # 2026-01-01, approximate
        {"id": "c" * 11, "title": "Cooking", "upload_date": "20250601"},
        {"id": "d" * 11, "title": "Fasting 103"},
    ]
    entries = [to_entry(r, CHANNEL) for r in raws]
    source = Source(title_include=("^Fasting",), after="2025-01-01", before="2026-01-01")
    marked = [(e["status"], e["reason"]) for e in apply_filters(entries, source)]
    assert marked == [
        ("ok", None),
        ("dropped", "uploaded 2026-01-01, not before `before` 2026-01-01"),
        ("dropped", "title does not match title_include"),
        ("dropped", "upload date unknown (after/before set)"),
    ]


def test_single_video_errors_become_reasons(yt: FakeYouTube) -> None:
    yt.ytdlp_errors["https://www.youtube.com/watch?v=members0003"] = [
        DownloadError(f"ERROR: [youtube] members0003: {MEMBERS_TEXT}")
    ]
    lister = Lister(sleep=lambda s: None)
    assert lister.list_video("members0003")["availability"] == "members-only"
    assert lister.list_video("https://youtu.be/gone0000013")["availability"] == "unavailable"
    ok = lister.list_video("https://www.youtube.com/watch?v=single00012&t=42s")
    assert (ok["id"], ok["availability"], ok["upload_date"], ok["duration"]) == (
        "single00012",
        "public",
        "2025-03-01",
        415.0,
    )


def test_listing_retries_429_with_backoff(yt: FakeYouTube) -> None:
    too_many = DownloadError("ERROR: [youtube:tab] @DrDemo: HTTP Error 429: Too Many Requests")
    yt.ytdlp_errors[f"{CHANNEL}/videos"] = [too_many] * 2
    clock = FakeClock()
    entries = Lister(retries=3, backoff=1.0, sleep=clock.sleep).list_url(CHANNEL)
    assert len(entries) == 11 and len(yt.ytdlp_calls) == 3
    assert 0.5 <= clock.sleeps[0] <= 1.0 and 1.0 <= clock.sleeps[1] <= 2.0


def test_url_helpers() -> None:
    assert listing_url("https://www.youtube.com/@DrDemo/") == f"{CHANNEL}/videos"
    assert listing_url("https://www.youtube.com/playlist?list=PL123") == "https://www.youtube.com/playlist?list=PL123"
    assert video_id("https://www.youtube.com/shorts/shortie0009") == "shortie0009"
    assert video_id("not a video") is None
    assert availability({"title": "[Deleted video]"}) == "unavailable"
    assert availability({"availability": "premium_only"}) == "members-only"


# -- fetching one transcript -------------------------------------------------------------------


def test_manual_transcript_keeps_timestamps(yt: FakeYouTube) -> None:
    got = fetcher(FakeClock()).fetch("insulin0001")
    assert (got.kind, got.language, got.via) == ("manual", "en", "youtube-transcript-api")
    assert got.segments[3] == {"start": 13.1, "duration": 4.4, "text": "When insulin is high, you're in storage mode."}


def test_429_then_success_backs_off_exponentially(yt: FakeYouTube) -> None:
    clock = FakeClock()
    f = fetcher(clock, backoff=2.0, retries=4, requests_per_second=1000)
    got = f.fetch("ketones0007")
    assert got.segments[0]["text"] == "Ketones get a bad name,"
    assert yt.timedtext_gets == ["ketones0007"] * 3
    assert len(f.delays) == 2
    assert 1.0 <= f.delays[0] <= 2.0 and 2.0 <= f.delays[1] <= 4.0  # base * 2**attempt, jittered
    assert set(f.delays) <= set(clock.sleeps)


def test_timeout_exhausts_retries_and_is_not_permanent(yt: FakeYouTube) -> None:
    clock = FakeClock()
    f = fetcher(clock, retries=2, fallback_ytdlp=False)
    with pytest.raises(FetchFailed) as info:
        f.fetch("slowvid0008")
    assert info.value.category == "timeout" and not info.value.permanent
    assert yt.api_lists == ["slowvid0008"] * 3 and len(f.delays) == 2


def test_members_only_found_at_fetch_skips_fallback(yt: FakeYouTube) -> None:
    with pytest.raises(FetchFailed) as info:
        fetcher(FakeClock()).fetch("members0003")
    assert info.value.availability == "members-only" and info.value.permanent
    assert yt.ytdlp_calls == []  # yt-dlp would hit the same wall


def test_fallback_to_ytdlp_json3(yt: FakeYouTube) -> None:
    got = fetcher(FakeClock()).fetch("ghrelin0011")  # the API's track needs a PO token
    assert (got.kind, got.language, got.via) == ("generated", "en", "yt-dlp")
    assert got.segments[0] == {"start": 0.16, "duration": 4.08, "text": "so hunger is not constant"}
    assert yt.ytdlp_params[0]["writeautomaticsub"] and yt.ytdlp_params[0]["socket_timeout"] == 30.0


def test_no_transcript_anywhere_is_permanent(yt: FakeYouTube) -> None:
    with pytest.raises(FetchFailed) as info:
        fetcher(FakeClock()).fetch("nocapt00006")
    assert info.value.permanent and info.value.category == "no transcript"
    assert "Subtitles are disabled" in info.value.reason


def test_rate_limit_spaces_requests(yt: FakeYouTube) -> None:
    clock = FakeClock()
    f = fetcher(clock, requests_per_second=2.0)
    for vid in ("insulin0001", "fastmyth002"):
        f.fetch(vid)
    assert f.requests == 4 and clock.sleeps == [0.5, 0.5, 0.5] and clock.now == 1.5


def test_prefer_generated_when_configured(yt: FakeYouTube) -> None:
    got = fetcher(FakeClock(), prefer_manual=False).fetch("fastmyth002")
    assert got.kind == "generated" and got.segments[1]["text"] == "fasting puts you in starvation mode"


# -- full runs through the engine --------------------------------------------------------------

RECIPE = """\
name: yt-test
creator:
  name: Dr. Demo
sources:
  - type: youtube
    url: https://www.youtube.com/@DrDemo
    min_duration: 120
    title_exclude: ["(?i)\\\\binterview\\\\b"]
{extra}transcripts:
  retries: 2
  backoff: 1.0
"""


def write_recipe(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(extra=extra), encoding="utf-8")
    return path


def table(run_dir: Path, name: str) -> dict[str, dict]:
    with duckdb.connect(str(run_dir / "data.duckdb"), read_only=True) as con:
        cur = con.execute(f'SELECT * FROM "{name}"')
        cols = [d[0] for d in cur.description]
        return {row[0]: dict(zip(cols, row, strict=True)) for row in cur.fetchall()}


def test_full_run_records_every_outcome(yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths) -> None:
    result = run_recipe(write_recipe(tmp_path), paths, until="transcripts", options=QUIET)
    src = table(result.run_dir, "sources")
    assert {v: (r["status"], r["reason"]) for v, r in src.items() if r["status"] != "ok"} == {
        "members0003": ("skipped", f"members-only: {COOKIES_FIX}"),
        "private0004": ("skipped", f"private: {COOKIES_FIX}"),
        "livenow0005": ("skipped", "live"),
        "shortie0009": ("dropped", "shorter than min_duration (41s < 120s)"),
        "guestiv0010": ("dropped", "title matches title_exclude '(?i)\\\\binterview\\\\b'"),
    }
    rows = table(result.run_dir, "transcripts")
    assert {v: r["status"] for v, r in rows.items()} == {
        "insulin0001": "ok",
        "fastmyth002": "ok",
        "ketones0007": "ok",
        "ghrelin0011": "ok",
        "nocapt00006": "failed",
        "slowvid0008": "failed",
    }
    assert rows["nocapt00006"]["reason"].startswith("no transcript:")
    assert rows["slowvid0008"]["reason"].startswith("timeout:")
    assert rows["insulin0001"]["text"].endswith(
        "whether you store energy or burn it. When insulin is high, you're in storage mode."
    )  # [Music] stripped
    assert rows["insulin0001"]["segments"][3] == {
        "start": 13.1,
        "duration": 4.4,
        "text": "When insulin is high, you're in storage mode.",
    }
    assert (rows["ghrelin0011"]["via"], rows["ghrelin0011"]["end_time"]) == ("yt-dlp", 15.66)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["transcripts"]
    assert metrics["fetched"] == 4 and metrics["cached"] == 0
    assert metrics["failed"] == {"no transcript": 1, "timeout": 1}
    assert metrics["skipped"] == {"members-only": 1, "private": 1, "live": 1}
    assert metrics["retries"] == 2 + 2 + 2  # ketones 429 x2, slowvid timeout x2 (api) + x2 (yt-dlp)
    assert "transcripts: 0 read, 4 fetched" in (result.run_dir / "run.log").read_text()
    shown = failed_items(result.run_dir)  # what `recipe show` lists: YouTube rows by video id
    assert {f["name"]: f["reason"] for f in shown["sources"]} == {
        "members0003": f"members-only: {COOKIES_FIX}",
        "private0004": f"private: {COOKIES_FIX}",
        "livenow0005": "live",
    }
    assert {f["name"] for f in shown["transcripts"]} == {"nocapt00006", "slowvid0008"}


def test_new_upload_is_the_only_video_fetched(yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths) -> None:
    recipe = write_recipe(tmp_path, extra="    exclude_ids: [slowvid0008]\n")
    first = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    fetched_first = list(yt.api_lists)
    assert sorted(set(fetched_first)) == ["fastmyth002", "ghrelin0011", "insulin0001", "ketones0007", "nocapt00006"]

    again = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert again.executed == [] and again.run_dir == first.run_dir  # the listing was re-read, unchanged
    assert yt.api_lists == fetched_first

    yt.add_upload("newvid00099", "Why your appetite resets after a fast")
    third = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert third.executed == ["sources", "transcripts"]
    assert yt.api_lists[len(fetched_first) :] == ["newvid00099"]  # cached videos never asked again
    rows = table(third.run_dir, "transcripts")
    assert rows["newvid00099"]["status"] == "ok" and rows["insulin0001"]["status"] == "ok"
    metrics = json.loads((third.run_dir / "metrics.json").read_text())["transcripts"]
    assert metrics["cached"] == 5 and metrics["fetched"] == 1


def test_explicit_videos_skips_are_remembered(yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths) -> None:
    watch = "https://www.youtube.com/watch?v=members0003"
    yt.ytdlp_errors[watch] = [DownloadError(f"ERROR: [youtube] members0003: {MEMBERS_TEXT}")] * 3
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: yt-videos\ncreator:\n  name: Dr. Demo\nsources:\n  - type: youtube\n"
        "    videos: [members0003, 'https://youtu.be/insulin0001']\n",
        encoding="utf-8",
    )
    first = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    src = table(first.run_dir, "sources")
    assert src["members0003"]["status"] == "skipped"
    assert src["members0003"]["reason"] == f"members-only: {COOKIES_FIX} ({MEMBERS_TEXT})"
    assert yt.ytdlp_calls.count(watch) == 1

    run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert yt.ytdlp_calls.count(watch) == 1  # not asked again on the next run

    run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True, retry_failed=True))
    assert yt.ytdlp_calls.count(watch) == 2  # --retry-failed asks again


def test_retry_failed_refetches_cached_failures(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    recipe = write_recipe(tmp_path, extra="    exclude_ids: [slowvid0008]\n")
    run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert yt.api_lists.count("nocapt00006") == 1
    assert run_recipe(recipe, paths, until="transcripts", options=QUIET).executed == []
    assert yt.api_lists.count("nocapt00006") == 1  # a permanent failure is kept like a success
    retried = run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True, retry_failed=True))
    assert retried.executed == ["sources", "transcripts"]
    assert yt.api_lists.count("nocapt00006") == 2 and yt.api_lists.count("insulin0001") == 1
    after = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert after.executed == [] and after.run_dir == retried.run_dir  # the retry's table is reused


def test_transient_failure_is_retried_on_the_next_run(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    recipe = write_recipe(tmp_path)
    first = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert table(first.run_dir, "transcripts")["slowvid0008"]["status"] == "failed"
    del yt.api_errors["slowvid0008"]  # YouTube answers again
    yt.aliases["slowvid0008"] = "insulin0001"
    asked_before = len(yt.api_lists)
    second = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert second.executed == ["sources", "transcripts"] and yt.api_lists[asked_before:] == ["slowvid0008"]
    assert table(second.run_dir, "transcripts")["slowvid0008"]["status"] == "ok"
    third = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert third.executed == [] and third.run_dir == second.run_dir


def test_transient_single_video_failure_is_not_remembered(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    watch = "https://www.youtube.com/watch?v=insulin0001"
    yt.ytdlp_errors[watch] = [DownloadError("ERROR: [youtube] insulin0001: HTTP Error 503: Service Unavailable")] * 5
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: yt-one\ncreator:\n  name: Dr. Demo\nsources:\n  - type: youtube\n"
        "    videos: [insulin0001]\ntranscripts:\n  retries: 2\n",
        encoding="utf-8",
    )
    first = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    row = table(first.run_dir, "sources")["insulin0001"]
    assert row["status"] == "failed" and row["reason"].startswith("could not list: HTTP Error 503")
    assert yt.ytdlp_calls.count(watch) == 3 and len(clock.sleeps) == 2  # 1 try + 2 retries
    second = run_recipe(recipe, paths, until="transcripts", options=QUIET)  # YouTube is back
    assert table(second.run_dir, "transcripts")["insulin0001"]["status"] == "ok"


def test_a_finished_live_stream_is_fetched_later(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    recipe = write_recipe(tmp_path, extra="    exclude_ids: [slowvid0008]\n")
    run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert "livenow0005" not in yt.api_lists
    live = next(e for e in yt.listing["entries"] if e["id"] == "livenow0005")
    live.update(live_status="was_live", duration=3600.0)
    yt.aliases["livenow0005"] = "ketones0007"
    result = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert table(result.run_dir, "transcripts")["livenow0005"]["status"] == "ok"


def test_request_timeout_is_real_and_retryable() -> None:
    """The session handed to youtube-transcript-api times out against a real slow HTTP server."""
    import http.server
    import threading
    import time

    from engine.errors import is_transient
    from engine.sources.fetch import _timeout_session

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(1.0)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(requests.exceptions.Timeout) as info:
            _timeout_session(0.2).get(f"http://127.0.0.1:{server.server_port}/timedtext")
        assert time.monotonic() - started < 0.9 and is_transient(info.value)
    finally:
        server.shutdown()
        server.server_close()


def test_options_are_accepted_by_real_ytdlp() -> None:
    """Our option dicts construct a real YoutubeDL (no network is touched)."""
    from yt_dlp import YoutubeDL

    with YoutubeDL(Lister(timeout=7.0).options(dates=True)) as ydl:
        assert ydl.params["extract_flat"] == "in_playlist" and ydl.params["socket_timeout"] == 7.0
        assert ydl.params["extractor_args"] == {"youtubetab": {"approximate_date": [""]}}
