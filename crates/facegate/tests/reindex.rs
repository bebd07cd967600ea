//! `facegate reindex` and the stale-template check of `facegate serve`, run as real processes:
//! people enrolled with the default pack are refused a server on another pack until a reindex has
//! re-embedded their stored photos, and are all found again after it; a reindex killed with
//! SIGKILL half-way changes nothing, and the next run finishes it. On the faceapi photos of
//! `../shared/datasets` (the tests skip, visibly, without them).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{facegate, match_faces, root, SandboxServer};

/// The pack the tests switch to. The gallery is enrolled with the default pack (yunet_sface,
/// 256-d templates); this is another pack `scripts/setup` installs (buffalo_s, 512-d), so the
/// switch changes the detector, the recognizer and the template size. Nothing else in these tests
/// assumes which pack it is.
fn other_pack() -> PathBuf {
    root().join(".facegate/models/buffalo_s")
}

/// `<datasets>/faceapi/identities`: 8 people, 5 photos each; `None` after a visible skip.
fn identities() -> Option<PathBuf> {
    let dir = facegate_testkit::shared_datasets()?.join("faceapi/identities");
    if dir.is_dir() {
        return Some(dir);
    }
    facegate_testkit::skip(&format!("{} is absent", dir.display()));
    None
}

fn people(identities: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(identities)
        .expect("identities")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The photo a person is probed with: their last one (every photo is enrolled).
fn probe_of(identities: &Path, person: &str) -> Vec<u8> {
    let mut photos: Vec<PathBuf> =
        std::fs::read_dir(identities.join(person)).expect("person").filter_map(|e| e.ok().map(|e| e.path())).collect();
    photos.sort();
    std::fs::read(photos.last().expect("a photo")).expect("read photo")
}

/// Where the gallery is, as every command takes it.
struct Gallery {
    data: tempfile::TempDir,
    key_file: Option<PathBuf>,
    database_url: Option<String>,
}

impl Gallery {
    fn new(encrypted: bool, database_url: Option<&str>) -> Gallery {
        let data = tempfile::tempdir().expect("tempdir");
        let key_file = encrypted.then(|| {
            let path = data.path().join("data.key");
            std::fs::write(&path, "7f".repeat(32)).expect("write key");
            path
        });
        let data_dir = data.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("mkdir");
        Gallery { data, key_file, database_url: database_url.map(str::to_owned) }
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--data-dir".into(), self.data.path().join("data").into()];
        if let Some(key) = &self.key_file {
            args.extend(["--encryption-key-file".into(), key.into()]);
        }
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".into(), url.into()]);
        }
        args
    }

    /// `facegate import` of person folders into the tenant `sandbox`, with the default pack.
    fn import(&self, people: &Path) -> Value {
        let mut cmd = facegate();
        cmd.arg("import").arg(people).args(["--tenant", "sandbox", "--inference-workers", "2", "--json"]);
        let out = facegate_testkit::output_within(cmd.args(self.args()), Duration::from_secs(300));
        assert!(out.status.success(), "import failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("a JSON summary")
    }

    fn reindex_command(&self, pack: &Path) -> Command {
        let mut cmd = facegate();
        cmd.args(["reindex", "--inference-workers", "2", "--json", "--model-dir"]).arg(pack).args(self.args());
        cmd
    }

    /// `facegate reindex` to completion; its JSON summary.
    fn reindex(&self, pack: &Path) -> Value {
        let out = facegate_testkit::output_within(&mut self.reindex_command(pack), Duration::from_secs(300));
        assert!(out.status.success(), "reindex failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("a JSON summary")
    }

    /// `facegate serve` on `pack`, expected to refuse to start; what it said.
    fn serve_refused(&self, pack: &Path) -> String {
        let mut cmd = facegate();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--inference-workers", "2", "--sandbox", "--model-dir"])
            .arg(pack)
            .args(self.args());
        let out = facegate_testkit::output_within(&mut cmd, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "serve started over stale templates:\n{stderr}");
        stderr
    }

    /// `facegate serve --sandbox` on `pack`, ready.
    fn serve(&self, pack: &Path, extra: &[&str]) -> SandboxServer {
        let mut args: Vec<OsString> = vec!["--sandbox".into(), "--model-dir".into(), pack.into()];
        args.extend(self.args());
        args.extend(extra.iter().map(OsString::from));
        SandboxServer::spawn(&args, &[])
    }

    fn audit_log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("data/audit.log")).unwrap_or_default()
    }
}

