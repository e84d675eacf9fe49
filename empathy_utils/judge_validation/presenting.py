"""Turning a validation report into the judges chapter's tables and sentences."""

from __future__ import annotations

import math

import pandas as pd

from ..config import StudyConfig
from ..paths import DATA_ENV

KIND_LABELS = {
    "pairwise-llm": "pairwise LLM judge",
    "likelihood": "likelihood judge",
    "embedding-head": "embedding head (learned)",
    "reward-model": "reward model (learned)",
    "stacked": "stacked judge (learned)",
}


def _pct(x, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def validation_table(report: dict) -> pd.DataFrame:
    """One row per candidate and per baseline: what the book's judges chapter shows."""
    if report["status"] != "ok":
        return pd.DataFrame({"judge": [KIND_LABELS[k] for k in report["candidates"]],
                             "accuracy vs human ratings": ["not measured: no research data"] * len(report["candidates"])}
                            ).set_index("judge")
    rows = []
    for j in report["judges"]:
        rows.append({"judge": j["name"],
                     "accuracy (ties ½)": _pct(j["accuracy"]),
                     "95 % CI": f"{_pct(j['ci_low'])} – {_pct(j['ci_high'])}",
                     "ties": _pct(j["tie_rate"], 0),
                     "on human-vs-LLM pairs": _pct(j["accuracy_human_vs_llm"]),
                     "orders agree": _pct(j["position_consistency"], 0) if not j["order_free"] else "order-free",
                     "picks the longer reply": _pct(j["picks_longer"], 0)})
    b = report["baselines"]
    rows.append({"judge": "baseline: the longer reply wins", "accuracy (ties ½)": _pct(b["longer_wins"]["accuracy"]),
                 "95 % CI": f"{_pct(b['longer_wins']['ci_low'])} – {_pct(b['longer_wins']['ci_high'])}",
                 "ties": "", "on human-vs-LLM pairs": "", "orders agree": "order-free", "picks the longer reply": "100 %"})
    rows.append({"judge": "baseline: the LLM's reply wins (human-vs-LLM pairs only)", "accuracy (ties ½)": "",
                 "95 % CI": "", "ties": "",
                 "on human-vs-LLM pairs": f"{_pct(b['llm_wins']['accuracy'])} (CI {_pct(b['llm_wins']['ci_low'])} – "
                                          f"{_pct(b['llm_wins']['ci_high'])})",
                 "orders agree": "order-free", "picks the longer reply": ""})
    rows.append({"judge": "people (the ratings themselves)", "accuracy (ties ½)": "100 %", "95 % CI": "", "ties": "",
                 "on human-vs-LLM pairs": "", "orders agree": "", "picks the longer reply": _pct(b["human_picks_longer"], 0)})
    return pd.DataFrame(rows).set_index("judge")


def adversarial_table(report: dict) -> pd.DataFrame | None:
    """Flip rates per judge and attack, without and with instruction stripping."""
    from ..judges import ATTACK_LABELS

    if report["status"] != "ok" or not report["adversarial"]:
        return None
    frame = pd.DataFrame(report["adversarial"])
    frame["cell"] = [f"{_pct(r, 0)} ({f}/{e})" for r, f, e in zip(frame["flip_rate"], frame["flips"], frame["eligible"])]
    frame["attack"] = frame["attack"].map(lambda a: ATTACK_LABELS.get(a, a))
    frame["defense"] = frame["defense"].map({"none": "no defense", "stripping": "instructions stripped"})
    table = frame.pivot_table(index=["name", "defense"], columns="attack", values="cell", aggfunc="first", sort=False)
    table.index.names = ["judge", "defense"]
    table.columns.name = None
    return table


def statements(report: dict, cfg: StudyConfig) -> dict[str, str]:
    """Sentences the book glues, composed from the measured numbers (or saying plainly that nothing
    was measured)."""
    if report["status"] != "ok":
        fallback = cfg.judge.fallback
        text = (f"Nothing was validated in this run: {report['reason']}. No judge's agreement with people was "
                f"measured, so the win rates of this run come from the configured fallback judge "
                f"({KIND_LABELS[fallback]}), whose validity is unmeasured here. To measure it, point {DATA_ENV} at "
                f"a folder holding llms-vs-humans/dataset.csv and re-run this stage and the ones after it "
                f"(empathy-study run --profile {cfg.run.name} --stages validate-judges judge --force).")
        return {"validation_summary": text, "selected_judge": f"none (fallback: {KIND_LABELS[fallback]})",
                "adversarial_summary": "Not measured (no research data)."}
    d, b, sel, full = report["data"], report["baselines"], report["selected"], report["full_set"]
    summary = (f"As a check against the methods notes (section E), on all {full['dialogues']:,} dialogues the longer reply "
               f"agrees with people on {_pct(full['longer_wins'])} of the {full['unequal_length_pairs']:,} rated pairs "
               f"whose lengths differ, and the LLM's reply wins {_pct(full['llm_wins'])} of the "
               f"{full['human_vs_llm_pairs']:,} human-vs-LLM pairs. On the {d['test_pairs']} rated pairs of "
               f"{d['test_dialogues']} of the {d['test_dialogues_all']} test-split dialogues used here, the longer reply "
               f"agrees with people {_pct(b['longer_wins']['accuracy'])} of the time (ties ½), and on the "
               f"{d['human_vs_llm_pairs']} human-vs-LLM pairs among them the LLM's reply {_pct(b['llm_wins']['accuracy'])}.")
    if sel is None:
        summary += " No candidate judge could be measured."
        chosen = "none"
    else:
        if not sel["beats_longer_wins"]:
            verdict = "no better than the longer-wins baseline"
        elif sel["ci_above_longer_wins"]:
            verdict = "above the longer-wins baseline, with its whole CI above it"
        else:
            verdict = "above the longer-wins baseline, though its CI still includes it"
        llm = "above" if sel["beats_llm_wins"] else "not above"
        chance = ("Its CI lies above 50 %, so it does better than a coin." if sel["ci_above_chance"] else
                  "Its CI reaches down to 50 % or below: it has not shown that it does better than a coin.")
        summary += (f" The best candidate, {sel['name']}, agrees with people on {_pct(sel['accuracy'])} "
                    f"(95 % CI {_pct(sel['ci_low'])} – {_pct(sel['ci_high'])}; ties {_pct(sel['tie_rate'], 0)}): "
                    f"{verdict}; on the human-vs-LLM pairs ({_pct(sel['accuracy_human_vs_llm'])}) it is {llm} the "
                    f"LLM-wins baseline. {chance}")
        chosen = sel["name"]
    for u in report.get("unavailable", []):
        summary += f" Not measured: {KIND_LABELS.get(u['kind'], u['kind'])} ({u['reason']})."
    adv = pd.DataFrame(report["adversarial"])
    if len(adv):
        raw = adv[adv["defense"] == "none"]
        cleaned = adv[adv["defense"] == "stripping"]
        adv_text = (f"Injected instructions flipped {_pct(raw['flips'].sum() / max(1, raw['eligible'].sum()), 0)} of "
                    f"the verdicts they could flip without a defense and "
                    f"{_pct(cleaned['flips'].sum() / max(1, cleaned['eligible'].sum()), 0)} with instruction stripping "
                    f"(all judges and attacks pooled, {d['adversarial_pairs']} pairs). Stripping changed "
                    f"{report['stripping_changed_clean_replies']['changed']} of the "
                    f"{report['stripping_changed_clean_replies']['replies']} real replies in the validation pairs.")
    else:
        adv_text = "The injected-instruction check was not run (judge_validation.adversarial_pairs is 0)."
    return {"validation_summary": summary, "selected_judge": chosen, "adversarial_summary": adv_text}
