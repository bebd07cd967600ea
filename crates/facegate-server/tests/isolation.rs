//! Tenant isolation: tenant A, with valid credentials of its own, tries every route of both
//! dialects on tenant B's ids, tags, files and bulk jobs. Each attempt must be answered exactly
//! as an attempt on an id that never existed, lists and searches must show nothing of B's, and
//! B's data, read back with B's credentials, must be unchanged.

mod common;

use base64::Engine as _;
use common::*;
use facegate_core::{ApiCredentials, Tenant};
use serde_json::json;

struct Party {
    tenant: Tenant,
    /// The miiCloud `Authorization` header value.
    auth: String,
    creds: ApiCredentials,
}

async fn party(server: &TestServer, name: &str) -> Party {
    let created = server.create_tenant(name).await.expect("tenant");
    Party { tenant: created.tenant, auth: format!("Token {}", created.token), creds: created.credentials }
}

fn b64(name: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(asset(name))
}

/// Any answer as JSON; a body that is not JSON (a 204) comes back as a string, so a request
/// that wrongly succeeds fails an assertion rather than the parser.
async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("send");
    let status = res.status();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn nec(
    server: &TestServer,
    who: &ApiCredentials,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    answer(nec_request(server, who, method, path, body.as_ref())).await
}

async fn mii(
    server: &TestServer,
    auth: &str,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
    image: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = client().request(method.parse().expect("method"), server.url(path)).header("Authorization", auth);
    if !fields.is_empty() || image.is_some() {
        req = req.multipart(person_form(fields, image.map(|name| (name, asset(name)))));
    }
    answer(req).await
}

/// Placeholders and what replaces them in a request template.
type Subst<'a> = [(&'a str, &'a str)];

fn fill(template: &str, subst: &Subst<'_>) -> String {
    subst.iter().fold(template.to_owned(), |t, (k, v)| t.replace(k, v))
}

/// The answer with the substituted values put back as placeholders, so the answers for B's
/// ids and for ids that never existed compare equal when nothing tells them apart.
fn unfill(answer: &Value, subst: &Subst<'_>) -> String {
    subst.iter().fold(answer.to_string(), |t, (k, v)| t.replace(v, k))
}

struct NecProbe {
    method: &'static str,
    path: String,
    body: Option<Value>,
    expect: StatusCode,
}

fn np(method: &'static str, path: impl Into<String>, body: Option<Value>, expect: StatusCode) -> NecProbe {
    NecProbe { method, path: path.into(), body, expect }
}

struct MiiProbe {
    method: &'static str,
    path: &'static str,
    fields: &'static [(&'static str, &'static str)],
    image: bool,
}

/// Sends every probe once with `target` (B's values) and once with `decoy` (values no tenant
/// has); both must get the expected status and the same answer.
async fn nec_probes(
    server: &TestServer,
    who: &ApiCredentials,
    probes: &[NecProbe],
    target: &Subst<'_>,
    decoy: &Subst<'_>,
    leaks: &mut Vec<String>,
) {
    for p in probes {
        let send = |subst: &Subst<'_>| {
            let path = fill(&p.path, subst);
            let body = p.body.as_ref().map(|b| serde_json::from_str(&fill(&b.to_string(), subst)).expect("json"));
            async move { (path.clone(), nec(server, who, p.method, &path, body).await) }
        };
        let (path, (status, body)) = send(target).await;
        let (_, (decoy_status, decoy_body)) = send(decoy).await;
        let (seen, expected) = (unfill(&body, target), unfill(&decoy_body, decoy));
        if status != p.expect || decoy_status != p.expect || seen != expected {
            leaks.push(format!(
                "NEC {} {path} -> {status} {body} (expected {}; an unknown id gets {decoy_status} {decoy_body})",
                p.method, p.expect
            ));
        }
    }
}

