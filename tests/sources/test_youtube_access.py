"""YouTube as it behaves for real users (issue 13, part 5): blocked cloud IPs, proxies, cookies.

The libraries are faked at their call boundary by test_youtube.FakeYouTube (recorded-shaped
listings and captions; youtube-transcript-api's own TranscriptList, 429 handling and exceptions).
Full runs go through run_recipe on real DuckDB files; `recipe validate` runs through the CLI.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import duckdb
import pytest
import requests
import youtube_transcript_api as yta
from click.testing import CliRunner
from test_youtube import (  # noqa: F401 - the same fixtures: the fake YouTube and its clock
    CHANNEL,
    COOKIES_FIX,
    MEMBERS_TEXT,
    QUIET,
    FakeClock,
    FakeYouTube,
    Source,
    fetcher,
    table,
)
from yt_dlp.utils import DownloadError

from engine.cli import main
from engine.errors import FetchFailed
from engine.pipeline.runner import Paths, run_recipe
from engine.sources.access import Access
from engine.sources.fetch import TranscriptFetcher
from engine.sources.settings import Browser
from engine.sources.youtube import PROXY_REMEDY, Lister, apply_filters
from engine.steps.base import RunOptions

PROXY_URL = "http://yt-user-7f3k:Pr0xy-Passw0rd-91xq@proxy.example.net:8080"
PROXY_PASSWORD = "Pr0xy-Passw0rd-91xq"
BOT_CHECK = (
    "ERROR: [youtube] {vid}: Sign in to confirm you’re not a bot. Use --cookies-from-browser or --cookies for the "
    "authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how to "
    "manually pass cookies. Also see  https://github.com/yt-dlp/yt-dlp/wiki/Extractors#exporting-youtube-cookies  "
    "for tips on effectively exporting YouTube cookies"
)


def recipe_with(tmp_path: Path, transcripts: str, sources: str = f"  - type: youtube\n    url: {CHANNEL}\n") -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"name: yt-access\ncreator:\n  name: Dr. Demo\nsources:\n{sources}transcripts:\n  retries: 1\n{transcripts}",
        encoding="utf-8",
    )
    return path


def every_text_written(root: Path, skip: tuple[str, ...] = ()) -> str:
    """Every file under `root` as text, plus every row of every table of every DuckDB file in it."""
    texts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip):
        texts.append(path.read_bytes().decode("utf-8", "replace"))
        if path.suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
                    texts.extend(str(row) for row in con.execute(f'SELECT * FROM "{name}"').fetchall())
    return "\n".join(texts)


# -- blocked IPs -------------------------------------------------------------------------------


def test_ip_blocked_by_youtube_names_the_proxy_remedy(yt: FakeYouTube) -> None:
    """The library's own IpBlocked (YouTube's 429 on every try), then yt-dlp's bot check."""
    yt.timedtext_status["insulin0001"] = [429] * 10
    yt.ytdlp_errors["https://www.youtube.com/watch?v=insulin0001"] = [DownloadError(BOT_CHECK.format(vid="x"))]
    f = fetcher(FakeClock(), retries=2)
    with pytest.raises(FetchFailed) as info:
        f.fetch("insulin0001")
    assert info.value.category == "blocked IP" and not info.value.permanent  # the next run asks again
    assert info.value.reason.startswith(PROXY_REMEDY + " (youtube-transcript-api: YouTube is blocking requests")
    assert PROXY_REMEDY == "YouTube blocks this IP for transcripts: set transcripts.proxy (see docs/troubleshooting.md)"
    assert yt.timedtext_gets == ["insulin0001"] * 3


def test_request_blocked_on_listing_stops_asking_the_api_this_run(yt: FakeYouTube) -> None:
    yt.api_errors["insulin0001"] = lambda v: yta.RequestBlocked(v)
    yt.api_errors["fastmyth002"] = lambda v: yta.RequestBlocked(v)
    yt.aliases["fastmyth002"] = "ghrelin0011"  # yt-dlp still gets the second video's subtitles
    f = fetcher(FakeClock(), retries=1)
    with pytest.raises(FetchFailed) as info:
        f.fetch("insulin0001")
    assert info.value.category == "blocked IP" and info.value.reason.startswith(PROXY_REMEDY)
    got = f.fetch("fastmyth002")
    assert got.via == "yt-dlp"
    assert yt.api_lists == ["insulin0001"] * 2  # one try and one retry; the next video skips the API


