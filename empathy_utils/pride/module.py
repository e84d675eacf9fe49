"""PRIDE's student: a LoRA model plus a multi-source attention module over the privileged information.

The module (:class:`MultiSourceAttention`) sits on the output of one decoder layer. There the
student's hidden states (the dialogue context) are the queries; the keys and values are an encoding
of the PI, one *source* per PI field (situation, emotion, problem type, strategy), each marked with a
learned source embedding, plus a learned null slot so a token can attend to nothing. The result is
added back through a gate, ``h + tanh(g) * attention``, with ``g`` starting at zero (Flamingo-style), so
at the start of training the module changes nothing.

With no PI the module is bypassed — its hook is not even installed — so the student is *exactly* the
LoRA model: same operations, same logits, bit for bit. That is how the student runs at inference,
and why its LoRA adapter, saved the usual PEFT way, is all that generation needs. The module's own
weights (and the MMD projection, when there is one) are saved beside the adapter so training can be
inspected or resumed (:func:`save_student`, :func:`load_student`).

The PI is encoded by the frozen base student itself (adapter off, no gradient): each field's text is
run through it and the hidden states at the fusion layer are pooled per field (``mean``) or kept per
token (``tokens``); ``embeddings`` uses the input token embeddings instead.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

MODULE_FILE = "pride_modules.safetensors"
MODULE_CONFIG = "pride_student.json"


# --------------------------------------------------------------------------------- model plumbing
def base_of(model) -> nn.Module:
    """The transformers causal LM under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model) -> nn.ModuleList:
    layers = getattr(base_of(model).get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(base_of(model)).__name__}: cannot find its decoder layers (expected .model.layers)")
    return layers


def resolve_layer(model, index: int) -> int:
    n = len(decoder_layers(model))
    k = index if index >= 0 else n + index
    if not 0 <= k < n:
        raise ValueError(f"layer {index} does not exist in a model with {n} decoder layers")
    return k


def feature_module(model, layer: int) -> nn.Module:
    """The module whose output is the feature at ``layer``: -1 = the final norm (the LM head's input),
    k >= 0 = decoder layer k."""
    if layer == -1:
        return base_of(model).get_decoder().norm
    return decoder_layers(model)[resolve_layer(model, layer)]


def relative_layer(student, teacher, layer: int) -> int:
    """The teacher's layer at the same relative depth as the student's ``layer`` (-1 stays -1)."""
    if layer == -1:
        return -1
    k = resolve_layer(student, layer)
    ns, nt = len(decoder_layers(student)), len(decoder_layers(teacher))
    return min(nt - 1, round((k + 1) * nt / ns) - 1)


@contextmanager
def capture(module: nn.Module, store: dict, key: str):
    """Record ``module``'s output in ``store[key]`` during the block."""

    def hook(_module, _args, output):
        store[key] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def hidden_and_heads(model, input_ids, attention_mask, rows, positions, feature_layer: int):
    """Run a causal LM and return (logits, features) only at the given (row, position) pairs.

    The LM head is applied to the selected positions alone (a 49k-word head over every padded
    position would cost a fifth of the forward pass). Works through PEFT wrappers: LoRA lives in the
    base model's own modules."""
    base = base_of(model)
    store: dict = {}
    with capture(feature_module(model, feature_layer), store, "features"):
        hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    selected = hidden[rows, positions]
    logits = base.get_output_embeddings()(selected)
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, store["features"][rows, positions]


