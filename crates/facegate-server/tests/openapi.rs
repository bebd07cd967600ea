//! The published contract: both OpenAPI documents are served, match their committed snapshots
//! in `docs/openapi/`, and hold every endpoint of the two API documents in `../shared/specs/`.
//!
//! After an intended change of the contract, rewrite the snapshots with
//! `FACEGATE_UPDATE_SNAPSHOTS=1 cargo test --release -p facegate-server --test openapi`
//! and review the diff.

mod common;

use std::collections::BTreeSet;

use common::*;

fn snapshot_path(dialect: &str) -> PathBuf {
    workspace_root().join("docs/openapi").join(format!("{dialect}.json"))
}

/// `METHOD /path/{}` for every operation of an OpenAPI document, parameters unnamed.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            found.insert(format!("{} {}", method.to_uppercase(), unnamed(path)));
        }
    }
    found
}

/// `/a/{x}/b` and `/a/(string:x)/b` both as `/a/{}/b`.
fn unnamed(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') || s.starts_with('(') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The endpoints the two reference documents list: NEC's `.. http:method:: /path` directives
/// (an optional trailing parameter counts both ways), miiCloud's endpoint lines and examples.
fn seed_operations() -> Option<BTreeSet<String>> {
    let specs = shared_datasets()?.parent()?.join("specs");
    let mut found = BTreeSet::new();
    let nec = std::fs::read_to_string(specs.join("necid-api.rst")).ok()?;
    for line in nec.lines() {
        let Some(rest) = line.trim().strip_prefix(".. http:") else { continue };
        let Some((method, path)) = rest.split_once("::") else { continue };
        let path = path.trim();
        if !path.starts_with("/v1.1") {
            continue;
        }
        let method = method.to_uppercase();
        if let Some(without) = path.strip_suffix("/(string:pagingId?)") {
            found.insert(format!("{method} {}", unnamed(without)));
        }
        found.insert(format!("{method} {}", unnamed(path)));
    }
    let mii = std::fs::read_to_string(specs.join("miicloud-api.md")).ok()?;
    for line in mii.lines() {
        // "`GET https://sandbox.miicloud.io/miicloud/person`" and "curl -X GET \" + URL lines.
        let line = line.trim().trim_matches('`');
        let Some((method, url)) = line.split_once(' ') else { continue };
        if !["GET", "POST", "PUT", "DELETE"].contains(&method) {
            continue;
        }
        if let Some(path) = url.split("miicloud.io").nth(1) {
            found.insert(format!("{method} {}", unnamed(path.trim())));
        }
    }
    // The curl examples name a person in the path: GET, PUT and DELETE /miicloud/person/<id>.
    for method in ["GET", "PUT", "DELETE"] {
        if mii.contains(&format!("curl -X {method} \\\nhttps://sandbox.miicloud.io/miicloud/person/")) {
            found.insert(format!("{method} /miicloud/person/{{}}"));
        }
    }
    Some(found)
}

#[tokio::test]
async fn both_documents_are_served_match_their_snapshots_and_cover_the_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_on_fakes(dir.path(), Settings::default()).await;
    let client = client();
    let mut served = Vec::new();
    for dialect in ["miicloud", "necid", "facegate"] {
        let res = client.get(server.url(&format!("/openapi/{dialect}.json"))).send().await.expect("get document");
        assert_eq!(res.status(), StatusCode::OK, "{dialect}");
        let doc: Value = res.json().await.expect("json");
        assert_eq!(doc["openapi"], "3.1.0", "{dialect}");
        let pretty = serde_json::to_string_pretty(&doc).expect("pretty") + "\n";
        let path = snapshot_path(dialect);
        if std::env::var_os("FACEGATE_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &pretty).expect("write snapshot");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == pretty,
            "{} differs from the served document: if the change is intended, rerun with \
             FACEGATE_UPDATE_SNAPSHOTS=1 and commit the new snapshot",
            path.display()
        );
        served.push(doc);
    }
    let page = client.get(server.url("/docs/")).send().await.expect("docs page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("html").contains("swagger-ui"), "the docs page is Swagger UI");

    let Some(seed) = seed_operations() else {
        facegate_testkit::skip("../shared/specs is absent: the reference documents' endpoints were not checked");
        server.stop().await;
        return;
    };
    let contract: BTreeSet<String> = served.iter().flat_map(operations).collect();
    let missing: Vec<&String> = seed.difference(&contract).collect();
    assert!(seed.len() >= 20, "the references' endpoints were read: {seed:?}");
    assert!(missing.is_empty(), "endpoints of the reference documents missing from the contract: {missing:?}");
    server.stop().await;
}
