#!/usr/bin/env python3
"""Crash safety under load: acknowledged writes survive SIGKILL, and store, index and files agree.

Runs `facegate serve` on a fresh data directory with several client threads that enroll
(POST /miicloud/person) and delete (DELETE /miicloud/person/ID) persons at random. After a
random delay the server is killed with SIGKILL, restarted, and checked while the clients wait:

1. durability: every acknowledged enrollment is present (GET answers 200 with the same
   miicloud_person_id and its one image) and every acknowledged delete is gone (404). An
   operation in flight at the kill is "uncertain": either outcome is allowed, but all or
   nothing (present with exactly one face, or absent), and the GET resolves it.
2. the database: `PRAGMA integrity_check` is ok and `PRAGMA foreign_key_check` finds nothing;
   the subjects, face_samples and image_blobs rows of the tenant are exactly the persons the API
   shows (one sample and one image row each).
3. the index agrees with the store: everybody is enrolled from the same photo, and the id pool
   is at most 48 persons, so an NEC search with threshold 0 and limit 50 returns every subject
   the index holds with every sample (events). That set must equal the store's subjects and
   samples: a template the index missed, or one it kept after a delete, fails the cycle.
4. files: after the start-up orphan sweep, the files under images/ are exactly the image_blobs
   paths, with the recorded size and SHA-256, and no temporary file (`.NAME.UUID.tmp`, left by a
   kill mid-write) is left: the server holds the data directory alone, so it sweeps them all.

The index is also checked against the store before each kill, on the live server: partway to the
kill the clients pause, and once no request is in flight the NEC search must show exactly the
store's templates. Then they run again until the kill.

The run shows that its kills landed mid-write: over the run, some operations must have had no
answer when the server was killed (`uncertain_ops`), and some deletes must have been
acknowledged. A run without either fails, since its other checks would then prove little. An
exception in a client thread is a violation too, and every wait (on a client, a request, a
subprocess) is bounded, so that a failure ends the run instead of hanging it.

Each client owns its own ids, so the operations on one id are sequential and the expected state
of every id is exact. Clients also check as they go: an enroll answered 409 for an id whose
delete was acknowledged, or a delete answered 404 for an acknowledged enrollment, is a violation.

usage: crash_kill9.py FACEGATE_BIN [--cycles N] [--clients C] [--seed S] [--photo JPG]
                     [--min-delay S] [--max-delay S] [--database-url URL]
  --cycles:  kill cycles [default: 25]     --clients: concurrent clients [default: 6]
  --seed:    seeds the clients' choices and the kill delays [default: random, printed]; the
             interleaving still depends on timing, so a seed makes a failure likelier to recur,
             not certain
  --photo:   a one-face photo [default: .facegate/models/buffalo_s/yaoming.jpg]
  --min-delay, --max-delay: the random time between a restart and the next kill [0.3, 2.5 s]
  --database-url: run the server on this PostgreSQL database (an empty one) instead of SQLite;
             the checks of step 2 then read it with `psql`, and step 4 compares each stored
             image's bytes with the size and SHA-256 its row records
prints one JSON summary as its last line; exits 1 and lists every violation on failure (the
data directory is kept for inspection). needs: python3 with requests
"""
import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import requests

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
POOL = 48  # ids in play; an NEC search returns at most 50 subjects, so it sees the whole index
REGION, SERVICE = "ap-southeast-2", "execute-api"
TIMEOUT = 120  # one request, one subprocess, one wait for the clients


def parse_args():
    p = argparse.ArgumentParser(description=(__doc__ or "crash safety under SIGKILL").split("\n")[0])
    p.add_argument("bin")
    p.add_argument("--cycles", type=int, default=25)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--photo", default=os.path.join(ROOT, ".facegate/models/buffalo_s/yaoming.jpg"))
    p.add_argument("--min-delay", type=float, default=0.3)
    p.add_argument("--max-delay", type=float, default=2.5)
    p.add_argument("--database-url", default=None)
    args = p.parse_args()
    if not 1 <= args.clients <= POOL:
        p.error(f"--clients must be between 1 and {POOL}")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    return args


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Violations:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, cycle, what):
        """`cycle` is a cycle's number, or words for a finding about the whole run."""
        where = f"cycle {cycle}" if isinstance(cycle, int) else cycle
        with self.lock:
            self.items.append(f"{where}: {what}")
        print(f"VIOLATION {where}: {what}", file=sys.stderr, flush=True)


