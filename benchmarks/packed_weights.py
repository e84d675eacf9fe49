"""Linear layers on weights packed once for oneDNN (``empathy_utils.packed_linear``) beside plain ``nn.Linear``.

    python benchmarks/packed_weights.py [--prompts 32] [--batch-size 32] [--max-new-tokens 80] [--dtype bfloat16]
                                        [--switch packing|siblings|decode-attention]

Two of the study's inference paths, each with the old weights and the packed ones in one process,
in alternation (old, new, new, old), so both see the same machine. ``--switch siblings`` compares
instead packed layers each with its own product and sibling layers stacked into one product
(``EMPATHY_STACKED_SIBLINGS``); ``--switch decode-attention`` transformers' SDPA and the inference
models' own attention for unpadded decode steps (``EMPATHY_ATTENTION=sdpa``: the old path):

- generation: the students' replies to the embedded corpus's base prompts (P0), greedy, the study's
  own batched loop (shared prefix, finished rows dropped, keys and values written in place);
- scoring: the likelihood judge's mean log-probability of each corpus reply given its speaker's turn
  (the forward pass that PRIDE's teacher and DPO's reference also make).

Prints tokens per second, the ratio new / old, each rate beside this CPU's limit (``limits.py``) in the
weights' dtype (``--dtype``: fp32 by default; bf16, which ``model.dtype: auto`` picks on a CPU with bf16
units), and how far the results moved (identical greedy replies; the largest change of a mean
log-probability).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from limits import matmul_gflops, model_parameters, tokens_per_second_limit

from empathy_utils.allocator import keep_freed_memory
from empathy_utils.backends import LocalBackend, Sampling
from empathy_utils.data import load_embedded_corpus
from empathy_utils.distillation import base_prompt_messages
from empathy_utils.judges.scoring import mean_log_probabilities
from empathy_utils.models import load_model, load_tokenizer

# --switch: the environment variable, its old and new values, the two paths' names.
SWITCHES = {"packing": ("EMPATHY_PACKED_LINEAR", "0", "1", "plain", "packed"),
            "siblings": ("EMPATHY_STACKED_SIBLINGS", "0", "1", "separate", "stacked"),
            "decode-attention": ("EMPATHY_ATTENTION", "sdpa", "", "sdpa", "stacked-decode")}


def loaded(args, new: bool, load):
    """``load()`` with ``args.switch``'s variable at its old or new value, the variable restored after."""
    variable, old_value, new_value = SWITCHES[args.switch][:3]
    before = os.environ.get(variable)
    os.environ[variable] = new_value if new else old_value
    try:
        return load()
    finally:
        if before is None:
            del os.environ[variable]
        else:
            os.environ[variable] = before


def alternate(run: dict) -> dict:
    """Run ``run``'s two callables (old, new) twice, old, new, new, old; {name: (last result, [seconds, seconds])}."""
    old, new = run
    out = {name: [None, []] for name in run}
    for name in (old, new, new, old):
        start = time.time()
        out[name][0] = run[name]()
        out[name][1].append(time.time() - start)
    return out


def compare_generation(args, limit: float) -> dict:
    corpus = load_embedded_corpus().head(args.prompts)
    convs = [base_prompt_messages(r) for _, r in corpus.iterrows()]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    old, new = SWITCHES[args.switch][3:]
    backends = {name: loaded(args, name == new, lambda: LocalBackend(args.model, batch_size=args.batch_size,
                                                                       progress=False, dtype=args.dtype))
                for name in (old, new)}
    for backend in backends.values():
        backend.chat(convs[:2], Sampling(max_new_tokens=4))  # warm-up
    timed = alternate({name: (lambda b=b: b.chat(convs, sampling)) for name, b in backends.items()})
    result = {}
    for name, (replies, seconds) in timed.items():
        tokens = sum(c.completion_tokens for c in replies)
        rate = 2 * tokens / sum(seconds)
        result[name] = {"tokens": tokens, "seconds": [round(s, 1) for s in seconds],
                        "tokens_per_second": round(rate, 1), "ratio_to_limit": round(rate / limit, 2)}
    same = sum(a.text == b.text for a, b in zip(timed[old][0], timed[new][0]))
    result["ratio"] = round(result[new]["tokens_per_second"] / result[old]["tokens_per_second"], 3)
    result["identical_replies"] = f"{same}/{len(convs)}"
    for name in (old, new):
        r = result[name]
        print(f"  generation, batch {args.batch_size}, {name}: {r['tokens']} tokens in "
              f"{' and '.join(map(str, r['seconds']))} s, {r['tokens_per_second']} tok/s ({r['ratio_to_limit']:.0%} "
              "of the limit)")
    print(f"  generation: {new} / {old} {result['ratio']}x; identical greedy replies {result['identical_replies']}")
    return result


def compare_scoring(args, limit: float) -> dict:
    tokenizer = load_tokenizer(args.model, padding_side="right")
    rows = []
    for _, r in load_embedded_corpus().iterrows():
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": r.utterance}],
                                               add_generation_prompt=True, tokenize=True)
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        rows.append((prompt, tokenizer.encode(r.reference_reply, add_special_tokens=False)))
    tokens = sum(len(p) + len(a) for p, a in rows)
    old, new = SWITCHES[args.switch][3:]
    models = {name: loaded(args, name == new, lambda: load_model(args.model, dtype=args.dtype)) for name in (old, new)}
    timed = alternate({name: (lambda m=m: mean_log_probabilities(m, tokenizer, rows, 16)) for name, m in models.items()})
    result = {}
    for name, (_, seconds) in timed.items():
        rate = 2 * tokens / sum(seconds)
        result[name] = {"tokens": tokens, "seconds": [round(s, 1) for s in seconds],
                        "tokens_per_second": round(rate, 1), "ratio_to_limit": round(rate / limit, 2)}
    result["ratio"] = round(result[new]["tokens_per_second"] / result[old]["tokens_per_second"], 3)
    result["largest_change"] = float(np.abs(timed[old][0] - timed[new][0]).max())
    for name in (old, new):
        r = result[name]
        print(f"  scoring, {len(rows)} replies, {name}: {tokens} tokens in {' and '.join(map(str, r['seconds']))} s, "
              f"{r['tokens_per_second']} tok/s ({r['ratio_to_limit']:.0%} of the limit)")
    print(f"  scoring: {new} / {old} {result['ratio']}x; largest change of a mean log-probability "
          f"{result['largest_change']:.1e}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the weights' dtype in both paths (bfloat16: what model.dtype auto picks with bf16 units)")
    parser.add_argument("--switch", default="packing", choices=sorted(SWITCHES),
                        help="what the two paths differ in (default: plain and packed weights)")
    args = parser.parse_args()
    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    parameters = model_parameters(args.model)
    gflops = matmul_gflops(dtype=args.dtype)
    limit = tokens_per_second_limit(gflops, parameters, 2)
    print(f"{args.model}: torch threads {torch.get_num_threads()}; {args.dtype} matmul {gflops:.0f} GFLOP/s, so at "
          f"most {limit:.0f} tokens/s")
    results = {"switch": args.switch, "dtype": args.dtype, "gflops": round(gflops, 1), "limit_tokens_per_second": round(limit, 1),
               "generation": compare_generation(args, limit), "scoring": compare_scoring(args, limit)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
