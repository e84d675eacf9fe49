"""Inference models on a CPU run their linear layers on weights packed once for oneDNN."""

import pytest
import torch
from torch import nn

from empathy_utils.packed_linear import PackedLinear, PackedSibling, pack_linear_layers, packed_count


def _linear_count(model) -> int:
    return sum(type(m) is nn.Linear for m in model.modules())


def test_a_packed_layer_computes_what_the_plain_layer_computes():
    torch.manual_seed(0)
    plain = nn.Linear(24, 40)
    packed = PackedLinear(plain)
    for shape in [(1, 24), (7, 24), (3, 5, 24)]:  # rows change every decode step; a batch of sequences
        x = torch.randn(*shape)
        torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=1e-5)
    assert not hasattr(packed, "weight"), "the plain weight is not kept beside the packed copy"


def test_a_product_no_gradient_can_flow_through_skips_the_autograd_function(monkeypatch):
    """Under inference mode, or for an input that needs no gradient, oneDNN's op is called directly: the
    autograd function's ``apply`` costs about 11 us a call, a few percent of a decoding step."""
    from empathy_utils import packed_linear

    torch.manual_seed(2)
    plain = nn.Linear(24, 40)
    packed = PackedLinear(plain, input_gradient=True)
    x = torch.randn(3, 24)
    expected = packed(x)

    def refuse(*args):
        raise AssertionError("the autograd function ran where no gradient can flow")

    monkeypatch.setattr(packed_linear._PackedProduct, "apply", refuse)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(packed(x), expected, rtol=0, atol=0)  # the input needs no gradient
    with pytest.raises(AssertionError, match="autograd function ran"):
        packed(x.clone().requires_grad_(True))  # an input gradient is wanted: the function (tested below)


