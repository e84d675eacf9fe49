"""Local backend batching and the persistent response cache, on a tiny random model."""

from __future__ import annotations

import pytest

from empathy_utils.backends import CachedBackend, LocalBackend, ResponseCache, Sampling


@pytest.fixture(scope="module")
def tiny_backend(tiny_spec):
    return LocalBackend(tiny_spec, batch_size=4, progress=False)


def _convs(n):
    return [[{"role": "user", "content": f"Speaker {i} says something {'long ' * i}today."}] for i in range(n)]


def test_batched_generation_equals_one_at_a_time(tiny_backend):
    sampling = Sampling(max_new_tokens=6)
    batched = tiny_backend.chat(_convs(5), sampling)
    tiny_backend.batch_size = 1
    try:
        single = tiny_backend.chat(_convs(5), sampling)
    finally:
        tiny_backend.batch_size = 4
    assert len({c.text for c in batched}) > 1, "the tiny model should answer different prompts differently"
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.finish_reason in ("stop", "length") for c in batched)


def test_choice_logprobs_are_normalised_log_probabilities(tiny_backend):
    out = tiny_backend.choice_logprobs(_convs(3), ["1", "2"])
    assert len(out) == 3
    assert all(set(d) == {"1", "2"} and d["1"] < 0 and d["2"] < 0 for d in out)


def test_cache_answers_a_repeat_with_zero_new_calls(tiny_backend, tmp_path):
    cached = CachedBackend(tiny_backend, ResponseCache(tmp_path / "cache.sqlite"), chunk_size=2)
    sampling = Sampling(max_new_tokens=5)
    first = cached.chat(_convs(5), sampling)
    assert cached.stats.new_calls == 5
    assert not any(c.cached for c in first)
    # A new process opening the same file: nothing is asked again.
    again = CachedBackend(tiny_backend, ResponseCache(tmp_path / "cache.sqlite"))
    second = again.chat(_convs(5), sampling)
    assert again.stats.new_calls == 0
    assert all(c.cached for c in second)
    assert [c.text for c in first] == [c.text for c in second]
    # Different sampling parameters are a different question.
    again.chat(_convs(1), Sampling(max_new_tokens=4))
    assert again.stats.new_calls == 1


def test_duplicate_conversations_in_one_call_are_asked_once(tiny_backend, tmp_path):
    cached = CachedBackend(tiny_backend, ResponseCache(tmp_path / "c.sqlite"))
    convs = _convs(2) * 3
    out = cached.chat(convs, Sampling(max_new_tokens=3))
    assert cached.stats.new_calls == 2
    assert len(out) == 6


def _shared_prefix_convs(n):
    preamble = "Read the definitions first. " * 12
    return [[{"role": "user", "content": f"{preamble}Speaker {i} says something {'long ' * i}today."}] for i in range(n)]


def test_shared_prefix_gives_the_same_answers_and_probabilities(tiny_spec, tiny_backend):
    plain = LocalBackend(tiny_spec, batch_size=1, progress=False, share_prefix=False,
                         model=tiny_backend.model, tokenizer=tiny_backend.tokenizer)
    convs = _shared_prefix_convs(5)
    assert len(tiny_backend._shared_prefix(tiny_backend._encode(convs))) >= LocalBackend.MIN_SHARED_PREFIX
    sampling = Sampling(max_new_tokens=6)
    shared = tiny_backend.chat(convs, sampling)
    single = plain.chat(convs, sampling)
    assert [c.text for c in shared] == [c.text for c in single]
    for a, b in zip(tiny_backend.choice_logprobs(convs, ["1", "2"]), plain.choice_logprobs(convs, ["1", "2"])):
        assert a["1"] == pytest.approx(b["1"], abs=1e-4)
        assert a["2"] == pytest.approx(b["2"], abs=1e-4)


