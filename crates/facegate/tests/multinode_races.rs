//! Concurrent writers on several `facegate serve` nodes over one PostgreSQL database (a throwaway
//! cluster): the same miiCloud id enrolled on two and three nodes at once, a face added on one
//! node while another deletes the person, NEC tag renames racing tag assignments, and many
//! writers at once on every node while a reader follows the change log. After each, every node
//! gives the same answers, and the database holds no sample, image or tag label of a subject or
//! tag that is gone.

use std::ffi::OsString;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use facegate_testkit::PgCluster;
use serde_json::{json, Value};

mod common;
use common::{http, match_faces, multipart, nec, root, tenant_create, SandboxServer, SANDBOX_TOKEN};

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn yao_base64() -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, yao())
}

fn auth() -> String {
    format!("Token {SANDBOX_TOKEN}")
}

/// `n` nodes of `facegate serve --sandbox` on the database at `url`, each with its own data
/// directory (kept in `dirs`).
fn nodes(url: &str, dirs: &[tempfile::TempDir], n: usize) -> Vec<SandboxServer> {
    (0..n)
        .map(|i| {
            let args: Vec<OsString> = vec![
                "--sandbox".into(),
                "--database-url".into(),
                url.into(),
                "--data-dir".into(),
                dirs[i].path().into(),
            ];
            SandboxServer::spawn(&args, &[])
        })
        .collect()
}