def test_blocked_through_a_proxy_says_so(yt: FakeYouTube) -> None:
    yt.api_errors["insulin0001"] = lambda v: yta.IpBlocked(v)
    f = fetcher(FakeClock(), retries=0, fallback_ytdlp=False, access=Access(proxy_url=PROXY_URL))
    with pytest.raises(FetchFailed) as info:
        f.fetch("insulin0001")
    assert info.value.reason.startswith("YouTube blocks this IP for transcripts, through transcripts.proxy too")


# -- proxy -------------------------------------------------------------------------------------


def test_proxy_from_env_reaches_both_libraries_and_no_file(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YT_PROXY", PROXY_URL)
    # A hostile proxy that echoes its URL in errors, as urllib3 and yt-dlp do.
    yt.api_errors["slowvid0008"] = lambda v: requests.exceptions.ProxyError(
        f"Unable to connect to proxy {PROXY_URL}/ (password {PROXY_PASSWORD})"
    )
    yt.ytdlp_errors["https://www.youtube.com/watch?v=slowvid0008"] = [
        DownloadError(f"ERROR: [youtube] slowvid0008: Unable to connect to proxy {PROXY_URL}")
    ] * 5
    recipe = recipe_with(tmp_path, "  proxy: {env: YT_PROXY}\n")
    result = run_recipe(recipe, paths, until="transcripts", options=QUIET)

    configs = [c for c in yt.api_proxy_configs if c is not None]
    assert len(yt.api_proxy_configs) == 1 and len(configs) == 1
    assert configs[0].to_requests_dict() == {"http": PROXY_URL, "https": PROXY_URL}
    assert yt.ytdlp_params and all(p.get("proxy") == PROXY_URL for p in yt.ytdlp_params)  # listing + subtitles
    assert {p.get("extract_flat") for p in yt.ytdlp_params} == {"in_playlist", None}
    rows = table(result.run_dir, "transcripts")
    assert rows["insulin0001"]["status"] == "ok" and rows["slowvid0008"]["status"] == "failed"

    written = every_text_written(paths.runs_dir)
    assert "[REDACTED" in table(result.run_dir, "transcripts")["slowvid0008"]["reason"]
    for secret in (PROXY_URL, PROXY_PASSWORD, "yt-user-7f3k"):
        assert secret not in written
        assert secret not in (result.run_dir / "run.log").read_text()


def test_proxy_is_unkeyed(yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("YT_PROXY", PROXY_URL)
    yt.timedtext_status.clear()  # no transient failure: the second run would rightly ask again
    del yt.api_errors["slowvid0008"]
    yt.aliases["slowvid0008"] = "insulin0001"
    run_recipe(recipe_with(tmp_path, ""), paths, until="transcripts", options=QUIET)
    # the second run settles what the first found (videos yt-dlp calls removed are remembered)
    first = run_recipe(recipe_with(tmp_path, ""), paths, until="transcripts", options=QUIET)
    asked = len(yt.api_lists)
    again = run_recipe(recipe_with(tmp_path, "  proxy: {env: YT_PROXY}\n"), paths, until="transcripts", options=QUIET)
    assert again.executed == [] and again.run_dir == first.run_dir and len(yt.api_lists) == asked


def test_webshare_proxy_from_env(yt: FakeYouTube, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.pipeline.recipes import load_recipe

    monkeypatch.setenv("WS_USER", "wsuser")
    monkeypatch.setenv("WS_PASS", "ws-pass-4411")
    recipe = recipe_with(
        tmp_path, "  proxy:\n    webshare: {username_env: WS_USER, password_env: WS_PASS, locations: [us]}\n"
    )
    cfg = load_recipe(recipe).transcripts
    f = TranscriptFetcher.from_config(cfg, tmp_path, sleep=FakeClock().sleep, clock=FakeClock())
    f.fetch("insulin0001")
    config = yt.api_proxy_configs[0]
    assert isinstance(config, yta.proxies.WebshareProxyConfig) and config.retries_when_blocked == 10
    assert config.url == "http://wsuser-US-rotate:ws-pass-4411@p.webshare.io:80/"
    assert "ws-pass-4411" not in repr(f)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "transcripts.proxy.env: the environment variable YT_PROXY is not set; export it before running"),
        ("proxy.example.net:8080", "YT_PROXY does not hold a proxy URL (scheme://[user:password@]host:port"),
        ("ftp://u:secretpw@proxy.example.net:21", "YT_PROXY does not hold a proxy URL"),
        ("http://u:secretpw@proxy.example.net:80x", "YT_PROXY does not hold a proxy URL"),
    ],
)
def test_a_bad_proxy_variable_is_a_located_error_without_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
) -> None:
    if value is None:
        monkeypatch.delenv("YT_PROXY", raising=False)
    else:
        monkeypatch.setenv("YT_PROXY", value)
    recipe = recipe_with(tmp_path, "  proxy:\n    env: YT_PROXY\n")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 1 and f"{recipe}:10:5: transcripts.proxy.env" in result.output
    assert message in result.output and "Traceback" not in result.output
    assert "secretpw" not in result.output and "proxy.example.net" not in result.output


