"""``guided bench rates``: measurements of this machine, for the cpu cost model.

    guided bench rates --base_model 0.5B --oracle_model 1.5B --output_file rates.json
    guided report --cost cpu --rates rates.json results/*.jsonl

What is measured, and the file's format: ``evaluation/rates.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_atomic
from ..config import ConfigError
from ..evaluation.rates import SIZES, measure_rates
from .flags import Parser, flag


def register(sub) -> None:
    b = sub.add_parser("bench", help="measurements of this machine (rates for the cpu cost model)")
    bsub = b.add_subparsers(dest="bench_cmd", required=True, parser_class=Parser)
    r = bsub.add_parser("rates", help="each model's decode and read seconds per token at batch sizes 1-512")
    flag(r, "base_model", default="0.5B", help="base model: catalogue name, alias or .gguf path (default 0.5B)")
    flag(r, "oracle_model", default="1.5B", help="oracle model (default 1.5B); the same name as the base: measured once")
    flag(r, "output_file", default="rates.json", help="the rates JSON file (default rates.json)")
    flag(r, "sizes", default=",".join(map(str, SIZES)), help="batch sizes to measure (default 1,2,4,...,512)")
    flag(r, "context", type=int, default=256, help="tokens already in the cache before each measurement (default 256)")
    flag(r, "repeats", type=int, default=3, help="timings per figure; the median is kept (default 3)")
    flag(r, "decode_tokens", type=int, default=32, help="tokens decoded one at a time per repeat (default 32)")
    r.set_defaults(func=cmd_bench_rates)


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x) for x in text.split(",")}))
    except ValueError:
        sizes = ()
    if not sizes or sizes[0] < 1 or sizes[-1] > 4096:
        raise ConfigError(f"sizes must be a comma list of batch sizes from 1 to 4096, got {text!r}")
    return sizes


def cmd_bench_rates(args) -> int:
    data = measure_rates([("base", args.base_model), ("oracle", args.oracle_model)], sizes=parse_sizes(args.sizes),
                         context=args.context, repeats=args.repeats, decode_tokens=args.decode_tokens)
    out = Path(args.output_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(data, indent=1) + "\n")
    for m in data["models"]:
        print(f"{m['role']} {m['name']}: decode {1e3 * m['decode_s_per_token']:.2f} ms/token; read ms/token "
              + ", ".join(f"{e['batch']}: {1e3 * e['last']:.2f}/{1e3 * e['all']:.2f}" for e in m["read_s_per_token"]))
    print(f"rates: {out}")
    return 0
