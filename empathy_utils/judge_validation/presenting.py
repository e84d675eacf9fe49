"""Turning a validation report into the judges chapter's tables and sentences."""

from __future__ import annotations


import pandas as pd

from ..config import StudyConfig
from ..paths import DATA_ENV
from ..presentation import DASH, interval_cell, is_missing, percent, percent_cell

KIND_LABELS = {
    "pairwise-llm": "pairwise LLM judge",
    "likelihood": "likelihood judge",
    "embedding-head": "embedding head (learned)",
    "reward-model": "reward model (learned)",
    "stacked": "stacked judge (learned)",
    "writer-style": "writer-style judge (learned)",
    "cross-encoder": "cross-encoder (learned)",
}


_pct = percent  # the one percentage formatter (presentation.percent), for sentences
_cell = percent_cell  # the same in a table cell, where it must not wrap before "%"

# Short row labels of the packaged measurement's likelihood candidates, from their settings; the full
# names are listed under the table.
SCORE_LABELS = {"mean": "mean log-probability", "pmi": "PMI"}
CONDITION_LABELS = {"utterance": "speaker's turn", "context": "situation and speaker's turn",
                    "plain": "plain transcript"}


COLUMNS = ("note", "selection accuracy (pairs)", "report accuracy, ties ½ (pairs)", "report 95 % CI", "ties",
           "on human-vs-LLM pairs", "orders agree", "picks the longer reply")


def _rate_of(rate, pairs) -> str:
    """A table cell "54.9 % (751)": an accuracy and the pairs it was measured on (one column, not two:
    with both, the table ran past the page's right edge and hid its notes)."""
    if is_missing(rate):
        return ""
    return _cell(rate) + (f" ({pairs})" if pairs not in (None, "") else "")


def _row(name: str, selection: dict | None, rep: dict | None, order_free: bool, note: str = "") -> dict:
    sel = selection or {}
    rep = rep or {}
    either = rep or sel
    return {"judge": name, "note": note,
            "selection accuracy (pairs)": _rate_of(sel.get("accuracy"), sel.get("pairs")) or DASH,
            "report accuracy, ties ½ (pairs)": (_rate_of(rep.get("accuracy"), rep.get("pairs")) or DASH) if rep
            else "not run on the report set",
            "report 95 % CI": interval_cell(rep.get("ci_low"), rep.get("ci_high")) if rep else "",
            "ties": _cell(either.get("tie_rate"), 0),
            "on human-vs-LLM pairs": _cell(rep.get("accuracy_human_vs_llm")) if rep else "",
            "orders agree": "order-free" if order_free else _cell(either.get("position_consistency"), 0),
            "picks the longer reply": _cell(either.get("picks_longer"), 0)}


def _baseline_rows(b: dict, sel_b: dict | None) -> list[dict]:
    sel_b = sel_b or {}
    longer, sel_longer = b["longer_wins"], sel_b.get("longer_wins", {})
    rows = [{"judge": "baseline: the longer reply wins", "note": "a baseline",
             "selection accuracy (pairs)": _rate_of(sel_longer.get("accuracy"), sel_longer.get("pairs")),
             "report accuracy, ties ½ (pairs)": _rate_of(longer["accuracy"], longer["pairs"]),
             "report 95 % CI": interval_cell(longer["ci_low"], longer["ci_high"]),
             "orders agree": "order-free", "picks the longer reply": _cell(1.0, 0)},
            {"judge": "baseline: the LLM's reply wins", "note": "a baseline, on human-vs-LLM pairs only",
             "on human-vs-LLM pairs": f"{_rate_of(b['llm_wins']['accuracy'], b['llm_wins']['pairs'])}, CI "
                                      f"{interval_cell(b['llm_wins']['ci_low'], b['llm_wins']['ci_high'])}",
             "orders agree": "order-free"}]
    # References that are not judges: what knowing the writer, or the rater, would score on the same pairs.
    for key, name, note in (
            ("known_writer", "reference: told who wrote each reply",
             "not a judge: the writer rated higher on the train split wins"),
            ("lenient_rater", "reference: told who rated each reply",
             "not a judge: the more generous rater's reply wins")):
        ref, sel_ref = b.get(key), sel_b.get(key) or {}
        if ref:
            rows.append({"judge": name, "note": note,
                         "selection accuracy (pairs)": _rate_of(sel_ref.get("accuracy"), sel_ref.get("pairs")),
                         "report accuracy, ties ½ (pairs)": _rate_of(ref["accuracy"], ref["pairs"]),
                         "report 95 % CI": interval_cell(ref["ci_low"], ref["ci_high"]), "orders agree": "order-free"})
    rows.append({"judge": "people (the ratings themselves)", "report accuracy, ties ½ (pairs)": _cell(1.0, 0),
                 "picks the longer reply": _cell(b["human_picks_longer"], 0)})
    return [{"judge": r["judge"], **{c: r.get(c, "") for c in COLUMNS}} for r in rows]


