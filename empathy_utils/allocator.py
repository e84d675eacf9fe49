"""glibc's memory allocator set to keep the memory the study frees, for its next use.

A stage allocates and frees the same large tensors again and again: a batch's activations, each decoding
step's keys, values and logits, each training step's gradients. By default glibc serves a block above a
threshold (128 KiB, raised as such blocks are freed, to at most 32 MiB) with fresh pages mapped from the
operating system and unmaps them when it is freed, and it gives back the top of its heap whenever more
than 128 KiB lies free there. Every reuse then faults the pages in again and has them zeroed: the default
study without the research data took 9.0-9.7 million page faults and 30-39 s of system time
(benchmarks/README.md). These settings serve blocks up to 1 GiB from the heap, grow it 512 MiB at a time
and keep up to 1 GiB free there; the same study then took 3.9 million faults and 18-21 s, its stages
1.06x faster, with byte-identical replies, judgments and results and the same peak memory (3.7 GB).

glibc reads its ``MALLOC_*_`` variables when a process starts, so :func:`keep_freed_memory` both sets
them for the processes this one starts (the runner's notebook kernels) and applies them to this process
with ``mallopt``. Nothing changes where the C library is not glibc (macOS, musl), where a variable is
already set (the user's choice wins), or with ``EMPATHY_MALLOC=glibc`` (glibc's own defaults: the old
path, for comparisons). The maths is untouched: only where freed memory waits for its next use. Between
stages :func:`empathy_utils.models.release_memory` still hands all of it back (``malloc_trim`` does not
heed these thresholds), so a kernel that runs stage after stage holds what it held before between them;
at a stage's peak it can hold more, since freed blocks kept in the heap do not always fit its next large
allocation (the whole ``study`` book: 48 min instead of 55, but a peak of 7.1 GB instead of 5.9; on a
machine short of memory, set ``EMPATHY_MALLOC=glibc``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import MutableMapping

OPT_OUT = "EMPATHY_MALLOC"  # "glibc": leave glibc's defaults

GIB = 1 << 30
# glibc's variable -> (mallopt's parameter number, value in bytes); values fit mallopt's int.
SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": (-3, GIB),  # M_MMAP_THRESHOLD: blocks up to this size come from the heap
    "MALLOC_TRIM_THRESHOLD_": (-1, GIB),  # M_TRIM_THRESHOLD: free memory kept at the heap's top
    "MALLOC_TOP_PAD_": (-2, GIB // 2),  # M_TOP_PAD: how much more the heap grows by each time it must
}


def _glibc():
    """The running process's C library if it is glibc (it has ``mallopt`` and ``gnu_get_libc_version``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(environ: MutableMapping[str, str] | None = None, this_process: bool = True) -> dict[str, str]:
    """Set :data:`SETTINGS` in ``environ`` (default ``os.environ``, which child processes inherit) where
    the user set nothing, and (``this_process``) in this process through ``mallopt``. Returns the
    variables it set; empty with ``EMPATHY_MALLOC=glibc`` or where the C library is not glibc."""
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT, "").strip().lower() == "glibc":
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    chosen = {}
    for name, (parameter, value) in SETTINGS.items():
        if name in environ:
            continue
        environ[name] = chosen[name] = str(value)
        if this_process:
            libc.mallopt(parameter, value)
    return chosen


def allocator_settings(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """The ``MALLOC_*_`` variables in effect (for a run's manifest: they change timings, not results)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in SETTINGS if name in environ}
