//! Two-factor sign-in through the real HTTP endpoints, with a software passkey
//! (webauthn-authenticator-rs) standing in for the person's device, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{both_backends, origin, session_cookie, World, ORIGIN};
use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

/// The invitation request of the admin token of `slug`.
fn invite_req(w: &World, slug: &str, email: &str, role: &str) -> actix_http::Request {
    let admin = w.token(slug, Role::InstitutionAdmin);
    test::TestRequest::post()
        .uri("/api/v1/invitations")
        .insert_header(("authorization", format!("Bearer {admin}")))
        .set_json(json!({"email": email, "display_name": "佐藤 花子", "role": role}))
        .to_request()
}

/// The enrollment token of an invitation response.
fn enrollment_token(v: &Value) -> String {
    let url = v["enrollment_url"]
        .as_str()
        .unwrap_or_else(|| panic!("not an invitation: {v}"));
    assert!(url.starts_with(&format!("{ORIGIN}/enroll#token=")), "{url}");
    url.split("#token=").nth(1).unwrap().to_string()
}

fn expect_refused<B>(res: &actix_web::dev::ServiceResponse<B>, label: &str) {
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{label}");
    assert!(session_cookie(res).is_none(), "{label}: no session");
    assert_eq!(
        res.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/problem+json"
    );
}

