#!/usr/bin/env python3
"""NEC ID requests signed by botocore's SigV4Auth (region ap-southeast-2, service execute-api),
as NEC's own examples sign them, against facegate.

usage: necid_botocore_client.py BASE_URL API_KEY ACCESS_KEY_ID SECRET_ACCESS_KEY
needs: python3 with botocore and requests
"""
import json
import sys

import datetime

import botocore.auth
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BASE, API_KEY, AKID, SECRET = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4]


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
    return requests.request(prepared.method, prepared.url, headers=dict(prepared.headers), data=prepared.body)


def expect(resp, status, what):
    if resp.status_code != status:
        raise SystemExit(f"{what}: expected {status}, got {resp.status_code}: {resp.text}")
    return resp.json() if resp.text else None


expect(call("POST", "/v1.1/tags/passport"), 200, "create tag")
expect(call("POST", "/v1.1/tags/licence"), 200, "create second tag")
body = expect(call("POST", "/v1.1/tags/passport"), 400, "duplicate tag")
assert body["errorCode"] == 1001 and body["errorType"] == "InvalidRequest", body
expect(call("PUT", "/v1.1/tags/licence", {"newName": "driver licence"}), 200, "rename tag")
body = expect(call("GET", "/v1.1/tags"), 200, "list tags")
assert body["tags"] == ["passport", "driver licence"], body
expect(call("DELETE", "/v1.1/tags/driver%20licence"), 200, "delete tag with a space")
expect(call("DELETE", "/v1.1/tags/driver%20licence"), 404, "delete it again")
body = expect(call("PUT", "/v1.1/tags/passport", {}), 400, "rename without newName")
assert body["errorType"] == "InvalidRequest", body

# Authentication failures: 403 with NEC's messages.
body = expect(call("GET", "/v1.1/tags", api_key="wrong"), 403, "unknown api key")
assert body == {"message": "Forbidden"}, body
body = expect(call("GET", "/v1.1/tags", secret="not-the-secret"), 403, "wrong secret")
assert body["message"].startswith("The request signature we calculated does not match"), body
body = expect(call("GET", "/v1.1/tags", region="us-east-1"), 403, "wrong region")


body = expect(call("GET", "/v1.1/tags", at=datetime.datetime(2018, 8, 16, 3, 20, 46)), 403, "stale date")
assert body["message"].startswith("Signature expired: 20180816T032046Z is now earlier than"), body
assert body["message"].endswith(" - 5 min.)"), body
now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
expect(call("GET", "/v1.1/tags", at=now - datetime.timedelta(minutes=4)), 200, "4 minutes slow")
expect(call("GET", "/v1.1/tags", at=now + datetime.timedelta(minutes=10)), 403, "10 minutes fast")


def tamper_body(prepared):
    prepared.body = b'{"newName": "sneaky"}'


expect(call("PUT", "/v1.1/tags/passport", {"newName": "ok"}, tamper=tamper_body), 403, "tampered body")
unsigned = requests.get(BASE + "/v1.1/tags", headers={"x-api-key": API_KEY})
expect(unsigned, 403, "no signature")
print("NEC ID botocore client: all passed")
