"""Where a model runs, as the LLM client needs to know it: picked by the model id's prefix.

A recipe names a model as litellm does (`openai/gpt-4o-mini`, `ollama/llama3`), or with the
prefix of a provider of ours (`mlx:<spec>`, served in-process). The client asks `provider_for`
and never special-cases a prefix itself, so a new local backend is one module that calls
`register_provider`, plus one line in PLUGINS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import ipaddress
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from engine.llm import litellm_trims
from engine.redact import RedactSecrets

if TYPE_CHECKING:
    from engine.recipe.shared import LLMParams

# Our providers in modules of their own, imported the first time a model with their prefix is
# used (the module registers itself on import). Importing them up front would make every command
# pay for them; the MLX one would also pull in mlx-lm where it is not installed.
PLUGINS = {"mlx:": "engine.llm.mlx_provider", "llamacpp:": "engine.llm.llamacpp_provider"}


class Provider(Protocol):
    """What the client asks of the place a model runs.

    A provider may also have `warm_up(model, context)`, called as a batch of calls starts and
    before litellm is imported (seconds): slow local work (loading a model) can start then, on
    a thread of its own, instead of after the import."""

    def litellm_model(self, model: str) -> str:
        """The model id to hand litellm for the recipe's `model`."""

    def cache_settings(self) -> dict:
        """Choices of this provider that change replies beyond the request (enter the cache key)."""

    def setup(self, context: dict) -> None:
        """Called before each batch of calls; `context` has models_dir and base_dir."""

    def call_kwargs(self, params: LLMParams) -> dict:
        """Extra keyword arguments of each litellm.acompletion call."""

    def deadline(self, params: LLMParams) -> float | None:
        """Seconds after which the client abandons a call (and retries it); None: never."""


class LitellmProvider:
    """Any provider litellm knows: a remote API or a local server behind an api_base."""

    def litellm_model(self, model: str) -> str:
        return model

    def cache_settings(self) -> dict:
        return {}

    def setup(self, context: dict) -> None:
        pass

    def call_kwargs(self, params: LLMParams) -> dict:
        kwargs: dict[str, Any] = {"timeout": params.timeout, "max_retries": 0}  # SDK retries would hide faults
        if needs_placeholder_key(params.model, params.api_base):
            kwargs["api_key"] = LOCAL_SERVER_KEY
        return kwargs

    def deadline(self, params: LLMParams) -> float | None:
        # backs up providers whose own timeout does not fire (e.g. a stalled stream)
        return params.timeout + 5


# What litellm is handed as the key of a server on this machine when the environment has none:
# the OpenAI SDK refuses to send a request without one, while llama.cpp's server, Ollama, vLLM
# and LM Studio accept any (unless started with a key, which then comes from the environment).
# Passed per call only: it is not a secret and is never written anywhere.
LOCAL_SERVER_KEY = "no-key-needed-on-this-machine"
LOCAL_HOST_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_loopback(api_base: str | None) -> bool:
    """Whether `api_base` names this machine: localhost, 127.0.0.0/8, ::1 (also IPv4-mapped),
    or the unspecified 0.0.0.0 / :: that a server prints as its listening address."""
    if not api_base:
        return False
    text = api_base.strip()
    try:
        host = urlsplit(text if "//" in text else "//" + text).hostname  # `localhost:8080/v1` too
    except ValueError:  # a malformed IPv6 literal
        return False
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host in LOCAL_HOST_NAMES or host.endswith(".localhost"):  # RFC 6761: *.localhost is loopback
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (::1%lo)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or ip.is_unspecified or (mapped and mapped.is_loopback))


def needs_placeholder_key(model: str, api_base: str | None) -> bool:
    """A server on this machine, and no key for the model's provider in the environment."""
    from engine.recipe.rules import key_variable

    return is_loopback(api_base) and not os.environ.get(key_variable(model), "").strip()


def key_hint(model: str, api_base: str | None) -> str:
    """Where the key of `model` comes from, for a refused call's message."""
    from engine.recipe.rules import key_variable

    variable = key_variable(model)
    if is_loopback(api_base):
        return (
            f"{variable} in your environment (a server on this machine needs none unless it was started "
            "with a key; keys are never read from the recipe)."
        )
    return (
        f"{variable} in your environment (keys are never read from the recipe; a server that takes no "
        "key still needs the variable set, to any value, unless llm.api_base is on this machine)."
    )


LITELLM = LitellmProvider()
_configured = False  # load_litellm has set litellm up
_registered: dict[str, Provider] = {}


def register_provider(prefix: str, provider: Provider) -> None:
    """Serve every model id starting with `prefix` through `provider`."""
    _registered[prefix] = provider


def provider_for(model: str) -> Provider:
    """The provider of a recipe's model id: the longest registered prefix, else plain litellm."""
    for prefix, module in PLUGINS.items():
        if model.startswith(prefix) and prefix not in _registered:
            importlib.import_module(module)
    matches = [prefix for prefix in _registered if model.startswith(prefix)]
    return _registered[max(matches, key=len)] if matches else LITELLM