@pytest.mark.parametrize("convs", [_convs(7), _shared_prefix_convs(7)], ids=["own prompts", "shared prefix"])
def test_greedy_replies_drop_finished_rows_and_equal_generates(tiny_spec, tiny_backend, convs):
    """The decoding loop that drops a row once it has ended gives generate's replies, and runs fewer rows."""
    through_generate = LocalBackend(tiny_spec, batch_size=7, progress=False, drop_finished=False,
                                    model=tiny_backend.model, tokenizer=tiny_backend.tokenizer)
    dropping = LocalBackend(tiny_spec, batch_size=7, progress=False,
                            model=tiny_backend.model, tokenizer=tiny_backend.tokenizer)
    sampling = Sampling(max_new_tokens=8)
    tokenizer = tiny_backend.tokenizer
    original_eos = tokenizer.eos_token_id
    # The random model rarely ends a turn: call "end of turn" a token it says early in some replies only.
    first = through_generate.chat(convs, sampling)
    words = [tokenizer.encode(c.text, add_special_tokens=False) for c in first]
    tokenizer.eos_token_id = next(w[2] for w in words if len(w) > 2 and sum(w[2] in v for v in words) < len(words))
    rows_run = []
    hook = tiny_backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows_run.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        expected = through_generate.chat(convs, sampling)
        rows_run.clear()
        got = dropping.chat(convs, sampling)
    finally:
        hook.remove()
        tokenizer.eos_token_id = original_eos
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in got] == \
        [(c.text, c.finish_reason, c.completion_tokens) for c in expected]
    assert any(c.finish_reason == "stop" for c in got) and any(c.finish_reason == "length" for c in got)
    decode_steps = [rows for rows, width in rows_run if width == 1]  # the prompt (and shared prefix) passes aside
    assert decode_steps[0] == len(convs) and min(decode_steps) < len(convs), "finished rows were not dropped"


def test_sampled_replies_come_from_the_own_loop_and_draw_what_generate_draws(tiny_spec, tiny_backend):
    """Sampling (the teacher's retries) no longer falls back to generate: one row draws generate's tokens
    for the same seed (temperature, top-k, top-p and the draws all match); a batch drops rows that end."""
    through_generate = LocalBackend(tiny_spec, batch_size=7, progress=False, drop_finished=False,
                                    model=tiny_backend.model, tokenizer=tiny_backend.tokenizer)
    own = LocalBackend(tiny_spec, batch_size=7, progress=False,
                       model=tiny_backend.model, tokenizer=tiny_backend.tokenizer)
    conv = _convs(3)[2:]
    for seed in (1, 2, 3):
        sampling = Sampling(max_new_tokens=10, temperature=0.7, top_p=0.95, seed=seed)
        assert [c.text for c in own.chat(conv, sampling)] == [c.text for c in through_generate.chat(conv, sampling)]
    texts = {own.chat(conv, Sampling(max_new_tokens=10, temperature=0.7, top_p=0.95, seed=s))[0].text for s in (1, 2, 3)}
    assert len(texts) > 1, "different seeds should draw different replies"
    greedy = own.chat(conv, Sampling(max_new_tokens=10))[0].text
    assert texts != {greedy}

    convs = _shared_prefix_convs(7)
    tokenizer = tiny_backend.tokenizer
    original_eos = tokenizer.eos_token_id
    sampling = Sampling(max_new_tokens=8, temperature=0.7, top_p=0.95, seed=5)
    first = own.chat(convs, sampling)
    assert own.chat(convs, sampling) == first, "the same seed draws the same replies"
    # The random model rarely ends a turn: call "end of turn" a token some replies (not all) draw.
    words = [tokenizer.encode(c.text, add_special_tokens=False) for c in first]
    candidates = [t for w in words for t in w[1:4] if sum(t in v for v in words) < len(words)]
    rows_run = []
    hook = tiny_backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows_run.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        for token in candidates:
            tokenizer.eos_token_id = token
            rows_run.clear()
            got = own.chat(convs, sampling)
            if any(c.finish_reason == "stop" for c in got):
                break
    finally:
        hook.remove()
        tokenizer.eos_token_id = original_eos
    assert any(c.finish_reason == "stop" for c in got) and any(c.finish_reason == "length" for c in got)
    decode_steps = [rows for rows, width in rows_run if width == 1]
    assert decode_steps[0] == len(convs) and min(decode_steps) < len(convs), "finished rows were not dropped"