fn data_dirs(n: usize) -> Vec<tempfile::TempDir> {
    (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect()
}

/// miiCloud `POST /person` of the pack photo as `customer_person_id`: the status and the body.
fn enroll(addr: &str, customer_person_id: &str) -> (u16, String) {
    let (content_type, body) =
        multipart(&[("customer_person_id", customer_person_id)], Some(("image_path", "yao.jpg", &yao())));
    let auth = auth();
    http(addr, "POST", "/miicloud/person", &[("Authorization", &auth), ("Content-Type", &content_type)], &body)
}

/// miiCloud `PUT /person/{id}` with the pack photo: adds a face to the person.
fn add_face(addr: &str, customer_person_id: &str) -> (u16, String) {
    let (content_type, body) = multipart(&[("first_name", "Yao")], Some(("image_path", "again.jpg", &yao())));
    let auth = auth();
    let path = format!("/miicloud/person/{customer_person_id}");
    http(addr, "PUT", &path, &[("Authorization", &auth), ("Content-Type", &content_type)], &body)
}

fn person(addr: &str, customer_person_id: &str) -> (u16, Value) {
    let auth = auth();
    let (status, body) =
        http(addr, "GET", &format!("/miicloud/person/{customer_person_id}"), &[("Authorization", &auth)], &[]);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The subjects an NEC search by `tag` finds on `node`, sorted; `None` when the search is refused.
fn found_by_tag(addr: &str, creds: &Value, face: &str, tag: &str) -> Option<Vec<String>> {
    let probe = json!({"probe": face, "tags": [tag], "limit": 50});
    let (status, body) = nec(addr, creds, "POST", "/v1.1/face/search", Some(&probe));
    if status == 404 {
        return Some(Vec::new());
    }
    if status != 200 {
        return None;
    }
    let mut ids: Vec<String> = body["candidates"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    Some(ids)
}

/// Waits until `check` holds, at most `limit` (a node's follower applies a change within about a
/// second); fails with what it last saw.
fn eventually<T: std::fmt::Debug>(limit: Duration, what: &str, mut check: impl FnMut() -> (bool, T)) {
    let started = Instant::now();
    loop {
        let (ok, seen) = check();
        if ok {
            return;
        }
        assert!(started.elapsed() < limit, "{what}: still {seen:?} after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Nothing in the database belongs to a subject, sample or tag that is gone, and every subject
/// has its face. The foreign keys forbid most of this; the test says so rather than trusting it.
fn assert_no_orphans(db: &mut postgres::Client) {
    for (what, sql) in [
        (
            "samples of a subject that is gone",
            "SELECT COUNT(*) FROM face_samples s WHERE NOT EXISTS (SELECT 1 FROM subjects j WHERE j.id = s.subject_id)",
        ),
        (
            "images of a sample that is gone",
            "SELECT COUNT(*) FROM image_blobs b WHERE NOT EXISTS (SELECT 1 FROM face_samples s WHERE s.id = b.sample_id)",
        ),
        (
            "samples without their image",
            "SELECT COUNT(*) FROM face_samples s WHERE NOT EXISTS (SELECT 1 FROM image_blobs b WHERE b.sample_id = s.id)",
        ),
        (
            "tag labels of a subject that is gone",
            "SELECT COUNT(*) FROM subject_tags t WHERE NOT EXISTS (SELECT 1 FROM subjects j WHERE j.id = t.subject_id)",
        ),
        (
            "subjects without a face",
            "SELECT COUNT(*) FROM subjects j WHERE NOT EXISTS (SELECT 1 FROM face_samples s WHERE s.subject_id = j.id)",
        ),
    ] {
        assert_eq!(count(db, sql), 0, "{what}");
    }
}

/// Runs `calls` at the same moment, one thread each, and returns their results in order.
fn at_once<T: Send + 'static>(calls: Vec<Box<dyn FnOnce() -> T + Send>>) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(calls.len()));
    let threads: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                call()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a racing request panicked")).collect()
}

#[test]
fn one_customer_person_id_enrolled_on_several_nodes_at_once_is_one_200_and_the_rest_409() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs = data_dirs(3);
    let nodes = nodes(pg.url(), &dirs, 3);
    let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).expect("connect");
    for round in 0..6 {
        // Two nodes, then all three, in turn.
        let racing = if round % 2 == 0 { 2 } else { 3 };
        let id = format!("same-{round}");
        let calls: Vec<Box<dyn FnOnce() -> (u16, String) + Send>> = nodes[..racing]
            .iter()
            .map(|n| {
                let (addr, id) = (n.addr.clone(), id.clone());
                Box::new(move || enroll(&addr, &id)) as Box<dyn FnOnce() -> (u16, String) + Send>
            })
            .collect();
        let answers = at_once(calls);
        let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        statuses.sort_unstable();
        let mut want = vec![409; racing];
        want[0] = 200;
        assert_eq!(statuses, want, "round {round} ({racing} nodes): {answers:?}");
        for (status, body) in &answers {
            if *status == 409 {
                let body: Value = serde_json::from_str(body).expect("JSON");
                assert_eq!(body["status"], "fail", "{body}");
            }
        }

        // One person, with the one face, found the same on every node.
        let subjects = db
            .query_one("SELECT COUNT(*) FROM subjects WHERE customer_person_id = $1", &[&id])
            .expect("count")
            .get::<_, i64>(0);
        assert_eq!(subjects, 1, "round {round}");
        let mut person_ids = Vec::new();
        for n in &nodes {
            let (status, body) = person(&n.addr, &id);
            assert_eq!(status, 200, "{}: {body}", n.addr);
            assert_eq!(body["images"].as_array().map(Vec::len), Some(1), "{body}");
            person_ids.push(body["miicloud_person_id"].clone());
            eventually(Duration::from_secs(2), "1:1 on every node", || {
                let answer = match_faces(n, &yao(), &[("customer_person_id", &id)]);
                (answer["faces"][0]["match_status"] == "known", answer)
            });
        }
        person_ids.dedup();
        assert_eq!(person_ids.len(), 1, "{person_ids:?}");
    }
    assert_no_orphans(&mut db);
}

#[test]
fn a_face_added_on_one_node_while_another_deletes_the_person_leaves_nothing_behind() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs = data_dirs(3);
    let nodes = nodes(pg.url(), &dirs, 3);
    let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).expect("connect");
    let mut outcomes = Vec::new();
    for round in 0..8u64 {
        let id = format!("race-{round}");
        let (status, body) = enroll(&nodes[0].addr, &id);
        assert_eq!(status, 200, "{body}");
        // The delete goes out as the add starts, or a little later: while the added face is
        // looked up, in inference, or being written.
        let delay = Duration::from_millis(15 * round);
        let (adder, deleter) = (nodes[1].addr.clone(), nodes[2].addr.clone());
        let (add_id, delete_id) = (id.clone(), id.clone());
        let answers = at_once(vec![
            Box::new(move || add_face(&adder, &add_id)) as Box<dyn FnOnce() -> (u16, String) + Send>,
            Box::new(move || {
                std::thread::sleep(delay);
                let auth = auth();
                http(&deleter, "DELETE", &format!("/miicloud/person/{delete_id}"), &[("Authorization", &auth)], &[])
            }),
        ]);
        let (added, deleted) = (&answers[0], &answers[1]);
        assert!(added.0 == 200 || added.0 == 404, "round {round}: the add answered {added:?}");
        assert_eq!(deleted.0, 200, "round {round}: the person existed until this delete: {deleted:?}");
        outcomes.push(added.0);

        // Gone everywhere: from the store, and from every node's index.
        for n in &nodes {
            assert_eq!(person(&n.addr, &id).0, 404, "{}", n.addr);
            eventually(Duration::from_secs(2), "no node finds a deleted person", || {
                let answer = match_faces(n, &yao(), &[]);
                (answer["faces"][0]["match_status"] == "unknown", answer)
            });
        }
        assert_no_orphans(&mut db);
        let left = count(&mut db, "SELECT COUNT(*) FROM subjects");
        assert_eq!(left, 0, "round {round}");
    }
    eprintln!("add-face answers, one per round, as the delete came later each round: {outcomes:?}");
    assert!(outcomes.contains(&404), "no delete landed while an add was in flight: {outcomes:?}");
}

#[test]
fn tag_renames_racing_tag_assignments_on_other_nodes_leave_no_label_of_a_tag_that_is_gone() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs = data_dirs(3);
    let nodes = nodes(pg.url(), &dirs, 3);
    let creds = tenant_create(pg.url(), "tags");
    let face = yao_base64();
    let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).expect("connect");
    let (status, body) = nec(&nodes[0].addr, &creds, "POST", "/v1.1/subjects", Some(&json!({"face": face})));
    assert_eq!(status, 201, "{body}");
    let subject = body["id"].as_str().expect("subject id").to_owned();

    let mut outcomes = Vec::new();
    for round in 0..8u64 {
        let (old, new) = (format!("t{round}"), format!("u{round}"));
        let (status, body) = nec(&nodes[0].addr, &creds, "POST", &format!("/v1.1/tags/{old}"), None);
        assert_eq!(status, 200, "{body}");
        let labels_before = labels(&mut db, &subject);
        let delay = Duration::from_millis(15 * round);
        let (assigner, renamer) = (nodes[1].addr.clone(), nodes[2].addr.clone());
        let (c1, c2) = (creds.clone(), creds.clone());
        let assign_body = json!({"face": face, "tags": [old]});
        let assign_path = format!("/v1.1/subjects/{subject}");
        let (rename_path, rename_body) = (format!("/v1.1/tags/{old}"), json!({"newName": new}));
        let answers = at_once(vec![
            Box::new(move || nec(&assigner, &c1, "PUT", &assign_path, Some(&assign_body)))
                as Box<dyn FnOnce() -> (u16, Value) + Send>,
            Box::new(move || {
                std::thread::sleep(delay);
                nec(&renamer, &c2, "PUT", &rename_path, Some(&rename_body))
            }),
        ]);
        let (assigned, renamed) = (&answers[0], &answers[1]);
        assert_eq!(renamed.0, 200, "round {round}: {renamed:?}");
        // Serially, either the assignment came first and the rename carried the label over, or
        // the rename came first and the assignment named a tag that no longer exists.
        let after = labels(&mut db, &subject);
        match assigned.0 {
            200 => assert_eq!(after, [new], "round {round}: assigned, then renamed"),
            400 => assert_eq!(after, labels_before, "round {round}: refused, nothing changed: {assigned:?}"),
            _ => panic!("round {round}: the assignment answered {assigned:?}"),
        }
        outcomes.push(assigned.0);
        let tags: Vec<String> = db
            .query("SELECT t.name FROM tags t JOIN tenants n ON n.id = t.tenant_id WHERE n.name = 'tags'", &[])
            .expect("tags")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(after.iter().all(|l| tags.contains(l)), "round {round}: labels {after:?}, tags {tags:?}");

        // Every node finds the subject by the labels it carries, and by no other.
        for n in &nodes {
            for tag in &tags {
                let want = if after.contains(tag) { vec![subject.clone()] } else { Vec::new() };
                eventually(Duration::from_secs(2), &format!("{} by tag {tag}", n.addr), || {
                    let found = found_by_tag(&n.addr, &creds, &face, tag);
                    (found.as_ref() == Some(&want), found)
                });
            }
        }
    }
    assert_no_orphans(&mut db);
    eprintln!("assignment answers, one per round, as the rename came later each round: {outcomes:?}");
}

