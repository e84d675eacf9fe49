"""Teacher throughput against a local OpenAI-compatible server: sequential vs concurrent requests.

    python benchmarks/teacher_throughput.py [--model embedded:smollm2-135m-instruct] [--prompts 16]

Starts ``transformers serve`` on 127.0.0.1 for the model (once without and once with continuous
batching), sends the same improvement prompts (the all-three strategy on the embedded corpus's
reference replies) one at a time and with bounded concurrency, and prints requests and generated
tokens per second. No cache: every request reaches the server.
"""

from __future__ import annotations

import argparse
import json
import time

from empathy_utils.backends import OpenAIBackend, Sampling
from empathy_utils.data import load_embedded_corpus
from empathy_utils.prompts import improvement_prompt
from empathy_utils.serving import local_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    prompt = improvement_prompt("all-three")
    rows = load_embedded_corpus().head(args.prompts)
    convs = [prompt.messages(context=r["situation"], utterance=r["utterance"], response=r["reference_reply"])
             for _, r in rows.iterrows()]
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    results = {}
    for cb in (False, True):
        with local_server(args.model, continuous_batching=cb) as (url, name):
            OpenAIBackend(url, name, progress=False).chat(convs[:1], Sampling(max_new_tokens=4))  # warm-up
            for conc in (1, args.concurrency):
                api = OpenAIBackend(url, name, max_concurrency=conc, progress=False)
                start = time.time()
                out = api.chat(convs, sampling)
                seconds = time.time() - start
                tokens = sum(c.completion_tokens for c in out)
                key = f"{'continuous batching' if cb else 'plain server'}, concurrency {conc}"
                results[key] = {"seconds": round(seconds, 1), "requests_per_second": round(len(out) / seconds, 2),
                                "tokens_per_second": round(tokens / seconds, 1)}
                print(f"  {key:<40}: {len(out) / seconds:5.2f} req/s, {tokens / seconds:6.1f} tok/s ({seconds:.1f} s)")
    for cb in ("plain server", "continuous batching"):
        one, many = results[f"{cb}, concurrency 1"], results[f"{cb}, concurrency {args.concurrency}"]
        print(f"  {cb}: concurrent / sequential = {many['requests_per_second'] / one['requests_per_second']:.1f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
