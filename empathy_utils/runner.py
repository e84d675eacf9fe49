"""The runner: params file -> validated config -> papermill executes each stage notebook into the
run folder -> manifest. It schedules nothing itself; heavy lifting happens in the notebooks' calls
(and, for users with GPUs, in ``accelerate launch`` or an inference server they point the params at).

A stage is skipped when it already finished with the same parameters (the hash of the params
sections it depends on, cumulatively); ``force`` re-runs it. After a stage re-runs, every later stage
in the same invocation re-runs too.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from .allocator import keep_freed_memory
from .artifacts import RunPaths, new_manifest, now, read_manifest, write_manifest
from .config import STAGES, StudyConfig
from .errors import StudyError
from .paths import hub_offline_by_default, notebooks_dir, repo_root

STAGE_NOTEBOOKS = {
    "datasets": "01_datasets.ipynb",
    "sft": "02_sft.ipynb",
    "dpo": "03_dpo.ipynb",
    "generate": "04_generate.ipynb",
    "validate-judges": "05_validate_judges.ipynb",
    "judge": "06_judge.ipynb",
    "variants": "07_variants.ipynb",
    "pride": "08_pride.ipynb",
    "dbt": "09_dbt.ipynb",
}
# The params each stage reads (a stage also depends on everything its predecessors read).
STAGE_SECTIONS = {
    "datasets": ["data", "teacher", "dataset"],
    "sft": ["model", "lora", "sft"],
    "dpo": ["dpo"],
    "generate": ["generation"],
    "validate-judges": ["judge_validation"],
    "judge": ["judge"],
    "variants": ["variants"],
    "pride": ["pride"],
    "dbt": ["dbt"],
}


def stage_hashes(cfg: StudyConfig) -> dict[str, str]:
    """Each stage's fingerprint: the params it and its predecessors read and, on hardware with bf16 units,
    that fact: ``model.dtype: auto`` and the training sections' ``bf16: auto`` choose bf16 there, whose
    replies and adapters differ from fp32's (hardware without them keeps the fingerprints it always had)."""
    from .models import bf16_units_here

    params = cfg.to_dict()
    seen: dict = {"seed": cfg.run.seed}
    if bf16_units_here():
        seen["bf16_units"] = True
    out = {}
    for stage in STAGES:
        for section in STAGE_SECTIONS.get(stage, [stage]):
            seen[section] = params.get(section)
        out[stage] = hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()[:16]
    return out


def preflight(cfg: StudyConfig) -> dict[str, str]:
    """Check what can be checked before anything runs; return checksums of the data files read."""
    from .data import corpus_path, lvh_csv_path, sha256_file

    if cfg.data.source == "llms-vs-humans":
        path = lvh_csv_path(cfg.data.data_dir or None)
        from .data import load_llms_vs_humans

        load_llms_vs_humans(path=path)  # validates every row now rather than in the middle of a run
    elif cfg.data.source == "embedded-corpus":
        path = corpus_path()
    else:  # a registered source (empathy_utils.sources): its loader checks its rows and names its file
        from .data import load_dialogues

        path = Path(load_dialogues(cfg.data.source, cfg.data.data_dir or None).attrs["source_file"])
    files = {str(path): sha256_file(path)}
    if "pride" in cfg.run.stages and cfg.pride.source == "esconv":
        from .esconv import esconv_path, load_esconv

        for split in ("train", "test"):  # PRIDE on ESConv: validate now, record checksums
            esconv = esconv_path(split, cfg.data.data_dir or None)
            load_esconv(split, path=esconv)
            files[str(esconv)] = sha256_file(esconv)
    if "dbt" in cfg.run.stages and cfg.dbt.source == "esconv":
        from .esconv import esconv_path, load_esconv

        for split in ("train", "valid", "test"):  # DBT on ESConv: validate now, record checksums
            esconv = esconv_path(split, cfg.data.data_dir or None)
            load_esconv(split, path=esconv)
            files[str(esconv)] = sha256_file(esconv)
    return files


