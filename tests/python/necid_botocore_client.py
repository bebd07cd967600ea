#!/usr/bin/env python3
"""NEC ID requests signed by botocore's SigV4Auth (region ap-southeast-2, service execute-api),
as NEC's own examples sign them, against facegate.

usage: necid_botocore_client.py BASE_URL API_KEY ACCESS_KEY_ID SECRET_ACCESS_KEY PACK_DIR MIICLOUD_PERSON_ID STRANGER_JPG BLURRED_PNG
(PACK_DIR holds the model pack's sample photos; MIICLOUD_PERSON_ID is a person enrolled through
miiCloud from yaoming.jpg; STRANGER_JPG holds one face of someone else)
needs: python3 with botocore and requests
"""
import json
import sys

import base64
import datetime
import os
import struct
import time
import zlib

import botocore.auth
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from checks import check

BASE, API_KEY, AKID, SECRET = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]
PACK, MII_PERSON, STRANGER, BLURRED = sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]


def call(method, path, body=None, api_key=API_KEY, secret=SECRET, region="ap-southeast-2", tamper=None, at=None):
    data = json.dumps(body) if body is not None else None
    headers = {"Accept": "application/json", "x-api-key": api_key}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = AWSRequest(method=method, url=BASE + path, data=data, headers=headers)
    if at is None:
        SigV4Auth(Credentials(AKID, secret), "execute-api", region).add_auth(req)
    else:
        # Sign as a client whose clock reads `at`.
        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: at
        try:
            SigV4Auth(Credentials(AKID, secret), "execute-api", region).add_auth(req)
        finally:
            botocore.auth.get_current_datetime = original
    prepared = req.prepare()
    if tamper:
        tamper(prepared)
    return requests.request(prepared.method, prepared.url, headers=dict(prepared.headers), data=prepared.body,
                            timeout=120)


def fresh_signature():
    """botocore dates a signature to the second: the same write sent again within that second
    carries the same signature, which facegate refuses (403) as a replay. Repeats wait."""
    time.sleep(1.1)


def expect(resp, status, what):
    if resp.status_code != status:
        raise SystemExit(f"{what}: expected {status}, got {resp.status_code}: {resp.text}")
    return resp.json() if resp.text else None


expect(call("POST", "/v1.1/tags/passport"), 200, "create tag")
expect(call("POST", "/v1.1/tags/licence"), 200, "create second tag")
fresh_signature()
body = expect(call("POST", "/v1.1/tags/passport"), 400, "duplicate tag")
check(body["errorCode"] == 1001 and body["errorType"] == "InvalidRequest", body)
expect(call("PUT", "/v1.1/tags/licence", {"newName": "driver licence"}), 200, "rename tag")
body = expect(call("GET", "/v1.1/tags"), 200, "list tags")
check(body["tags"] == ["passport", "driver licence"], body)
expect(call("DELETE", "/v1.1/tags/driver%20licence"), 200, "delete tag with a space")
fresh_signature()
expect(call("DELETE", "/v1.1/tags/driver%20licence"), 404, "delete it again")
body = expect(call("PUT", "/v1.1/tags/passport", {}), 400, "rename without newName")
check(body["errorType"] == "InvalidRequest", body)

# Authentication failures: 403 with NEC's messages.
body = expect(call("GET", "/v1.1/tags", api_key="wrong"), 403, "unknown api key")
check(body == {"message": "Forbidden"}, body)
body = expect(call("GET", "/v1.1/tags", secret="not-the-secret"), 403, "wrong secret")
check(body["message"].startswith("The request signature we calculated does not match"), body)
body = expect(call("GET", "/v1.1/tags", region="us-east-1"), 403, "wrong region")


body = expect(call("GET", "/v1.1/tags", at=datetime.datetime(2018, 8, 16, 3, 20, 46)), 403, "stale date")
check(body["message"].startswith("Signature expired: 20180816T032046Z is now earlier than"), body)
check(body["message"].endswith(" - 5 min.)"), body)
now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
expect(call("GET", "/v1.1/tags", at=now - datetime.timedelta(minutes=4)), 200, "4 minutes slow")
expect(call("GET", "/v1.1/tags", at=now + datetime.timedelta(minutes=10)), 403, "10 minutes fast")


def tamper_body(prepared):
    prepared.body = b'{"newName": "sneaky"}'


expect(call("PUT", "/v1.1/tags/passport", {"newName": "ok"}, tamper=tamper_body), 403, "tampered body")
unsigned = requests.get(BASE + "/v1.1/tags", headers={"x-api-key": API_KEY}, timeout=120)
expect(unsigned, 403, "no signature")


