//! The native API for unknown people (issue 29), over HTTP on the fakes: a tenant that opts in
//! keeps what its searches find nobody for, lists and searches it back, merges, splits, deletes
//! and promotes it, with either dialect's credentials; a tenant that never opted in keeps nothing.
//!
//! The fake engine reads `face:<label>` lines as faces; these labels embed apart.

mod common;

use std::time::Duration;

use common::*;
use facegate_core::service::NewTenant;
use serde_json::json;

fn fake_image(labels: &[&str]) -> Vec<u8> {
    labels.iter().map(|l| format!("face:{l}")).collect::<Vec<_>>().join("\n").into_bytes()
}

fn token(tenant: &NewTenant) -> String {
    format!("Token {}", tenant.token)
}

/// miiCloud 1:N, with the request id the sightings will name.
async fn search(server: &TestServer, tenant: &NewTenant, labels: &[&str], request_id: &str) -> Value {
    let form = person_form(&[], Some(("probe.jpg", fake_image(labels))));
    let req = client()
        .post(server.url("/miicloud/match_faces"))
        .header("Authorization", token(tenant))
        .header("x-request-id", request_id)
        .multipart(form);
    let (status, body) = send(req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn get(server: &TestServer, tenant: &NewTenant, path: &str) -> (StatusCode, Value) {
    send(client().get(server.url(path)).header("Authorization", token(tenant))).await
}

async fn post(server: &TestServer, tenant: &NewTenant, path: &str, body: Value) -> (StatusCode, Value) {
    send(client().post(server.url(path)).header("Authorization", token(tenant)).json(&body)).await
}

/// The tenant's unknown people as (id, sightings), largest first.
async fn people(server: &TestServer, tenant: &NewTenant) -> Vec<(String, u64)> {
    let (status, page) = get(server, tenant, "/facegate/v1/unknown-people?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut found: Vec<(String, u64)> = page["unknown_people"]
        .as_array()
        .expect("people")
        .iter()
        .map(|p| (p["id"].as_str().expect("id").to_owned(), p["sightings"].as_u64().expect("count")))
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    found
}

async fn search_back(server: &TestServer, tenant: &NewTenant, labels: &[&str]) -> Value {
    let form = person_form(&[], Some(("probe.jpg", fake_image(labels))));
    let req = client()
        .post(server.url("/facegate/v1/unknown-people/search"))
        .header("Authorization", token(tenant))
        .multipart(form);
    let (status, body) = send(req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn unknown_people_are_kept_listed_searched_corrected_and_promoted_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let acme = server.create_tenant("acme").await.expect("tenant");
    let globex = server.create_tenant("globex").await.expect("tenant");
    let side = server.side_store();
    side.set_unknown_faces_retention(&acme.tenant.id, Some(Duration::from_secs(3600))).expect("opt in");

    search(&server, &acme, &["ann", "bob"], "req-1").await;
    search(&server, &acme, &["ann"], "req-2").await;
    search(&server, &globex, &["ann", "bob"], "req-3").await;
    assert!(people(&server, &globex).await.is_empty(), "a tenant that never opted in keeps nothing");
    let listed = people(&server, &acme).await;
    assert_eq!(listed.iter().map(|p| p.1).collect::<Vec<_>>(), vec![2, 1]);
    let (ann, bob) = (listed[0].0.clone(), listed[1].0.clone());

    let (status, seen) = get(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/sightings")).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    let mut requests: Vec<&str> =
        seen["sightings"].as_array().expect("sightings").iter().filter_map(|s| s["request_id"].as_str()).collect();
    requests.sort_unstable();
    assert_eq!(requests, vec!["req-1", "req-2"]);
    assert_eq!(seen["unknown_person"]["sightings"], 2);
    let sighting = seen["sightings"][0]["id"].as_str().expect("id").to_owned();
    assert!(seen["sightings"][0]["seen_at"].as_str().expect("time").ends_with('Z'));
    let crop = client()
        .get(server.url(&format!("/facegate/v1/sightings/{sighting}/crop")))
        .header("Authorization", token(&acme))
        .send()
        .await
        .expect("crop");
    assert_eq!(crop.status(), StatusCode::OK);
    assert_eq!(crop.headers()["content-type"], "image/jpeg");
    let (status, _) = get(&server, &globex, &format!("/facegate/v1/sightings/{sighting}/crop")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's crop");

    // A search back finds ann among the unknown, and keeps nothing.
    let back = search_back(&server, &acme, &["ann", "hal"]).await;
    assert_eq!(back["faces"][0]["match_status"], "unknown");
    assert_eq!(back["faces"][0]["unknown_people"][0]["id"], ann.as_str());
    assert_eq!(back["faces"][0]["unknown_people"][0]["sightings"], 2);
    assert!(back["faces"][1]["unknown_people"].as_array().expect("list").is_empty());
    assert_eq!(people(&server, &acme).await.len(), 2);

    // Merge, split back, and the errors a client can make.
    let (status, merged) =
        post(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/merge"), json!({"from": bob})).await;
    assert_eq!((status, merged["sightings"].as_u64()), (StatusCode::OK, Some(3)), "{merged}");
    let (status, body) =
        post(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/merge"), json!({"from": bob})).await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    let (status, body) =
        post(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/merge"), json!({"to": 1})).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    let (_, seen) = get(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/sightings")).await;
    let bobs: Vec<Value> = seen["sightings"]
        .as_array()
        .expect("sightings")
        .iter()
        .filter(|s| s["request_id"] == "req-1")
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(bobs.len(), 2, "req-1 kept ann and bob");
    let (status, split) =
        post(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/split"), json!({"sightings": [bobs[0]]}))
            .await;
    assert_eq!(status, StatusCode::OK, "{split}");
    let split_id = split["id"].as_str().expect("id").to_owned();
    let (status, body) =
        post(&server, &acme, &format!("/facegate/v1/unknown-people/{ann}/split"), json!({"sightings": []})).await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);

    // Delete one; promote the other and find it known from then on.
    let deleted = send(
        client()
            .delete(server.url(&format!("/facegate/v1/unknown-people/{split_id}")))
            .header("Authorization", token(&acme)),
    )
    .await;
    assert_eq!((deleted.0, deleted.1["deleted_sightings"].as_u64()), (StatusCode::OK, Some(1)), "{}", deleted.1);
    let (status, promoted) = post(
        &server,
        &acme,
        &format!("/facegate/v1/unknown-people/{ann}/promote"),
        json!({"customer_person_id": "ann-01"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{promoted}");
    assert_eq!(promoted["customer_person_id"], "ann-01");
    assert!(people(&server, &acme).await.is_empty());
    let (status, person) = get(&server, &acme, "/miicloud/person/ann-01").await;
    assert_eq!(status, StatusCode::OK, "{person}");
    let matched = search(&server, &acme, &["ann"], "req-4").await;
    assert_eq!(matched["faces"][0]["match_status"], "known", "{matched}");
    assert!(people(&server, &acme).await.is_empty(), "a known face is not kept");

    // Turned off beside the server: nothing is listed or kept.
    search(&server, &acme, &["judy"], "req-5").await;
    assert_eq!(people(&server, &acme).await.len(), 1);
    side.set_unknown_faces_retention(&acme.tenant.id, None).expect("off");
    assert!(people(&server, &acme).await.is_empty());
    search(&server, &acme, &["judy"], "req-6").await;
    assert!(people(&server, &acme).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn nec_credentials_work_and_a_signed_write_is_carried_out_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let acme = server.create_tenant("acme").await.expect("tenant");
    server.side_store().set_unknown_faces_retention(&acme.tenant.id, Some(Duration::from_secs(60))).expect("on");
    search(&server, &acme, &["ann"], "r1").await;
    search(&server, &acme, &["bob"], "r2").await;
    let creds = &acme.credentials;
    let (status, page) = send(nec_request(&server, creds, "GET", "/facegate/v1/unknown-people", None)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<String> = page["unknown_people"]
        .as_array()
        .expect("people")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let path = format!("/facegate/v1/unknown-people/{}/merge", ids[0]);
    let body = json!({"from": ids[1]});
    let signed = nec_request(&server, creds, "POST", &path, Some(&body));
    let replay = signed.try_clone().expect("clone");
    let (status, merged) = send(signed).await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    let (status, _) = send(replay).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the replay is refused");

    let (status, body) = send(client().get(server.url("/facegate/v1/unknown-people"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = get(&server, &acme, "/facegate/v1/unknown-people?limit=0").await;
    assert_fail(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = get(&server, &acme, "/facegate/v1/unknown-people/nobody/sightings").await;
    assert_fail(status, &body, StatusCode::NOT_FOUND);
    server.stop().await;
}
