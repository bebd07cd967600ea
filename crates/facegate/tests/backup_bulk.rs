//! `facegate backup` while an NEC bulk register job runs, then `facegate restore`: the restored
//! gallery holds the NEC subjects with their events and tags, the tenant's credentials (its API
//! key and its signing key still work), and a job whose records agree with the subjects (every
//! record processed in the backup names a subject that is there, and no record still waiting has
//! one), and the restored server finishes that job, registering every file exactly once.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use facegate_core::jobs::{RecordStatus, RegisterStatus};
use facegate_core::{BulkJobStore, GalleryStore};
use serde_json::{json, Value};

mod common;
use common::{bulk_records, http, match_faces, multipart, nec, root, SandboxServer, SANDBOX_TOKEN};

/// Photos in the job: enough that the backup, taken once a few are done, lands mid-job even on
/// an idle machine, where a photo takes a few milliseconds.
const FILES: usize = 200;
/// Every this many files is tagged `staff`: 40, within one search's 50 candidates.
const STAFF_EVERY: usize = 5;

fn yao() -> Vec<u8> {
    std::fs::read(root().join(".facegate/models/buffalo_s/yaoming.jpg")).expect("pack photo: run scripts/setup")
}

fn face() -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, yao())
}

fn processed(records: &[Value]) -> usize {
    records.iter().filter(|r| r["status"] == "Processed").count()
}

