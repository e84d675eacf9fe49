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
    assert cfg.run.name == path.stem
    # Round trip: the resolved dict validates again and hashes the same.
    again = StudyConfig.from_dict(cfg.to_dict())
    assert again.params_hash() == cfg.params_hash()


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
