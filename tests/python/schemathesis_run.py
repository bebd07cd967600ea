#!/usr/bin/env python3
"""schemathesis against a live facegate, one run per OpenAPI document (miiCloud, NEC ID v1.1, facegate's own).

usage: schemathesis_run.py --base-url URL [--spec-miicloud URL_OR_PATH] [--spec-necid URL_OR_PATH]
       [--spec-native URL_OR_PATH]
       [--token T] [--api-key K --access-key-id A --secret-access-key S] [--region R]
       [--seed N] [--max-examples N] [--workers N] [--phases P,...]
needs: python3 with schemathesis (4.x), botocore and requests

Each document runs through schemathesis's own `run` command, in this process, with checks
not_a_server_error (no 5xx), response_schema_conformance, status_code_conformance and
content_type_conformance: a response must be one the document lists, in the shape and media type
it lists. Phases: the documents' own examples, the coverage phase (boundary and missing values,
derived from the schemas without randomness), and fuzzing, with positive and negative data.
Generation is repeatable and bounded: a fixed seed, at most --max-examples fuzzed cases per
operation, no example database, and nothing written outside a temporary folder. The stateful
phase is left out: it follows the documents' links for as long as its budget lasts.

Authentication is added to each request as it leaves, after schemathesis has built it: miiCloud
and facegate's own API (unknown people) get `Authorization: Token ...`; NEC ID gets `x-api-key` and an AWS Signature V4
(service execute-api) over the final method, URL, headers and body, by botocore's SigV4Auth as
tests/python/necid_botocore_client.py signs. Whatever the generator put in those headers is
replaced, so that requests reach the handlers: the contract is fuzzed behind authentication,
and the authentication itself is tested by the client harnesses.

Exits 0 when every document passed, else 1, after one summary line per document.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import click
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


class TokenAuth(requests.auth.AuthBase):
    """miiCloud: `Authorization: Token <t>` on every request."""

    def __init__(self, token):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Token {self.token}"
        # facegate's own API also lists NEC's scheme, so the generator may add an x-api-key,
        # which would select NEC's credentials; this run is the token's.
        r.headers.pop("x-api-key", None)
        return r


class NecSigV4Auth(requests.auth.AuthBase):
    """NEC ID: `x-api-key`, then a SigV4 signature over the request as requests prepared it.

    requests calls an auth object after it has encoded the body and set Content-Type and
    Content-Length, so the signature covers exactly the bytes sent. facegate refuses a write whose
    signature it has already accepted (a replay), and botocore dates a signature to the second:
    the same request generated twice within one second would sign identically, so a repeat waits
    for the next second instead of being refused as a replay.

    The coverage phase also sends made-up extra headers, and they are signed like the rest.
    botocore collapses every run of whitespace in a header value (tabs too) to one space, where
    AWS documents runs of spaces only; facegate accepts a signature over either form, so such a
    case reaches its handler like any other.
    """

    def __init__(self, api_key, access_key_id, secret_access_key, region):
        self.api_key = api_key
        self.credentials = Credentials(access_key_id, secret_access_key)
        self.region = region
        self.lock = threading.Lock()
        self.recent = {}  # signature -> when it was made

    def _sign(self, r):
        body = r.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, (bytes, bytearray)):
            raise TypeError(f"cannot sign a streamed body ({type(body).__name__})")
        headers = {k: v for k, v in r.headers.items() if k.lower() not in ("authorization", "x-amz-date")}
        aws = AWSRequest(method=r.method, url=r.url, data=bytes(body), headers=headers)
        SigV4Auth(self.credentials, "execute-api", self.region).add_auth(aws)
        return aws.headers["Authorization"], aws.headers["X-Amz-Date"]

    def __call__(self, r):
        # Header names are case-insensitive; drop any generated spelling before setting ours.
        for name in [k for k in r.headers if k.lower() in ("x-api-key", "authorization", "x-amz-date")]:
            del r.headers[name]
        r.headers["x-api-key"] = self.api_key
        with self.lock:
            while True:
                authorization, amz_date = self._sign(r)
                now = time.monotonic()
                self.recent = {s: t for s, t in self.recent.items() if now - t < 2.0}
                if authorization not in self.recent:
                    break
                time.sleep(1.0 - (time.time() % 1.0) + 0.01)
            self.recent[authorization] = now
        r.headers["Authorization"] = authorization
        r.headers["X-Amz-Date"] = amz_date
        return r


# The auth of the document now running: the hook below is global to the process.
CURRENT_AUTH = None


@schemathesis.hook
def before_call(context, case, kwargs):
    # `auth` in the transport's keyword arguments reaches requests.Session.request, which applies
    # it to the prepared request: after serialization, just before sending.
    if CURRENT_AUTH is not None:
        kwargs["auth"] = CURRENT_AUTH


def run_one(name, spec, args, auth, workdir):
    global CURRENT_AUTH
    from schemathesis.cli.commands import schemathesis as cli

    CURRENT_AUTH = auth
    argv = [
        # An empty configuration file: no schemathesis.toml found by walking up from the working
        # directory can change what runs.
        "--config-file", os.path.join(workdir, "schemathesis.toml"),
        "run", spec,
        "--url", args.base_url,
        "--checks", CHECKS,
        "--mode", "all",
        "--phases", args.phases,
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        # No example database: a run replays nothing a previous one found, and writes nothing.
        "--generation-database", "none",
        "--workers", str(args.workers),
        "--request-timeout", str(args.request_timeout),
        "--no-color",
    ]
    started = time.monotonic()
    print(f"=== schemathesis: {name} ({spec}) ===", flush=True)
    try:
        code = cli.main(args=argv, prog_name="schemathesis", standalone_mode=False)
    except SystemExit as e:
        code = e.code
    except click.exceptions.ClickException as e:
        # A usage error (standalone mode would print it and exit 2): name it, fail this document.
        e.show()
        code = 2
    finally:
        CURRENT_AUTH = None
    code = 0 if code is None else code
    return code, time.monotonic() - started


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True, help="where facegate listens, e.g. http://127.0.0.1:8080")
    p.add_argument("--spec-miicloud", help="URL or path of the miiCloud OpenAPI document")
    p.add_argument("--spec-necid", help="URL or path of the NEC ID v1.1 OpenAPI document")
    p.add_argument("--spec-native", help="URL or path of facegate's own OpenAPI document (unknown people)")
    p.add_argument("--token", help="miiCloud token of a tenant")
    p.add_argument("--api-key", help="NEC ID API key of a tenant")
    p.add_argument("--access-key-id", help="NEC ID access key id (SigV4)")
    p.add_argument("--secret-access-key", help="NEC ID secret access key (SigV4)")
    p.add_argument("--region", default="ap-southeast-2", help="SigV4 region facegate expects")
    p.add_argument("--seed", type=int, default=16, help="Hypothesis seed, fixed so a run repeats")
    p.add_argument("--max-examples", type=int, default=10, help="fuzzed cases per operation")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--phases", default="examples,coverage,fuzzing")
    p.add_argument("--request-timeout", type=float, default=60.0)
    args = p.parse_args()

    runs = []
    if args.spec_miicloud:
        if not args.token:
            p.error("--spec-miicloud needs --token")
        runs.append(("miiCloud", args.spec_miicloud, TokenAuth(args.token)))
    if args.spec_necid:
        if not (args.api_key and args.access_key_id and args.secret_access_key):
            p.error("--spec-necid needs --api-key, --access-key-id and --secret-access-key")
        auth = NecSigV4Auth(args.api_key, args.access_key_id, args.secret_access_key, args.region)
        runs.append(("NEC ID v1.1", args.spec_necid, auth))
    if args.spec_native:
        if not args.token:
            p.error("--spec-native needs --token")
        runs.append(("facegate (unknown people)", args.spec_native, TokenAuth(args.token)))
    if not runs:
        p.error("give --spec-miicloud, --spec-necid, --spec-native or several")

    # Relative paths are the caller's; the runs themselves happen in a throwaway folder, so that
    # nothing Hypothesis or schemathesis might write lands in the repository.
    runs = [(n, s if "://" in s else os.path.abspath(s), a) for n, s, a in runs]
    workdir = tempfile.mkdtemp(prefix="facegate-schemathesis-")
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(workdir, "hypothesis")
    open(os.path.join(workdir, "schemathesis.toml"), "w").close()
    cwd = os.getcwd()
    os.chdir(workdir)
    results = []
    try:
        for name, spec, auth in runs:
            results.append((name, *run_one(name, spec, args, auth, workdir)))
    finally:
        os.chdir(cwd)
        shutil.rmtree(workdir, ignore_errors=True)

    print("=== schemathesis summary ===")
    for name, code, seconds in results:
        verdict = "passed" if code == 0 else f"FAILED (schemathesis exit code {code})"
        print(f"{name}: {verdict} in {seconds:.1f}s (seed {args.seed}, max {args.max_examples} examples)")
    if any(code != 0 for _, code, _ in results):
        # The curl lines above carry a signature that has expired by now; the same arguments
        # generate the same cases again.
        print("The failures are listed above, per operation; rerun with the same arguments to reproduce them.")
    sys.exit(0 if all(code == 0 for _, code, _ in results) else 1)


if __name__ == "__main__":
    main()