class Gate:
    """Lets the clients run between a restart and the next kill, and parks them meanwhile."""

    def __init__(self, clients):
        self.cond = threading.Condition()
        self.running = False
        self.done = False
        self.generation = 0  # one per running phase
        self.busy = 0
        self.clients = clients

    def enter(self, after_generation=None):
        """Blocks until the clients may run (in a later phase than `after_generation`, if given);
        returns the phase's generation, or None when the run is over."""
        with self.cond:
            while not self.done and (not self.running or
                                     (after_generation is not None and self.generation <= after_generation)):
                self.cond.wait()
            if self.done:
                return None
            self.busy += 1
            return self.generation

    def leave(self):
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()

    def hold(self):
        """Stops new operations from starting; returns how many are in flight."""
        with self.cond:
            self.running = False
            return self.busy

    def wait_idle(self, timeout):
        """Waits until no operation is in flight; False if some still is after `timeout` s."""
        deadline = time.time() + timeout
        with self.cond:
            while self.busy:
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def resume(self):
        with self.cond:
            self.generation += 1
            self.running = True
            self.cond.notify_all()

    def finish(self):
        with self.cond:
            self.done = True
            self.running = False
            self.cond.notify_all()


class Person:
    """What the harness knows about one customer_person_id."""

    def __init__(self, cpid):
        self.cpid = cpid
        self.state = "absent"  # present | absent | uncertain
        self.subject = None  # miicloud_person_id while present, once known
        self.image = None  # the stored image name while present, once known
        self.last_ack = None  # the last acknowledged operation: enroll | delete


class SqliteDb:
    """The SQLite data directory, read beside the running server (WAL lets it)."""

    def __init__(self, data):
        self.path = os.path.join(data, "facegate.db")

    def query(self, sql, params=()):
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=TIMEOUT)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def integrity(self):
        """Problems SQLite's own checks find; empty when there are none."""
        problems = [row[0] for row in self.query("PRAGMA integrity_check") if row[0] != "ok"]
        return problems + [f"foreign key: {row}" for row in self.query("PRAGMA foreign_key_check")]


