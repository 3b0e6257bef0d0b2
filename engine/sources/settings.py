"""The recipe sections of where videos come from (`sources`) and how transcripts are read (`transcripts`).

Declared here, beside the code that uses them, and owned by the `sources` and `transcripts` steps.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_serializer, model_validator
from pydantic_core import PydanticCustomError

from engine.recipe.section import Section

Regex = Annotated[str, Field(json_schema_extra={"format": "regex"})]


class SourceFilters(Section):
    """Title and id filters, shared by every source type (local files, YouTube, datasets)."""

    title_include: tuple[Regex, ...] = Field(
        (), description="Keep only videos (dataset rows) whose title matches one of these regexes."
    )
    title_exclude: tuple[Regex, ...] = Field(
        (),
        description="Drop videos (dataset rows) whose title matches any of these regexes "
        "(e.g. `(?i)\\bconversation with\\b`).",
    )
    exclude_ids: tuple[str, ...] = Field(
        (),
        description="Ids to leave out (guest interviews, trailers): a video id, a local file's id (its "
        "sidecar `video_id` or file stem), or a dataset row's group or row id.",
    )


class LocalSource(SourceFilters):
    """Transcript files on disk, one file per video."""

    type: Literal["local"] = Field(description="Read transcript files from disk.")
    path: str = Field(description="A directory, a file or a glob, relative to the recipe file (e.g. `demo/*.vtt`).")
    format: Literal["auto", "txt", "md", "vtt", "srt", "json", "json3"] = Field(
        "auto", description="File format; `auto` picks by extension (.txt .md .vtt .srt .json .json3)."
    )
    sidecar: bool = Field(
        True, description="Read `<file>.meta.json` (title, url, upload_date) next to each file when present."
    )


class YoutubeSource(SourceFilters):
    """A YouTube channel, playlist or list of videos, listed with yt-dlp."""

    type: Literal["youtube"] = Field(description="List videos with yt-dlp.")
    url: str | None = Field(
        None,
        description="Channel (`https://www.youtube.com/@Handle`), playlist or video URL; "
        "null when only `videos` is given.",
    )
    videos: tuple[str, ...] = Field((), description="Video URLs or 11-character ids, instead of (or as well as) `url`.")
    max_videos: int | None = Field(
        None, ge=1, description="Keep at most this many videos (newest first); null for all."
    )
    min_duration: float | None = Field(None, ge=0, description="Drop videos shorter than this many seconds (shorts).")
    max_duration: float | None = Field(None, ge=0, description="Drop videos longer than this many seconds.")
    after: str | None = Field(
        None,
        description="Keep videos uploaded on or after this date (YYYY-MM-DD).",
        json_schema_extra={"format": "date"},
    )
    before: str | None = Field(
        None, description="Keep videos uploaded before this date (YYYY-MM-DD).", json_schema_extra={"format": "date"}
    )


class DatasetColumns(Section):
    """Which column holds what: `question` and `answer` must exist; the others may not (unless renamed)."""

    question: str = Field(
        "question",
        min_length=1,
        description="Column of the questions (unset, a file of `prompt`/`completion` columns, mlx-lm's layout, "
        "is read from those).",
    )
    answer: str = Field("answer", min_length=1, description="Column of the answers.")
    group: str = Field(
        "video_id",
        min_length=1,
        description="Column of the group (e.g. the video) the split keeps together; a row without one is its "
        "own group.",
    )
    title: str = Field("title", min_length=1, description="Column of the title (title filters read it).")
    tags: str = Field("tags", min_length=1, description="Column of the tags: a list, or text split at commas.")


class DatasetSource(SourceFilters):
    """Existing question/answer pairs (a file, a glob or a Hugging Face file), read through DuckDB.

    Its rows skip the two LLM passes and enter at curate beside the rows made from transcripts.
    """

    # The rows are keyed by the files' content, never where they live: moving a file keeps the key.
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"path"})

    type: Literal["dataset"] = Field(description="Read question/answer pairs (or chat conversations) from data files.")
    path: str = Field(
        description="A file or a glob relative to the recipe file (`data/qa.jsonl`, `data/*.parquet`), or "
        "`hf://datasets/<org>/<name>/<file>` (needs the network and DuckDB's httpfs extension)."
    )
    format: Literal["auto", "jsonl", "json", "csv", "parquet"] = Field(
        "auto", description="File format; `auto` picks by extension (.jsonl .ndjson .json .csv .tsv .parquet)."
    )
    columns: DatasetColumns = Field(default_factory=DatasetColumns, description=DatasetColumns.__doc__)
    messages: str | None = Field(
        None,
        min_length=1,
        description="Column of chat conversations instead of question/answer columns: OpenAI / mlx-lm "
        "`messages` (role/content) or ShareGPT `conversations` (from/value). The first user turn is the "
        "question, the assistant turn after it the answer. Null: question/answer columns (a file that has "
        "none but a `messages` or `conversations` column is read as chat).",
    )


Source = Annotated[LocalSource | YoutubeSource | DatasetSource, Field(discriminator="type")]


class Clean(Section):
    """Clean-up applied to every transcript."""

    strip_cues: bool = Field(True, description="Remove cues such as `[Music]` and `[Applause]`.")
    merge_overlaps: bool = Field(True, description="Merge the rolling, overlapping lines of auto-captions.")
    normalize_whitespace: bool = Field(True, description="Collapse runs of whitespace.")


class Chunking(Section):
    """Whole transcript per video (default; chunking tended to break answers) or token windows for very long videos."""

    mode: Literal["whole", "tokens"] = Field("whole", description="`whole` or `tokens`.")
    window_tokens: int = Field(6000, ge=100, description="Window size in tokens (approximate: words × 1.3).")
    overlap_tokens: int = Field(300, ge=0, description="Tokens shared by consecutive windows.")
    context_tokens: int | None = Field(
        None,
        ge=512,
        description="Context window (tokens) of the model that reads transcripts (questions and answers "
        "passes); null: looked up (litellm's model list, a local model's files), else 8192. A transcript "
        "that does not fit with the prompt and max_tokens is cut into windows, with a warning.",
    )


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# yt-dlp's `--cookies-from-browser` list (yt_dlp.cookies.SUPPORTED_BROWSERS; a test keeps them equal).
Browser = Literal["brave", "chrome", "chromium", "edge", "firefox", "opera", "safari", "vivaldi", "whale"]


class ProxyFromEnv(Section):
    """A proxy whose URL is read from an environment variable when YouTube is asked, never stored."""

    env: EnvName = Field(
        description="Name of the environment variable holding the proxy URL "
        "(`http://user:password@host:port`, `https://...`, `socks5://...`). The URL may hold "
        "credentials: it is read at run time and never written to the recipe, a key, a log or runs/."
    )


class WebshareLogin(Section):
    """Webshare rotating residential proxy credentials, by the names of the variables holding them."""

    username_env: EnvName = Field(description="Environment variable holding the Webshare proxy username.")
    password_env: EnvName = Field(description="Environment variable holding the Webshare proxy password.")
    locations: tuple[str, ...] = Field(
        (), description="Country codes to rotate through (e.g. `[us, ca]`); empty for all."
    )


class WebshareProxy(Section):
    """youtube-transcript-api's rotating residential proxy (WebshareProxyConfig)."""

    webshare: WebshareLogin = Field(description=WebshareLogin.__doc__)


