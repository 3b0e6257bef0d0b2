"""What litellm does on every call that the engine gets no use from, made cheaper (issue 16).

At 100 calls in flight the client's CPU per call is almost all litellm's. Some of its per-call
steps cost far more than the answer they give the engine:

- pricing a reply: litellm's full cost calculation (`completion_cost`: model-name candidates,
  a cost breakdown for its loggers, tool and region surcharges) is ~0.3 ms of CPU per call on
  a 2-core machine, against ~0.06 ms for `litellm.cost_per_token`, the rates function that
  calculation itself ends in (`ReplyPricing`);
- the model's entry in litellm's cost map, looked up twice per call while the request is
  prepared, uncached (~35 us each) although litellm keeps a cached lookup of its own
  (`_cache_model_info_for_requests`);
- httpx's cookie jar, handed every reply to find no Set-Cookie header in it (~60 us;
  `_skip_cookie_parsing_without_cookies`).

The rest of litellm's ~2 ms per call is spread thin (request preparation in `completion`
~0.8 ms, the reply's pydantic models ~0.2 ms, its logging object ~0.1 ms, httpx's request
~0.1 ms, aiohttp ~0.25 ms), with no step left that costs much for nothing.

All are installed once, by providers.load_litellm, and each steps aside where it cannot be
sure to change nothing: another litellm version, a callback registered with litellm, a reply
of another kind, a cookie jar of another class.

Not trimmed: litellm's check that the provider is one of its own rebuilds the list of its ~190
providers through Python-level enum machinery twice per call (~50 us each). Iterating its
`LlmProviders` from a cached tuple made that ~10 us, but only by swapping the metaclass of a
library enum every litellm user in the process shares: ~0.1 ms of ~2.6 per call, not worth it.
"""

from __future__ import annotations

import functools
import http.cookiejar
import importlib
import logging
import math
from typing import Any

log = logging.getLogger("engine.llm.litellm_trims")

# litellm's lists of loggers; while all are empty, nobody receives a success event (and nobody
# reads what litellm records on a call for its loggers: the cost breakdown, cost diagnostics).
CALLBACK_LISTS = ("callbacks", "success_callback", "_async_success_callback")


def someone_listens(litellm: Any) -> bool:
    return any(getattr(litellm, name, None) for name in CALLBACK_LISTS)


def install(litellm: Any) -> None:
    """Install the trims (once per process; a second call changes nothing)."""
    _price_replies_by_rates(litellm)
    _cache_model_info_for_requests(litellm)
    _skip_cookie_parsing_without_cookies()


# -- pricing --------------------------------------------------------------------------------------


