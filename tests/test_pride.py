"""PRIDE on the tiny model: token alignment, the PI bypass, what a training step moves, save/reload,
the teacher's reasoning chain, the baselines, and the parameters' rules (book chapter "PRIDE")."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from empathy_utils.config import StudyConfig, load_config, profile_path
from empathy_utils.errors import ConfigError
from empathy_utils.models import load_model
from empathy_utils.packed_linear import PackedLinear
from empathy_utils.pride.data import (
    PrideCollator,
    TeacherLog,
    TeacherOutput,
    build_features,
    load_examples,
    pi_block,
    split_single_turn,
    student_messages,
    teacher_replies,
)
from empathy_utils.pride.module import MODULE_FILE, build_student, hidden_and_heads, load_student, save_student
from empathy_utils.pride.train import (
    make_pride_trainer,
    make_sdft_trainer,
    train_blackbox_sft,
    train_sdft,
    variant_settings,
)

from conftest import ScriptedBackend


def _cfg(*overrides: str) -> StudyConfig:
    return load_config(profile_path("tiny"), ["pride.max_steps=2", "pride.batch_size=2", "pride.pi_dropout=0.0",
                                              *overrides])


def _teacher(example: dict, k: int) -> TeacherOutput:
    """A made-up teacher turn (no model needed): private notes in the chat, then a reply."""
    messages = [{"role": "user", "content": f"What you know privately:\n{pi_block(example)}\n\n{example['dialogue']}"},
                {"role": "assistant", "content": "They feel it strongly."},
                {"role": "user", "content": "Now reply to them."}]
    return TeacherOutput(f"That sounds like a lot to carry, and I am glad you told me ({k}).", [], ["notes"], messages)


@pytest.fixture(scope="module")
def tiny_data(tiny_spec):
    from empathy_utils.models import load_tokenizer

    cfg = _cfg()
    train, test, info = load_examples(cfg)
    tokenizer = load_tokenizer(cfg.model.name_or_path, padding_side="right")
    teachers = [_teacher(e, k) for k, e in enumerate(train)]
    features = [build_features(tokenizer, e, t.reply, t, 512, 64) for e, t in zip(train, teachers)]
    return cfg, train, test, info, tokenizer, teachers, features


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A PRIDE student trained for two steps, with every parameter recorded before training."""
    cfg, _, _, _, _, _, features = tiny_data
    out = tmp_path_factory.mktemp("pride") / "pride"
    trainer, tokenizer = make_pride_trainer(cfg, "pride", features, out)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    save_student(trainer.model, out, tokenizer)
    return cfg, trainer, before, out


# ------------------------------------------------------------------------------------ data
def test_examples_carry_pi_that_the_student_prompt_does_not_show(tiny_data):
    cfg, train, test, info, _, _, _ = tiny_data
    assert info["pi_fields"] == ["situation", "emotion"]
    assert len(train) == 8
    assert len(test) == 4
    for e in train:
        shown = student_messages(e)[-1]["content"]
        assert e["pi"]["situation"] not in shown
        assert f"Emotion: {e['emotion']}" not in shown
        assert e["dialogue"] in shown
        assert e["pi"]["situation"] in pi_block(e)


