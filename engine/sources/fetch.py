"""Fetching one video's transcript: youtube-transcript-api first, yt-dlp subtitles as fallback.

Every request goes through one RateLimiter and is retried with exponential backoff and jitter
on transient failures (network errors, HTTP 429/5xx, timeouts). A video that cannot be fetched
raises FetchFailed with a short `category` (for the summary), a readable `reason`, whether it
is `permanent` (cache it, do not ask again) and the `availability` it revealed, if any.
Sleep, clock and rng are injectable so tests prove the backoff without waiting.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from engine.errors import FetchFailed, MalformedTranscript, TransientError, is_transient
from engine.retry import RateLimiter, call_with_retries
from engine.sources.access import Access, youtube_access
from engine.sources.formats import parse_text
from engine.sources.youtube import (
    BLOCKED_TEXT,
    SIGN_IN,
    YtdlpLogger,
    blocked_remedy,
    error_availability,
    remedy,
    short_error,
    transient_by_text,
    ytdlp_class,
)

API_CATEGORY = {
    "TranscriptsDisabled": "transcripts disabled",
    "NoTranscriptFound": "no transcript",
    "VideoUnavailable": "unavailable",
    "AgeRestricted": "age-restricted",
    "InvalidVideoId": "invalid video id",
    "PoTokenRequired": "po token required",
    "YouTubeDataUnparsable": "unparsable response",
}
# yt-dlp would fail the same way; with cookies (yt-dlp only), it may get into SIGN_IN videos.
UNREACHABLE = (*SIGN_IN, "unavailable", "live")
UNREACHABLE_SIGNED_IN = ("unavailable", "live")
BLOCKED = "blocked IP"
SUB_FORMATS = ("json3", "vtt")
log = logging.getLogger("engine.sources.youtube")


@dataclass
class Fetched:
    segments: list[dict]
    kind: str  # manual | generated
    language: str
    via: str  # youtube-transcript-api | yt-dlp


@dataclass
class TranscriptFetcher:
    languages: tuple[str, ...] = ("en",)
    prefer_manual: bool = True
    fallback_ytdlp: bool = True
    requests_per_second: float = 1.0
    retries: int = 4
    backoff: float = 2.0
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    delays: list[float] = field(default_factory=list)  # every backoff slept, for metrics and tests
    requests: int = 0
    access: Access = field(default_factory=Access, repr=False)  # proxy and cookies (transcripts.proxy/cookies)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.requests_per_second, clock=self.clock, sleep=self.sleep)
        self._api: Any = None
        # Once YouTube has refused this IP past every retry, the API is not asked again this run:
        # a blocked cloud IP would otherwise cost every video the whole backoff (~30 s each).
        self.blocked: FetchFailed | None = None

    @classmethod
    def from_config(cls, cfg: Any, base_dir: Path = Path("."), **kwargs: Any) -> TranscriptFetcher:
        kwargs.setdefault("access", youtube_access(cfg, base_dir))
        return cls(
            tuple(cfg.languages),
            cfg.prefer_manual,
            cfg.fallback_ytdlp,
            cfg.requests_per_second,
            cfg.retries,
            cfg.backoff,
            cfg.timeout,
            **kwargs,
        )

    def call(self, fn: Callable[[], Any]) -> Any:
        """One rate-limited request, retried with backoff while it fails transiently.

        Transient failures that outlast the retries become a FetchFailed that is not permanent:
        this run records the video as failed, the next one asks again.
        """

        def counted() -> Any:
            self.requests += 1
            return fn()

        def on_retry(error: BaseException, attempt: int, delay: float) -> None:
            log.info("%s; retry %d/%d in %.1fs", self.access.scrub(_short(error)), attempt + 1, self.retries, delay)
            self.delays.append(delay)

        try:
            return call_with_retries(
                counted, is_transient, self.retries, self.backoff, self.sleep, self.limiter, self.rng, on_retry
            )
        except Exception as e:
            if is_transient(e):  # still transient: the retries ran out
                raise FetchFailed(_transient_category(e), self.access.scrub(_short(e)), permanent=False) from None
            raise

    def fetch(self, video_id: str) -> Fetched:
        """The video's transcript, or FetchFailed whose reason leads with the remedy, if there is one."""
        try:
            return self._fetch(video_id)
        except FetchFailed as failure:
            raise self._with_remedy(failure) from None

    def _fetch(self, video_id: str) -> Fetched:
        try:
            return self._via_api(video_id)
        except FetchFailed as first:
            unreachable = UNREACHABLE_SIGNED_IN if self.access.signed_in else UNREACHABLE
            if not self.fallback_ytdlp or first.availability in unreachable:
                raise
            try:
                return self._via_ytdlp(video_id)
            except FetchFailed as second:
                _raise_both(first, second)

    def _with_remedy(self, failure: FetchFailed) -> FetchFailed:
        fix: str | None
        if failure.category == BLOCKED:
            fix = blocked_remedy(self.access.proxied)
        else:
            fix = remedy(failure.availability, self.access.signed_in)
        reason = self.access.scrub(failure.reason)
        if fix:
            reason = f"{fix} ({reason})"
        return FetchFailed(failure.category, reason, failure.permanent, failure.availability)

    # -- youtube-transcript-api ----------------------------------------------------------------

    def _via_api(self, video_id: str) -> Fetched:
        if self.blocked is not None:
            raise self.blocked
        try:
            listing = self.call(_blocked_is_transient(lambda: self._client().list(video_id)))
            transcript = self._pick_api(listing)
            fetched = self.call(_blocked_is_transient(transcript.fetch))
        except FetchFailed as e:
            if e.category == BLOCKED:
                log.warning("YouTube blocks this IP for youtube-transcript-api; not asking it again this run")
                self.blocked = FetchFailed(BLOCKED, "youtube-transcript-api refused this IP earlier in this run", False)
            raise
        except Exception as e:  # noqa: BLE001 - the library's many error types become one recorded reason
            raise _api_failure(e) from None
        segments = [
            {"start": float(s["start"]), "duration": float(s.get("duration") or 0.0), "text": s["text"]}
            for s in fetched.to_raw_data()
        ]
        return Fetched(
            segments, "generated" if fetched.is_generated else "manual", fetched.language_code, "youtube-transcript-api"
        )

    def _client(self) -> Any:
        if self._api is None:
            from youtube_transcript_api import YouTubeTranscriptApi  # lazy: pulls in requests

            # one instance, used from this thread only (the library's sessions are not thread-safe);
            # the proxy config sets the session's proxies (and, for Webshare, rotation on 429)
            self._api = YouTubeTranscriptApi(
                proxy_config=self.access.proxy_config, http_client=_timeout_session(self.timeout)
            )
        return self._api

    def _pick_api(self, listing: Any) -> Any:
        finders = [listing.find_manually_created_transcript, listing.find_generated_transcript]
        if not self.prefer_manual:
            finders.reverse()
        for find in finders:
            try:
                return find(list(self.languages))
            except Exception as e:
                if type(e).__name__ != "NoTranscriptFound":
                    raise
        raise FetchFailed("no transcript", f"no captions in {', '.join(self.languages)}", permanent=True)

    # -- yt-dlp subtitles ----------------------------------------------------------------------

    def _via_ytdlp(self, video_id: str) -> Fetched:
        opts = {
            "skip_download": True,
            "writesubtitles": True,
            "writeautomaticsub": True,
            "quiet": True,
            "no_warnings": True,
            "subtitleslangs": list(self.languages),
            "socket_timeout": self.timeout,
            "logger": YtdlpLogger(),
            **self.access.ytdlp_options(),
        }
        url = f"https://www.youtube.com/watch?v={video_id}"
        try:
            with ytdlp_class()(opts) as ydl:
                info = self.call(transient_by_text(lambda: ydl.extract_info(url, download=False)))
                kind, lang, track = self._pick_track(info or {})
                raw = self.call(transient_by_text(lambda: ydl.urlopen(track["url"]).read()))
        except FetchFailed:
            raise
        except Exception as e:  # noqa: BLE001 - yt-dlp's many error types become one recorded reason
            detail = self.access.scrub(_short(e))
            if BLOCKED_TEXT.search(str(e)):
                raise FetchFailed(BLOCKED, detail, permanent=False) from None
            label = error_availability(str(e))
            raise FetchFailed(label or "yt-dlp error", detail, permanent=label != "live", availability=label) from None
        try:
            text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else str(raw)
            segments = parse_text(Path(f"{video_id}.{track['ext']}"), text, track["ext"])
        except (MalformedTranscript, UnicodeDecodeError) as e:
            raise FetchFailed("unparsable subtitles", str(e), permanent=True) from None
        return Fetched(segments, kind, lang, "yt-dlp")

    def _pick_track(self, info: dict) -> tuple[str, str, dict]:
        groups = [("manual", info.get("subtitles") or {}), ("generated", info.get("automatic_captions") or {})]
        if not self.prefer_manual:
            groups.reverse()
        for lang in self.languages:
            for kind, tracks in groups:
                for code in _matching_codes(lang, tracks):
                    by_ext = {t.get("ext"): t for t in tracks[code] if t.get("url")}
                    for ext in SUB_FORMATS:
                        if ext in by_ext:
                            return kind, code, by_ext[ext]
        raise FetchFailed("no transcript", f"no json3/vtt subtitles in {', '.join(self.languages)}", permanent=True)


