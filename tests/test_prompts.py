"""The prompt library: every element methods.md A.3 lists is present, hashed and versioned."""

from __future__ import annotations

import pytest

from empathy_utils.prompts import all_prompts, improvement_prompt, load_prompt, prompt_ids
from empathy_utils.errors import ConfigError

STRATEGIES = ["naive", "all-three", "identify-lacking", "cognitive", "affective", "compassionate", "sequential"]


def test_every_prompt_loads_with_an_id_version_and_hash():
    prompts = all_prompts()
    assert len({p.sha256 for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.version >= 1
        assert len(p.sha256) == 64
        assert p.paper
        assert p.turns
        assert "<<" not in "".join(p.turns).replace("<<<", "").replace(">>>", ""), f"{p.id}: unexpanded fragment"


def test_base_prompt_has_definitions_length_and_fields():
    p = load_prompt("base-response")
    text = p.render(context="CTX", utterance="UTT")[0]
    for needle in ("Cognitive empathy", "Affective (emotional) empathy", "Compassionate empathy", "trust",
                   "about 28 words", "97 words", "Context: CTX", "Speaker Utterance: UTT"):
        assert needle in text
    assert text.rstrip().endswith("Response:")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_has_the_stem_and_only_its_definitions(strategy):
    p = improvement_prompt(strategy)
    text = " ".join(p.render(context="C", utterance="U", response="R"))
    assert "improved empathetic response" in text
    assert "Response: R" in text
    has = {d: f"{d.capitalize()} empathy:" in text for d in ("cognitive", "compassionate")}
    has["affective"] = "Affective (emotional) empathy:" in text
    if strategy == "naive":
        assert not any(has.values())
    elif strategy in ("cognitive", "affective", "compassionate"):
        assert has == {d: d == strategy for d in has}
    else:
        assert all(has.values())


def test_sequential_is_three_turns_in_the_papers_order():
    p = improvement_prompt("sequential")
    assert len(p.turns) == 3
    assert "Cognitive" in p.turns[0]
    assert "Affective" in p.turns[1]
    assert "Compassionate" in p.turns[2]


def test_dbt_and_reasoning_prompts_cover_their_stages():
    dbt = load_prompt("dbt-response").turns[0]
    for stage in ("Listening", "Reflecting accurately", "Acknowledging emotions", "Genuine response"):
        assert stage in dbt
    reasoning = load_prompt("empathy-reasoning")
    assert {"situation", "emotion", "utterance"} <= set(reasoning.fields)
    t = reasoning.turns[0]
    assert t.index("feelings") < t.index("situation:") < t.index("Step 3, response")


def test_hash_changes_with_the_text(tmp_path, monkeypatch):
    import empathy_utils.prompts as prompts

    original = load_prompt("improve-naive")
    (tmp_path / "fragments.yaml").write_text((prompts.PROMPTS_DIR / "fragments.yaml").read_text())
    text = (prompts.PROMPTS_DIR / "improve-naive.yaml").read_text().replace("<<improve_stem>>", "<<improve_stem>> Be kind.")
    (tmp_path / "improve-naive.yaml").write_text(text)
    monkeypatch.setattr(prompts, "PROMPTS_DIR", tmp_path)
    prompts.load_prompt.cache_clear()
    prompts._fragments.cache_clear()
    try:
        assert prompts.load_prompt("improve-naive").sha256 != original.sha256
    finally:
        prompts.load_prompt.cache_clear()
        prompts._fragments.cache_clear()


def test_unknown_prompt_lists_known_ids():
    with pytest.raises(ConfigError, match="known: .*base-response"):
        load_prompt("nope")
    assert "judge-pairwise" in prompt_ids()
