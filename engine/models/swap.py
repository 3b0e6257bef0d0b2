"""A model module's global function replaced by a wrapper for as long as the engine uses the model.

mlx-lm models reach shared functions (attention, SwiGLU) through globals of their own module, so
the engine swaps those globals for CPU versions while it generates or trains. Scoped, not
permanent: the module's global is mlx-lm's again once nothing of ours runs, so code that imports
it later sees the library as shipped. Nested and concurrent users (generation batches on
threads, a training run) share one swap, undone when the last one ends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

_LOCK = threading.Lock()
_SWAPPED: dict[tuple[str, str], list[Any]] = {}  # (module, global): [our wrapper, the original, users running]


@contextlib.contextmanager
def swapped_global(model: Any, name: str, wrapping: Callable[[Any], Any]) -> Iterator[None]:
    """While inside, `model`'s module global `name` is `wrapping(original)` (nothing happens when
    the module has no such global)."""
    module = sys.modules[type(model).__module__]
    original = getattr(module, name, None)
    if original is None:
        yield
        return
    key = (module.__name__, name)
    with _LOCK:
        if key not in _SWAPPED:
            _SWAPPED[key] = [wrapping(original), original, 0]
            setattr(module, name, _SWAPPED[key][0])
        _SWAPPED[key][2] += 1
    try:
        yield
    finally:
        with _LOCK:
            wrapper, original, users = _SWAPPED[key]
            _SWAPPED[key][2] = users - 1
            if users == 1:
                del _SWAPPED[key]
                # Put back only our own swap: whoever replaced it since keeps theirs.
                if getattr(module, name, None) is wrapper:
                    setattr(module, name, original)
