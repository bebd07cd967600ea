#!/usr/bin/env python3
"""Fills a facegate data directory with N synthetic templates, for timing start-up at gallery
sizes no photo set reaches (`docs/benchmarks.md`, "Start-up").

usage: fill_synthetic_store.py DATA_DIR|postgres://URL TENANT_NAME N [MODEL_ID]

Create the tenant first (`facegate tenant create TENANT_NAME --data-dir DATA_DIR`, or
`--database-url URL`), so that the schema is current. For a PostgreSQL URL the rows are made by
the server from a pool sent once (with `psql`), which is far faster than sending each row. Each template gets its own subject and a sample row as the server writes them
(f16, schema v6), but no image file: start-up reads only the rows. The vectors cycle through
1,000 random unit vectors; what they hold does not change how long loading takes.
MODEL_ID defaults to the default pack's, buffalo_s/w600k_mbf@1.
"""
import math, random, sqlite3, struct, subprocess, sys, time, uuid

DIM = 512


def unit_f16(rng):
    v = [rng.gauss(0.0, 1.0) for _ in range(DIM)]
    norm = math.sqrt(sum(x * x for x in v))
    return struct.pack(f"<{DIM}e", *(x / norm for x in v))


def fill_postgres(url, tenant_name, n, model_id, pool):
    """Every row made by PostgreSQL itself from the pool: one round trip, not a million."""
    now = "2026-11-30T00:00:00.000000Z"
    rows = "".join(f"{i}\t\\\\x{v.hex()}\n" for i, v in enumerate(pool))
    script = f"""
\\set ON_ERROR_STOP on
CREATE TEMP TABLE pool (i INTEGER, v BYTEA);
COPY pool FROM STDIN;
{rows}\\.
SELECT id AS tenant_id FROM tenants WHERE name = '{tenant_name}' \\gset
INSERT INTO subjects (id, tenant_id, customer_person_id, created_at, updated_at)
  SELECT 'synthetic-subject-' || g, :'tenant_id', 'synthetic-' || g, '{now}', '{now}'
  FROM generate_series(0, {n - 1}) g;
INSERT INTO face_samples (id, tenant_id, subject_id, image_name, bbox_left, bbox_top, bbox_right, bbox_bottom,
                          detector_score, model_id, embedding, embedding_encoding, created_at)
  SELECT 'synthetic-sample-' || g, :'tenant_id', 'synthetic-subject-' || g, 'enroll/synthetic_' || g || '.jpg',
         0, 0, 112, 112, 0.9, '{model_id}', p.v, 'f16le', '{now}'
  FROM generate_series(0, {n - 1}) g JOIN pool p ON p.i = g % {len(pool)};
"""
    started = time.time()
    subprocess.run(["psql", url, "-X", "-q"], input=script, text=True, check=True)
    print(f"{n} rows in {time.time() - started:.0f} s", file=sys.stderr)


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    data_dir, tenant_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model_id = sys.argv[4] if len(sys.argv) == 5 else "buffalo_s/w600k_mbf@1"
    if data_dir.startswith(("postgres://", "postgresql://")):
        rng = random.Random(7)
        fill_postgres(data_dir, tenant_name, n, model_id, [unit_f16(rng) for _ in range(1000)])
        return
    db = sqlite3.connect(f"{data_dir}/facegate.db")
    row = db.execute("SELECT id FROM tenants WHERE name = ?", (tenant_name,)).fetchone()
    if row is None:
        sys.exit(f"no tenant {tenant_name!r} in {data_dir}: run `facegate tenant create` first")
    tenant_id = row[0]
    rng = random.Random(7)
    pool = [unit_f16(rng) for _ in range(1000)]
    now = "2026-11-28T00:00:00.000000Z"
    started = time.time()
    db.execute("PRAGMA synchronous = OFF")
    batch = 50_000
    for start in range(0, n, batch):
        subjects, samples = [], []
        for i in range(start, min(n, start + batch)):
            subject_id, sample_id = str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128)))
            subjects.append((subject_id, tenant_id, f"synthetic-{i}", now, now))
            samples.append((sample_id, tenant_id, subject_id, f"enroll/synthetic_{i}.jpg", model_id, pool[i % len(pool)], now))
        with db:
            db.executemany(
                "INSERT INTO subjects (id, tenant_id, customer_person_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                subjects)
            db.executemany(
                "INSERT INTO face_samples (id, tenant_id, subject_id, image_name, bbox_left, bbox_top, bbox_right, "
                "bbox_bottom, detector_score, model_id, embedding, created_at, embedding_encoding) "
                "VALUES (?, ?, ?, ?, 0, 0, 112, 112, 0.9, ?, ?, ?, 'f16le')",
                samples)
        print(f"{min(n, start + batch)} / {n} rows, {time.time() - started:.0f} s", file=sys.stderr)
    db.close()


if __name__ == "__main__":
    main()