class ReplyPricing:
    """Prices a chat reply with `litellm.cost_per_token`, once litellm's full calculation has been
    seen to give the same figure for replies of the same kind.

    A kind is what decides which prices apply: the model asked for, its provider, the model
    and service tier the reply names, and which kinds of tokens it counts (cached prompt
    tokens, reasoning, audio...). The first reply of a kind is priced both ways: where the two
    agree, its later replies are priced by rates alone; where they do not (a provider-stated
    cost, surcharges, custom prices, a model litellm cannot price) that kind keeps the full
    calculation. Every RECHECK-th reply of an agreeing kind is priced both ways again, and a
    disagreement sends the kind back to the full calculation for good.

    No pricing rule is restated here: both figures come from litellm; only the choice of the
    arguments handed to its rates function (which model name, which tier) is learned, from
    litellm's own answer.
    """

    RECHECK = 64

    def __init__(self, full: Any, rates: Any):
        self.full, self.rates = full, rates  # litellm's calculation, and its rates function
        self._how: dict[tuple, tuple[str, str | None] | None] = {}  # kind -> (model, tier) or None
        self._seen: dict[tuple, int] = {}
        self.checked = self.by_rates = 0  # replies priced both ways, and by rates alone (tests)

    def price(self, logging_obj: Any, result: Any, full_args: tuple, full_kwargs: dict) -> Any:
        kind = self._kind(logging_obj, result, full_kwargs)
        if kind is None:
            return self.full(logging_obj, *full_args, **full_kwargs)
        how = self._how.get(kind, ())
        seen = self._seen[kind] = self._seen.get(kind, 0) + 1
        if how is None:
            return self.full(logging_obj, *full_args, **full_kwargs)
        if how and seen % self.RECHECK:
            cost = self._by_rates(kind, result, how)
            if cost is not None:
                self.by_rates += 1
                return cost
        full = self.full(logging_obj, *full_args, **full_kwargs)
        self.checked += 1
        self._how[kind] = self._agreeing(kind, result, full, [how] if how else self._candidates(kind))
        if how and self._how[kind] is None:
            log.debug("litellm priced a %s reply differently from its rates: full calculation from now on", kind[0])
        return full

    @staticmethod
    def _kind(logging_obj: Any, result: Any, kwargs: dict) -> tuple | None:
        """What decides the price of `result`; None where only the full calculation will do."""
        if kwargs.get("cache_hit") or kwargs.get("ignore_stamped_cost") or kwargs.get("router_model_id"):
            return None
        details = getattr(logging_obj, "model_call_details", None) or {}
        if details.get("cache_hit") or details.get("additional_response_cost"):
            return None
        if getattr(logging_obj, "_provider_reported_cost", None) is not None:
            return None
        hidden = getattr(result, "_hidden_params", None) or {}
        if not isinstance(hidden, dict) or hidden.get("response_cost") is not None:
            return None  # a cost already stamped on the reply is returned as it is
        usage = getattr(result, "usage", None)
        if usage is None:
            return None
        counted = tuple(sorted(_nonzero_counts(usage)))
        model = kwargs.get("litellm_model_name") or getattr(logging_obj, "model", None)
        return (
            str(model),
            details.get("custom_llm_provider"),
            getattr(result, "model", None),
            getattr(result, "service_tier", None),
            counted,
        )

    @staticmethod
    def _candidates(kind: tuple) -> list[tuple[str, str | None]]:
        asked, answered, tier = kind[0], kind[2], kind[3]
        models = [m for m in (answered, asked, asked.split("/", 1)[-1]) if m]
        tiers = [tier, None] if tier else [None]
        return list(dict.fromkeys((m, t) for m in models for t in tiers))

    def _by_rates(self, kind: tuple, result: Any, how: tuple[str, str | None]) -> float | None:
        model, tier = how
        try:
            prompt, completion = self.rates(
                model=model, custom_llm_provider=kind[1], usage_object=result.usage, service_tier=tier
            )
            return float(prompt) + float(completion)
        except Exception:  # noqa: BLE001 - a model the rates function cannot price: no agreement
            return None

    def _agreeing(self, kind: tuple, result: Any, full: Any, candidates: list) -> tuple[str, str | None] | None:
        if not isinstance(full, (int, float)) or isinstance(full, bool) or not math.isfinite(full):
            return None
        for how in candidates:
            cost = self._by_rates(kind, result, how)
            if cost is not None and math.isclose(cost, full, rel_tol=1e-9, abs_tol=1e-15):
                return how
        return None


# The counts every reply has: the rates function prices them whatever their values.
PLAIN_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _nonzero_counts(usage: Any, prefix: str = "") -> list[str]:
    """The names of the token counts of `usage` that are not zero (nested details included)."""
    fields = usage.model_dump() if hasattr(usage, "model_dump") else usage
    names: list[str] = []
    if not isinstance(fields, dict):
        return names
    for name, value in fields.items():
        if isinstance(value, dict):
            names += _nonzero_counts(value, f"{prefix}{name}.")
        elif value not in (None, 0, 0.0, "", [], False) and name not in PLAIN_COUNTS:
            names.append(prefix + name)
    return names


