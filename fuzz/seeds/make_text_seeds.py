#!/usr/bin/env python3
"""Writes the text seed corpora (sigv4, read_form, miicloud_request, necid_json) into
fuzz/corpus/<target>/seed-*. Image seeds come from make_image_seeds.rs. Run from fuzz/:
    python3 seeds/make_text_seeds.py
Inputs: the AWS SigV4 test suite in crates/facegate-server/tests/data and the request
examples of /work/shared/specs (miiCloud and NEC ID API references), re-typed here."""

import base64
import hashlib
import hmac
import json
import os
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent.parent
SUITE = FUZZ.parent / "crates/facegate-server/tests/data/aws-sig-v4-test-suite"
CORPUS = FUZZ / "corpus"

# The AWS test suite's credentials (public, from the suite).
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


# ---- sigv4 -------------------------------------------------------------------------------

def sign(method, path, query, headers, body, region, service, signed, amz_date):
    """A plain SigV4 signer (documented algorithm, canonical query), for seeds only."""
    from urllib.parse import quote, unquote_plus

    def enc(s):
        return quote(s, safe="-_.~")

    pairs = []
    for pair in filter(None, (query or "").split("&")):
        k, _, v = pair.partition("=")
        pairs.append((enc(unquote_plus(k)), enc(unquote_plus(v))))
    pairs.sort()
    cq = "&".join(f"{k}={v}" for k, v in pairs)
    lines = []
    for name in signed:
        vals = [" ".join(v.split(" ")).strip() for n, v in headers if n.lower() == name]
        vals = [" ".join(w for w in v.split(" ") if w) for v in vals]
        lines.append(f"{name}:{','.join(vals)}")
    payload = dict((n.lower(), v) for n, v in headers).get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    segments = []
    for seg in path.split("/"):
        if seg == "..":
            segments = segments[:-1]
        elif seg not in ("", "."):
            segments.append(seg)
    norm = "/" + "/".join(segments)
    if path.endswith(("/", "/.", "/..")) and not norm.endswith("/"):
        norm += "/"
    canonical = "\n".join([method, quote(norm, safe="/~"), cq, *lines, "", ";".join(signed), payload])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + SECRET).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"


def request_text(method, target, headers, body):
    head = f"{method} {target} HTTP/1.1\n" + "".join(f"{n}:{v}\n" for n, v in headers)
    return head.encode() + b"\n" + body


def sigv4_seeds():
    for case in sorted(SUITE.iterdir()):
        signed = case / "header-signed-request.txt"
        if signed.exists():
            write("sigv4", f"aws-{case.name}", signed.read_bytes())
    date = "20150830T123600Z"
    body = json.dumps({"face": base64.b64encode(b"face:alice").decode(), "tags": ["passport"]}).encode()
    variants = [
        ("POST", "/v1.1/subjects", None, True, False),
        ("POST", "/v1.1/face/search", None, True, True),
        ("GET", "/v1.1/tags", None, False, False),
        ("GET", "/v1.1/jobs/bulkregister/b-1/p-2", "limit=10&key=a+b&x=%3A", False, False),
        ("PUT", "/v1.1/tags/my%20tag/./../new", "b=2&a=1&a=0&empty=", True, False),
        ("DELETE", "/v1.1//subjects/s-1/events/e-1/", "raw=:,&plus=a+b", False, True),
    ]
    for i, (method, path, query, with_body, with_hash) in enumerate(variants):
        b = body if with_body else b""
        headers = [("Host", "api.example.com"), ("X-Amz-Date", date), ("x-api-key", "k" * 40)]
        if with_body:
            headers.append(("Content-Type", "application/json"))
        if with_hash:
            headers.append(("x-amz-content-sha256", hashlib.sha256(b).hexdigest()))
        signed = sorted(n.lower() for n, _ in headers)
        auth = sign(method, path, query, headers, b, "ap-southeast-2", "execute-api", signed, date)
        target = path + (f"?{query}" if query else "")
        write("sigv4", f"necid-{i}", request_text(method, target, headers + [("Authorization", auth)], b))
    # Malformed and unusual Authorization values.
    base = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
    sig = "Signature=" + "5d" * 32
    odd = [
        f"AWS4-HMAC-SHA256 {base},SignedHeaders=host;x-amz-date,{sig}",
        f"AWS4-HMAC-SHA256 {sig}, SignedHeaders=host;x-amz-date, {base}",
        f"AWS4-HMAC-SHA256 {base}, {base}, SignedHeaders=host, {sig}",
        f"AWS4-HMAC-SHA256 {base}, SignedHeaders=X-Amz-Date;host, {sig}",
        f"AWS4-HMAC-SHA256 {base}, SignedHeaders=host;host, {sig}",
        f"AWS4-HMAC-SHA256 {base}, SignedHeaders=, {sig}",
        f"AWS4-HMAC-SHA256 Credential=a/2015083/r/s/aws4_request, SignedHeaders=host, {sig}",
        f"AWS4-HMAC-SHA256 Credential=/20150830//s/aws4_request, SignedHeaders=host, {sig}",
        f"AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature=zz",
        f"aws4-hmac-sha256 {base}, SignedHeaders=host, {sig}",
        f"AWS4-HMAC-SHA256\t{base}, SignedHeaders=host, Unknown=1, {sig}",
        "AWS4-HMAC-SHA256",
        "Token 0e653da4969a757d21de0ffa6387d5fbd6401131",
    ]
    for i, value in enumerate(odd):
        headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", date), ("Authorization", value)]
        write("sigv4", f"odd-{i}", request_text("GET", "/", headers, b""))


