#!/usr/bin/env python3
"""match_faces latency while a bulk register job runs, against idle: live requests must keep
priority over background jobs (the inference pool lets them go first).

usage: bulk_latency.py FACEGATE_BIN PHOTOS_DIR N_FILES PROBE_JPG [REQUESTS]
Starts `facegate serve` on a fresh data directory, enrolls PROBE_JPG through miiCloud, times
REQUESTS (default 100) sequential match_faces calls with it while idle, then submits a job of
N_FILES photos from PHOTOS_DIR (botocore-signed NEC request) and times the same calls while the
job runs. Prints p50/p99 for both and the job's files/s.
needs: python3 with botocore and requests
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

BIN, PHOTOS, N, PROBE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
REQUESTS = int(sys.argv[5]) if len(sys.argv) > 5 else 100


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    work = tempfile.mkdtemp(prefix="facegate-latency-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    created = json.loads(subprocess.check_output([BIN, "tenant", "create", "bulk", "--data-dir", data]))
    creds = Credentials(created["access_key_id"], created["secret_access_key"])
    photos = sorted(os.path.join(d, f) for d, _, fs in os.walk(PHOTOS, followlinks=True) for f in fs if f.lower().endswith(".jpg"))
    bucket = os.path.join(data, "bucket", "bulk")
    os.makedirs(bucket)
    names = []
    for i in range(N):
        name = f"p{i:05d}.jpg"
        shutil.copyfile(photos[i % len(photos)], os.path.join(bucket, name))
        names.append(name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if requests.get(base + "/readyz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        token = {"Authorization": "Token " + created["token"]}
        probe = open(PROBE, "rb").read()
        r = requests.post(base + "/miicloud/person", headers=token, data={"customer_person_id": "probe"},
                          files={"image_path": ("probe.jpg", probe)})
        assert r.ok, r.text
        session = requests.Session()

        def timed():
            out = []
            for _ in range(REQUESTS):
                t = time.perf_counter()
                r = session.post(base + "/miicloud/match_faces", headers=token, files={"image_path": ("p.jpg", probe)})
                out.append((time.perf_counter() - t) * 1000)
                assert r.ok, r.text
            return out

        timed()  # warm-up
        idle = timed()
        req = AWSRequest(method="POST", url=base + "/v1.1/jobs/bulkregister",
                         data=json.dumps({"registrations": [{"filename": n} for n in names]}),
                         headers={"x-api-key": created["api_key"], "Content-Type": "application/json"})
        SigV4Auth(creds, "execute-api", "ap-southeast-2").add_auth(req)
        p = req.prepare()
        started = time.time()
        r = requests.post(p.url, headers=dict(p.headers), data=p.body)
        assert r.ok, r.text
        batch = r.json()["batchId"]
        time.sleep(1.0)
        busy = timed()

        def processed():
            req = AWSRequest(method="GET", url=base + f"/v1.1/jobs/bulkregister/{batch}",
                             headers={"x-api-key": created["api_key"]})
            SigV4Auth(creds, "execute-api", "ap-southeast-2").add_auth(req)
            p = req.prepare()
            page = requests.get(p.url, headers=dict(p.headers)).json()
            return sum(rec["status"] == "Processed" for rec in page["processed"])

        done_during = processed()
        while processed() < min(N, 1000):
            time.sleep(0.5)
        job_seconds = time.time() - started
        print(json.dumps({
            "requests": REQUESTS,
            "idle_p50_ms": round(statistics.median(idle), 1), "idle_p99_ms": round(percentile(idle, 99), 1),
            "during_job_p50_ms": round(statistics.median(busy), 1), "during_job_p99_ms": round(percentile(busy, 99), 1),
            "p50_ratio": round(statistics.median(busy) / statistics.median(idle), 2),
            "job_files": N, "job_files_done_while_timing": done_during,
            "job_files_per_s": round(min(N, 1000) / job_seconds, 1),
        }))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
