"""Batched vs one-at-a-time generation with the embedded model, on the same prompts.

    python benchmarks/generation_throughput.py [--prompts 32] [--single 8] [--batch-sizes 16 32]

The prompts are the base prompt P0 filled with the embedded corpus's dialogues, as the students see
them. Greedy decoding, the same token limit for every setting. Tokens per second count generated
tokens only, over wall time including the prompt's forward pass. Also checks that batched answers
equal one-at-a-time answers. "Shared prefix" computes the tokens every prompt shares (the
definitions block of P0) once per call and reuses their keys and values for every row.

Beside the generated tokens, each batched setting counts every token the model actually runs: the
prompt tokens it reads (the shared prefix once when shared) and one decode step per row for as long
as the longest reply of its batch (a row that has finished keeps stepping in ``generate``; the study's
own greedy loop, the last two settings of each batch size, drops it, so its decode steps are the replies'
own; the last also writes each step's keys and values in place, ``empathy_utils.kv_cache``). That rate is
compared with this CPU's limit (``limits.py``: matmul GFLOP/s measured in the weights' dtype, which
``model.dtype: auto`` makes bf16 on a CPU with bf16 units, over 2 x the parameters per token), so the
report says how much is waste and how much is the prompt's own cost.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from limits import matmul_gflops, model_parameters, tokens_per_second_limit

from empathy_utils.allocator import keep_freed_memory
from empathy_utils.backends import LocalBackend, Sampling
from empathy_utils.data import load_embedded_corpus
from empathy_utils.distillation import base_prompt_messages


def timed(backend: LocalBackend, convs, sampling):
    start = time.time()
    out = backend.chat(convs, sampling)
    seconds = time.time() - start
    tokens = sum(c.completion_tokens for c in out)
    return out, tokens, seconds


def work_done(backend: LocalBackend, convs, out, drops_finished: bool) -> dict:
    """The tokens the batched path ran for ``convs`` (answers ``out``): prompt tokens read, decode steps
    taken (rows x the longest reply of their batch, EOS step included), and of those the steps of rows
    that had already finished."""
    encoded = backend._encode(convs)
    prefix = backend._shared_prefix(encoded)
    read = len(prefix) + sum(len(e) - len(prefix) for e in encoded)
    steps = idle = 0
    for batch in backend._batches(encoded):
        lengths = [out[i].completion_tokens + (out[i].finish_reason == "stop") for i in batch]
        if drops_finished:
            steps += sum(lengths)
            continue
        steps += len(batch) * max(lengths)
        idle += sum(max(lengths) - n for n in lengths)
    return {"prompt_tokens_read": read, "decode_steps": steps, "idle_decode_steps": idle}


def compare_sampled(args) -> None:
    """Sampled decoding: transformers' generate (keeps finished rows, grows its cache by concatenation)
    beside the study's own loop (drops them, writes keys and values in place), same prompts and seed,
    in alternation so that both see the same machine."""
    corpus = load_embedded_corpus().head(args.prompts)
    convs = [base_prompt_messages(r) for _, r in corpus.iterrows()]
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=0.95, seed=1)
    backend = LocalBackend(args.model, batch_size=args.batch_sizes[0], progress=False)
    backend.chat(convs[:2], Sampling(max_new_tokens=4))  # warm-up
    seconds = {False: [], True: []}
    tokens = {}
    for own_loop in (False, True, True, False):
        backend.drop_finished = own_loop
        out, tokens[own_loop], took = timed(backend, convs, sampling)
        seconds[own_loop].append(took)
    name = {False: "generate", True: "own loop"}
    for own_loop in (False, True):
        print(f"  sampled (T={args.temperature}, top-p 0.95), batch {backend.batch_size}, {name[own_loop]:<8}: "
              f"{tokens[own_loop]} tokens, {' and '.join(f'{t:.1f}' for t in seconds[own_loop])} s, "
              f"{tokens[own_loop] / min(seconds[own_loop]):.1f} tok/s at best")
    print(f"  ratio of total times (generate / own loop): {sum(seconds[False]) / sum(seconds[True]):.2f}x; "
          "per token drawn (the two draw different replies, of different lengths, for batches above one): "
          f"{(tokens[True] / sum(seconds[True])) / (tokens[False] / sum(seconds[False])):.2f}x")


def compare_dtypes(args) -> None:
    """The study's batched greedy path with fp32 and bf16 weights (``model.dtype``), same prompts, in
    alternation (two runs each), each rate beside the limit of its own dtype (``limits.py``)."""
    corpus = load_embedded_corpus().head(args.prompts)
    convs = [base_prompt_messages(r) for _, r in corpus.iterrows()]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    backends = {d: LocalBackend(args.model, batch_size=args.batch_sizes[0], progress=False, dtype=d) for d in args.dtypes}
    parameters = model_parameters(args.model)
    limits = {d: tokens_per_second_limit(matmul_gflops(dtype=d), parameters, 2) for d in args.dtypes}
    outs, seconds, tokens = {}, {d: [] for d in args.dtypes}, {}
    for backend in backends.values():
        backend.chat(convs[:2], Sampling(max_new_tokens=4))  # warm-up
    for dtype in list(args.dtypes) + list(reversed(args.dtypes)):
        outs[dtype], tokens[dtype], took = timed(backends[dtype], convs, sampling)
        seconds[dtype].append(took)
    results = {}
    for dtype in args.dtypes:
        rate = 2 * tokens[dtype] / sum(seconds[dtype])
        results[dtype] = {"tokens": tokens[dtype], "seconds": [round(t, 1) for t in seconds[dtype]],
                          "tokens_per_second": round(rate, 1), "limit": round(limits[dtype], 1),
                          "ratio_to_limit": round(rate / limits[dtype], 2)}
        print(f"  {dtype:<9} batch {args.batch_sizes[0]}: {tokens[dtype]} tokens in "
              f"{' and '.join(f'{t:.1f}' for t in seconds[dtype])} s, {rate:.1f} tok/s; its limit here "
              f"{limits[dtype]:.0f} tok/s ({rate / limits[dtype]:.0%})")
    if len(args.dtypes) == 2:
        first, second = args.dtypes
        same = sum(a.text == b.text for a, b in zip(outs[first], outs[second]))
        ratio = results[second]["tokens_per_second"] / results[first]["tokens_per_second"]
        results["ratio"], results["identical_replies"] = round(ratio, 2), f"{same}/{len(convs)}"
        print(f"  {second} / {first}: {ratio:.2f}x tokens per second; identical replies {same}/{len(convs)} "
              "(greedy decoding in another precision can take another token where two are close)")
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--single", type=int, default=8, help="how many prompts to time one at a time")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="above 0: only compare sampled replies (the teacher's retries: top-p 0.95) through "
                             "generate and through the study's own loop, batch --batch-sizes[0], alternating")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"),
                        help="only time the study's own batched path (batch --batch-sizes[0], shared prefix, "
                             "finished rows dropped) with the weights in each dtype, alternating")
    args = parser.parse_args()
    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    if args.temperature > 0:
        compare_sampled(args)
        return
    if args.dtypes:
        compare_dtypes(args)
        return

    corpus = load_embedded_corpus().head(args.prompts)
    convs = [base_prompt_messages(r) for _, r in corpus.iterrows()]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    # The naive baseline: one prompt at a time, nothing shared between prompts.
    backend = LocalBackend(args.model, batch_size=1, progress=False, share_prefix=False, drop_finished=False)
    backend.chat(convs[:1], Sampling(max_new_tokens=4))  # warm-up
    parameters = model_parameters(args.model)
    dtype = str(backend.model.dtype).removeprefix("torch.")  # model.dtype auto: bf16 where the CPU has bf16 units
    gflops = matmul_gflops(dtype=dtype)
    limit = tokens_per_second_limit(gflops, parameters, 2)
    print(f"{args.model}: {len(convs)} prompts, {args.max_new_tokens} new tokens max, greedy, "
          f"torch threads {torch.get_num_threads()}; weights in {dtype}; {dtype} matmul {gflops:.0f} GFLOP/s, so at "
          f"most {limit:.0f} tokens/s through {parameters / 1e6:.0f} M parameters")

    single_out, tokens, seconds = timed(backend, convs[: args.single], sampling)
    single_rate = tokens / seconds
    results = {"dtype": dtype, "limit_tokens_per_second": round(limit, 1), "gflops": round(gflops, 1),
               "one_at_a_time": {"prompts": args.single, "tokens": tokens, "seconds": round(seconds, 1),
                                 "tokens_per_second": round(single_rate, 1)}}
    print(f"  {'one at a time (naive)':<44}: {single_rate:6.1f} tok/s ({tokens} tokens in {seconds:.1f} s)")
    settings = [(size, *flags) for size in args.batch_sizes
                for flags in ((False, False, False), (True, False, False), (True, True, False), (True, True, True))]
    for size, share, drop, reserve in settings:
        backend.batch_size, backend.share_prefix, backend.drop_finished = size, share, drop
        backend.reserve_cache = reserve
        out, tokens, seconds = timed(backend, convs, sampling)
        rate = tokens / seconds
        same = sum(a.text == b.text for a, b in zip(out[: args.single], single_out))
        key = (f"batch_{size}" + ("_shared_prefix" if share else "") + ("_dropping_finished" if drop else "")
               + ("_reserved_cache" if reserve else ""))
        work = work_done(backend, convs, out, drop)
        ran = (work["prompt_tokens_read"] + work["decode_steps"]) / seconds
        results[key] = {"prompts": len(convs), "tokens": tokens, "seconds": round(seconds, 1),
                        "tokens_per_second": round(rate, 1), "speedup": round(rate / single_rate, 2),
                        "ratio_to_limit": round(rate / limit, 2), **work,
                        "tokens_run_per_second": round(ran, 1), "tokens_run_ratio_to_limit": round(ran / limit, 2),
                        "identical_to_one_at_a_time": f"{same}/{args.single}"}
        label = (f"batch of {size}" + (" + shared prefix" if share else "") + (" + drop finished" if drop else "")
                 + (" + reserved cache" if reserve else ""))
        print(f"  {label:<44}: {rate:6.1f} tok/s ({tokens} tokens in {seconds:.1f} s), "
              f"{rate / single_rate:.1f}x, {rate / limit:.0%} of the limit; identical answers {same}/{args.single}")
        print(f"  {'':<44}  the model ran {work['prompt_tokens_read']} prompt tokens and {work['decode_steps']} "
              f"decode steps ({work['idle_decode_steps']} for rows already finished): {ran:.0f} tokens/s, "
              f"{ran / limit:.0%} of the limit")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