# ---- miiCloud forms ----------------------------------------------------------------------

def multipart(boundary, parts, crlf=True):
    nl = "\r\n" if crlf else "\n"
    out = b""
    for name, value, filename, ctype in parts:
        out += f"--{boundary}{nl}".encode()
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += (disp + nl).encode()
        if ctype:
            out += f"Content-Type: {ctype}{nl}".encode()
        out += nl.encode() + value + nl.encode()
    out += f"--{boundary}--{nl}".encode()
    return out


def form_bodies():
    """(name, content-type line, body) as the miiCloud reference's clients send them."""
    curl_b = "------------------------d74496d66958873e"
    req_b = "a3f1c4e0b2d94d0c9b3b6f1e2d7c8a90"
    enroll = [
        ("customer_person_id", b"5712f5242cf956c7c1d248e89", None, None),
        ("image_path", b"face:alice\n", "will_smith_001.jpg", "image/jpeg"),
        ("first_name", b"John", None, None),
        ("last_name", b"Doe", None, None),
        ("email", b"test@domain.com", None, None),
        ("phone", b"+141524204243", None, None),
    ]
    python_requests = [
        ("customer_person_id", b"1234567", None, None),
        ("first_name", b"John", None, None),
        ("image_path", b"face:alice\n", "will_smith_001.jpg", "multipart/form-data"),
    ]
    yield "curl-enroll", f"multipart/form-data; boundary={curl_b}", multipart(curl_b, enroll)
    yield "requests-enroll", f"multipart/form-data; boundary={req_b}", multipart(req_b, python_requests)
    yield "match", f'multipart/form-data; boundary="{req_b}"', multipart(
        req_b, [("image_path", b"face:bob\nface:carol\n", "test_001.jpg", None), ("customer_person_id", b"cpid-1", None, None)])
    yield "lf-only", f"multipart/form-data; boundary={req_b}", multipart(req_b, python_requests, crlf=False)
    yield "text-image", f"multipart/form-data; boundary=x", multipart(
        "x", [("image_path", b"https://example.com/a.jpg", None, "text/plain"), ("customer_person_id", b"c", None, None)])
    yield "two-images", "multipart/form-data; boundary=x", multipart(
        "x", [("image_path", b"face:a", "a.jpg", None), ("image_path", b"face:b", "b.jpg", None)])
    yield "empty-file", "multipart/form-data; boundary=x", multipart("x", [("image_path", b"", "e.jpg", None)])
    yield "utf8", "multipart/form-data; boundary=x", multipart(
        "x", [("first_name", "Zoë 王".encode(), None, None), ("last_name", b"\xff\xfe", None, None)])
    yield "truncated", "multipart/form-data; boundary=x", multipart("x", enroll)[:-9]
    yield "update", f"multipart/form-data; boundary={req_b}", multipart(
        req_b, [("first_name", b"Jane", None, None), ("image_path", b"face:bob\n", "bob_2.jpg", None)])
    yield "urlencoded", "application/x-www-form-urlencoded", b"customer_person_id=1234567&first_name=John&last_name=Doe&email=test%40domain.com&phone=%2B0123456789"
    yield "json", "application/json", json.dumps(
        {"customer_person_id": "1234567", "first_name": "John", "last_name": "Doe", "email": "test@domain.com",
         "phone": "0123456789", "image_path": None}).encode()
    yield "json-number", "application/json; charset=utf-8", b'{"customer_person_id": 1234567, "phone": 1.5e3}'
    yield "json-nested", "application/json", ("[" * 300 + "]" * 300).encode()
    yield "json-nested-object", "application/json", ('{"a":' * 200 + "1" + "}" * 200).encode()
    yield "json-bad", "application/json", b'{"first_name": ["John"]}'
    yield "no-type", "", b""
    yield "other-type", "text/plain", b"customer_person_id=1"


