"""The OpenAI-compatible path, tested up to the network boundary against real local servers:
``transformers serve`` with the tiny model, and a scripted server for failures."""

from __future__ import annotations

import time

import pytest

from empathy_utils.backends import CachedBackend, LocalBackend, OpenAIBackend, ResponseCache, Sampling
from empathy_utils.errors import BackendError
from empathy_utils.serving import count_completions
from servers import scripted_server


def _convs(n):
    return [[{"role": "user", "content": f"Tell me how day {i} of the trip went."}] for i in range(n)]


@pytest.mark.slow
def test_server_answers_like_the_local_model(tiny_server, tiny_spec):
    url, folder, _ = tiny_server
    api = OpenAIBackend(url, folder, max_concurrency=3, progress=False)
    sampling = Sampling(max_new_tokens=6)
    served = api.chat(_convs(5), sampling)
    local = LocalBackend(tiny_spec, share_prefix=False, progress=False).chat(_convs(5), sampling)
    assert [c.text for c in served] == [c.text for c in local]  # same weights, greedy: same answers
    assert all(c.finish_reason in ("stop", "length") and c.completion_tokens > 0 for c in served)
    assert api.name == f"api:{folder}"


@pytest.mark.slow
def test_cached_server_backend_repeats_no_call(tiny_server, tmp_path):
    url, folder, log = tiny_server
    before = count_completions(log)
    cache = ResponseCache(tmp_path / "c.sqlite")
    first = CachedBackend(OpenAIBackend(url, folder, max_concurrency=2, progress=False), cache)
    first.chat(_convs(4), Sampling(max_new_tokens=4))
    time.sleep(0.5)  # the access log is written after the response
    assert count_completions(log) - before == 4
    again = CachedBackend(OpenAIBackend(url, folder, progress=False), ResponseCache(tmp_path / "c.sqlite"))
    again.chat(_convs(4), Sampling(max_new_tokens=4))
    time.sleep(0.5)
    assert again.stats.new_calls == 0
    assert count_completions(log) - before == 4


def test_retries_with_backoff_on_429_and_5xx_then_succeeds():
    with scripted_server([(429, 0), (503, 0), (500, 0)]) as (url, handler):
        api = OpenAIBackend(url, "m", max_retries=3, progress=False)
        start = time.time()
        out = api.chat(_convs(1), Sampling(max_new_tokens=4))
        assert out[0].text.startswith("Echo: Tell me how day 0")
        assert len(handler.requests) == 4
        assert time.time() - start > 0.5  # it waited between attempts


def test_gives_up_with_a_clear_error_after_the_retries():
    with scripted_server([(503, 0)] * 10) as (url, handler):
        api = OpenAIBackend(url, "m", max_retries=2, progress=False)
        with pytest.raises(BackendError, match=r"answered HTTP 503 for model 'm' after retries"):
            api.chat(_convs(1), Sampling())
        assert len(handler.requests) == 3


def test_timeouts_are_retried_then_reported():
    with scripted_server([(200, 3.0)] * 5) as (url, handler):
        api = OpenAIBackend(url, "m", max_retries=1, timeout_seconds=0.5, progress=False)
        with pytest.raises(BackendError, match="no answer after 1 retries"):
            api.chat(_convs(1), Sampling())
        assert len(handler.requests) == 2


def test_key_comes_from_the_named_environment_variable(monkeypatch):
    secret = "test-" + "k" * 8 + str(time.time_ns())
    monkeypatch.setenv("EMPATHY_TEST_KEY", secret)
    with scripted_server([]) as (url, handler):
        OpenAIBackend(url, "m", api_key_env="EMPATHY_TEST_KEY", progress=False).chat(_convs(1), Sampling())
        assert handler.requests[0]["auth"] == f"Bearer {secret}"


def test_concurrency_is_bounded_and_order_kept():
    with scripted_server([(200, 0.3)] * 6) as (url, handler):
        api = OpenAIBackend(url, "m", max_concurrency=3, progress=False)
        start = time.time()
        out = api.chat(_convs(6), Sampling())
        elapsed = time.time() - start
        assert 0.55 < elapsed < 1.5  # two waves of three: not six in a row, not all at once
        assert [c.text for c in out] == [f"Echo: {c[0]['content']}" for c in _convs(6)]
