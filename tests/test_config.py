"""Params files: every profile validates; bad input is reported completely, with paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from empathy_utils.config import StudyConfig, apply_overrides, load_config, parse_override, profile_path
from empathy_utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PROFILES = sorted((REPO / "notebooks" / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_loads_into_the_pinned_dataclasses(path):
    cfg = load_config(path)
    # A profile that extends another shares its run folder (and adds stages to it), unless it names
    # its own run (it changes what the parent's stages read, e.g. the data): then its own name.
    raw = yaml.safe_load(path.read_text())
    parent, own_name = raw.get("extends"), (raw.get("run") or {}).get("name")
    assert cfg.run.name == (load_config(profile_path(parent)).run.name if parent and not own_name else path.stem)
    # Round trip: the resolved dict validates again and hashes the same.
    again = StudyConfig.from_dict(cfg.to_dict())
    assert again.params_hash() == cfg.params_hash()


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_no_profile_falls_back_to_the_judge_that_ties_everything(path):
    """The 135 M pairwise judge's two orders disagree on nearly every pair (every verdict a tie): it may
    be validated, never used unvalidated as a profile's fallback (the DBT profiles once did)."""
    cfg = load_config(path)
    if cfg.judge.kind == "auto":
        assert cfg.judge.fallback != "pairwise-llm"


def test_the_grid_profile_is_llms_vs_humans_plus_its_variants():
    """Extending a profile changes only what the child sets: the grid reuses every finished stage of
    the llms-vs-humans run (same stage hashes) and adds the variants stage."""
    from empathy_utils.runner import stage_hashes

    spine, grid = load_config(profile_path("llms-vs-humans")), load_config(profile_path("llms-vs-humans-grid"))
    assert grid.run_dir == spine.run_dir
    assert grid.run.stages == [*spine.run.stages, "variants"] and len(grid.variants.runs) == 5
    spine_hashes, grid_hashes = stage_hashes(spine), stage_hashes(grid)
    assert all(grid_hashes[s] == spine_hashes[s] for s in spine.run.stages)
    assert grid_hashes["variants"] != spine_hashes["variants"]


def test_extends_merges_sections_and_refuses_cycles(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump({"run": {"name": "p", "seed": 7}, "sft": {"epochs": 2}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": "parent", "sft": {"learning_rate": 1e-3}}))
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.run.name, cfg.run.seed, cfg.sft.epochs, cfg.sft.learning_rate) == ("p", 7, 2, 1e-3)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"extends": "b"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"extends": "a.yaml"}))
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_config(tmp_path / "a.yaml")


def test_profiles_cover_the_three_required_runs():
    assert {"tiny", "default", "llms-vs-humans"} <= {p.stem for p in PROFILES}


def test_all_errors_of_a_file_are_reported_together(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "sft": {"learnig_rate": 1e-4, "epochs": "three"},
        "dataset": {"method": "M9"},
        "judge": {"comparisons": [["dpo", "dpo"]]},
        "nonsense": {},
    }))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert str(bad) in msg
    assert "sft.learnig_rate: unknown key; did you mean 'learning_rate'?" in msg
    assert "sft.epochs: expected a number" in msg
    assert "dataset.method: 'M9' is not one of" in msg
    assert "nonsense: unknown key" in msg
    assert re.search(r"(\d+) problem\(s\)", msg).group(1) == "4"


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="judge.comparisons\\[0\\]: 'dpo' is not generated"):
        StudyConfig.from_dict({"generation": {"students": ["base", "sft"]}})
    with pytest.raises(ConfigError, match="teacher.base_url: required"):
        StudyConfig.from_dict({"teacher": {"backend": "openai"}})
    with pytest.raises(ConfigError, match="only improve-initial"):
        StudyConfig.from_dict({"data": {"source": "embedded-corpus"}, "dataset": {"method": "direct"}})


def test_overrides_are_typed_and_validated():
    assert parse_override("sft.learning_rate=5e-5") == (["sft", "learning_rate"], 5e-5)
    assert parse_override("generation.students=[base, sft]") == (["generation", "students"], ["base", "sft"])
    raw = apply_overrides({"sft": {"epochs": 3}}, ["sft.epochs=1", "dpo.beta=0.2"])
    assert raw == {"sft": {"epochs": 1}, "dpo": {"beta": 0.2}}
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("epochs")
    cfg = load_config(profile_path("tiny"), ["sft.max_steps=3"])
    assert cfg.sft.max_steps == 3


def test_changing_one_parameter_changes_the_hash():
    base = StudyConfig.from_dict({})
    assert StudyConfig.from_dict({"dpo": {"beta": 0.2}}).params_hash() != base.params_hash()


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known profiles: .*default"):
        profile_path("no-such-profile")


def test_environment_yml_pins_match_pyproject():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = list(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        pins += [r for r in reqs if not r.startswith("empathy-utils")]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda_pins = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    norm = lambda s: s.lower().replace("_", "-")  # noqa: E731
    assert sorted(map(norm, pins)) == sorted(map(norm, conda_pins))