@pytest.mark.parametrize("section", ["teacher", "judge", "judge_validation"])
def test_every_served_model_takes_concurrency_timeout_and_retries_from_the_params(section):
    """Teacher, judge and judge candidates share one backend settings type: an API judge is no longer
    stuck with hard-coded 8 requests / 120 s / 5 retries."""
    from empathy_utils.backends import OpenAIBackend, make_backend
    from empathy_utils.config import StudyConfig

    cfg = StudyConfig.from_dict({section: {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                           "max_concurrency": 3, "timeout_seconds": 7.5, "max_retries": 2}})
    backend = make_backend(getattr(cfg, section))
    assert isinstance(backend, OpenAIBackend)
    assert backend.max_concurrency == 3
    assert backend.client.timeout == 7.5
    assert backend.client.max_retries == 2


# ------------------------------------------------------------------ keys and values written in place
def test_a_reserved_cache_layer_writes_in_place_and_holds_what_concatenation_would():
    import torch
    from transformers.cache_utils import DynamicLayer

    from empathy_utils.kv_cache import ReservedLayer

    gen = torch.Generator().manual_seed(0)
    reserved, dynamic = ReservedLayer(room=3), DynamicLayer()
    steps = [torch.randn(4, 2, n, 8, generator=gen) for n in (5, 1, 1, 1, 1, 2)]  # past the room: it grows
    buffers = []
    for k in steps:
        got, want = reserved.update(k, -k), dynamic.update(k, -k)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])
        buffers.append(reserved.key_buffer.data_ptr())
    assert len(set(buffers[:4])) == 1, "the first steps wrote into one buffer, not a new tensor each"
    assert buffers[4] != buffers[3], "past its room it grows"
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 11
    rows = torch.tensor([0, 2])
    reserved.batch_select_indices(rows)
    dynamic.batch_select_indices(rows)
    torch.testing.assert_close(reserved.update(steps[1][:2], steps[1][:2])[0], dynamic.update(steps[1][:2], steps[1][:2])[0])


@pytest.mark.parametrize("rows", [[1, 3], [0, 2, 3], [3], [2, 0]], ids=["two moved", "first kept", "last only", "unordered"])
def test_dropping_rows_of_a_reserved_cache_moves_the_kept_rows_in_place(rows):
    import torch
    from transformers.cache_utils import DynamicLayer

    from empathy_utils.kv_cache import ReservedLayer

    gen = torch.Generator().manual_seed(1)
    reserved, dynamic = ReservedLayer(room=4), DynamicLayer()
    for n in (5, 1):
        k = torch.randn(4, 2, n, 8, generator=gen)
        reserved.update(k, -k), dynamic.update(k, -k)
    storage = reserved.key_buffer.untyped_storage().data_ptr()
    index = torch.tensor(rows)
    reserved.batch_select_indices(index)
    dynamic.batch_select_indices(index)
    torch.testing.assert_close(reserved.keys, dynamic.keys, rtol=0, atol=0)
    torch.testing.assert_close(reserved.values, dynamic.values, rtol=0, atol=0)
    if rows == sorted(rows):
        assert reserved.key_buffer.untyped_storage().data_ptr() == storage, "kept rows move within the buffer"
    for _ in range(3):  # the reserve still takes the next tokens in place
        k = torch.randn(len(rows), 2, 1, 8, generator=gen)
        got, want = reserved.update(k, -k), dynamic.update(k, -k)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


@pytest.mark.parametrize("convs", [_convs(7), _shared_prefix_convs(7)], ids=["own prompts", "shared prefix"])
def test_the_greedy_loop_never_concatenates_the_cache_and_replies_the_same(tiny_spec, tiny_backend, convs, monkeypatch):
    from transformers.cache_utils import DynamicLayer

    concatenations = []
    real_update = DynamicLayer.update
    def counting(self, keys, values, *args, **kwargs):  # a decode step's one new token appended
        concatenations.extend([1] if keys.shape[-2] == 1 else [])
        return real_update(self, keys, values, *args, **kwargs)

    monkeypatch.setattr(DynamicLayer, "update", counting)
    sampling = Sampling(max_new_tokens=8)
    kwargs = dict(batch_size=7, progress=False, model=tiny_backend.model, tokenizer=tiny_backend.tokenizer)
    old = LocalBackend(tiny_spec, reserve_cache=False, **kwargs).chat(convs, sampling)
    assert concatenations, "transformers' cache concatenates at every step"
    concatenations.clear()
    new = LocalBackend(tiny_spec, **kwargs).chat(convs, sampling)
    assert not concatenations
    assert [(c.text, c.completion_tokens) for c in new] == [(c.text, c.completion_tokens) for c in old]