/// The event ids of an NEC subject, sorted.
fn events(addr: &str, creds: &Value, subject: &str) -> Vec<String> {
    let (status, body) = nec(addr, creds, "GET", &format!("/v1.1/subjects/{subject}/events"), None);
    assert_eq!(status, 200, "{subject}: {body}");
    let mut ids: Vec<String> = body["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The subjects an NEC search by `tag` finds, sorted.
fn found_by_tag(addr: &str, creds: &Value, tag: &str) -> Vec<String> {
    let (status, body) =
        nec(addr, creds, "POST", "/v1.1/face/search", Some(&json!({"probe": face(), "tags": [tag], "limit": 50})));
    assert!(status == 200 || status == 404, "search by {tag}: {status} {body}");
    let mut ids: Vec<String> = body["candidates"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

fn serve(data: &Path, bucket: &Path) -> SandboxServer {
    let args: Vec<OsString> =
        vec!["--sandbox".into(), "--data-dir".into(), data.into(), "--bulk-source".into(), bucket.into()];
    SandboxServer::spawn(&args, &[])
}

#[test]
fn a_backup_taken_during_a_bulk_job_restores_nec_subjects_tags_credentials_and_consistent_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, bucket) = (dir.path().join("data"), dir.path().join("bucket"));
    let server = serve(&data, &bucket);

    // An NEC tenant, made beside the running server as an operator would.
    let created =
        common::facegate().args(["tenant", "create", "nec", "--data-dir"]).arg(&data).output().expect("tenant create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let creds: Value = serde_json::from_slice(&created.stdout).expect("credentials");
    let tenant_id = creds["id"].as_str().expect("tenant id").to_owned();
    let addr = server.addr.clone();

    // Tags, subjects carrying them, and a second event.
    for tag in ["vip", "staff", "visitor"] {
        let (status, body) = nec(&addr, &creds, "POST", &format!("/v1.1/tags/{tag}"), None);
        assert_eq!(status, 200, "{body}");
    }
    let mut subjects = Vec::new();
    for tags in [json!(["vip"]), json!(["visitor", "vip"]), json!([])] {
        let (status, body) = nec(&addr, &creds, "POST", "/v1.1/subjects", Some(&json!({"face": face(), "tags": tags})));
        assert_eq!(status, 201, "{body}");
        subjects.push(body["id"].as_str().expect("subject id").to_owned());
    }
    let (status, body) =
        nec(&addr, &creds, "POST", &format!("/v1.1/subjects/{}/events", subjects[2]), Some(&json!({"face": face()})));
    assert_eq!(status, 201, "{body}");
    let events_before: Vec<Vec<String>> = subjects.iter().map(|s| events(&addr, &creds, s)).collect();
    assert_eq!(events_before[2].len(), 2, "{events_before:?}");
    // And a miiCloud person of the sandbox tenant.
    let (content_type, body) = multipart(&[("customer_person_id", "mii-1")], Some(("image_path", "p.jpg", &yao())));
    let auth = format!("Token {SANDBOX_TOKEN}");
    let (status, answer) =
        http(&addr, "POST", "/miicloud/person", &[("Authorization", &auth), ("Content-Type", &content_type)], &body);
    assert_eq!(status, 200, "{answer}");

    // A bulk job over a folder of photos, some of them tagged.
    let area = bucket.join("nec");
    std::fs::create_dir_all(&area).expect("bucket");
    let photo = yao();
    let registrations: Vec<Value> = (0..FILES)
        .map(|i| {
            std::fs::write(area.join(format!("{i:03}.jpg")), &photo).expect("write photo");
            let tags = if i % STAFF_EVERY == 0 { json!(["staff"]) } else { json!([]) };
            json!({"filename": format!("{i:03}.jpg"), "tags": tags})
        })
        .collect();
    let (status, job) =
        nec(&addr, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&json!({"registrations": registrations})));
    assert_eq!(status, 200, "{job}");
    let batch = job["batchId"].as_str().expect("batchId").to_owned();
    let started = Instant::now();
    while processed(&bulk_records(&addr, &creds, &batch)) < 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the job never got going:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    // The backup, while the job runs.
    let file = dir.path().join("gallery.fgbackup");
    let out = common::facegate().arg("backup").arg("--to").arg(&file).arg("--data-dir").arg(&data).output();
    let out = out.expect("run backup");
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let after_backup = processed(&bulk_records(&addr, &creds, &batch));
    assert!(after_backup < FILES, "the job had finished by the end of the backup: the backup ran beside no job");
    drop(server);

    let restored = dir.path().join("restored");
    let out = common::facegate().arg("restore").arg("--from").arg(&file).arg("--data-dir").arg(&restored).output();
    let out = out.expect("run restore");
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));

    // The job as the backup holds it, read before any server resumes it: a record processed as a
    // success names a subject that is there with its event; any other record has no subject.
    let (done_in_backup, bulk_subjects) = {
        let store = facegate_store::SqliteStore::open(&restored).expect("open the restored store");
        let records = store.bulk_records(&batch, None, FILES + 1).expect("records");
        assert_eq!(records.len(), FILES);
        let mut done = Vec::new();
        for record in &records {
            let subject = store.subject_by_id(&tenant_id, &record.subject_id).expect("subject");
            let registered =
                record.status == RecordStatus::Processed && record.register_status == Some(RegisterStatus::Success);
            if registered {
                assert!(subject.is_some(), "a registered record without its subject: {record:?}");
                let samples = store.samples_of(&tenant_id, &record.subject_id).expect("samples");
                let event = record.event_id.as_deref().expect("a registered record's event");
                assert!(samples.iter().any(|s| s.id == event), "{record:?}: {samples:?}");
                done.push((record.filename.clone(), record.subject_id.clone()));
            } else {
                assert_eq!(record.status, RecordStatus::New, "only successes here: {record:?}");
                assert!(subject.is_none(), "a subject registered for a record still waiting: {record:?}");
            }
        }
        let db = facegate_store::inspect_database(&restored.join("facegate.db")).expect("inspect");
        assert_eq!(db.integrity, "ok");
        // The three subjects made by hand, the miiCloud person, and one per registered record.
        assert_eq!(db.subjects, (3 + 1 + done.len()) as u64, "a subject of no record, or a record of none");
        (done, db.subjects)
    };
    assert!(!done_in_backup.is_empty() && done_in_backup.len() < FILES, "{}", done_in_backup.len());
    eprintln!("the backup holds {} of {FILES} records registered ({bulk_subjects} subjects)", done_in_backup.len());

    // A server on the restored directory, with the same bulk folder: the tenant's API key and
    // signing key work, and everything written before the backup is there.
    let server = serve(&restored, &bucket);
    let addr = server.addr.clone();
    let (status, tags) = nec(&addr, &creds, "GET", "/v1.1/tags", None);
    assert_eq!(status, 200, "the restored tenant's credentials: {tags}");
    assert_eq!(tags["tags"], json!(["vip", "staff", "visitor"]), "{tags}");
    let mut wrong = creds.clone();
    wrong["secret_access_key"] = json!("not the secret");
    let (status, body) = nec(&addr, &wrong, "GET", "/v1.1/tags", None);
    assert_eq!(status, 403, "a wrong signing key is still refused: {body}");
    for (subject, before) in subjects.iter().zip(&events_before) {
        assert_eq!(&events(&addr, &creds, subject), before, "{subject}");
    }
    assert_eq!(found_by_tag(&addr, &creds, "vip"), sorted(vec![subjects[0].clone(), subjects[1].clone()]));
    assert_eq!(found_by_tag(&addr, &creds, "visitor"), vec![subjects[1].clone()]);
    let found = match_faces(&server, &yao(), &[("customer_person_id", "mii-1")]);
    assert_eq!(found["faces"][0]["match_status"], "known", "{found}");

    // The restored server resumes the job and finishes it: every file registered exactly once,
    // the records registered before the backup unchanged.
    let started = Instant::now();
    let all = loop {
        let all = bulk_records(&addr, &creds, &batch);
        if processed(&all) == FILES {
            break all;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the resumed job never finished:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(all.iter().all(|r| r["registerStatus"] == "Success"), "{all:?}");
    for (filename, subject) in &done_in_backup {
        let record = all.iter().find(|r| r["filename"] == filename.as_str()).expect("record");
        assert_eq!(record["subjectId"], subject.as_str(), "{record}");
    }
    let mut staff: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % STAFF_EVERY == 0)
        .map(|(_, r)| r["subjectId"].as_str().unwrap_or_default().to_owned())
        .collect();
    staff.sort();
    assert_eq!(found_by_tag(&addr, &creds, "staff"), staff, "the job's tags, on the files that had them");
    let mut server = server;
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", server.logs());
    let db = facegate_store::inspect_database(&restored.join("facegate.db")).expect("inspect");
    assert_eq!(db.subjects, (3 + 1 + FILES) as u64, "one subject per file, no more");
    assert_eq!(db.samples, db.subjects + 1, "one face each, and the second event");
    assert_eq!(db.integrity, "ok");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