async fn mii_probes(
    server: &TestServer,
    auth: &str,
    probes: &[MiiProbe],
    target: &Subst<'_>,
    decoy: &Subst<'_>,
    leaks: &mut Vec<String>,
) {
    for p in probes {
        let send = |subst: &Subst<'_>| {
            let path = fill(p.path, subst);
            let fields: Vec<(&str, String)> = p.fields.iter().map(|(k, v)| (*k, fill(v, subst))).collect();
            async move {
                let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let image = p.image.then_some("yaoming.jpg");
                (path.clone(), mii(server, auth, p.method, &path, &fields, image).await)
            }
        };
        let (path, (status, body)) = send(target).await;
        let (_, (decoy_status, decoy_body)) = send(decoy).await;
        let (seen, expected) = (unfill(&body, target), unfill(&decoy_body, decoy));
        if status != StatusCode::NOT_FOUND || decoy_status != StatusCode::NOT_FOUND || seen != expected {
            leaks.push(format!(
                "miiCloud {} {path} -> {status} {body} (an unknown id gets {decoy_status} {decoy_body})",
                p.method
            ));
        }
    }
}

/// `secrets`: what each of B's server-made values is, for the report.
fn no_secrets(what: &str, body: &Value, secrets: &HashMap<String, &str>, leaks: &mut Vec<String>) {
    let text = body.to_string();
    for (value, name) in secrets.iter().filter(|(value, _)| text.contains(value.as_str())) {
        leaks.push(format!("{what} reveals B's {name} {value}: {body}"));
    }
}

fn ids(v: &Value, list: &str) -> Vec<String> {
    v[list].as_array().into_iter().flatten().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect()
}

