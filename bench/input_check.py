"""Input-check benchmark: how often single cells are refused, and whether anything else ever passes.

Run from the repository root: ``.venv/bin/python bench/input_check.py [--per-lab 300] [--crops 60]
[--unrelated 80] [--seed 0] [--out DIR]``.

Runs :func:`hemascope.imaging.inputcheck.check_input` on the sets of :mod:`inputcheck_sets` and prints,
per set, how many images fall in each kind, the false-refusal rate (single-cell sets: any kind other than
``single_cell``) or the miss rate (other sets: ``single_cell``), the images that went wrong, and the
1st/50th/99th percentiles of each measurement (to see how far each set lies from each threshold). With
``--out`` it writes ``input_check.json`` (every image's kind and measurements) and ``input_check.md`` (the
table). The last line printed is a JSON summary. Credit: Acevedo et al. 2020, Matek et al. 2019 (TCIA),
Sidhom et al. 2021 and the BCCD authors (see the data README).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from inputcheck_sets import (
    INFO_SETS,
    LAB_SETS,
    NEGATIVE_SETS,
    Sample,
    bccd_crops,
    bccd_smears,
    blanks,
    lab_samples,
    unrelated,
)

from hemascope.data import shared_data_dir
from hemascope.imaging.inputcheck import CHECK_REVISION, InputKind, check_input

KINDS = [kind.value for kind in InputKind]
MEASURES = (
    "spread",
    "foreign_colour",
    "colourful",
    "speckle",
    "flat",
    "nuclei",
    "nucleus_fraction",
    "cell_fraction",
    "centre_offset",
    "edge_contact",
    "centre_gap",
)


def build_sets(args: argparse.Namespace) -> dict[str, list[Sample]]:
    data = shared_data_dir()
    sets = {name: lab_samples(data, name, args.per_lab, args.seed) for name in LAB_SETS}
    sets["bccd-smear"] = bccd_smears(data)
    sets.update(bccd_crops(data, args.crops, args.seed))
    sets["blank"] = blanks(args.seed)
    sets["unrelated"] = unrelated(args.unrelated, args.seed)
    return sets


def run_set(samples: list[Sample]) -> list[dict[str, Any]]:
    rows = []
    for sample in samples:
        check = check_input(sample.load())
        rows.append(
            {
                "name": sample.name,
                "kind": check.kind.value,
                "reason": check.reason,
                **asdict(check.measurements),
            }
        )
    return rows


def wrong(name: str, row: dict[str, Any]) -> bool:
    if name in LAB_SETS:
        return bool(row["kind"] != InputKind.SINGLE_CELL)
    if name in NEGATIVE_SETS:
        return bool(row["kind"] == InputKind.SINGLE_CELL)
    return False


def table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| set | images | " + " | ".join(KINDS) + " | wrong |",
        "|---|---:|" + "---:|" * len(KINDS) + "---:|",
    ]
    for name, rows in results.items():
        counts = Counter(row["kind"] for row in rows)
        bad = sum(wrong(name, row) for row in rows)
        rate = f"{bad} ({100 * bad / max(1, len(rows)):.1f}%)" if name not in INFO_SETS else "n/a"
        lines.append(
            f"| {name} | {len(rows)} | " + " | ".join(str(counts[k]) for k in KINDS) + f" | {rate} |"
        )
    return lines


def percentiles(rows: list[dict[str, Any]]) -> str:
    parts = []
    for measure in MEASURES:
        values = np.asarray([row[measure] for row in rows], dtype=np.float64)
        p = np.percentile(values, [1, 50, 99])
        parts.append(f"{measure} {p[0]:.3g}/{p[1]:.3g}/{p[2]:.3g}")
    return "  " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-lab", type=int, default=300, help="single cells sampled per laboratory")
    parser.add_argument("--crops", type=int, default=60, help="BCCD crops per kind")
    parser.add_argument("--unrelated", type=int, default=80, help="generated unrelated pictures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write input_check.json and .md here")
    args = parser.parse_args()
    started = time.perf_counter()
    results = {name: run_set(samples) for name, samples in build_sets(args).items()}
    lines = table(results)
    print("\n".join(lines))
    for name, rows in results.items():
        print(f"{name}:")
        print(percentiles(rows))
        for row in rows:
            if wrong(name, row):
                print(f"  wrong: {row['name']}: {row['kind']}: {row['reason']}")
    refused = {n: sum(wrong(n, r) for r in results[n]) for n in LAB_SETS}
    missed = {n: sum(wrong(n, r) for r in results[n]) for n in NEGATIVE_SETS}
    summary = {
        "revision": CHECK_REVISION,
        "seed": args.seed,
        "false_refusals": {n: [refused[n], len(results[n])] for n in LAB_SETS},
        "passed_non_single_cell": {n: [missed[n], len(results[n])] for n in NEGATIVE_SETS},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "input_check.json").write_text(
            json.dumps({"summary": summary, "results": results}, indent=1)
        )
        (args.out / "input_check.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