# -- cookies -----------------------------------------------------------------------------------


def test_browser_cookies_reach_ytdlp_and_open_members_only_videos(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    yt.members_only.add("members0003")
    yt.aliases["members0003"] = "ghrelin0011"  # what a member's yt-dlp sees: the recorded subtitles
    recipe = recipe_with(tmp_path, "  cookies: {from_browser: firefox}\n")
    result = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert all(p["cookiesfrombrowser"] == ("firefox", None, None, None) for p in yt.ytdlp_params)
    assert table(result.run_dir, "sources")["members0003"]["status"] == "ok"  # the badge is worth a try
    row = table(result.run_dir, "transcripts")["members0003"]
    assert (row["status"], row["via"]) == ("ok", "yt-dlp")  # the API cannot use cookies; yt-dlp can
    assert row["text"].startswith("so hunger is not constant")


def test_cookies_file_reaches_ytdlp_and_its_path_is_written_nowhere(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    secret_dir = tmp_path / "private-cookies-dir-8812"
    secret_dir.mkdir()
    (secret_dir / "yt.txt").write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tabc\n")
    yt.members_only.add("members0003")
    yt.ytdlp_errors["https://www.youtube.com/watch?v=members0003"] = [
        DownloadError(f"ERROR: [youtube] members0003: {MEMBERS_TEXT} (cookies from {secret_dir}/yt.txt)")
    ]  # this account is not a member
    recipe = recipe_with(tmp_path, "  cookies:\n    file: private-cookies-dir-8812/yt.txt\n")
    result = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert {p["cookiefile"] for p in yt.ytdlp_params} == {str(secret_dir / "yt.txt")}
    row = table(result.run_dir, "transcripts")["members0003"]
    assert row["status"] == "skipped"
    assert row["reason"].startswith(
        "members-only: the account of transcripts.cookies cannot watch it (sign in as one that can and export "
        "fresh cookies), then recipe run --retry-failed"
    )
    # The recipe as written is kept verbatim (recipe.yaml, and report.html quotes it); nothing the
    # engine writes itself names the file: tables, store, logs, manifest, metrics, resolved.json.
    written = every_text_written(paths.runs_dir, skip=("recipe.yaml", "report.html"))
    assert "private-cookies-dir-8812" not in written and "\tSID\t" not in written
    assert json.loads((result.run_dir / "resolved.json").read_text())["transcripts"]["cookies"]["file"] == (
        "(not recorded)"
    )


def test_cookies_are_accepted_by_real_ytdlp(tmp_path: Path) -> None:
    from yt_dlp import YoutubeDL

    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tabc\n")
    access = Access(proxy_url=PROXY_URL, cookies={"cookiefile": str(cookies)})
    with YoutubeDL(Lister(access=access).options(dates=False)) as ydl:
        assert ydl.params["proxy"] == PROXY_URL
        assert [c.name for c in ydl.cookiejar] == ["SID"]


def test_browser_list_matches_ytdlp() -> None:
    from yt_dlp.cookies import SUPPORTED_BROWSERS

    assert set(typing.get_args(Browser)) == set(SUPPORTED_BROWSERS)


def test_missing_cookies_file_and_unknown_browser_are_located_errors(tmp_path: Path) -> None:
    recipe = recipe_with(tmp_path, "  cookies:\n    file: exports/cookies.txt\n")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{recipe}:10:5: transcripts.cookies.file: no cookies file at {tmp_path / 'exports/cookies.txt'}" in (
        result.output
    )
    recipe = recipe_with(tmp_path, "  cookies: {from_browser: netscape}\n")
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        f"{recipe}:9:13: transcripts.cookies.from_browser: 'netscape' is not one of 'brave', 'chrome'" in result.output
    )
    for both in ("{from_browser: firefox, file: c.txt}", "{}"):
        recipe = recipe_with(tmp_path, f"  cookies: {both}\n")
        result = CliRunner().invoke(main, ["validate", str(recipe)])
        assert result.exit_code == 1 and "transcripts.cookies: set exactly one of `from_browser`" in result.output


# -- members-only, private and age-restricted reasons ---------------------------------------


