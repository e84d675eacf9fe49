"""The grid of datasets: variants and grid points validate up front; the comparison tables."""

from __future__ import annotations

import pandas as pd
import pytest

from empathy_utils.config import StudyConfig, grid_configs, variant_config
from empathy_utils.errors import ConfigError
from empathy_utils.stages import construction_effect, variants_table


def test_a_variant_changes_only_its_own_keys():
    cfg = StudyConfig.from_dict({"variants": {"runs": [{"name": "m3-naive", "set": {"dataset.strategy": "naive",
                                                                                   "sft.epochs": 2}}]}})
    v = variant_config(cfg, cfg.variants.runs[0])
    assert v.dataset.strategy == "naive"
    assert v.sft.epochs == 2.0
    assert v.judge == cfg.judge
    assert v.data == cfg.data
    assert v.variants.runs == []


def test_bad_variants_are_reported_before_anything_runs():
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_dict({"variants": {"runs": [
            {"name": "a", "set": {"judge.model": "x"}},
            {"name": "b", "set": {"dataset.strategy": "kindest"}},
            {"name": "b", "set": {}},
            {"set": {}},
        ], "students": ["teacher"]}})
    msg = str(info.value)
    assert "variants.runs[0].set: ['judge.model'] may not vary" in msg
    assert "variants.runs[1]: dataset.strategy: 'kindest' is not one of" in msg
    assert "variants.runs[2].name: must be a unique folder name" in msg
    assert "variants.runs[3]: expected {name: ..., set:" in msg
    assert "variants.students: 'teacher' is not a trained student" in msg


def test_grid_points_are_runs_of_their_own():
    cfg = StudyConfig.from_dict({"run": {"name": "g"}, "grid": [{"model.name_or_path": "a"},
                                                              {"model.name_or_path": "b", "run.name": "named"}]})
    runs = grid_configs(cfg)
    assert [(r.run.name, r.model.name_or_path) for r in runs] == [("g-1", "a"), ("named", "b")]
    assert all(r.grid == [] for r in runs)
    with pytest.raises(ConfigError, match="run names \\['x'\\] repeat"):
        StudyConfig.from_dict({"grid": [{"run.name": "x"}, {"run.name": "x"}]})
    with pytest.raises(ConfigError, match="grid\\[0\\]: sft.epochs: expected a number"):
        StudyConfig.from_dict({"grid": [{"sft.epochs": "many"}]})


def _table():
    rows = []
    for variant, method, strategy, construction, pairs, rate in [
        ("this run", "M1 direct", "—", "corrected", 50, 0.6),
        ("m1-faithful", "M1 direct", "—", "faithful", 70, 0.55),
        ("m3-naive", "M3 improve initial", "naive", "corrected", 30, 0.5),
    ]:
        rows.append({"variant": variant, "method": method, "strategy": strategy, "construction": construction,
                     "source": "s", "sft_examples": 10, "dpo_pairs": pairs, "judge": "j",
                     "dpo_win_rate": rate, "dpo_ci_low": rate - 0.1, "dpo_ci_high": rate + 0.1,
                     "sft_win_rate": 0.5, "sft_ci_low": 0.4, "sft_ci_high": 0.6})
    return pd.DataFrame(rows)


def test_construction_effect_pairs_faithful_with_corrected():
    effect = construction_effect(_table(), "dpo")
    assert len(effect) == 1
    row = effect.iloc[0]
    assert (row["DPO pairs (faithful)"], row["DPO pairs (corrected)"]) == (70, 50)
    assert (row["win rate (faithful)"], row["win rate (corrected)"]) == (0.55, 0.6)


def test_variants_table_shows_rates_with_intervals():
    table = variants_table(_table(), "dpo")
    assert table.loc["m3-naive", "SFT→DPO win rate"] == "50.0\u00a0%"
    # nowhere a narrow column could break a cell (an interval wrapped over three lines): no space, and a word
    # joiner after the dash, after which browsers would otherwise break
    assert table.loc["m3-naive", "SFT→DPO CI"] == "40.0–\u206060.0\u00a0%"
    assert not any(" " in cell for column in ("SFT→DPO win rate", "SFT→DPO CI") for cell in table[column])


def test_the_variants_table_says_what_every_row_shares_once_in_its_caption(monkeypatch):
    import IPython.display

    from empathy_utils.notebook import show

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show(variants_table(_table(), "dpo"), "Judge: j.", fold_constant_columns=True)
    (styled,) = shown
    assert "replies from" not in styled.data.columns and "SFT examples" not in styled.data.columns
    assert "SFT→DPO win rate" in styled.data.columns  # differs between rows: stays a column
    assert styled.caption == "Judge: j. Every row: replies from s; SFT examples 10; SFT win rate 50.0\u00a0%; SFT CI 40.0–\u206060.0\u00a0%."


def test_an_empty_table_is_shown_as_the_sentence_that_says_why(monkeypatch):
    import IPython.display

    from empathy_utils.notebook import show

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    effect = construction_effect(_table().query("construction == 'corrected'"), "dpo")
    assert effect.empty
    show(effect, empty="No dataset was built both ways.")
    (markdown,) = shown
    assert markdown.data == "*No dataset was built both ways.*"


def test_heatmap_places_each_corrected_dataset_in_its_strategy_and_method_cell():
    import matplotlib.pyplot as plt

    from empathy_utils.plotting import variants_heatmap

    fig = variants_heatmap(_table(), "base", "judge-x")
    sft_ax, dpo_ax = fig.axes[:2]
    assert [t.get_text() for t in sft_ax.get_yticklabels()] == ["rated replies", "naive"]
    assert [t.get_text().replace("\n", " ") for t in dpo_ax.get_xticklabels()] == ["M1 direct", "M3 improve initial"]
    grid = dpo_ax.get_images()[0].get_array()
    assert grid[0, 0] == 0.6
    assert grid[1, 1] == 0.5  # the faithful M1 dataset (0.55) is not in this panel
    cells = [t.get_text() for t in dpo_ax.texts]
    assert "60 %\n[50–70]" in cells
    assert cells.count("n/a") == 2
    assert cells.count("not built") == 0
    assert "judge-x" in fig._suptitle.get_text()
    assert dpo_ax.get_title().split() == "SFT→DPO student vs base student".split()
    assert "SFT student" in sft_ax.get_title()
    # Closed once drawn: the notebook's display shows it, the inline backend does not show it again.
    assert fig.number not in plt.get_fignums()


def test_heatmap_of_eight_strategies_stays_readable_at_page_width():
    from empathy_utils.plotting import variants_heatmap

    strategies = ["naive", "identify-lacking", "cognitive", "affective", "compassionate", "sequential", "combined",
                  "all-three"]
    rows = [dict(variant=s, method="M3 improve initial", strategy=s, construction="corrected", sft_win_rate=0.4,
                 sft_ci_low=0.3, sft_ci_high=0.5, dpo_win_rate=0.45, dpo_ci_low=0.35, dpo_ci_high=0.55)
            for s in strategies]
    fig = variants_heatmap(pd.DataFrame(rows), "base", "judge-x")
    width, height = fig.get_size_inches()
    # A book page shows about 9 inches of figure; the study's 8 strategies x 1 method once made it 28 x 2.8.
    assert width <= 9 and height >= 4, (width, height)
