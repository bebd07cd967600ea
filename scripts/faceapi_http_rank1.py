#!/usr/bin/env python3
"""The faceapi people through facegate's miiCloud HTTP API, 1:N, as a new user would try them.

Enrolls photo 1 (with `--enroll N`, photos 1 to N) of each person of `faceapi/identities` as a
miiCloud person, then calls `match_faces` (no `customer_person_id`: a search of the whole gallery) on each of their other
photos and reads the largest face's answer. Prints how many come back `known` as the right person
at the service's known/unknown decision (score 7000 by default), how many are `unknown`, how many
are known as someone else, and the lowest score of a right answer. Persons are deleted afterwards.

usage: faceapi_http_rank1.py BASE_URL TOKEN FACEAPI_DIR [--enroll N]
needs: python3 with requests
"""
import argparse
import json
import os
import sys
import uuid

import requests


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("base"), ap.add_argument("token"), ap.add_argument("faceapi")
    ap.add_argument("--enroll", type=int, default=1, choices=range(1, 5))
    a = ap.parse_args()
    base, token, root = a.base.rstrip("/"), a.token, os.path.join(a.faceapi, "identities")
    s = requests.Session()
    s.headers["Authorization"] = f"Token {token}"
    people = sorted(os.listdir(root))
    run = uuid.uuid4().hex[:8]
    enrolled = {}
    for p in people:
        cpid = f"faceapi-{run}-{p}"
        for n in range(1, a.enroll + 1):
            path = os.path.join(root, p, f"{p}{n}.png")
            with open(path, "rb") as f:
                # The first photo makes the person; PUT adds the others to it.
                send = s.post if n == 1 else s.put
                r = send(base + "/miicloud/person", data={"customer_person_id": cpid},
                         files={"image_path": (os.path.basename(path), f, "image/png")})
            if r.status_code != 200:
                sys.exit(f"{path}: enrollment answered {r.status_code} {r.text}")
        enrolled[cpid] = p
    right, unknown, wrong, scores, answers = 0, [], [], [], []
    for p in people:
        for n in range(a.enroll + 1, 6):
            path = os.path.join(root, p, f"{p}{n}.png")
            with open(path, "rb") as f:
                r = s.post(base + "/miicloud/match_faces",
                           files={"image_path": (os.path.basename(path), f, "image/png")})
            faces = r.json().get("faces", []) if r.status_code == 200 else []
            face = faces[0] if faces else {}
            who = enrolled.get(face.get("customer_person_id"))
            answers.append({"photo": f"{p}{n}", "status": face.get("match_status"), "person": who,
                            "score": face.get("match_confidence")})
            if face.get("match_status") == "known" and who == p:
                right += 1
                scores.append(face["match_confidence"])
            elif face.get("match_status") == "known":
                wrong.append(f"{p}{n} -> {who}")
            else:
                unknown.append(f"{p}{n} ({face.get('match_confidence')}, best {who})")
    for cpid in enrolled:
        s.delete(base + "/miicloud/person/" + cpid)
    total = len(answers)
    print(json.dumps({"photos": total, "known_right": right, "unknown": unknown, "known_wrong": wrong,
                      "lowest_right_score": min(scores) if scores else None}, indent=2))


if __name__ == "__main__":
    main()
