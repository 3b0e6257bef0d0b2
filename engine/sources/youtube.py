"""Listing YouTube sources with yt-dlp's Python API (flat extraction: no per-video page loads).

A source is a channel, a playlist, or explicit video URLs/ids. Each listed video becomes an
entry {id, title, duration, upload_date, availability, url}; `availability` is one of
public / members-only / private / unavailable / live, mapped from what yt-dlp reports (badges in
the listing, `live_status`, or for single videos the error it raises). Filters then mark entries
'dropped' with the rule that dropped them. yt_dlp is imported lazily (it is slow to import).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TypeVar

from engine.errors import RecipeError, TransientError, is_transient
from engine.retry import call_with_retries
from engine.sources.access import Access
from engine.sources.filters import title_id_reason

VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
ID_IN_URL = re.compile(r"(?:v=|youtu\.be/|/shorts/|/live/|/embed/)([A-Za-z0-9_-]{11})")
CHANNEL_ROOT = re.compile(
    r"^(https?://(?:www\.|m\.)?youtube\.com/(?:@[^/?#]+|channel/[^/?#]+|c/[^/?#]+|user/[^/?#]+))/?$"
)
PLACEHOLDER_TITLES = {
    "[private video]": "private",
    "[deleted video]": "unavailable",
    "[unavailable video]": "unavailable",
}
# Videos an account may be allowed to watch: cookies of that account (transcripts.cookies) open them.
SIGN_IN = ("members-only", "private", "age-restricted")
SKIPPED = (*SIGN_IN, "unavailable", "live")
# Worth remembering across runs; a live stream becomes an ordinary video once it ends.
PERSISTENT = (*SIGN_IN, "unavailable")
DOCS = "docs/troubleshooting.md"
COOKIES_REMEDY = (
    "set transcripts.cookies to a browser or cookies.txt of an account that can watch it, "
    "then recipe run --retry-failed"
)
SIGNED_IN_REMEDY = (
    "the account of transcripts.cookies cannot watch it (sign in as one that can and export fresh cookies), "
    "then recipe run --retry-failed"
)
PROXY_REMEDY = f"YouTube blocks this IP for transcripts: set transcripts.proxy (see {DOCS})"
PROXIED_REMEDY = (
    "YouTube blocks this IP for transcripts, through transcripts.proxy too: "
    f"use a rotating residential proxy (see {DOCS})"
)

# Error text of single-video extraction, used only when yt-dlp gives no structured field
# (a listing carries badges instead). Order matters: the first match wins.
ERROR_AVAILABILITY = (
    (re.compile(r"members[- ]only|channel's members|join this channel", re.I), "members-only"),
    (re.compile(r"private video|video is private", re.I), "private"),
    (re.compile(r"live event will begin|premieres in|is live|live stream", re.I), "live"),
    (re.compile(r"sign in to confirm your age|age[- ]restricted|inappropriate for some users", re.I), "age-restricted"),
    (
        re.compile(
            r"video unavailable|has been removed|no longer available|terminated|not available in your country",
            re.I,
        ),
        "unavailable",
    ),
)
# yt-dlp's words when YouTube refuses this IP (its bot check): a proxy or signed-in cookies get past it.
BLOCKED_TEXT = re.compile(r"confirm you(?:'|’)?re not a bot", re.I)
# yt-dlp failures whose message is all that says "try again later" (see transient_by_text).
TRANSIENT_TEXT = re.compile(
    r"HTTP Error (429|5\d\d)|timed? ?out|temporar|connection (reset|refused|aborted)|"
    r"network is unreachable|Remote end closed",
    re.I,
)
T = TypeVar("T")


log = logging.getLogger("engine.sources.youtube")


class YtdlpLogger:
    """yt-dlp prints errors to stderr even when quiet; we report them ourselves, once."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug
    warning = debug
    error = debug


def ytdlp_class() -> Any:
    from yt_dlp import YoutubeDL  # lazy: yt-dlp takes a while to import

    return YoutubeDL


def video_id(text: str) -> str | None:
    """An 11-character id from a bare id or any common YouTube video URL."""
    text = text.strip()
    if VIDEO_ID.match(text):
        return text
    match = ID_IN_URL.search(text)
    return match.group(1) if match else None


def listing_url(url: str) -> str:
    """A channel root lists its tabs (videos, shorts, live) as nested playlists; ask for videos."""
    match = CHANNEL_ROOT.match(url.strip())
    return f"{match.group(1)}/videos" if match else url.strip()


def transient_by_text(fn: Callable[[], T]) -> Callable[[], T]:
    """`fn` (a yt-dlp call) with failures that only its text calls transient raised as TransientError.

    yt-dlp often reports a 429, a 5xx or a timeout as a DownloadError whose message is all that
    is left of the cause; is_transient decides from classes and statuses, so we mark these here.
    """

    def call() -> T:
        try:
            return fn()
        except Exception as e:
            if not is_transient(e) and TRANSIENT_TEXT.search(str(e)):
                raise TransientError(str(e)) from e
            raise

    return call