def _note(j: dict, selected_name: str | None) -> str:
    if j["name"] == selected_name:
        return "selected"
    if j.get("refused"):
        return f"never selected: {j['refused']}"
    if j.get("subsampled"):
        return "subsampled (expensive)"
    return ""


def packaged_labels(measurement: dict) -> dict[str, str]:
    """Each packaged candidate's row label, from its settings ("likelihood: PMI, speaker's turn"): the
    six likelihood candidates' full names differ only at their ends and filled the table's first column
    with ten-line cells. A full name stays where two candidates would share a label."""
    def label(c):
        s = c["settings"]
        if s["kind"] == "likelihood" and s.get("score") in SCORE_LABELS and s.get("condition") in CONDITION_LABELS:
            return f"likelihood: {SCORE_LABELS[s['score']]}, {CONDITION_LABELS[s['condition']]}"
        return KIND_LABELS.get(s["kind"], c["name"])

    labels = {c["name"]: label(c) for c in measurement.get("candidates", [])}
    shared = {v for v in labels.values() if list(labels.values()).count(v) > 1}
    return {name: (name if short in shared else short) for name, short in labels.items()}


def packaged_table(measurement: dict) -> pd.DataFrame:
    """The packaged measurement of the data-free judges: selection and report accuracy side by side."""
    chosen = (measurement.get("selected") or {}).get("name")
    labels = packaged_labels(measurement)
    rows = [_row(labels[c["name"]], c["selection"], c.get("report"), c["settings"]["kind"] != "pairwise-llm",
                 _note({**c, "subsampled": bool(c.get("subsampled"))}, chosen)) for c in measurement["candidates"]]
    rows += _baseline_rows(measurement["baselines"]["report"], measurement["baselines"]["selection"])
    return pd.DataFrame(rows).set_index("judge")


def judge_labels(report: dict) -> dict[str, str]:
    """Each measured judge's row label: its kind's short label ("cross-encoder (learned)"), or its full
    name where two judges share a kind. The full names, which say what each judge scores and on what
    it was trained, are listed under the table (``validation_displays``) rather than squeezed into it."""
    kinds = [j.get("kind") for j in report.get("judges", [])]
    return {j["name"]: (KIND_LABELS[j["kind"]] if j.get("kind") in KIND_LABELS and kinds.count(j["kind"]) == 1
                        else j["name"]) for j in report.get("judges", [])}


def validation_table(report: dict) -> pd.DataFrame:
    """One row per candidate and per baseline, selection and report accuracy side by side: what the
    book's judges chapter shows. Without research data: the packaged measurement, if any."""
    if report["status"] != "ok":
        if report.get("packaged"):
            return packaged_table(report["packaged"])
        return pd.DataFrame({"judge": [KIND_LABELS.get(k, k) for k in report["candidates"]],
                             "accuracy vs human ratings": ["not measured: no research data"] * len(report["candidates"])}
                            ).set_index("judge")
    chosen = (report.get("selected") or {}).get("name")
    labels = judge_labels(report)
    rows = [_row(labels[j["name"]], j.get("selection"), j, j["order_free"], _note(j, chosen)) for j in report["judges"]]
    rows += _baseline_rows(report["baselines"], report.get("baselines_selection"))
    return pd.DataFrame(rows).set_index("judge")