/// The tag labels the store holds for `subject`, sorted.
fn labels(db: &mut postgres::Client, subject: &str) -> Vec<String> {
    let mut labels: Vec<String> = db
        .query("SELECT tag FROM subject_tags WHERE subject_id = $1", &[&subject])
        .expect("labels")
        .iter()
        .map(|r| r.get(0))
        .collect();
    labels.sort();
    labels
}

/// Twelve writers on three nodes rename their own tag over and over, while a reader follows the
/// change log as a node does (the changes after the last one seen, in `seq` order). A change
/// that commits after a later one (were the appends not serialised by the log's lock in
/// `crates/facegate-store/src/postgres/changes.rs`) is never read by such a reader: the reader
/// must have seen every change, and every node must find each subject by its final tag name.
#[test]
fn every_change_of_many_writers_on_three_nodes_is_read_in_order_by_every_follower() {
    let Some(pg) = PgCluster::start() else { return };
    let dirs = data_dirs(3);
    let nodes = nodes(pg.url(), &dirs, 3);
    let creds = tenant_create(pg.url(), "writers");
    let face = yao_base64();
    let (writers, renames) = (12usize, 40usize);
    let mut subjects = Vec::new();
    for w in 0..writers {
        let node = &nodes[w % nodes.len()].addr;
        let (status, body) = nec(node, &creds, "POST", &format!("/v1.1/tags/w{w}-0"), None);
        assert_eq!(status, 200, "{body}");
        let (status, body) =
            nec(node, &creds, "POST", "/v1.1/subjects", Some(&json!({"face": face, "tags": [format!("w{w}-0")]})));
        assert_eq!(status, 201, "{body}");
        subjects.push(body["id"].as_str().expect("subject id").to_owned());
    }

    // The reader: what a node's follower does, as fast as it can.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let reader = {
        let (url, done, seen) = (pg.url().to_owned(), done.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            let mut after = 0i64;
            loop {
                // Read once more after the writers finish, so that the last changes are in.
                let last_round = done.load(std::sync::atomic::Ordering::Acquire);
                let rows = db.query("SELECT seq FROM changes WHERE seq > $1 ORDER BY seq", &[&after]).expect("read");
                let batch: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                if let Some(last) = batch.last() {
                    after = *last;
                }
                seen.lock().expect("seen").extend(batch);
                if last_round {
                    return;
                }
            }
        })
    };

    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (addr, creds) = (nodes[w % nodes.len()].addr.clone(), creds.clone());
            std::thread::spawn(move || {
                for i in 0..renames {
                    let path = format!("/v1.1/tags/w{w}-{i}");
                    let (status, body) =
                        nec(&addr, &creds, "PUT", &path, Some(&json!({"newName": format!("w{w}-{}", i + 1)})));
                    assert_eq!(status, 200, "writer {w}, rename {i}: {body}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a writer failed");
    }
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Release);
    reader.join().expect("the reader failed");

    let mut db = postgres::Client::connect(pg.url(), postgres::NoTls).expect("connect");
    let all: Vec<i64> =
        db.query("SELECT seq FROM changes ORDER BY seq", &[]).expect("changes").iter().map(|r| r.get(0)).collect();
    let seen = seen.lock().expect("seen").clone();
    let skipped: Vec<i64> = all.iter().filter(|s| seen.binary_search(s).is_err()).copied().collect();
    eprintln!("{} changes by {writers} writers in {took:?}; the reader saw {}", all.len(), seen.len());
    assert!(
        skipped.is_empty(),
        "changes committed after a later one, so a follower reading in seq order never applied them: {skipped:?}"
    );
    assert!(all.len() >= writers * renames, "every rename logged a change: {}", all.len());

    // Every node's index followed every rename: each subject is found by its final tag only.
    for n in &nodes {
        for (w, subject) in subjects.iter().enumerate() {
            let (last, before) = (format!("w{w}-{renames}"), format!("w{w}-{}", renames - 1));
            eventually(Duration::from_secs(3), &format!("{} by the final name of writer {w}'s tag", n.addr), || {
                let found = found_by_tag(&n.addr, &creds, &face, &last);
                (found.as_deref() == Some(std::slice::from_ref(subject)), found)
            });
            // An old name is no tag any more: the search is refused, on every node alike.
            assert_eq!(found_by_tag(&n.addr, &creds, &face, &before), None, "{}", n.addr);
        }
    }
    assert_no_orphans(&mut db);
}