/// Invites `$email` as `$role` into `$slug` and enrolls a fresh soft passkey; yields the
/// enrollment finish response and the device.
macro_rules! enroll {
    ($app:expr, $w:expr, $slug:expr, $email:expr, $role:expr) => {{
        let token = enrollment_token(&test::call_and_read_body_json($app, invite_req($w, $slug, $email, $role)).await);
        let begin: Value = test::call_and_read_body_json($app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin(), ccr).unwrap();
        let res = test::call_service($app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        (res, device)
    }};
}

both_backends! {
    async fn invitation_enrollment_sign_in_and_sessions(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let token = enrollment_token(&test::call_and_read_body_json(&app, invite_req(&w, "alpha-clinic", "Hanako@Sakura.example.jp", "institution_staff")).await);

        // Enroll a passkey from the invitation.
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        assert_eq!(ccr.public_key.rp.id, "localhost");
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin(), ccr).unwrap();
        let finish = json!({"ceremony_id": begin["ceremony_id"], "credential": reg, "credential_name": "受付PC"});
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(&finish).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let set_cookie = res.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Secure") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        let cookie1 = session_cookie(&res).unwrap();
        let signed: Value = test::read_body_json(res).await;
        assert_eq!(signed["user"]["email"], "hanako@sakura.example.jp");
        assert_eq!(signed["user"]["role"], "institution_staff");
        let csrf1 = signed["csrf_token"].as_str().unwrap().to_string();

        // The ceremony and the link are single-use.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(&finish).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(session_cookie(&res).is_none());
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);

        // The session works for the API, scoped to the person's institution.
        let with = |req: test::TestRequest, cookie: &str| req.insert_header(("cookie", format!("anshin_session={cookie}"))).to_request();
        let me: Value = test::call_and_read_body_json(&app, with(test::TestRequest::get().uri("/api/v1/me"), &cookie1)).await;
        assert_eq!(me["user"]["display_name"], "佐藤 花子");
        let tenants: Value = test::call_and_read_body_json(&app, with(test::TestRequest::get().uri("/api/v1/tenants"), &cookie1)).await;
        let slugs: Vec<&str> = tenants["items"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, vec!["alpha-clinic"]);

        // Requests that change data need the session's CSRF token.
        let res = test::call_service(&app, with(test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).set_json(json!({"name": "x"})), &cookie1)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let v: Value = test::read_body_json(res).await;
        assert!(v["detail"].as_str().unwrap().contains("x-csrf-token"), "{v}");

        // Sign in again with the passkey: a new, different session.
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "hanako@sakura.example.jp"})).to_request()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let assertion = device.do_authentication(origin(), rcr).unwrap();
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": assertion})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie2 = session_cookie(&res).unwrap();
        assert_ne!(cookie1, cookie2, "every sign-in gets a fresh session id");
        let sessions: Value = test::call_and_read_body_json(&app, with(test::TestRequest::get().uri("/api/v1/me/sessions"), &cookie2)).await;
        let items = sessions["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
        let first_id = items.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_string();

        // End the first session from the second; the first cookie stops working.
        let me2: Value = test::call_and_read_body_json(&app, with(test::TestRequest::get().uri("/api/v1/me"), &cookie2)).await;
        let csrf2 = me2["csrf_token"].as_str().unwrap().to_string();
        assert_ne!(csrf1, csrf2);
        let res = test::call_service(&app, with(test::TestRequest::delete().uri(&format!("/api/v1/me/sessions/{first_id}")).insert_header(("x-csrf-token", csrf1.clone())), &cookie2)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "another session's CSRF token does not count");
        let res = test::call_service(&app, with(test::TestRequest::delete().uri(&format!("/api/v1/me/sessions/{first_id}")).insert_header(("x-csrf-token", csrf2.clone())), &cookie2)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = test::call_service(&app, with(test::TestRequest::get().uri("/api/v1/me"), &cookie1)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        // Sign out clears the cookie and ends the session.
        let res = test::call_service(&app, with(test::TestRequest::post().uri("/api/v1/auth/sign-out").insert_header(("x-csrf-token", csrf2)), &cookie2)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert!(res.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().contains("anshin_session=;"));
        let res = test::call_service(&app, with(test::TestRequest::get().uri("/api/v1/me"), &cookie2)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    async fn bad_ceremonies_get_a_clear_4xx_and_no_session(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let mut devices = Vec::new();
        for (email, slug) in [("a@clinic.example.jp", "alpha-clinic"), ("b@hospital.example.jp", "alpha-hospital")] {
            let token = enrollment_token(&test::call_and_read_body_json(&app, invite_req(&w, slug, email, "institution_admin")).await);
            let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
            let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
            let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
            let reg = device.do_registration(origin(), ccr).unwrap();
            let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            devices.push(device);
        }
        let begin = |email: &'static str| test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": email})).to_request();
        let finish = |id: &Value, cred: Value| test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(json!({"ceremony_id": id, "credential": cred})).to_request();
        // Wrong origin: another service on the same host (the origin is checked, not just the RP id).
        let a: Value = test::call_and_read_body_json(&app, begin("a@clinic.example.jp")).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(a["public_key"].clone()).unwrap();
        let phished = devices[0].do_authentication(Url::parse("http://localhost:9999").unwrap(), rcr).unwrap();
        expect_refused(&test::call_service(&app, finish(&a["ceremony_id"], serde_json::to_value(&phished).unwrap())).await, "wrong origin");

        // Another account's credential answering this account's challenge.
        let a: Value = test::call_and_read_body_json(&app, begin("a@clinic.example.jp")).await;
        let b: Value = test::call_and_read_body_json(&app, begin("b@hospital.example.jp")).await;
        let rcr_b: RequestChallengeResponse = serde_json::from_value(b["public_key"].clone()).unwrap();
        let b_assertion = devices[1].do_authentication(origin(), rcr_b).unwrap();
        expect_refused(&test::call_service(&app, finish(&a["ceremony_id"], serde_json::to_value(&b_assertion).unwrap())).await, "unknown credential");

        // A valid assertion replayed on its own (already used) ceremony, then on a new one.
        let b2: Value = test::call_and_read_body_json(&app, begin("b@hospital.example.jp")).await;
        let rcr_b2: RequestChallengeResponse = serde_json::from_value(b2["public_key"].clone()).unwrap();
        let good = serde_json::to_value(devices[1].do_authentication(origin(), rcr_b2).unwrap()).unwrap();
        let res = test::call_service(&app, finish(&b2["ceremony_id"], good.clone())).await;
        assert_eq!(res.status(), StatusCode::OK);
        expect_refused(&test::call_service(&app, finish(&b2["ceremony_id"], good.clone())).await, "replayed ceremony");
        let b3: Value = test::call_and_read_body_json(&app, begin("b@hospital.example.jp")).await;
        expect_refused(&test::call_service(&app, finish(&b3["ceremony_id"], good)).await, "replayed assertion on a new challenge");

        // Expired challenge.
        let a: Value = test::call_and_read_body_json(&app, begin("a@clinic.example.jp")).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(a["public_key"].clone()).unwrap();
        let assertion = serde_json::to_value(devices[0].do_authentication(origin(), rcr).unwrap()).unwrap();
        {
            use anshin_identity::entity::ceremony;
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            let id: uuid::Uuid = a["ceremony_id"].as_str().unwrap().parse().unwrap();
            ceremony::Entity::update_many()
                .col_expr(ceremony::Column::ExpiresAt, sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)))
                .filter(ceremony::Column::Id.eq(id))
                .exec(&tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let res = test::call_service(&app, finish(&a["ceremony_id"], assertion)).await;
        let status = res.status();
        let v: Value = test::read_body_json(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");

        // Unknown ceremony, malformed credential, unknown email, bad enrollment token.
        let a: Value = test::call_and_read_body_json(&app, begin("a@clinic.example.jp")).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(a["public_key"].clone()).unwrap();
        let real = serde_json::to_value(devices[0].do_authentication(origin(), rcr).unwrap()).unwrap();
        expect_refused(&test::call_service(&app, finish(&json!(uuid::Uuid::new_v4()), real)).await, "unknown ceremony");
        let res = test::call_service(&app, finish(&json!(uuid::Uuid::new_v4()), json!({"nonsense": true}))).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // An unknown address gets a decoy challenge shaped like a real one (no account enumeration).
        let decoy: Value = test::call_and_read_body_json(&app, begin("nobody@example.jp")).await;
        assert_eq!(decoy["public_key"]["publicKey"]["allowCredentials"].as_array().unwrap().len(), 1);
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "not an email"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": "forged"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        // Only admins invite, only roles that fit the tenant, and an email is one account.
        let staff = w.token("alpha-clinic", Role::InstitutionStaff);
        let admin = w.token("alpha-clinic", Role::InstitutionAdmin);
        for (tok, body, want) in [
            (staff, json!({"email": "c@clinic.example.jp", "display_name": "x", "role": "institution_staff"}), StatusCode::FORBIDDEN),
            (admin, json!({"email": "c@clinic.example.jp", "display_name": "x", "role": "provider_admin"}), StatusCode::UNPROCESSABLE_ENTITY),
            (admin, json!({"email": "a@clinic.example.jp", "display_name": "x", "role": "institution_staff"}), StatusCode::CONFLICT),
        ] {
            let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/invitations").insert_header(("authorization", format!("Bearer {tok}"))).set_json(body.clone()).to_request()).await;
            assert_eq!(res.status(), want, "{body}");
        }
    }

    async fn sessions_end_after_the_idle_timeout(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let token = enrollment_token(&test::call_and_read_body_json(&app, invite_req(&w, "beta-clinic", "idle@example.jp", "institution_staff")).await);
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let reg = WebauthnAuthenticator::new(SoftPasskey::new(true)).do_registration(origin(), ccr).unwrap();
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        let cookie = session_cookie(&res).unwrap();
        let me = || test::TestRequest::get().uri("/api/v1/me").insert_header(("cookie", format!("anshin_session={cookie}"))).to_request();
        assert_eq!(test::call_service(&app, me()).await.status(), StatusCode::OK);
        // 16 minutes without a request (the default idle timeout is 15).
        {
            use anshin_identity::entity::session;
            use sea_orm::EntityTrait;
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            session::Entity::update_many()
                .col_expr(session::Column::LastSeenAt, sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::minutes(16)))
                .exec(&tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(test::call_service(&app, me()).await.status(), StatusCode::UNAUTHORIZED);
        let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
        let s = {
            use anshin_identity::entity::session;
            use sea_orm::EntityTrait;
            session::Entity::find().all(&tx).await.unwrap()
        };
        tx.commit().await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].ended_reason.as_deref(), Some("idle_timeout"));
    }
}

both_backends! {
    async fn admins_see_the_account_inventory_and_can_cut_access(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (res, mut device) = enroll!(&app, &w, "alpha-clinic", "kana@clinic.example.jp", "institution_staff");
        let cookie = session_cookie(&res).unwrap();
        let me = |c: &str| test::TestRequest::get().uri("/api/v1/me").insert_header(("cookie", format!("anshin_session={c}"))).to_request();

        let admin = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionAdmin)));
        let inv: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/accounts").insert_header(admin.clone()).to_request()).await;
        let items = inv["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{inv}");
        let kana = &items[0];
        assert_eq!(kana["email"], "kana@clinic.example.jp");
        assert_eq!(kana["passkeys"], 1);
        assert_eq!(kana["open_sessions"], 1);
        assert_eq!(kana["role"], "institution_staff");
        let id = kana["id"].as_str().unwrap().to_string();
        // Auditors read it; staff do not; another tenant's admin cannot touch the account.
        let auditor = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::Auditor)));
        assert_eq!(test::call_service(&app, test::TestRequest::get().uri("/api/v1/accounts").insert_header(auditor).to_request()).await.status(), StatusCode::OK);
        let staff = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionStaff)));
        assert_eq!(test::call_service(&app, test::TestRequest::get().uri("/api/v1/accounts").insert_header(staff).to_request()).await.status(), StatusCode::FORBIDDEN);
        let other = ("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionAdmin)));
        assert_eq!(test::call_service(&app, test::TestRequest::patch().uri(&format!("/api/v1/accounts/{id}")).insert_header(other).set_json(json!({"status": "disabled"})).to_request()).await.status(), StatusCode::NOT_FOUND);

        // The admin ends the person's sessions (a lost tablet).
        assert_eq!(test::call_service(&app, test::TestRequest::delete().uri(&format!("/api/v1/accounts/{id}/sessions")).insert_header(admin.clone()).to_request()).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(test::call_service(&app, me(&cookie)).await.status(), StatusCode::UNAUTHORIZED);

        // Signing in again works until the account is disabled; disabling ends sessions and sign-in.
        let sign_in = |device: &mut WebauthnAuthenticator<SoftPasskey>, begin: &Value| {
            let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
            json!({"ceremony_id": begin["ceremony_id"], "credential": device.do_authentication(origin(), rcr).unwrap()})
        };
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "kana@clinic.example.jp"})).to_request()).await;
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(sign_in(&mut device, &begin)).to_request()).await;
        let cookie2 = session_cookie(&res).unwrap();
        assert_eq!(test::call_service(&app, me(&cookie2)).await.status(), StatusCode::OK);
        assert_eq!(test::call_service(&app, test::TestRequest::patch().uri(&format!("/api/v1/accounts/{id}")).insert_header(admin.clone()).set_json(json!({"status": "disabled"})).to_request()).await.status(), StatusCode::NO_CONTENT);
        assert_eq!(test::call_service(&app, me(&cookie2)).await.status(), StatusCode::UNAUTHORIZED);
        // A disabled account gets only a decoy challenge: its own passkey is not even asked for.
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "kana@clinic.example.jp"})).to_request()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        assert!(device.do_authentication(origin(), rcr).is_err());
        assert_eq!(test::call_service(&app, test::TestRequest::patch().uri(&format!("/api/v1/accounts/{id}")).insert_header(admin.clone()).set_json(json!({"status": "active"})).to_request()).await.status(), StatusCode::NO_CONTENT);
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "kana@clinic.example.jp"})).to_request()).await;
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(sign_in(&mut device, &begin)).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let inv: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/accounts").insert_header(admin).to_request()).await;
        assert!(inv["items"][0]["last_sign_in_at"].is_string());
    }
}