/// `match_faces` with `photo`: 1:N, or 1:1 against `customer_person_id`. The first face's match
/// status and the customer id it matched.
/// `match_faces`' verdict and identified person for the first face of `photo`.
fn match_face(server: &SandboxServer, photo: &[u8], customer_person_id: Option<&str>) -> (String, String) {
    let fields: Vec<(&str, &str)> = customer_person_id.map(|id| ("customer_person_id", id)).into_iter().collect();
    let answer = match_faces(server, photo, &fields);
    let face = &answer["faces"][0];
    (
        face["match_status"].as_str().unwrap_or_default().to_owned(),
        face["customer_person_id"].as_str().unwrap_or_default().to_owned(),
    )
}

fn readyz(server: &SandboxServer) -> Value {
    let answer = server.get("/readyz", None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    serde_json::from_str(answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)).expect("json")
}

/// Person folders for `facegate import`: each faceapi person (linked), and one group photo whose
/// largest face is enrolled, so that the reindex must pick that face among several by its box.
fn person_folders(identities: &Path, dir: &Path, copies: usize) -> PathBuf {
    let folders = dir.join("people");
    std::fs::create_dir_all(&folders).expect("mkdir");
    for person in people(identities) {
        for copy in 0..copies {
            let name = if copies == 1 { person.clone() } else { format!("{person}-{copy}") };
            std::os::unix::fs::symlink(identities.join(&person), folders.join(name)).expect("symlink");
        }
    }
    if copies == 1 {
        let group = folders.join("group");
        std::fs::create_dir_all(&group).expect("mkdir");
        let photo = identities.join("../groups/bbt1.jpg");
        std::fs::copy(photo, group.join("bbt1.jpg")).expect("copy the group photo");
    }
    folders
}

/// The whole story on one gallery: enrolled with the default pack, refused on the other pack, served
/// anyway when asked, re-embedded, and then every person found again.
fn pack_change_needs_a_reindex_and_then_everyone_is_found(gallery: &Gallery) {
    let Some(identities) = identities() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let pack = other_pack();
    let people = people(&identities);
    let imported = gallery.import(&person_folders(&identities, work.path(), 1));
    let enrolled = people.len() * 5 + 1;
    assert_eq!(imported["imported"], enrolled, "{imported}");
    let subjects = people.len() + 1;

    // The other pack: serve refuses, naming the tenant, the count and the way out.
    let refused = gallery.serve_refused(&pack);
    assert!(refused.contains(&format!("{subjects} subjects of tenant \"sandbox\"")), "{refused}");
    assert!(refused.contains("facegate reindex") && refused.contains("--allow-stale-templates"), "{refused}");
    assert!(
        refused.contains("yunet_sface/sface_2021dec_int8_centred+dlib_resnet_v1_int8@1")
            && refused.contains("--pack NAME"),
        "{refused}"
    );

    // Asked to, it serves, says so, and /readyz counts what it cannot search.
    let server = gallery.serve(&pack, &["--allow-stale-templates"]);
    let ready = readyz(&server);
    assert_eq!(ready["stale_templates"]["unsearchable_subjects"], subjects, "{ready}");
    assert_eq!(ready["stale_templates"]["samples"], enrolled, "{ready}");
    assert!(server.logs().contains("--allow-stale-templates"), "a loud warning:\n{}", server.logs());
    let (status, _) = match_face(&server, &probe_of(&identities, &people[0]), None);
    assert_eq!(status, "unknown", "templates of another model are never compared");
    drop(server);

    let summary = gallery.reindex(&pack);
    assert_eq!(summary["reembedded"], enrolled, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["resumed"], 0, "{summary}");
    assert_eq!(summary["tenants"][0]["tenant"], "sandbox", "{summary}");
    assert_eq!(summary["stale_samples_left"], 0, "{summary}");
    assert!(gallery.audit_log().contains("\"action\":\"reindex\""), "audited:\n{}", gallery.audit_log());

    // Every person is found by search and verified against their own record.
    let server = gallery.serve(&pack, &[]);
    assert_eq!(readyz(&server)["stale_templates"]["samples"], 0);
    for person in &people {
        let probe = probe_of(&identities, person);
        assert_eq!(match_face(&server, &probe, None), ("known".to_owned(), person.clone()), "{person} by search");
        assert_eq!(match_face(&server, &probe, Some(person)).0, "known", "{person} 1:1");
    }
    let group = std::fs::read(identities.join("../groups/bbt1.jpg")).expect("group photo");
    assert_eq!(match_face(&server, &group, Some("group")).0, "known", "the group photo's enrolled face");
}

