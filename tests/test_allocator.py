"""glibc keeps the memory the study frees (empathy_utils.allocator): in the kernels the runner starts,
through their environment, and in the process that asks, through mallopt. Checked by what a process
pays to reuse a large freed block (its pages faulting in again, or not), not by the variables' presence."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from empathy_utils import allocator

pytestmark = pytest.mark.skipif(allocator._glibc() is None, reason="the C library here is not glibc")

# A child process that frees a 64 MiB block it has written, allocates it again and writes it again, and
# reports how many of its pages faulted in the second time (getrusage's minor faults): all of them where
# glibc handed the block back to the operating system, none where its heap kept it. Optionally after
# keep_freed_memory() in that process.
PROBE = """
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "in-process":
    from empathy_utils.allocator import keep_freed_memory
    keep_freed_memory()
size = 64 << 20
block = libc.malloc(size)
ctypes.memset(block, 1, size)
libc.free(ctypes.c_void_p(block))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size)
ctypes.memset(block, 2, size)
faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps(faulted / (size // resource.getpagesize())))
"""


def glibc_defaults() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in allocator.SETTINGS and k != allocator.OPT_OUT}


def pages_faulted_again(env: dict[str, str], mode: str = "inherited") -> float:
    """The share of a reused 64 MiB block's pages that faulted in again."""
    done = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_a_process_started_with_the_settings_serves_a_large_block_from_its_heap():
    env = glibc_defaults()
    assert pages_faulted_again(env) > 0.9, "glibc's defaults give the block back (the behaviour being changed)"
    chosen = allocator.keep_freed_memory(env, this_process=False)
    assert set(chosen) == set(allocator.SETTINGS)
    assert pages_faulted_again(env) < 0.1


def test_keep_freed_memory_applies_to_the_process_that_calls_it():
    env = glibc_defaults()
    assert pages_faulted_again(env, mode="in-process") < 0.1


def test_a_users_own_setting_and_the_opt_out_are_respected():
    env = glibc_defaults() | {"MALLOC_TRIM_THRESHOLD_": "0"}
    chosen = allocator.keep_freed_memory(env, this_process=False)
    assert env["MALLOC_TRIM_THRESHOLD_"] == "0" and "MALLOC_TRIM_THRESHOLD_" not in chosen
    assert set(chosen) == set(allocator.SETTINGS) - {"MALLOC_TRIM_THRESHOLD_"}

    env = glibc_defaults() | {allocator.OPT_OUT: "glibc"}
    assert allocator.keep_freed_memory(env, this_process=False) == {}
    assert not set(env) & set(allocator.SETTINGS)
    assert pages_faulted_again(env) > 0.9, "EMPATHY_MALLOC=glibc leaves glibc's defaults"
    assert pages_faulted_again(env, mode="in-process") > 0.9
