//! End-to-end tests of the HTTP API: the real router, real models and a real store (SQLite in a
//! temporary data directory, or PostgreSQL under `FACEGATE_TEST_STORE=postgres`), served on a
//! random loopback port.

mod common;

use common::*;
use facegate_core::service::{FacePolicy, FaceSelection, NewSubject, SearchOptions};

#[tokio::test]
async fn person_lifecycle_has_the_documented_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;

    let (status, body) = enroll(&server, "5712f5242cf956c7c1d248e89", "will_smith_001.jpg", asset("yaoming.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body),
        [
            "bounding_box",
            "customer_person_id",
            "email",
            "first_name",
            "image",
            "last_name",
            "miicloud_person_id",
            "phone",
            "status"
        ]
    );
    assert_eq!(body["status"], "success");
    assert_eq!(body["customer_person_id"], "5712f5242cf956c7c1d248e89");
    assert_eq!(body["first_name"], "John");
    let image = body["image"].as_str().expect("image");
    assert!(image.starts_with("enroll/will_smith_001_") && image.ends_with(".jpg"), "{image}");
    let b = &body["bounding_box"];
    assert!(b["left_x"].as_i64() < b["right_x"].as_i64() && b["left_y"].as_i64() < b["right_y"].as_i64(), "{b}");
    let person_id = body["miicloud_person_id"].as_str().expect("id").to_owned();
    assert_eq!(person_id.len(), 36, "a UUID");

    // Update through the form field, as the Python example does; a blank field clears it.
    let form = person_form(
        &[
            ("customer_person_id", "5712f5242cf956c7c1d248e89"),
            ("first_name", "John"),
            ("email", "john_doe_2@domain.com"),
            ("phone", ""),
        ],
        Some(("will_smith_003.jpg", asset("yaoming.jpg"))),
    );
    let (status, body) =
        send(client().put(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body),
        [
            "bounding_box",
            "customer_person_id",
            "email",
            "first_name",
            "images",
            "last_name",
            "miicloud_person_id",
            "phone",
            "status"
        ]
    );
    assert_eq!(body["miicloud_person_id"], person_id.as_str());
    assert_eq!(body["email"], "john_doe_2@domain.com");
    assert_eq!(body["last_name"], Value::Null, "a missing field is cleared");
    assert_eq!(body["phone"], Value::Null);
    let images = body["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    assert!(images[0]["image"].as_str().is_some_and(|i| i.starts_with("enroll/will_smith_003_")), "newest first");
    assert!(images[0]["created"].as_str().is_some_and(|c| c.ends_with('Z') && c.len() == 27), "{}", images[0]);

    // Update through the path, as the curl example does, without an image.
    let form = person_form(&[("first_name", "Johnny")], None);
    let (status, body) = send(
        client()
            .put(server.url("/miicloud/person/5712f5242cf956c7c1d248e89"))
            .header("authorization", AUTH)
            .multipart(form),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["first_name"], "Johnny");
    assert!(body.get("bounding_box").is_none(), "no new face, no box");
    assert_eq!(body["images"].as_array().map(Vec::len), Some(2));

    let (status, body) =
        send(client().get(server.url("/miicloud/person/5712f5242cf956c7c1d248e89")).header("Authorization", AUTH))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body),
        ["customer_person_id", "email", "first_name", "images", "last_name", "miicloud_person_id", "phone"]
    );
    assert_eq!(body["images"].as_array().map(Vec::len), Some(2));

    assert_eq!(server.stored_images().await, 2);

    let (status, body) =
        send(client().delete(server.url("/miicloud/person/5712f5242cf956c7c1d248e89")).header("Authorization", AUTH))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["customer_person_id", "miicloud_person_id", "status"]);
    assert_eq!(body["status"], "success");
    assert_eq!(body["miicloud_person_id"], person_id.as_str());
    assert_eq!(server.stored_images().await, 0, "images are deleted with the person");

    let (status, body) =
        send(client().get(server.url("/miicloud/person/5712f5242cf956c7c1d248e89")).header("Authorization", AUTH))
            .await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) =
        send(client().delete(server.url("/miicloud/person/5712f5242cf956c7c1d248e89")).header("Authorization", AUTH))
            .await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn match_faces_identifies_and_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let (status, body) = enroll(&server, "yao", "yaoming.jpg", asset("yaoming.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let person_id = body["miicloud_person_id"].as_str().expect("id").to_owned();

    // 1:N, the enrolled photo itself.
    let (status, body) = match_faces(&server, asset("yaoming.jpg"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let faces = body["faces"].as_array().expect("faces");
    assert_eq!(faces.len(), 1, "{body}");
    assert_eq!(faces[0]["match_status"], "known");
    assert_eq!(faces[0]["customer_person_id"], "yao");
    assert_eq!(faces[0]["miicloud_person_id"], person_id.as_str());
    assert!(faces[0]["match_confidence"].as_f64().is_some_and(|c| c > 0.7 && c <= 1.0), "{body}");

    // 1:N, strangers: every face is unknown with confidence 0.
    let (status, body) = match_faces(&server, asset("gdp.jpg"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let faces = body["faces"].as_array().expect("faces");
    assert!(faces.len() >= 4, "{body}");
    for f in faces {
        assert_eq!(f["match_status"], "unknown", "{f}");
        assert_eq!(f["match_confidence"], 0, "{f}");
        assert!(f.get("customer_person_id").is_none());
    }

    // 1:1 against Yao: known for his photo, unknown but with a real confidence for others.
    let (status, body) = match_faces(&server, asset("yaoming.jpg"), Some("yao")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["faces"][0]["match_status"], "known");
    let (status, body) = match_faces(&server, asset("gdp.jpg"), Some("yao")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for f in body["faces"].as_array().expect("faces") {
        assert_eq!(f["match_status"], "unknown", "{f}");
        let c = f["match_confidence"].as_f64().expect("confidence");
        assert!((0.0..0.7).contains(&c), "{f}");
    }
    let (status, body) = match_faces(&server, asset("yaoming.jpg"), Some("nobody")).await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn match_faces_reports_every_face_of_a_crowd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let (status, body) = match_faces(&server, asset("players.jpg"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let faces = body["faces"].as_array().expect("faces");
    assert!((18..=26).contains(&faces.len()), "players.jpg has about 22 faces, got {}", faces.len());
    for f in faces {
        assert_eq!(keys(f), ["bounding_box", "match_confidence", "match_status"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn enrollment_errors_are_json_with_fitting_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let (status, body) = enroll(&server, "p1", "a.jpg", asset("yaoming.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Existing id: 409 and nothing changes.
    let (status, body) = enroll(&server, "p1", "b.jpg", asset("yaoming.jpg")).await;
    assert_fail(status, &body, StatusCode::CONFLICT);

    // No face: a plain grey picture.
    let grey = image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(grey)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode");
    let (status, body) = enroll(&server, "p2", "grey.png", png.clone()).await;
    assert_fail(status, &body, StatusCode::UNPROCESSABLE_ENTITY);

    // Not an image, and a truncated JPEG.
    let (status, body) = enroll(&server, "p2", "notes.jpg", b"hello, this is text".to_vec()).await;
    assert_fail(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut truncated = asset("yaoming.jpg");
    truncated.truncate(truncated.len() / 3);
    let (status, body) = enroll(&server, "p2", "cut.jpg", truncated).await;
    assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::OK, "{status} {body}");

    // Missing fields.
    let form = person_form(&[("first_name", "x")], Some(("a.jpg", asset("yaoming.jpg"))));
    let (status, body) =
        send(client().post(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    let form = person_form(&[("customer_person_id", "p3")], None);
    let (status, body) =
        send(client().post(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);

    // image_path as a URL string instead of a file.
    let form = person_form(&[("customer_person_id", "p3"), ("image_path", "https://example.com/a.jpg")], None);
    let (status, body) =
        send(client().post(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().is_some_and(|m| m.contains("URL")), "{body}");

    // Over-long and control-character ids.
    let long = "x".repeat(500);
    let (status, body) = enroll(&server, &long, "a.jpg", asset("yaoming.jpg")).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = enroll(&server, "bad\u{1}id", "a.jpg", asset("yaoming.jpg")).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);

    // Not multipart at all.
    let (status, body) = send(
        client()
            .post(server.url("/miicloud/person"))
            .header("Authorization", AUTH)
            .header("content-type", "text/plain")
            .body("hi"),
    )
    .await;
    assert_fail(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Update of an unknown person.
    let form = person_form(&[("customer_person_id", "ghost")], None);
    let (status, body) =
        send(client().put(server.url("/miicloud/person")).header("Authorization", AUTH).multipart(form)).await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings { body_limit_bytes: 64 * 1024, ..Settings::default() };
    let server = TestServer::start_with(dir.path(), settings).await;
    let (status, body) = enroll(&server, "big", "big.jpg", vec![0xFF; 200 * 1024]).await;
    assert_fail(status, &body, StatusCode::PAYLOAD_TOO_LARGE);
    server.stop().await;
}

/// A full inference queue answers 503 at once, with Retry-After, instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_gets_503_not_a_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Setup {
        service: ServiceConfig { inference_workers: 1, inference_queue: 0, ..ServiceConfig::default() },
        ..Setup::default()
    };
    let server = TestServer::start_with(dir.path(), settings).await;
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let form = person_form(&[], Some(("players.jpg", asset("players.jpg"))));
            let res = client()
                .post(server.url("/miicloud/match_faces"))
                .header("Authorization", AUTH)
                .multipart(form)
                .send()
                .await
                .expect("send");
            let retry_after = res.headers().get("retry-after").is_some();
            let (status, body) = json_of(res).await;
            (status, body, retry_after)
        }));
    }
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let (status, body, retry_after) = t.await.expect("join");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_fail(status, &body, StatusCode::SERVICE_UNAVAILABLE);
                assert!(retry_after, "503 carries Retry-After");
                busy += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");
    let Ok(server) = Arc::try_unwrap(server) else { panic!("every request has finished") };
    server.stop().await;
}

#[tokio::test]
async fn authentication_is_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    for auth in [None, Some("Token wrong"), Some("Basic abc"), Some("Token")] {
        let mut req = client().get(server.url("/miicloud/person/anyone"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let (status, body) = send(req).await;
        assert_fail(status, &body, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = send(client().get(server.url("/nowhere"))).await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = send(client().get(server.url("/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(client().get(server.url("/readyz"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let (status, body) = enroll(&server, "yao", "yaoming.jpg", asset("yaoming.jpg")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data_dir = server.data_dir.clone();
    let store = server.stop_keeping_store().await;

    let server = TestServer::restart(&data_dir, store).await;
    let (status, body) = send(client().get(server.url("/miicloud/person/yao")).header("Authorization", AUTH)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["first_name"], "John");
    let (status, body) = match_faces(&server, asset("yaoming.jpg"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["faces"][0]["match_status"], "known", "the index is rebuilt from the store");
    server.stop().await;
}

/// The `faceapi` set: enroll photo 1 of each of 8 people, then every other photo must be
/// recognised as the right person, and group photos give one entry per face.
#[tokio::test]
async fn faceapi_people_are_recognised() {
    let Some(datasets) = shared_datasets() else { return };
    let root = datasets.join("faceapi");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut people: Vec<String> = std::fs::read_dir(root.join("identities"))
        .expect("identities")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    people.sort();
    assert_eq!(people.len(), 8);
    for p in &people {
        let bytes = std::fs::read(root.join("identities").join(p).join(format!("{p}1.png"))).expect("photo");
        let (status, body) = enroll(&server, p, &format!("{p}1.png"), bytes).await;
        assert_eq!(status, StatusCode::OK, "{p}: {body}");
    }
    let mut wrong = Vec::new();
    for p in &people {
        for n in 2..=5 {
            let bytes = std::fs::read(root.join("identities").join(p).join(format!("{p}{n}.png"))).expect("photo");
            let (status, body) = match_faces(&server, bytes, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let face = &body["faces"][0];
            if face["match_status"] != "known" || face["customer_person_id"] != p.as_str() {
                wrong.push(format!("{p}{n}: {face}"));
            }
        }
    }
    assert!(wrong.is_empty(), "misrecognised: {wrong:#?}");
    // Visible faces per group photo, counted by eye; bbt4 is six of the eight, all facing the camera.
    for (g, visible) in [(1, 4), (2, 3), (3, 5), (4, 6), (5, 5)] {
        let bytes = std::fs::read(root.join("groups").join(format!("bbt{g}.jpg"))).expect("group");
        let (status, body) = match_faces(&server, bytes, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let faces = body["faces"].as_array().expect("faces");
        assert_eq!(faces.len(), visible, "bbt{g}: {body}");
        let mut known: Vec<&str> = faces
            .iter()
            .filter(|f| f["match_status"] == "known")
            .filter_map(|f| f["customer_person_id"].as_str())
            .collect();
        assert!(!known.is_empty(), "bbt{g}: {body}");
        known.sort_unstable();
        if g == 4 {
            assert_eq!(known, ["amy", "bernadette", "leonard", "penny", "raj", "sheldon"], "bbt4: {body}");
        }
    }
    server.stop().await;
}

/// The document's own Python `requests` snippets, host changed, against this server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_python_snippets_work_unchanged() {
    let Some(mut python) = facegate_testkit::python_with(&["requests"]) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data")).await;
    let work = dir.path().join("client");
    for (rel, src) in [
        ("input/persons/will_smith/will_smith_001.jpg", "yaoming.jpg"),
        ("input/persons/will_smith/will_smith_003.jpg", "yaoming.jpg"),
        ("input/test_images/test_001.jpg", "yaoming.jpg"),
    ] {
        let path = work.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, asset(src)).expect("write");
    }
    let script = workspace_root().join("tests/python/miicloud_doc_snippets.py");
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        facegate_testkit::output_within(
            python.arg(script).arg(base).current_dir(work),
            std::time::Duration::from_secs(300),
        )
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "snippets failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}

/// NEC ID requests signed by botocore, NEC's own client stack, against this server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn necid_requests_signed_by_botocore_are_verified() {
    let Some(mut python) = facegate_testkit::python_with(&["botocore", "requests"]) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let created = server.service.create_tenant("nec-app").await.expect("tenant");
    let c = created.credentials.clone();
    // A miiCloud person in the same tenant, and one face of a stranger cut from gdp.jpg.
    let new = NewSubject {
        customer_id: Some("yao".into()),
        profile: facegate_core::Profile::default(),
        tags: Vec::new(),
        image: facegate_core::ImageUpload { file_name: "yao.jpg".into(), bytes: asset("yaoming.jpg") },
        policy: FacePolicy::Largest,
    };
    let person = server.service.create_subject(&created.tenant, new).await.expect("enroll");
    let gdp = asset("gdp.jpg");
    let face = engine().analyze_bytes(&gdp, Default::default()).expect("analyze").analysis.faces[0].face.bbox;
    let img = image::load_from_memory(&gdp).expect("decode").to_rgb8();
    let (w, h) = (face.width() * 2.0, face.height() * 2.0);
    let (x, y) = ((face.left - face.width() / 2.0).max(0.0), (face.top - face.height() / 2.0).max(0.0));
    let crop = image::imageops::crop_imm(&img, x as u32, y as u32, w as u32, h as u32).to_image();
    let stranger = dir.path().join("stranger.jpg");
    crop.save(&stranger).expect("save crop");
    // A heavily blurred face is still found but is too poor to register.
    let yao = image::load_from_memory(&asset("yaoming.jpg")).expect("decode").to_rgb8();
    let blurred = dir.path().join("blurred.png");
    image::imageops::blur(&yao, 6.0).save(&blurred).expect("save blurred");
    let script = workspace_root().join("tests/python/necid_botocore_client.py");
    let base = server.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        python
            .arg(script)
            .args([base, c.api_key, c.access_key_id, c.secret_access_key])
            .arg(pack_dir())
            .arg(person.subject.id)
            .arg(stranger)
            .arg(blurred);
        facegate_testkit::output_within(&mut python, std::time::Duration::from_secs(300))
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "botocore client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Another tenant's key sees none of these tags.
    let other = server.service.create_tenant("other").await.expect("tenant");
    assert!(server.service.list_tags(&other.tenant).await.expect("tags").is_empty());
    server.stop().await;
}

/// NEC ID on `faceapi`: register photo 1 of each person as a subject, then search with the
/// default threshold; the right person must come first for every other photo.
#[tokio::test]
async fn faceapi_people_are_found_by_nec_search() {
    let Some(datasets) = shared_datasets() else { return };
    let root = datasets.join("faceapi/identities");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let tenant = server.service.create_tenant("nec").await.expect("tenant").tenant;
    let people = ["amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"];
    let mut subjects = HashMap::new();
    for p in people {
        let bytes = std::fs::read(root.join(p).join(format!("{p}1.png"))).expect("photo");
        let new = NewSubject {
            customer_id: None,
            profile: facegate_core::Profile::default(),
            tags: Vec::new(),
            image: facegate_core::ImageUpload { file_name: "event".into(), bytes },
            policy: FacePolicy::SingleOfQuality,
        };
        let done = server.service.create_subject(&tenant, new).await.unwrap_or_else(|e| panic!("{p}: {e}"));
        let quality = done.attributes.expect("measured").quality;
        assert!(quality >= 0.5, "{p}: quality {quality}");
        subjects.insert(done.subject.id, p);
    }
    let mut wrong = Vec::new();
    for p in people {
        for n in 2..=5 {
            let bytes = std::fs::read(root.join(p).join(format!("{p}{n}.png"))).expect("photo");
            let options = SearchOptions {
                faces: FaceSelection::Single,
                limit: 10,
                min_score: server.service.config().known_threshold,
                tags: Vec::new(),
                sample_scores: true,
                with_subjects: false,
                keep_unknown: None,
            };
            match server.service.find_subjects(&tenant, bytes, options).await {
                Ok(faces) if faces[0].candidates.first().and_then(|c| subjects.get(&c.subject_id)) == Some(&p) => {}
                other => wrong.push(format!("{p}{n}: {other:?}")),
            }
        }
    }
    assert!(wrong.is_empty(), "not found first: {wrong:#?}");
    server.stop().await;
}

/// Polls a bulk job until every record is processed, then returns all its records, following
/// `lastEvaluatedKey` across pages.
async fn finished_bulk_records(
    server: &TestServer,
    creds: &facegate_core::ApiCredentials,
    batch_id: &str,
) -> (Vec<Value>, usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (mut records, mut pages, mut key) = (Vec::new(), 0usize, String::new());
        loop {
            let path = if key.is_empty() {
                format!("/v1.1/jobs/bulkregister/{batch_id}")
            } else {
                format!("/v1.1/jobs/bulkregister/{batch_id}/{key}")
            };
            let (status, page) = send(nec_request(server, creds, "GET", &path, None)).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["batchId"], batch_id);
            assert_eq!(page["processed"], page["processsed"], "both spellings carry the records");
            records.extend(page["processed"].as_array().cloned().unwrap_or_default());
            pages += 1;
            key = page["lastEvaluatedKey"].as_str().unwrap_or_default().to_owned();
            if key.is_empty() {
                break;
            }
        }
        if records.iter().all(|r| r["status"] == "Processed") {
            return (records, pages);
        }
        assert!(std::time::Instant::now() < deadline, "bulk job did not finish: {records:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_register_jobs_register_files_and_name_each_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let created = server.service.create_tenant("bulk-app").await.expect("tenant");
    let creds = created.credentials.clone();
    server.service.create_tag(&created.tenant, "passport").await.expect("tag");

    // The tenant's area of the default local source, with good and planted bad files.
    let bucket = dir.path().join("bucket/bulk-app");
    std::fs::create_dir_all(bucket.join("people")).expect("bucket");
    std::fs::write(bucket.join("yao.jpg"), asset("yaoming.jpg")).expect("write");
    std::fs::write(bucket.join("people/yao-again.jpg"), asset("yaoming.jpg")).expect("write");
    std::fs::write(bucket.join("yao-tagged.jpg"), asset("yaoming.jpg")).expect("write");
    std::fs::write(bucket.join("notes.jpg"), b"these are not image bytes").expect("write");
    // Five people of similar size, each registrable: ambiguous. (players.jpg's 22 small faces
    // are all too poor to register, so that photo is refused as PoorQuality instead.)
    std::fs::write(bucket.join("crowd.jpg"), asset("gdp.jpg")).expect("write");
    let mut grey = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128])))
        .write_to(&mut std::io::Cursor::new(&mut grey), image::ImageFormat::Png)
        .expect("encode");
    std::fs::write(bucket.join("blank.png"), grey).expect("write");
    std::fs::write(dir.path().join("bucket/outside.jpg"), asset("yaoming.jpg")).expect("write");

    let registrations = serde_json::json!({"registrations": [
        {"filename": "yao.jpg", "tags": ["passport"]},
        {"filename": "people/yao-again.jpg"},
        {"filename": "notes.jpg", "tags": []},
        {"filename": "blank.png"},
        {"filename": "crowd.jpg"},
        {"filename": "missing.jpg"},
        {"filename": "../outside.jpg"},
        {"filename": "/etc/passwd"},
        {"filename": "yao-tagged.jpg", "tags": ["no-such-tag"]},
    ]});
    let (status, created_job) =
        send(nec_request(&server, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&registrations))).await;
    assert_eq!(status, StatusCode::OK, "{created_job}");
    let batch_id = created_job["batchId"].as_str().expect("batchId").to_owned();

    let (records, pages) = finished_bulk_records(&server, &creds, &batch_id).await;
    assert_eq!(pages, 1);
    let outcome: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap_or_default();
            // Reasons carry details after a colon; the kind comes first.
            let kind = reason.split(':').next().unwrap_or_default().to_owned();
            (
                r["filename"].as_str().unwrap_or_default().to_owned(),
                r["registerStatus"].as_str().unwrap_or_default().to_owned(),
                kind,
            )
        })
        .collect();
    let expected = [
        ("yao.jpg", "Success", ""),
        ("people/yao-again.jpg", "Success", ""),
        ("notes.jpg", "Failed", "not an image"),
        ("blank.png", "Failed", "NoFace"),
        ("crowd.jpg", "Failed", "MultipleFaces"),
        ("missing.jpg", "Failed", "not found"),
        ("../outside.jpg", "Failed", "invalid filename"),
        ("/etc/passwd", "Failed", "invalid filename"),
        ("yao-tagged.jpg", "Failed", "unknown tag 'no-such-tag'"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(f, s, r)| (f.to_string(), s.to_string(), r.to_string())).collect();
    assert_eq!(outcome, expected, "{records:#?}");

    // Successes are real subjects with their event, tags and attributes; failures carry none.
    let first = &records[0];
    assert_eq!(first["attempts"], "1");
    let subject_id = first["subjectId"].as_str().expect("subjectId");
    let (status, events) =
        send(nec_request(&server, &creds, "GET", &format!("/v1.1/subjects/{subject_id}/events"), None)).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert!(events.to_string().contains(first["eventId"].as_str().expect("eventId")), "{events}");
    assert_eq!(server.service.subject_tags(&created.tenant, subject_id).await.expect("tags"), ["passport"]);
    let attributes: Value = serde_json::from_str(first["attributesJson"].as_str().expect("string")).expect("json");
    assert!(attributes["faceQualityScore"].is_string(), "{attributes}");
    assert_eq!(records[2]["subjectId"], "");

    // Another tenant cannot see the job.
    let other = server.service.create_tenant("other-app").await.expect("tenant").credentials;
    let (status, body) =
        send(nec_request(&server, &other, "GET", &format!("/v1.1/jobs/bulkregister/{batch_id}"), None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Malformed requests are refused whole.
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"registrations": []}),
        serde_json::json!({"registrations": [{"tags": []}]}),
    ] {
        let (status, body) = send(nec_request(&server, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&bad))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {body}");
        assert!(body["errorCode"].is_string() || body["message"].is_string(), "{body}");
    }
    server.stop().await;
}

/// 1,005 records page as 1,000 + 5; a job interrupted by a stop resumes on the next start and
/// registers every file exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_jobs_page_by_a_thousand_and_resume_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let created = server.service.create_tenant("resume-app").await.expect("tenant");
    let creds = created.credentials.clone();
    let bucket = dir.path().join("bucket/resume-app");
    std::fs::create_dir_all(&bucket).expect("bucket");
    let good = 24;
    for i in 0..good {
        std::fs::write(bucket.join(format!("{i}.jpg")), asset("yaoming.jpg")).expect("write");
    }
    let mut entries: Vec<Value> = (0..good).map(|i| serde_json::json!({"filename": format!("{i}.jpg")})).collect();
    entries.extend((0..1005 - good).map(|i| serde_json::json!({"filename": format!("absent/{i}.jpg")})));
    let body = serde_json::json!({"registrations": entries});
    let (status, job) = send(nec_request(&server, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&body))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let batch_id = job["batchId"].as_str().expect("batchId").to_owned();

    // Stop while files are still being registered: once the first record is processed, so that
    // the job has surely started, whatever the machine's load, and long before its 24 photos are
    // all through inference.
    let done = |page: &Value| {
        page["processed"].as_array().map_or(0, |r| r.iter().filter(|r| r["status"] == "Processed").count())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let processed = loop {
        let (status, page) =
            send(nec_request(&server, &creds, "GET", &format!("/v1.1/jobs/bulkregister/{batch_id}"), None)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let processed = done(&page);
        if processed > 0 {
            break processed;
        }
        assert!(std::time::Instant::now() < deadline, "no record was processed within 120 s: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(processed < good, "the job should still be running when the server stops: {processed} processed");
    let store = server.stop_keeping_store().await;
    let server = TestServer::restart(dir.path(), store).await;
    let (records, pages) = finished_bulk_records(&server, &creds, &batch_id).await;
    assert_eq!(pages, 2);
    assert_eq!(records.len(), 1005);
    let seqs: Vec<String> = records.iter().map(|r| r["filename"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(seqs[0], "0.jpg");
    assert_eq!(seqs[1004], format!("absent/{}.jpg", 1005 - good - 1));
    let successes: Vec<&Value> = records.iter().filter(|r| r["registerStatus"] == "Success").collect();
    assert_eq!(successes.len(), good);
    assert!(records.iter().filter(|r| r["registerStatus"] == "Failed").all(|r| r["reason"] == "not found"));
    // Exactly once: one subject per good file, and no other subjects.
    let ids: std::collections::HashSet<&str> = successes.iter().filter_map(|r| r["subjectId"].as_str()).collect();
    assert_eq!(ids.len(), good);
    assert_eq!(server.service.template_count(&created.tenant), good);
    server.stop().await;
}

/// `python3 -m moto.server` on a free loopback port: a real S3-compatible server. `None` (after
/// `facegate_testkit::skip`) where moto is missing; `make test` installs it into `.facegate/python`.
struct MotoServer {
    child: std::process::Child,
    endpoint: String,
}

impl MotoServer {
    fn start() -> Option<Self> {
        let mut python = facegate_testkit::python_with(&["moto.server"])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let child = python
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto");
        let server = Self { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(server)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bulk_register_reads_from_an_s3_bucket() {
    let Some(moto) = MotoServer::start() else { return };
    // moto accepts any credentials; the bucket and objects are made with plain HTTP calls.
    let http = client();
    let put = |path: String, body: Vec<u8>| http.put(format!("{}{path}", moto.endpoint)).body(body).send();
    assert!(put("/faces".into(), Vec::new()).await.expect("create bucket").status().is_success());
    for (name, bytes) in [("yao.jpg", asset("yaoming.jpg")), ("notes.jpg", b"not an image".to_vec())] {
        let res = put(format!("/faces/incoming/s3-app/{name}"), bytes).await.expect("put object");
        assert!(res.status().is_success(), "{}", res.status());
    }
    let source = facegate_store::BucketSource::s3_with_key(
        "s3://faces/incoming",
        Some(&moto.endpoint),
        "test",
        "test",
        "us-east-1",
    )
    .expect("s3 source");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_with_source(dir.path(), Settings::default(), Arc::new(source)).await;
    let creds = server.service.create_tenant("s3-app").await.expect("tenant").credentials;
    let body = serde_json::json!({"registrations": [
        {"filename": "yao.jpg"}, {"filename": "notes.jpg"}, {"filename": "missing.jpg"}, {"filename": "../s3-app/yao.jpg"},
    ]});
    let (status, job) = send(nec_request(&server, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&body))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let (records, _) = finished_bulk_records(&server, &creds, job["batchId"].as_str().expect("batchId")).await;
    let reasons: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["registerStatus"].as_str().unwrap_or_default(), r["reason"].as_str().unwrap_or_default()))
        .map(|(s, r)| (s, r.split(':').next().unwrap_or_default()))
        .collect();
    assert_eq!(
        reasons,
        [("Success", ""), ("Failed", "not an image"), ("Failed", "not found"), ("Failed", "invalid filename")],
        "{records:#?}"
    );
    server.stop().await;
}

/// A source that cannot be reached is a transient failure: retried with backoff up to the
/// configured attempts, then reported with the attempts it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_sources_are_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let source = facegate_store::BucketSource::s3_with_key("s3://nowhere", Some(&endpoint), "k", "s", "us-east-1")
        .expect("s3 source");
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Setup { bulk: BulkConfig { max_attempts: 2, ..BulkConfig::default() }, ..Setup::default() };
    let server = TestServer::start_with_source(dir.path(), settings, Arc::new(source)).await;
    let creds = server.service.create_tenant("flaky-app").await.expect("tenant").credentials;
    let body = serde_json::json!({"registrations": [{"filename": "a.jpg"}]});
    let (status, job) = send(nec_request(&server, &creds, "POST", "/v1.1/jobs/bulkregister", Some(&body))).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let (records, _) = finished_bulk_records(&server, &creds, job["batchId"].as_str().expect("batchId")).await;
    assert_eq!(records[0]["registerStatus"], "Failed", "{records:?}");
    assert_eq!(records[0]["attempts"], "2", "{records:?}");
    assert!(records[0]["reason"].as_str().unwrap_or_default().starts_with("read error"), "{records:?}");
    server.stop().await;
}