def form_seeds():
    for name, ctype, body in form_bodies():
        write("read_form", name, ctype.encode() + b"\n" + body)
        for route in range(5):
            # Each body once, on a route that makes sense for it, plus enroll for all.
            wanted = {"match": 3, "urlencoded": 1, "update": 2}
            if route == 0 or wanted.get(name) == route:
                write("miicloud_request", f"{route}-{name}", bytes([route]) + ctype.encode() + b"\n" + body)


# ---- NEC ID JSON -------------------------------------------------------------------------

def necid_seeds():
    face = base64.b64encode(b"face:alice").decode()
    other = base64.b64encode(b"face:zed").decode()
    bodies = {
        0: [{"face": face, "tags": ["passport"]}, {"face": "data:image/jpeg;base64," + face}, {"face": face + "\n"},
            {"face": "not base64!!"}, {}, {"face": face, "tags": ["nosuchtag"]}],
        1: [{"face": other, "tags": ["passport"]}],
        2: [{"face": other, "tags": ["licence"]}, {"face": other}],
        3: [{"face": face, "tags": []}],
        4: [{"probe": face, "threshold": 7500, "limit": 3, "tags": ["passport", "licence"]},
            {"probe": face, "threshold": -1}, {"probe": face, "limit": 51}, {"probe": face, "threshold": 1e99}],
        5: [{"faces": base64.b64encode(b"face:a\nface:b\nface:c").decode()}, {"faces": ""}],
        6: [{"probe": face, "id": "necidguid-fcdf-49eb-9182-5a6825ed2a3b"}, {"probe": face, "id": ""}],
        7: [{"newName": "employee"}, {"newName": ""}, {}],
        8: [{"registrations": [{"filename": "person1.jpg", "tags": ["passport"]},
                               {"filename": "person2.jpg", "tags": ["passport"]}]},
            {"registrations": [{"tags": []}]}, {"registrations": None}],
    }
    for route, items in bodies.items():
        for i, body in enumerate(items):
            write("necid_json", f"{route}-{i}", bytes([route]) + json.dumps(body).encode())
    write("necid_json", "0-empty", bytes([0]))
    write("necid_json", "0-nested-array", bytes([0]) + ("[" * 300 + "]" * 300).encode())
    write("necid_json", "4-nested-object", bytes([4]) + ('{"probe":' * 200 + '"x"' + "}" * 200).encode())
    write("necid_json", "8-nested-tags", bytes([8]) + b'{"registrations":[{"filename":"a","tags":' + b"[" * 150 + b"]" * 150 + b"}]}")
    write("necid_json", "6-wrong-types", bytes([6]) + b'{"probe": 12, "id": ["x"]}')


if __name__ == "__main__":
    sigv4_seeds()
    form_seeds()
    necid_seeds()
    for target in sorted(CORPUS.iterdir()):
        files = list(target.iterdir())
        print(target.name, len(files), "files", sum(f.stat().st_size for f in files), "bytes")