def resolve_stages(cfg: StudyConfig, stages: list[str] | None) -> list[str]:
    """The stages to execute now, in order: ``stages`` if given, else all of the run's stages."""
    if not stages:
        return [s for s in STAGES if s in cfg.run.stages]
    unknown = [s for s in stages if s not in cfg.run.stages]
    if unknown:
        raise StudyError(f"stage(s) {unknown} are not part of this run (run.stages = {cfg.run.stages})")
    return [s for s in STAGES if s in stages]


def run_folder(cfg: StudyConfig, run_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(the run folder as given, relative to the repository when it can be; the folder itself)."""
    given = Path(run_dir) if run_dir else cfg.run_dir
    return given, given if given.is_absolute() else repo_root() / given


def prepare_run(cfg: StudyConfig, run_dir: Path, params_source: str, data_files: dict[str, str] | None = None) -> dict:
    """Write the run's ``params.yaml`` and ``manifest.json`` (stage records kept) unless they already
    describe exactly these parameters; returns the manifest. Shared by the runner and by a stage
    notebook started on its own (papermill, Jupyter), so both leave the same run folder behind."""
    paths = RunPaths(run_dir)
    previous = read_manifest(run_dir)
    if previous.get("params_hash") == cfg.params_hash() and paths.params.exists() and data_files is None:
        return previous
    run_dir.mkdir(parents=True, exist_ok=True)
    paths.params.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    manifest = new_manifest(cfg, params_source, preflight(cfg) if data_files is None else data_files, repo_root())
    manifest["stages"] = previous.get("stages", {})
    if previous.get("created"):
        manifest["created"] = previous["created"]
    manifest["updated"] = now()
    write_manifest(run_dir, manifest)
    return manifest


def _notebook_record_path(run_dir: Path, stage: str) -> str:
    out_nb = RunPaths(run_dir).notebooks / STAGE_NOTEBOOKS[stage]
    repo = repo_root()
    return str(out_nb.relative_to(repo) if out_nb.is_relative_to(repo) else out_nb)


def begin_stage(cfg: StudyConfig, stage: str, run_dir: Path, params_source: str) -> dict:
    """Record in the manifest that ``stage`` started with these parameters (called by the notebook)."""
    if stage not in STAGE_NOTEBOOKS:
        raise StudyError(f"unknown stage {stage!r}; the stages are {list(STAGES)}")
    if stage not in cfg.run.stages:
        raise StudyError(f"stage {stage!r} is not part of run {cfg.run.name!r} (run.stages = {cfg.run.stages}); "
                         f"add it to run.stages (e.g. in overrides) to run this notebook")
    manifest = prepare_run(cfg, run_dir, params_source)
    manifest["stages"][stage] = {"status": "running", "params_hash": stage_hashes(cfg)[stage], "started": now(),
                                 "notebook": _notebook_record_path(run_dir, stage)}
    write_manifest(run_dir, manifest)
    return manifest["stages"][stage]


def finish_stage(stage: str, run_dir: Path) -> dict:
    """Record that ``stage`` finished (the last cell of its notebook); returns its manifest record."""
    manifest = read_manifest(run_dir)
    record = manifest.get("stages", {}).get(stage)
    if not record or record.get("status") != "running":
        raise StudyError(f"{run_dir}: stage {stage!r} was not started in this run folder (its setup cell records it)")
    finished = now()
    started = _dt.datetime.fromisoformat(record["started"])
    seconds = (_dt.datetime.fromisoformat(finished) - started).total_seconds()
    record.update(status="ok", finished=finished, seconds=round(max(seconds, 0.1), 1))
    write_manifest(run_dir, manifest)
    return record


def notebook_parameters(run_dir_rel: Path) -> dict:
    """What the runner injects into a stage notebook: the run's validated params file, no overrides
    (they are in it already) and the run folder. A person running papermill by hand passes the same
    three names, with a profile and overrides of their choice."""
    return {"profile": str(run_dir_rel / "params.yaml"), "overrides": [], "run_dir": str(run_dir_rel)}


def execute_notebook(source: Path, out: Path, parameters: dict) -> None:
    """Execute one notebook with papermill from the repository root (raises its PapermillExecutionError).
    On Linux and macOS the kernel and the runner talk over sockets in a private temporary folder (zmq's
    ipc transport) rather than plain TCP on 127.0.0.1, which any user of a shared machine, a class's
    server say, could listen to (ipykernel warns of it at every start); elsewhere, or where the temporary
    folder's path is too long for a socket's name (about 100 bytes), TCP, Jupyter's default."""
    import papermill as pm
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="empathy-kernel-") as sockets:
        ip = str(Path(sockets) / "kernel")
        transport = ({"config": Config({"KernelManager": {"transport": "ipc", "ip": ip}})}
                     if os.name == "posix" and len(ip.encode()) < 90 else {})
        pm.execute_notebook(str(source), str(out), parameters=parameters, kernel_name="python3",
                            cwd=str(repo_root()), progress_bar=False, request_save_on_cell_execute=False,
                            **transport)


