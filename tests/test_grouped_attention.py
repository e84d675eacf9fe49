"""Grouped-products attention (empathy_utils.grouped_attention) against transformers' SDPA, on the tiny model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from empathy_utils import grouped_attention
from empathy_utils.artifacts import RunPaths
from empathy_utils.config import load_config, profile_path
from empathy_utils.models import load_model
from empathy_utils.stages import build_datasets
from empathy_utils.training import train_dpo, train_sft


@pytest.fixture()
def model(tiny_spec):
    model = load_model(tiny_spec)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _logits_and_gradients(model, **inputs):
    model.zero_grad()
    logits = model(**inputs).logits
    mask = inputs.get("attention_mask")
    weights = torch.ones(logits.shape[:2]) if mask is None else mask[:, -logits.shape[1]:].float()
    (logits.log_softmax(-1)[..., 3] * weights).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if "self_attn" in n}


def test_training_batches_give_sdpas_outputs_and_gradients(model):
    """Right-padded rows (a mask) and unpadded rows (no mask: plain causal attention)."""
    assert model.config.num_attention_heads > model.config.num_key_value_heads, "the tiny model has grouped queries"
    ids = torch.randint(3, 1000, (3, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    mask[2, 20:] = 0
    for inputs in ({"input_ids": ids, "attention_mask": mask}, {"input_ids": ids}):
        expected, expected_grads = _logits_and_gradients(model, **inputs)
        with grouped_attention.grouped_products_attention(model, True) as used:
            assert used == "grouped products" and model.config._attn_implementation == grouped_attention.NAME
            got, grads = _logits_and_gradients(model, **inputs)
        assert model.config._attn_implementation == "sdpa", "SDPA is restored after training"
        real = (mask if "attention_mask" in inputs else torch.ones_like(ids)).bool()
        torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-5)
        for name, grad in expected_grads.items():  # fp32 sums in another order: a few parts in a million
            assert (grads[name] - grad).norm() / grad.norm() < 2e-5, name


def test_queries_after_cached_keys_and_one_token_steps_give_sdpas_logits(model):
    """Fewer queries than keys (a shared prefix run first, as prefix sharing does) and decode steps."""
    ids = torch.randint(3, 1000, (2, 30), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 12:15] = 0  # pads between the prefix and a row's own tokens

    def run():
        with torch.no_grad():
            prefix = model(input_ids=ids[:, :10], attention_mask=mask[:, :10], use_cache=True)
            rest = model(input_ids=ids[:, 10:29], attention_mask=mask[:, :29], past_key_values=prefix.past_key_values,
                         use_cache=True)
            step = model(input_ids=ids[:, 29:], attention_mask=mask, past_key_values=rest.past_key_values)
        return rest.logits, step.logits

    expected = run()
    with grouped_attention.grouped_products_attention(model, True):
        got = run()
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_the_switch_keeps_sdpa_where_asked_or_off_the_cpu(model, monkeypatch):
    monkeypatch.setenv("EMPATHY_ATTENTION", "sdpa")
    with grouped_attention.grouped_products_attention(model, True) as used:
        assert used == "sdpa" and model.config._attn_implementation == "sdpa"
    monkeypatch.delenv("EMPATHY_ATTENTION")
    assert grouped_attention.applies(model, True) and not grouped_attention.applies(model, False), \
        "fp32 training keeps SDPA (no faster there)"
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda")))
    assert not grouped_attention.applies(model, True)


def _train_counting(cfg, run_dir, step, path, monkeypatch):
    """Train ``step`` from scratch on attention ``path`` (EMPATHY_ATTENTION); its summary, logged losses,
    LoRA weights and how many attention calls went through the grouped products."""
    from safetensors.torch import load_file

    folder = RunPaths(run_dir).sft_model if step == "sft" else RunPaths(run_dir).dpo_model
    calls = []
    real_forward = grouped_attention.grouped_attention_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(grouped_attention, "grouped_attention_forward", counting)
    monkeypatch.setenv("EMPATHY_ATTENTION", path)
    shutil.rmtree(folder, ignore_errors=True)
    summary = (train_sft if step == "sft" else train_dpo)(cfg, run_dir)
    history = json.loads((folder / "train_log.json").read_text())["history"]
    monkeypatch.undo()
    return summary, [h["loss"] for h in history if "loss" in h], load_file(str(folder / "adapter_model.safetensors")), \
        len(calls)


def _tiny_run(tmp_path, step, bf16):
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=2", "dpo.max_steps=2", "sft.logging_steps=1",
                                             "dpo.logging_steps=1", f"sft.bf16={bf16}", f"dpo.bf16={bf16}"])
    build_datasets(cfg, tmp_path)
    if step == "dpo":
        train_sft(cfg, tmp_path)
    return cfg


@pytest.mark.parametrize("step", ["sft", "dpo"])
def test_mixed_bf16_training_runs_on_grouped_products_to_sdpas_losses(tmp_path, tiny_spec, monkeypatch, step):
    """SFT and DPO in mixed bf16 train through the grouped products, to SDPA's losses within bf16's rounding."""
    cfg = _tiny_run(tmp_path, step, "true")
    old, old_losses, _, old_calls = _train_counting(cfg, tmp_path, step, "sdpa", monkeypatch)
    new, new_losses, new_weights, new_calls = _train_counting(cfg, tmp_path, step, "grouped-products", monkeypatch)
    assert (old["attention_implementation"], old_calls) == ("sdpa", 0)
    assert new["attention_implementation"] == "grouped products" and new_calls > 0
    # (the weights are not compared: Adam's first steps turn bf16's rounding into sign flips of small updates;
    # the fp32 tests above compare gradients)
    assert new_losses == pytest.approx(old_losses, rel=2e-2)
    assert any("lora_B" in n and w.abs().max() > 0 for n, w in new_weights.items()), "training moved no LoRA B"


def test_fp32_training_keeps_sdpa(tmp_path, tiny_spec, monkeypatch):
    cfg = _tiny_run(tmp_path, "sft", "false")
    summary, _, _, calls = _train_counting(cfg, tmp_path, "sft", "grouped-products", monkeypatch)
    assert (summary["attention_implementation"], calls) == ("sdpa", 0)


def test_inference_models_decode_unpadded_rows_on_the_stacked_path_with_sdpas_logits(tiny_spec, monkeypatch):
    """A decoding step without padding has no mask (the prompt pass, many queries, is left as it is); transformers would pass the grouped heads to SDPA with
    ``enable_gqa`` (slow on a CPU). An inference model stacks each key/value head's query heads instead,
    as transformers does when a mask is present; logits equal plain SDPA's."""
    import torch.nn.functional as F

    monkeypatch.delenv("EMPATHY_ATTENTION", raising=False)
    model = load_model(tiny_spec, dtype="float32")
    assert model.config._attn_implementation == grouped_attention.INFERENCE_NAME
    reference = load_model(tiny_spec)  # a training load keeps transformers' SDPA
    assert reference.config._attn_implementation == "sdpa"
    calls = []
    sdpa = F.scaled_dot_product_attention

    def recording(query, key, value, *args, **kwargs):
        calls.append((query.shape[2], bool(kwargs.get("enable_gqa"))))
        return sdpa(query, key, value, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    ids = torch.randint(3, 1000, (3, 12), generator=torch.Generator().manual_seed(4))
    logits = {}
    with torch.inference_mode():
        for name, m in (("stacked", model), ("sdpa", reference)):
            calls.clear()
            out = m(input_ids=ids, use_cache=True)
            step = m(input_ids=ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
            logits[name] = step.logits
            gqa = [used for length, used in calls if used and length == 1]  # one-token steps
            if name == "stacked":
                assert not gqa, "no decode step of the inference model went through enable_gqa"
                assert any(length == model.config.num_attention_heads // model.config.num_key_value_heads
                           for length, _ in calls), "the decode step ran the stacked query heads"
            else:
                assert gqa, "transformers' own path (the old one) used enable_gqa for the unpadded step"
    torch.testing.assert_close(logits["stacked"], logits["sdpa"], rtol=1e-4, atol=1e-4)  # fp32 rounding
    monkeypatch.setenv("EMPATHY_ATTENTION", "sdpa")
    assert load_model(tiny_spec, dtype="float32").config._attn_implementation == "sdpa", "the switch: the old path"