def test_collator_lines_up_the_same_reply_tokens_in_student_and_teacher(tiny_data):
    _, train, _, _, tokenizer, teachers, features = tiny_data
    batch = PrideCollator(tokenizer.pad_token_id, 0.0, True, seed=0)(features[:3])
    rows = batch["rows"]
    student_next = batch["input_ids"][rows, batch["student_positions"] + 1]
    teacher_next = batch["teacher_input_ids"][rows, batch["teacher_positions"] + 1]
    assert torch.equal(batch["targets"], student_next)
    assert torch.equal(student_next, teacher_next)
    for i in range(3):
        reply = tokenizer(teachers[i].reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert batch["targets"][rows == i].tolist() == reply
    # the teacher's context holds the PI, the student's does not
    situation = train[0]["pi"]["situation"]
    assert situation in tokenizer.decode(batch["teacher_input_ids"][0])
    assert situation not in tokenizer.decode(batch["input_ids"][0])
    assert batch["pi_input_ids"].shape[:2] == (3, 4)
    assert batch["pi_present"].all()


def test_pi_dropout_and_the_no_pi_variant(tiny_data):
    _, _, _, _, tokenizer, _, features = tiny_data
    never = PrideCollator(tokenizer.pad_token_id, 0.999999, True, seed=0)(features)
    assert not never["pi_present"].any()
    half = [PrideCollator(tokenizer.pad_token_id, 0.5, True, seed=s)(features)["pi_present"].float().mean() for s in range(20)]
    assert 0.3 < float(sum(half) / len(half)) < 0.7
    without = PrideCollator(tokenizer.pad_token_id, 0.5, False, seed=0)(features)
    assert "pi_input_ids" not in without
    assert "pi_present" not in without


# ---------------------------------------------------------------------------------- module
@pytest.mark.parametrize("encoder, pooling", [("frozen-student", "mean"), ("embeddings", "tokens")])
def test_without_pi_the_module_changes_nothing_bit_for_bit(tiny_data, encoder, pooling):
    from peft import get_peft_model

    from empathy_utils.training import lora_config

    cfg, _, _, _, tokenizer, _, features = tiny_data
    cfg = _cfg(f"pride.pi_encoder={encoder}", f"pride.pi_pooling={pooling}", "pride.fusion_layer=0")
    torch.manual_seed(0)
    lm = get_peft_model(load_model(cfg.model.name_or_path), lora_config(cfg))
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a LoRA that matters
    student = build_student(lm, cfg.pride, 4, use_module=True, teacher_width=None)
    assert student.fusion_layer == 0
    assert student.pi_encoder == encoder
    assert student.pi_pooling == pooling
    with torch.no_grad():
        student.fusion.gate.fill_(1.0)  # an open gate: the module *would* change the states
    batch = PrideCollator(tokenizer.pad_token_id, 0.0, True, seed=0)(features[:2])
    args = (batch["input_ids"], batch["attention_mask"], batch["rows"], batch["student_positions"])
    with torch.no_grad():
        plain_logits, plain_features = hidden_and_heads(lm, *args, -1)
        no_pi = student(*args, pi_input_ids=batch["pi_input_ids"], pi_attention_mask=batch["pi_attention_mask"],
                        pi_present=torch.zeros(2, dtype=torch.bool))
        none = student(*args)
        with_pi = student(*args, pi_input_ids=batch["pi_input_ids"], pi_attention_mask=batch["pi_attention_mask"],
                          pi_present=batch["pi_present"])
        full = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    for out in (no_pi, none):
        assert torch.equal(out[0], plain_logits)
        assert torch.equal(out[1], plain_features)
    assert torch.allclose(full[batch["rows"], batch["student_positions"]], plain_logits, atol=1e-5)
    assert (with_pi[0] - plain_logits).abs().max() > 1e-3
    # a row without PI in a mixed batch is untouched too
    mixed = torch.tensor([True, False])
    with torch.no_grad():
        out = student(*args, pi_input_ids=batch["pi_input_ids"], pi_attention_mask=batch["pi_attention_mask"],
                      pi_present=mixed)
    second = batch["rows"] == 1
    assert torch.equal(out[0][second], plain_logits[second])
    assert not torch.equal(out[0][~second], plain_logits[~second])


def test_a_training_step_moves_lora_and_module_weights_and_no_base_weight(trained):
    cfg, trainer, before, _ = trained
    student = trainer.model
    after = dict(student.named_parameters())
    lora = [n for n in after if "lora_" in n]
    module = [n for n in after if n.startswith("fusion.")]
    base = [n for n in after if n not in lora and n not in module]
    assert lora
    assert module
    assert base
    assert all(not torch.equal(before[n], after[n]) for n in lora), "every LoRA matrix should move in two steps"
    assert all(not torch.equal(before[n], after[n]) for n in module), "every module tensor should move"
    assert all(torch.equal(before[n], after[n]) for n in base), "a base weight moved"
    fresh = load_model(cfg.model.name_or_path).state_dict()
    tuned = student.lm.get_base_model().state_dict()
    packed = {f"{name}.weight": m.dense_weight() for name, m in student.lm.get_base_model().named_modules()
              if isinstance(m, PackedLinear)}  # fp32 on a CPU: the frozen base layers run on packed copies
    assert packed, "the frozen base layers are packed (fp32 on a CPU)"
    tuned.update(packed)
    for name, value in fresh.items():
        other = tuned.get(name.replace(".weight", ".base_layer.weight"), tuned.get(name))
        assert other is not None, name
        assert torch.equal(value, other), name
    assert trainer.state.global_step == 2
    assert {"ce", "rkl", "mmd", "gate"} <= set(trainer.totals)
    assert trainer.totals["rkl"][0] > 0, "the student and the teacher (who sees the PI) predict alike"
    # The teacher reads the dialogue with the PI and its reasoning, the student without: their reply
    # features differ, so the MMD² between them is positive (0 would mean the term compares a sample
    # with itself, or is not computed).
    assert trainer.totals["mmd"][0] > 1e-6, trainer.totals["mmd"]


def test_pride_trains_in_mixed_bf16_when_asked_and_logs_it(tiny_data, tmp_path):
    """bf16 (what ``auto`` picks where the CPU or GPU has bf16 units; emulated and slower where not): the
    forward and backward passes run under autocast, the LoRA and module weights move and stay fp32, every
    loss term is a finite fp32 number, and train_log.json says bf16."""
    from empathy_utils.pride.train import train_pride_variant

    _, _, _, _, _, _, features = tiny_data
    cfg = _cfg("pride.max_steps=1", "pride.bf16=true")
    out = tmp_path / "pride"
    summary = train_pride_variant(cfg, "pride", features, out)
    assert summary["mixed_precision"] == "bf16"
    assert summary["packed_layers"] == 0, "under autocast the base layers stay plain (packing is fp32's)"
    assert all(math.isfinite(summary[k]) and summary[k] > 0 for k in ("mean_ce", "mean_rkl", "mean_mmd")), summary
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values()), "the adapter is kept in fp32"
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k), "LoRA did not move"
    fp32 = train_pride_variant(_cfg("pride.max_steps=1"), "pride", features, tmp_path / "fp32")
    assert fp32["mixed_precision"] == "no", "the suite keeps auto at fp32 (EMPATHY_CPU_BF16=0)"
    # the same step in both precisions: close, not equal (bf16 rounds the forward pass)
    assert summary["mean_ce"] == pytest.approx(fp32["mean_ce"], rel=0.05)
    assert summary["mean_ce"] != fp32["mean_ce"]
    from empathy_utils.pride.presenting import pride_training_table

    old_log = {k: v for k, v in fp32.items() if k != "mixed_precision"}  # trained before pride.bf16 existed: fp32
    table = pride_training_table([summary | {"variant": "pride"}, fp32 | {"variant": "sdft"}, old_log | {"variant": "pride-no-pi"}])
    assert table["precision"].tolist() == ["bf16 (mixed)", "fp32", "fp32"]