def run_study(cfg: StudyConfig, params_source: str = "params", stages: list[str] | None = None,
              force: bool = False, log=print) -> Path:
    """Execute the stages of a run; returns the run folder. Raises StudyError naming the failed stage."""
    import papermill as pm

    hub_offline_by_default()  # the kernels inherit it
    keep_freed_memory()  # and glibc's allocator settings (empathy_utils.allocator)
    run_dir_rel, run_dir = run_folder(cfg)
    paths = RunPaths(run_dir)
    chosen = resolve_stages(cfg, stages)
    prepare_run(cfg, run_dir, params_source, data_files=preflight(cfg))

    hashes = stage_hashes(cfg)
    rerun_rest = force
    paths.notebooks.mkdir(parents=True, exist_ok=True)
    for stage in chosen:
        record = read_manifest(run_dir)["stages"].get(stage, {})
        out_nb = paths.notebooks / STAGE_NOTEBOOKS[stage]
        if (not rerun_rest and record.get("status") == "ok" and record.get("params_hash") == hashes[stage]
                and out_nb.exists()):
            log(f"[{cfg.run.name}] {stage}: up to date (params unchanged), skipped")
            continue
        rerun_rest = True
        log(f"[{cfg.run.name}] {stage}: running {STAGE_NOTEBOOKS[stage]} ...")
        start = time.time()
        try:
            execute_notebook(notebooks_dir() / STAGE_NOTEBOOKS[stage], out_nb, notebook_parameters(run_dir_rel))
        except pm.PapermillExecutionError as exc:
            manifest = read_manifest(run_dir)
            manifest["stages"].setdefault(stage, {"params_hash": hashes[stage]}).update(
                status="failed", seconds=round(time.time() - start, 1), error=f"{exc.ename}: {exc.evalue}")
            write_manifest(run_dir, manifest)
            raise StudyError(
                f"stage {stage} failed: {exc.ename}: {exc.evalue}\n"
                f"  the executed notebook, with the full traceback: {out_nb}\n"
                f"  earlier stages are kept; fix the problem and re-run (finished stages are skipped)"
            ) from None
        record = read_manifest(run_dir)["stages"].get(stage, {})
        if record.get("status") != "ok" or record.get("params_hash") != hashes[stage]:
            raise StudyError(f"stage {stage}: {STAGE_NOTEBOOKS[stage]} ran but did not record its end in "
                             f"{paths.manifest} (its setup and last cells call start_stage / finish_stage)")
        log(f"[{cfg.run.name}] {stage}: done in {record['seconds']:.0f} s")
    return run_dir


# ------------------------------------------------------------------------------------------ book
BOOK_RUN_FOLDER = Path("book") / "run"


# Prose chapters that cite a stage's notebook, by the stage they need.
CHAPTER_NEEDS = {"book/results": "judge", "book/judges": "validate-judges", "book/pride": "pride", "book/dbt": "dbt"}


def build_book(run_dirs, root=None, strict: bool = True, log=print) -> Path:
    """Render the book from one run folder or a list of them (empathy_utils.book does the work)."""
    from .book import build_book as _build_book

    return _build_book(run_dirs, root=root, strict=strict, log=log)
