"""The per-video transcript cache: its keys and what a video's fetch history means for planning.

The transcripts step writes it; the sources step reads it while listing (a video's history is
part of the listing, so a transient failure reruns transcripts on the next run). Both use this
module, so neither step reaches into the other.
"""

from __future__ import annotations

from typing import Any

CACHE = "transcripts"
STATUS_CACHE = "video_status"


def cache_key(video_id: str, languages: tuple[str, ...], prefer_manual: bool) -> str:
    """Video id + language preference: another language list is another transcript."""
    return f"{video_id}|{','.join(languages)}|{'manual' if prefer_manual else 'generated'}-first"


def permanent_failure(hit: dict[str, Any]) -> bool:
    return bool(hit) and hit.get("status") != "ok" and hit.get("permanent", True)


def cache_state(hit: dict[str, Any] | None, retry_failed: bool) -> str | None:
    """A video's fetch history as it bears on the transcripts key: None, or "<transient>/<forced>".

    The sources listing carries it per video. It changes exactly when the next run would do
    something different: after a transient failure (retried on the next run) and under
    --retry-failed for a permanent one; it stays put when a retry succeeds, so the run after
    that reuses the table the retry produced. Videos never in trouble add nothing to the key.
    """
    if not hit:
        return None
    transient, forced = hit.get("transient_failures", 0), hit.get("forced_retries", 0)
    if retry_failed and permanent_failure(hit):
        forced += 1  # what this run will do
    return None if (transient, forced) == (0, 0) else f"{transient}/{forced}"


def cache_states(
    cache: Any, video_ids: list[str], languages: tuple[str, ...], prefer_manual: bool, retry_failed: bool
) -> dict[str, str | None]:
    """cache_state of many videos at once (one query), for the sources fingerprint."""
    keys = {cache_key(v, languages, prefer_manual): v for v in video_ids}
    hits = cache.get_many(list(keys))
    return {v: cache_state(hits.get(k), retry_failed) for k, v in keys.items()}
