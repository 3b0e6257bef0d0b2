"""Frozen weights handed to MKL once in its packed layout, for the GEMMs of a training run.

Every `cblas_sgemm` copies its B matrix into a packed layout before multiplying. In a LoRA step B
is almost always a frozen weight (x @ W.T forward, dy @ W backward), the same matrix every step,
and those copies were 10-12% of the step's CPU (perf). MKL can pack a matrix once
(`cblas_sgemm_pack`) and multiply with the packed form (`cblas_sgemm_compute`): the step's
shapes ran 1.13-1.29x faster that way, and a 256-token LoRA step took 0.50-0.52 s instead of
0.57 s (benchmarks/train_speed.py, "weights not packed" row).

MLX calls `cblas_sgemm` itself, so the engine puts a small C library of its own first in the
process's symbol scope, ahead of MKL (engine.models.blas loads it just before MKL, and MLX binds
to the first definition). Its `cblas_sgemm` multiplies with a packed copy when B is a weight the
engine registered, in the same orientation and shape as the call; everything else goes straight
to MKL. Only the arrays registered by `packing_frozen_weights` qualify: the frozen weights of the
model being trained, held alive (so their memory cannot be reused by another array) and
unregistered, with their packed copies freed, when training ends. MLX arrays never change once
computed, and frozen weights are not updated, so a packed copy stays equal to its weight.

The packed copies cost memory (MKL's layout takes 2-4x the matrix), so they are made on first use
up to PACK_RAM_FRACTION of RAM; GEMMs beyond it run as before. Built with the system's C
compiler into the user's cache (a few KB, once); without a compiler, MKL, or with
RECIPE_PACKED_WEIGHTS=0, nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

log = logging.getLogger("engine.models")

OFF_SWITCH = "RECIPE_PACKED_WEIGHTS"
PACK_RAM_FRACTION = 0.15
MIN_ELEMENTS = 65536  # smaller weights: packing saves too little to pay for the lookup
_loaded: dict[str, Any] = {}

SOURCE = r"""
// Written by recipe (engine/models/packed_weights.py): cblas_sgemm with registered B matrices
// multiplied from MKL's packed layout; every other call goes to MKL's cblas_sgemm unchanged.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int,
                         float, float *, int);
typedef size_t (*pack_size_fn)(int, int, int, int);
typedef void (*pack_fn)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_fn)(int, int, int, int, int, int, const float *, int, const float *, int, float,
                           float *, int);

enum { ROW_MAJOR = 101, B_MATRIX = 162, PACKED = 151 };

struct weight { const float *data; long elements; };
struct packed { const float *b; int trans, n, k, ldb; float *buffer; };

static sgemm_fn real_sgemm;
static pack_size_fn pack_size;
static pack_fn pack;
static compute_fn compute;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct weight *weights;
static int n_weights, weights_cap;
static struct packed *packs;
static int n_packs, packs_cap;
static size_t budget, used;
static long min_elements, hits, in_flight;

int recipe_pack_init(const char *blas) {
  // Local here: the engine makes the BLAS global only after this library, so that MLX binds its
  // cblas_sgemm to this one and every other BLAS symbol to the BLAS.
  void *library = dlopen(blas, RTLD_NOW | RTLD_LOCAL);
  if (!library) return 0;
  real_sgemm = (sgemm_fn)dlsym(library, "cblas_sgemm");
  pack_size = (pack_size_fn)dlsym(library, "cblas_sgemm_pack_get_size");
  pack = (pack_fn)dlsym(library, "cblas_sgemm_pack");
  compute = (compute_fn)dlsym(library, "cblas_sgemm_compute");
  return real_sgemm && pack_size && pack && compute;
}

void recipe_pack_configure(size_t bytes, long smallest) {
  pthread_mutex_lock(&lock);
  budget = bytes;
  min_elements = smallest;
  pthread_mutex_unlock(&lock);
}

int recipe_pack_register(const float *data, long elements) {
  pthread_mutex_lock(&lock);
  if (n_weights == weights_cap) {
    int cap = weights_cap ? 2 * weights_cap : 256;
    struct weight *grown = realloc(weights, cap * sizeof *grown);
    if (!grown) { pthread_mutex_unlock(&lock); return 0; }
    weights = grown;
    weights_cap = cap;
  }
  weights[n_weights++] = (struct weight){data, elements};
  pthread_mutex_unlock(&lock);
  return 1;
}

// Stops packing and frees the copies once no product still reads one (another thread may be
// multiplying from a copy it found before the clearing began).
void recipe_pack_clear(void) {
  pthread_mutex_lock(&lock);
  n_weights = 0;
  pthread_mutex_unlock(&lock);
  while (__atomic_load_n(&in_flight, __ATOMIC_ACQUIRE)) sched_yield();
  pthread_mutex_lock(&lock);
  for (int i = 0; i < n_packs; i++) free(packs[i].buffer);
  n_packs = 0;
  used = 0;
  pthread_mutex_unlock(&lock);
}

long recipe_pack_hits(void) { return __atomic_load_n(&hits, __ATOMIC_RELAXED); }

static int room_for_one_more(void) {
  if (n_packs < packs_cap) return 1;
  int cap = packs_cap ? 2 * packs_cap : 256;
  struct packed *grown = realloc(packs, cap * sizeof *grown);
  if (!grown) return 0;
  packs = grown;
  packs_cap = cap;
  return 1;
}

