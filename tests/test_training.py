"""SFT then DPO on a tiny random model: trainable LoRA weights move, base weights do not."""

from __future__ import annotations

import json
import math

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
    assert sft["steps"] == 2
    assert sft["first_loss"] is not None
    log = json.loads((paths.sft_model / "train_log.json").read_text())
    assert log["summary"]["examples"] > 0


def test_training_logs_count_the_tokens_trained_on(trained_run):
    """Throughput is measured in every run: non-padding tokens, their rate, and the peak memory."""
    cfg, _, sft, dpo = trained_run
    for summary, section, rows_per_example in ((sft, cfg.sft, 1), (dpo, cfg.dpo, 2)):
        most = summary["steps"] * section.batch_size * rows_per_example * section.max_length
        assert 0 < summary["tokens"] <= most
        # seconds is rounded to 0.1 in the log; the rate is computed before rounding
        seconds = summary["seconds"]
        assert summary["tokens"] / (seconds + 0.05) <= summary["tokens_per_second"] <= summary["tokens"] / max(seconds - 0.05, 1e-3)
        assert summary["peak_rss_gb"] > 0


def test_dpo_continues_the_sft_adapter_and_moves_it(trained_run):
    _, paths, _, dpo = trained_run
    before, after = _adapter(paths.sft_model), _adapter(paths.dpo_model)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert dpo["steps"] == 2
    assert dpo["pairs"] > 0


def test_base_weights_are_untouched(trained_run):
    cfg, paths, _, _ = trained_run
    fresh = load_model(cfg.model.name_or_path)
    tuned = load_model(cfg.model.name_or_path, adapter=paths.dpo_model)
    base_of_tuned = tuned.get_base_model().state_dict()
    for name, value in fresh.state_dict().items():
        key = name.replace(".weight", ".base_layer.weight")
        other = base_of_tuned.get(key, base_of_tuned.get(name))
        assert other is not None, name
        assert torch.equal(value, other), name


def test_tuned_student_differs_from_base_in_its_outputs(trained_run):
    cfg, paths, _, _ = trained_run
    ids = torch.tensor([[5, 6, 7, 8]])
    base = load_model(cfg.model.name_or_path)(ids).logits
    tuned = load_model(cfg.model.name_or_path, adapter=paths.sft_model)(ids).logits
    assert not torch.allclose(base, tuned)