class Cookies(Section):
    """Cookies of a YouTube account, read by yt-dlp: from a browser profile, or a cookies.txt file."""

    from_browser: Browser | None = Field(
        None, description="Browser signed in to YouTube to read cookies from (yt-dlp's cookiesfrombrowser)."
    )
    profile: str | None = Field(None, description="With `from_browser`: profile name or path; null for the default.")
    file: str | None = Field(
        None,
        description="A Netscape cookies.txt exported from a browser signed in to YouTube, relative to the recipe "
        "file. Read in place: never copied into runs/, and its path is written nowhere.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Cookies:
        if (self.from_browser is None) == (self.file is None):
            # PydanticCustomError: the message as written, without pydantic's "Value error, " prefix
            raise PydanticCustomError(
                "cookies", "set exactly one of `from_browser` (e.g. firefox) or `file` (a cookies.txt)"
            )
        if self.profile is not None and self.from_browser is None:
            raise PydanticCustomError("cookies", "`profile` goes with `from_browser`")
        return self

    @field_serializer("file", when_used="json")
    def _unrecorded(self, path: str | None) -> str | None:
        """resolved.json (whatever dumps the recipe as JSON) does not record where the cookies are."""
        return None if path is None else "(not recorded)"


class TranscriptSettings(Section):
    """How transcripts are fetched and cleaned."""

    # Politeness and patience change how fast transcripts arrive, never what they say; the proxy and
    # the cookies change how YouTube is reached (what that reveals shows in the listing, which is keyed).
    UNKEYED: ClassVar[frozenset[str]] = frozenset(
        {"requests_per_second", "retries", "backoff", "timeout", "proxy", "cookies"}
    )

    languages: tuple[str, ...] = Field(("en",), min_length=1, description="Preferred languages, best first.")
    prefer_manual: bool = Field(True, description="Prefer manually created captions over auto-generated ones.")
    fallback_ytdlp: bool = Field(
        True, description="When youtube-transcript-api fails, try yt-dlp subtitles (vtt/json3)."
    )
    clean: Clean = Field(default_factory=Clean, description=Clean.__doc__)
    requests_per_second: float = Field(1.0, gt=0, description="Politeness limit on YouTube requests.")
    retries: int = Field(
        4, ge=0, description="Retries on network errors and HTTP 429, with exponential backoff and jitter."
    )
    backoff: float = Field(2.0, ge=0, description="First backoff in seconds; doubles each retry.")
    timeout: float = Field(30, gt=0, description="Seconds before one request is abandoned.")
    chunking: Chunking = Field(default_factory=Chunking, description=Chunking.__doc__)
    proxy: ProxyFromEnv | WebshareProxy | None = Field(
        None,
        description="Proxy for every YouTube request (youtube-transcript-api and yt-dlp), for IPs that "
        "YouTube blocks (cloud machines): `{env: YT_PROXY}` or `{webshare: {username_env: ..., "
        "password_env: ...}}`. Null: connect directly.",
    )
    cookies: Cookies | None = Field(
        None,
        description="Cookies of a YouTube account, for members-only, private or age-restricted videos it "
        "may watch (used by yt-dlp): `{from_browser: firefox}` or `{file: cookies.txt}`. Null: signed out.",
    )