def test_pride_on_packed_base_layers_learns_what_it_learns_on_plain_ones(tiny_data, tmp_path, monkeypatch):
    """In fp32 on a CPU the student's frozen base layers (shared with the teacher's pass) run on weights
    packed for oneDNN: the same losses and the same trained LoRA and module weights, to fp32 rounding."""
    from empathy_utils.pride.train import train_pride_variant

    features = tiny_data[-1]
    cfg = _cfg("pride.max_steps=2")
    monkeypatch.setenv("EMPATHY_PACKED_LINEAR", "0")
    plain = train_pride_variant(cfg, "pride", features, tmp_path / "plain")
    monkeypatch.delenv("EMPATHY_PACKED_LINEAR")
    packed = train_pride_variant(cfg, "pride", features, tmp_path / "packed")
    assert plain["packed_layers"] == 0 and packed["packed_layers"] > 0
    for term in ("mean_ce", "mean_rkl", "mean_mmd", "last_loss"):
        assert packed[term] == pytest.approx(plain[term], rel=1e-4), term
    for name in ("adapter_model.safetensors",):
        old, new = load_file(str(tmp_path / "plain" / name)), load_file(str(tmp_path / "packed" / name))
        assert any(v.abs().sum() > 0 for k, v in old.items() if "lora_B" in k)
        for key, value in old.items():
            torch.testing.assert_close(new[key], value, rtol=1e-3, atol=1e-6)


def test_a_students_fingerprint_follows_bf16_as_it_resolves(tmp_path, monkeypatch):
    from empathy_utils import models
    from empathy_utils.pride.stage import training_fingerprint

    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    auto, fp32, bf16 = (StudyConfig.from_dict({"pride": {"bf16": v}}) for v in ("auto", False, True))
    for variant in ("pride", "blackbox-sft", "sdft"):
        # no bf16 units: auto is fp32, and the fingerprint is the one students trained before auto existed
        assert training_fingerprint(auto, variant, data) == training_fingerprint(fp32, variant, data)
        assert training_fingerprint(auto, variant, data) != training_fingerprint(bf16, variant, data)
    monkeypatch.setattr(models, "bf16_units_here", lambda: True)
    assert training_fingerprint(auto, "pride", data) == training_fingerprint(bf16, "pride", data)