# ---------------------------------------------------------------------------------- the module
class MultiSourceAttention(nn.Module):
    """Gated cross-attention from the student's hidden states to PI sources (see the module docstring)."""

    def __init__(self, d_model: int, d_pi: int, n_sources: int, dim: int = 128, heads: int = 4,
                 gate_init: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"fusion dim {dim} is not a multiple of heads {heads}")
        self.d_model, self.d_pi, self.n_sources, self.dim, self.heads = d_model, d_pi, n_sources, dim, heads
        self.query_norm = nn.LayerNorm(d_model)
        self.key_norm = nn.LayerNorm(d_pi)
        self.q = nn.Linear(d_model, dim, bias=False)
        self.k = nn.Linear(d_pi, dim, bias=False)
        self.v = nn.Linear(d_pi, dim, bias=False)
        self.o = nn.Linear(dim, d_model, bias=False)
        # Source 0 is the null slot; sources 1..n are the PI fields.
        self.source_embedding = nn.Embedding(n_sources + 1, d_pi)
        nn.init.normal_(self.source_embedding.weight, std=0.02)
        self.null = nn.Parameter(torch.zeros(1, 1, d_pi))
        self.gate = nn.Parameter(torch.full((d_model,), float(gate_init)))
        self.last_source_attention: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor, pi: torch.Tensor, pi_mask: torch.Tensor, pi_source: torch.Tensor,
                present: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, d_model]; pi [B, N, d_pi] with pi_mask [B, N] (valid keys) and pi_source [B, N]
        (1..n_sources); present [B] (rows that have PI). Rows without PI come back unchanged."""
        b, t, _ = hidden.shape
        null = self.null.expand(b, 1, -1) + self.source_embedding.weight[0]
        keys_in = torch.cat([null, pi + self.source_embedding(pi_source)], dim=1)
        key_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=pi.device), pi_mask.bool()], dim=1)
        kv = self.key_norm(keys_in.to(hidden.dtype))
        split = lambda x: x.view(b, -1, self.heads, self.dim // self.heads).transpose(1, 2)  # noqa: E731
        q = split(self.q(self.query_norm(hidden)))
        k, v = split(self.k(kv)), split(self.v(kv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim // self.heads)
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1)
        attended = (weights @ v).transpose(1, 2).reshape(b, t, self.dim)
        fused = hidden + torch.tanh(self.gate) * self.o(attended)
        with torch.no_grad():  # attention mass per source (0 = null), for the training log
            per_key = weights.mean(dim=(1, 2))  # [B, 1 + N]
            sources = torch.cat([torch.zeros(b, 1, dtype=torch.long, device=pi.device), pi_source], dim=1)
            mass = torch.zeros(b, self.n_sources + 1, device=pi.device).scatter_add_(1, sources, per_key.float())
            self.last_source_attention = mass[present.bool()].mean(0) if present.any() else None
        return torch.where(present[:, None, None].bool(), fused, hidden)

    def gate_strength(self) -> float:
        """Mean |tanh(g)|: 0 means the module adds nothing even when PI is present."""
        return float(torch.tanh(self.gate.detach()).abs().mean())


class PrideStudent(nn.Module):
    """LoRA student (``lm``, a PeftModel) + optional multi-source attention + optional MMD projection."""

    def __init__(self, lm, fusion: MultiSourceAttention | None, fusion_layer: int, pi_encoder: str,
                 pi_pooling: str, projection: nn.Linear | None = None):
        super().__init__()
        self.lm = lm
        self.fusion = fusion
        self.fusion_layer = resolve_layer(lm, fusion_layer) if fusion is not None else fusion_layer
        self.pi_encoder = pi_encoder
        self.pi_pooling = pi_pooling
        self.projection = projection

    @property
    def config(self):  # the Trainer reads a few attributes of the model's config
        return self.lm.config

    # ---------------------------------------------------------------------------- PI encoding
    def encode_pi(self, pi_input_ids: torch.Tensor, pi_attention_mask: torch.Tensor):
        """PI tokens [B, S, L] -> (keys [B, N, d], key mask [B, N], key source ids [B, N]).

        Encoded by the frozen base model (adapter off, no gradient) at the fusion layer, or by its
        input embeddings; pooled per source (``mean``) or kept per token (``tokens``)."""
        b, s, length = pi_input_ids.shape
        ids = pi_input_ids.reshape(b * s, length)
        mask = pi_attention_mask.reshape(b * s, length)
        width = base_of(self.lm).config.hidden_size
        states = torch.zeros(b * s, length, width, device=ids.device)
        filled = mask.any(-1)  # empty sources are not run at all (a fully masked row can give NaNs)
        if filled.any():
            with torch.no_grad():
                if self.pi_encoder == "embeddings":
                    encoded = self.lm.get_input_embeddings()(ids[filled])
                else:
                    store: dict = {}
                    with self.lm.disable_adapter(), capture(decoder_layers(self.lm)[self.fusion_layer], store, "pi"):
                        base_of(self.lm).get_decoder()(input_ids=ids[filled], attention_mask=mask[filled])
                    encoded = store["pi"]
            states[filled] = encoded.detach().float()
        states = (states * mask[..., None]).reshape(b, s, length, -1)
        mask = mask.reshape(b, s, length).bool()
        source_ids = torch.arange(1, s + 1, device=ids.device).expand(b, s)
        if self.pi_pooling == "mean":
            counts = mask.sum(-1, keepdim=True).clamp_min(1)
            pooled = (states * mask[..., None]).sum(2) / counts
            return pooled, mask.any(-1), source_ids
        return (states.reshape(b, s * length, -1), mask.reshape(b, s * length),
                source_ids[..., None].expand(b, s, length).reshape(b, s * length))

    @contextmanager
    def _fused(self, pi):
        """Install the module on the fusion layer for one forward pass (nothing when ``pi`` is None)."""
        if pi is None or self.fusion is None:
            yield
            return
        keys, key_mask, key_source, present = pi

        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            fused = self.fusion(hidden, keys, key_mask, key_source, present)
            return (fused, *output[1:]) if isinstance(output, tuple) else fused

        handle = decoder_layers(self.lm)[self.fusion_layer].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def forward(self, input_ids, attention_mask, rows, positions, feature_layer: int = -1,
                pi_input_ids=None, pi_attention_mask=None, pi_present=None):
        """Logits and features at the (row, position) pairs; PI is used for rows with ``pi_present``."""
        pi = None
        if self.fusion is not None and pi_present is not None and bool(pi_present.any()):
            keys, key_mask, key_source = self.encode_pi(pi_input_ids, pi_attention_mask)
            pi = (keys, key_mask, key_source, pi_present)
        with self._fused(pi):
            return hidden_and_heads(self.lm, input_ids, attention_mask, rows, positions, feature_layer)


# ------------------------------------------------------------------------------- build and save
def build_student(lm, settings, n_sources: int, use_module: bool, teacher_width: int | None) -> PrideStudent:
    """Wrap a PEFT model with the module (if ``use_module``) and the MMD projection (if needed)."""
    width = base_of(lm).config.hidden_size
    fusion = None
    if use_module:
        fusion = MultiSourceAttention(width, width, n_sources, settings.fusion_dim, settings.fusion_heads,
                                      settings.gate_init)
    projection = None
    need = settings.mmd_projection == "linear" or (settings.mmd_projection == "auto" and teacher_width not in (None, width))
    if settings.lambda_mmd > 0 and need:
        if teacher_width is None:
            raise ValueError("an MMD projection needs the teacher's width")
        projection = nn.Linear(width, teacher_width, bias=False)
    elif settings.lambda_mmd > 0 and teacher_width not in (None, width):
        raise ValueError(f"student width {width} and teacher width {teacher_width} differ: set "
                         "pride.mmd_projection to auto or linear")
    return PrideStudent(lm, fusion, settings.fusion_layer, settings.pi_encoder, settings.pi_pooling, projection)


def module_state(student: PrideStudent) -> dict[str, torch.Tensor]:
    state = {}
    if student.fusion is not None:
        state.update({f"fusion.{k}": v.detach().cpu().contiguous() for k, v in student.fusion.state_dict().items()})
    if student.projection is not None:
        state.update({f"projection.{k}": v.detach().cpu().contiguous()
                      for k, v in student.projection.state_dict().items()})
    return state


def save_student(student: PrideStudent, folder: str | Path, tokenizer=None) -> Path:
    """The LoRA adapter the PEFT way (what generation loads) + the module and projection beside it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    student.lm.save_pretrained(str(folder))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    state = module_state(student)
    if state:
        save_file(state, str(folder / MODULE_FILE))
    f = student.fusion
    config = {
        "fusion": None if f is None else {"d_model": f.d_model, "d_pi": f.d_pi, "n_sources": f.n_sources, "dim": f.dim,
                                          "heads": f.heads, "layer": student.fusion_layer},
        "pi_encoder": student.pi_encoder,
        "pi_pooling": student.pi_pooling,
        "projection": None if student.projection is None else list(student.projection.weight.shape[::-1]),
        "note": "Inference uses the LoRA adapter alone (no PI): the module is a training-time component.",
    }
    (folder / MODULE_CONFIG).write_text(json.dumps(config, indent=2))
    return folder


