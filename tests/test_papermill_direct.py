"""Stage notebooks run with papermill directly, exactly as the runner runs them: the same loader
(profile + overrides), the same adapter fingerprint, the same manifest entries; an unknown parameter
is an error, not papermill's log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest

from empathy_utils.artifacts import read_manifest
from empathy_utils.config import load_config, profile_path
from empathy_utils.errors import ConfigError
from empathy_utils.notebook import injected_names, parse_overrides, start_stage
from empathy_utils.runner import STAGE_NOTEBOOKS, run_study, stage_hashes

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
# One change through the overrides, so the test proves they reach the stage.
OVERRIDES = ["sft.max_steps=1"]


def _papermill_api(stage: str, out: Path, **parameters):
    pm.execute_notebook(str(NOTEBOOKS / STAGE_NOTEBOOKS[stage]), str(out), parameters=parameters,
                        kernel_name="python3", cwd=str(REPO), progress_bar=False)


def _sft_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "models" / "sft" / "train_log.json").read_text())["summary"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_spec):
    """The tiny profile's first two stages, once by the runner and once by papermill by hand."""
    tmp = tmp_path_factory.mktemp("papermill-direct")
    by_runner = load_config(profile_path("tiny"), OVERRIDES + [f"run.output_root={tmp / 'runner'}"])
    runner_dir = run_study(by_runner, params_source="tiny", stages=["datasets", "sft"], log=lambda m: None)

    direct_root = tmp / "direct"
    overrides = OVERRIDES + [f"run.output_root={direct_root}"]
    direct_dir = direct_root / "tiny"
    (direct_dir / "notebooks").mkdir(parents=True)
    # Stage 1 through papermill's Python API, stage 2 through its command line (-p passes text).
    _papermill_api("datasets", direct_dir / "notebooks" / STAGE_NOTEBOOKS["datasets"], profile="tiny",
                   overrides=overrides)
    cli = [sys.executable, "-m", "papermill", str(NOTEBOOKS / STAGE_NOTEBOOKS["sft"]),
           str(direct_dir / "notebooks" / STAGE_NOTEBOOKS["sft"]), "-p", "profile", "tiny",
           "-p", "overrides", json.dumps(overrides), "--cwd", str(REPO), "--no-progress-bar"]
    proc = subprocess.run(cli, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    direct = load_config(profile_path("tiny"), overrides)
    return by_runner, runner_dir, direct, direct_dir


@pytest.mark.slow
def test_papermill_by_hand_trains_the_same_adapter_as_the_runner(two_runs):
    _, runner_dir, _, direct_dir = two_runs
    runner_sft, direct_sft = _sft_summary(runner_dir), _sft_summary(direct_dir)
    assert runner_sft["fingerprint"] == direct_sft["fingerprint"], "same settings and data, same adapter"
    assert direct_sft["steps"] == 1, "the override sft.max_steps=1 reached the notebook (tiny says 2)"
    runner_card = json.loads((runner_dir / "data" / "card.json").read_text())
    direct_card = json.loads((direct_dir / "data" / "card.json").read_text())
    assert runner_card["counts"] == direct_card["counts"], "same dataset"


@pytest.mark.slow
def test_papermill_by_hand_writes_the_runners_manifest_entries(two_runs):
    by_runner, runner_dir, direct, direct_dir = two_runs
    ran, made = read_manifest(runner_dir), read_manifest(direct_dir)
    for stage in ("datasets", "sft"):
        a, b = ran["stages"][stage], made["stages"][stage]
        assert a["status"] == "ok", f"runner: {stage} {a}"
        assert b["status"] == "ok", f"papermill: {stage} {b}"
        assert a["params_hash"] == b["params_hash"] == stage_hashes(by_runner)[stage], stage
        assert Path(a["notebook"]).name == Path(b["notebook"]).name == STAGE_NOTEBOOKS[stage]
        assert b["seconds"] > 0, "the notebook records its own wall time"
    # The params differ only in where the run folder lies.
    assert ran["params"]["run"].pop("output_root") != made["params"]["run"].pop("output_root")
    assert ran["params"] == made["params"]
    assert made["params_hash"] == direct.params_hash()
    assert (direct_dir / "params.yaml").exists(), "the validated params are written beside the manifest"


@pytest.mark.slow
def test_runner_takes_over_a_run_made_notebook_by_notebook(two_runs):
    *_, direct, direct_dir = two_runs
    said = []
    run_study(direct, params_source="tiny", stages=["datasets", "sft"], log=said.append)
    assert said == ["[tiny] datasets: up to date (params unchanged), skipped",
                    "[tiny] sft: up to date (params unchanged), skipped"], said


@pytest.mark.slow
def test_unknown_papermill_parameter_is_an_error_naming_the_nearest(tmp_path, tiny_spec):
    with pytest.raises(pm.PapermillExecutionError) as caught:
        _papermill_api("datasets", tmp_path / "out.ipynb", profil="tiny", run_dir=str(tmp_path / "run"))
    assert caught.value.ename == "ConfigError"
    assert "'profil'" in caught.value.evalue and "did you mean 'profile'" in caught.value.evalue
    assert not (tmp_path / "run" / "manifest.json").exists(), "nothing runs with a misspelt parameter"


# ----------------------------------------------------------------- the setup cell without a kernel
def test_injected_names_reads_only_papermills_cell():
    history = ["", "profile = 'default'\noverrides = []\nrun_dir = ''",
               "# Parameters\nprofile = \"tiny\"\nepochs = 2\n", "x = 1"]
    assert injected_names({"In": history}) == ["profile", "epochs"]
    with pytest.raises(ConfigError, match=r"'epochs'.*overrides"):
        start_stage("datasets", {"In": history, "profile": "tiny"})


def test_unknown_override_key_names_the_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"sft\.epochz: unknown key; did you mean 'epochs'"):
        start_stage("sft", {"profile": "tiny", "overrides": ["sft.epochz=2"], "run_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"sfft: unknown key; did you mean 'sft'"):
        start_stage("sft", {"profile": "tiny", "overrides": ["sfft.epochs=2"], "run_dir": str(tmp_path)})


def test_overrides_from_papermills_command_line_are_read():
    assert parse_overrides('["sft.epochs=2", "lora.r=4"]') == ["sft.epochs=2", "lora.r=4"]
    assert parse_overrides("sft.epochs=2") == ["sft.epochs=2"]
    assert parse_overrides("") == []
    with pytest.raises(ConfigError, match="list of"):
        parse_overrides([2])


def test_a_notebook_without_parameters_runs_the_default_profile(tmp_path):
    cfg, run_dir = start_stage("datasets", {"run_dir": str(tmp_path / "run")})
    assert cfg.params_hash() == load_config(profile_path("default")).params_hash()
    assert run_dir == str(tmp_path / "run")
    record = read_manifest(tmp_path / "run")["stages"]["datasets"]
    assert record["status"] == "running" and record["params_hash"] == stage_hashes(cfg)["datasets"]


def test_a_stage_outside_the_run_is_refused(tmp_path):
    from empathy_utils.errors import StudyError

    with pytest.raises(StudyError, match="not part of run 'default'"):
        start_stage("pride", {"run_dir": str(tmp_path)})


@pytest.mark.skipif(os.name != "posix", reason="zmq's ipc transport: Linux and macOS")
def test_the_runner_talks_to_its_kernels_over_private_sockets(tmp_path, capfd):
    """Plain TCP on 127.0.0.1 can be read by any user of a shared machine; the runner's kernels use
    sockets in a temporary folder of their own, removed when the notebook ends."""
    import nbformat

    from empathy_utils.runner import execute_notebook

    source, out = tmp_path / "probe.ipynb", tmp_path / "probe-out.ipynb"
    probe = ("from ipykernel.kernelapp import IPKernelApp\n"
             "app = IPKernelApp.instance()\n"
             "print(app.transport, app.ip)")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(probe)]), source)
    execute_notebook(source, out, {})

    printed = nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"].split()
    assert printed[0] == "ipc"
    socket_folder = Path(printed[1]).parent
    assert socket_folder.name.startswith("empathy-kernel-") and not socket_folder.exists()
    assert "without encryption" not in capfd.readouterr().err
