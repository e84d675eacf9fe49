"""Memory a process keeps while it runs stage after stage, as the variants notebook's kernel does.

    python benchmarks/stage_memory.py [--profile study --variants 2 --out /tmp/stage-memory]
    python benchmarks/stage_memory.py --no-release ...   # the old path: nothing freed between stages
    python benchmarks/stage_memory.py --only m3-sequential --stages datasets   # one variant, one stage
    python benchmarks/stage_memory.py --choice [--rows 32 --batch-size 16]

Builds the first ``--variants`` variants of the profile's grid in one process (datasets, SFT, DPO,
replies), from an empty response cache in ``--out``, and prints the resident memory after every
stage and the process's peak. ``--no-release`` turns :func:`empathy_utils.models.release_memory`
into a no-op, which is what every stage did before it existed. Run the two in turn, each in its own
process.

``--choice`` measures the pairwise judge's scoring instead (``LocalBackend.choice_logprobs``): peak
memory and time with only the last position's logits computed, then (in a second process) with every
position's, which is what it computed before; the log-probabilities must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_gb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1e6 for line in status if line.startswith("VmRSS"))


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def stages(args) -> None:
    os.environ["EMPATHY_CACHE_DIR"] = str(args.out / "cache")  # an empty response cache: the teacher runs
    import empathy_utils.models as models
    import empathy_utils.stages as study_stages
    from empathy_utils.config import load_config, profile_path, variant_config
    from empathy_utils.training import train_dpo, train_sft

    if args.no_release:
        models.release_memory = study_stages.release_memory = lambda: None
    cfg = load_config(profile_path(args.profile))
    print(f"{'variant':22s} {'stage':18s} {'RSS GB':>7s} {'peak GB':>8s}", flush=True)
    chosen = [v for v in cfg.variants.runs if v["name"] in args.only] if args.only else cfg.variants.runs[: args.variants]
    named = {"datasets": study_stages.build_datasets, "sft": train_sft, "dpo": train_dpo,
             "generate": study_stages.generate_replies}
    for variant in chosen:
        vcfg = variant_config(cfg, variant)
        vcfg.generation.students = ["sft", "dpo"]
        if args.teacher_batch_size:
            vcfg.teacher.batch_size = args.teacher_batch_size
        root = args.out / ("old" if args.no_release else "new") / variant["name"]
        root.mkdir(parents=True, exist_ok=True)
        for stage in (named[s] for s in args.stages):
            stage(vcfg, root)
            print(f"{variant['name']:22s} {stage.__name__:18s} {rss_gb():7.2f} {peak_gb():8.2f}", flush=True)


def choice(args) -> None:
    if args.mode is None:  # run each path in its own process, so that each peak is its own
        results = {}
        for mode in ("last", "all"):
            out = subprocess.run([sys.executable, __file__, "--choice", "--mode", mode, "--rows", str(args.rows),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"logits of {mode:4s} positions: peak RSS {results[mode]['peak_gb']:.2f} GB "
                  f"(model loaded: {results[mode]['loaded_gb']:.2f}), {results[mode]['seconds']:.1f} s")
        diff = max(abs(a[k] - b[k]) for a, b in zip(results["last"]["logprobs"], results["all"]["logprobs"]) for k in a)
        print(f"time ratio all/last {results['all']['seconds'] / results['last']['seconds']:.2f}x; "
              f"largest log-probability difference {diff:.2e}")
        return
    from empathy_utils.backends import LocalBackend

    backend = LocalBackend("embedded:smollm2-135m-instruct", batch_size=args.batch_size, progress=False)
    if args.mode == "all":
        forward = backend.model.forward

        def every_position(*a, **k):
            k.pop("logits_to_keep", None)
            return forward(*a, **k)

        backend.model.forward = every_position
    words = ("I lost my job today and I do not know how to tell my family about it because they count on me "
             "and I feel like I have let everyone down").split()
    convs = [[{"role": "system", "content": "You judge which reply is more empathetic. Answer 1 or 2."},
              {"role": "user", "content": " ".join(words[(i + j) % len(words)] for j in range(400 + 7 * i))
               + " Which reply is more empathetic, 1 or 2?"}] for i in range(args.rows)]
    loaded = peak_gb()
    start = time.time()
    logprobs = backend.choice_logprobs(convs, ["1", "2"])
    print(json.dumps({"peak_gb": peak_gb(), "loaded_gb": loaded, "seconds": time.time() - start, "logprobs": logprobs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="study")
    parser.add_argument("--variants", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/stage-memory"))
    parser.add_argument("--only", nargs="+", default=None, help="these variants (by name) instead of the first ones")
    parser.add_argument("--stages", nargs="+", default=["datasets", "sft", "dpo", "generate"],
                        choices=["datasets", "sft", "dpo", "generate"])
    parser.add_argument("--teacher-batch-size", type=int, default=0, help="the local teacher's batch (0: the profile's)")
    parser.add_argument("--no-release", action="store_true")
    parser.add_argument("--choice", action="store_true")
    parser.add_argument("--mode", choices=["last", "all"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    from empathy_utils.allocator import keep_freed_memory

    keep_freed_memory()  # glibc's settings of the study's kernels (EMPATHY_MALLOC=glibc: its own)
    choice(args) if args.choice else stages(args)


if __name__ == "__main__":
    main()
