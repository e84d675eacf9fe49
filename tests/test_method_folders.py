"""A method's folder inside a run folder (artifacts.MethodPaths): PRIDE and DBT share its shape, and
the paths they return are the layout earlier runs were written with."""

from pathlib import Path

import pytest

from empathy_utils.artifacts import MethodPaths, glue_key
from empathy_utils.dbt.stage import DBTPaths
from empathy_utils.errors import StudyError
from empathy_utils.pride.stage import PridePaths

RUN = Path("runs/x")


def test_pride_folder_layout_is_unchanged():
    p = PridePaths(RUN)
    assert p.root == RUN / "pride"
    assert p.data == RUN / "pride/data"
    assert p.card == RUN / "pride/data/card.json"
    assert p.train_file == RUN / "pride/data/train.jsonl"
    assert p.test_file == RUN / "pride/data/test.jsonl"
    assert p.results == RUN / "pride/results"
    assert p.figures == RUN / "figures", "figures go beside the core study's"
    assert p.model("pride-no-pi") == RUN / "pride/models/pride-no-pi"
    assert p.generation("base") == RUN / "pride/generations/base.jsonl"
    assert p.judgment("pride", "teacher") == RUN / "pride/judgments/pride_vs_teacher.jsonl"


def test_dbt_folder_layout_is_unchanged():
    p = DBTPaths(RUN)
    assert p.root == RUN / "dbt"
    assert p.card == RUN / "dbt/data/card.json"
    assert p.candidates == RUN / "dbt/data/candidates.jsonl"
    assert p.examples("test") == RUN / "dbt/data/test.jsonl"
    assert p.results == RUN / "dbt/results"
    assert p.figures == RUN / "figures", "figures go beside the core study's"
    assert p.generation("sft-dpo") == RUN / "dbt/generations/sft-dpo.jsonl"
    assert p.judgment("sft-dpo", "base") == RUN / "dbt/judgments/sft-dpo_vs_base.jsonl"
    assert p.adapter("base") is None
    assert p.adapter("sft") == RUN / "dbt/train/sft-then-dpo/models/sft"
    assert p.adapter("dpo") == RUN / "dbt/train/dpo-on-base/models/dpo"
    assert p.adapter("sft-dpo") == RUN / "dbt/train/sft-then-dpo/models/dpo"


def test_both_methods_share_one_shape():
    assert issubclass(PridePaths, MethodPaths)
    assert issubclass(DBTPaths, MethodPaths)


@pytest.mark.parametrize("paths_class, stage", [(PridePaths, "PRIDE"), (DBTPaths, "DBT")])
def test_reading_an_earlier_steps_file(tmp_path, paths_class, stage):
    paths = paths_class(tmp_path)
    with pytest.raises(StudyError, match=f"test.jsonl: missing; run the earlier steps of the {stage} stage first"):
        paths.read(paths.data / "test.jsonl")
    written = paths.generation("base")
    written.parent.mkdir(parents=True)
    written.write_text('{"reply": "a"}\n{"reply": "b"}\n')
    assert paths.read(written) == [{"reply": "a"}, {"reply": "b"}]


def test_glue_keys_have_no_hyphens():
    assert glue_key("pride-no-pi") == "pride_no_pi"
    assert glue_key("base") == "base"