def adversarial_table(report: dict) -> pd.DataFrame | None:
    """Flip rates per judge and attack, without and with instruction stripping."""
    from ..judges import ATTACK_LABELS

    if report["status"] != "ok" or not report["adversarial"]:
        return None
    frame = pd.DataFrame(report["adversarial"])
    labels = judge_labels(report)
    frame["name"] = frame["name"].map(lambda n: labels.get(n, n))
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
        how_to = (f"To validate judges in this run, point {DATA_ENV} at a folder holding llms-vs-humans/dataset.csv "
                  f"and re-run this stage and the ones after it (empathy-study run --profile {cfg.run.name} "
                  f"--stages validate-judges judge --force).")
        sel = report.get("selected")
        if sel:
            m = report.get("packaged") or {}
            refused = [c["name"] for c in m.get("candidates", []) if c.get("refused")]
            text = (f"Nothing was validated in this run: {report['reason']}. Its judge is the data-free candidate that "
                    f"measured best in the project's own validation (the packaged measurement of {sel['measured_on']}, "
                    f"commit {sel['commit'][:12]}, data file sha256 {sel['data_sha256'][:12]}…): {sel['name']}. "
                    f"Chosen on {sel['selection_pairs']} selection pairs, it agreed with people on "
                    f"{_pct(sel['accuracy'])} of {sel['pairs']} report-set pairs (95 % CI {_pct(sel['ci_low'])} – "
                    f"{_pct(sel['ci_high'])}; ties {_pct(sel['tie_rate'], 0)}), against {_pct(sel['longer_wins'])} "
                    f"for the longer reply and {_pct(sel['llm_wins'])} for the LLM's reply on the same pairs. "
                    + ("Its CI lies above 50 %. " if sel["ci_above_chance"] else
                       "Its CI reaches down to 50 % or below: it has not shown that it does better than a coin. ")
                    + (f"Never chosen, because they cannot decide: {'; '.join(refused)}. " if refused else "")
                    + how_to)
            return {"validation_summary": text, "selected_judge": sel["name"],
                    "adversarial_summary": "Not measured in this run (no research data)."}
        text = (f"Nothing was validated in this run: {report['reason']}. No judge's agreement with people was "
                f"measured, so the win rates of this run come from the configured fallback judge "
                f"({KIND_LABELS.get(fallback, fallback)}), whose validity is unmeasured here. " + how_to)
        return {"validation_summary": text, "selected_judge": f"none (fallback: {KIND_LABELS.get(fallback, fallback)})",
                "adversarial_summary": "Not measured (no research data)."}
    d, b, sel, full = report["data"], report["baselines"], report["selected"], report["full_set"]
    candidates = list(dict.fromkeys(j["kind"] for j in report["judges"] if j.get("kind")))  # the ones that ran
    chosen_there = "the judge, likelihood framing and tie band" if "likelihood" in candidates else "the judge and its tie band"
    summary = (f"For reference, on all {full['dialogues']:,} dialogues the longer reply "
               f"agrees with people on {_pct(full['longer_wins'])} of the {full['unequal_length_pairs']:,} rated pairs "
               f"whose lengths differ, and the LLM's reply wins {_pct(full['llm_wins'])} of the "
               f"{full['human_vs_llm_pairs']:,} human-vs-LLM pairs. The test-split rated pairs were split by dialogue "
               f"(seed {d['split_seed']}) into a selection set ({d['selection_pairs']} pairs: {chosen_there} "
               f"are chosen there) and a report set; on the {d['test_pairs']} report pairs of "
               f"{d['test_dialogues']} of the {d['test_dialogues_all']} test-split dialogues, the longer reply "
               f"agrees with people {_pct(b['longer_wins']['accuracy'])} of the time (ties ½), and on the "
               f"{d['human_vs_llm_pairs']} human-vs-LLM pairs among them the LLM's reply {_pct(b['llm_wins']['accuracy'])}."
               + (f" Judges validated in this run (judge_validation.candidates): "
                  f"{', '.join(KIND_LABELS.get(k, k) for k in candidates)}; the others stay available to any profile."
                  if candidates else ""))
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
        summary += (f" The candidate best on the selection set ({_pct(sel['selection_accuracy'])}), {sel['name']}, "
                    f"agrees with people on the report set on {_pct(sel['accuracy'])} "
                    f"(95 % CI {_pct(sel['ci_low'])} – {_pct(sel['ci_high'])}; ties {_pct(sel['tie_rate'], 0)}): "
                    f"{verdict}; on the human-vs-LLM pairs ({_pct(sel['accuracy_human_vs_llm'])}) it is {llm} the "
                    f"LLM-wins baseline. {chance}")
        both = sel.get("ci_above_longer_wins") and sel.get("ci_above_llm_wins")
        summary += (" Its whole report-set CI lies above both baselines' point estimates." if both else
                    " Its report-set CI does not lie above both baselines' point estimates, so it has not shown "
                    "that it sees more than those simple rules do.")
        known = b.get("known_writer")
        if known:
            reachable = "lies above" if known["ci_low"] > b["llm_wins"]["accuracy"] else "does not lie above"
            summary += (f" For scale: told who wrote each reply, and preferring the writer people rated higher on the "
                        f"train split, one would agree with people on {_pct(known['accuracy'])} of the report pairs "
                        f"(95 % CI {_pct(known['ci_low'])} – {_pct(known['ci_high'])}); even that CI {reachable} the "
                        f"LLM-wins baseline's point estimate, so a judge that only recognizes its writers "
                        + ("could clear both baselines." if known["ci_low"] > b["llm_wins"]["accuracy"] else
                           "cannot be shown to clear both baselines on these pairs."))
        refused = [j["name"] for j in report["judges"] if j.get("refused")]
        if refused:
            summary += f" Never selected, because they tie most selection pairs or their orders disagree: {'; '.join(refused)}."
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


