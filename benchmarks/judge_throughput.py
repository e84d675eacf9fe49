"""Pairs judged per second by each judge on this machine (not a test; prints figures).

    python benchmarks/judge_throughput.py [--pairs 48] [--judges longer likelihood packaged stacked embedding-head writer-style cross-encoder stacked-judges reward-model pairwise-llm]
    python benchmarks/judge_throughput.py --prefix-sharing [--pairs 96]

``packaged`` is the judge ``judge.fallback: auto`` uses without research data (rebuilt from the
packaged measurement, framing and tie band included); ``stacked`` is the stacked judge's feature
pipeline (the likelihood score plus text features) with untrained weights; ``stacked-judges`` the
stack over the writer-style, cross-encoder and embedding-head judges (``judges+text``), likewise.

The pairs are made from the project's embedded corpus (its reference reply against a short generic
reply, sides alternating), so no research data is needed. Model loading is timed apart from judging;
every judge starts cold (the embedding head embeds every text anew; scoring judges score each
distinct reply once, which is part of their speed). The embedding head, the writer-style judge, the
cross-encoder and the reward model are timed with untrained weights — their speed does not depend on what they learned.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from empathy_utils.allocator import keep_freed_memory
from empathy_utils.data import load_embedded_corpus

GENERIC = ["I'm sorry to hear that.", "That's great!", "Oh no, that sounds tough.", "Wow, good for you."]


def make_pairs(n: int) -> list[dict]:
    corpus = load_embedded_corpus()
    rows = [corpus.iloc[i % len(corpus)] for i in range(n)]
    items = []
    for i, r in enumerate(rows):
        ref, generic = r["reference_reply"], GENERIC[i % len(GENERIC)]
        a, b = (ref, generic) if i % 2 else (generic, ref)
        items.append({"id": i, "context": r["situation"], "utterance": r["utterance"], "response_a": a, "response_b": b})
    return items


def build(kind: str, model: str, batch_size: int):
    from empathy_utils import judges as J

    if kind == "longer":
        return J.LongerReplyJudge()
    if kind == "likelihood":
        return J.LikelihoodJudge(model, batch_size=batch_size)
    if kind == "packaged":
        from empathy_utils.judge_validation import judge_from_selection, packaged_measurement, selected_from_packaged
        from empathy_utils.config import StudyConfig

        return judge_from_selection(selected_from_packaged(packaged_measurement()), StudyConfig.from_dict({}))
    if kind == "stacked":
        from empathy_utils.judge_validation.stacked import FEATURES, StackedJudge

        lik = J.LikelihoodJudge(model, batch_size=batch_size)
        return StackedJudge(lik, np.ones(len(FEATURES)), np.ones(len(FEATURES)), 0)
    if kind == "stacked-judges":
        from empathy_utils.judge_validation.stacked import STACKABLE, TEXT_FEATURES, StackedJudge

        width = len(STACKABLE) + len(TEXT_FEATURES)
        return StackedJudge({k: build(k, model, batch_size) for k in STACKABLE}, np.ones(width), np.ones(width), 0)
    if kind == "pairwise-llm":
        from empathy_utils.backends import LocalBackend

        return J.PairwiseLLMJudge(LocalBackend(model, batch_size=batch_size, progress=False))
    if kind == "embedding-head":
        from empathy_utils.judge_validation import EmbeddingStore, load_encoder

        store = EmbeddingStore(Path(tempfile.mkdtemp()) / "emb.sqlite")  # cold: nothing embedded yet
        return J.EmbeddingHeadJudge(np.random.default_rng(0).normal(size=384), "reply", load_encoder(), 0, cache=store)
    if kind == "writer-style":
        from empathy_utils.judge_validation import EmbeddingStore, load_encoder

        store = EmbeddingStore(Path(tempfile.mkdtemp()) / "emb.sqlite")  # cold: nothing embedded yet
        rng = np.random.default_rng(0)
        return J.WriterStyleJudge(rng.normal(size=(5, 384)), np.zeros(5), ["human", "gpt4", "llama2", "gemini", "mixtral"],
                                  rng.uniform(1, 3, size=5), load_encoder(), 0, cache=store)
    if kind == "cross-encoder":
        from sentence_transformers.cross_encoder import CrossEncoder

        from empathy_utils.judge_validation.learned import cross_encoder_base

        return J.CrossEncoderJudge(CrossEncoder(cross_encoder_base(), num_labels=1, max_length=256, device="cpu"), 0)
    if kind == "reward-model":
        model_, tok = J.load_reward_model(model)
        return J.RewardModelJudge(model, "untrained", 0, batch_size=batch_size, model=model_, tokenizer=tok)
    raise SystemExit(f"unknown judge {kind!r}")


def scoring_rate(judge, seconds: float) -> dict:
    """The likelihood judge's tokens per second (prompt and reply tokens of every distinct row it
    scored, padding excluded), beside the forward-pass limit of this CPU measured just after."""
    from limits import matmul_gflops, model_parameters, tokens_per_second_limit

    tokens = sum(len(prompt) + len(answer) for prompt, answer in judge.memo)
    gflops = matmul_gflops()
    limit = tokens_per_second_limit(gflops, model_parameters(judge.spec), 2)
    rate = tokens / seconds
    print(f"  {'':<15} {tokens} tokens scored, {rate:.0f} tok/s: {rate / limit:.0%} of the forward-pass limit "
          f"({limit:.0f} tok/s at {gflops:.0f} GFLOP/s fp32 matmul, measured now)")
    return {"tokens": tokens, "tokens_per_second": round(rate, 1), "share_of_limit": round(rate / limit, 3),
            "matmul_gflops": round(gflops, 1)}


def compare_prefix_sharing(items: list[dict], repeats: int = 2) -> None:
    """The packaged judge (likelihood PMI: every row of its speaker-free pass begins alike, and the chat
    template's system turn begins every conditional row) scoring the pairs' distinct replies with the
    shared prefix run once per batch and once per row: plain, shared, shared, plain, ... each from an
    empty memo; seconds, ratio and the largest change of a score."""
    from empathy_utils.judges import scoring

    judge, original = build("packaged", "", 16), scoring.mean_log_probabilities
    seconds, scores = {False: [], True: []}, {}
    try:
        for share in [i % 2 != (i // 2) % 2 for i in range(2 * repeats)]:
            scoring.mean_log_probabilities = lambda *a, share=share, **k: original(*a, share_prefix=share, **k)
            judge.memo.clear()
            start = time.time()
            records = judge.judge(items)
            seconds[share].append(time.time() - start)
            scores[share] = np.array([r["score_a"] for r in records] + [r["score_b"] for r in records])
            print(f"  prefix {'once per batch' if share else 'once per row  '}: {seconds[share][-1]:.1f} s", flush=True)
    finally:
        scoring.mean_log_probabilities = original
    ratio = sum(seconds[False]) / sum(seconds[True])
    change = float(np.abs(scores[True] - scores[False]).max())
    print(f"  {judge.name}\n  {ratio:.2f}x faster with the shared prefix run once; largest change of a score {change:.1e}")
    print(json.dumps({"per_row_seconds": [round(x, 2) for x in seconds[False]],
                      "shared_seconds": [round(x, 2) for x in seconds[True]], "speed_up": round(ratio, 2),
                      "largest_score_change": change}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--judges", nargs="+",
                        default=["longer", "likelihood", "packaged", "stacked", "embedding-head", "writer-style", "cross-encoder",
                                 "stacked-judges", "reward-model", "pairwise-llm"])
    parser.add_argument("--prefix-sharing", action="store_true",
                        help="instead: the packaged (data-free) judge's scoring with the prefix its rows share run "
                             "once per batch and once per row, alternating, in one process")
    args = parser.parse_args()
    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    if args.prefix_sharing:
        return compare_prefix_sharing(make_pairs(args.pairs))
    items = make_pairs(args.pairs)
    distinct = len({(it["context"], it["utterance"], it[s]) for it in items for s in ("response_a", "response_b")})
    print(f"{args.pairs} pairs ({distinct} distinct replies) from the embedded corpus; model {args.model}; "
          f"batch {args.batch_size}; torch threads {torch.get_num_threads()}")
    results = {}
    for kind in args.judges:
        start = time.time()
        judge = build(kind, args.model, args.batch_size)
        load = time.time() - start
        start = time.time()
        judge.judge(items)
        seconds = time.time() - start
        results[kind] = {"load_seconds": round(load, 1), "judge_seconds": round(seconds, 2),
                         "pairs_per_second": round(args.pairs / seconds, 2)}
        print(f"  {kind:<15} {args.pairs / seconds:8.2f} pairs/s   ({seconds:.1f} s judging, {load:.1f} s loading)")
        if kind == "likelihood":
            results[kind].update(scoring_rate(judge, seconds))
        del judge
    print(json.dumps(results))


if __name__ == "__main__":
    main()
