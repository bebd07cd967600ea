#!/usr/bin/env python3
"""A bulk register job survives SIGKILL: every file ends up registered exactly once.

Creates a tenant in a fresh data directory, fills its bucket folder with N photos plus planted
bad files, starts `facegate serve`, submits one job through a botocore-signed NEC request,
kills the server with SIGKILL once part of the job is done, restarts it, and waits for the job
to finish. Then it checks every record (paged 1,000 at a time), the failure reasons, and that
the database holds exactly one subject per successful record.

usage: bulk_kill9.py FACEGATE_BIN PHOTOS_DIR N [--kills K] [--database-url URL]
  PHOTOS_DIR: photos to copy into the bucket (searched recursively, .jpg/.png), reused in turn
  N:          good files in the job (plus 4 planted bad ones: not an image, no face, missing,
              path traversal)
  --database-url: run the server on this PostgreSQL database (an empty one) instead of SQLite;
              the database is then read with `psql`
needs: python3 with botocore and requests; psql with --database-url
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import struct
import zlib

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from checks import check

BIN, PHOTOS, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
KILLS = int(sys.argv[sys.argv.index("--kills") + 1]) if "--kills" in sys.argv else 1
DATABASE_URL = sys.argv[sys.argv.index("--database-url") + 1] if "--database-url" in sys.argv else None
STORE_ARGS = ["--database-url", DATABASE_URL] if DATABASE_URL else []
# On PostgreSQL a killed node's hold on the records it read last lasts until its lease runs out,
# and the restarted node is a new node to the database: a short lease lets it take them over
# within seconds rather than the default two minutes.
SERVE_ARGS = [*STORE_ARGS, "--bulk-claim-lease-secs", "5"] if DATABASE_URL else []
# Bounds on every wait, so that a hung server or harness fails instead of holding the run.
COMMAND_TIMEOUT = 60  # a facegate command, a server's exit, one HTTP request
JOB_TIMEOUT = 900  # the whole job, kills and restarts included


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVERS = []  # every server started, so that none outlives the harness


def start(data, port):
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, *SERVE_ARGS],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "serve.log"), "a"))
    SERVERS.append(proc)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=COMMAND_TIMEOUT)
    raise SystemExit("server did not become ready")


def run_job(call, records, names, data, port, server):
    """Submits the job, kills the server KILLS times while it runs, and waits for the end.
    Returns the records, how many were processed at each kill, and the seconds it took."""
    r = call("POST", "/v1.1/jobs/bulkregister", {"registrations": [{"filename": n} for n in names]})
    check(r.status_code == 200, r.text)
    batch = r.json()["batchId"]
    started = time.time()
    deadline = started + JOB_TIMEOUT
    at_kills = []
    for k in range(KILLS):
        # Kill at a different point of the job each time.
        target = len(names) * (k + 1) // (KILLS + 2)
        while True:
            processed = sum(rec["status"] == "Processed" for rec in records(batch))
            if processed >= target:
                break
            check(time.time() < deadline, f"only {processed} of {len(names)} records processed after {JOB_TIMEOUT} s")
            time.sleep(0.2)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=COMMAND_TIMEOUT)
        # A kill after the last record would test no resumption: the job must have been running.
        check(processed < len(names), f"kill {k + 1} came after the job had finished ({processed} records)")
        at_kills.append(processed)
        print(f"kill {k + 1}: SIGKILL with {processed} of {len(names)} records processed", flush=True)
        server = start(data, port)
    while True:
        recs = records(batch)
        if all(rec["status"] == "Processed" for rec in recs):
            break
        check(time.time() < deadline, f"the job did not finish within {JOB_TIMEOUT} s")
        time.sleep(0.5)
    elapsed = time.time() - started
    server.send_signal(signal.SIGTERM)
    check(server.wait(timeout=COMMAND_TIMEOUT) == 0, "the server exits cleanly on SIGTERM")
    return recs, at_kills, elapsed


class Sqlite:
    def __init__(self, path):
        self.db = sqlite3.connect(path)

    def rows(self, sql, *params):
        return self.db.execute(sql, params).fetchall()

    def integrity(self):
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


class Postgres:
    """The gallery in PostgreSQL, read with psql. `?` placeholders take the harness's own values,
    quoted here."""

    def __init__(self, url):
        self.url = url

    def rows(self, sql, *params):
        for value in params:
            sql = sql.replace("?", "'" + str(value).replace("'", "''") + "'", 1)
        out = subprocess.run(["psql", self.url, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        check(out.returncode == 0, f"psql failed: {out.stderr.strip()}")
        return [tuple(line.split("\t")) for line in out.stdout.splitlines()]

    def integrity(self):
        # PostgreSQL enforces its constraints on every write; the counts above check the rest.
        return "ok"


def grey_png(side=200):
    """A flat grey PNG: an image with no face in it."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\x80" * side * 3 for _ in range(side))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def main():
    work = tempfile.mkdtemp(prefix="facegate-kill9-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    created = json.loads(subprocess.check_output([BIN, "tenant", "create", "bulk", "--data-dir", data, *STORE_ARGS],
                                                 timeout=COMMAND_TIMEOUT))
    creds = Credentials(created["access_key_id"], created["secret_access_key"])
    api_key = created["api_key"]

    photos = sorted(os.path.join(d, f) for d, _, fs in os.walk(PHOTOS, followlinks=True) for f in fs
                    if f.lower().endswith((".jpg", ".jpeg", ".png")))
    bucket = os.path.join(data, "bucket", "bulk")
    os.makedirs(bucket)
    names = []
    for i in range(N):
        name = f"p{i:05d}{os.path.splitext(photos[i % len(photos)])[1]}"
        shutil.copyfile(photos[i % len(photos)], os.path.join(bucket, name))
        names.append(name)
    with open(os.path.join(bucket, "notes.jpg"), "w") as f:
        f.write("not an image")
    with open(os.path.join(bucket, "blank.png"), "wb") as f:
        f.write(grey_png())
    planted = {"notes.jpg": "not an image", "blank.png": "NoFace", "missing.jpg": "not found",
               "../escape.jpg": "invalid filename"}
    names += list(planted)

    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def call(method, path, body=None):
        data_ = json.dumps(body) if body is not None else None
        headers = {"Accept": "application/json", "x-api-key": api_key}
        if data_ is not None:
            headers["Content-Type"] = "application/json"
        req = AWSRequest(method=method, url=base + path, data=data_, headers=headers)
        SigV4Auth(creds, "execute-api", "ap-southeast-2").add_auth(req)
        p = req.prepare()
        return requests.request(p.method, p.url, headers=dict(p.headers), data=p.body, timeout=COMMAND_TIMEOUT)

    def records(batch):
        out, key = [], ""
        while True:
            r = call("GET", f"/v1.1/jobs/bulkregister/{batch}" + (f"/{key}" if key else ""))
            check(r.status_code == 200, r.text)
            page = r.json()
            check(len(page["processed"]) <= 1000)
            out += page["processed"]
            key = page["lastEvaluatedKey"]
            if not key:
                return out

    server = start(data, port)
    try:
        recs, at_kills, elapsed = run_job(call, records, names, data, port, server)
    finally:
        # Whatever failed, no server is left behind.
        for proc in SERVERS:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=COMMAND_TIMEOUT)

    check([rec["filename"] for rec in recs] == names, "records keep the request's order")
    bad = [rec for rec in recs if rec["filename"] in planted]
    for rec in bad:
        check(rec["registerStatus"] == "Failed" and rec["reason"].startswith(planted[rec["filename"]]), rec)
    good = [rec for rec in recs if rec["filename"] not in planted]
    ok = [rec for rec in good if rec["registerStatus"] == "Success"]
    failed = [rec for rec in good if rec["registerStatus"] != "Success"]
    reasons = {}
    for rec in failed:
        reasons[rec["reason"].split(":")[0]] = reasons.get(rec["reason"].split(":")[0], 0) + 1
    ids = {rec["subjectId"] for rec in ok}
    check(len(ids) == len(ok), "one subject per success")
    db = Postgres(DATABASE_URL) if DATABASE_URL else Sqlite(os.path.join(data, "facegate.db"))
    tenant_id = db.rows("SELECT id FROM tenants WHERE name = 'bulk'")[0][0]
    stored = {row[0] for row in db.rows("SELECT id FROM subjects WHERE tenant_id = ?", tenant_id)}
    samples = int(db.rows("SELECT COUNT(*) FROM face_samples WHERE tenant_id = ?", tenant_id)[0][0])
    images = int(db.rows("SELECT COUNT(*) FROM image_blobs b JOIN face_samples s ON s.id = b.sample_id "
                         "WHERE s.tenant_id = ?", tenant_id)[0][0])
    check(stored == ids, f"database has {len(stored)} subjects, records name {len(ids)}")
    check(samples == len(ok), f"{samples} samples for {len(ok)} registrations")
    check(images == samples, f"{images} images for {samples} samples")
    check(db.integrity() == "ok")
    print(json.dumps({"records": len(recs), "registered": len(ok), "failed_good_files": reasons,
                      "kills": KILLS, "processed_at_kills": at_kills, "seconds": round(elapsed, 1),
                      "files_per_s": round(len(recs) / elapsed, 1)}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
