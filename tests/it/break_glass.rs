//! Break-glass accounts (guideline 11 ①) on both backends: a sealed code shown once, use only
//! with a reason, a short emergency session, a signed alert delivered to a webhook, an alert
//! mail to every active administrator through a real SMTP server (aiosmtpd) that never blocks
//! the emergency, and a dead code until an admin issues a new one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpRequest, HttpResponse, HttpServer};
use anshin_identity::break_glass::{sign, BreakGlassAlertJob};
use anshin_identity::ClientMeta;
use anshin_platform::jobs::{JobQueue, Worker, WorkerOptions};
use anshin_platform::secret::Secret;
use anshin_platform::Role;
use anshin_tests::{
    bearer, both_backends, enroll_passkey, free_port, identity_with_smtp, Smtp, World,
};
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
        let app = test::init_service(db.app().await).await;
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
        let identity = anshin_tests::identity_service(&db, "http://localhost:8080");
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

/// Issues a new emergency code for `slug` with its admin's API token.
async fn issue_code<S, B>(app: &S, w: &World, slug: &str, role: Role) -> String
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri("/api/v1/break-glass")
            .insert_header(bearer(w, slug, role))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = test::read_body_json(res).await;
    v["code"].as_str().unwrap().to_string()
}

fn recipients(mails: &[Value]) -> Vec<String> {
    let mut to: Vec<String> = mails
        .iter()
        .flat_map(|m| {
            m["rcpt_tos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
        })
        .collect();
    to.sort();
    to
}

fn jst(t: chrono::DateTime<chrono::Utc>) -> String {
    (t + chrono::Duration::hours(9))
        .format("%Y-%m-%d %H:%M JST")
        .to_string()
}

both_backends! {
    async fn every_active_admin_is_mailed_and_mail_trouble_never_blocks_the_emergency(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        // The hospital: two active admins, a disabled one and a nurse; the clinic next door and
        // the provider have admins of their own.
        enroll_passkey(&app, &w, "alpha-hospital", "head@hikari.example.jp", "institution_admin").await;
        enroll_passkey(&app, &w, "alpha-hospital", "deputy@hikari.example.jp", "institution_admin").await;
        let former = enroll_passkey(&app, &w, "alpha-hospital", "former@hikari.example.jp", "institution_admin").await;
        enroll_passkey(&app, &w, "alpha-hospital", "nurse@hikari.example.jp", "institution_staff").await;
        enroll_passkey(&app, &w, "alpha-clinic", "head@aoba.example.jp", "institution_admin").await;
        enroll_passkey(&app, &w, "alpha-cloud", "cto@alpha.example.jp", "provider_admin").await;
        let res = test::call_service(&app, test::TestRequest::patch().uri(&format!("/api/v1/accounts/{}", former.id)).insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin)).set_json(json!({"status": "disabled"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let code = issue_code(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await;

        let smtp = Smtp::start(&db);
        let identity = identity_with_smtp(&db, &smtp);
        let reason = "電子カルテの認証基盤が停止し、救急外来で患者の既往歴を確認する必要がある";
        let meta = ClientMeta { user_agent: Some("Mozilla/5.0 (救急外来端末)".into()), source_ip: Some("192.0.2.41".into()) };
        let session = identity.use_break_glass("alpha-hospital", &code, reason, meta).await.unwrap();

        // Both active admins of the hospital, and nobody else, get the alert.
        let mails = smtp.wait_for(2, 20).await;
        assert_eq!(recipients(&mails), vec!["deputy@hikari.example.jp", "head@hikari.example.jp"], "{mails:?}");
        let expiry = jst(session.absolute_expires_at);
        for m in &mails {
            let subject = m["subject"].as_str().unwrap();
            assert!(subject.contains("非常時用アカウントが使用されました") && subject.contains("ひかり病院"), "{subject}");
            let body = m["body"].as_str().unwrap();
            // Who, from where, when, why and until when; Japanese first, then English.
            for part in ["非常時用アカウント (break-glass)", "192.0.2.41", "救急外来端末", reason, expiry.as_str(), "セッションの有効期限", "Session expires"] {
                assert!(body.contains(part), "{part} missing in {body}");
            }
            assert!(body.find("理由:").unwrap() < body.find("Reason:").unwrap(), "{body}");
            assert!(body.find("日時:").unwrap() < body.find("When:").unwrap(), "{body}");
        }
        // The emergency session itself works.
        let res = test::call_service(&app, test::TestRequest::get().uri("/api/v1/me").insert_header(("cookie", format!("anshin_session={}", session.cookie.expose()))).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);

        // A provider's code alerts the provider's admins only.
        let code = issue_code(&app, &w, "alpha-cloud", Role::ProviderAdmin).await;
        identity.use_break_glass("alpha-cloud", &code, reason, ClientMeta::default()).await.unwrap();
        let mails = smtp.wait_for(3, 20).await;
        assert_eq!(recipients(&mails[2..]), vec!["cto@alpha.example.jp"]);
        assert!(mails[2]["subject"].as_str().unwrap().contains("アルファクラウド"));
        // Nothing else trickles in afterwards.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(smtp.messages().len(), 3);

        // The mail server is down: the emergency session is granted all the same.
        drop(smtp);
        let code = issue_code(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await;
        let session = identity.use_break_glass("alpha-hospital", &code, reason, ClientMeta::default()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/api/v1/me").insert_header(("cookie", format!("anshin_session={}", session.cookie.expose()))).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "the emergency session stands without the mail");
        let status: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/break-glass").insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin)).to_request()).await;
        assert_eq!(status["status"], "used");
    }
}
