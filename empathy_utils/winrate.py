"""Win rates from pairwise verdicts, with bootstrap confidence intervals.

Two definitions are reported side by side:
- ours (FastChat / Arena-Hard): ``(wins + ties / 2) / judged``, where unparsed verdicts are left out
  of the denominator and reported on their own;
- the paper's (Xie et al., as released): ``wins / all pairs`` — ties and unreadable verdicts count for
  neither side, so the two sides can sum to less than 100 %.
The confidence interval is a percentile bootstrap over dialogues (scipy.stats.bootstrap).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import stats

SCORES = {"a": 1.0, "tie": 0.5, "b": 0.0}


def summarize(verdicts: list[str], resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Counts, both win-rate definitions and a bootstrap CI for the candidate (side ``a``)."""
    counts = Counter(verdicts)
    wins, ties, losses, unparsed = (counts.get(k, 0) for k in ("a", "tie", "b", "unparsed"))
    judged = wins + ties + losses
    total = judged + unparsed
    out = {
        "pairs": total,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unparsed": unparsed,
        "win_rate": (wins + 0.5 * ties) / judged if judged else float("nan"),
        "paper_win_rate": wins / total if total else float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "confidence": confidence,
    }
    scores = np.array([SCORES[v] for v in verdicts if v in SCORES])
    if len(scores) >= 2:
        if np.all(scores == scores[0]):
            out["ci_low"] = out["ci_high"] = float(scores[0])
        else:
            res = stats.bootstrap((scores,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                  method="percentile", random_state=np.random.default_rng(seed))
            out["ci_low"] = float(res.confidence_interval.low)
            out["ci_high"] = float(res.confidence_interval.high)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else int(v) if isinstance(v, (int, np.integer)) else v)
            for k, v in out.items()}