def test_sft_then_dpo_run_data_parallel_under_accelerate_launch(tmp_path, tiny_spec):
    """The GPU users' path, on two CPU processes: ``accelerate launch --multi_gpu`` starts torchrun, the
    trainers shard the data over both processes (gloo), and one process writes the adapters."""
    import math
    import os
    import subprocess
    import sys

    import yaml

    cfg = load_config(profile_path("tiny"), ["sft.max_steps=-1", "sft.epochs=1", "dpo.max_steps=1"])
    build_datasets(cfg, tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    summaries = {}
    for step in ("sft", "dpo"):
        done = subprocess.run(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
             "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
             "-m", "empathy_utils.training", step, "--params", str(params), "--run-dir", str(tmp_path)],
            capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert len(printed) == 1, done.stdout  # the first process reports, once
        summaries[step] = json.loads(printed[0])
    paths = RunPaths(tmp_path)
    sft = summaries["sft"]
    assert sft["processes"] == 2
    # one epoch, each process taking its own share of every batch: half the steps of one process
    assert sft["steps"] == math.ceil(sft["examples"] / (cfg.sft.batch_size * 2))
    assert any(v.abs().sum() > 0 for k, v in _adapter(paths.sft_model).items() if "lora_B" in k)
    before, after = _adapter(paths.sft_model), _adapter(paths.dpo_model)
    assert summaries["dpo"]["processes"] == 2
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the runner's sft / dpo stages then pick these adapters up instead of training again
    stamp = (paths.dpo_model / "adapter_model.safetensors").stat().st_mtime_ns
    assert train_sft(cfg, tmp_path)["reused"]
    assert train_dpo(cfg, tmp_path)["reused"]
    assert (paths.dpo_model / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_an_adapter_is_retrained_only_when_its_settings_data_or_start_change(tmp_path, tiny_spec):
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=1", "dpo.max_steps=1"])
    build_datasets(cfg, tmp_path)
    paths = RunPaths(tmp_path)
    assert not train_sft(cfg, tmp_path)["reused"]
    assert not train_dpo(cfg, tmp_path)["reused"]
    sft_stamp = (paths.sft_model / "adapter_model.safetensors").stat().st_mtime_ns
    dpo_stamp = (paths.dpo_model / "adapter_model.safetensors").stat().st_mtime_ns
    again = train_sft(cfg, tmp_path)
    assert again["reused"]
    assert again["steps"] == 1  # the saved summary, not a new run
    assert train_dpo(cfg, tmp_path)["reused"]
    assert (paths.dpo_model / "adapter_model.safetensors").stat().st_mtime_ns == dpo_stamp
    cfg.dpo.beta = 0.5  # a DPO setting: DPO again, SFT untouched
    assert not train_dpo(cfg, tmp_path)["reused"]
    assert (paths.sft_model / "adapter_model.safetensors").stat().st_mtime_ns == sft_stamp
    cfg.sft.learning_rate = 5e-4  # an SFT setting: SFT again, and so DPO, whose starting adapter changed
    assert not train_sft(cfg, tmp_path)["reused"]
    assert not train_dpo(cfg, tmp_path)["reused"]


def test_any_field_of_trls_config_passes_through_to_the_trainer(tmp_path):
    """sft.trainer / dpo.trainer / pride.trainer hand any other TRL field to the trainer's config."""
    from transformers import TrainingArguments
    from trl import DPOConfig, SFTConfig

    from empathy_utils.config import StudyConfig
    from empathy_utils.training import trainer_arguments

    cfg = StudyConfig.from_dict({"sft": {"trainer": {"weight_decay": 0.05, "max_grad_norm": 0.5}},
                                 "dpo": {"trainer": {"adam_beta2": 0.98}},
                                 "pride": {"trainer": {"optim": "adafactor"}, "gradient_checkpointing": True}})
    sft = SFTConfig(**trainer_arguments(cfg.sft, tmp_path, 0))
    assert sft.weight_decay == 0.05
    assert sft.max_grad_norm == 0.5
    assert DPOConfig(**trainer_arguments(cfg.dpo, tmp_path, 0)).adam_beta2 == 0.98
    pride = TrainingArguments(**trainer_arguments(cfg.pride, tmp_path, 0))
    assert pride.optim == "adafactor"
    assert pride.activation_checkpointing is True, "PRIDE's students can now use gradient checkpointing"


def test_a_trainer_field_that_trl_lacks_or_the_study_sets_is_refused_before_anything_runs():
    from empathy_utils.config import StudyConfig
    from empathy_utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sft\.trainer\.weight_decy: not a field of trl\.SFTConfig; did you mean weight_decay"):
        StudyConfig.from_dict({"sft": {"trainer": {"weight_decy": 0.1}}})
    with pytest.raises(ConfigError, match=r"dpo\.trainer\.learning_rate: set by the study itself; use dpo\.learning_rate"):
        StudyConfig.from_dict({"dpo": {"trainer": {"learning_rate": 1e-3}}})


def test_an_unset_trainer_section_leaves_the_adapter_fingerprint_as_it_was(tmp_path):
    """Adapters trained before the pass-through existed are still reused; setting a field retrains."""
    from empathy_utils.artifacts import digest, files_digest
    from empathy_utils.config import StudyConfig
    from empathy_utils.training import _fingerprint

    cfg = StudyConfig.from_dict({})
    settings = cfg.to_dict()
    # the section as it was (bf16 then false: what auto resolves to without bf16 units, as in the suite)
    before = {k: v for k, v in settings["sft"].items() if k != "trainer"} | {"bf16": False}
    expected = digest({"step": "sft", "model": cfg.model.name_or_path, "lora": settings["lora"], "seed": cfg.run.seed,
                       "settings": before, "data": files_digest(tmp_path, "data-*.arrow"), "start": None})
    assert _fingerprint(cfg, "sft", tmp_path) == expected
    changed = StudyConfig.from_dict({"sft": {"trainer": {"weight_decay": 0.1}}})
    assert _fingerprint(changed, "sft", tmp_path) != expected


def _train_counting_head_rows(cfg, run_dir, step, switch_on, monkeypatch):
    """Train ``step`` from scratch with TRL's labelled-positions switch on or off; return the summary,
    the per-step losses and how many rows the LM head scored (every call TRL makes to it)."""
    import contextlib
    import shutil

    from empathy_utils import lm_head, training

    rows = []
    real_apply = lm_head._DispatchingLogProb.apply

    def counting_apply(self, hidden, *rest):
        rows.append(hidden.shape[0])
        return real_apply(self, hidden, *rest)

    monkeypatch.setattr(lm_head._DispatchingLogProb, "apply", counting_apply)
    if not switch_on:
        monkeypatch.setattr(training, "labelled_positions_only", contextlib.nullcontext)
    folder = RunPaths(run_dir).sft_model if step == "sft" else RunPaths(run_dir).dpo_model
    shutil.rmtree(folder, ignore_errors=True)
    summary = (train_sft if step == "sft" else train_dpo)(cfg, run_dir)
    history = json.loads((folder / "train_log.json").read_text())["history"]
    monkeypatch.undo()
    return summary, [h["loss"] for h in history if "loss" in h], sum(rows), _adapter(folder)


@pytest.mark.parametrize("step", ["sft", "dpo"])
def test_the_lm_head_scores_only_labelled_positions_and_trains_the_same(tmp_path, tiny_spec, monkeypatch, step):
    """On a CPU TRL scores every position (prompt and padding too) unless told otherwise; with the switch
    it scores fewer rows and the losses and trained weights are the same."""
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=2", "dpo.max_steps=2", "sft.logging_steps=1",
                                             "dpo.logging_steps=1"])
    build_datasets(cfg, tmp_path)
    if step == "dpo":
        train_sft(cfg, tmp_path)
    full, full_losses, full_rows, full_weights = _train_counting_head_rows(cfg, tmp_path, step, False, monkeypatch)
    compact, compact_losses, compact_rows, compact_weights = _train_counting_head_rows(cfg, tmp_path, step, True, monkeypatch)
    assert full_rows > 0
    assert compact_rows < full_rows
    assert compact["tokens"] == full["tokens"]
    assert compact_losses == pytest.approx(full_losses, rel=1e-5)
    for name, weight in full_weights.items():
        torch.testing.assert_close(compact_weights[name], weight, rtol=1e-4, atol=1e-6)