def load_litellm() -> Any:
    """litellm, imported on first use (it takes seconds) and configured for this tool (once:
    the client calls this for every request)."""
    global _configured
    # The bundled cost map avoids a network fetch at import time (we are often offline).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    if _configured:
        return litellm
    litellm.suppress_debug_info = True
    # litellm prepares each call on a worker thread that hands back the request's coroutine.
    # When Ctrl-C cancels a call during that preparation, the coroutine (no request was sent
    # yet) is dropped and Python warns it was "never awaited". Nothing leaked; the warning
    # would only alarm the user at the moment they stopped the run, so exactly it is silenced.
    warnings.filterwarnings("ignore", message=r"coroutine '.*\.acompletion' was never awaited", category=RuntimeWarning)
    # one INFO line per call would drown the run log
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    # litellm prints through handlers of its own; an error it logs may echo the request's key
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(RedactSecrets())
    _skip_success_logging_without_callbacks(litellm)
    litellm_trims.install(litellm)  # per-call steps with no use here made cheaper (issue 16)
    # Importing litellm leaves ~400k objects the cyclic garbage collector tracks; each full
    # collection then walks them all: 0.2-0.5 s with the event loop stopped, a few times in a
    # run of 1,000 calls (issue 16: the loop's longest stalls). They live as long as the
    # process, so they are moved out of the collector's sight once, here.
    gc.freeze()
    _configured = True
    return litellm


def _skip_success_logging_without_callbacks(litellm: Any) -> None:
    """After each reply litellm builds a logging payload and queues it for its success
    callbacks, even when none is registered: ~0.7 ms of CPU per call (a fifth of its overhead,
    issue 16) spent on an event nobody receives. The engine registers none, so the step is
    skipped while every list is empty; a callback registered later (by a user's plugin) gets
    its events as before. The token count and price are set before this step and are kept.
    """
    import litellm.utils as utils

    dispatch = getattr(utils, "dispatch_success_logging", None)
    if dispatch is None or getattr(dispatch, "_engine_wrapped", False):
        return  # a litellm without this step: nothing to skip

    def dispatch_when_someone_listens(*args: Any, **kwargs: Any) -> None:
        if litellm_trims.someone_listens(litellm):
            dispatch(*args, **kwargs)

    dispatch_when_someone_listens._engine_wrapped = True  # type: ignore[attr-defined]
    utils.dispatch_success_logging = dispatch_when_someone_listens


# -- shared by the in-process providers (mlx:, llamacpp:) ---------------------------------------


def local_settings(optional_params: dict | None) -> tuple[int, float]:
    """(max_tokens, temperature) from the optional params litellm hands a custom handler."""
    params = optional_params or {}
    return int(params.get("max_tokens") or 256), float(params.get("temperature") or 0.0)


def local_response(litellm: Any, model: str, text: str, usage: dict) -> Any:
    """A litellm ModelResponse for a reply generated in this process (`model` with its provider)."""
    import time

    return litellm.ModelResponse(
        model=model,
        created=int(time.time()),
        choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        usage=usage,
    )


# -- litellm's request preparation, on the event loop ---------------------------------------------

# Providers whose preparation (routing, parameter mapping, the cached SDK client) is
# computation only: no credential refresh or other network I/O that would stall the loop.
INLINE_PREPARATION_PROVIDERS = frozenset({"openai"})


class InlinePreparation(ThreadPoolExecutor):
    """The event loop's default executor during a fan-out to a provider that prepares without I/O.

    litellm.acompletion prepares every request in its synchronous `completion`, which it runs on
    the loop's default executor and which hands back the coroutine that sends it. On a thread,
    that is ~1 ms of Python per call competing with the loop for the GIL, plus a hand-over each
    way, and the request leaves only after the loop has picked the thread's answer up on a later
    pass (issue 16: at 100 calls in flight the loop was the bottleneck, and replies read in one
    pass had their successors all sent together in the next). Here the preparation runs in the
    caller's thread and comes back as a finished asyncio future, which run_in_executor passes
    through unchanged (asyncio.wrap_future returns an asyncio future as it is): awaiting it does
    not yield, so the request is prepared and sent in the step that asked for it.

    Anything else submitted (a DNS lookup, a provider's own blocking work) still goes to
    threads, and so does the preparation whenever it is not recognised (another litellm
    version): the slow path, not a failure.
    """

    def __init__(self, without_sdk: bool = False) -> None:
        super().__init__(thread_name_prefix="llm-executor")
        self.inlined = 0  # preparations run in the caller's thread (a test reads it)
        self.without_sdk = without_sdk  # litellm sends these requests itself (sends_without_sdk)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not _is_request_preparation(fn):
            return super().submit(fn, *args, **kwargs)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not called from the loop: nothing to gain here
            return super().submit(fn)
        self.inlined += 1
        done = loop.create_future()
        try:
            with litellm_sends_itself(self.without_sdk):
                done.set_result(fn())
        except Exception as e:  # noqa: BLE001 - raised where litellm awaits the preparation
            done.set_exception(e)
        return done