def _matching_codes(lang: str, tracks: dict) -> list[str]:
    """`en` matches `en` first, then regional variants such as `en-US` (not `en-de` translations)."""
    exact = [lang] if lang in tracks else []
    return exact + sorted(c for c in tracks if re.fullmatch(rf"{re.escape(lang)}-[A-Z]{{2}}", c))


def _blocked_is_transient(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` (a youtube-transcript-api call) with its RequestBlocked raised as TransientError.

    The library turns YouTube's 429 (and its bot check) into RequestBlocked/IpBlocked, which
    carry no status: we know they mean "try again later", so we say so with our marker.
    """

    def call() -> Any:
        try:
            return fn()
        except Exception as e:
            from youtube_transcript_api import RequestBlocked  # loaded already: it just raised

            if isinstance(e, RequestBlocked):
                raise TransientError(str(e)) from e
            raise

    return call


def _raise_both(first: FetchFailed, second: FetchFailed) -> NoReturn:
    """One failure from both libraries' failures: the first that is not permanent decides the category."""
    blocked = BLOCKED in (first.category, second.category)
    raise FetchFailed(
        BLOCKED if blocked else (second.category if first.permanent else first.category),
        f"youtube-transcript-api: {first.reason}; yt-dlp: {second.reason}",
        first.permanent and second.permanent,
        second.availability or first.availability,
    ) from None


def _api_failure(error: BaseException) -> FetchFailed:
    name = type(error).__name__
    if name == "AgeRestricted":
        return FetchFailed("age-restricted", _short(error), permanent=True, availability="age-restricted")
    if is_transient(error):
        return FetchFailed(_transient_category(error), _short(error), permanent=False)
    if name == "VideoUnplayable":
        label = error_availability(" ".join([str(getattr(error, "reason", "")), *getattr(error, "sub_reasons", [])]))
        return FetchFailed(label or "unplayable", _short(error), permanent=label != "live", availability=label)
    category = API_CATEGORY.get(name, name)
    availability = "unavailable" if name == "VideoUnavailable" else None
    return FetchFailed(category, _short(error), permanent=name in API_CATEGORY, availability=availability)


def _transient_category(error: BaseException) -> str:
    error = _unmarked(error)
    text = f"{type(error).__name__} {error}".lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "ipblocked" in text or "requestblocked" in text:
        return BLOCKED
    if "429" in text or "ipblocked" in text or "requestblocked" in text:
        return "rate limited (HTTP 429)"
    return "network error"


def _short(error: BaseException) -> str:
    """The first meaningful line of an error (the API's messages are long help texts)."""
    error = _unmarked(error)
    cause = getattr(error, "cause", None)
    if isinstance(cause, str) and cause.strip():
        return " ".join(cause.split())[:300]
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return short_error(" ".join(lines[:2]) if lines else type(error).__name__)


def _unmarked(error: BaseException) -> BaseException:
    """The library's own error behind our TransientError marker: its class and text say more."""
    if isinstance(error, TransientError) and error.__cause__ is not None:
        return error.__cause__
    return error


def _timeout_session(timeout: float) -> Any:
    """A requests.Session whose every request has a timeout (requests has no default one)."""
    import requests

    class TimeoutSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

    return TimeoutSession()