def test_the_trained_student_without_pi_is_exactly_its_lora_adapter(trained, tiny_data):
    from peft import PeftModel

    cfg, trainer, _, folder = trained
    _, _, _, _, tokenizer, _, features = tiny_data
    assert (folder / "adapter_model.safetensors").exists()
    assert (folder / MODULE_FILE).exists()
    reloaded = load_student(cfg.model.name_or_path, folder)
    adapter_only = PeftModel.from_pretrained(load_model(cfg.model.name_or_path), str(folder))
    saved = load_file(str(folder / MODULE_FILE))
    for k, v in trainer.model.fusion.state_dict().items():
        assert torch.equal(saved[f"fusion.{k}"], v)
        assert torch.equal(reloaded.fusion.state_dict()[k], v)
    batch = PrideCollator(tokenizer.pad_token_id, 0.0, True, seed=0)(features[:3])
    args = (batch["input_ids"], batch["attention_mask"], batch["rows"], batch["student_positions"])
    with torch.no_grad():
        student_logits, _ = reloaded(*args)
        lora_logits, _ = hidden_and_heads(adapter_only, *args, -1)
        full = adapter_only(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with_pi, _ = reloaded(*args, pi_input_ids=batch["pi_input_ids"], pi_attention_mask=batch["pi_attention_mask"],
                              pi_present=batch["pi_present"])
    assert torch.equal(student_logits, lora_logits)
    assert torch.allclose(full[batch["rows"], batch["student_positions"]], student_logits, atol=1e-5)
    assert reloaded.fusion.gate_strength() > 0
    assert not torch.equal(with_pi, student_logits)


def test_mmd_projection_appears_only_when_the_widths_differ(tiny_data):
    from peft import get_peft_model

    from empathy_utils.training import lora_config

    cfg = tiny_data[0]
    lm = get_peft_model(load_model(cfg.model.name_or_path), lora_config(cfg))
    width = lm.config.hidden_size
    assert build_student(lm, cfg.pride, 4, True, teacher_width=width).projection is None
    wide = build_student(lm, cfg.pride, 4, True, teacher_width=3 * width).projection
    assert tuple(wide.weight.shape) == (3 * width, width)
    forced = _cfg("pride.mmd_projection=linear").pride
    assert build_student(lm, forced, 4, True, teacher_width=width).projection is not None
    with pytest.raises(ValueError, match="widths? .*differ"):
        build_student(lm, _cfg("pride.mmd_projection=none").pride, 4, True, teacher_width=2 * width)
    assert build_student(lm, _cfg("pride.lambda_mmd=0").pride, 4, True, teacher_width=2 * width).projection is None


def test_ablations_change_exactly_their_part():
    cfg = _cfg()
    p, module = variant_settings("pride", cfg.pride)
    assert module
    assert p.lambda_rkl > 0
    assert p.lambda_mmd > 0
    assert variant_settings("pride-no-rkl", cfg.pride)[0].lambda_rkl == 0
    assert variant_settings("pride-no-rkl", cfg.pride)[1]
    assert variant_settings("pride-no-mmd", cfg.pride)[0].lambda_mmd == 0
    no_pi, module = variant_settings("pride-no-pi", cfg.pride)
    assert not module
    assert no_pi == cfg.pride


def test_the_no_pi_student_has_no_module_and_learns_without_pi(tiny_data, tmp_path):
    cfg, _, _, _, _, _, features = tiny_data
    trainer, _ = make_pride_trainer(cfg, "pride-no-pi", features, tmp_path)
    assert trainer.model.fusion is None
    trainer.train()
    assert "gate" not in trainer.totals
    assert "pi_share" not in trainer.totals
    assert trainer.totals["rkl"]


# --------------------------------------------------------------------------------- teacher
def test_the_teacher_reasons_one_step_per_turn_then_replies(tiny_data):
    cfg, train, _, _, _, _, _ = tiny_data
    def answer(conv):
        return {1: "Feeling sad, strongly.", 2: "Their dog is old.", 3: "That must be so hard; I'm here for you."}[
            sum(m["role"] == "user" for m in conv)]

    backend = ScriptedBackend(answer)
    log = TeacherLog()
    out = teacher_replies(backend, train[:3], cfg.pride, seed=0, log=log)
    assert backend.calls == 9
    assert log.calls == 9
    assert log.unusable == 0
    for e, o in zip(train[:3], out):
        assert o.reasoning == ["Feeling sad, strongly.", "Their dog is old."]
        assert o.reply == "That must be so hard; I'm here for you."
        assert o.usable
        assert [m["role"] for m in o.messages] == ["user", "assistant", "user", "assistant", "user"]
        assert e["pi"]["situation"] in o.messages[0]["content"]
        assert "Step 3" in o.messages[-1]["content"]


def test_unusable_teacher_replies_are_retried_then_flagged(tiny_data):
    cfg, train, _, _, _, _, _ = tiny_data
    backend = ScriptedBackend(lambda conv: "" if sum(m["role"] == "user" for m in conv) == 3 else "A note.")
    log = TeacherLog()
    out = teacher_replies(backend, train[:2], cfg.pride, seed=0, log=log)
    assert log.retried == 2
    assert log.unusable == 2
    assert not any(o.usable for o in out)


def test_the_single_turn_prompt_is_parsed_at_its_response_line():
    assert split_single_turn("Feelings: sad\nSituation: lost a dog\nResponse: I'm so sorry.") == (
        "Feelings: sad\nSituation: lost a dog\nResponse: ", "I'm so sorry.")
    assert split_single_turn("**Response:** Hi") is not None
    assert split_single_turn("Just some text") is None
    cfg = _cfg("pride.teacher_prompt=empathy-reasoning")
    example = {"pi": {"situation": "S", "emotion": "sad"}, "judge_utterance": "U", "dialogue": "Speaker: U"}
    good = ScriptedBackend(lambda conv: "Feelings: sad.\nSituation: hard.\nResponse: That sounds really painful.")
    (o,) = teacher_replies(good, [example], cfg.pride, 0, TeacherLog())
    assert o.reply == "That sounds really painful."
    assert o.usable
    assert o.assistant_prefix.endswith("Response: ")
    bad = ScriptedBackend(lambda conv: "I am not sure what to say here.")
    log = TeacherLog()
    (o,) = teacher_replies(bad, [example], cfg.pride, 0, log)
    assert not o.usable
    assert log.unparsed == 1


# -------------------------------------------------------------------------------- baselines
def test_the_baselines_train_lora_adapters_with_trl(tiny_data, tmp_path):
    cfg, train, _, _, tokenizer, teachers, _ = tiny_data
    cfg.pride.max_steps = 1
    cfg.pride.sdft_distillation_topk = 10 * len(tokenizer)  # more than the vocabulary: must be lowered
    black = train_blackbox_sft(cfg, train, [t.reply for t in teachers], tmp_path / "bb")
    sdft = train_sdft(cfg, train, [pi_block(e) for e in train], tmp_path / "sdft")
    for summary, folder in ((black, tmp_path / "bb"), (sdft, tmp_path / "sdft")):
        assert summary["steps"] == 1
        weights = load_file(str(folder / "adapter_model.safetensors"))
        assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    assert sdft["distillation_topk"] == len(tokenizer), "top-k is lowered to the vocabulary's size"
    assert black["packed_layers"] > 0 and sdft["packed_layers"] > 0, "fp32 on a CPU: frozen base layers packed"
    # the black-box baseline is TRL's SFT: its batches run the student prompt's shared definitions once
    assert black["prefix_sharing"]["shared_batches"] == black["prefix_sharing"]["batches"] > 0
    assert black["prefix_sharing"]["tokens_run"] < black["prefix_sharing"]["tokens_in_batches"]
    # SDFT's batches hold each prompt num_generations times: the copies run it once, student and teacher
    assert sdft["rollouts"] == "study"
    assert sdft["prefix_sharing"]["shared_batches"] == sdft["prefix_sharing"]["batches"] == 2
    assert sdft["prefix_sharing"]["tokens_run"] < sdft["prefix_sharing"]["tokens_in_batches"]


def test_sdfts_rollouts_run_each_prompt_once_and_sample_what_generate_samples(tiny_data, tmp_path):
    """With top-k 1 the draws are the argmax: the study's loop and TRL's generate must give the same replies."""
    from trl.experimental.sdft import SDFTTrainer

    from empathy_utils.prefix_sharing import decoder_of

    cfg, train, _, _, _, _, _ = tiny_data
    cfg = _cfg("pride.sdft_max_completion_length=12")
    trainer, _ = make_sdft_trainer(cfg, train, [pi_block(e) for e in train], tmp_path)
    trainer.generation_config.top_k = 1  # both paths sample with this config
    for name, weight in trainer.model.named_parameters():
        if "lora_B" in name:  # an adapter with an effect, as after some training
            weight.data.normal_(0, 0.05)
    prompts = trainer._tokenize_prompts([student_messages(e) for e in train[:3]])
    prompt_ids = [prompts[0], prompts[0], prompts[1], prompts[1], prompts[2], prompts[2]]
    embedded = []
    decoder_of(trainer.model).embed_tokens.register_forward_hook(lambda m, args, out: embedded.append(args[0].shape))
    _, ours = trainer._generate_transformers(prompt_ids)
    distinct_width = max(len(ids) for ids in prompts)
    assert embedded[0] == (3, distinct_width - 1), "each distinct prompt once, less the token each copy runs itself"
    assert embedded[1][0] == 6
    _, theirs = SDFTTrainer._generate_transformers(trainer, prompt_ids)
    assert ours == theirs
    assert all(0 < len(c) <= 12 for c in ours)
    assert any(c[-1] in trainer.eos_token_ids for c in ours) or all(len(c) == 12 for c in ours)


def test_the_black_box_baselines_fingerprint_follows_the_prefix_switch_and_no_other_students_does(tmp_path):
    from empathy_utils.pride.stage import training_fingerprint

    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    on, off = StudyConfig.from_dict({}), StudyConfig.from_dict({"sft": {"share_prompt_prefix": False}})
    assert training_fingerprint(on, "blackbox-sft", data) != training_fingerprint(off, "blackbox-sft", data)
    for variant in ("pride", "sdft"):
        assert training_fingerprint(on, variant, data) == training_fingerprint(off, variant, data)
    # SDFT's own switches change its fingerprint alone
    for change in ({"sdft_share_prompt_prefix": False}, {"sdft_rollouts": "transformers"}):
        other = StudyConfig.from_dict({"pride": change})
        assert training_fingerprint(on, "sdft", data) != training_fingerprint(other, "sdft", data)
        for variant in ("pride", "blackbox-sft"):
            assert training_fingerprint(on, variant, data) == training_fingerprint(other, variant, data)


# ------------------------------------------------------------------------------- parameters
def test_pride_parameters_are_checked_together():
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_dict({"pride": {"variants": ["pride-no-pi", "magic"], "opponents": ["teacher"],
                                         "fusion_dim": 10, "fusion_heads": 4, "pi_dropout": 1.0,
                                         "mmd_bandwidths": [], "pi_fields": ["mood"]}})
    msg = str(info.value)
    for needle in ("unknown student 'magic'", "must include 'pride'", "must include 'base'",
                   "multiple of pride.fusion_heads", "pride.pi_dropout", "pride.mmd_bandwidths", "unknown field 'mood'"):
        assert needle in msg
    with pytest.raises(ConfigError, match="multiple of it"):
        StudyConfig.from_dict({"pride": {"batch_size": 3, "sdft_num_generations": 2}})
    with pytest.raises(ConfigError, match="single-turn"):
        StudyConfig.from_dict({"pride": {"source": "esconv", "teacher_prompt": "empathy-reasoning"}})
    assert StudyConfig.from_dict({"pride": {"variants": ["pride"], "opponents": ["base"]}}).pride.variants == ["pride"]


def test_glued_facts_and_the_ablation_table_cover_every_student():
    from empathy_utils.pride.presenting import pride_ablation_table, pride_glue_facts
    from empathy_utils.pride.stage import comparisons

    cfg = _cfg()
    pairs = comparisons(cfg)
    assert ("pride", "base") in pairs, pairs
    assert ("pride", "teacher") in pairs, pairs
    assert pairs[-1] == ("teacher", "base"), pairs
    assert len(pairs) == 2 * len(cfg.pride.variants) + 1
    rows = [{"candidate": c, "opponent": o, "comparison": f"{c} vs {o}", "win_rate": 0.6, "ci_low": 0.4,
             "ci_high": 0.8, "wins": 3, "ties": 2, "losses": 1, "unparsed": 0, "pairs": 6, "confidence": 0.95,
             "position_consistency": 0.5}
            for c, o in pairs if o == "base"]
    results = pd.DataFrame(rows)
    card = {"train_usable": 8, "teacher": "t", "student_model": "s", "pi_fields": ["situation"], "source": {"name": "x"}}

    def facts_of(frame):
        return pride_glue_facts(card, {"results": frame, "judge": "likelihood local:M (mean log-prob of each reply)", "test_dialogues": 4})

    facts = facts_of(results)
    assert facts["pride_vs_base_win_rate"] == 0.6
    assert facts["judge_name"] == "the likelihood judge (M)"  # short, for sentences
    assert facts["judge_description"] == "likelihood local:M (mean log-prob of each reply)"  # in full, once
    assert "unknown validity" in facts["judge_statement"]  # no validity passed: said to be unmeasured
    assert "not measured" in facts["judge_accuracy_statement"]
    assert "agreed 50 %" in facts["judge_consistency"]
    assert math.isnan(facts["pride_vs_teacher_win_rate"])  # not judged in this run: glued as NaN, never made up
    # the chapter's sentences glue the package's text, not a format spec of their own
    assert (facts["pride_vs_base_win_rate_text"], facts["pride_vs_base_ci_text"]) == ("60.0 %", "40.0 % – 80.0 %")
    assert (facts["pride_vs_teacher_win_rate_text"], facts["pride_vs_teacher_ci_text"]) == ("—", "—")
    assert "intervals overlap" in facts["teacher_role"]  # teacher and PRIDE both 60 % (40 – 80)
    teacher = results["candidate"] == "teacher"
    results.loc[teacher, ["win_rate", "ci_low", "ci_high"]] = [0.25, 0.1, 0.35]
    assert "no ceiling" in facts_of(results)["teacher_role"]
    results.loc[teacher, ["win_rate", "ci_low", "ci_high"]] = [0.95, 0.85, 1.0]
    assert "remain the ceiling" in facts_of(results)["teacher_role"]
    assert "did not judge" in facts_of(results[results["candidate"] != "teacher"])["teacher_role"]
    table = pride_ablation_table(results)
    assert list(table.index) == ["SFT on the teacher's text", "SDFT (TRL)", "PRIDE", "PRIDE without PI",
                                 "PRIDE without reverse KL", "PRIDE without MMD", "teacher (sees the PI)"]
    # breakable only between rate, interval and counts (a narrow column split "80.0" from its "%")
    assert table.loc["PRIDE"].iloc[1] == "60.0\u00a0% (40.0–\u206080.0\u00a0%); 3/2/1"


def test_the_pride_notebook_is_thin_and_registered():
    import ast
    import json

    from empathy_utils.runner import CHAPTER_NEEDS, STAGE_NOTEBOOKS

    repo = Path(__file__).resolve().parents[1]
    assert STAGE_NOTEBOOKS["pride"] == "08_pride.ipynb"
    assert CHAPTER_NEEDS["book/pride"] == "pride"
    nb = json.loads((repo / "notebooks" / "08_pride.ipynb").read_text())
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids), "cell ids must be unique"
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    for source in code:
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(ast.parse(source)))
    assert "pride" in load_config(profile_path("tiny")).run.stages


