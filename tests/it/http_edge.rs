//! The HTTP edge: health, readiness, the OpenAPI document, problem responses for bad input
//! (which must change nothing), request ids, and the web shell.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{both_backends, World};
use serde_json::{json, Value};

#[actix_web::test]
async fn committed_openapi_document_is_current() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../openapi/openapi.json"
    ))
    .expect("openapi/openapi.json is committed");
    let generated = anshin_server::openapi::document_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale; regenerate it with: cargo run -q -- openapi > openapi/openapi.json"
    );
    let v: Value = serde_json::from_str(&generated).unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3.1"));
}

#[actix_web::test]
async fn sign_in_endpoints_are_rate_limited_per_client() {
    let mut db = anshin_tests::TestDb::new(anshin_tests::Backend::Sqlite).await;
    db.config.http.auth_rate_per_minute = 1;
    db.config.http.auth_rate_burst = 3;
    let app = test::init_service(db.app().await).await;
    let attempt = || {
        test::TestRequest::post()
            .uri("/api/v1/auth/sign-in/begin")
            .set_json(json!({"email": "nobody@example.jp"}))
            .to_request()
    };
    // Unknown addresses get a decoy challenge (200), like known ones.
    for _ in 0..3 {
        assert_eq!(
            test::call_service(&app, attempt()).await.status(),
            StatusCode::OK
        );
    }
    let res = test::call_service(&app, attempt()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res
        .headers()
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
    let v: Value = test::read_body_json(res).await;
    assert_eq!(v["type"], "urn:anshin:problem:rate-limited");
    // Other endpoints are not limited.
    assert_eq!(
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request())
            .await
            .status(),
        StatusCode::OK
    );
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/auth/oidc/start?org=x")
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the OIDC redirects share the limit"
    );
}

