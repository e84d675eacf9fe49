"""SFT then DPO on a tiny random model: trainable LoRA weights move, base weights do not."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from empathy_utils.artifacts import RunPaths
from empathy_utils.config import load_config, profile_path
from empathy_utils.models import load_model
from empathy_utils.stages import build_datasets
from empathy_utils.training import train_dpo, train_sft


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_spec):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=2", "dpo.max_steps=2"])
    build_datasets(cfg, run_dir)
    sft = train_sft(cfg, run_dir)
    dpo = train_dpo(cfg, run_dir)
    return cfg, RunPaths(run_dir), sft, dpo


def _adapter(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_sft_moves_lora_weights(trained_run):
    _, paths, sft, _ = trained_run
    weights = _adapter(paths.sft_model)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b, "no LoRA B matrices saved"
    # LoRA B starts at zero: any non-zero entry means training changed it.
    assert any(v.abs().sum() > 0 for v in lora_b)
    assert sft["steps"] == 2 and sft["first_loss"] is not None
    log = json.loads((paths.sft_model / "train_log.json").read_text())
    assert log["summary"]["examples"] > 0


def test_dpo_continues_the_sft_adapter_and_moves_it(trained_run):
    _, paths, _, dpo = trained_run
    before, after = _adapter(paths.sft_model), _adapter(paths.dpo_model)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert dpo["steps"] == 2 and dpo["pairs"] > 0


def test_base_weights_are_untouched(trained_run):
    cfg, paths, _, _ = trained_run
    fresh = load_model(cfg.model.name_or_path)
    tuned = load_model(cfg.model.name_or_path, adapter=paths.dpo_model)
    base_of_tuned = tuned.get_base_model().state_dict()
    for name, value in fresh.state_dict().items():
        key = name.replace(".weight", ".base_layer.weight")
        other = base_of_tuned.get(key, base_of_tuned.get(name))
        assert other is not None and torch.equal(value, other), name


def test_tuned_student_differs_from_base_in_its_outputs(trained_run):
    cfg, paths, _, _ = trained_run
    ids = torch.tensor([[5, 6, 7, 8]])
    base = load_model(cfg.model.name_or_path)(ids).logits
    tuned = load_model(cfg.model.name_or_path, adapter=paths.sft_model)(ids).logits
    assert not torch.allclose(base, tuned)