async fn finished_job(server: &TestServer, who: &ApiCredentials, batch: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, page) = nec(server, who, "GET", &format!("/v1.1/jobs/bulkregister/{batch}"), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let records = page["processed"].as_array().cloned().unwrap_or_default();
        if !records.is_empty() && records.iter().all(|r| r["status"] == "Processed") {
            return records;
        }
        assert!(std::time::Instant::now() < deadline, "bulk job did not finish: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn search(server: &TestServer, who: &ApiCredentials, body: Value) -> (StatusCode, Value) {
    nec(server, who, "POST", "/v1.1/face/search", Some(body)).await
}

/// What B can read of its own data, to compare before and after A's attempts.
async fn snapshot(server: &TestServer, b: &Party, subjects: &[String], batch: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let (status, person) = mii(server, &b.auth, "GET", "/miicloud/person/b-person", &[], None).await;
    seen.push(json!([status.as_u16(), person]));
    for id in subjects {
        let (status, events) = nec(server, &b.creds, "GET", &format!("/v1.1/subjects/{id}/events"), None).await;
        seen.push(json!([status.as_u16(), events]));
        seen.push(json!(server.service.subject_tags(&b.tenant, id).await.expect("tags")));
    }
    let (status, tags) = nec(server, &b.creds, "GET", "/v1.1/tags", None).await;
    seen.push(json!([status.as_u16(), tags]));
    let (status, job) = nec(server, &b.creds, "GET", &format!("/v1.1/jobs/bulkregister/{batch}"), None).await;
    seen.push(json!([status.as_u16(), job]));
    seen.push(json!(server.service.template_count(&b.tenant)));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_or_change_each_others_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let (a, b) = (party(&server, "tenant-a").await, party(&server, "tenant-b").await);
    let yao = b64("yaoming.jpg");

    // B: a miiCloud person, an NEC subject with a tag, a bulk-registered subject; all Yao Ming.
    let (status, body) = mii(
        &server,
        &b.auth,
        "POST",
        "/miicloud/person",
        &[("customer_person_id", "b-person"), ("first_name", "John")],
        Some("yaoming.jpg"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b_person = body["miicloud_person_id"].as_str().expect("id").to_owned();
    let b_image = body["image"].as_str().expect("image").to_owned();
    for tag in ["b-vip", "b-only-tag"] {
        let (status, body) = nec(&server, &b.creds, "POST", &format!("/v1.1/tags/{tag}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) =
        nec(&server, &b.creds, "POST", "/v1.1/subjects", Some(json!({"face": yao, "tags": ["b-vip"]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let b_nec = body["id"].as_str().expect("id").to_owned();
    let b_nec_event = body["eventId"].as_str().expect("eventId").to_owned();
    let b_bucket = dir.path().join("bucket/tenant-b");
    std::fs::create_dir_all(&b_bucket).expect("bucket");
    std::fs::write(b_bucket.join("b-yao.jpg"), asset("yaoming.jpg")).expect("write");
    let (status, body) = nec(
        &server,
        &b.creds,
        "POST",
        "/v1.1/jobs/bulkregister",
        Some(json!({"registrations": [{"filename": "b-yao.jpg"}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b_batch = body["batchId"].as_str().expect("batchId").to_owned();
    let records = finished_job(&server, &b.creds, &b_batch).await;
    assert_eq!(records[0]["registerStatus"], "Success", "{records:?}");
    let b_bulk = records[0]["subjectId"].as_str().expect("subjectId").to_owned();
    let b_bulk_event = records[0]["eventId"].as_str().expect("eventId").to_owned();
    let (status, events) = nec(&server, &b.creds, "GET", &format!("/v1.1/subjects/{b_person}/events"), None).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let b_person_event = ids(&events, "events").pop().expect("event");
    let b_subjects = vec![b_person.clone(), b_nec.clone(), b_bulk.clone()];
    let secrets: HashMap<String, &str> = [
        (&b_person, "miiCloud person id"),
        (&b_nec, "NEC subject id"),
        (&b_bulk, "bulk-registered subject id"),
        (&b_person_event, "miiCloud person's event id"),
        (&b_nec_event, "NEC event id"),
        (&b_bulk_event, "bulk-registered event id"),
        (&b_batch, "bulk batch id"),
        (&b_image, "stored image name"),
    ]
    .into_iter()
    .map(|(value, name)| (value.clone(), name))
    .chain(records[0]["id"].as_str().map(|id| (id.to_owned(), "bulk record id")))
    .collect();

    // A: one person of its own (the largest face of another photo), one tag, one bucket file.
    let (status, body) =
        mii(&server, &a.auth, "POST", "/miicloud/person", &[("customer_person_id", "a-own")], Some("gdp.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a_own = body["miicloud_person_id"].as_str().expect("id").to_owned();
    let (status, body) = nec(&server, &a.creds, "POST", "/v1.1/tags/a-tag", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a_bucket = dir.path().join("bucket/tenant-a");
    std::fs::create_dir_all(&a_bucket).expect("bucket");
    std::fs::write(a_bucket.join("a-yao.jpg"), asset("yaoming.jpg")).expect("write");
    let (status, a_events) = nec(&server, &a.creds, "GET", &format!("/v1.1/subjects/{a_own}/events"), None).await;
    assert_eq!(status, StatusCode::OK, "{a_events}");

    let before = snapshot(&server, &b, &b_subjects, &b_batch).await;
    assert_eq!(server.service.template_count(&b.tenant), 3);
    assert_eq!(server.service.template_count(&a.tenant), 1);
    let mut leaks = Vec::new();

    // Every miiCloud route that takes an id, by A and by the public sandbox token, on B's
    // customer_person_id and on B's subject ids.
    const MII: &[MiiProbe] = &[
        MiiProbe { method: "GET", path: "/miicloud/person/{x}", fields: &[], image: false },
        MiiProbe { method: "PUT", path: "/miicloud/person/{x}", fields: &[("first_name", "Mallory")], image: true },
        MiiProbe { method: "PUT", path: "/miicloud/person/{x}", fields: &[("email", "m@evil.test")], image: false },
        MiiProbe {
            method: "PUT",
            path: "/miicloud/person",
            fields: &[("customer_person_id", "{x}"), ("first_name", "Mallory")],
            image: true,
        },
        MiiProbe {
            method: "PUT",
            path: "/miicloud/person/",
            fields: &[("customer_person_id", "{x}"), ("first_name", "Mallory")],
            image: false,
        },
        MiiProbe { method: "DELETE", path: "/miicloud/person/{x}", fields: &[], image: false },
        MiiProbe {
            method: "POST",
            path: "/miicloud/match_faces",
            fields: &[("customer_person_id", "{x}")],
            image: true,
        },
        MiiProbe {
            method: "POST",
            path: "/miicloud/match_faces/",
            fields: &[("customer_person_id", "{x}")],
            image: true,
        },
    ];
    for auth in [a.auth.as_str(), AUTH] {
        for target in std::iter::once("b-person").chain(b_subjects.iter().map(String::as_str)) {
            mii_probes(&server, auth, MII, &[("{x}", target)], &[("{x}", "never-enrolled")], &mut leaks).await;
        }
    }

    // Every NEC route that takes a subject or event id, on each of B's subjects and events,
    // including A's own subject paired with B's event.
    let face = || Some(json!({"face": yao}));
    let nec_subject_probes = [
        np("PUT", "/v1.1/subjects/{s}", Some(json!({"face": yao, "tags": []})), StatusCode::NOT_FOUND),
        np("DELETE", "/v1.1/subjects/{s}", None, StatusCode::NOT_FOUND),
        np("GET", "/v1.1/subjects/{s}/events", None, StatusCode::NOT_FOUND),
        np("POST", "/v1.1/subjects/{s}/events", face(), StatusCode::NOT_FOUND),
        np("PUT", "/v1.1/subjects/{s}/events/{e}", face(), StatusCode::NOT_FOUND),
        np("DELETE", "/v1.1/subjects/{s}/events/{e}", None, StatusCode::NOT_FOUND),
        np("PUT", format!("/v1.1/subjects/{a_own}/events/{{e}}"), face(), StatusCode::NOT_FOUND),
        np("DELETE", format!("/v1.1/subjects/{a_own}/events/{{e}}"), None, StatusCode::NOT_FOUND),
        np("POST", "/v1.1/face/verify", Some(json!({"probe": yao, "id": "{s}"})), StatusCode::NOT_FOUND),
    ];
    // Fresh decoys each round: the same signed write sent twice within a second is refused as a
    // replay, which is not what these probes compare.
    for (round, (s, e)) in
        [(&b_person, &b_person_event), (&b_nec, &b_nec_event), (&b_bulk, &b_bulk_event)].into_iter().enumerate()
    {
        let (decoy_subject, decoy_event) = (uuid_like(10 * round as u32 + 1), uuid_like(10 * round as u32 + 2));
        let decoy = [("{s}", decoy_subject.as_str()), ("{e}", decoy_event.as_str())];
        let target = [("{s}", s.as_str()), ("{e}", e.as_str())];
        nec_probes(&server, &a.creds, &nec_subject_probes, &target, &decoy, &mut leaks).await;
    }

    // Every NEC route that takes a tag name, on B's tags: none exists for A.
    let nec_tag_probes = [
        np("PUT", "/v1.1/tags/{t}", Some(json!({"newName": "taken-over"})), StatusCode::NOT_FOUND),
        np("POST", "/v1.1/tags/{t}/taken-over", None, StatusCode::NOT_FOUND),
        np("PUT", "/v1.1/tags/{t}/taken-over", None, StatusCode::NOT_FOUND),
        np("DELETE", "/v1.1/tags/{t}", None, StatusCode::NOT_FOUND),
        np("POST", "/v1.1/subjects", Some(json!({"face": yao, "tags": ["{t}"]})), StatusCode::BAD_REQUEST),
        np(
            "PUT",
            format!("/v1.1/subjects/{a_own}"),
            Some(json!({"face": yao, "tags": ["{t}"]})),
            StatusCode::BAD_REQUEST,
        ),
        np(
            "POST",
            "/v1.1/face/search",
            Some(json!({"probe": yao, "threshold": 0, "tags": ["{t}"]})),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (tag, decoy) in [("b-vip", "never-a-tag"), ("b-only-tag", "never-a-tag-either")] {
        nec_probes(&server, &a.creds, &nec_tag_probes, &[("{t}", tag)], &[("{t}", decoy)], &mut leaks).await;
    }

    // B's bulk job, on both paging routes.
    let nec_job_probes = [
        np("GET", "/v1.1/jobs/bulkregister/{j}", None, StatusCode::NOT_FOUND),
        np("GET", "/v1.1/jobs/bulkregister/{j}/0", None, StatusCode::NOT_FOUND),
    ];
    let decoy_batch = uuid_like(3);
    nec_probes(&server, &a.creds, &nec_job_probes, &[("{j}", &b_batch)], &[("{j}", &decoy_batch)], &mut leaks).await;

    // Lists and searches by A show nothing of B's.
    let (status, body) = nec(&server, &a.creds, "GET", "/v1.1/tags", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"tags": ["a-tag"]})));
    let (status, body) = search(&server, &a.creds, json!({"probe": yao})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "A has nobody like B's Yao Ming: {body}");
    no_secrets("NEC search", &body, &secrets, &mut leaks);
    let (status, body) = search(&server, &a.creds, json!({"probe": yao, "threshold": 0, "limit": 50})).await;
    assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{body}");
    for id in ids(&body, "candidates") {
        assert_eq!(id, a_own, "a threshold-0 search finds only A's subjects: {body}");
    }
    no_secrets("NEC search at threshold 0", &body, &secrets, &mut leaks);
    let (status, body) = nec(&server, &a.creds, "POST", "/v1.1/face/extract", Some(json!({"faces": yao}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    no_secrets("NEC extract", &body, &secrets, &mut leaks);
    for auth in [a.auth.as_str(), AUTH] {
        for path in ["/miicloud/match_faces", "/miicloud/match_faces/"] {
            let (status, body) = mii(&server, auth, "POST", path, &[], Some("yaoming.jpg")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(
                body["faces"].as_array().is_some_and(|f| f.iter().all(|f| f["match_status"] == "unknown")),
                "{body}"
            );
            no_secrets("miiCloud 1:N match_faces", &body, &secrets, &mut leaks);
        }
    }

    // A's bulk job cannot read B's area of the bucket, nor tag with B's tags.
    let (status, body) = nec(
        &server,
        &a.creds,
        "POST",
        "/v1.1/jobs/bulkregister",
        Some(json!({"registrations": [
            {"filename": "b-yao.jpg"},
            {"filename": "../tenant-b/b-yao.jpg"},
            {"filename": "tenant-b/b-yao.jpg"},
            {"filename": "a-yao.jpg", "tags": ["b-only-tag"]},
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let records = finished_job(&server, &a.creds, body["batchId"].as_str().expect("batchId")).await;
    // Reasons carry details after a colon; the kind comes first.
    let kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap_or_default();
            (r["registerStatus"].as_str().unwrap_or_default(), reason.split(':').next().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Failed", "not found"),
            ("Failed", "invalid filename"),
            ("Failed", "not found"),
            ("Failed", "unknown tag 'b-only-tag'")
        ],
        "{records:#?}"
    );

    assert_eq!(server.service.template_count(&a.tenant), 1, "nothing of B's crossed over to A");
    let (status, events) = nec(&server, &a.creds, "GET", &format!("/v1.1/subjects/{a_own}/events"), None).await;
    assert_eq!((status, events), (StatusCode::OK, a_events), "A's own subject is untouched by the failed writes");
    assert_eq!(snapshot(&server, &b, &b_subjects, &b_batch).await, before, "B's data changed");

    // Tag names are per tenant: A may use B's names for its own tags, which tag nothing of B's.
    let (status, body) = nec(&server, &a.creds, "POST", "/v1.1/tags/b-vip", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = search(&server, &a.creds, json!({"probe": yao, "threshold": 0, "tags": ["b-vip"]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "A's b-vip tags nobody: {body}");
    no_secrets("NEC search by a tag name B uses", &body, &secrets, &mut leaks);
    let (status, body) = nec(&server, &a.creds, "PUT", "/v1.1/tags/b-vip", Some(json!({"newName": "a-vip"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = nec(&server, &a.creds, "DELETE", "/v1.1/tags/a-vip", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // customer_person_id is unique per tenant (UNIQUE (tenant_id, customer_person_id)), so A
    // enrolling B's id makes A's own, separate person, which A then changes and deletes.
    let (status, body) = mii(
        &server,
        &a.auth,
        "POST",
        "/miicloud/person",
        &[("customer_person_id", "b-person"), ("first_name", "Alice")],
        Some("gdp.jpg"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    no_secrets("A enrolling B's customer_person_id", &body, &secrets, &mut leaks);
    let a_person = body["miicloud_person_id"].as_str().expect("id").to_owned();
    let (status, body) = mii(&server, &a.auth, "GET", "/miicloud/person/b-person", &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["miicloud_person_id"].as_str(), body["first_name"].as_str()), (Some(&*a_person), Some("Alice")));
    assert_eq!(body["images"].as_array().map(Vec::len), Some(1), "{body}");
    no_secrets("A reading its b-person", &body, &secrets, &mut leaks);
    // 1:1 against A's b-person compares with A's photo only, never with B's Yao Ming.
    let (status, body) = mii(
        &server,
        &a.auth,
        "POST",
        "/miicloud/match_faces",
        &[("customer_person_id", "b-person")],
        Some("yaoming.jpg"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["faces"][0]["match_status"], "unknown", "{body}");
    no_secrets("A's 1:1 match_faces on its b-person", &body, &secrets, &mut leaks);
    let (status, body) =
        mii(&server, &a.auth, "PUT", "/miicloud/person/b-person", &[("first_name", "Alicia")], Some("yaoming.jpg"))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["images"].as_array().map(Vec::len), Some(2), "{body}");
    let (status, body) = mii(&server, &a.auth, "DELETE", "/miicloud/person/b-person", &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["miicloud_person_id"].as_str(), Some(&*a_person));

    // Both tenants now hold Yao Ming: each search finds its own tenant's subjects only.
    let (status, body) =
        mii(&server, &a.auth, "POST", "/miicloud/person", &[("customer_person_id", "a-yao")], Some("yaoming.jpg"))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a_yao = body["miicloud_person_id"].as_str().expect("id").to_owned();
    let (status, body) = search(&server, &a.creds, json!({"probe": yao, "limit": 50})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body, "candidates"), std::slice::from_ref(&a_yao), "{body}");
    let (status, body) = mii(&server, &a.auth, "POST", "/miicloud/match_faces", &[], Some("yaoming.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["faces"][0]["match_status"], "known", "{body}");
    assert_eq!(body["faces"][0]["miicloud_person_id"].as_str(), Some(&*a_yao), "{body}");
    let (status, body) = search(&server, &b.creds, json!({"probe": yao, "limit": 50})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut found = ids(&body, "candidates");
    found.sort();
    let mut expected = b_subjects.clone();
    expected.sort();
    assert_eq!(found, expected, "B finds exactly its own three: {body}");
    let (status, body) = search(&server, &b.creds, json!({"probe": yao, "tags": ["b-vip"]})).await;
    assert_eq!((status, ids(&body, "candidates")), (StatusCode::OK, vec![b_nec.clone()]), "{body}");
    let (status, body) = mii(&server, &b.auth, "POST", "/miicloud/match_faces", &[], Some("yaoming.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["faces"][0]["miicloud_person_id"].as_str().is_some_and(|id| b_subjects.iter().any(|s| s == id)),
        "{body}"
    );
    let (status, body) = mii(
        &server,
        &b.auth,
        "POST",
        "/miicloud/match_faces",
        &[("customer_person_id", "b-person")],
        Some("yaoming.jpg"),
    )
    .await;
    assert_eq!((status, &body["faces"][0]["match_status"]), (StatusCode::OK, &json!("known")), "{body}");
    assert_eq!(snapshot(&server, &b, &b_subjects, &b_batch).await, before, "B's data changed");

    // A signature made with one tenant's access key never passes with another tenant's API key.
    for mixed in [
        ApiCredentials { api_key: a.creds.api_key.clone(), ..b.creds.clone() },
        ApiCredentials { api_key: b.creds.api_key.clone(), ..a.creds.clone() },
    ] {
        let (status, body) = nec(&server, &mixed, "GET", "/v1.1/tags", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    assert!(leaks.is_empty(), "cross-tenant leaks:\n{}", leaks.join("\n"));
    server.stop().await;
}

/// A well-formed id that no tenant holds.
fn uuid_like(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}
