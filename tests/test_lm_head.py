"""The whole-vocabulary LM head (empathy_utils.lm_head) against TRL's chunked one, which it replaces on a CPU."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from trl.kernels import ChunkedLogProbFunction

from empathy_utils.artifacts import RunPaths
from empathy_utils.config import load_config, profile_path
from empathy_utils.lm_head import WholeVocabularyLogProb, whole_vocabulary_lm_head
from empathy_utils.stages import build_datasets
from empathy_utils.training import train_dpo, train_sft

OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _score(function, hidden, weight, targets, autocast, temperature=1.0, logit_scale=1.0, bias=None, softcap=None):
    """Every output of ``function`` and the hidden states' gradient of a loss that uses log-probs and entropy."""
    hidden = hidden.clone().requires_grad_()
    torch.manual_seed(1)
    grad_weights = torch.randn(2, hidden.shape[0])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = function.apply(hidden, weight, bias, targets, temperature, 256, softcap, logit_scale, OUTPUTS)
    ((out[0] * grad_weights[0]).sum() + (out[1] * grad_weights[1]).sum()).backward()
    return out, hidden.grad


def _inputs(rows=300, width=16, vocab=1000):
    """More rows than one block and a vocabulary TRL splits into four tiles."""
    torch.manual_seed(0)
    return torch.randn(rows, width), torch.randn(vocab, width) * 0.5, torch.randint(0, vocab, (rows,))


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "mixed-bf16"])
@pytest.mark.parametrize("temperature,logit_scale", [(1.0, 1.0), (0.7, 1.3)])
def test_the_head_gives_trl_outputs_and_gradients(autocast, temperature, logit_scale):
    hidden, weight, targets = _inputs()
    expected, expected_grad = _score(ChunkedLogProbFunction, hidden, weight, targets, autocast, temperature, logit_scale)
    got, grad = _score(WholeVocabularyLogProb, hidden, weight, targets, autocast, temperature, logit_scale)
    for name, want, have in zip(("log_probs",) + OUTPUTS, expected, got):
        if name == "is_top1":
            assert torch.equal(have, want), name
        else:
            torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5, msg=name)
    # fp32: the same products summed in another order; bf16: the input gradient's product is rounded once
    # to bf16 (as every autocast layer's is) where TRL sums two fp32 tiles
    tolerance = {"rtol": 2e-2, "atol": 2e-2} if autocast else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(grad, expected_grad, **tolerance)


def test_outputs_not_asked_for_are_none_and_log_probs_alone_train():
    hidden, weight, targets = _inputs()
    leaf = hidden.clone().requires_grad_()
    out = WholeVocabularyLogProb.apply(leaf, weight, None, targets, 1.0, 256, None, 1.0, ())
    assert out[0].shape == (300,) and all(x is None for x in out[1:])
    out[0].sum().backward()
    reference = hidden.clone().requires_grad_()
    torch.log_softmax(reference @ weight.t(), -1).gather(-1, targets[:, None]).sum().backward()
    torch.testing.assert_close(leaf.grad, reference.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["bias", "softcap", "trained weight"])
def test_what_the_head_does_not_cover_goes_to_trl(case):
    hidden, weight, targets = _inputs()
    bias = torch.randn(weight.shape[0]) if case == "bias" else None
    softcap = 5.0 if case == "softcap" else None
    if case == "trained weight":
        weight = weight.clone().requires_grad_()
    expected = ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 1.0, 256, softcap, 1.0, OUTPUTS)
    with whole_vocabulary_lm_head() as head:
        import trl.trainer.utils as trl_utils

        got = trl_utils._ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 1.0, 256, softcap, 1.0, OUTPUTS)
    assert head.rows == 0
    for want, have in zip(expected, got):
        assert torch.equal(have, want)


def test_the_cast_weight_follows_a_changed_weight():
    """The bf16 copy is kept between calls; a weight changed in place is cast again, not read stale."""
    hidden, weight, targets = _inputs()
    _score(WholeVocabularyLogProb, hidden, weight, targets, autocast=True)
    weight.mul_(-1.5)
    expected, _ = _score(ChunkedLogProbFunction, hidden, weight, targets, autocast=True)
    got, _ = _score(WholeVocabularyLogProb, hidden, weight, targets, autocast=True)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-5)


def test_the_switch_restores_trl_and_names_a_missing_function(monkeypatch):
    import trl.trainer.utils as trl_utils

    from empathy_utils.errors import StudyError

    original = trl_utils._ChunkedLogProbFunction
    with whole_vocabulary_lm_head():
        assert trl_utils._ChunkedLogProbFunction is not original
    assert trl_utils._ChunkedLogProbFunction is original
    monkeypatch.delattr(trl_utils, "_ChunkedLogProbFunction")
    with pytest.raises(StudyError, match="_ChunkedLogProbFunction"):
        with whole_vocabulary_lm_head():
            pass


def _train(cfg, run_dir, step, new_head, monkeypatch):
    """Train ``step`` from scratch with the whole-vocabulary head, or with TRL's (``EMPATHY_LM_HEAD=trl``)."""
    if not new_head:
        monkeypatch.setenv("EMPATHY_LM_HEAD", "trl")
    folder = RunPaths(run_dir).sft_model if step == "sft" else RunPaths(run_dir).dpo_model
    shutil.rmtree(folder, ignore_errors=True)
    summary = (train_sft if step == "sft" else train_dpo)(cfg, run_dir)
    history = json.loads((folder / "train_log.json").read_text())["history"]
    monkeypatch.undo()
    return summary, [h["loss"] for h in history if "loss" in h], load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.parametrize("step", ["sft", "dpo"])
def test_training_with_the_head_matches_trls_head(tmp_path, tiny_spec, monkeypatch, step):
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=2", "dpo.max_steps=2", "sft.logging_steps=1",
                                             "dpo.logging_steps=1"])
    build_datasets(cfg, tmp_path)
    if step == "dpo":
        train_sft(cfg, tmp_path)
    trl, trl_losses, trl_weights = _train(cfg, tmp_path, step, False, monkeypatch)
    new, new_losses, new_weights = _train(cfg, tmp_path, step, True, monkeypatch)
    assert trl["lm_head"] == "TRL's chunked"
    assert new["lm_head"] == "whole-vocabulary (empathy_utils.lm_head)"
    assert new_losses == pytest.approx(trl_losses, rel=1e-5)
    for name, weight in trl_weights.items():
        torch.testing.assert_close(new_weights[name], weight, rtol=1e-4, atol=1e-6)
    moved = [name for name, weight in new_weights.items() if "lora_B" in name and weight.abs().max() > 0]
    assert moved, "training moved no LoRA B matrix"


def test_in_mixed_bf16_the_gradient_is_as_close_to_fp32_as_trls():
    """The input gradient's product runs in fp32 (as TRL's does on a CPU); rounded to bf16 it drifted."""
    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(300, 64), torch.randn(5000, 64) * 0.2, torch.randint(0, 5000, (300,))
    _, exact = _score(ChunkedLogProbFunction, hidden, weight, targets, autocast=False)
    _, trl = _score(ChunkedLogProbFunction, hidden, weight, targets, autocast=True)
    _, ours = _score(WholeVocabularyLogProb, hidden, weight, targets, autocast=True)
    assert (ours - exact).abs().mean() <= (trl - exact).abs().mean()
