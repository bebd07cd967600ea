#!/usr/bin/env python3
"""LFW pairs through facegate's miiCloud HTTP API, 1:1.

For each pair, image A is enrolled as a fresh person and image B is matched against that person
with `match_faces` + `customer_person_id`; the largest face's `match_confidence` is the pair's
score. Prints best-threshold accuracy and the error rates at the service's known/unknown
decision. Persons are deleted afterwards.

usage: lfw_http_pairs.py BASE_URL TOKEN PAIRS_FILE IMAGES_DIR [--limit N]
needs: python3 with requests
"""
import argparse
import json
import os
import sys
import time
import uuid

import requests


def pairs(pairs_file, images_dir):
    lines = open(pairs_file).read().strip().split("\n")[1:]
    path = lambda n, i: os.path.join(images_dir, n, f"{n}_{int(i):04d}.jpg")
    for line in lines:
        f = line.split()
        if len(f) == 3:
            yield path(f[0], f[1]), path(f[0], f[2]), 1
        elif len(f) == 4:
            yield path(f[0], f[1]), path(f[2], f[3]), 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base"), ap.add_argument("token"), ap.add_argument("pairs"), ap.add_argument("images")
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args()
    s = requests.Session()
    s.headers["Authorization"] = f"Token {a.token}"
    base = a.base.rstrip("/")
    scores, labels, known_flags, failures = [], [], [], 0
    started = time.time()
    for n, (img_a, img_b, label) in enumerate(pairs(a.pairs, a.images)):
        if a.limit and n >= a.limit:
            break
        cpid = f"lfw-{uuid.uuid4().hex}"
        with open(img_a, "rb") as fa:
            r = s.post(base + "/miicloud/person", data={"customer_person_id": cpid},
                       files={"image_path": (os.path.basename(img_a), fa, "image/jpeg")})
        score, known = -1.0, False
        if r.status_code == 200:
            with open(img_b, "rb") as fb:
                m = s.post(base + "/miicloud/match_faces", data={"customer_person_id": cpid},
                           files={"image_path": (os.path.basename(img_b), fb, "image/jpeg")})
            faces = m.json().get("faces", []) if m.status_code == 200 else []
            if faces:
                score, known = faces[0]["match_confidence"], faces[0]["match_status"] == "known"
            s.delete(base + "/miicloud/person/" + cpid)
        else:
            failures += 1
        scores.append(score), labels.append(label), known_flags.append(known)
        if (n + 1) % 500 == 0:
            print(f"{n + 1} pairs, {(n + 1) / (time.time() - started):.1f} pairs/s", file=sys.stderr)
    total = len(labels)
    best = max(
        (sum((sc >= t) == bool(l) for sc, l in zip(scores, labels)) / total, t)
        for t in sorted(set(scores))
    )
    pos = [k for k, l in zip(known_flags, labels) if l]
    neg = [k for k, l in zip(known_flags, labels) if not l]
    print(json.dumps({
        "pairs": total,
        "enroll_failures": failures,
        "best_threshold_accuracy": round(best[0], 4),
        "best_threshold_confidence": best[1],
        "fmr_at_known": sum(neg) / max(len(neg), 1),
        "fnmr_at_known": 1 - sum(pos) / max(len(pos), 1),
        "seconds": round(time.time() - started, 1),
    }))


if __name__ == "__main__":
    main()