def _is_request_preparation(fn: Any) -> bool:
    """litellm's `partial(context.run, partial(completion, ..., acompletion=True))`."""
    completion = getattr(sys.modules.get("litellm.main"), "completion", None)
    inner = fn.args[0] if isinstance(fn, functools.partial) and fn.args else None
    return (
        completion is not None
        and isinstance(inner, functools.partial)
        and inner.func is completion
        and inner.keywords.get("acompletion") is True
    )


def prepares_inline(model: str, api_base: str | None) -> bool:
    """Whether a fan-out to `model` may run litellm's request preparation on the event loop."""
    if not isinstance(provider_for(model), LitellmProvider):
        return False  # our in-process providers generate in their handlers: threads, as before
    try:
        _, provider, _, _ = load_litellm().get_llm_provider(model=model, api_base=api_base)
    except Exception:  # noqa: BLE001 - an unknown provider fails the call itself, with its message
        return False
    return provider in INLINE_PREPARATION_PROVIDERS


# -- litellm's own HTTP handler for openai/ chat requests -----------------------------------------

# While this variable is true, litellm sends an openai/ chat request with its own HTTP handler
# (its shared aiohttp-backed client, the same request and response transformations) rather than
# through the OpenAI SDK. litellm reads it while it prepares each request.
LITELLM_WITHOUT_SDK = "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"
# Settings only the OpenAI SDK reads (an organization, a project, extra headers): where one is
# set, the SDK's request is not the one litellm's handler would send, so the SDK sends it.
SDK_ONLY_VARIABLES = ("OPENAI_ORGANIZATION", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_CUSTOM_HEADERS")


def sends_without_sdk(model: str, api_base: str | None, call_kwargs: dict) -> bool:
    """Whether litellm may send this run's openai/ chat requests itself, without the OpenAI SDK.

    Why (issue 16): the SDK builds each request and parses each reply through layers of its
    own (request options, an httpx client, response models that litellm then converts into its
    own), ~1 ms of CPU per call on a 2-core machine, a quarter of the client's CPU. litellm's
    handler sends the same JSON body to the same URL with the same key, and maps errors to the
    same HTTP statuses, with differences in the exception classes that the client absorbs
    (client._worth_retrying): a 200 whose body is not JSON keeps its status 200 (the SDK's
    came as a 500), and a 408/409/425/429 whose body says "invalid_request_error" comes as a
    BadRequestError; both are retried as before, by their status.

    The SDK keeps the requests it would send differently: a key it would refuse to send without
    ("Missing credentials", the message the user is shown), an organization or project or extra
    headers it adds from the environment or litellm's settings, and a user who set the variable
    themselves (their choice stands either way).
    """
    if LITELLM_WITHOUT_SDK in os.environ or not prepares_inline(model, api_base):
        return False
    litellm = load_litellm()
    if getattr(litellm, "organization", None) or any(os.environ.get(name) for name in SDK_ONLY_VARIABLES):
        return False
    key = call_kwargs.get("api_key") or getattr(litellm, "api_key", None) or getattr(litellm, "openai_key", None)
    return bool(str(key or os.environ.get("OPENAI_API_KEY") or "").strip())


def settings_without_sdk(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A run's litellm keyword arguments for requests sent without the SDK: the provider worked
    out once (litellm otherwise splits `openai/<model>` and weighs the api_base on every call,
    twice), and without `max_retries`, a setting of the SDK that nothing reads on this path.
    Left as they are where litellm's answer would add anything (a key or an api_base of its own)."""
    try:
        model, provider, key, api_base = load_litellm().get_llm_provider(
            model=kwargs["model"], api_base=kwargs.get("api_base")
        )
    except Exception:  # noqa: BLE001 - the call itself reports what litellm cannot place
        return kwargs
    if key or (api_base or None) != (kwargs.get("api_base") or None):
        return kwargs
    settings = {name: value for name, value in kwargs.items() if name != "max_retries"}
    settings.update(model=model, custom_llm_provider=provider)
    return settings


@contextlib.contextmanager
def litellm_sends_itself(on: bool) -> Iterator[None]:
    """LITELLM_WITHOUT_SDK set while one request is prepared (on the event loop's thread), so
    the requests of a run that chose it are sent this way and, as a rule, nothing else in the
    process (a request another thread prepares at that very moment may be too: the same
    request either way)."""
    if not on:
        yield
        return
    os.environ[LITELLM_WITHOUT_SDK] = "true"
    try:
        yield
    finally:
        os.environ.pop(LITELLM_WITHOUT_SDK, None)