both_backends! {
    async fn sensitive_actions_need_a_recent_passkey_step_up(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (res, mut device) = enroll!(&app, &w, "beta-clinic", "head@midori.example.jp", "institution_admin");
        let cookie = session_cookie(&res).unwrap();
        let signed: Value = test::read_body_json(res).await;
        let csrf = signed["csrf_token"].as_str().unwrap().to_string();
        let with = |r: test::TestRequest| r.insert_header(("cookie", format!("anshin_session={cookie}"))).insert_header(("x-csrf-token", csrf.clone())).to_request();

        // Just signed in with a passkey: fresh enough.
        let res = test::call_service(&app, with(test::TestRequest::post().uri("/api/v1/break-glass"))).await;
        assert_eq!(res.status(), StatusCode::CREATED);

        // Ten minutes later: the sensitive action asks for a step-up.
        {
            use anshin_identity::entity::session;
            use sea_orm::EntityTrait;
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            session::Entity::update_many()
                .col_expr(session::Column::SteppedUpAt, sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::Duration::minutes(10)))
                .exec(&tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let res = test::call_service(&app, with(test::TestRequest::post().uri("/api/v1/break-glass"))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["type"], "urn:anshin:problem:step-up-required");
        let res = test::call_service(&app, with(test::TestRequest::put().uri("/api/v1/identity-provider").set_json(json!({
            "issuer": "https://login.midori.example.jp", "client_id": "c", "client_secret": "s",
            "allowed_domains": ["midori.example.jp"], "default_role": "institution_staff", "jit_provisioning": false
        })))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "changing sign-in settings is sensitive too");
        // So is the identity policy (session lifetimes, when accounts are disabled); nothing changes.
        let policy = json!({"idle_timeout_secs": 600, "stale_after_days": 60, "disable_after_days": 14});
        let res = test::call_service(&app, with(test::TestRequest::put().uri("/api/v1/identity-policy").set_json(&policy))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["type"], "urn:anshin:problem:step-up-required", "{v}");
        let current: Value = test::call_and_read_body_json(&app, with(test::TestRequest::get().uri("/api/v1/identity-policy"))).await;
        assert_eq!(current["default"], true, "{current}");

        // Step up with the passkey, then it works.
        let begin: Value = test::call_and_read_body_json(&app, with(test::TestRequest::post().uri("/api/v1/me/step-up/begin"))).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let assertion = device.do_authentication(origin(), rcr).unwrap();
        let res = test::call_service(&app, with(test::TestRequest::post().uri("/api/v1/me/step-up/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": assertion})))).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = test::call_service(&app, with(test::TestRequest::post().uri("/api/v1/break-glass"))).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let res = test::call_service(&app, with(test::TestRequest::put().uri("/api/v1/identity-policy").set_json(&policy))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["idle_timeout_secs"], 600);
        assert_eq!(v["updated_by"], format!("user:{}", signed["user"]["id"].as_str().unwrap()));
        // Machine clients (API tokens) are not asked to step up.
        let admin_token = ("authorization", format!("Bearer {}", w.token("beta-clinic", Role::InstitutionAdmin)));
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/break-glass").insert_header(admin_token).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
}

