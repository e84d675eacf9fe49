"""The parameters reference (book/parameters.md) is generated from the config dataclasses: every
field has help, every field is on the page, and the committed page is what the code generates."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from empathy_utils.config import StudyConfig
from empathy_utils.errors import ConfigError
from empathy_utils.params_reference import PAGE, describe, parameters, parameters_markdown

REPO = Path(__file__).resolve().parents[1]


def _all_fields():
    for top in dataclasses.fields(StudyConfig):
        section = top.type if dataclasses.is_dataclass(top.type) else None
        yield top.name, top
        if section is None:
            section = StudyConfig.__dataclass_fields__[top.name].default_factory
        if dataclasses.is_dataclass(section):
            for f in dataclasses.fields(section):
                yield f"{top.name}.{f.name}", f


def test_every_field_has_help():
    keys = list(_all_fields())
    assert len(keys) > 140, f"only {len(keys)} fields found"
    missing = [key for key, f in keys if len(f.metadata.get("help", "").strip()) < 10]
    assert not missing, f"fields without help (field(metadata={{'help': ...}})): {missing}"


def test_every_field_is_on_the_page():
    page = (REPO / PAGE).read_text(encoding="utf-8")
    absent = [key for key, _ in _all_fields() if "." in key and f"\n`{key}` · " not in page]
    assert not absent, f"missing from {PAGE}: {absent}"
    assert {p.key for p in parameters()} >= {k for k, _ in _all_fields() if "." in k}


def test_the_committed_page_is_up_to_date():
    assert (REPO / PAGE).read_text(encoding="utf-8") == parameters_markdown(), \
        f"{PAGE} is stale: run `empathy-study params --write-page` and commit it"


def _entry(page: str, key: str) -> str:
    """One parameter's entry of the page: its term line, its help and its defaults."""
    return page.split(f"\n`{key}` · ", 1)[1].split("\n\n`", 1)[0]


def test_the_page_names_types_defaults_choices_and_stages():
    page = parameters_markdown()
    entry = _entry(page, "dataset.construction")
    assert entry.startswith("choice\n: ") and '`"corrected"`' in entry and '`"faithful"`' in entry
    sft = _entry(page, "sft.epochs")
    assert sft.startswith("number\n: Passes over the SFT examples")
    assert "Schema default `3.0`; `default` profile `1.0`." in sft, "schema default and the default profile's value"
    assert "`default` profile" not in _entry(page, "sft.gradient_accumulation_steps"), "said only where it departs"
    assert "Read by: sft." in page and "Read by: datasets." in page


def test_the_page_has_no_tables():
    """A six-column table per section ran past the page's right edge and hid the help column."""
    assert not [line for line in parameters_markdown().splitlines() if line.startswith("|")]


def test_the_pages_prose_has_no_bare_digits():
    for line in parameters_markdown().splitlines():
        prose = re.sub(r"`[^`]*`", "", line)
        assert not re.search(r"\d", prose), f"a digit outside code: {line[:160]}"


def test_help_reaches_error_messages_and_the_command_line():
    with pytest.raises(ConfigError, match=r"sft\.epochs: expected a number, got 'many' \(epochs: Passes over"):
        StudyConfig.from_dict({"sft": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'.*\(epochs: Passes over"):
        StudyConfig.from_dict({"sft": {"epochz": 2}})
    assert "Passes over the SFT examples" in describe("sft.epochs")
    with pytest.raises(ConfigError, match="did you mean 'sft.epochs'"):
        describe("sft.epoch")
    proc = subprocess.run([sys.executable, "-m", "empathy_utils.cli", "params", "lora"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lora.r (integer; default 8" in proc.stdout and "Rank of the LoRA adapter" in proc.stdout
