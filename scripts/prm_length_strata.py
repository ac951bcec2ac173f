"""Side check for docs/findings.md (PRM800K): do the base's step statistics separate bad
from good steps beyond step length? AUROC (bad vs good, neutral steps left out) within
quartiles of step length, and their mean weighted by steps per quartile. No CI: a check
on the committed file, not a result.

    python scripts/prm_length_strata.py results/prm800k/prm800k_0.5B.jsonl
"""
import json
import sys

import numpy as np

from guided_inference.study.metrics import auroc

# (statistic, sign): oriented so that higher means "bad", as in the findings table
STATS = [("n_tokens", 1), ("min_top_prob", -1), ("max_entropy", 1), ("mean_entropy", 1), ("first_varentropy", 1),
         ("mean_token_prob", -1)]


def main(path: str) -> None:
    steps = [s for line in open(path) for s in json.loads(line)["steps"] if s["rating"] != 0]
    bad = np.array([s["rating"] == -1 for s in steps])
    length = np.array([s["n_tokens"] for s in steps])
    edges = np.quantile(length, [0.25, 0.5, 0.75])
    quartile = np.digitize(length, edges, right=True)
    print(f"{len(steps)} steps (bad {bad.sum()}, good {(~bad).sum()}); length quartile edges {edges.tolist()}")
    print("| statistic | AUROC, all steps | within length quartiles (1-4) | weighted mean |")
    print("|---|---|---|---|")
    for name, sign in STATS:
        x = sign * np.array([s[name] for s in steps], dtype=float)
        per = [auroc(x[quartile == q], bad[quartile == q]) for q in range(4)]
        weights = [(quartile == q).sum() for q in range(4)]
        print(f"| {name} | {auroc(x, bad):.3f} | {', '.join(f'{a:.3f}' for a in per)} | "
              f"{np.average(per, weights=weights):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/prm800k/prm800k_0.5B.jsonl")