# ---- Face extract ----
def b64(name):
    with open(os.path.join(PACK, name), "rb") as f:
        return base64.b64encode(f.read()).decode()


def grey_png(w=64, h=64):
    raw = b"".join(b"\x00" + b"\x80" * (w * 3) for _ in range(h))
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


ATTRIBUTE_KEYS = sorted(["faceArea", "headArea", "rightEyeCenter", "leftEyeCenter", "frontalFaceScore", "faceRoll",
                         "facePan", "faceTilt", "faceScore", "faceQualityScore"])
body = expect(call("POST", "/v1.1/face/extract", {"faces": b64("yaoming.jpg")}), 200, "extract one face")
check(len(body["faces"]) == 1, body)
a = body["faces"][0]["attributes"]
check(sorted(a) == ATTRIBUTE_KEYS, a)
check(sorted(a["faceArea"]) == ["bottom", "left", "right", "top"] and all(isinstance(v, str) for v in a["faceArea"].values()), a)
check(int(a["rightEyeCenter"]["x"]) < int(a["leftEyeCenter"]["x"]), "the subject's right eye is on the image's left")
check(0.5 <= float(a["faceQualityScore"]) <= 1 and float(a["faceScore"]) > 0.5, a)
body = expect(call("POST", "/v1.1/face/extract", {"faces": b64("players.jpg")}), 200, "extract a crowd")
areas = [(int(f["attributes"]["faceArea"]["right"]) - int(f["attributes"]["faceArea"]["left"])) *
         (int(f["attributes"]["faceArea"]["bottom"]) - int(f["attributes"]["faceArea"]["top"])) for f in body["faces"]]