#[test]
fn a_pack_change_is_refused_until_reindex_then_everyone_is_found() {
    pack_change_needs_a_reindex_and_then_everyone_is_found(&Gallery::new(false, None));
}

#[test]
fn reindex_works_on_an_encrypted_data_directory() {
    pack_change_needs_a_reindex_and_then_everyone_is_found(&Gallery::new(true, None));
}

#[test]
fn reindex_works_on_an_encrypted_postgres_gallery() {
    let Some(cluster) = facegate_testkit::PgCluster::start() else { return };
    pack_change_needs_a_reindex_and_then_everyone_is_found(&Gallery::new(true, Some(cluster.url())));
}

/// 80 subjects (each faceapi person ten times over), 400 photos: a reindex long enough to kill
/// after its first staged batch. The kill changes nothing a server sees; the next run keeps the
/// staged outcomes and finishes, and every subject is then found.
#[test]
fn a_reindex_killed_half_way_changes_nothing_and_the_next_run_finishes_it() {
    killed_half_way_then_finished(&Gallery::new(false, None));
}

/// The same on PostgreSQL: the killed run's staged rows stay in the database (its transactions
/// committed batch by batch), and the node lock it held goes with its connection.
#[test]
fn a_reindex_killed_half_way_on_postgres_changes_nothing_and_the_next_run_finishes_it() {
    let Some(cluster) = facegate_testkit::PgCluster::start() else { return };
    killed_half_way_then_finished(&Gallery::new(false, Some(cluster.url())));
}

fn killed_half_way_then_finished(gallery: &Gallery) {
    let Some(identities) = identities() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let pack = other_pack();
    let copies = 10;
    let people = people(&identities);
    let subjects = people.len() * copies;
    let enrolled = subjects * 5;
    let imported = gallery.import(&person_folders(&identities, work.path(), copies));
    assert_eq!(imported["imported"], enrolled, "{imported}");

    let mut child = gallery.reindex_command(&pack).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut killed_at = None;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        seen.push(line.clone());
        let field = |name: &str| {
            line.split(&format!("{name}=")).nth(1).and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        };
        if let (true, Some(done), Some(total)) = (line.contains("reindex progress"), field("done"), field("total")) {
            assert_eq!(total, enrolled, "{line}");
            if done > 0 && done < total {
                child.kill().expect("SIGKILL");
                killed_at = Some(done);
                break;
            }
        }
    }
    let status = child.wait().expect("wait");
    let killed_at = killed_at.unwrap_or_else(|| panic!("no progress before it ended ({status}):\n{}", seen.join("\n")));
    assert!(!status.success(), "killed, not finished");

    // Nothing was swapped in: the server still refuses every subject.
    let refused = gallery.serve_refused(&pack);
    assert!(refused.contains(&format!("{subjects} subjects of tenant \"sandbox\"")), "{refused}");

    let started = Instant::now();
    let summary = gallery.reindex(&pack);
    eprintln!("killed at {killed_at} staged; the rerun took {:?}: {summary}", started.elapsed());
    let resumed = summary["resumed"].as_u64().expect("resumed");
    assert!(resumed >= killed_at as u64 && resumed < enrolled as u64, "{summary}");
    assert_eq!(summary["reembedded"], enrolled, "the staged outcomes count too: {summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    let server = gallery.serve(&pack, &[]);
    assert_eq!(readyz(&server)["stale_templates"]["samples"], 0);
    for person in &people {
        let probe = probe_of(&identities, person);
        let (status, found) = match_face(&server, &probe, None);
        assert!(status == "known" && found.starts_with(&format!("{person}-")), "{person}: {status} {found}");
        for copy in 0..copies {
            let id = format!("{person}-{copy}");
            assert_eq!(match_face(&server, &probe, Some(&id)).0, "known", "{id} 1:1");
        }
    }
}