def test_the_labelled_positions_switch_is_scoped_and_refuses_a_trl_without_it(monkeypatch):
    import torch as _torch
    import trl.trainer.utils as trl_utils

    from empathy_utils.errors import StudyError
    from empathy_utils.training import labelled_positions_only

    original = trl_utils._use_triton
    with labelled_positions_only():
        assert trl_utils._use_triton(_torch.device("cpu")) is True
    assert trl_utils._use_triton is original
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(StudyError, match="_use_triton"):
        with labelled_positions_only():
            pass


def _train_dpo_counting_forwards(cfg, run_dir, monkeypatch):
    """Train DPO from scratch; return its summary, per-step losses, adapter and the model's forward calls."""
    import shutil

    from empathy_utils import models

    calls = []
    real_load = models.load_model

    def counting_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        model.get_base_model().register_forward_pre_hook(lambda module, inputs: calls.append(1))
        return model

    monkeypatch.setattr(models, "load_model", counting_load)
    shutil.rmtree(RunPaths(run_dir).dpo_model, ignore_errors=True)
    summary = train_dpo(cfg, run_dir)
    history = json.loads((RunPaths(run_dir).dpo_model / "train_log.json").read_text())["history"]
    monkeypatch.undo()
    return summary, [h["loss"] for h in history if "loss" in h], _adapter(RunPaths(run_dir).dpo_model), len(calls)


def test_dpo_scores_the_reference_once_and_trains_the_same(tmp_path, tiny_spec, monkeypatch):
    """dpo.precompute_reference: over several epochs, one reference pass over the pairs before training
    instead of one inside every step; the losses and the trained adapter are those of TRL's default."""
    import math

    cfg = load_config(profile_path("tiny"), ["sft.max_steps=1", "dpo.max_steps=-1", "dpo.epochs=3",
                                             "dpo.logging_steps=1"])
    build_datasets(cfg, tmp_path)
    train_sft(cfg, tmp_path)
    cfg.dpo.precompute_reference = "never"
    inline, inline_losses, inline_weights, inline_forwards = _train_dpo_counting_forwards(cfg, tmp_path, monkeypatch)
    cfg.dpo.precompute_reference = "auto"  # three epochs: more than one pass over the pairs
    once, once_losses, once_weights, once_forwards = _train_dpo_counting_forwards(cfg, tmp_path, monkeypatch)
    batches = math.ceil(once["pairs"] / cfg.dpo.batch_size)
    assert inline["steps"] == once["steps"] == 3 * batches
    assert inline_forwards == 2 * inline["steps"], "TRL's default: a policy and a reference pass every step"
    assert once_forwards == once["steps"] + batches, "the reference scored once per pair, not once per epoch"
    assert once["fingerprint"] != inline["fingerprint"], "the setting is part of the adapter's fingerprint"
    assert once_losses == pytest.approx(inline_losses, rel=1e-4)
    for name, weight in inline_weights.items():
        torch.testing.assert_close(once_weights[name], weight, rtol=1e-4, atol=1e-6)