def test_signed_out_skips_name_the_cookies_remedy(yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths) -> None:  # noqa: ANN001
    yt.api_errors["insulin0001"] = lambda v: yta.AgeRestricted(v)
    recipe = recipe_with(tmp_path, "")
    result = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    src = table(result.run_dir, "sources")
    assert src["members0003"]["reason"] == f"members-only: {COOKIES_FIX}"
    assert src["private0004"]["reason"] == f"private: {COOKIES_FIX}"
    assert src["livenow0005"]["reason"] == "live"  # no account helps: no remedy
    row = table(result.run_dir, "transcripts")["insulin0001"]
    assert row["status"] == "skipped" and row["reason"].startswith(f"age-restricted: {COOKIES_FIX} (")
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["transcripts"]
    assert metrics["skipped"]["age-restricted"] == 1
    # remembered like members-only: the next listing skips it without asking YouTube
    again = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert table(again.run_dir, "sources")["insulin0001"]["reason"].startswith(f"age-restricted: {COOKIES_FIX}")
    assert yt.api_lists.count("insulin0001") == 1
    run_recipe(recipe, paths, until="transcripts", options=RunOptions(quiet=True, retry_failed=True))
    assert yt.api_lists.count("insulin0001") == 2


def test_age_gate_in_ytdlp_listing() -> None:
    from engine.sources.youtube import availability, error_availability

    assert availability({"availability": "needs_auth"}) == "age-restricted"
    assert error_availability("Sign in to confirm your age. This video may be inappropriate") == "age-restricted"
    assert error_availability(BOT_CHECK.format(vid="x")) is None  # a blocked IP is not the video's fault


def test_bot_check_on_an_explicit_video_is_a_failure_with_the_proxy_remedy(yt: FakeYouTube) -> None:
    watch = "https://www.youtube.com/watch?v=insulin0001"
    yt.ytdlp_errors[watch] = [DownloadError(BOT_CHECK.format(vid="insulin0001"))]
    entry = Lister(sleep=lambda s: None).list_video("insulin0001")
    marked = apply_filters([entry], Source())[0]
    assert marked["status"] == "failed" and PROXY_REMEDY in marked["reason"]


# -- the docs ----------------------------------------------------------------------------------


def test_troubleshooting_snippets_are_valid_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `transcripts:` snippet of "Videos are skipped", commented alternatives included, validates."""
    import re

    docs = (Path(__file__).parents[2] / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    section = docs.split("## Videos are skipped", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```yaml\n(transcripts:\n.*?)```", section, re.S)
    variants = []
    for snippet in snippets:
        lines = snippet.splitlines()
        variants.append("\n".join(lines))
        for line in lines:  # each commented alternative on its own
            if line.lstrip().startswith("# cookies:"):
                variants.append("\n".join([lines[0], line.replace("# ", "", 1).split("   #")[0]]))
    assert len(snippets) == 3 and len(variants) == 5
    for name in ("YT_PROXY", "WEBSHARE_USER", "WEBSHARE_PASSWORD"):
        monkeypatch.setenv(name, "http://u:p@proxy.example.net:8080")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "youtube-cookies.txt").write_text("# Netscape HTTP Cookie File\n")
    for variant in variants:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(
            f"name: docs\ncreator:\n  name: Dr. Demo\nsources:\n  - type: youtube\n    url: {CHANNEL}\n{variant}\n",
            encoding="utf-8",
        )
        result = CliRunner().invoke(main, ["validate", str(recipe)])
        assert result.exit_code == 0, (variant, result.output)


def test_a_refusal_found_at_fetch_names_its_remedy_once_when_remembered(
    yt: FakeYouTube, clock: FakeClock, tmp_path: Path, paths: Paths
) -> None:
    yt.api_errors["insulin0001"] = lambda v: yta.VideoUnplayable(v, MEMBERS_TEXT, [])
    recipe = recipe_with(tmp_path, "", sources="  - type: youtube\n    videos: [insulin0001]\n")
    first = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    assert table(first.run_dir, "transcripts")["insulin0001"]["reason"].startswith(f"members-only: {COOKIES_FIX} (")
    second = run_recipe(recipe, paths, until="transcripts", options=QUIET)
    reason = table(second.run_dir, "sources")["insulin0001"]["reason"]
    assert reason.startswith(f"members-only: {COOKIES_FIX} (") and reason.count(COOKIES_FIX) == 1
    assert yt.api_lists == ["insulin0001"]


def test_a_recipe_of_local_files_never_reads_the_proxy_variable(local_recipe: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("YT_PROXY", raising=False)
    text = local_recipe.read_text(encoding="utf-8") + "transcripts:\n  proxy: {env: YT_PROXY}\n"
    local_recipe.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(local_recipe)])
    assert result.exit_code == 0, result.output