def test_esconv_examples_give_the_teacher_and_module_all_four_pi_fields(tiny_data):
    import os

    if not (Path(os.environ.get("EMPATHY_DATA_DIR", "/nonexistent")) / "esconv" / "train.json").exists():
        pytest.skip("ESConv not available (set EMPATHY_DATA_DIR)")
    _, _, _, _, tokenizer, _, _ = tiny_data
    cfg = _cfg("pride.source=esconv", "pride.train_rows=4", "pride.test_rows=2")
    train, test, info = load_examples(cfg)
    assert info["pi_fields"] == ["situation", "emotion", "problem", "strategy"]
    assert len(train) == 4
    assert len(test) == 2
    assert set(info["sha256"]) == {"train", "test"}
    e = train[0]
    assert f"Support strategy to use in your reply: {e['pi']['strategy']}" in pi_block(e)
    assert "strategy" not in student_messages(e)[-1]["content"].lower()
    f = build_features(tokenizer, e, "A reply.", None, 2048, 64)
    assert all(f["pi_ids"])
    assert len(f["pi_ids"]) == 4
    assert "teacher_ids" not in f


def test_a_student_is_retrained_only_when_its_settings_or_data_change(tiny_data, tmp_path):
    from empathy_utils.data import save_jsonl
    from empathy_utils.pride.stage import PridePaths, train_students

    cfg, train, _, _, _, teachers, _ = tiny_data
    cfg = _cfg("pride.variants=[pride]", "pride.max_steps=1")
    paths = PridePaths(tmp_path)
    save_jsonl([{**e, "teacher": t.to_json(), "usable": True} for e, t in zip(train, teachers)], paths.train_file)
    first = train_students(cfg, tmp_path)
    adapter = paths.model("pride") / "adapter_model.safetensors"
    stamp = adapter.stat().st_mtime_ns
    again = train_students(cfg, tmp_path)
    assert adapter.stat().st_mtime_ns == stamp, "unchanged settings and data: the adapter was retrained"
    assert again[0]["reused"], again
    assert not first[0]["reused"], first
    assert again[0]["fingerprint"] == first[0]["fingerprint"]
    cfg.pride.lambda_rkl = 0.5
    changed = train_students(cfg, tmp_path)
    assert adapter.stat().st_mtime_ns != stamp, "a changed setting must retrain the student"
    assert not changed[0]["reused"], changed


