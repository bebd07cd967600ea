#!/usr/bin/env python3
"""USearch's HNSW graph on the gallery `facegate bench search --export DIR` wrote: the side-by-side
measurement behind the choice of inverted lists over a graph (docs/ARCHITECTURE.md, "Search at
scale"; figures in docs/benchmarks.md).

usage: PYTHONPATH=PEER_DIR python3 scripts/peer_usearch_search.py DIR [--threads 2]
           [--connectivity 16] [--expansion-add 128] [--expansion-search 16,32,64,128]
           [--dtype f16] [--concurrency 4] [--delete-fraction 0.01]

PEER_DIR holds the peer's packages, installed apart from the system's:
    python3 -m pip install --target PEER_DIR --require-hashes --no-deps --only-binary=:all: \
        -r scripts/peer-usearch-requirements.txt

Prints one JSON object: the build time on --threads threads, the index's memory, and for each
expansion_search the p50/p99 of one search at a time, searches/s with --concurrency threads, and
recall@1 (all, mated) against the exact top-1 of the same f16 values (numpy), then the same
after removing --delete-fraction of the rows, with the time the removal took.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
from usearch.index import Index

LIMIT = 10


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def exact_top_rows(gallery, queries, chunk=200_000):
    """The row of each query's largest inner product, over f32 copies of the f16 rows."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    rows = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(gallery), chunk):
        scores = queries @ gallery[start:start + chunk].astype(np.float32).T
        top = scores.argmax(axis=1)
        value = scores[np.arange(len(queries)), top]
        better = value > best
        best[better] = value[better]
        rows[better] = top[better] + start
    return rows


def measure(index, queries, mated, truth_subjects, subjects, concurrency):
    latencies = []
    tops = []
    for q in queries:
        started = time.perf_counter()
        found = index.search(q, LIMIT, threads=1)
        latencies.append((time.perf_counter() - started) * 1e3)
        tops.append(int(found.keys[0]) if len(found.keys) else -1)
    started = time.perf_counter()
    index.search(queries, LIMIT, threads=concurrency)
    qps_concurrent = len(queries) / (time.perf_counter() - started)
    latencies.sort()
    n = len(truth_subjects)
    got = np.array([subjects[t] if t >= 0 else -1 for t in tops[:n]])
    hit = got == truth_subjects
    return {
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "qps": len(queries) / (sum(latencies) / 1e3),
        "qps_concurrent": qps_concurrent,
        "recall_at_1": float(hit.mean()),
        "recall_at_1_mated": float(hit[mated[:n]].mean()),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connectivity", type=int, default=16)
    parser.add_argument("--expansion-add", type=int, default=128)
    parser.add_argument("--expansion-search", default="16,32,64,128")
    parser.add_argument("--dtype", default="f16")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--delete-fraction", type=float, default=0.01)
    args = parser.parse_args()

    with open(os.path.join(args.dir, "meta.json")) as f:
        meta = json.load(f)
    dim = meta["dim"]
    gallery = np.fromfile(os.path.join(args.dir, "gallery.f16"), dtype="<f2").reshape(-1, dim)
    subjects = np.fromfile(os.path.join(args.dir, "gallery_subjects.u64"), dtype="<u8")
    queries = np.fromfile(os.path.join(args.dir, "probes.f32"), dtype="<f4").reshape(-1, dim)
    mated = np.fromfile(os.path.join(args.dir, "probes_mated.u8"), dtype=np.uint8).astype(bool)
    facegate_exact = np.fromfile(os.path.join(args.dir, "exact_top1.u64"), dtype="<u8")
    n_truth = len(facegate_exact)
    truth_subjects = subjects[exact_top_rows(gallery, queries[:n_truth])]

    before = resident_bytes()
    index = Index(ndim=dim, metric="ip", dtype=args.dtype, connectivity=args.connectivity,
                  expansion_add=args.expansion_add)
    keys = np.arange(len(gallery), dtype=np.uint64)
    started = time.perf_counter()
    index.add(keys, gallery, threads=args.threads)
    build_s = time.perf_counter() - started
    result = {
        "peer": "usearch",
        "usearch_version": getattr(sys.modules["usearch"], "__version__", None),
        "templates": len(gallery),
        "dim": dim,
        "queries": len(queries),
        "recall_queries": n_truth,
        "truth_agrees_with_facegate_exact": float((truth_subjects == facegate_exact).mean()),
        "dtype": args.dtype,
        "connectivity": args.connectivity,
        "expansion_add": args.expansion_add,
        "build_threads": args.threads,
        "build_s": build_s,
        "memory_usage_bytes": index.memory_usage,
        "resident_growth_bytes": resident_bytes() - before,
        "concurrency": args.concurrency,
        "searches": [],
    }
    for ef in [int(x) for x in args.expansion_search.split(",")]:
        index.expansion_search = ef
        row = {"expansion_search": ef}
        row.update(measure(index, queries, mated, truth_subjects, subjects, args.concurrency))
        result["searches"].append(row)

    # Deletes: a random share of the rows, then the same searches at the widest expansion.
    rng = np.random.default_rng(7)
    gone = rng.choice(len(gallery), size=int(len(gallery) * args.delete_fraction), replace=False)
    started = time.perf_counter()
    index.remove(gone.astype(np.uint64))
    result["deleted"] = len(gone)
    result["delete_s"] = time.perf_counter() - started
    alive = np.ones(len(gallery), dtype=bool)
    alive[gone] = False
    kept_rows = np.flatnonzero(alive)
    truth_after = subjects[kept_rows[exact_top_rows(gallery[kept_rows], queries[:n_truth])]]
    after = measure(index, queries, mated, truth_after, subjects, args.concurrency)
    after["expansion_search"] = index.expansion_search
    result["after_delete"] = after
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