def test_inference_models_are_packed_and_give_the_same_logits_training_models_are_not(tiny_spec, monkeypatch):
    from empathy_utils.models import load_model

    monkeypatch.delenv("EMPATHY_PACKED_LINEAR", raising=False)
    training = load_model(tiny_spec)
    inference = load_model(tiny_spec, dtype="auto")
    layers = _linear_count(training)
    assert layers > 0 and _linear_count(inference) == 0, "every linear layer of the inference model is packed"
    assert packed_count(inference) == layers
    assert any(isinstance(m, PackedSibling) for m in inference.modules()), "query/key/value stacked"
    assert all(p.requires_grad for p in training.parameters()), "a training model keeps its plain, trainable layers"
    ids = torch.tensor([[1, 5, 9, 14, 3], [2, 7, 7, 1, 8]])
    with torch.inference_mode():
        torch.testing.assert_close(inference(input_ids=ids).logits, training(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_stacked_siblings_give_separately_packed_layers_logits_bit_for_bit(tiny_spec, monkeypatch, dtype):
    """Query, key and value (and gate and up) as columns of one packed product: the same numbers."""
    from empathy_utils.models import load_model

    if dtype == "bfloat16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU's oneDNN does not multiply bf16: bf16 models are not packed")
    monkeypatch.setenv("EMPATHY_STACKED_SIBLINGS", "0")
    separate = load_model(tiny_spec, dtype=dtype)
    monkeypatch.delenv("EMPATHY_STACKED_SIBLINGS")
    stacked = load_model(tiny_spec, dtype=dtype)
    siblings = [m for m in stacked.modules() if isinstance(m, PackedSibling)]
    layers = stacked.config.num_hidden_layers
    assert len(siblings) == 5 * layers and not any(isinstance(m, PackedSibling) for m in separate.modules())
    assert packed_count(stacked) == packed_count(separate)
    attention = stacked.model.layers[0].self_attn
    torch.testing.assert_close(attention.k_proj.dense_weight(),
                               separate.model.layers[0].self_attn.k_proj.dense_weight(), rtol=0, atol=0)
    ids = torch.tensor([[1, 5, 9, 14, 3, 8], [2, 7, 7, 1, 8, 4]])
    with torch.inference_mode():
        got, expected = stacked(input_ids=ids).logits, separate(input_ids=ids).logits
        assert torch.equal(got, expected)
        assert all(m.product._input is None for m in siblings), "no stacked product is kept after a forward pass"


def test_a_sibling_called_out_of_order_or_with_another_input_computes_its_own_columns():
    from empathy_utils.packed_linear import _SiblingProduct

    torch.manual_seed(3)
    plain = [nn.Linear(24, n) for n in (16, 8, 8)]
    product = _SiblingProduct(plain)
    parts = [PackedSibling(product, i, layer) for i, layer in enumerate(plain)]
    x, other = torch.randn(2, 24), torch.randn(2, 24)
    with torch.inference_mode():
        for order in ([0, 1, 2], [2, 0, 1], [1, 1, 0]):
            for i in order:
                torch.testing.assert_close(parts[i](x), plain[i](x), rtol=1e-5, atol=1e-5)
        parts[0](x)  # the next siblings find x's product waiting; called with another input, they compute their own
        torch.testing.assert_close(parts[1](other), plain[1](other), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(parts[2](x), plain[2](x), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="packed for inference"):
        parts[0](x.clone().requires_grad_(True))


def test_the_switch_keeps_the_plain_layers(tiny_spec, monkeypatch):
    from empathy_utils.models import load_model

    monkeypatch.setenv("EMPATHY_PACKED_LINEAR", "0")
    assert _linear_count(load_model(tiny_spec, dtype="auto")) > 0, "EMPATHY_PACKED_LINEAR=0: the old path"
    assert _linear_count(load_model(tiny_spec, dtype="bfloat16")) > 0


def test_bf16_weights_are_packed_where_onednn_multiplies_bf16_and_give_the_same_logits(tiny_spec, monkeypatch):
    from empathy_utils.models import load_model

    monkeypatch.setenv("EMPATHY_PACKED_LINEAR", "0")
    plain = load_model(tiny_spec, dtype="bfloat16")
    monkeypatch.delenv("EMPATHY_PACKED_LINEAR")
    packed = load_model(tiny_spec, dtype="bfloat16")
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # e.g. an AVX2-only CPU: left as they are
        assert _linear_count(packed) > 0 and pack_linear_layers(packed) == 0
        return
    assert _linear_count(packed) == 0 and packed_count(packed) == _linear_count(plain)
    assert next(packed.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([[1, 5, 9, 14, 3], [2, 7, 7, 1, 8]])
    with torch.inference_mode():
        new, old = packed(input_ids=ids).logits, plain(input_ids=ids).logits
    assert new.dtype == torch.bfloat16
    # both are oneDNN's bf16 products with fp32 sums; measured identical on the embedded model
    torch.testing.assert_close(new.float(), old.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_packed_and_plain_models_reply_the_same(tiny_spec, monkeypatch, temperature):
    from empathy_utils.backends import LocalBackend, Sampling

    convs = [[{"role": "user", "content": f"I lost my {thing} today and I feel awful."}]
             for thing in ("keys", "job", "dog", "wallet", "phone")]
    sampling = Sampling(max_new_tokens=12, temperature=temperature, seed=3)
    monkeypatch.setenv("EMPATHY_PACKED_LINEAR", "0")
    plain = LocalBackend(tiny_spec, batch_size=5, progress=False)
    monkeypatch.delenv("EMPATHY_PACKED_LINEAR")
    packed = LocalBackend(tiny_spec, batch_size=5, progress=False)
    assert _linear_count(plain.model) > 0 and _linear_count(packed.model) == 0
    assert [c.text for c in packed.chat(convs, sampling)] == [c.text for c in plain.chat(convs, sampling)]


def test_a_layer_packed_for_training_passes_the_input_gradient_and_one_packed_for_inference_refuses():
    torch.manual_seed(1)
    plain = nn.Linear(24, 40, bias=False).requires_grad_(False)
    x = torch.randn(3, 6, 24, requires_grad=True)
    upstream = torch.randn(3, 6, 40)
    (plain(x) * upstream).sum().backward()
    expected, x.grad = x.grad.clone(), None
    (PackedLinear(plain, input_gradient=True)(x) * upstream).sum().backward()
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="packed for inference"):
        PackedLinear(plain)(x).sum().backward()


def _train(step, cfg, run_dir, monkeypatch, packed: bool):
    import json
    import shutil

    from safetensors.torch import load_file

    from empathy_utils.artifacts import RunPaths
    from empathy_utils.training import train_dpo, train_sft

    folder = RunPaths(run_dir).sft_model if step == "sft" else RunPaths(run_dir).dpo_model
    shutil.rmtree(folder, ignore_errors=True)
    if packed:
        monkeypatch.delenv("EMPATHY_PACKED_LINEAR", raising=False)
    else:
        monkeypatch.setenv("EMPATHY_PACKED_LINEAR", "0")
    summary = (train_sft if step == "sft" else train_dpo)(cfg, run_dir)
    history = json.loads((folder / "train_log.json").read_text())["history"]
    return summary, [h["loss"] for h in history if "loss" in h], load_file(folder / "adapter_model.safetensors")


@pytest.mark.parametrize("step", ["sft", "dpo"])
def test_lora_training_on_packed_base_layers_learns_what_it_learns_on_plain_ones(tmp_path, tiny_spec, monkeypatch,
                                                                                  step):
    from empathy_utils.config import load_config, profile_path
    from empathy_utils.stages import build_datasets
    from empathy_utils.training import train_sft

    cfg = load_config(profile_path("tiny"), ["sft.max_steps=3", "dpo.max_steps=3", "sft.logging_steps=1",
                                             "dpo.logging_steps=1"])
    build_datasets(cfg, tmp_path)
    if step == "dpo":
        train_sft(cfg, tmp_path)
    plain, plain_losses, plain_weights = _train(step, cfg, tmp_path, monkeypatch, packed=False)
    packed, packed_losses, packed_weights = _train(step, cfg, tmp_path, monkeypatch, packed=True)
    assert plain["packed_layers"] == 0
    assert packed["packed_layers"] == 7 * cfg_layers(tiny_spec), "every LoRA base layer (7 per decoder layer)"
    assert packed_losses == pytest.approx(plain_losses, rel=1e-5)
    assert set(packed_weights) == set(plain_weights), "the saved adapter holds the same tensors"
    moved = 0
    for name, weight in plain_weights.items():
        torch.testing.assert_close(packed_weights[name], weight, rtol=1e-4, atol=1e-6)
        moved += "lora_B" in name and bool(weight.abs().sum() > 0)
    assert moved, "training moved the LoRA weights (B starts at zero)"


def cfg_layers(spec) -> int:
    from transformers import AutoConfig

    from empathy_utils.models import resolve_model_path

    return AutoConfig.from_pretrained(resolve_model_path(spec)).num_hidden_layers
