"""Data loaders: the paper's split on the real file; clear errors on bad files; the embedded corpus."""

from __future__ import annotations

import csv

import pytest

from empathy_utils.data import (
    ED_EMOTIONS, LVH_SOURCES, load_embedded_corpus, load_llms_vs_humans, split_counts, subsample,
)
from empathy_utils.errors import DataError
from empathy_utils.paths import resolve_data_dir

# methods.md E: rating counts (Good / Okay / Bad) per source.
PAPER_RATINGS = {
    "human": (986, 672, 342),
    "gpt4": (1295, 563, 142),
    "llama2": (1219, 607, 174),
    "gemini": (1081, 671, 248),
    "mixtral": (1192, 603, 205),
}


@pytest.mark.data
def test_split_is_the_papers_250_test_1750_train(lvh):
    assert len(lvh) == 2000
    assert split_counts(lvh) == {"train": 1750, "test": 250}
    test = lvh[lvh["split"] == "test"]
    goods = sum((test[f"rating_{s}"] == 3).astype(int) for s in LVH_SOURCES.values())
    # methods.md A.1: 198 test dialogues with exactly one Good reply, 52 with none.
    assert (goods == 1).sum() == 198
    assert (goods == 0).sum() == 52


@pytest.mark.data
@pytest.mark.parametrize("source", PAPER_RATINGS)
def test_rating_counts_match_the_published_ones(lvh, source):
    counts = lvh[f"rating_{source}"].value_counts()
    assert (counts[3], counts[2], counts[1]) == PAPER_RATINGS[source]


@pytest.mark.data
def test_checksum_recorded(lvh):
    assert len(lvh.attrs["sha256"]) == 64


HEADER = (
    "part_no,dialog_id,emotion,situation,speaker_uttr,response_human,response_chatgpt_empathy,"
    "response_llama_empathy,response_gemini_empathy,response_mixtral_empathy,rating_human,"
    "rating_chatgpt_empathy,rating_llama_empathy,rating_gemini_empathy,rating_mixtral_empathy"
).split(",")


def _write(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _row(i, human="3", text="A made-up reply."):
    return [i, f"d{i}", "joyful", "A made-up situation.", "A made-up utterance.", text, "r1", "r2", "r3", "r4",
            human, "3", "2", "1", "3"]


def test_synthetic_file_loads_and_splits(tmp_path):
    frame = load_llms_vs_humans(path=_write(tmp_path / "dataset.csv", [_row(1), _row(2, human="1")]))
    assert list(frame["dialogue_id"]) == ["d1", "d2"]
    # d1: human, gpt4, mixtral Good -> train; d2: gpt4, mixtral Good -> train (2 Good is not "fewer than 2")
    assert list(frame["split"]) == ["train", "train"]


def test_bad_rating_names_file_row_line_and_field(tmp_path):
    path = _write(tmp_path / "dataset.csv", [_row(1), _row(2, human="Good")])
    with pytest.raises(DataError) as info:
        load_llms_vs_humans(path=path)
    msg = str(info.value)
    assert str(path) in msg
    assert "row 2 (line 3)" in msg
    assert "field rating_human" in msg
    assert "'Good'" in msg


def test_empty_text_names_the_field(tmp_path):
    path = _write(tmp_path / "dataset.csv", [_row(1, text="  ")])
    with pytest.raises(DataError, match=r"row 1 \(line 2\), field response_human: empty"):
        load_llms_vs_humans(path=path)


def test_missing_column_and_short_row(tmp_path):
    with pytest.raises(DataError, match="missing column\\(s\\) rating_mixtral_empathy"):
        load_llms_vs_humans(path=_write(tmp_path / "a.csv", [], header=HEADER[:-1]))
    path = tmp_path / "b.csv"
    _write(path, [_row(1)])
    with open(path, "a", encoding="utf-8") as f:
        f.write("2,d2,joyful\n")
    with pytest.raises(DataError, match="row 2 \\(line 3\\): wrong number of fields"):
        load_llms_vs_humans(path=path)


def test_missing_data_directory_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("EMPATHY_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="Set EMPATHY_DATA_DIR"):
        resolve_data_dir(None, need="llms-vs-humans")
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nowhere")
    with pytest.raises(DataError, match="has no llms-vs-humans/ folder"):
        resolve_data_dir(tmp_path, need="llms-vs-humans")


def test_embedded_corpus_covers_all_32_emotions():
    corpus = load_embedded_corpus()
    assert len(corpus) >= 64
    assert set(corpus["emotion"]) == set(ED_EMOTIONS)
    assert len(ED_EMOTIONS) == 32
    assert corpus["dialogue_id"].is_unique
    test = corpus[corpus["split"] == "test"]
    assert len(test) == 32
    assert set(test["emotion"]) == set(ED_EMOTIONS)
    for col in ("situation", "utterance", "reference_reply"):
        assert corpus[col].str.strip().str.len().min() > 0


def test_corpus_card_says_it_was_written_for_the_project():
    from empathy_utils.paths import resources_dir

    card = (resources_dir() / "corpus" / "CARD.md").read_text()
    assert "written for this project" in card.lower()


def test_subsample_is_seeded_and_keeps_order():
    corpus = load_embedded_corpus()
    a, b = subsample(corpus, 10, seed=1), subsample(corpus, 10, seed=1)
    assert list(a.index) == list(b.index) == sorted(a.index)
    assert len(subsample(corpus, 0, seed=1)) == len(corpus)
