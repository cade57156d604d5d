//! Password reset by an administrator after verifying the person's identity (guideline 14 ⑥),
//! on both backends: the verification is recorded (method, note, verifier, time), the admin
//! never chooses the password, the old password and the person's sessions end at once, and a
//! single-use, expiring link (shown once, or mailed through a real SMTP server) lets the person
//! set a new password under the usual rules before signing in with their security key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_identity::password_reset::{PasswordResetRequest, VerificationMethod};
use anshin_platform::Role;
use anshin_tests::{
    bearer, both_backends, enroll_passkey, identity_with_smtp, origin, problem, session_of,
    step_up, with_session, Session, Smtp, World, ORIGIN,
};
use serde_json::{json, Value};
use uuid::Uuid;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::AuthenticatorBackend;

const OLD_PASSWORD: &str = "桜並木の下で春を待つ2026";
const NEW_PASSWORD: &str = "紫陽花が咲く梅雨の午後3時";

/// Invites `email` into alpha-clinic as staff and enrolls a software security key with
/// `password`; yields the account id, its session and the key.
async fn enroll_key<S, B>(
    app: &S,
    w: &World,
    email: &str,
    password: &str,
) -> (Uuid, Session, SoftToken)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let inv: Value = test::call_and_read_body_json(
        app,
        test::TestRequest::post()
            .uri("/api/v1/invitations")
            .insert_header(bearer(w, "alpha-clinic", Role::InstitutionAdmin))
            .set_json(
                json!({"email": email, "display_name": "鈴木 一郎", "role": "institution_staff"}),
            )
            .to_request(),
    )
    .await;
    let token = inv["enrollment_url"]
        .as_str()
        .unwrap()
        .split("#token=")
        .nth(1)
        .unwrap()
        .to_string();
    let begin: Value = test::call_and_read_body_json(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/enrollment/begin")
            .set_json(json!({"token": token, "method": "security_key", "password": password}))
            .to_request(),
    )
    .await;
    let ccr: CreationChallengeResponse =
        serde_json::from_value(begin["public_key"].clone()).unwrap();
    let (mut key, _) = SoftToken::new(false).unwrap();
    let reg = key
        .perform_register(origin(), ccr.public_key, 60_000)
        .unwrap();
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/enrollment/finish")
            .set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg}))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let s = session_of(res).await;
    let me: Value = test::call_and_read_body_json(
        app,
        with_session(test::TestRequest::get().uri("/api/v1/me"), &s),
    )
    .await;
    (me["user"]["id"].as_str().unwrap().parse().unwrap(), s, key)
}

/// Password, then security key: the status of the first refusal, or the new session.
async fn sign_in<S, B>(
    app: &S,
    email: &str,
    password: &str,
    key: &mut SoftToken,
) -> Result<Session, StatusCode>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/password-sign-in/begin")
            .set_json(json!({"email": email, "password": password}))
            .to_request(),
    )
    .await;
    if res.status() != StatusCode::OK {
        return Err(res.status());
    }
    let begin: Value = test::read_body_json(res).await;
    let rcr: RequestChallengeResponse =
        serde_json::from_value(begin["public_key"].clone()).unwrap();
    let cred = key.perform_auth(origin(), rcr.public_key, 60_000).unwrap();
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/password-sign-in/finish")
            .set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": cred}))
            .to_request(),
    )
    .await;
    if res.status() != StatusCode::OK {
        return Err(res.status());
    }
    Ok(session_of(res).await)
}

fn reset_req(id: Uuid, body: Value) -> test::TestRequest {
    test::TestRequest::post()
        .uri(&format!("/api/v1/accounts/{id}/password-resets"))
        .set_json(body)
}

fn complete(token: &str, password: &str) -> actix_http::Request {
    test::TestRequest::post()
        .uri("/api/v1/auth/password-reset")
        .set_json(json!({"token": token, "new_password": password}))
        .to_request()
}

