"""How YouTube is reached: `transcripts.proxy` and `transcripts.cookies`, resolved when a fetcher or lister is made.

The proxy URL may hold a password, so the recipe names only the environment variable(s) that
hold it; the URL is read here, kept in memory by the one object that needs it (Access, whose
repr shows no value) and handed to youtube-transcript-api and yt-dlp. The cookies file is read
in place by yt-dlp: never copied, and its path is replaced in any message that echoes it.
Both settings are UNKEYED: what they reveal (a members-only video now readable) reaches the
keys through the listing and the transcripts themselves.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from engine.errors import Problem, RecipeError
from engine.recipe.load import Located
from engine.sources.settings import Cookies, ProxyFromEnv, TranscriptSettings, WebshareProxy

PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
DOCS = "docs/troubleshooting.md"


@dataclass(frozen=True)
class Access:
    """The proxy and cookies one run uses; nothing of them is ever printed (repr=False)."""

    proxy_url: str | None = field(default=None, repr=False)
    proxy_config: Any = field(default=None, repr=False)  # youtube-transcript-api's ProxyConfig
    cookies: dict[str, Any] = field(default_factory=dict, repr=False)  # yt-dlp's cookie options
    cookie_path: str | None = field(default=None, repr=False)

    @property
    def proxied(self) -> bool:
        return self.proxy_url is not None

    @property
    def signed_in(self) -> bool:
        return bool(self.cookies)

    def ytdlp_options(self) -> dict[str, Any]:
        """yt-dlp's `proxy` and `cookiefile`/`cookiesfrombrowser` options (empty when unset)."""
        return {**({"proxy": self.proxy_url} if self.proxy_url else {}), **self.cookies}

    def scrub(self, text: str) -> str:
        """`text` without the proxy URL, its password or the cookies file's path.

        Libraries echo them in errors ("Unable to connect to proxy http://user:pw@host"); the
        engine's redaction catches `user:pw@` in URLs, this also catches them bare or percent-less.
        """
        for secret in self._secrets():
            text = text.replace(secret, "[REDACTED:transcripts.proxy]")
        if self.cookie_path:
            text = text.replace(self.cookie_path, "the transcripts.cookies file")
        return text

    def _secrets(self) -> list[str]:
        if not self.proxy_url:
            return []
        parts = urlsplit(self.proxy_url)
        found = [self.proxy_url, self.proxy_url.rstrip("/")]
        for value in (parts.password, parts.username, unquote(parts.password or "")):
            if value and len(value) >= 6:  # shorter would mangle ordinary words
                found.append(value)
        return sorted(set(found), key=len, reverse=True)


def youtube_access(settings: TranscriptSettings, base_dir: Path) -> Access:
    """The proxy (read from the environment now) and cookies of these settings.

    Raises RecipeError naming the setting and the variable, never the value, when a variable is
    unset or does not hold a proxy URL.
    """
    url, config = _proxy(settings.proxy)
    cookies, path = _cookies(settings, base_dir)
    return Access(url, config, cookies, path)


def access_problems(
    settings: TranscriptSettings, base_dir: Path, located: Located, proxy: bool = True
) -> list[Problem]:
    """What `recipe validate` reports: a cookies file that is not there, a proxy variable unset or wrong
    (`proxy`: only where the recipe asks YouTube; a recipe of local files never reads the variable)."""
    problems = []
    cookies = settings.cookies
    if cookies is not None and cookies.file is not None and not _cookie_file(cookies.file, base_dir).is_file():
        problems.append(
            located.problem(
                ("transcripts", "cookies", "file"),
                f"no cookies file at {_cookie_file(cookies.file, base_dir)}; export cookies.txt (Netscape format) "
                "from a browser signed in to YouTube, or use `from_browser`; the path is relative to the recipe file",
            )
        )
    try:
        _proxy(settings.proxy if proxy else None)
    except ProxySettingError as e:
        problems.append(located.problem(("transcripts", "proxy", *e.field), e.message))
    return problems


class ProxySettingError(RecipeError):
    """transcripts.proxy names a variable that is unset or holds no proxy URL."""

    def __init__(self, field: tuple[str, ...], message: str):
        self.field, self.message = field, message
        super().__init__(f"transcripts.proxy.{'.'.join(field)}: {message}")


def _proxy(proxy: ProxyFromEnv | WebshareProxy | None) -> tuple[str | None, Any]:
    if proxy is None:
        return None, None
    from youtube_transcript_api.proxies import GenericProxyConfig, WebshareProxyConfig  # lazy: pulls in requests

    if isinstance(proxy, WebshareProxy):
        login = proxy.webshare
        user = _variable(login.username_env, ("webshare", "username_env"))
        password = _variable(login.password_env, ("webshare", "password_env"))
        webshare = WebshareProxyConfig(user, password, filter_ip_locations=list(login.locations))
        return webshare.url, webshare
    url = _variable(proxy.env, ("env",))
    _check_proxy_url(url, proxy.env)
    return url, GenericProxyConfig(http_url=url, https_url=url)


def _variable(name: str, field: tuple[str, ...]) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ProxySettingError(field, f"the environment variable {name} is not set; export it before running")
    return value


def _check_proxy_url(url: str, name: str) -> None:
    """A proxy URL we can use; the message names the variable and what is wrong, never the value."""
    try:
        parts = urlsplit(url)
        has_host = bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        has_host = False
    shape = "scheme://[user:password@]host:port with scheme " + "/".join(PROXY_SCHEMES)
    if parts.scheme.lower() not in PROXY_SCHEMES or not has_host:
        raise ProxySettingError(("env",), f"{name} does not hold a proxy URL ({shape})")
    if parts.scheme.lower().startswith("socks") and importlib.util.find_spec("socks") is None:
        raise ProxySettingError(
            ("env",),
            f"{name} holds a SOCKS proxy, which youtube-transcript-api (requests) reads only with PySocks: "
            "pip install 'requests[socks]', or use an http proxy",
        )


def _cookie_file(file: str, base_dir: Path) -> Path:
    path = Path(file).expanduser()
    return path if path.is_absolute() else base_dir / path


def _cookies(settings: TranscriptSettings, base_dir: Path) -> tuple[dict[str, Any], str | None]:
    cookies: Cookies | None = settings.cookies
    if cookies is None:
        return {}, None
    if cookies.file is not None:
        path = _cookie_file(cookies.file, base_dir)
        if not path.is_file():
            raise RecipeError(f"transcripts.cookies.file: no cookies file at {path}; export cookies.txt again")
        return {"cookiefile": str(path)}, str(path)
    # yt-dlp's tuple: (browser, profile, keyring, container)
    return {"cookiesfrombrowser": (cookies.from_browser, cookies.profile, None, None)}, None