class CountingJudge:
    """A stand-in judge (not a model): prefers the longer reply, and counts what it was asked."""

    name = "counting judge (longer reply wins)"

    def __init__(self):
        self.items = 0

    def judge(self, items):
        self.items += len(items)
        return [{"id": it["id"], "verdict": "a" if len(it["response_a"]) > len(it["response_b"]) else "b",
                 "a_first": None, "b_first": None, "judge": self.name} for it in items]


def test_judging_uses_every_opponent_and_reuses_unchanged_verdicts(tmp_path):
    from empathy_utils.data import save_jsonl
    from empathy_utils.pride.presenting import pride_reply_glue
    from empathy_utils.pride.stage import PridePaths, judge_students, reply_facts

    cfg = _cfg("pride.variants=[pride]")
    paths = PridePaths(tmp_path)
    test = [{"dialogue_id": f"d{i}", "judge_context": "A made-up situation.", "judge_utterance": "Hi.",
             "teacher": {"reply": "You must feel so proud of yourself today!"}} for i in range(3)]
    save_jsonl(test, paths.test_file)
    save_jsonl([{"dialogue_id": "x", "teacher": {"reply": "The speaker is sad."}, "usable": True}], paths.train_file)
    replies = {"base": "Okay.", "pride": "I hear you; that sounds hard.", "teacher": "You must feel so proud!"}
    for student, reply in replies.items():
        save_jsonl([{"dialogue_id": r["dialogue_id"], "reply": reply} for r in test], paths.generation(student))
    judge = CountingJudge()
    report = judge_students(cfg, tmp_path, judge=judge)
    results = report["results"].set_index(["candidate", "opponent"])
    assert list(results.index) == [("pride", "base"), ("pride", "teacher"), ("teacher", "base")]
    assert results.loc[("pride", "base"), "win_rate"] == 1.0
    assert results.loc[("pride", "teacher"), "win_rate"] == 1.0
    assert judge.items == 9
    assert report["judge"] == CountingJudge.name
    assert report["accuracy"] is None, "nothing was measured in this folder"
    assert (tmp_path / "figures" / "pride_winrates.png").exists()
    judge_students(cfg, tmp_path, judge=judge)
    assert judge.items == 9  # nothing changed: the saved verdicts are reused
    save_jsonl([{"dialogue_id": r["dialogue_id"], "reply": "Hm."} for r in test], paths.generation("pride"))
    again = judge_students(cfg, tmp_path, judge=judge)["results"].set_index(["candidate", "opponent"])
    assert judge.items == 15, "changed replies must be judged again (two comparisons of three items)"
    assert again.loc[("pride", "base"), "win_rate"] == 0.0
    facts = reply_facts(cfg, tmp_path)
    assert facts["teacher_says_you"] == 1.0
    assert facts["base_says_you"] == 0.0
    assert facts["teacher_train_says_you"] == 0.0
    assert (facts["teacher_says_you_text"], facts["base_says_you_text"]) == ("100 %", "0 %")
    assert facts["ablation_overlap"] is None
    assert pride_reply_glue(facts)["ablation_overlap"] == "This run trained no ablation beside PRIDE."