def load_student(spec: str, folder: str | Path, trainable: bool = False) -> PrideStudent:
    """Rebuild a saved PRIDE student: the base model, its LoRA adapter, the module and projection."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from ..models import load_model

    folder = Path(folder)
    config = json.loads((folder / MODULE_CONFIG).read_text())
    lm = PeftModel.from_pretrained(load_model(spec), str(folder), is_trainable=trainable)
    fusion = projection = None
    fc = config["fusion"]
    if fc is not None:
        fusion = MultiSourceAttention(fc["d_model"], fc["d_pi"], fc["n_sources"], fc["dim"], fc["heads"])
    if config["projection"] is not None:
        d_in, d_out = config["projection"]
        projection = nn.Linear(d_in, d_out, bias=False)
    student = PrideStudent(lm, fusion, fc["layer"] if fc else -1, config["pi_encoder"], config["pi_pooling"], projection)
    if (folder / MODULE_FILE).exists():
        state = load_file(str(folder / MODULE_FILE))
        if fusion is not None:
            fusion.load_state_dict({k[len("fusion."):]: v for k, v in state.items() if k.startswith("fusion.")})
        if projection is not None:
            projection.load_state_dict({k[len("projection."):]: v for k, v in state.items() if k.startswith("projection.")})
    student.train(trainable)
    return student