fn token_of(issued: &Value) -> String {
    let url = issued["reset_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no link in {issued}"));
    assert!(
        url.starts_with(&format!("{ORIGIN}/password-reset#token=")),
        "{url}"
    );
    url.split("#token=").nth(1).unwrap().to_string()
}

both_backends! {
    async fn an_admin_resets_after_verifying_identity_and_the_person_sets_a_new_password(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let mut head = enroll_passkey(&app, &w, "alpha-clinic", "head@aoba.example.jp", "institution_admin").await;
        let (ichiro, ichiro_session, mut key) = enroll_key(&app, &w, "ichiro@aoba.example.jp", OLD_PASSWORD).await;
        let verification = json!({"method": "in_person_id_card", "note": "受付で運転免許証を確認 (写真・氏名・生年月日)"});

        // Only a signed-in admin may record a verification: not staff or auditors, not an API token.
        for role in [Role::InstitutionStaff, Role::Auditor, Role::InstitutionAdmin] {
            let res = test::call_service(&app, reset_req(ichiro, verification.clone()).insert_header(bearer(&w, "alpha-clinic", role)).to_request()).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{role}");
        }
        // Scope before role: other tenants cannot find the account, whoever they are.
        for (slug, role) in [("alpha-hospital", Role::InstitutionAdmin), ("alpha-cloud", Role::ProviderAdmin), ("beta-clinic", Role::InstitutionStaff)] {
            let res = test::call_service(&app, reset_req(ichiro, verification.clone()).insert_header(bearer(&w, slug, role)).to_request()).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{role}@{slug}");
            let res = test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{ichiro}/password-resets")).insert_header(bearer(&w, slug, role)).to_request()).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{role}@{slug}");
        }
        // The verification must be stated; `other` needs a note; unknown fields are refused.
        for bad in [json!({}), json!({"method": "trust_me"}), json!({"method": "other"}), json!({"method": "other", "note": "  "}),
                    json!({"method": "video_call", "note": "x".repeat(1001)}), json!({"method": "video_call", "new_password": "管理者が決めたパスワード"})] {
            let (status, v) = problem(test::call_service(&app, with_session(reset_req(ichiro, bad.clone()), &head.session)).await).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        }
        // Not one's own password, and not an account without a password.
        let (status, _) = problem(test::call_service(&app, with_session(reset_req(head.id, verification.clone()), &head.session)).await).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let passkey_only = enroll_passkey(&app, &w, "alpha-clinic", "kana@aoba.example.jp", "institution_staff").await;
        let (status, v) = problem(test::call_service(&app, with_session(reset_req(passkey_only.id, verification.clone()), &head.session)).await).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(v["detail"].as_str().unwrap().contains("no password"), "{v}");
        // A fresh passkey step-up is needed.
        db.exec_platform("UPDATE sessions SET stepped_up_at = NULL").await;
        let (status, v) = problem(test::call_service(&app, with_session(reset_req(ichiro, verification.clone()), &head.session)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(v["type"], "urn:anshin:problem:step-up-required");
        assert_eq!(db.count_platform("SELECT count(*) FROM password_resets").await, 0, "nothing recorded yet");
        assert!(sign_in(&app, "ichiro@aoba.example.jp", OLD_PASSWORD, &mut key).await.is_ok(), "nothing changed yet");

        // Stepped up: the reset is recorded and a single-use link is shown once.
        step_up(&app, &mut head).await;
        let res = test::call_service(&app, with_session(reset_req(ichiro, verification.clone()), &head.session)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
        let issued: Value = test::read_body_json(res).await;
        assert_eq!(issued["mailed"], false);
        let token = token_of(&issued);
        let r = &issued["reset"];
        assert_eq!(r["user_id"], ichiro.to_string());
        assert_eq!(r["method"], "in_person_id_card");
        assert_eq!(r["note"], verification["note"]);
        assert_eq!(r["verified_by"], format!("user:{}", head.id));
        assert_eq!(r["verifier_email"], "head@aoba.example.jp");
        assert_eq!(r["delivery"], "shown");
        assert_eq!(r["status"], "pending");
        let created: chrono::DateTime<chrono::Utc> = r["created_at"].as_str().unwrap().parse().unwrap();
        let expires: chrono::DateTime<chrono::Utc> = r["expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(expires - created, chrono::Duration::hours(24));
        // Only the hash of the link is kept.
        assert_eq!(db.count_platform(&format!("SELECT count(*) FROM password_resets WHERE token_hash = '{token}'")).await, 0);
        assert_eq!(db.count_platform("SELECT count(*) FROM password_resets WHERE length(token_hash) = 64").await, 1);

        // The person's sessions ended, and the old password no longer signs in (same answer as a
        // wrong one); the admin sees the reset pending.
        let res = test::call_service(&app, with_session(test::TestRequest::get().uri("/api/v1/me"), &ichiro_session)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(db.count_platform("SELECT count(*) FROM sessions WHERE ended_reason = 'password_reset'").await, 2, "both of the person's sessions");
        assert_eq!(sign_in(&app, "ichiro@aoba.example.jp", OLD_PASSWORD, &mut key).await.unwrap_err(), StatusCode::BAD_REQUEST);
        let status: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{ichiro}/password")).insert_header(bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).to_request()).await;
        assert!(status["invalidated_at"].is_string(), "{status}");

        // The new password follows the usual rules: policy, and none of the recent ones.
        for (bad, why) in [("short", "at least 12"), ("1qaz2wsx3edc", "commonly used"), (OLD_PASSWORD, "last 5")] {
            let (status, v) = problem(test::call_service(&app, complete(&token, bad)).await).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert!(v["detail"].as_str().unwrap().contains(why), "{bad}: {v}");
        }
        let (status, _) = problem(test::call_service(&app, complete("forged-token", NEW_PASSWORD)).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let res = test::call_service(&app, complete(&token, NEW_PASSWORD)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert!(anshin_tests::session_cookie(&res).is_none(), "no session: the person signs in with the key");
        // Single use.
        let (status, _) = problem(test::call_service(&app, complete(&token, "別の新しいパスワードです2026")).await).await;
        assert_eq!(status, StatusCode::CONFLICT);
        // The new password works with the security key; the old one still does not.
        assert_eq!(sign_in(&app, "ichiro@aoba.example.jp", OLD_PASSWORD, &mut key).await.unwrap_err(), StatusCode::BAD_REQUEST);
        let s = sign_in(&app, "ichiro@aoba.example.jp", NEW_PASSWORD, &mut key).await.expect("signs in with the new password");
        let sessions: Value = test::call_and_read_body_json(&app, with_session(test::TestRequest::get().uri("/api/v1/me/sessions"), &s)).await;
        assert_eq!(sessions["items"][0]["method"], "security_key+password");

        // The record: admins and auditors read it (never a link); staff do not.
        for role in [Role::InstitutionAdmin, Role::Auditor] {
            let res = test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{ichiro}/password-resets")).insert_header(bearer(&w, "alpha-clinic", role)).to_request()).await;
            assert_eq!(res.status(), StatusCode::OK);
            let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
            assert!(!text.contains(&token), "the link never appears again");
            let list: Value = serde_json::from_str(&text).unwrap();
            let items = list["items"].as_array().unwrap();
            assert_eq!(items.len(), 1);
            assert_eq!(items[0]["status"], "completed");
            assert!(items[0]["completed_at"].is_string());
            assert_eq!(items[0]["method"], "in_person_id_card");
            assert_eq!(items[0]["verified_by"], format!("user:{}", head.id));
        }
        let res = test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{ichiro}/password-resets")).insert_header(bearer(&w, "alpha-clinic", Role::InstitutionStaff)).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        // A newer reset voids an older link; an expired link does not work either.
        let first: Value = test::call_and_read_body_json(&app, with_session(reset_req(ichiro, json!({"method": "video_call"})), &head.session)).await;
        let second: Value = test::call_and_read_body_json(&app, with_session(reset_req(ichiro, json!({"method": "other", "note": "院長が本人と面談して確認"})), &head.session)).await;
        let (status, _) = problem(test::call_service(&app, complete(&token_of(&first), "三度目の正直で決めた合言葉")).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "superseded");
        {
            use anshin_identity::entity::password_reset;
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            let id: Uuid = second["reset"]["id"].as_str().unwrap().parse().unwrap();
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            password_reset::Entity::update_many()
                .col_expr(password_reset::Column::ExpiresAt, sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)))
                .filter(password_reset::Column::Id.eq(id))
                .exec(&tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        let (status, _) = problem(test::call_service(&app, complete(&token_of(&second), "三度目の正直で決めた合言葉")).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "expired");
        let list: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{ichiro}/password-resets")).insert_header(bearer(&w, "alpha-clinic", Role::Auditor)).to_request()).await;
        let statuses: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, vec!["expired", "superseded", "completed"], "newest first");
        assert_eq!(list["items"][0]["note"], "院長が本人と面談して確認");
        assert_eq!(sign_in(&app, "ichiro@aoba.example.jp", NEW_PASSWORD, &mut key).await.unwrap_err(), StatusCode::BAD_REQUEST, "the password stays unusable until a reset is completed");
    }

    async fn the_reset_link_goes_by_mail_and_nothing_changes_when_mail_fails(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let head = enroll_passkey(&app, &w, "alpha-clinic", "head@aoba.example.jp", "institution_admin").await;
        let (ichiro, _, mut key) = enroll_key(&app, &w, "ichiro@aoba.example.jp", OLD_PASSWORD).await;
        let smtp = Smtp::start(&db);
        let identity = identity_with_smtp(&db, &smtp);
        // The admin's freshly signed-in session, as the API sees it.
        let admin = identity.authenticate_session(&head.session.0, None, false).await.unwrap().unwrap();
        let req = |method| PasswordResetRequest { method, note: Some("登録済みの携帯番号へ折り返して確認".into()) };

        let issued = identity.reset_password(&admin, ichiro, req(VerificationMethod::CallbackRegisteredPhone)).await.unwrap();
        assert!(issued.mailed);
        assert!(issued.reset_url.is_none(), "the link goes only by mail");
        assert_eq!(issued.reset.delivery, "mail");
        let mail = smtp.messages().pop().expect("the link was mailed");
        assert_eq!(mail["rcpt_tos"], json!(["ichiro@aoba.example.jp"]));
        assert!(mail["subject"].as_str().unwrap().contains("パスワード"));
        let body = mail["body"].as_str().unwrap();
        assert!(body.contains("鈴木 一郎 様") && body.contains("セキュリティキー"), "{body}");
        assert!(body.find("新しいパスワード").unwrap() < body.find("set a new password").unwrap(), "Japanese first: {body}");
        let link = body.lines().find(|l| l.starts_with(&format!("{ORIGIN}/password-reset#token="))).expect("the link is in the mail");
        let token = link.split("#token=").nth(1).unwrap();
        let res = test::call_service(&app, complete(token, NEW_PASSWORD)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert!(sign_in(&app, "ichiro@aoba.example.jp", NEW_PASSWORD, &mut key).await.is_ok());

        // Mail server down: a clear error, no record, and the password still works.
        drop(smtp);
        let err = identity.reset_password(&admin, ichiro, req(VerificationMethod::VideoCall)).await.unwrap_err();
        assert_eq!(anshin_platform::error::Problem::from(err).status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(db.count_platform("SELECT count(*) FROM password_resets").await, 1);
        assert_eq!(db.count_platform("SELECT count(*) FROM password_credentials WHERE invalidated_at IS NOT NULL").await, 0);
        assert!(sign_in(&app, "ichiro@aoba.example.jp", NEW_PASSWORD, &mut key).await.is_ok());
    }
}