def test_the_reference_is_precomputed_only_when_training_passes_over_the_pairs_again():
    from empathy_utils.config import StudyConfig
    from empathy_utils.training import precompute_reference

    def dpo(**settings):
        return StudyConfig.from_dict({"dpo": settings}).dpo

    assert not precompute_reference(dpo(epochs=1), 23), "one pass: the same work either way"
    assert precompute_reference(dpo(epochs=3), 23)
    assert not precompute_reference(dpo(epochs=3, max_steps=11, batch_size=2), 23, processes=1)
    assert precompute_reference(dpo(epochs=1, max_steps=12, batch_size=2), 23, processes=1)
    assert not precompute_reference(dpo(epochs=1, max_steps=5, batch_size=2), 23, processes=2)
    assert precompute_reference(dpo(epochs=1, max_steps=6, batch_size=2), 23, processes=2)
    assert precompute_reference(dpo(epochs=1, precompute_reference="always"), 23)
    assert not precompute_reference(dpo(epochs=3, precompute_reference="never"), 23)


def test_dpo_adapters_trained_before_the_setting_existed_are_still_reused(tmp_path):
    from empathy_utils.artifacts import digest, files_digest
    from empathy_utils.config import StudyConfig
    from empathy_utils.training import _fingerprint

    cfg = StudyConfig.from_dict({})
    settings = cfg.to_dict()
    before = {k: v for k, v in settings["dpo"].items() if k not in ("trainer", "precompute_reference")} | {"bf16": False}
    expected = digest({"step": "dpo", "model": cfg.model.name_or_path, "lora": settings["lora"], "seed": cfg.run.seed,
                       "settings": before, "data": files_digest(tmp_path, "data-*.arrow"), "start": None})
    assert _fingerprint(cfg, "dpo", tmp_path) == expected
    assert _fingerprint(StudyConfig.from_dict({"dpo": {"precompute_reference": "always"}}), "dpo", tmp_path) != expected


def test_sft_and_dpo_train_in_mixed_bf16_when_asked_and_log_it(tmp_path, tiny_spec, trained_run):
    """bf16 on a CPU (what ``auto`` picks where it has bf16 units; emulated, and slower, where not):
    the LoRA weights move and stay fp32, and train_log.json says bf16."""
    _, fp32_paths, fp32_sft, _ = trained_run
    assert fp32_sft["mixed_precision"] == "no", "the suite keeps auto at fp32 (EMPATHY_CPU_BF16=0)"
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=2", "dpo.max_steps=2", "sft.bf16=true", "dpo.bf16=true"])
    build_datasets(cfg, tmp_path)
    sft, dpo = train_sft(cfg, tmp_path), train_dpo(cfg, tmp_path)
    paths = RunPaths(tmp_path)
    assert sft["mixed_precision"] == dpo["mixed_precision"] == "bf16"
    for folder, summary in ((paths.sft_model, sft), (paths.dpo_model, dpo)):
        weights = _adapter(folder)
        assert all(v.dtype == torch.float32 for v in weights.values()), "the adapter is kept in fp32"
        assert summary["last_loss"] is not None and math.isfinite(summary["last_loss"])
    lora_b = [v for k, v in _adapter(paths.sft_model).items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)
    moved = [k for k, v in _adapter(paths.dpo_model).items() if not torch.equal(v, _adapter(paths.sft_model)[k])]
    assert moved, "DPO moved the SFT adapter"
    assert json.loads((paths.sft_model / "train_log.json").read_text())["summary"]["mixed_precision"] == "bf16"