// The packed copy of B for this call, made on its first use (counted in flight until the caller
// is done with it); NULL to multiply as usual.
static const float *packed_b(const float *b, int trans, int m, int n, int k, int ldb) {
  const float *found = NULL;
  pthread_mutex_lock(&lock);
  int registered = 0;
  for (int i = 0; i < n_weights && !registered; i++)
    registered = weights[i].data == b && (long)n * k <= weights[i].elements;
  for (int i = 0; registered && !found && i < n_packs; i++) {
    struct packed *p = &packs[i];
    if (p->b == b && p->trans == trans && p->n == n && p->k == k && p->ldb == ldb) found = p->buffer;
  }
  if (registered && !found) {
    size_t bytes = (pack_size(B_MATRIX, m, n, k) + 63) / 64 * 64;
    float *buffer = used + bytes <= budget && room_for_one_more() ? aligned_alloc(64, bytes) : NULL;
    if (buffer) {
      pack(ROW_MAJOR, B_MATRIX, trans, m, n, k, 1.0f, b, ldb, buffer);
      packs[n_packs++] = (struct packed){b, trans, n, k, ldb, buffer};
      used += bytes;
      found = buffer;
    }
  }
  if (found) __atomic_add_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_unlock(&lock);
  return found;
}

void cblas_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc) {
  if (__atomic_load_n(&n_weights, __ATOMIC_RELAXED) && layout == ROW_MAJOR && alpha == 1.0f &&
      (long)n * k >= min_elements) {
    const float *p = packed_b(b, trans_b, m, n, k, ldb);
    if (p) {
      compute(ROW_MAJOR, trans_a, PACKED, m, n, k, a, lda, p, ldb, beta, c, ldc);
      __atomic_add_fetch(&hits, 1, __ATOMIC_RELAXED);
      __atomic_sub_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
      return;
    }
  }
  real_sgemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
"""


def _build() -> Path | None:
    """The compiled library in the user's cache, built once per source; None without a compiler."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        return None
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recipe" / f"packed-sgemm-{digest}"
    library = folder / "librecipe_packed_sgemm.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "packed_sgemm.c"
    source.write_text(SOURCE, encoding="utf-8")
    partial = folder / f"tmp-{os.getpid()}.so"  # renamed into place: a concurrent build never half-reads
    done = subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(source), "-ldl", "-lpthread"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        log.debug("packed weights: the C library did not build: %s", done.stderr[-500:])
        return None
    partial.replace(library)
    return library


def load_ahead_of(blas: str) -> bool:
    """Load the library ahead of `blas` (an MKL runtime) in the process's symbol scope; whether
    it is in place. Call before loading the BLAS itself and before MLX is imported."""
    if os.environ.get(OFF_SWITCH, "").strip() == "0":
        return False
    try:
        path = _build()
        if path is None:
            return False
        # Loaded locally and checked first: only a library whose BLAS has the packed API goes
        # into the global scope, where MLX will find its cblas_sgemm.
        library = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
        library.recipe_pack_init.argtypes = [ctypes.c_char_p]
        if not library.recipe_pack_init(blas.encode()):
            log.debug("packed weights: %s has no cblas_sgemm_pack/compute", blas)
            return False
        ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
    except OSError as e:
        log.debug("packed weights: not loaded: %s", e)
        return False
    library.recipe_pack_register.argtypes = [ctypes.c_void_p, ctypes.c_long]
    library.recipe_pack_configure.argtypes = [ctypes.c_size_t, ctypes.c_long]
    library.recipe_pack_hits.restype = ctypes.c_long
    _loaded["library"] = library
    return True


def packed_gemms() -> int:
    """How many GEMMs ran from packed weights in this process (0 without the library)."""
    library = _loaded.get("library")
    return int(library.recipe_pack_hits()) if library is not None else 0


def _flat(tree: Any) -> list[tuple[str, Any]]:
    from mlx.utils import tree_flatten

    return cast(list[tuple[str, Any]], tree_flatten(tree))  # the list form without a destination


@contextlib.contextmanager
def packing_frozen_weights(model: Any, min_elements: int = MIN_ELEMENTS) -> Iterator[int]:
    """While inside, GEMMs whose B is one of `model`'s frozen float32 weights multiply from a
    packed copy; yields how many weights were registered (0 where the library is not loaded)."""
    library = _loaded.get("library")
    if library is None:
        yield 0
        return
    # MLX is loaded by now (the library is only loaded while engine.models.blas prepares MLX's
    # BLAS), and importing engine.models.blas here would close an import cycle.
    import mlx.core as mx
    import numpy as np

    trainable = {name for name, _ in _flat(model.trainable_parameters())}
    frozen = [
        w
        for name, w in _flat(model.parameters())
        if name not in trainable and w.dtype == mx.float32 and w.ndim == 2 and w.size >= min_elements
    ]
    mx.eval(frozen)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    library.recipe_pack_configure(int(ram * PACK_RAM_FRACTION), min_elements)
    for weight in frozen:  # the arrays' own memory: MLX passes this pointer for W and for W.T
        library.recipe_pack_register(np.asarray(memoryview(weight)).ctypes.data, weight.size)
    try:
        yield len(frozen)
    finally:
        library.recipe_pack_clear()
        del frozen  # only now may their memory go back to MLX's allocator
