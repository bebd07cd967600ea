#!/usr/bin/env python3
"""Unknown people through a running facegate, end to end, as issue 29's check runs it.

The photos of LFW people with 3 photos or more (at most 20 each; the last `--people` of them in
name order, or the first with `--first`) are sent in a shuffled order as miiCloud `match_faces`
1:N searches of a tenant that keeps unknown faces and enrolled nobody, each with an
`x-request-id` naming the photo's person. The unknown people are then listed through facegate's
own API and each sighting labelled by its request's person: a bystander's face in a photo counts
against the grouping, as an outside check would count it. Prints one JSON line: BCubed precision
and recall over the sightings, the groups that mix people, the people split over several groups,
and searches per second.

The tenant must have opted in (`facegate tenant set NAME --unknown-faces on --unknown-retention
1d`) and hold nothing yet.

usage: unknown_people_http.py BASE_URL TOKEN LFW_IMAGES_DIR [--people N] [--seed S] [--first]
needs: python3 with requests
"""
import argparse
import collections
import json
import os
import random
import time

import requests


def bcubed(groups):
    """BCubed precision and recall of `groups` (each a list of labels, one per item)."""
    items = [(g, label) for g, labels in enumerate(groups) for label in labels]
    group_size = collections.Counter(g for g, _ in items)
    label_size = collections.Counter(label for _, label in items)
    together = collections.Counter(items)
    precision = sum(together[i] / group_size[i[0]] for i in items) / len(items)
    recall = sum(together[i] / label_size[i[1]] for i in items) / len(items)
    return precision, recall, items, label_size


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("base"), ap.add_argument("token"), ap.add_argument("lfw")
    ap.add_argument("--people", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", action="store_true")
    a = ap.parse_args()
    base = a.base.rstrip("/")
    s = requests.Session()
    s.headers["Authorization"] = f"Token {a.token}"
    people = sorted(p for p in os.listdir(a.lfw) if len(os.listdir(os.path.join(a.lfw, p))) >= 3)
    people = people[: a.people] if a.first else people[-a.people :]
    photos = [(p, f) for p in people for f in sorted(os.listdir(os.path.join(a.lfw, p)))[:20]]
    random.Random(a.seed).shuffle(photos)
    started = time.time()
    for i, (person, name) in enumerate(photos):
        with open(os.path.join(a.lfw, person, name), "rb") as f:
            r = s.post(f"{base}/miicloud/match_faces", headers={"x-request-id": f"{person}:{i}"},
                       files={"image_path": (name, f.read())})
        r.raise_for_status()
    elapsed = time.time() - started
    groups, after = [], None
    while True:
        page = s.get(f"{base}/facegate/v1/unknown-people", params={"limit": 100, **({"after": after} if after else {})})
        page.raise_for_status()
        for person in page.json()["unknown_people"]:
            seen = s.get(f"{base}/facegate/v1/unknown-people/{person['id']}/sightings")
            seen.raise_for_status()
            groups.append([x["request_id"].split(":")[0] for x in seen.json()["sightings"]])
        after = page.json().get("next_after")
        if not after:
            break
    precision, recall, items, label_size = bcubed(groups)
    split = sum(1 for label in label_size if len({g for g, other in items if other == label}) > 1)
    print(json.dumps({
        "people": len(people), "photos": len(photos), "sightings": len(items), "unknown_people": len(groups),
        "bcubed_precision": round(precision, 4), "bcubed_recall": round(recall, 4),
        "groups_mixing_people": sum(1 for labels in groups if len(set(labels)) > 1),
        "people_split": split, "searches_per_s": round(len(photos) / elapsed, 1),
    }))


if __name__ == "__main__":
    main()