class PostgresDb:
    """A PostgreSQL gallery, read with psql. Queries take `?` placeholders, as sqlite3's do;
    the values are the harness's own ids, quoted here."""

    def __init__(self, url):
        self.url = url

    def query(self, sql, params=()):
        for value in params:
            sql = sql.replace("?", "'" + str(value).replace("'", "''") + "'", 1)
        out = subprocess.run(["psql", self.url, "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, timeout=TIMEOUT)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        rows = []
        for line in out.stdout.splitlines():
            rows.append(tuple(None if v == "" else (int(v) if v.isdigit() and len(v) < 18 else v)
                              for v in line.split("\t")))
        return rows

    def integrity(self):
        # PostgreSQL enforces its constraints on every write; what it cannot know is whether an
        # image's bytes are what its row says, which step 4 checks.
        return []


class Harness:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="facegate-crash-")
        self.data = os.path.join(self.work, "data")
        os.makedirs(self.data)
        self.log = os.path.join(self.work, "serve.log")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        with open(args.photo, "rb") as f:
            self.photo = f.read()
        self.probe = base64.b64encode(self.photo).decode()
        self.proc = None
        self.cycle = 0
        self.violations = Violations()
        self.gate = Gate(args.clients)
        self.stats_lock = threading.Lock()
        self.stats = {"acknowledged_enrolls": 0, "acknowledged_deletes": 0, "expected_refusals": 0,
                      "uncertain_ops": 0, "server_errors": 0, "uncertain_resolved_present": 0,
                      "uncertain_resolved_absent": 0, "checks_passed": 0, "leftover_tmp_files": 0,
                      "max_persons": 0, "client_exceptions": 0, "live_index_checks": 0}
        self.in_flight_at_kills = []
        self.persons = {}
        self.owned = [[] for _ in range(args.clients)]
        for i in range(POOL):
            cpid = f"crash-{i:02d}"
            self.persons[cpid] = Person(cpid)
            self.owned[i % args.clients].append(cpid)
        self.db = PostgresDb(args.database_url) if args.database_url else SqliteDb(self.data)
        self.store_args = ["--database-url", args.database_url] if args.database_url else []
        out = subprocess.run([args.bin, "tenant", "create", "crash", "--data-dir", self.data, *self.store_args],
                             capture_output=True, text=True, timeout=TIMEOUT)
        if out.returncode != 0:
            raise SystemExit(f"facegate tenant create failed: {out.stderr}")
        created = json.loads(out.stdout)
        self.tenant_id = created["id"]
        self.token = created["token"]
        self.api_key = created["api_key"]
        self.akid, self.secret = created["access_key_id"], created["secret_access_key"]

    def count(self, key, n=1):
        with self.stats_lock:
            self.stats[key] += n

    # ---- server -------------------------------------------------------------------------------

    def start(self):
        with open(self.log, "a") as log:
            log.write(f"==== start before cycle {self.cycle + 1}\n")
            self.proc = subprocess.Popen(
                [self.args.bin, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data,
                 "--inference-workers", "2", *self.store_args],
                stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"facegate serve exited with {self.proc.returncode}; see {self.log}")
            try:
                if requests.get(f"{self.base}/readyz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise SystemExit(f"server did not become ready; see {self.log}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    # ---- requests -----------------------------------------------------------------------------

    def mii(self, method, path, **kw):
        # A new connection per request: a kept-alive one would die with the server and make the
        # first request after a restart fail without ever reaching it.
        headers = {"Authorization": f"Token {self.token}", "Connection": "close"}
        return requests.request(method, self.base + path, headers=headers, timeout=TIMEOUT, **kw)

    def enroll(self, cpid):
        form = {"customer_person_id": cpid, "first_name": "Crash", "last_name": cpid}
        files = {"image_path": ("yao.jpg", self.photo, "image/jpeg")}
        return self.mii("POST", "/miicloud/person", data=form, files=files)

    def nec_search(self):
        """The NEC search over the whole gallery: {subject id: {sample ids}} as the index holds."""
        path = "/v1.1/face/search"
        body = json.dumps({"probe": self.probe, "threshold": 0, "limit": 50}).encode()
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": f"127.0.0.1:{self.port}", "x-amz-date": amz_date, "x-api-key": self.api_key,
                   "content-type": "application/json"}
        signed = sorted(headers)
        canonical = "\n".join(["POST", path, ""] + [f"{h}:{headers[h]}" for h in signed]
                              + ["", ";".join(signed), hashlib.sha256(body).hexdigest()])
        scope = f"{day}/{REGION}/{SERVICE}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret).encode()
        for part in (day, REGION, SERVICE, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.akid}/{scope}, "
                                    f"SignedHeaders={';'.join(signed)}, Signature={signature}")
        headers["connection"] = "close"
        r = requests.post(self.base + path, data=body, headers=headers, timeout=TIMEOUT)
        if r.status_code == 404:  # no candidate at all: an empty gallery
            return {}
        if r.status_code != 200:
            raise SystemExit(f"NEC search answered {r.status_code}: {r.text}")
        candidates = r.json()["candidates"]
        if len(candidates) >= 50:
            raise SystemExit("NEC search hit its limit of 50; the pool is too large for this check")
        return {c["id"]: {e["id"] for e in c["events"]} for c in candidates}

    # ---- clients ------------------------------------------------------------------------------

    def client(self, n):
        try:
            self.run_client(n)
        except BaseException:
            # A client that dies would stop exercising its ids and leave the run looking green.
            self.count("client_exceptions")
            self.violations.add(self.cycle + 1, f"client {n} raised:\n{traceback.format_exc()}")

    def run_client(self, n):
        rng = random.Random(self.args.seed * 1000 + n)
        ids = self.owned[n]
        generation = self.gate.enter()
        while generation is not None:
            cpid = rng.choice(ids)
            try:
                failed = not self.operate(rng, self.persons[cpid], generation)
            finally:
                # Even after an exception, or the harness would wait for this operation forever.
                self.gate.leave()
            # After a failed request the server is most likely gone: wait for the next phase
            # instead of piling up refused connections.
            generation = self.gate.enter(after_generation=generation if failed else None)

    def operate(self, rng, p, generation):
        """One operation on `p`; False when the request got no answer."""
        if p.state == "present":
            op = "delete" if rng.random() < 0.8 else "enroll"
        elif p.state == "absent":
            op = "enroll" if rng.random() < 0.8 else "delete"
        else:
            op = rng.choice(["enroll", "delete"])
        before = p.state
        try:
            r = self.enroll(p.cpid) if op == "enroll" else self.mii("DELETE", f"/miicloud/person/{p.cpid}")
        except requests.RequestException:
            p.state = "uncertain"
            self.count("uncertain_ops")
            return False
        cycle = self.cycle + 1
        if r.status_code == 200:
            body = r.json()
            if before == "present" and op == "enroll":
                self.violations.add(cycle, f"enroll of {p.cpid} succeeded though its enrollment "
                                           f"({p.subject}) was acknowledged: the person was lost")
            if before == "absent" and op == "delete":
                self.violations.add(cycle, f"delete of {p.cpid} succeeded though it was absent "
                                           f"(last acknowledged: {p.last_ack}): a resurrected person")
            if op == "enroll":
                p.state, p.subject, p.image, p.last_ack = "present", body["miicloud_person_id"], body["image"], "enroll"
                self.count("acknowledged_enrolls")
            else:
                if p.subject is not None and body["miicloud_person_id"] != p.subject:
                    self.violations.add(cycle, f"delete of {p.cpid} removed {body['miicloud_person_id']}, "
                                               f"expected {p.subject}")
                p.state, p.subject, p.image, p.last_ack = "absent", None, None, "delete"
                self.count("acknowledged_deletes")
        elif op == "enroll" and r.status_code == 409:
            if before == "absent":
                self.violations.add(cycle, f"enroll of {p.cpid} answered 409 though it was absent "
                                           f"(last acknowledged: {p.last_ack})")
            if before != "present":
                p.state, p.subject, p.image = "present", None, None  # its ids come from the next GET
            self.count("expected_refusals")
        elif op == "delete" and r.status_code == 404:
            if before == "present":
                self.violations.add(cycle, f"delete of {p.cpid} answered 404 though its enrollment "
                                           f"({p.subject}) was acknowledged: the person was lost")
            p.state, p.subject, p.image = "absent", None, None
            self.count("expected_refusals")
        elif r.status_code >= 500:
            # Not acknowledged; whether it happened is not known (a 503 would not have, a 500
            # might have).
            p.state = "uncertain"
            self.count("server_errors")
        else:
            self.violations.add(cycle, f"{op} of {p.cpid} answered {r.status_code}: {r.text[:200]}")
        return True

    # ---- checks -------------------------------------------------------------------------------

    def passed(self, n=1):
        self.count("checks_passed", n)

    def store_templates(self):
        """{subject id: {sample ids}} as the store holds them, read beside the running server."""
        rows = self.db.query("SELECT subject_id, id FROM face_samples WHERE tenant_id = ?", (self.tenant_id,))
        templates = {}
        for subject_id, sample_id in rows:
            templates.setdefault(subject_id, set()).add(sample_id)
        return templates

    def check_index(self, bad, store_index, when):
        """The templates the index holds, as an NEC search shows them, must be the store's."""
        index = self.nec_search()
        if index != store_index:
            missing = {k: sorted(v - index.get(k, set())) for k, v in store_index.items() if v - index.get(k, set())}
            extra = {k: sorted(v - store_index.get(k, set())) for k, v in index.items()
                     if v - store_index.get(k, set())}
            bad(f"{when}: index and store disagree: templates missing from the index {missing}, "
                f"templates only in the index {extra}")
        else:
            self.passed()

    def verify_live(self):
        """Before a kill, with no request in flight: the running server's index against the store.
        Catches an index that drifts from the store while serving, which a restart would hide by
        rebuilding the index from the store."""
        cycle = self.cycle + 1
        self.check_index(lambda what: self.violations.add(cycle, what), self.store_templates(), "before the kill")
        self.count("live_index_checks")

    def wait_idle(self):
        """Waits for the operations in flight to end; a client stuck past every request's timeout
        fails the run."""
        if not self.gate.wait_idle(TIMEOUT + 30):
            self.violations.add(self.cycle + 1, f"an operation was still in flight {TIMEOUT + 30} s after the "
                                                "clients were held")
            raise SystemExit(1)

    def verify(self):
        cycle = self.cycle
        bad = lambda what: self.violations.add(cycle, what)  # noqa: E731

        # 1. Durability, through the API.
        shown = {}  # cpid -> (subject id, image name) for everyone present
        for cpid, p in self.persons.items():
            r = self.mii("GET", f"/miicloud/person/{cpid}")
            if r.status_code == 200:
                body = r.json()
                images = [i["image"] for i in body["images"]]
                shown[cpid] = (body["miicloud_person_id"], images[0] if images else None)
                if len(images) != 1:
                    bad(f"{cpid} is present with {len(images)} images, expected exactly one")
                if p.state == "absent":
                    bad(f"{cpid} is present ({body['miicloud_person_id']}) though absent "
                        f"(last acknowledged: {p.last_ack}): " + ("a resurrected delete" if p.last_ack == "delete"
                                                                 else "a person nobody enrolled"))
                elif p.state == "present" and p.subject is not None and (body["miicloud_person_id"], images) != (
                        p.subject, [p.image]):
                    bad(f"{cpid} is {body['miicloud_person_id']} with {images}, acknowledged as {p.subject} "
                        f"with [{p.image}]")
                else:
                    self.passed()
                if p.state == "uncertain":
                    self.count("uncertain_resolved_present")
                p.state, p.subject, p.image = "present", body["miicloud_person_id"], shown[cpid][1]
            elif r.status_code == 404:
                if p.state == "present":
                    bad(f"{cpid} is gone though its enrollment ({p.subject}) was acknowledged: a lost write")
                else:
                    self.passed()
                if p.state == "uncertain":
                    self.count("uncertain_resolved_absent")
                p.state, p.subject, p.image = "absent", None, None
            else:
                bad(f"GET {cpid} answered {r.status_code}: {r.text[:200]}")
        with self.stats_lock:
            self.stats["max_persons"] = max(self.stats["max_persons"], len(shown))

        # 2. The database, read-only beside the running server.
        problems = self.db.integrity()
        if problems:
            bad(f"database checks: {problems[:10]}")
        else:
            self.passed()
        subjects = dict(self.db.query("SELECT customer_person_id, id FROM subjects WHERE tenant_id = ?",
                                      (self.tenant_id,)))
        samples = self.db.query("SELECT s.subject_id, s.id, s.image_name, b.path, b.bytes, b.sha256 "
                                "FROM face_samples s LEFT JOIN image_blobs b ON b.sample_id = s.id "
                                "WHERE s.tenant_id = ?", (self.tenant_id,))
        blobs = dict(((path, (size, sha)) for path, size, sha in
                      self.db.query("SELECT path, bytes, sha256 FROM image_blobs")))
        api = {cpid: sid for cpid, (sid, _) in shown.items()}
        if subjects != api:
            bad(f"store subjects differ from the API: only in store {sorted(set(subjects.items()) - set(api.items()))}, "
                f"only in API {sorted(set(api.items()) - set(subjects.items()))}")
        else:
            self.passed()
        store_index = {}  # subject id -> {sample ids}
        images_of = {sid: img for sid, img in shown.values()}
        for subject_id, sample_id, image_name, path, _, _ in samples:
            store_index.setdefault(subject_id, set()).add(sample_id)
            if path is None:
                bad(f"sample {sample_id} of {subject_id} has no image_blobs row")
            elif path != f"{self.tenant_id}/{image_name}":
                bad(f"sample {sample_id}: image_blobs path {path} for image {image_name}")
            elif images_of.get(subject_id) != image_name:
                bad(f"sample {sample_id} of {subject_id}: image {image_name}, the API shows "
                    f"{images_of.get(subject_id)}")
            else:
                self.passed()
        if set(store_index) != set(subjects.values()):
            bad(f"subjects without a sample: {sorted(set(subjects.values()) - set(store_index))}; "
                f"samples without a subject: {sorted(set(store_index) - set(subjects.values()))}")
        elif any(len(s) != 1 for s in store_index.values()):
            bad(f"subjects with more than one sample: {[k for k, s in store_index.items() if len(s) != 1]}")
        else:
            self.passed()

        # 3. The index against the store.
        self.check_index(bad, store_index, "after the restart")

        # 4. Stored images against their image_blobs rows.
        if isinstance(self.db, PostgresDb):
            # The images are the rows' own bytes: each must have the size and hash it records.
            for path, size, sha, actual_size, actual_sha in self.db.query(
                    "SELECT path, bytes, sha256, length(data), encode(sha256(data), 'hex') FROM image_blobs"):
                if (actual_size, actual_sha) != (size, sha):
                    bad(f"{path}: {actual_size} bytes, sha256 {actual_sha}; the row says {(size, sha)}")
                else:
                    self.passed()
            return
        images_dir = os.path.join(self.data, "images")
        files, tmp = {}, 0
        for d, _, names in os.walk(images_dir):
            for name in names:
                full = os.path.join(d, name)
                rel = os.path.relpath(full, images_dir).replace(os.sep, "/")
                if name.startswith(".") and name.endswith(".tmp"):
                    tmp += 1
                    continue
                files[rel] = full
        with self.stats_lock:
            self.stats["leftover_tmp_files"] = max(self.stats["leftover_tmp_files"], tmp)
        if tmp:
            bad(f"{tmp} temporary image files survived the start-up sweep")
        else:
            self.passed()
        if set(files) != set(blobs):
            bad(f"image files without a row: {sorted(set(files) - set(blobs))}; "
                f"rows without a file: {sorted(set(blobs) - set(files))}")
        else:
            self.passed()
        for rel in set(files) & set(blobs):
            with open(files[rel], "rb") as f:
                content = f.read()
            if (len(content), hashlib.sha256(content).hexdigest()) != blobs[rel]:
                bad(f"{rel}: {len(content)} bytes, sha256 {hashlib.sha256(content).hexdigest()}; "
                    f"the row says {blobs[rel]}")
            else:
                self.passed()


    # ---- run ----------------------------------------------------------------------------------

    def run(self):
        rng = random.Random(self.args.seed)
        started = time.time()
        self.start()
        threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(self.args.clients)]
        for t in threads:
            t.start()
        delays = []
        for c in range(self.args.cycles):
            self.gate.resume()
            # Partway to the kill, the clients pause for a check of the live index.
            time.sleep(rng.uniform(self.args.min_delay, self.args.max_delay) / 2)
            self.gate.hold()
            self.wait_idle()
            self.verify_live()
            self.gate.resume()
            delay = rng.uniform(self.args.min_delay, self.args.max_delay)
            delays.append(delay)
            time.sleep(delay)
            # No new operation starts from here on, so the ones in flight at the kill are the only
            # uncertain ones (plus any answered 5xx).
            in_flight = self.gate.hold()
            self.kill()
            self.wait_idle()
            self.in_flight_at_kills.append(in_flight)
            self.cycle = c + 1
            self.start()
            self.verify()
            print(f"cycle {self.cycle}: SIGKILL after {delay:.2f} s with {in_flight} operations in flight; "
                  f"{self.stats['acknowledged_enrolls']} enrolls and {self.stats['acknowledged_deletes']} "
                  f"deletes acknowledged so far, {len(self.violations.items)} violations", flush=True)
        self.gate.finish()
        for n, t in enumerate(threads):
            t.join(timeout=TIMEOUT)
            if t.is_alive():
                self.violations.add("at the end", f"client {n} did not finish within {TIMEOUT} s")
        self.stop()
        # Proof that the kills landed mid-write: without operations left unanswered by a kill, and
        # without acknowledged deletes, the durability checks above would have had little to check.
        if self.stats["uncertain_ops"] == 0:
            self.violations.add("the run", "no kill left an operation unanswered: none landed mid-write")
        if self.stats["acknowledged_deletes"] == 0:
            self.violations.add("the run", "no delete was acknowledged, so none was checked after a kill")
        elapsed = time.time() - started
        summary = dict(cycles=self.args.cycles, clients=self.args.clients, seed=self.args.seed, pool=POOL,
                       **self.stats, in_flight_at_kills=self.in_flight_at_kills,
                       violations=len(self.violations.items), seconds=round(elapsed, 1),
                       kill_delay_s=[round(min(delays), 2), round(max(delays), 2)])
        if self.violations.items:
            print(f"{len(self.violations.items)} violations (seed {self.args.seed}); data kept in {self.work}:",
                  file=sys.stderr)
            for v in self.violations.items:
                print("  " + v, file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        print(json.dumps(summary), flush=True)
        return 1 if self.violations.items else 0


def main():
    harness = Harness(parse_args())
    try:
        code = harness.run()
    except BaseException:
        if harness.proc is not None and harness.proc.poll() is None:
            harness.kill()
        print(f"harness failed (seed {harness.args.seed}); data kept in {harness.work}", file=sys.stderr)
        raise
    sys.exit(code)


if __name__ == "__main__":
    main()