def _price_replies_by_rates(litellm: Any) -> None:
    """Route litellm's per-call pricing of a chat reply through ReplyPricing while nobody listens."""
    try:
        logging_module = importlib.import_module("litellm.litellm_core_utils.litellm_logging")
    except ImportError:
        return
    logging_class = getattr(logging_module, "Logging", None)
    full = getattr(logging_class, "response_cost_calculator", None)
    rates = getattr(litellm, "cost_per_token", None)
    reply_class = getattr(litellm, "ModelResponse", None)
    if full is None or rates is None or reply_class is None or getattr(full, "_engine_wrapped", False):
        return  # another litellm: nothing to trim
    pricing = ReplyPricing(full, rates)

    @functools.wraps(full)
    def response_cost_calculator(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = args[0] if args else kwargs.get("result")
        if len(args) > 1 or type(result) is not reply_class or someone_listens(litellm):
            return full(self, *args, **kwargs)
        return pricing.price(self, result, args, kwargs)

    response_cost_calculator._engine_wrapped = True  # type: ignore[attr-defined]
    response_cost_calculator.pricing = pricing  # type: ignore[attr-defined]
    setattr(logging_class, "response_cost_calculator", response_cost_calculator)  # noqa: B010 - typed Any


# -- the model's cost-map entry while a request is prepared ------------------------------------------


def _cache_model_info_for_requests(litellm: Any) -> None:
    """litellm's preparation of a chat request asks whether the model is served through its
    Responses API, reading the model's cost-map entry twice per call with the uncached lookup.
    litellm keeps a cached one (cleared whenever a model is registered or the map changes);
    the check is pointed at it, handed a copy (it may write to the entry)."""
    try:
        bridge = importlib.import_module("litellm.responses.bridge_check")
        utils = importlib.import_module("litellm.utils")
    except ImportError:
        return
    uncached = getattr(bridge, "get_model_info_helper", None)
    cached = getattr(utils, "cached_get_model_info_helper", None)
    if uncached is None or cached is None or getattr(uncached, "_engine_wrapped", False):
        return

    @functools.wraps(uncached)
    def model_info(model: str, custom_llm_provider: str | None = None, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # a lookup the cached one does not make
            return uncached(model, custom_llm_provider, *args, **kwargs)
        return dict(cached(model, custom_llm_provider))

    model_info._engine_wrapped = True  # type: ignore[attr-defined]
    setattr(bridge, "get_model_info_helper", model_info)  # noqa: B010 - a module mypy reads as typed


# -- httpx's cookie jar, fed every reply -----------------------------------------------------------


def _skip_cookie_parsing_without_cookies() -> None:
    """httpx hands every response to its client's cookie jar, which wraps request and response
    in urllib-shaped adapters (the URL parsed again, the headers copied) only to find no
    Set-Cookie header: ~60 us per call, for an API whose replies set no cookie.

    A response with neither Set-Cookie nor Set-Cookie2 is skipped where the jar is the standard
    library's own CookieJar, for which it is then a no-op (it would only note the time of the
    look). Any other response, or a jar of another class, is parsed as before."""
    try:
        httpx = importlib.import_module("httpx")
    except ImportError:
        return
    cookies_class = getattr(httpx, "Cookies", None)
    extract = getattr(cookies_class, "extract_cookies", None)
    if extract is None or getattr(extract, "_engine_wrapped", False):
        return

    @functools.wraps(extract)
    def extract_cookies(self: Any, response: Any) -> None:
        headers = getattr(response, "headers", None)
        if (
            type(getattr(self, "jar", None)) is http.cookiejar.CookieJar
            and headers is not None
            and "set-cookie" not in headers
            and "set-cookie2" not in headers
        ):
            return
        extract(self, response)

    extract_cookies._engine_wrapped = True  # type: ignore[attr-defined]
    setattr(cookies_class, "extract_cookies", extract_cookies)  # noqa: B010 - a class mypy reads as typed
