"""Reference-based metrics of the DBT paper's table (Son & So; book/judges.md, Reference-based metrics): BLEU-4, ROUGE-L and
Distinct-1/2, through the packages the field uses (sacrebleu, rouge-score).

They compare a student's replies with the test dialogues' reference replies (the corpus's own
reply, or the human listener's in LLMs-vs-Humans) and count repeated n-grams; none of them measures
empathy, and a reply can be empathetic while sharing no words with the reference. All are reported
as percentages, as in the DBT paper's table.
"""

from __future__ import annotations

from typing import Sequence

METRICS = ("BLEU-4", "ROUGE-L", "Distinct-1", "Distinct-2")


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over all replies, in %, on
    lower-cased whitespace tokens."""
    total, unique = 0, set()
    for reply in replies:
        tokens = str(reply).lower().split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return 100.0 * len(unique) / total if total else 0.0


def bleu4(replies: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 with sacrebleu's defaults (13a tokenization, exponential smoothing), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu([str(r) for r in replies], [[str(r) for r in references]]).score)


def rouge_l(replies: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score, with stemming), 0-100."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(str(ref), str(hyp))["rougeL"].fmeasure for hyp, ref in zip(replies, references)]
    return 100.0 * sum(scores) / len(scores) if scores else 0.0


def reference_metrics(replies: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """All four metrics of one system's replies against their references (same order)."""
    if len(replies) != len(references):
        raise ValueError(f"{len(replies)} replies but {len(references)} references")
    return {
        "BLEU-4": bleu4(replies, references),
        "ROUGE-L": rouge_l(replies, references),
        "Distinct-1": distinct_n(replies, 1),
        "Distinct-2": distinct_n(replies, 2),
    }
