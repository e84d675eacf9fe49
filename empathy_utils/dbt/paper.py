"""Facts from the DBT paper (Son & So, "Improving Empathetic Response Generation in LLMs Using Direct
Preference Optimization"; methods.md C), kept here so the book glues them instead of typing them.

Their Table 1: each model as base, +SFT, +DPO and +SFT+DPO on ESConv, with BLEU-4 ("B-4"),
ROUGE-L ("R-L"), a Distinct score ("Dist", n not stated) and their own DBT metric ("Our Metric",
not defined in the paper; lower values come with SFT and DPO, so lower looks better).
These are their numbers on their models (7-8 B parameters), not anything this study measured.
"""

from __future__ import annotations

PAPER_CITATION = "Son & So, Table 1 (ESConv)"
PAPER_COLUMNS = ("B-4", "R-L", "Dist", "Our Metric")
PAPER_ROWS = ("base", "+SFT", "+DPO", "+SFT+DPO")
PAPER_TABLE1 = {
    "Llama-3-8B": {"base": (0.11, 10.78, 13.02, 0.2753), "+SFT": (0.29, 13.40, 33.40, 0.0255),
                   "+DPO": (0.07, 10.55, 12.85, 0.2087), "+SFT+DPO": (0.38, 13.62, 33.70, 0.0205)},
    "Mistral-7B": {"base": (0.05, 8.58, 7.45, 0.2835), "+SFT": (0.11, 14.30, 33.40, 0.0672),
                   "+DPO": (0.06, 8.10, 6.75, 0.2735), "+SFT+DPO": (0.12, 14.25, 33.65, 0.0508)},
    "Gemma-7B": {"base": (0.20, 2.98, 3.05, 0.1885), "+SFT": (0.21, 2.85, 2.90, 0.2002),
                 "+DPO": (0.34, 5.75, 12.35, 0.1304), "+SFT+DPO": (0.40, 5.85, 12.80, 0.0175)},
}


def paper_facts() -> dict:
    """Scalars the chapter cites, e.g. ``paper_llama_3_8b_sft_dpo_our_metric``."""
    out = {}
    for model, rows in PAPER_TABLE1.items():
        m = model.lower().replace("-", "_")
        for row, values in rows.items():
            r = {"base": "base", "+SFT": "sft", "+DPO": "dpo", "+SFT+DPO": "sft_dpo"}[row]
            for col, v in zip(PAPER_COLUMNS, values):
                out[f"paper_{m}_{r}_{col.lower().replace('-', '').replace(' ', '_')}"] = v
    return out