check(len(areas) == 20, f"at most 20 faces, got {len(areas)}")
# faceArea is clipped to the image, so an edge face may look smaller than its detector box.
check(areas[0] == max(areas) and areas[-1] <= sorted(areas)[len(areas) // 2], f"largest first: {areas}")
# The reference lists 404 "Candidates not found." for extract; the body still says why.
body = expect(call("POST", "/v1.1/face/extract", {"faces": grey_png()}), 404, "no face")
check(body["message"] == "Candidates not found." and body["errorCode"] == 2001 and body["errorType"] == "NoFace", body)
body = expect(call("POST", "/v1.1/face/extract", {"faces": "%%% not base64 %%%"}), 400, "bad base64")
check(body["errorCode"] == 1001 and body["errorType"] == "InvalidRequest", body)
body = expect(call("POST", "/v1.1/face/extract", {}), 400, "missing faces")
check(body["message"] == "faces property must be provided.", body)
body = expect(call("POST", "/v1.1/face/extract", {"faces": 42}), 400, "ill-typed faces")
check(body["errorCode"] == 1001, body)


# ---- Subjects, events, verify ----
body = expect(call("POST", "/v1.1/subjects", {"face": b64("yaoming.jpg"), "tags": ["passport"]}), 201, "register")
check(sorted(body) == ["attributes", "eventId", "id"] and sorted(body["attributes"]) == ATTRIBUTE_KEYS, body)
subject, event = body["id"], body["eventId"]
body = expect(call("POST", "/v1.1/subjects", {"face": b64("yaoming.jpg"), "tags": ["no-such-tag"]}), 400, "unknown tag")
check(body["errorCode"] == 1001, body)
# Five people of similar size: ambiguous. A second face counts only if it could itself register.
body = expect(call("POST", "/v1.1/subjects", {"face": b64("gdp.jpg")}), 400, "many faces")
check(body["errorCode"] == 2003 and body["errorType"] == "MultipleFaces", body)
body = expect(call("POST", "/v1.1/subjects", {"face": grey_png()}), 400, "no face")
check(body["errorCode"] == 2001, body)
with open(BLURRED, "rb") as f:
    blurred = base64.b64encode(f.read()).decode()
body = expect(call("POST", "/v1.1/subjects", {"face": blurred}), 400, "poor quality")
check(body["errorCode"] == 2002 and body["errorType"] == "PoorQuality", body)
body = expect(call("POST", "/v1.1/subjects", {"tags": []}), 400, "no face property")
check(body["message"] == "face property must be provided." and body["errorCode"] == 1001, body)
body = expect(call("GET", f"/v1.1/subjects/{subject}/events"), 200, "list events")
check(body == {"id": subject, "events": [{"id": event}]}, body)

body = expect(call("POST", "/v1.1/face/verify", {"probe": b64("yaoming.jpg"), "id": subject}), 200, "verify")
check(body["id"] == subject and 7000 <= body["score"] <= 9999, body)
with open(STRANGER, "rb") as f:
    stranger = base64.b64encode(f.read()).decode()
body = expect(call("POST", "/v1.1/face/verify", {"probe": stranger, "id": subject}), 404, "verify a stranger")
check(0 <= body["score"] < 7000, body)
# The miiCloud person is the same identity: NEC verifies against it by its miicloud_person_id.
body = expect(call("POST", "/v1.1/face/verify", {"probe": b64("yaoming.jpg"), "id": MII_PERSON}), 200, "cross-dialect")
check(body["score"] >= 7000, body)
expect(call("POST", "/v1.1/face/verify", {"probe": b64("yaoming.jpg"), "id": "00000000-0000-0000-0000-000000000000"}),
       404, "unknown subject")

# ---- Search ----
body = expect(call("POST", "/v1.1/face/search", {"probe": b64("yaoming.jpg")}), 200, "search")
ids = [c["id"] for c in body["candidates"]]
check(sorted(ids) == sorted([subject, MII_PERSON]), body)
check(sorted(body) == ["attributes", "candidates"] and sorted(body["attributes"]) == ATTRIBUTE_KEYS, body)
for c in body["candidates"]:
    check(c["score"] >= 7000 and c["events"][0]["score"] == c["score"], c)
scores = [c["score"] for c in body["candidates"]]
check(scores == sorted(scores, reverse=True), body)
body = expect(call("POST", "/v1.1/face/search", {"probe": b64("yaoming.jpg"), "limit": 1}), 200, "limit 1")
check(len(body["candidates"]) == 1, body)
body = expect(call("POST", "/v1.1/face/search", {"probe": b64("yaoming.jpg"), "tags": ["passport"]}), 200, "tag filter")
check([c["id"] for c in body["candidates"]] == [subject], body)
expect(call("POST", "/v1.1/face/search", {"probe": stranger}), 404, "nobody like the stranger")
for bad in [{"threshold": 10000}, {"threshold": -1}, {"limit": 0}, {"limit": 51}, {"tags": ["no-such-tag"]},
            {"threshold": "high"}]:
    body = expect(call("POST", "/v1.1/face/search", dict(bad, probe=b64("yaoming.jpg"))), 400, f"search {bad}")
    check(body["errorCode"] == 1001, body)

# ---- Events ----
body = expect(call("POST", f"/v1.1/subjects/{subject}/events", {"face": b64("yaoming.jpg")}), 201, "add event")
second = body["eventId"]
check(body["id"] == subject and second != event, body)
body = expect(call("GET", f"/v1.1/subjects/{subject}/events"), 200, "two events")
check(sorted(e["id"] for e in body["events"]) == sorted([event, second]), body)
body = expect(call("POST", "/v1.1/face/search", {"probe": b64("yaoming.jpg"), "tags": ["passport"]}), 200, "events")
check(sorted(e["id"] for e in body["candidates"][0]["events"]) == sorted([event, second]), body)
body = expect(call("PUT", f"/v1.1/subjects/{subject}", {"face": b64("yaoming.jpg"), "tags": []}), 200, "update subject")
check(body["id"] == subject and sorted(body["attributes"]) == ATTRIBUTE_KEYS, body)
expect(call("POST", "/v1.1/face/search", {"probe": b64("yaoming.jpg"), "tags": ["passport"]}), 404, "tags cleared")
body = expect(call("PUT", f"/v1.1/subjects/{subject}/events/{second}", {"face": b64("yaoming.jpg")}), 200, "update event")
check(body["id"] == subject and body["eventId"] == second, body)
expect(call("PUT", f"/v1.1/subjects/{subject}/events/00000000-0000-0000-0000-000000000000",
            {"face": b64("yaoming.jpg")}), 404, "update an unknown event")
expect(call("DELETE", f"/v1.1/subjects/{subject}/events/{second}"), 204, "delete event")
fresh_signature()
expect(call("DELETE", f"/v1.1/subjects/{subject}/events/{second}"), 404, "delete event again")
body = expect(call("GET", f"/v1.1/subjects/{subject}/events"), 200, "events left")
check(len(body["events"]) == 2, body)
expect(call("POST", f"/v1.1/subjects/{MII_PERSON}/events", {"face": "%%"}), 400, "bad face")

expect(call("DELETE", f"/v1.1/subjects/{subject}"), 204, "unregister")
fresh_signature()
expect(call("DELETE", f"/v1.1/subjects/{subject}"), 404, "unregister again")
expect(call("GET", f"/v1.1/subjects/{subject}/events"), 404, "events of a deleted subject")

print("NEC ID botocore client: all passed")