def reliability_tables(report: dict) -> dict[str, pd.DataFrame]:
    """Reliability of each judge that gives a probability, on the report set: this run's, or the
    packaged measurement's when nothing was validated here."""
    tables = report.get("reliability") or (report.get("packaged") or {}).get("reliability") or {}
    labels = judge_labels(report) if report.get("reliability") else {}  # the run's judges: short labels
    return {labels.get(name, name): pd.DataFrame(rows) for name, rows in tables.items()}


def packaged_glue_values(measurement: dict) -> dict:
    """The packaged measurement's figures, glued so the judges chapter can state the fallback
    judge's measured accuracy, interval, date and commit whether or not this run had the data."""
    from .offline import selected_from_packaged

    sel = selected_from_packaged(measurement) or {}
    d = measurement["data"]
    refused = [c for c in measurement["candidates"] if c.get("refused") and c.get("refused") != "a baseline"]
    values = {"offline_judge": sel.get("name", "none"), "offline_date": measurement["date"],
              "offline_commit": measurement["git_commit"][:12], "offline_data_sha256": d["sha256"][:12],
              "offline_selection_pairs": d["selection_pairs"], "offline_report_pairs": d["report_pairs"],
              "offline_selection_dialogues": d["selection_dialogues"], "offline_report_dialogues": d["report_dialogues"],
              "offline_subsampled": measurement.get("subsampled", ""), "offline_command": measurement.get("command", ""),
              "offline_refused": "; ".join(f"{c['name']} ({c['refused']})" for c in refused) or "none"}
    if sel:
        values.update(offline_accuracy=100 * sel["accuracy"], offline_ci_low=100 * sel["ci_low"],
                      offline_ci_high=100 * sel["ci_high"], offline_selection_accuracy=100 * sel["selection_accuracy"],
                      offline_longer_wins=100 * sel["longer_wins"], offline_llm_wins=100 * sel["llm_wins"],
                      offline_tie_rate=100 * (sel["tie_rate"] or 0.0),
                      offline_beats_both=("lies" if sel["ci_above_longer_wins"] and sel["ci_above_llm_wins"]
                                          else "does not lie"))
    return values


def rater_design_statement(report: dict) -> str:
    """What the rating design does to any judge's accuracy, in one paragraph of measured numbers."""
    design, lenient = report.get("rater_design"), (report.get("baselines") or {}).get("lenient_rater")
    known = (report.get("baselines") or {}).get("known_writer")
    where, pairs_name = "", "report pairs"
    if report.get("status") != "ok":
        packaged = report.get("packaged") or {}
        design = packaged.get("rater_design")
        whole_report = (packaged.get("baselines") or {}).get("report_all") or {}
        lenient, known = whole_report.get("lenient_rater"), whole_report.get("known_writer")
        if not design or not lenient:
            return "Not measured in this run: it needs the research data (LLMs-vs-Humans)."
        where = (f"Measured by the project, not in this run (the packaged measurement of {packaged.get('date')}, "
                 f"commit {str(packaged.get('git_commit'))[:12]}): ")
        pairs_name = "report-set pairs of that measurement"
    if not design or not lenient:
        return "Not measured: this copy of the data file does not name its raters (annotator_* columns)."
    one_writer = ("all by one writer" if design["writers_per_rater_max"] == 1
                  else f"by up to {design['writers_per_rater_max']} writers")
    shared = ("so no rated pair was rated by one person" if design["pairs_sharing_a_rater"] == 0
              else f"and {design['pairs_sharing_a_rater']:,} rated pairs were rated by one person")
    told = (f", against {_pct(known['accuracy'])} when told only who wrote each reply" if known else "")
    return (f"{where}The {design['ratings']:,} ratings come from {design['raters']:,} raters, each of whom rated "
            f"{design['replies_per_rater_median']:g} replies, {one_writer}, {shared}: every \"preference\" compares "
            f"one person's rating with another's. The mean rating each rater gave to their other replies predicts "
            f"which reply \"people preferred\" in {_pct(design['lenient_rater_wins'])} of all "
            f"{design['rated_pairs']:,} rated pairs, and in {_pct(lenient['accuracy'])} of the "
            f"{lenient['pairs']} {pairs_name} (95 % CI {_pct(lenient['ci_low'])} – {_pct(lenient['ci_high'])})"
            f"{told}. What that adds to knowing the writer comes from the raters (how generous each was, and which "
            f"other replies they happened to see), which a judge of the two replies never sees: that part of each "
            f"pair's outcome is noise to any judge, however good, and it bounds what agreement with these ratings "
            f"can show.")