both_backends! {
    async fn health_readiness_and_served_openapi(db) {
        let app = test::init_service(db.app().await).await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(v["checks"]["database"], "ok");
        let served = test::call_and_read_body(&app, test::TestRequest::get().uri("/openapi.json").to_request()).await;
        let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json")).unwrap();
        assert_eq!(served.as_ref(), committed.as_slice(), "served /openapi.json differs from the committed file");
    }

    async fn readiness_fails_when_the_database_is_gone(db) {
        let app = test::init_service(db.app().await).await;
        db.app.clone().close().await.unwrap();
        let res = test::call_service(&app, test::TestRequest::get().uri("/readyz").to_request()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), "application/problem+json");
    }

    async fn bad_input_gets_4xx_problems_and_changes_nothing(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let auth = ("authorization", format!("Bearer {}", w.token("alpha-cloud", Role::ProviderAdmin)));
        let before = db.tenancy().admin_list().await.unwrap();
        let big = "あ".repeat(300_000);
        let cases: Vec<(test::TestRequest, StatusCode, &str)> = vec![
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).insert_header(("content-type", "application/json")).set_payload("{\"kind\": "), StatusCode::BAD_REQUEST, "bad-request"),
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).set_json(json!({"kind":"institution","slug":"ok-slug","name":"x","reference_pattern":"IV","evil":true})), StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).set_json(json!({"kind":"institution","slug":"ok-slug","name":big,"reference_pattern":"IV"})), StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).insert_header(("content-type", "text/plain")).set_payload("hello"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).set_json(json!({"kind":"institution","slug":"Bad Slug","name":"","reference_pattern":"IV"})), StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).set_json(json!({"kind":"institution","slug":"alpha-clinic","name":"重複","reference_pattern":"IV"})), StatusCode::CONFLICT, "conflict"),
            (test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).set_json(json!({"kind":"provider","slug":"rogue","name":"x"})), StatusCode::FORBIDDEN, "forbidden"),
            (test::TestRequest::get().uri("/api/v1/tenants/not-a-uuid").insert_header(auth.clone()), StatusCode::NOT_FOUND, "not-found"),
            (test::TestRequest::get().uri("/api/v1/tenants/00000000-0000-0000-0000-000000000000").insert_header(auth.clone()), StatusCode::NOT_FOUND, "not-found"),
            (test::TestRequest::get().uri("/api/v1/tenants?kind=planet").insert_header(auth.clone()), StatusCode::BAD_REQUEST, "bad-request"),
            (test::TestRequest::delete().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(auth.clone()), StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            (test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(auth.clone()).set_json(json!({"status":"destroyed"})), StatusCode::CONFLICT, "conflict"),
            (test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(auth.clone()).set_json(json!({"bed_count": 50})), StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(auth.clone()).set_json(json!({})), StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(auth.clone()).set_json(json!({"contract_start":"2027-04-01","contract_end":"2026-04-01"})), StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            (test::TestRequest::get().uri("/api/v1/tenants"), StatusCode::UNAUTHORIZED, "unauthorized"),
            (test::TestRequest::get().uri("/api/v1/tenants").insert_header(("authorization", "Basic Zm9vOmJhcg==")), StatusCode::UNAUTHORIZED, "unauthorized"),
            (test::TestRequest::get().uri("/api/v1/tenants").insert_header(("authorization", "Bearer anshin_notarealtoken")), StatusCode::UNAUTHORIZED, "unauthorized"),
            (test::TestRequest::get().uri("/api/v1/nothing-here").insert_header(auth.clone()), StatusCode::NOT_FOUND, "not-found"),
        ];
        for (req, want, kind) in cases {
            let req = req.to_request();
            let label = format!("{} {}", req.method(), req.uri());
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), want, "{label}");
            assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), "application/problem+json", "{label}");
            if want == StatusCode::UNAUTHORIZED {
                assert!(res.headers().contains_key(header::WWW_AUTHENTICATE));
            }
            let v: Value = test::read_body_json(res).await;
            assert_eq!(v["type"], format!("urn:anshin:problem:{kind}"), "{label}: {v}");
            assert_eq!(v["status"], want.as_u16());
            assert!(!v["detail"].as_str().unwrap().is_empty());
        }
        assert_eq!(db.tenancy().admin_list().await.unwrap(), before, "bad input changed data");
    }

    async fn request_ids_are_echoed_or_generated(db) {
        let app = test::init_service(db.app().await).await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").insert_header(("x-request-id", "req-123")).to_request()).await;
        assert_eq!(res.headers().get("x-request-id").unwrap(), "req-123");
        let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").insert_header(("x-request-id", "bad id with spaces")).to_request()).await;
        let generated = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
        assert_ne!(generated, "bad id with spaces");
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
    }

    async fn web_shell_is_japanese_first_with_english_available(db) {
        let app = test::init_service(db.app().await).await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().get(header::CONTENT_LANGUAGE).unwrap(), "ja");
        let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(html.contains("<html lang=\"ja\">"));
        assert!(html.contains("3省2ガイドライン"));
        assert!(html.contains("診療所・病院"));

        let res = test::call_service(&app, test::TestRequest::get().uri("/").insert_header(("accept-language", "en-GB,en;q=0.9")).to_request()).await;
        let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("Who it is for"));

        let res = test::call_service(&app, test::TestRequest::get().uri("/?lang=en").to_request()).await;
        let cookie = res.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
        assert!(cookie.contains("anshin_lang=en"));
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Secure"), "{cookie}");
        let res = test::call_service(&app, test::TestRequest::get().uri("/").insert_header(("cookie", "anshin_lang=en")).to_request()).await;
        assert_eq!(res.headers().get(header::CONTENT_LANGUAGE).unwrap(), "en");

        let res = test::call_service(&app, test::TestRequest::get().uri("/static/anshin.css").to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap().starts_with("text/css"));

        let res = test::call_service(&app, test::TestRequest::get().uri("/no/such/page").to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(html.contains("ページが見つかりません"));
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.headers().get("x-frame-options").unwrap(), "DENY");
        assert!(res.headers().contains_key("content-security-policy"));
    }
}