// Two finishes of one sign-in racing with the same assertion: the writes of a finish are
// all-or-nothing, so exactly one gets a session and the other changes nothing.
both_backends! {
    async fn racing_finishes_of_one_sign_in_get_one_session(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (res, mut device) = enroll!(&app, &w, "alpha-clinic", "race@sakura.example.jp", "institution_staff");
        assert_eq!(res.status(), StatusCode::CREATED);
        let cookie = session_cookie(&res).unwrap();

        for round in 0..3 {
            let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "race@sakura.example.jp"})).to_request()).await;
            let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
            let assertion = device.do_authentication(origin(), rcr).unwrap();
            let finish = json!({"ceremony_id": begin["ceremony_id"], "credential": assertion});
            let (a, b) = tokio::join!(
                test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(&finish).to_request()),
                test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(&finish).to_request()),
            );
            let (won, lost) = if a.status() == StatusCode::OK { (a, b) } else { (b, a) };
            assert_eq!(won.status(), StatusCode::OK, "round {round}: one finish wins");
            assert!(session_cookie(&won).is_some());
            expect_refused(&lost, &format!("round {round}: the other finish"));
        }

        // The enrollment session and one per round: no session from a losing finish.
        let sessions: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/me/sessions").insert_header(("cookie", format!("anshin_session={cookie}"))).to_request()).await;
        assert_eq!(sessions["items"].as_array().unwrap().len(), 4, "{sessions}");
    }
}
