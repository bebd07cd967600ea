#!/usr/bin/env python3
"""The soak: three `facegate serve` nodes on one PostgreSQL under a mixed load of both dialects for
N minutes, with a node killed (SIGKILL) and restarted every two minutes and PostgreSQL itself
restarted once; then every acknowledged write is read back from every node.

A benchmark, not a test (`make test` does not run it): it takes minutes and its figures depend on
the machine. Run it through `scripts/soak`, which builds the binary and installs the pinned
harness packages first; docs/reliability.md ("Soak") says how to read the summary.

What runs:
- a throwaway PostgreSQL cluster (scripts/postgres start), two tenants made with `facegate tenant
  create`, and three nodes on loopback ports sharing it and one bulk folder (--bulk-source, one
  subfolder per tenant name, filled with the pack's photo and the faceapi photos of ../shared
  when present);
- client threads per dialect, each on its own ids: miiCloud enroll, add image (PUT), match_faces
  1:N and 1:1, GET, DELETE; NEC ID register, add event, update subject with tags, delete event,
  face/search, face/verify, list events, unregister, and tag create/rename/delete/list; one
  thread submits NEC bulk register jobs and follows them to the end; one probes /readyz of every
  node four times a second. Every request goes to a node picked at random, as a balancer would
  send it, and has a timeout;
- the main thread kills one node with SIGKILL every --kill-interval seconds (round robin; the
  first at half an interval, so that a two-minute run has one) and starts it again at once, and
  restarts PostgreSQL once near the middle (`pg_ctl restart -m fast`), away from a kill.

What is counted: each request by operation and status class (2xx, 4xx, 5xx, conn_error,
timeout). A connection error, a timeout or a 5xx is expected while a node or the database is
down, and counted; only a 2xx acknowledges a write, and only acknowledged writes go into the
ledger (subjects made, faces added, subjects and faces deleted, tags). An operation with no
answer is "uncertain" and expects nothing. The ledger is exact because each client alone
touches its own subjects and tags. During the run, reads check it too: a GET of a subject the
ledger holds must find it with its faces, and verifying a subject with its own photo must find
its template in that node's index (once the write is 5 s old).

At the end (load stopped, every node up, bulk jobs finished), every acknowledged subject is read
from EVERY node (miiCloud GET /miicloud/person/{id} for miiCloud persons, NEC GET
/v1.1/subjects/{id}/events for all) with every acknowledged face, every acknowledged delete must
answer 404 (a deleted face must be absent from its subject), every acknowledged tag must be
listed and no removed one, and each node's index must hold exactly the database's templates per
tenant (the facegate_templates gauge against COUNT(*) of face_samples). Failing items are retried
for --convergence seconds (the change log is followed within a second) before they count.

The summary is one JSON object, the last line of stdout (progress goes to stderr). Exit status:
0 when nothing was lost or came back, 1 when an acknowledged write was lost, a delete came back,
an index disagreed, a read during the run contradicted the ledger, a node exited unasked or never
came back, or a bulk job never finished; 2 when the soak could not run (usage, setup, an error of
its own), 3 past the hard deadline (--minutes plus --margin), 130 when interrupted. On every exit (Ctrl-C and errors
included) the nodes are killed and the cluster is stopped and removed; the work directory (node
logs, PostgreSQL's log) is kept when the run failed, for inspection.

usage: soak.py [--minutes N] [--kill-interval S] [--mii-clients C] [--nec-clients C]
               [--bulk-source DIR] [--bin FACEGATE] [--seed S] [--work-dir DIR] [--margin S]
               [--convergence S] [--pg-restart-at S] [--keep-work]     (--help says the defaults)
needs: python3 with requests and botocore (scripts/setup-test-tools), PostgreSQL (scripts/postgres)
"""
import argparse
import base64
import concurrent.futures
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
NODES = 3  # two keep serving while one is down, and a write on one is read back from two others
TENANTS = ("soak-a", "soak-b")  # two, so that the bulk runner shares out and tenants stay apart
REGION, SERVICE = "ap-southeast-2", "execute-api"
# One request's limits: connecting to a loopback port takes microseconds unless the node is
# gone; an answer may wait behind every other face request on a saturated 2-core machine, and
# one slower than a minute counts as the node being unavailable.
CONNECT_TIMEOUT, READ_TIMEOUT = 3, 60
# A node must answer /readyz within this after a (re)start: model loading and the index load
# take a few seconds; a node not ready after two minutes is counted as never having come back.
READY_TIMEOUT = 120
# Templates of a write made on another node reach this node's index within tens of
# milliseconds (docs/benchmarks.md); a live verify only counts a miss once the write is older.
INDEX_LAG_ALLOWANCE = 5.0
# Live subjects per client: enough that updates, deletes and 1:1 comparisons have targets. Past
# LIVE_TARGET a delete is likelier than an enrolment, so the gallery keeps a steady size and most
# writes are followed by their delete, which the read-back checks as well.
LIVE_TARGET = 15
LIVE_MAX = 30
# Tags each NEC client keeps: two clients per tenant stay well below the 64-tag cap even with
# a few uncertain creates left behind.
TAGS_PER_CLIENT = 5
# A bulk job of BULK_FILES files every BULK_INTERVAL seconds keeps the background runner busy
# part of the time without starving the live clients on two cores. One more job, of every file
# in the tenant's folder, goes to the node about to be killed BULK_BEFORE_KILL seconds before the
# kill: that node starts on it at once (a new job wakes its runner) and the job takes several
# seconds, so the kill lands mid-job, and the records the killed node had claimed must be taken
# over by the others once its lease runs out.
BULK_FILES, BULK_INTERVAL, BULK_BEFORE_KILL = 10, 30, 2
# How long the bulk claim of a killed node holds before the others take its records
# (--bulk-claim-lease-secs, 120 s by default): 30 s outlasts one record's read and inference on
# a saturated node many times over, and lets the jobs a kill interrupted finish within the run.
BULK_LEASE_SECS = 30
# After the load stops: the longest the unfinished bulk jobs may take (a lease plus the work).
BULK_DRAIN = 180
PROBE_EVERY = 0.25  # /readyz of each node: the resolution of the unavailability figures
RSS_EVERY = 10  # seconds between samples of each node's VmRSS


class SetupError(Exception):
    """The soak could not get going (cluster, tenants, nodes, photos): exit status 2."""


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def parse_args():
    p = argparse.ArgumentParser(description="facegate soak: 3 nodes on PostgreSQL, kills, mixed load")
    p.add_argument("--minutes", type=float, default=20,
                   help="load duration [20: ten kills, so every node dies three times, and a database restart]")
    p.add_argument("--kill-interval", type=float, default=120,
                   help="seconds between node kills [120: a node restarts in seconds, so each one serves "
                        "most of the time between its kills, and every node is killed every six minutes]")
    p.add_argument("--mii-clients", type=int, default=3,
                   help="miiCloud client threads [3; with 3 NEC ones, six in flight, as the kill -9 harness "
                        "runs: every request runs a face model, so six keep two cores busy]")
    p.add_argument("--nec-clients", type=int, default=3, help="NEC ID client threads [3]")
    p.add_argument("--bulk-source", default=None,
                   help="shared bulk folder; a subfolder per tenant is made in it [a folder in the work dir]")
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/facegate"))
    p.add_argument("--seed", type=int, default=None, help="seeds the clients' choices [random, printed]")
    p.add_argument("--work-dir", default=None, help="empty folder for node data and logs [a new temporary one]")
    p.add_argument("--margin", type=float, default=600,
                   help="seconds past --minutes before the hard deadline [600: setup, the last restarts, "
                        "the bulk drain and the read-back of every write from three nodes]")
    p.add_argument("--convergence", type=float, default=30,
                   help="seconds the final checks retry a failing item [30: the change log is followed "
                        "within a second; a node restarting after the database may take longer]")
    p.add_argument("--pg-restart-at", type=float, default=None,
                   help="seconds into the load to restart PostgreSQL [the middle, moved away from a kill]")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory even when the run passes")
    args = p.parse_args()
    if args.minutes <= 0 or args.kill_interval <= 0 or args.mii_clients < 0 or args.nec_clients < 0:
        p.error("--minutes and --kill-interval must be positive, client counts not negative")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


