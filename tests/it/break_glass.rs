//! Break-glass accounts (guideline 11 ①) on both backends: a sealed code shown once, use only
//! with a reason, a short emergency session, a signed alert delivered to a webhook, and a dead
//! code until an admin issues a new one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpRequest, HttpResponse, HttpServer};
use anshin_identity::break_glass::{sign, BreakGlassAlertJob};
use anshin_platform::jobs::{JobQueue, Worker, WorkerOptions};
use anshin_platform::secret::Secret;
use anshin_platform::Role;
use anshin_tests::{both_backends, free_port, World};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn receive(req: HttpRequest, body: web::Bytes, got: web::Data<Received>) -> HttpResponse {
    let sig = req
        .headers()
        .get("x-anshin-signature")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    got.lock().unwrap().push((sig, body.to_vec()));
    HttpResponse::NoContent().finish()
}

both_backends! {
    async fn emergency_access_is_single_use_reasoned_short_and_alerted(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app()).await;
        let admin = ("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionAdmin)));

        // Only admins issue codes; the code is shown once and never again.
        let staff = ("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionStaff)));
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/break-glass").insert_header(staff).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/break-glass").insert_header(admin.clone()).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        let issued: Value = test::read_body_json(res).await;
        let code = issued["code"].as_str().unwrap().to_string();
        let status: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/break-glass").insert_header(admin.clone()).to_request()).await;
        assert_eq!(status["status"], "sealed");
        assert!(!status.to_string().contains(&code));

        let use_code = |code: &str, reason: &str, org: &str| test::TestRequest::post().uri("/api/v1/auth/break-glass").set_json(json!({"org": org, "code": code, "reason": reason})).to_request();
        let reason = "電子カルテ障害のため病棟で緊急に患者情報を参照する";
        // No reason, a wrong code, or the right code for another organisation: refused.
        assert_eq!(test::call_service(&app, use_code(&code, "急ぎ", "alpha-hospital")).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(test::call_service(&app, use_code("bg_wrong", reason, "alpha-hospital")).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(test::call_service(&app, use_code(&code, reason, "alpha-clinic")).await.status(), StatusCode::FORBIDDEN);

        // The right code with a reason: an emergency session of at most an hour.
        let res = test::call_service(&app, use_code(&code, reason, "alpha-hospital")).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = res.headers().get_all("set-cookie").find_map(|v| v.to_str().ok()?.strip_prefix("anshin_session=")?.split(';').next().map(String::from)).unwrap();
        let sessions: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/me/sessions").insert_header(("cookie", format!("anshin_session={cookie}"))).to_request()).await;
        let s = &sessions["items"][0];
        assert_eq!(s["method"], "break_glass");
        let created: chrono::DateTime<chrono::Utc> = s["created_at"].as_str().unwrap().parse().unwrap();
        let expires: chrono::DateTime<chrono::Utc> = s["absolute_expires_at"].as_str().unwrap().parse().unwrap();
        assert!(expires - created <= chrono::Duration::minutes(60));
        let me: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/me").insert_header(("cookie", format!("anshin_session={cookie}"))).to_request()).await;
        assert_eq!(me["user"]["role"], "institution_admin");
        // The portal shows the emergency banner.
        let res = test::call_service(&app, test::TestRequest::get().uri("/portal").insert_header(("cookie", format!("anshin_session={cookie}"))).to_request()).await;
        let html = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(html.contains("非常時アクセス中"), "banner shown");

        // Used once, the code is dead; the admin sees when, why and from where.
        assert_eq!(test::call_service(&app, use_code(&code, reason, "alpha-hospital")).await.status(), StatusCode::FORBIDDEN);
        let status: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/break-glass").insert_header(admin.clone()).to_request()).await;
        assert_eq!(status["status"], "used");
        assert_eq!(status["used_reason"], reason);

        // The alert was queued with the use and is delivered, signed, to the webhook.
        let got: Received = Arc::new(Mutex::new(Vec::new()));
        let port = free_port();
        let g = got.clone();
        let server = HttpServer::new(move || App::new().app_data(web::Data::new(g.clone())).route("/alerts", web::post().to(receive)))
            .workers(1)
            .bind(("127.0.0.1", port))
            .unwrap()
            .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let identity = anshin_identity::IdentityService::new(db.app.clone(), "http://localhost:8080", db.config.identity.clone(), anshin_server::app::secret_box(&db.config).unwrap()).unwrap();
        let worker = Worker::new(db.app.clone(), WorkerOptions::default()).register(BreakGlassAlertJob {
            webhook_url: Some(format!("http://127.0.0.1:{port}/alerts")),
            secret: Some(Secret::new("webhook-signing-secret")),
            http: identity.http_client(),
        });
        assert!(worker.run_one().await.unwrap(), "an alert job was queued");
        handle.stop(true).await;
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let (sig, body) = &got[0];
        assert_eq!(sig, &sign("webhook-signing-secret", body), "HMAC signature over the body");
        let alert: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(alert["event"], "break_glass.used");
        assert_eq!(alert["reason"], reason);
        assert_eq!(alert["tenant_id"], w.h1.id.to_string());
        let jobs = JobQueue::new(db.app.clone()).list_by_kind(anshin_identity::break_glass::ALERT_JOB).await.unwrap();
        assert_eq!(jobs[0].status, anshin_platform::jobs::JobStatus::Succeeded);

        // After normal operation resumes the admin issues a new code; the old one stays dead.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/break-glass").insert_header(admin.clone()).to_request()).await;
        let fresh: Value = test::read_body_json(res).await;
        assert_ne!(fresh["code"], issued["code"]);
        assert_eq!(test::call_service(&app, use_code(&code, reason, "alpha-hospital")).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(test::call_service(&app, use_code(fresh["code"].as_str().unwrap(), reason, "alpha-hospital")).await.status(), StatusCode::OK);
    }
}