def availability(entry: dict) -> str:
    """public / members-only / private / unavailable / live for one listed entry."""
    raw = entry.get("availability")
    if raw in ("subscriber_only", "premium_only"):
        return "members-only"
    if raw == "private":
        return "private"
    if raw == "needs_auth":  # what yt-dlp reports for an age-gated video
        return "age-restricted"
    placeholder = PLACEHOLDER_TITLES.get(str(entry.get("title") or "").strip().lower())
    if placeholder:
        return placeholder
    if entry.get("live_status") in ("is_live", "is_upcoming", "post_live"):
        return "live"
    return "public"


def remedy(availability: str | None, signed_in: bool) -> str | None:
    """What the user can do about a video skipped for this availability, if anything."""
    if availability not in SIGN_IN:
        return None
    return SIGNED_IN_REMEDY if signed_in else COOKIES_REMEDY


def blocked_remedy(proxied: bool) -> str:
    return PROXIED_REMEDY if proxied else PROXY_REMEDY


def error_availability(message: str) -> str | None:
    for pattern, label in ERROR_AVAILABILITY:
        if pattern.search(message):
            return label
    return None


def _upload_date(entry: dict) -> str | None:
    """YYYY-MM-DD from upload_date, else from (approximate) timestamps."""
    raw = entry.get("upload_date")
    if isinstance(raw, str) and len(raw) == 8 and raw.isdigit():
        return f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    stamp = entry.get("timestamp") or entry.get("release_timestamp")
    if isinstance(stamp, (int, float)):
        return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d")
    return None


def to_entry(raw: dict, source_url: str) -> dict:
    vid = raw.get("id") or video_id(str(raw.get("url") or ""))
    duration = raw.get("duration")
    return {
        "id": vid,
        "title": str(raw.get("title") or vid),
        "duration": float(duration) if duration else None,
        "upload_date": _upload_date(raw),
        "exact_date": bool(raw.get("upload_date")),
        "availability": availability(raw),
        "url": f"https://www.youtube.com/watch?v={vid}",
        "source_url": source_url,
    }


def flatten(info: dict) -> Iterable[dict]:
    """Video entries of a (possibly nested) playlist; tabs of a channel are playlists too."""
    entries = info.get("entries")
    if entries is None:
        if info.get("id"):
            yield info
        return
    for entry in entries:
        if not entry:
            continue  # yt-dlp yields None for entries it could not read
        if entry.get("_type") == "playlist" or entry.get("entries") is not None:
            yield from flatten(entry)
        elif entry.get("ie_key") in (None, "Youtube") or video_id(str(entry.get("id") or "")):
            yield entry


class Lister:
    """Lists sources through one YoutubeDL per call, with retries on transient failures."""

    def __init__(
        self,
        retries: int = 4,
        backoff: float = 2.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] | None = None,
        limiter: Any = None,
        access: Access | None = None,
    ):
        import time

        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.access = access or Access()
        self.sleep = sleep or time.sleep
        self.limiter = limiter
        self.delays: list[float] = []

    def options(self, dates: bool) -> dict:
        opts: dict[str, Any] = {
            "extract_flat": "in_playlist",
            "skip_download": True,
            "quiet": True,
            "no_warnings": True,
            "socket_timeout": self.timeout,
            "ignoreerrors": False,
            "logger": YtdlpLogger(),
            **self.access.ytdlp_options(),
        }
        if dates:  # flat listings carry no dates unless yt-dlp parses the "3 weeks ago" text
            opts["extractor_args"] = {"youtubetab": {"approximate_date": [""]}}
        return opts

    def extract(self, url: str, dates: bool = False) -> dict:
        """extract_info(url, download=False), retried with backoff on transient errors."""

        def once() -> dict:
            with ytdlp_class()(self.options(dates)) as ydl:
                return ydl.extract_info(url, download=False) or {}

        def on_retry(error: BaseException, attempt: int, delay: float) -> None:
            log.warning(
                "listing %s: %s; retry %d/%d in %.1fs",
                url,
                self.access.scrub(short_error(error)),
                attempt + 1,
                self.retries,
                delay,
            )
            self.delays.append(delay)

        return call_with_retries(
            transient_by_text(once),
            is_transient,
            self.retries,
            self.backoff,
            self.sleep,
            self.limiter,
            on_retry=on_retry,
        )

    def list_url(self, url: str, dates: bool = False) -> list[dict]:
        try:
            info = self.extract(listing_url(url), dates)
        except Exception as e:
            raise RecipeError(f"could not list {url}: {self._why(e)}") from e
        return [self._mark(to_entry(raw, url)) for raw in flatten(info)]

    def _why(self, error: BaseException) -> str:
        text = self.access.scrub(short_error(error))
        if BLOCKED_TEXT.search(str(error)):
            return f"{text}; {blocked_remedy(self.access.proxied)}"
        return f"{text}; check the URL and your network, then run the same command again"

    def _mark(self, entry: dict) -> dict:
        """With cookies, a members-only/private/age-restricted badge is worth a try (see apply_filters)."""
        return {**entry, "signed_in": True} if self.access.signed_in else entry

    def list_video(self, ref: str) -> dict:
        """One explicit video; a video yt-dlp refuses becomes an entry with the mapped reason."""
        vid = video_id(ref)
        url = f"https://www.youtube.com/watch?v={vid}" if vid else ref
        try:
            return self._mark(to_entry(self.extract(url), ref))
        except Exception as e:  # noqa: BLE001 - any refusal is recorded on the entry, the listing goes on
            # retries are spent on transient errors: "unknown" fails this run only, remembered nowhere
            label = "unknown" if is_transient(e) else error_availability(str(e)) or "unavailable"
            error = self.access.scrub(short_error(e))
            if BLOCKED_TEXT.search(str(e)):
                label, error = "unknown", f"{error}; {blocked_remedy(self.access.proxied)}"  # not the video's fault
            entry = to_entry({"id": vid or ref, "title": vid or ref}, ref)
            return self._mark({**entry, "availability": label, "error": error})


