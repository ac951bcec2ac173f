"""A grid of budgets, each run into its own results file (the table: ``report.sweep_table``).

    guided sweep --c 0,5,10,20,50 --k 5,10 --policy random --dataset math500 --num_samples 100 --out_dir DIR

Points (``sweep_points``): base only (c = 0, policy never) once, whatever k; each
(k, c > 0) with the chosen policy; oracle only (policy always, budget covering
max_new_tokens). The two baselines are skipped with ``--no_baselines`` (base only
still runs if 0 is in --c). Each point resumes its own file, named by ``run_name``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepPoint:
    kind: str  # "base" | "guided" | "oracle"
    c: int | None  # None: oracle only, the budget follows from max_new_tokens and k
    k: int
    policy: str


def sweep_points(cs: tuple[int, ...], ks: tuple[int, ...], policy: str, *, baselines: bool = True) -> list[SweepPoint]:
    points = []
    if baselines or 0 in cs:
        points.append(SweepPoint("base", 0, ks[0], "never"))
    points += [SweepPoint("guided", c, k, policy) for k in ks for c in cs if c > 0]
    if baselines:
        points.append(SweepPoint("oracle", None, ks[0], "always"))
    return points


def _slug(text: str) -> str:
    if text.endswith(".gguf") or "/" in text:
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def run_name(dataset: str, base: str, oracle: str, policy: str, c: int, k: int,
             shard: tuple[int, int] | None = None) -> str:
    """A file name for one run: dataset_base_oracle_policy_cC_kK[_shardIofN].jsonl"""
    name = "_".join(_slug(x) for x in (dataset, base, oracle, policy)) + f"_c{c}_k{k}"
    if shard:
        name += f"_shard{shard[0]}of{shard[1]}"
    return name + ".jsonl"
