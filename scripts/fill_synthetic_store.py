#!/usr/bin/env python3
"""Fills a facegate data directory with N synthetic templates, for timing start-up at gallery
sizes no photo set reaches (`docs/benchmarks.md`, "Start-up").

usage: fill_synthetic_store.py DATA_DIR|postgres://URL TENANT_NAME N [MODEL_ID [DIM]]

Create the tenant first (`facegate tenant create TENANT_NAME --data-dir DATA_DIR`, or
`--database-url URL`), so that the schema is current. For a PostgreSQL URL the rows are made by
the server from a pool sent once (with `psql`), which is far faster than sending each row. Each
template gets its own subject and a sample row as the server writes them (f16, schema v6), but
no image file: start-up reads only the rows.

MODEL_ID defaults to the default pack's, yunet_sface/sface_2021dec_int8_centred+dlib_resnet_v1_int8@1. A
template has the length of MODEL_ID's pack (256 values for yunet_sface, 128 for yunet_sface_fast,
whose model id is yunet_sface/sface_2021dec@1, 512 for buffalo_s); give DIM for another model.

The vectors are varied enough for the index to learn a partition from them: each is one of 1,000
random unit vectors with each half of its values rotated by its own random amount. A rotation
keeps a vector's length, and two rotations of one vector are as unrelated as two random vectors,
so the pool yields 1,000 x (DIM/2)^2 distinct unit vectors (4 million at 128 values) from cheap
byte slicing; a gallery of a million copies of 1,000 vectors would give the index's k-means 1,000
points to learn from.
"""
import math, random, sqlite3, struct, subprocess, sys, time, uuid

DEFAULT_MODEL_ID = "yunet_sface/sface_2021dec_int8_centred+dlib_resnet_v1_int8@1"
# Template length of each shipped pack's model id (packs/*/manifest.toml).
MODEL_DIMS = {
    "yunet_sface/sface_2021dec_int8_centred+dlib_resnet_v1_int8@1": 256,
    "yunet_sface/sface_2021dec@1": 128,
    "buffalo_s/w600k_mbf@1": 512,
}
POOL = 1000


def unit_f16(rng, dim):
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in v))
    return struct.pack(f"<{dim}e", *(x / norm for x in v))


def rotated(v, first, second):
    """`v` (f16 bytes) with its first half rotated by `first` values and its second by `second`."""
    half = len(v) // 2
    a, b = v[:half], v[half:]
    first, second = 2 * first, 2 * second
    return a[first:] + a[:first] + b[second:] + b[:second]


def fill_postgres(url, tenant_name, n, model_id, pool, dim):
    """Every row made by PostgreSQL itself from the pool: one round trip, not a million."""
    now = "2026-11-30T00:00:00.000000Z"
    rows = "".join(f"{i}\t\\\\x{v.hex()}\n" for i, v in enumerate(pool))
    half = dim // 2
    # The same rotations as `rotated`, in SQL: byte offsets of each half's rotation, from g.
    first = f"(2 * ((g::bigint * 7919) % {half})::int)"
    second = f"(2 * ((g::bigint * 104729 / {POOL}) % {half})::int)"
    hb = 2 * half
    vector = (
        f"substring(p.v from 1 + {first} for {hb} - {first}) || substring(p.v from 1 for {first}) || "
        f"substring(p.v from {hb} + 1 + {second} for {hb} - {second}) || substring(p.v from {hb} + 1 for {second})"
    )
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
         0, 0, 112, 112, 0.9, '{model_id}', {vector}, 'f16le', '{now}'
  FROM generate_series(0, {n - 1}) g JOIN pool p ON p.i = g % {POOL};
"""
    started = time.time()
    subprocess.run(["psql", url, "-X", "-q"], input=script, text=True, check=True)
    print(f"{n} rows in {time.time() - started:.0f} s", file=sys.stderr)


def main():
    if len(sys.argv) not in (4, 5, 6):
        sys.exit(__doc__)
    data_dir, tenant_name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model_id = sys.argv[4] if len(sys.argv) >= 5 else DEFAULT_MODEL_ID
    if len(sys.argv) == 6:
        dim = int(sys.argv[5])
    else:
        dim = MODEL_DIMS.get(model_id)
        if dim is None:
            sys.exit(f"no known template length for model id {model_id!r}: give DIM")
    if dim < 2 or dim % 2:
        sys.exit("DIM must be even and at least 2")
    rng = random.Random(7)
    pool = [unit_f16(rng, dim) for _ in range(POOL)]
    if data_dir.startswith(("postgres://", "postgresql://")):
        fill_postgres(data_dir, tenant_name, n, model_id, pool, dim)
        return
    db = sqlite3.connect(f"{data_dir}/facegate.db")
    row = db.execute("SELECT id FROM tenants WHERE name = ?", (tenant_name,)).fetchone()
    if row is None:
        sys.exit(f"no tenant {tenant_name!r} in {data_dir}: run `facegate tenant create` first")
    tenant_id = row[0]
    half = dim // 2
    now = "2026-11-28T00:00:00.000000Z"
    started = time.time()
    db.execute("PRAGMA synchronous = OFF")
    batch = 50_000
    for start in range(0, n, batch):
        subjects, samples = [], []
        for i in range(start, min(n, start + batch)):
            subject_id, sample_id = str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128)))
            vector = rotated(pool[rng.randrange(POOL)], rng.randrange(half), rng.randrange(half))
            subjects.append((subject_id, tenant_id, f"synthetic-{i}", now, now))
            samples.append((sample_id, tenant_id, subject_id, f"enroll/synthetic_{i}.jpg", model_id, vector, now))
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