def _ci(m: dict) -> str:
    return f"{_pct(m['accuracy'])} (95 % CI {_pct(m['ci_low'])} – {_pct(m['ci_high'])})"


def within_rater_statement(report: dict) -> str:
    """How the judges order two replies **one rater** rated differently, where neither the writer nor
    the rater's generosity differs (``within_rater_agreement``), in one paragraph of measured numbers."""
    where, wr = "", report.get("within_rater") or {}
    if report.get("status") == "ok":
        labels = judge_labels(report)
        measured = [(labels[j["name"]], j["within_rater"]) for j in report["judges"] if j.get("within_rater")]
        unmeasured = [f"{labels[j['name']]} ({j['within_rater_not_measured']})" for j in report["judges"]
                      if j.get("within_rater_not_measured")]
    else:
        packaged = report.get("packaged") or {}
        wr = packaged.get("within_rater") or {}
        if not wr:
            return "Not measured in this run: it needs the research data (LLMs-vs-Humans)."
        labels = packaged_labels(packaged)
        measured = [(labels[c["name"]], c["within_rater"]) for c in packaged.get("candidates", []) if c.get("within_rater")]
        unmeasured = []
        where = (f"Measured by the project, not in this run (the packaged measurement of {packaged.get('date')}, "
                 f"commit {str(packaged.get('git_commit'))[:12]}): ")
    if not wr.get("pairs"):
        return "Not measured: this copy of the data file does not name its raters (annotator_* columns)."
    judged = "; ".join(f"{label}, {_ci(m)}" for label, m in measured) or "no judge was measured this way"
    longer = f"; the longer reply {_ci(wr['longer_wins'])}" if wr.get("longer_wins") else ""
    skipped = f" Not measured this way: {'; '.join(unmeasured)}." if unmeasured else ""
    return (f"{where}The test split holds {wr['pairs']:,} pairs of replies that one person rated differently "
            f"({wr['raters']:,} raters): the same writer and the same rater on both sides, two dialogues, so neither "
            f"the writer's style nor the rater's generosity can decide them, only what was written. Ordered by their "
            f"scores, the judges agree with that rater as follows (CIs resample whole raters): {judged}{longer}."
            f"{skipped}")


def report_set_glue_values(report: dict) -> dict:
    """The selected judge's report-set figures (``selected.*`` of the report: this run's choice, or
    the packaged one), glued under the same keys whether or not anything was measured."""
    sel = report.get("selected") or {}
    if not sel:
        return {"judge_source": "none", "judge_report_summary": "whose agreement with people was not measured",
                "rater_design_summary": rater_design_statement(report),
                "within_rater_summary": within_rater_statement(report)}
    where = ("this run's validation" if sel.get("source") != "packaged measurement"
             else f"the packaged measurement of {sel.get('measured_on')}")
    both = sel.get("ci_above_longer_wins") and sel.get("ci_above_llm_wins")
    return {"judge_source": sel.get("source", ""), "judge_set": sel.get("set", "report"),
            "judge_report_accuracy": 100 * sel["accuracy"], "judge_report_ci_low": 100 * sel["ci_low"],
            "judge_report_ci_high": 100 * sel["ci_high"], "judge_report_pairs": sel["pairs"],
            "judge_ci_above_both_baselines": "yes" if both else "no",
            "rater_design_summary": rater_design_statement(report),
            "within_rater_summary": within_rater_statement(report),
            "judge_report_summary": (f"which agreed with people on {_pct(sel['accuracy'])} of {sel['pairs']} report-set "
                                     f"pairs (95 % CI {_pct(sel['ci_low'])} – {_pct(sel['ci_high'])}; {where})")}