def test_the_ablation_sentence_counts_replies_identical_to_prides(tmp_path):
    import json

    from empathy_utils.data import save_jsonl
    from empathy_utils.pride.presenting import ablation_overlap_sentence
    from empathy_utils.pride.stage import PridePaths, ablation_overlap

    cfg = _cfg("pride.variants=[pride,pride-no-pi,pride-no-mmd]", "pride.lambda_mmd=2")
    paths = PridePaths(tmp_path)
    ids = [f"d{i}" for i in range(4)]
    save_jsonl([{"dialogue_id": d, "reply": f"reply {d}"} for d in ids], paths.generation("pride"))
    # no PI: one reply of four is PRIDE's; no MMD: three of four (written in another order: matched by id)
    save_jsonl([{"dialogue_id": d, "reply": f"reply {d}" if d == "d0" else "other"} for d in ids],
               paths.generation("pride-no-pi"))
    save_jsonl([{"dialogue_id": d, "reply": f"reply {d}" if d != "d2" else "other"} for d in reversed(ids)],
               paths.generation("pride-no-mmd"))
    sentence = ablation_overlap_sentence(ablation_overlap(cfg, tmp_path))
    assert "without PI and without MMD wrote 1 and 3 of their 4 test replies" in sentence
    assert "MMD²" not in sentence  # no training log yet: no loss terms claimed
    paths.results.mkdir(parents=True)
    (paths.results / "training.json").write_text(json.dumps(
        [{"variant": "pride", "mean_ce": 1.5, "mean_rkl": 1.25, "mean_mmd": 0.01}]))
    assert "averaged 1.500 (CE), 1.250 (reverse KL) and 0.020 (MMD²)" in \
        ablation_overlap_sentence(ablation_overlap(cfg, tmp_path))