# ---- PostgreSQL -------------------------------------------------------------------------------

class Postgres:
    """The throwaway cluster of scripts/postgres: it lives in ${FACEGATE_PG_ROOT:-/tmp}/facegate-pg-<port>/
    (data/ and server.log), owned by the `postgres` user when we are root."""

    def __init__(self, work):
        self.url = None
        self.work = work
        out = subprocess.run(["bash", os.path.join(ROOT, "scripts/postgres"), "start"], capture_output=True,
                             text=True, timeout=180)
        if out.returncode != 0:
            raise SetupError(f"scripts/postgres start failed: {out.stderr.strip()}")
        self.url = out.stdout.strip().splitlines()[-1]
        # The wrapper stops the cluster from this file if we die without cleaning up.
        with open(os.path.join(work, "pg-url"), "w") as f:
            f.write(self.url + "\n")
        self.port = int(re.search(r":(\d+)/", self.url).group(1))
        self.dir = os.path.join(os.environ.get("FACEGATE_PG_ROOT", "/tmp"), f"facegate-pg-{self.port}")
        bins = sorted((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int)
        self.bin = f"/usr/lib/postgresql/{bins[-1]}/bin"  # the newest, as scripts/postgres takes

    def as_owner(self):
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def postmaster_pid(self):
        try:
            with open(f"{self.dir}/data/postmaster.pid") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def restart(self):
        """`pg_ctl restart -m fast`: rolls back open transactions and drops every connection.
        pg_ctl reuses the start's options (postmaster.opts); the log file must be named again."""
        cmd = self.as_owner() + [f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log",
                                 "-m", "fast", "-w", "-t", "60", "restart"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {out.stdout} {out.stderr}")

    def query(self, sql):
        out = subprocess.run([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "facegate",
                              "-d", "facegate", "-AtX", "-F", "\t", "-c", sql],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def stop(self, keep_log_in=None):
        if not self.url:
            return
        if keep_log_in:
            try:
                shutil.copyfile(f"{self.dir}/server.log", os.path.join(keep_log_in, "postgres.log"))
            except OSError:
                pass
        subprocess.run(["bash", os.path.join(ROOT, "scripts/postgres"), "stop", self.url],
                       capture_output=True, timeout=120)
        try:
            os.remove(os.path.join(self.work, "pg-url"))
        except OSError:
            pass
        self.url = None


# ---- nodes ------------------------------------------------------------------------------------

class Node:
    def __init__(self, index, args, pg_url, work, bulk_source):
        self.index = index
        self.name = f"node{index + 1}"
        self.port, self.metrics_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = os.path.join(work, self.name)
        os.makedirs(self.data, exist_ok=True)
        self.log_path = os.path.join(work, f"{self.name}.log")
        self.cmd = [args.bin, "serve", "--listen", f"127.0.0.1:{self.port}", "--database-url", pg_url,
                    "--data-dir", self.data, "--bulk-source", bulk_source,
                    "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                    "--bulk-claim-lease-secs", str(BULK_LEASE_SECS)]
        # The node dies with the soak even when the soak itself is killed (SIGKILL leaves no
        # cleanup): the kernel sends it SIGKILL when the thread that started it ends, and only
        # the main thread starts nodes.
        if shutil.which("setpriv"):
            self.cmd = ["setpriv", "--pdeathsig", "KILL", "--"] + self.cmd
        self.proc = None
        self.started = None

    def start(self):
        with open(self.log_path, "a") as logf:
            logf.write(f"---- soak: start at {datetime.datetime.now().isoformat()}\n")
            logf.flush()
            # A session of its own: a Ctrl-C at the terminal reaches the soak, which kills the
            # nodes itself, and not the nodes, which would shut down cleanly mid-run.
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()

    def wait_ready(self, limit=READY_TIMEOUT):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if requests.get(self.base + "/readyz", timeout=1).ok:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def rss_kib(self):
        if not self.alive():
            return None
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def templates(self):
        """The facegate_templates gauge by tenant id: the templates in this node's index."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=(CONNECT_TIMEOUT, 10)).text
        out = {}
        for m in re.finditer(r'^facegate_templates\{tenant_id="([^"]+)"\} (\S+)$', text, re.M):
            out[m.group(1)] = int(float(m.group(2)))
        return out


# ---- statistics -------------------------------------------------------------------------------

class Stats:
    """Requests by operation and status class, latencies, and each node's spells of
    unavailability (from the first failed answer to the next good one)."""

    def __init__(self, nodes):
        self.lock = threading.Lock()
        self.counts = {}
        self.latency = {}
        self.down_since = {n.name: None for n in nodes}
        self.outages = {n.name: [] for n in nodes}
        self.unexpected = []  # a few samples of 4xx answers the client did not expect
        self.server_errors = []  # the first 5xx answers, with the time and the request id
        self.t0 = time.monotonic()

    def record(self, node, op, cls, seconds):
        now = time.monotonic()
        with self.lock:
            by = self.counts.setdefault(op, {})
            by[cls] = by.get(cls, 0) + 1
            if cls not in ("conn_error", "timeout"):
                self.latency.setdefault(op, []).append(seconds)
            failed = cls in ("5xx", "conn_error", "timeout")
            name = node.name
            if failed and self.down_since[name] is None:
                self.down_since[name] = now
            elif not failed and self.down_since[name] is not None:
                self.outages[name].append((self.down_since[name] - self.t0, now - self.t0))
                self.down_since[name] = None

    def close_outages(self):
        now = time.monotonic()
        with self.lock:
            for name, since in self.down_since.items():
                if since is not None:
                    self.outages[name].append((since - self.t0, now - self.t0))
                    self.down_since[name] = None

    def note_server_error(self, node, op, status, text, request_id):
        """When and where a 5xx came, to tell a database restart's from an overload's (503)."""
        with self.lock:
            if len(self.server_errors) < 20:
                self.server_errors.append({"op": op, "node": node.name, "status": status,
                                           "at_s": round(time.monotonic() - self.t0, 1), "body": text[:200],
                                           "request_id": request_id})

    def note_unexpected(self, op, status, text):
        with self.lock:
            if len(self.unexpected) < 40:
                self.unexpected.append({"op": op, "status": status, "body": text[:200]})


def status_class(status):
    return f"{status // 100}xx"


# ---- ledger -----------------------------------------------------------------------------------

class Subject:
    """What the ledger holds about one subject: its id, how it was made, the faces acknowledged
    on it (miiCloud image names, NEC event ids) and those whose delete was acknowledged."""

    def __init__(self, tenant, sid, origin, photo, cpid=None):
        self.tenant = tenant
        self.id = sid
        self.origin = origin  # "miicloud", "necid" or "bulk"
        self.photo = photo  # every face of it is this photo, so verify with it always matches
        self.cpid = cpid
        self.images = set()  # miiCloud image names acknowledged
        self.events = set()  # NEC event ids acknowledged
        self.deleted_events = set()  # NEC event ids whose delete was acknowledged
        self.state = "live"  # "live", "deleted" (acknowledged) or "uncertain" (delete unanswered)
        self.acked_at = time.monotonic()


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.subjects = []
        self.acked = {"subjects_created": 0, "faces_added": 0, "subject_deletes": 0, "face_deletes": 0,
                      "tag_writes": 0, "bulk_jobs": 0}
        self.by_origin = {"miicloud": 0, "necid": 0, "bulk": 0}
        self.uncertain = {}
        self.live_violations = []  # reads during the run that contradicted the ledger
        self.misses, self.miss_samples = 0, []  # own-photo 1:1 comparisons that did not match
        self.tag_owners = []  # each NEC client's tag ledger

    def add(self, subject):
        with self.lock:
            self.subjects.append(subject)
            self.acked["subjects_created"] += 1
            self.by_origin[subject.origin] += 1

    def count(self, what, n=1):
        with self.lock:
            self.acked[what] += n

    def unsure(self, op):
        with self.lock:
            self.uncertain[op] = self.uncertain.get(op, 0) + 1

    def miss(self, op, node, subject, score, age):
        """A 1:1 comparison of a subject with its own photo that did not match: within
        INDEX_LAG_ALLOWANCE of the write, the other nodes' indexes may not have it yet."""
        with self.lock:
            self.misses += 1
            if len(self.miss_samples) < 10:
                self.miss_samples.append({"op": op, "node": node.name, "subject": subject.id, "score": score,
                                          "since_ack_s": round(age, 3)})

    def violation(self, what):
        with self.lock:
            self.live_violations.append(what)
        log(f"VIOLATION (live): {what}")


class Tenant:
    def __init__(self, name, created):
        self.name = name
        self.id = created["id"]
        self.token = created["token"]
        self.api_key = created["api_key"]
        self.creds = Credentials(created["access_key_id"], created["secret_access_key"])


# ---- HTTP -------------------------------------------------------------------------------------

class Client:
    """Sends one request to a node and counts it. Every request is a new connection (a kept-alive
    one to a node killed since would turn the next request's failure into noise) with a timeout,
    and carries its own x-request-id, which the node logs and which makes every NEC signature
    unique (the replay guard refuses a signature seen before)."""

    def __init__(self, stats, nodes):
        self.stats = stats
        self.nodes = nodes

    def send(self, node, op, method, path, tenant, *, nec_body=None, files=None, data=None, expect=()):
        """Returns the response, or None without an answer. A 4xx outside `expect` is noted."""
        rid = "soak-" + uuid.uuid4().hex
        headers = {"x-request-id": rid}
        url = node.base + path
        started = time.monotonic()
        try:
            if files is not None or data is not None or path.startswith("/miicloud"):
                headers["Authorization"] = f"Token {tenant.token}"
                r = requests.request(method, url, headers=headers, files=files, data=data,
                                     timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            else:
                body = json.dumps(nec_body) if nec_body is not None else None
                headers.update({"Accept": "application/json", "x-api-key": tenant.api_key})
                if body is not None:
                    headers["Content-Type"] = "application/json"
                req = AWSRequest(method=method, url=url, data=body, headers=headers)
                SigV4Auth(tenant.creds, SERVICE, REGION).add_auth(req)
                p = req.prepare()
                r = requests.request(p.method, p.url, headers=dict(p.headers), data=p.body,
                                     timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except requests.Timeout:
            self.stats.record(node, op, "timeout", time.monotonic() - started)
            return None
        except requests.RequestException:
            self.stats.record(node, op, "conn_error", time.monotonic() - started)
            return None
        self.stats.record(node, op, status_class(r.status_code), time.monotonic() - started)
        if 400 <= r.status_code < 500 and r.status_code not in expect:
            self.stats.note_unexpected(op, r.status_code, r.text)
        elif r.status_code >= 500:
            self.stats.note_server_error(node, op, r.status_code, r.text, rid)
        return r


def body_of(r):
    try:
        return r.json()
    except ValueError:
        return {}


# ---- photos -----------------------------------------------------------------------------------

class Photo:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        with open(path, "rb") as f:
            self.bytes = f.read()
        self.b64 = base64.b64encode(self.bytes).decode()
        self.mime = "image/png" if path.lower().endswith(".png") else "image/jpeg"


def candidate_photos():
    """One-face photos for enrolment and many-face ones for match_faces: the pack's, and the
    faceapi set of ../shared when it is there."""
    pack = os.path.join(ROOT, ".facegate/models/buffalo_s")
    single = [os.path.join(pack, "yaoming.jpg")]
    crowds = [os.path.join(pack, n) for n in ("players.jpg", "gdp.jpg")]
    shared = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets", "faceapi"))
    if not os.path.isdir(shared):
        shared = "/work/shared/datasets/faceapi"
    if os.path.isdir(shared):
        for sub, into in (("identities", single), ("groups", crowds)):
            d = os.path.join(shared, sub)
            if os.path.isdir(d):
                into += sorted(os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs
                               if f.lower().endswith((".jpg", ".jpeg", ".png")))
    else:
        log(f"no faceapi photos at {shared}: enrolling the pack's one-face photo only")
    return [p for p in single if os.path.isfile(p)], [p for p in crowds if os.path.isfile(p)]


def usable_photos(client, node, tenant, paths):
    """The photos that NEC ID would register: exactly one face, of registrable quality."""
    keep = []
    for path in paths:
        photo = Photo(path)
        r = client.send(node, "setup_extract", "POST", "/v1.1/face/extract", tenant, nec_body={"faces": photo.b64},
                        expect=(400, 404))
        if r is None or r.status_code != 200:
            continue
        faces = body_of(r).get("faces", [])
        if len(faces) == 1 and float(faces[0]["attributes"]["faceQualityScore"]) >= 0.6:
            keep.append(photo)
    return keep


# ---- client threads ---------------------------------------------------------------------------

class Worker(threading.Thread):
    def __init__(self, name, run, stop, seed):
        super().__init__(name=name, daemon=True)
        self.run_body = run
        self.stop = stop
        self.rng = random.Random(seed)
        self.error = None

    def run(self):
        try:
            self.run_body(self)
        except Exception:  # noqa: BLE001 - a crashed client is reported, not silently lost
            self.error = traceback.format_exc()
            log(f"client {self.name} crashed:\n{self.error}")


def pause_after(r):
    """A short back-off after a failed answer, as a client library would, instead of spinning
    on a dead node."""
    if r is None or r.status_code >= 500:
        time.sleep(0.2)


def mii_client(ctx, tenant, cid):
    client, ledger, photos, crowds = ctx.client, ctx.ledger, ctx.photos, ctx.crowds
    live = []
    counter = 0

    def node(w):
        return w.rng.choice(ctx.nodes)

    def body(w):
        nonlocal counter
        while not w.stop.is_set():
            choices = [("enroll", 3 if len(live) < LIVE_MAX else 0)]
            if live:
                choices += [("add_image", 2), ("get", 2), ("match_1to1", 2),
                            ("delete", 3 if len(live) > LIVE_TARGET else 1)]
            choices += [("match_faces", 3)]
            op = w.rng.choices([c for c, _ in choices], [wt for _, wt in choices])[0]
            n = node(w)
            if op == "enroll":
                counter += 1
                cpid = f"soak-m{cid}-{counter}"
                photo = w.rng.choice(photos)
                r = client.send(n, "mii_enroll", "POST", "/miicloud/person", tenant,
                                data={"customer_person_id": cpid, "first_name": f"M{cid}", "last_name": str(counter)},
                                files={"image_path": (photo.name, photo.bytes, photo.mime)})
                if r is None or r.status_code >= 500:
                    ledger.unsure("mii_enroll")
                elif r.status_code == 200:
                    b = body_of(r)
                    s = Subject(tenant, b["miicloud_person_id"], "miicloud", photo, cpid)
                    s.images.add(b["image"])
                    ledger.add(s)
                    live.append(s)
            elif op == "add_image":
                s = w.rng.choice(live)
                r = client.send(n, "mii_add_image", "PUT", f"/miicloud/person/{s.cpid}", tenant,
                                data={"first_name": f"M{cid}", "last_name": "updated"},
                                files={"image_path": (s.photo.name, s.photo.bytes, s.photo.mime)})
                if r is None or r.status_code >= 500:
                    ledger.unsure("mii_add_image")
                elif r.status_code == 200:
                    # Every image a 2xx lists is committed, the new one among them.
                    s.images.update(i["image"] for i in body_of(r).get("images", []))
                    ledger.count("faces_added")
                elif r.status_code == 404:
                    ledger.violation(f"{n.name}: PUT of acknowledged person {s.cpid} ({s.id}) answered 404")
            elif op == "get":
                s = w.rng.choice(live)
                r = client.send(n, "mii_get", "GET", f"/miicloud/person/{s.cpid}", tenant)
                if r is not None and r.status_code == 404:
                    ledger.violation(f"{n.name}: GET of acknowledged person {s.cpid} ({s.id}) answered 404")
                elif r is not None and r.status_code == 200:
                    have = {i["image"] for i in body_of(r).get("images", [])}
                    if not s.images <= have:
                        ledger.violation(f"{n.name}: person {s.cpid} lacks acknowledged images {s.images - have}")
            elif op == "match_1to1":
                s = w.rng.choice(live)
                r = client.send(n, "mii_match_1to1", "POST", "/miicloud/match_faces", tenant,
                                data={"customer_person_id": s.cpid},
                                files={"image_path": (s.photo.name, s.photo.bytes, s.photo.mime)})
                if r is not None and r.status_code == 404:
                    ledger.violation(f"{n.name}: 1:1 match with acknowledged person {s.cpid} answered 404")
                elif r is not None and r.status_code == 200:
                    faces = body_of(r).get("faces", [])
                    if faces and faces[0].get("match_status") != "known":
                        age = time.monotonic() - s.acked_at
                        ledger.miss("mii_match_1to1", n, s, faces[0].get("match_confidence"), age)
                        if faces[0].get("match_confidence", 0) == 0 and age > INDEX_LAG_ALLOWANCE:
                            ledger.violation(f"{n.name}: index has no template of acknowledged person {s.cpid} ({s.id})")
            elif op == "delete":
                s = w.rng.choice(live)
                live.remove(s)
                r = client.send(n, "mii_delete", "DELETE", f"/miicloud/person/{s.cpid}", tenant)
                if r is None or r.status_code >= 500:
                    s.state = "uncertain"
                    ledger.unsure("mii_delete")
                elif r.status_code == 200:
                    s.state = "deleted"
                    ledger.count("subject_deletes")
                elif r.status_code == 404:
                    s.state = "uncertain"
                    ledger.violation(f"{n.name}: DELETE of acknowledged person {s.cpid} ({s.id}) answered 404")
            else:
                photo = w.rng.choice(crowds + photos)
                r = client.send(n, "mii_match_faces", "POST", "/miicloud/match_faces", tenant,
                                files={"image_path": (photo.name, photo.bytes, photo.mime)})
            pause_after(r)

    return body


def nec_client(ctx, tenant, cid):
    client, ledger, photos = ctx.client, ctx.ledger, ctx.photos
    live = []
    tags = {"live": [], "removed": set(), "uncertain": set(), "counter": 0, "tenant": tenant, "owner": f"n{cid}"}
    ledger.tag_owners.append(tags)

    def new_tag_name():
        tags["counter"] += 1
        return f"n{cid}-t{tags['counter']}"

    def tag_done(r, op, on_ok, names):
        if r is None or r.status_code >= 500:
            ledger.unsure(op)
            for name in names:
                if name in tags["live"]:
                    tags["live"].remove(name)
                tags["uncertain"].add(name)
        elif r.status_code == 200:
            on_ok()
            ledger.count("tag_writes")

    def body(w):
        while not w.stop.is_set():
            choices = [("register", 3 if len(live) < LIVE_MAX else 0), ("search", 3)]
            if live:
                choices += [("add_event", 2), ("assign_tags", 2), ("verify", 2), ("get_events", 2),
                            ("delete", 3 if len(live) > LIVE_TARGET else 1)]
                if any(len(s.events) > 1 for s in live):
                    choices.append(("delete_event", 1))
            choices += [("tag_create", 1 if len(tags["live"]) < TAGS_PER_CLIENT else 0),
                        ("tag_rename", 0.5 if tags["live"] else 0), ("tag_delete", 0.3 if tags["live"] else 0),
                        ("tag_list", 0.5)]
            op = w.rng.choices([c for c, _ in choices], [wt for _, wt in choices])[0]
            n = w.rng.choice(ctx.nodes)
            if op == "register":
                photo = w.rng.choice(photos)
                assign = w.rng.sample(tags["live"], min(len(tags["live"]), w.rng.randint(0, 2)))
                r = client.send(n, "nec_register", "POST", "/v1.1/subjects", tenant,
                                nec_body={"face": photo.b64, "tags": assign})
                if r is None or r.status_code >= 500:
                    ledger.unsure("nec_register")
                elif r.status_code == 201:
                    b = body_of(r)
                    s = Subject(tenant, b["id"], "necid", photo)
                    s.events.add(b["eventId"])
                    ledger.add(s)
                    live.append(s)
            elif op in ("add_event", "assign_tags"):
                s = w.rng.choice(live)
                if op == "add_event":
                    r = client.send(n, "nec_add_event", "POST", f"/v1.1/subjects/{s.id}/events", tenant,
                                    nec_body={"face": s.photo.b64})
                    ok = 201
                else:
                    # Update Subject adds an event and replaces the tags: the tag assignment.
                    assign = w.rng.sample(tags["live"], min(len(tags["live"]), w.rng.randint(0, 2)))
                    r = client.send(n, "nec_update_tags", "PUT", f"/v1.1/subjects/{s.id}", tenant,
                                    nec_body={"face": s.photo.b64, "tags": assign})
                    ok = 200
                if r is None or r.status_code >= 500:
                    ledger.unsure("nec_" + op)
                elif r.status_code == ok:
                    s.events.add(body_of(r)["eventId"])
                    ledger.count("faces_added")
                elif r.status_code == 404:
                    ledger.violation(f"{n.name}: {op} on acknowledged subject {s.id} answered 404")
            elif op == "delete_event":
                s = w.rng.choice([s for s in live if len(s.events) > 1])
                ev = w.rng.choice(sorted(s.events))
                s.events.discard(ev)
                r = client.send(n, "nec_delete_event", "DELETE", f"/v1.1/subjects/{s.id}/events/{ev}", tenant)
                if r is None or r.status_code >= 500:
                    ledger.unsure("nec_delete_event")  # either way: neither expected nor forbidden
                elif r.status_code == 204:
                    s.deleted_events.add(ev)
                    ledger.count("face_deletes")
                elif r.status_code == 404:
                    ledger.violation(f"{n.name}: delete of acknowledged event {ev} of {s.id} answered 404")
            elif op == "verify":
                s = w.rng.choice(live)
                r = client.send(n, "nec_verify", "POST", "/v1.1/face/verify", tenant,
                                nec_body={"probe": s.photo.b64, "id": s.id}, expect=(404,))
                if r is not None and r.status_code == 404:
                    b = body_of(r)
                    age = time.monotonic() - s.acked_at
                    ledger.miss("nec_verify", n, s, b.get("score"), age)
                    if "score" not in b:
                        ledger.violation(f"{n.name}: verify against acknowledged subject {s.id}: unknown subject")
                    elif b["score"] == 0 and age > INDEX_LAG_ALLOWANCE:
                        ledger.violation(f"{n.name}: index has no template of acknowledged subject {s.id}")
            elif op == "get_events":
                s = w.rng.choice(live)
                r = client.send(n, "nec_get_events", "GET", f"/v1.1/subjects/{s.id}/events", tenant)
                if r is not None and r.status_code == 404:
                    ledger.violation(f"{n.name}: events of acknowledged subject {s.id} answered 404")
                elif r is not None and r.status_code == 200:
                    have = {e["id"] for e in body_of(r).get("events", [])}
                    if not s.events <= have:
                        ledger.violation(f"{n.name}: subject {s.id} lacks acknowledged events {s.events - have}")
                    if s.deleted_events & have:
                        ledger.violation(f"{n.name}: subject {s.id} still has deleted events {s.deleted_events & have}")
            elif op == "delete":
                s = w.rng.choice(live)
                live.remove(s)
                r = client.send(n, "nec_delete", "DELETE", f"/v1.1/subjects/{s.id}", tenant)
                if r is None or r.status_code >= 500:
                    s.state = "uncertain"
                    ledger.unsure("nec_delete")
                elif r.status_code == 204:
                    s.state = "deleted"
                    ledger.count("subject_deletes")
                elif r.status_code == 404:
                    s.state = "uncertain"
                    ledger.violation(f"{n.name}: DELETE of acknowledged subject {s.id} answered 404")
            elif op == "search":
                photo = w.rng.choice(photos)
                search = {"probe": photo.b64, "limit": w.rng.choice([1, 10, 50])}
                if tags["live"] and w.rng.random() < 0.3:
                    search["tags"] = [w.rng.choice(tags["live"])]
                r = client.send(n, "nec_search", "POST", "/v1.1/face/search", tenant, nec_body=search, expect=(404,))
            elif op == "tag_create":
                name = new_tag_name()
                r = client.send(n, "nec_tag_create", "POST", f"/v1.1/tags/{name}", tenant)
                tag_done(r, "nec_tag_create", lambda: tags["live"].append(name), [name])
            elif op == "tag_rename":
                old = w.rng.choice(tags["live"])
                new = f"{old}-r{tags['counter']}"
                tags["counter"] += 1

                def renamed(old=old, new=new):
                    tags["live"][tags["live"].index(old)] = new
                    tags["removed"].add(old)

                r = client.send(n, "nec_tag_rename", "PUT", f"/v1.1/tags/{old}", tenant, nec_body={"newName": new})
                tag_done(r, "nec_tag_rename", renamed, [old, new])
            elif op == "tag_delete":
                old = w.rng.choice(tags["live"])

                def deleted(old=old):
                    tags["live"].remove(old)
                    tags["removed"].add(old)

                r = client.send(n, "nec_tag_delete", "DELETE", f"/v1.1/tags/{old}", tenant)
                tag_done(r, "nec_tag_delete", deleted, [old])
            else:
                r = client.send(n, "nec_tag_list", "GET", "/v1.1/tags", tenant)
                if r is not None and r.status_code == 200:
                    listed = set(body_of(r).get("tags", []))
                    missing = set(tags["live"]) - listed
                    back = (tags["removed"] - tags["uncertain"]) & listed
                    if missing or back:
                        ledger.violation(f"{n.name}: tags of {tags['owner']}: missing {missing}, removed but listed {back}")
            pause_after(r)

    return body


def bulk_client(ctx):
    """Submits a job of BULK_FILES files every BULK_INTERVAL seconds and one of every file just
    before each kill, alternating tenants, and follows every job until each record is processed;
    a Success record is an acknowledged subject with its one event."""
    client, ledger = ctx.client, ctx.ledger
    ctx.bulk = {"jobs_submitted": 0, "jobs_finished": 0, "records": 0, "success": 0, "failed": {},
                "duplicate_subjects": 0, "job_seconds_max": 0.0, "pending": []}
    b = ctx.bulk

    def poll(w, job):
        tenant, batch = job["tenant"], job["batch"]
        n = w.rng.choice(ctx.nodes)
        r = client.send(n, "bulk_status", "GET", f"/v1.1/jobs/bulkregister/{batch}", tenant)
        if r is None or r.status_code != 200:
            return False
        recs = body_of(r).get("processed", [])
        if len(recs) != len(job["files"]) or any(rec["status"] != "Processed" for rec in recs):
            return False
        seen = set()
        for rec in recs:
            b["records"] += 1
            if rec["registerStatus"] == "Success":
                b["success"] += 1
                if rec["subjectId"] in seen:
                    b["duplicate_subjects"] += 1
                    ledger.violation(f"bulk job {batch}: subject {rec['subjectId']} registered by two records")
                seen.add(rec["subjectId"])
                s = Subject(tenant, rec["subjectId"], "bulk", ctx.bulk_photos[tenant.name][rec["filename"]])
                s.events.add(rec["eventId"])
                ledger.add(s)
            else:
                reason = rec["reason"].split(":")[0]
                b["failed"][reason] = b["failed"].get(reason, 0) + 1
        b["jobs_finished"] += 1
        # A job whose records a killed node had claimed takes at least a lease to finish.
        b["job_seconds_max"] = max(b["job_seconds_max"], round(time.monotonic() - job["submitted"], 1))
        return True

    def body(w):
        turn = 0
        next_job = time.monotonic() + 5
        while not (w.stop.is_set() and (not b["pending"] or time.monotonic() > ctx.bulk_deadline)):
            if not w.stop.is_set() and (time.monotonic() >= next_job or ctx.bulk_now.is_set()):
                before_kill = ctx.bulk_now.is_set()
                ctx.bulk_now.clear()
                tenant = ctx.tenants[turn % len(ctx.tenants)]
                turn += 1
                files = sorted(ctx.bulk_photos[tenant.name])
                names = files if before_kill else w.rng.sample(files, min(BULK_FILES, len(files)))
                entries = [{"filename": f, "tags": ["bulk"] if w.rng.random() < 0.5 else []} for f in names]
                n = ctx.next_victim if before_kill else w.rng.choice(ctx.nodes)
                r = client.send(n, "bulk_submit", "POST", "/v1.1/jobs/bulkregister", tenant,
                                nec_body={"registrations": entries})
                if r is None or r.status_code >= 500:
                    ledger.unsure("bulk_submit")
                elif r.status_code == 200:
                    b["jobs_submitted"] += 1
                    ledger.count("bulk_jobs")
                    b["pending"].append({"tenant": tenant, "batch": body_of(r)["batchId"], "files": names,
                                         "submitted": time.monotonic()})
                next_job = time.monotonic() + BULK_INTERVAL
            for job in list(b["pending"]):
                if poll(w, job):
                    b["pending"].remove(job)
            ctx.bulk_now.wait(2)

    return body


def prober(ctx):
    def body(w):
        while not w.stop.is_set():
            for n in ctx.nodes:
                started = time.monotonic()
                try:
                    r = requests.get(n.base + "/readyz", timeout=(1, 2))
                    cls = status_class(r.status_code)
                except requests.Timeout:
                    cls = "timeout"
                except requests.RequestException:
                    cls = "conn_error"
                ctx.stats.record(n, "readyz", cls, time.monotonic() - started)
            w.stop.wait(PROBE_EVERY)

    return body


# ---- the final read-back -----------------------------------------------------------------------

def check_subject(ctx, node, s):
    """Problems with one subject on one node ([] when it agrees with the ledger): (kind, the
    subject's id, what), the kind "lost" (a write) or "resurrected" (a delete)."""
    client = ctx.client
    problems = []
    if s.state == "deleted":
        if s.cpid:
            r = client.send(node, "final_mii_get", "GET", f"/miicloud/person/{s.cpid}", s.tenant, expect=(404,))
            if r is None or r.status_code != 404:
                problems.append(("resurrected", s.id, f"{node.name}: deleted person {s.cpid} ({s.id}) answered "
                                 f"{r.status_code if r is not None else 'nothing'}"))
        r = client.send(node, "final_nec_events", "GET", f"/v1.1/subjects/{s.id}/events", s.tenant, expect=(404,))
        if r is None or r.status_code != 404:
            problems.append(("resurrected", s.id, f"{node.name}: deleted subject {s.id} answered "
                             f"{r.status_code if r is not None else 'nothing'}"))
        return problems
    if s.cpid:
        r = client.send(node, "final_mii_get", "GET", f"/miicloud/person/{s.cpid}", s.tenant, expect=(404,))
        if s.state == "uncertain" and r is not None and r.status_code == 404:
            return []
        if r is None or r.status_code != 200:
            problems.append(("lost", s.id, f"{node.name}: person {s.cpid} ({s.id}) answered "
                             f"{r.status_code if r is not None else 'nothing'}"))
        else:
            b = body_of(r)
            have = {i["image"] for i in b.get("images", [])}
            if b.get("miicloud_person_id") != s.id:
                problems.append(("lost", s.id, f"{node.name}: person {s.cpid} is {b.get('miicloud_person_id')}, not {s.id}"))
            if not s.images <= have:
                problems.append(("lost", s.id, f"{node.name}: person {s.cpid} lacks images {sorted(s.images - have)}"))
    r = client.send(node, "final_nec_events", "GET", f"/v1.1/subjects/{s.id}/events", s.tenant, expect=(404,))
    if s.state == "uncertain" and r is not None and r.status_code == 404:
        return problems
    if r is None or r.status_code != 200:
        problems.append(("lost", s.id, f"{node.name}: subject {s.id} events answered {r.status_code if r is not None else 'nothing'}"))
        return problems
    have = {e["id"] for e in body_of(r).get("events", [])}
    if not s.events <= have:
        problems.append(("lost", s.id, f"{node.name}: subject {s.id} lacks events {sorted(s.events - have)}"))
    if s.deleted_events & have:
        problems.append(("resurrected", s.id, f"{node.name}: subject {s.id} has deleted events {sorted(s.deleted_events & have)}"))
    if len(have) < max(len(s.images), 1):
        problems.append(("lost", s.id, f"{node.name}: subject {s.id} has {len(have)} events, {len(s.images)} images acknowledged"))
    return problems


def check_tags(ctx, node, tenant):
    r = ctx.client.send(node, "final_tag_list", "GET", "/v1.1/tags", tenant)
    if r is None or r.status_code != 200:
        return [("check_error", f"tags {tenant.name}", f"{node.name}: tag list of {tenant.name} answered {r.status_code if r is not None else 'nothing'}")]
    listed = set(body_of(r).get("tags", []))
    problems = []
    for owner in ctx.ledger.tag_owners:
        if owner["tenant"] is not tenant:
            continue
        for name in set(owner["live"]) - listed:
            problems.append(("lost", f"tag {tenant.name}/{name}", f"{node.name}: tag {name} of {tenant.name} is missing"))
        for name in (owner["removed"] - owner["uncertain"]) & listed:
            problems.append(("resurrected", f"tag {tenant.name}/{name}", f"{node.name}: removed tag {name} of {tenant.name} is listed"))
    if "bulk" not in listed:
        problems.append(("lost", f"tag {tenant.name}/bulk", f"{node.name}: tag bulk of {tenant.name} is missing"))
    return problems


def check_index(ctx, node):
    """The node's index against the database: templates per tenant."""
    stored = {row[0]: int(row[1]) for row in ctx.pg.query(
        "SELECT tenant_id, COUNT(*) FROM face_samples GROUP BY tenant_id")}
    try:
        indexed = node.templates()
    except requests.RequestException as e:
        return [("check_error", node.name, f"{node.name}: metrics unreadable: {e}")]
    problems = []
    ctx.index_seen["database"] = {t.name: stored.get(t.id, 0) for t in ctx.tenants}
    ctx.index_seen[node.name] = {t.name: indexed.get(t.id, 0) for t in ctx.tenants}
    for t in ctx.tenants:
        if indexed.get(t.id, 0) != stored.get(t.id, 0):
            problems.append(("index", node.name, f"{node.name}: index holds {indexed.get(t.id, 0)} templates of {t.name}, "
                             f"the database {stored.get(t.id, 0)}"))
    return problems


def read_back(ctx, limit):
    """Every check on every node; failing ones retried until they pass or `limit` seconds have
    gone. Returns the problems left, the number of checks made, how many items needed a retry,
    and the seconds from the first pass's end until the last failing item passed (0 when the
    first pass found nothing)."""
    items = [("subject", n, s) for n in ctx.nodes for s in ctx.ledger.subjects]
    items += [("tags", n, t) for n in ctx.nodes for t in ctx.tenants]
    items += [("index", n, None) for n in ctx.nodes]

    def run(item):
        kind, n, what = item
        try:
            if kind == "subject":
                return check_subject(ctx, n, what)
            if kind == "tags":
                return check_tags(ctx, n, what)
            return check_index(ctx, n)
        except Exception as e:  # noqa: BLE001 - a check that cannot run is a failure, not a crash
            return [("check_error", n.name, f"{n.name}: {kind} check failed: {e!r}")]

    pending, checked, retried = items, 0, 0
    first_pass_end, converged = None, 0.0
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        while True:
            results = list(pool.map(run, pending))
            checked += len(pending)
            now = time.monotonic()
            if first_pass_end is None:
                first_pass_end = now
            failing = [item for item, problems in zip(pending, results) if problems]
            if not failing:
                if pending is not items:
                    converged = round(now - first_pass_end, 1)
                return [], checked, retried, converged
            if now - first_pass_end > limit:
                return [p for ps in results for p in ps], checked, retried, None
            if pending is items:
                retried = len(failing)
            log(f"read-back: {len(failing)} of {len(pending)} checks failing; retrying")
            pending = failing
            time.sleep(1)


# ---- the run ----------------------------------------------------------------------------------

class Context:
    pass


def schedule(duration, interval, pg_at):
    kills = []
    t = interval / 2
    while t < duration - 5:
        kills.append(t)
        t += interval
    if pg_at is None:
        pg_at = duration / 2
        nearest = min(kills, key=lambda k: abs(k - pg_at)) if kills else None
        if nearest is not None and abs(nearest - pg_at) < interval / 4:
            pg_at = nearest + interval / 4
    return kills, min(pg_at, duration - 5)


def main():
    args = parse_args()
    if not os.access(args.bin, os.X_OK):
        log(f"no facegate binary at {args.bin}: run scripts/soak, which builds it")
        return 2
    if args.work_dir:
        # It is removed at the end: refuse a folder that holds anything already.
        if os.path.isdir(args.work_dir) and os.listdir(args.work_dir):
            log(f"--work-dir {args.work_dir} is not empty")
            return 2
        os.makedirs(args.work_dir, exist_ok=True)
        work = args.work_dir
    else:
        work = tempfile.mkdtemp(prefix="facegate-soak-")
    duration = args.minutes * 60
    deadline_at = time.monotonic() + duration + args.margin
    ctx = Context()
    ctx.pg = None
    ctx.nodes = []
    made_bulk_dirs = []
    cleaned = threading.Lock()
    # Kept for inspection unless the run passed or was interrupted on purpose.
    state = {"keep": True}

    def cleanup():
        if not cleaned.acquire(blocking=False):
            return
        keep = state["keep"] or args.keep_work
        for n in ctx.nodes:
            n.kill()
        if ctx.pg is not None:
            ctx.pg.stop(keep_log_in=work if keep else None)
        for d in made_bulk_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if keep:
            log(f"work directory kept for inspection: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def past_deadline():
        log(f"hard deadline ({args.minutes} min + {args.margin:.0f} s) passed: stopping")
        cleanup()
        os._exit(3)

    watchdog = threading.Timer(duration + args.margin, past_deadline)
    watchdog.daemon = True
    watchdog.start()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: started in the background by a non-interactive shell, Python inherits it
    # ignored, and a Ctrl-C must still clean up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return run(args, ctx, work, duration, deadline_at, made_bulk_dirs, state)
    except KeyboardInterrupt as e:
        log(f"interrupted ({e or 'Ctrl-C'}): cleaning up")
        state["keep"] = False
        return 130
    except SetupError as e:
        log(f"setup failed: {e}")
        return 2
    except Exception:  # noqa: BLE001 - an error of the soak's own: no verdict on facegate
        log(f"the soak failed:\n{traceback.format_exc()}")
        return 2
    finally:
        cleanup()


def run(args, ctx, work, duration, deadline_at, made_bulk_dirs, state):
    rng = random.Random(args.seed)
    log(f"seed {args.seed}; work directory {work}")
    ctx.pg = Postgres(work)
    log(f"PostgreSQL at {ctx.pg.url} ({ctx.pg.dir})")
    setup_dir = os.path.join(work, "setup")
    os.makedirs(setup_dir, exist_ok=True)
    ctx.tenants = []
    for name in TENANTS:
        out = subprocess.run([args.bin, "tenant", "create", name, "--database-url", ctx.pg.url, "--data-dir", setup_dir],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        if out.returncode != 0:
            raise SetupError(f"tenant create {name}: {out.stderr.strip()}")
        ctx.tenants.append(Tenant(name, json.loads(out.stdout)))

    bulk_source = args.bulk_source or os.path.join(work, "bucket")
    os.makedirs(bulk_source, exist_ok=True)
    ctx.nodes = [Node(i, args, ctx.pg.url, work, bulk_source) for i in range(NODES)]
    ctx.stats = Stats(ctx.nodes)
    ctx.client = Client(ctx.stats, ctx.nodes)
    ctx.ledger = Ledger()
    for n in ctx.nodes:
        n.start()
    for n in ctx.nodes:
        if not n.wait_ready():
            raise SetupError(f"{n.name} did not become ready; see {n.log_path}")
    log("3 nodes ready: " + ", ".join(f"{n.name} {n.base} (pid {n.proc.pid})" for n in ctx.nodes))

    singles, crowds = candidate_photos()
    photos = usable_photos(ctx.client, ctx.nodes[0], ctx.tenants[0], singles)
    if not photos:
        raise SetupError("no usable one-face photo (run scripts/setup)")
    ctx.photos = photos
    ctx.crowds = [Photo(p) for p in crowds]
    log(f"{len(photos)} one-face photos, {len(ctx.crowds)} group photos")
    # The bulk folder: every usable photo under each tenant's name.
    ctx.bulk_photos = {}
    for t in ctx.tenants:
        d = os.path.join(bulk_source, t.name)
        if not os.path.exists(d):
            made_bulk_dirs.append(d)
        os.makedirs(d, exist_ok=True)
        ctx.bulk_photos[t.name] = {}
        for i, photo in enumerate(photos):
            fname = f"soak{i:03d}{os.path.splitext(photo.name)[1].lower()}"
            with open(os.path.join(d, fname), "wb") as f:
                f.write(photo.bytes)
            ctx.bulk_photos[t.name][fname] = photo
        r = ctx.client.send(ctx.nodes[0], "setup_tag", "POST", "/v1.1/tags/bulk", t)
        if r is None or r.status_code != 200:
            raise SetupError(f"could not create the bulk tag of {t.name}")

    rss = {n.name: {"start_kib": n.rss_kib(), "max_kib": n.rss_kib(), "at_kill": []} for n in ctx.nodes}
    kills, pg_at = schedule(duration, args.kill_interval, args.pg_restart_at)
    log(f"load for {duration:.0f} s: kills at {[round(k) for k in kills]} s, PostgreSQL restart at {pg_at:.0f} s")

    stop = threading.Event()
    ctx.bulk_deadline = float("inf")
    ctx.bulk_now = threading.Event()
    workers = []
    cid = 0
    for i in range(args.mii_clients):
        cid += 1
        workers.append(Worker(f"mii{cid}", mii_client(ctx, ctx.tenants[i % len(ctx.tenants)], cid), stop,
                              rng.randrange(1 << 30)))
    for i in range(args.nec_clients):
        cid += 1
        workers.append(Worker(f"nec{cid}", nec_client(ctx, ctx.tenants[i % len(ctx.tenants)], cid), stop,
                              rng.randrange(1 << 30)))
    bulk = Worker("bulk", bulk_client(ctx), stop, rng.randrange(1 << 30))
    probe_stop = threading.Event()
    probe = Worker("probe", prober(ctx), probe_stop, 0)
    t0 = time.monotonic()
    ctx.stats.t0 = t0
    for w in workers + [bulk, probe]:
        w.start()

    events = [(k, "kill") for k in kills] + [(pg_at, "pg")]
    events += [(max(0.0, k - BULK_BEFORE_KILL), "bulk") for k in kills]
    events.sort()
    restarts, never_back, exited, pg_restart = [], [], [], None
    kill_windows = {n.name: [] for n in ctx.nodes}
    turn = 0
    next_rss = t0 + RSS_EVERY
    last_report = t0
    while True:
        now = time.monotonic()
        elapsed = now - t0
        if elapsed >= duration:
            break
        if now >= next_rss:
            for n in ctx.nodes:
                v = n.rss_kib()
                if v is not None:
                    rss[n.name]["max_kib"] = max(rss[n.name]["max_kib"] or 0, v)
            next_rss = now + RSS_EVERY
        if now - last_report >= 60:
            total = sum(sum(c.values()) for c in ctx.stats.counts.values())
            log(f"t={elapsed:.0f} s: {total} requests, {ctx.ledger.acked['subjects_created']} subjects acknowledged, "
                f"{len(ctx.ledger.live_violations)} live violations")
            last_report = now
        # Only the soak kills nodes: one that exited by itself (or did not come back after its
        # kill) is a finding, and is started again between events.
        for n in ctx.nodes:
            if not n.alive():
                exited.append(f"{n.name} was not running at t={elapsed:.0f} s (exit status {n.proc.returncode}); "
                              f"see {n.log_path}")
                log(exited[-1] + "; starting it again")
                n.start()
                if not n.wait_ready():
                    never_back.append(f"{n.name} not ready at t={time.monotonic() - t0:.0f} s")
        if events and elapsed >= events[0][0]:
            _, what = events.pop(0)
            if what == "bulk":
                ctx.next_victim = ctx.nodes[turn % NODES]
                ctx.bulk_now.set()
            elif what == "kill":
                n = ctx.nodes[turn % NODES]
                turn += 1
                rss[n.name]["at_kill"].append({"kib": n.rss_kib(), "uptime_s": round(time.monotonic() - n.started)})
                running_jobs = len(ctx.bulk["pending"])
                at = time.monotonic()
                n.kill()
                n.start()
                ready = n.wait_ready()
                back = time.monotonic()
                kill_windows[n.name].append((at - t0, back - t0))
                restarts.append({"node": n.name, "at_s": round(at - t0, 1), "ready_after_s": round(back - at, 2),
                                 "ready": ready, "bulk_jobs_running": running_jobs})
                log(f"killed {n.name} at t={at - t0:.0f} s; " +
                    (f"ready again after {back - at:.1f} s" if ready else "NOT ready again"))
                if not ready:
                    never_back.append(f"{n.name} not ready {READY_TIMEOUT} s after its kill at t={at - t0:.0f} s")
            else:
                at = time.monotonic()
                pid_before = ctx.pg.postmaster_pid()
                try:
                    ctx.pg.restart()
                    ok = True
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    ok = False
                    log(f"PostgreSQL restart failed: {e}")
                    never_back.append(f"PostgreSQL restart failed: {e}")
                pg_restart = {"at_s": round(at - t0, 1), "took_s": round(time.monotonic() - at, 2), "ok": ok,
                              "postmaster_pids": [pid_before, ctx.pg.postmaster_pid()]}
                log(f"restarted PostgreSQL at t={at - t0:.0f} s in {time.monotonic() - at:.1f} s")
            continue
        time.sleep(0.2)

    # ---- the load stops
    log("load stopped; waiting for the clients")
    stop.set()
    ctx.bulk_deadline = time.monotonic() + BULK_DRAIN
    for w in workers:
        w.join(timeout=READ_TIMEOUT + CONNECT_TIMEOUT + 10)
    for n in ctx.nodes:
        if not n.alive():
            log(f"{n.name} is down at the end; starting it")
            n.start()
            if not n.wait_ready():
                never_back.append(f"{n.name} not ready after the load")
    rss_end = {n.name: n.rss_kib() for n in ctx.nodes}
    log(f"waiting for {len(ctx.bulk['pending'])} bulk jobs (at most {BULK_DRAIN} s)")
    bulk.join(timeout=BULK_DRAIN + 30)
    stuck = [j["batch"] for j in ctx.bulk["pending"]]
    probe_stop.set()
    probe.join(timeout=10)
    ctx.stats.close_outages()
    load_counts = json.loads(json.dumps(ctx.stats.counts))

    log(f"reading back {len(ctx.ledger.subjects)} subjects from {NODES} nodes")
    ctx.index_seen = {}
    budget = max(5.0, min(args.convergence, deadline_at - time.monotonic() - 30))
    problems, checked, retried, converged = read_back(ctx, budget)
    # Counted once per subject or tag, however many nodes or faces showed it; the failure
    # list says which node saw what.
    lost = [m for k, _, m in problems if k == "lost"]
    back = [m for k, _, m in problems if k == "resurrected"]
    lost_keys = {key for k, key, _ in problems if k == "lost"}
    back_keys = {key for k, key, _ in problems if k == "resurrected"}
    index = [m for k, _, m in problems if k == "index"]
    check_errors = [m for k, _, m in problems if k == "check_error"]
    crashed = [f"{w.name}: {w.error.strip().splitlines()[-1]}" for w in workers + [bulk, probe] if w.error]
    for m in lost + back + index + check_errors:
        log(f"FINAL: {m}")

    # ---- the summary
    def outage_summary(name):
        spells = ctx.stats.outages[name]
        out = {"spells": len(spells), "max_s": 0.0, "after_kill_max_s": 0.0, "postgres_restart_max_s": 0.0,
               "other_max_s": 0.0}
        for start, end in spells:
            length = round(end - start, 2)
            if any(k0 - 1 <= start <= k1 + 1 for k0, k1 in kill_windows[name]):
                cause = "after_kill_max_s"
            elif pg_restart and pg_restart["at_s"] - 1 <= start <= pg_restart["at_s"] + pg_restart["took_s"] + 1:
                cause = "postgres_restart_max_s"
            else:
                cause = "other_max_s"
            out[cause] = max(out[cause], length)
            out["max_s"] = max(out["max_s"], length)
        return out

    unavailability = {n.name: outage_summary(n.name) for n in ctx.nodes}
    unavailability["max_s"] = max(v["max_s"] for v in unavailability.values())
    latency = {}
    for op, values in sorted(ctx.stats.latency.items()):
        if op.startswith(("final_", "setup_")):
            continue
        latency[op] = {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000, 1),
                       "p99_ms": round(percentile(values, 99) * 1000, 1),
                       "max_ms": round(max(values) * 1000, 1)}
    requests_by_op = {op: dict(sorted(c.items())) for op, c in sorted(load_counts.items())
                      if not op.startswith(("final_", "setup_"))}
    errors = {op: {k: v for k, v in c.items() if k in ("5xx", "conn_error", "timeout")}
              for op, c in requests_by_op.items()}
    errors = {op: c for op, c in errors.items() if c}
    ledger = ctx.ledger
    failures = (ledger.live_violations + lost + back + index + check_errors + never_back + exited + crashed
                + [f"bulk job {b} never finished" for b in stuck])
    state["keep"] = bool(failures)
    summary = {
        "soak": {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "minutes": args.minutes, "seed": args.seed, "nodes": NODES, "tenants": len(TENANTS),
                 "clients": {"miicloud": args.mii_clients, "necid": args.nec_clients, "bulk": 1},
                 "photos": len(ctx.photos), "kill_interval_s": args.kill_interval,
                 "bin": os.path.relpath(args.bin, ROOT), "commit": git_commit(),
                 "machine": f"{os.cpu_count()} CPUs, Linux {platform.release()}"},
        "requests_total": sum(sum(c.values()) for op, c in requests_by_op.items() if op != "readyz"),
        "requests": requests_by_op,
        "errors": errors,
        "unexpected_4xx": ctx.stats.unexpected[:10],
        "server_errors": ctx.stats.server_errors,
        "latency_ms": latency,
        "unavailability_s": unavailability,
        "kills": restarts,
        "postgres_restart": pg_restart,
        "rss_kib": {n.name: {"start": rss[n.name]["start_kib"], "end": rss_end[n.name], "max": rss[n.name]["max_kib"],
                             "at_kills": rss[n.name]["at_kill"]} for n in ctx.nodes},
        "acknowledged": dict(ledger.acked, subjects_by_origin=ledger.by_origin,
                             subjects_live_at_end=sum(s.state == "live" for s in ledger.subjects)),
        "uncertain": ledger.uncertain,
        "bulk": {k: v for k, v in ctx.bulk.items() if k != "pending"} | {"unfinished": len(stuck)},
        "read_back": {"subjects": len(ledger.subjects), "nodes": NODES, "checks": checked,
                      "retried": retried, "converged_after_s": converged,
                      "templates": ctx.index_seen},
        "lost_writes": len(lost_keys),
        "resurrected_deletes": len(back_keys),
        "index_mismatches": len(index),
        "live_violations": len(ledger.live_violations),
        "own_photo_mismatches": {"count": ledger.misses, "samples": ledger.miss_samples},
        "nodes_not_recovered": len(never_back),
        "nodes_exited_unasked": len(exited),
        "client_crashes": len(crashed),
        "result": "fail" if failures else "pass",
        "failures": failures[:20],
    }
    print(json.dumps(summary), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