def format_counts(counts: Counter) -> str:
    """' (members-only 2, private 1)' for summary log lines; empty when there is nothing to say."""
    return f" ({', '.join(f'{k} {n}' for k, n in counts.most_common())})" if counts else ""


def short_error(error: BaseException | str) -> str:
    text = " ".join(str(error).split())
    text = re.sub(r"\s*\(caused by .*$", "", text)  # yt-dlp repeats the cause verbatim
    return re.sub(r"^ERROR:\s*(\[[^\]]+\]\s*)?([A-Za-z0-9_-]{11}:\s*)?", "", text)[:300]


def filter_reason(entry: dict, source: Any) -> str | None:
    """Why a source's filters drop this entry, or None to keep it."""
    reason = title_id_reason(entry["title"], [entry["id"]], source)
    if reason:
        return reason
    duration = entry["duration"]
    if source.min_duration is not None and duration is not None and duration < source.min_duration:
        return f"shorter than min_duration ({duration:.0f}s < {source.min_duration:.0f}s)"
    if source.max_duration is not None and duration is not None and duration > source.max_duration:
        return f"longer than max_duration ({duration:.0f}s > {source.max_duration:.0f}s)"
    return _date_reason(entry["upload_date"], source)


def _date_reason(date: str | None, source: Any) -> str | None:
    if not (source.after or source.before):
        return None
    if date is None:
        return "upload date unknown (after/before set)"
    if source.after and date < source.after:
        return f"uploaded {date}, before `after` {source.after}"
    if source.before and date >= source.before:
        return f"uploaded {date}, not before `before` {source.before}"
    return None


def _worth_trying(entry: dict) -> bool:
    """A listing's badge (members-only, ...) with cookies set: the account may be allowed in. A
    refusal YouTube gave this account (`error`) is not retried until --retry-failed."""
    return bool(entry.get("signed_in")) and entry["availability"] in SIGN_IN and not entry.get("error")


def _skip_reason(entry: dict) -> str:
    """'members-only: set transcripts.cookies ... (YouTube's words)'; the remedy only where one exists."""
    fix = remedy(entry["availability"], bool(entry.get("signed_in")))
    error = entry.get("error")
    if fix and not (error and error.startswith(fix)):  # a refusal found at fetch time names its remedy already
        return f"{entry['availability']}: {fix}" + (f" ({error})" if error else "")
    return entry["availability"] + (f": {error}" if error else "")


def apply_filters(entries: list[dict], source: Any) -> list[dict]:
    """Mark each entry status ok / skipped (availability) / dropped (filters, max_videos)."""
    out, kept = [], 0
    for entry in entries:
        reason = None
        status = "ok"
        if entry["availability"] == "unknown":
            status, reason = "failed", f"could not list: {entry.get('error')}"
        elif entry["availability"] in SKIPPED and not _worth_trying(entry):
            status, reason = "skipped", _skip_reason(entry)
        elif (reason := filter_reason(entry, source)) is not None:
            status = "dropped"
        elif source.max_videos is not None and kept >= source.max_videos:
            status, reason = "dropped", f"beyond max_videos ({source.max_videos})"
        else:
            kept += 1
        out.append({**entry, "status": status, "reason": reason})
    return out
