#!/usr/bin/env python3
"""Fits a recognizer's `centre` (packs/*/manifest.toml) from an `eval calibrate` embeddings cache.

    python3 scripts/fit-template-centre.py CACHE [--dims 128] [--people 1000] [--weight 0.7]

CACHE is the file `facegate eval calibrate --embeddings-cache CACHE` writes, made with the pack
*without* a `centre` (a copy of the pack whose manifest has that line removed). The first `--dims`
values of each template are the first recognizer's part; they are normalised back to a unit
vector. The centre is `--weight` times the mean of those unit vectors over the first photo (by
file name) of each of the first `--people` people (by folder name), so that a person with many
photos weighs no more than one with one, and the people after them stay unseen by the fit. It
prints the `centre = [...]` line to put under `[recognizer]`. Needs numpy
(scripts/pack-tools-requirements.txt). The output depends only on the cache, so a fit is
repeatable; docs/accuracy.md says which cache and settings made the shipped line.
"""

import argparse
import json
import os
import sys

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache")
    ap.add_argument("--dims", type=int, default=128, help="values of the first recognizer's part")
    ap.add_argument("--people", type=int, default=1000, help="people, by sorted folder name, to fit on")
    ap.add_argument("--weight", type=float, default=0.7, help="share of the mean to subtract")
    args = ap.parse_args()

    with open(args.cache) as f:
        cache = json.load(f)
    first_photo: dict[str, str] = {}
    for path in sorted(p for p, entry in cache["entries"].items() if entry):
        first_photo.setdefault(os.path.basename(os.path.dirname(path)), path)
    people = sorted(first_photo)[: args.people]
    if len(people) < args.people:
        print(f"the cache holds {len(people)} people with a face, fewer than --people {args.people}", file=sys.stderr)
        return 2
    parts = np.array([cache["entries"][first_photo[p]]["embedding"][: args.dims] for p in people], dtype=np.float64)
    units = parts / np.linalg.norm(parts, axis=1, keepdims=True)
    centre = args.weight * units.mean(axis=0)
    print(
        f"# {args.weight} x the mean unit embedding of {len(people)} people ({people[0]} to {people[-1]}), "
        f"norm {np.linalg.norm(centre):.4f}, model {cache.get('model_id')}",
        file=sys.stderr,
    )
    values = [f"{v:.6f}" for v in centre]
    rows = [", ".join(values[i : i + 8]) for i in range(0, len(values), 8)]
    print("centre = [\n  " + ",\n  ".join(rows) + ",\n]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
