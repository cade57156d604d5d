//! What the identity issue implies beyond its first cut, on SQLite and PostgreSQL:
//! - pending invitations listed for the tenant (admins and auditors) and revoked by admins
//!   (audited; a revoked link no longer enrolls, even when its registration had begun; a used
//!   invitation cannot be revoked; another tenant's is not found), also on the invitations page;
//! - `GET /api/v1/accounts/{id}`: one account with role, status, factors, creation and last
//!   sign-in, scoped to the caller's tenant (another tenant's account is 404, before the role);
//! - maintenance grants name the maintainer (and the deciding admin) instead of `user:<uuid>`,
//!   through the API and on the page;
//! - a break-glass use counts as the emergency account's last sign-in;
//! - refused passkey and OIDC sign-ins aimed at a known tenant appear in that tenant's own audit
//!   trail (and still in the platform's), and nowhere else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::lit;
use anshin_tests::{
    bearer, both_backends, enroll_passkey, free_port, origin, problem, wait_for_port, with_session,
    World,
};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use uuid::Uuid;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

macro_rules! get_json {
    ($app:expr, $path:expr, $auth:expr) => {{
        let res = test::call_service(
            $app,
            test::TestRequest::get()
                .uri($path)
                .insert_header($auth)
                .to_request(),
        )
        .await;
        let status = res.status();
        let body: Value = test::read_body_json(res).await;
        (status, body)
    }};
}

macro_rules! get_page {
    ($app:expr, $path:expr, $cookie:expr) => {{
        let res = test::call_service(
            $app,
            test::TestRequest::get()
                .uri($path)
                .insert_header(("cookie", format!("anshin_session={}", $cookie)))
                .to_request(),
        )
        .await;
        let status = res.status();
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        (status, body)
    }};
}

/// Refused sign-ins recorded in the tenant's trail, as its admin reads them through the API.
async fn refused_sign_ins<S, B>(app: &S, w: &World, slug: &str, role: Role) -> Vec<Value>
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let (status, page) = get_json!(
        app,
        "/api/v1/audit/events?action=auth.sign_in&outcome=failure",
        bearer(w, slug, role)
    );
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

both_backends! {
    async fn invitations_are_listed_and_revoked(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let admin = || bearer(&w, "alpha-hospital", Role::InstitutionAdmin);
        let invite = |email: &str| {
            test::TestRequest::post()
                .uri("/api/v1/invitations")
                .insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin))
                .set_json(json!({"email": email, "display_name": "招待 太郎", "role": "institution_staff"}))
                .to_request()
        };
        let mut links = Vec::new();
        let mut ids = Vec::new();
        for email in ["a@hikari.example.jp", "b@hikari.example.jp", "c@hikari.example.jp"] {
            let inv: Value = test::call_and_read_body_json(&app, invite(email)).await;
            ids.push(inv["id"].as_str().unwrap().to_string());
            links.push(inv["enrollment_url"].as_str().unwrap().split("#token=").nth(1).unwrap().to_string());
        }
        // Another tenant's invitation, to see it stays out of view.
        let other: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/invitations").insert_header(bearer(&w, "beta-clinic", Role::InstitutionAdmin)).set_json(json!({"email": "x@midori.example.jp", "display_name": "他院 花子", "role": "auditor"})).to_request()).await;
        let other_id = other["id"].as_str().unwrap().to_string();

        // Admins and auditors list the pending ones (never a link); staff may not.
        let (status, list) = get_json!(&app, "/api/v1/invitations", admin());
        assert_eq!(status, StatusCode::OK);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{list}");
        assert_eq!(items[0]["email"], "c@hikari.example.jp", "newest first");
        assert_eq!(items[0]["role"], "institution_staff");
        assert!(items[0]["invited_by"].as_str().unwrap().starts_with("token:"));
        assert!(items[0]["expires_at"].is_string() && items[0]["created_at"].is_string());
        assert!(!list.to_string().contains(&links[0]) && !list.to_string().contains("#token="), "no enrollment link");
        assert!(!list.to_string().contains(&other_id), "not another tenant's");
        let (status, _) = get_json!(&app, "/api/v1/invitations", bearer(&w, "alpha-hospital", Role::Auditor));
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get_json!(&app, "/api/v1/invitations", bearer(&w, "alpha-hospital", Role::InstitutionStaff));
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Revoking: scope first (another tenant's is not found), then role, then state.
        let revoke = |id: &str, auth: (&'static str, String)| test::TestRequest::delete().uri(&format!("/api/v1/invitations/{id}")).insert_header(auth).to_request();
        let res = test::call_service(&app, revoke(&other_id, admin())).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = test::call_service(&app, revoke(&ids[0], bearer(&w, "alpha-hospital", Role::Auditor))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = test::call_service(&app, revoke(&ids[0], bearer(&w, "beta-clinic", Role::InstitutionAdmin))).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = test::call_service(&app, revoke(&ids[0], admin())).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (status, p) = problem(test::call_service(&app, revoke(&ids[0], admin())).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "{p}");

        assert!(p["detail"].as_str().unwrap().contains("already revoked"), "{p}");

        // The revoked link no longer enrolls, and says why; the row records who revoked it.
        let (status, p) = problem(test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": links[0]})).to_request()).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("revoked by an administrator"), "{p}");
        let uuid_of = |id: &str| uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM invitations WHERE id = {} AND revoked_reason = 'revoked' AND revoked_by LIKE 'token:%' AND revoked_at IS NOT NULL", lit(&db, uuid_of(&ids[0])))).await, 1);

        // A registration begun before the revocation cannot finish after it.
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": links[1]})).to_request()).await;
        let res = test::call_service(&app, revoke(&ids[1], admin())).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin(), ccr).unwrap();
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert!(res.status().is_client_error(), "finish after revocation: {}", res.status());
        assert!(anshin_tests::session_cookie(&res).is_none(), "no session");
        assert_eq!(anshin_tests::count_users_with_email(&db, "b@hikari.example.jp").await, 0, "no account");

        // A used invitation cannot be revoked (the account exists: disable it instead).
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": links[2]})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let reg = device.do_registration(origin(), ccr).unwrap();
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let (status, p) = problem(test::call_service(&app, revoke(&ids[2], admin())).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("already used"), "{p}");
        let (_, list) = get_json!(&app, "/api/v1/invitations", admin());
        assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing pending: {list}");

        // Each revocation is in the tenant's trail, with who and what.
        let (_, events) = get_json!(&app, "/api/v1/audit/events?action=invitation.revoke", admin());
        let events = events["items"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().any(|e| e["target"]["id"] == ids[0].as_str() && e["details"]["email"] == "a@hikari.example.jp" && e["actor"]["kind"] == "api_token"), "{events:?}");
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE action = 'invitation.revoke' AND tenant_id = {}", lit(&db, w.h1.id))).await, 2);

        // The page: a signed-in admin sees the pending invitations, each with a revoke button,
        // and revokes one through the API with the session's CSRF token.
        let person = enroll_passkey(&app, &w, "alpha-hospital", "kanri@hikari.example.jp", "institution_admin").await;
        let inv: Value = test::call_and_read_body_json(&app, invite("d@hikari.example.jp")).await;
        let d = inv["id"].as_str().unwrap().to_string();
        let (status, html) = get_page!(&app, "/invitations", person.session.0);
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains(&format!("data-invitation=\"{d}\"")) && html.contains("data-admin=\"invitation-revoke\"") && html.contains("d@hikari.example.jp"), "pending row with its button");
        assert!(html.contains("未使用の招待") && !html.contains("a@hikari.example.jp"), "only pending ones");
        let res = test::call_service(&app, with_session(test::TestRequest::delete().uri(&format!("/api/v1/invitations/{d}")), &person.session)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (_, html) = get_page!(&app, "/invitations", person.session.0);
        assert!(!html.contains(&format!("data-invitation=\"{d}\"")) && html.contains("id=\"invitations-none\""));
        let (_, html) = get_page!(&app, "/invitations?lang=en", person.session.0);
        assert!(html.contains("Pending invitations"));
    }

    async fn inviting_an_address_again_replaces_its_pending_invitation(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let invite = |slug: &str, email: &str, role: &str| {
            test::TestRequest::post()
                .uri("/api/v1/invitations")
                .insert_header(bearer(&w, slug, Role::InstitutionAdmin))
                .set_json(json!({"email": email, "display_name": "再招待 一郎", "role": role}))
                .to_request()
        };
        let link = |inv: &Value| inv["enrollment_url"].as_str().unwrap().split("#token=").nth(1).unwrap().to_string();
        let first: Value = test::call_and_read_body_json(&app, invite("alpha-hospital", "again@hikari.example.jp", "institution_staff")).await;
        // Another tenant inviting the same address has its own invitation, untouched.
        let elsewhere: Value = test::call_and_read_body_json(&app, invite("beta-clinic", "again@hikari.example.jp", "auditor")).await;
        // The same address again (written differently), with another role: the first ends.
        let second: Value = test::call_and_read_body_json(&app, invite("alpha-hospital", "Again@Hikari.example.jp", "auditor")).await;
        let (_, list) = get_json!(&app, "/api/v1/invitations", bearer(&w, "alpha-hospital", Role::InstitutionAdmin));
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "one live invitation per address: {list}");
        assert_eq!(items[0]["id"], second["id"]);
        assert_eq!(items[0]["role"], "auditor");
        let (_, list) = get_json!(&app, "/api/v1/invitations", bearer(&w, "beta-clinic", Role::InstitutionAdmin));
        assert_eq!(list["items"][0]["id"], elsewhere["id"], "{list}");

        // The first link no longer enrolls (and says a newer invitation replaced it); the second
        // does.
        let begin = |token: String| test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request();
        let (status, p) = problem(test::call_service(&app, begin(link(&first))).await).await;
        assert_eq!(status, StatusCode::CONFLICT, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("replaced by a newer invitation"), "{p}");
        let first_id = uuid::Uuid::parse_str(first["id"].as_str().unwrap()).unwrap();
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM invitations WHERE id = {} AND revoked_reason = 'superseded' AND revoked_at IS NOT NULL", lit(&db, first_id))).await, 1);
        let res = test::call_service(&app, begin(link(&second))).await;
        assert_eq!(res.status(), StatusCode::OK);

        // The trail says which invitation the new one replaced.
        let (_, events) = get_json!(&app, "/api/v1/audit/events?action=invitation.create", bearer(&w, "alpha-hospital", Role::InstitutionAdmin));
        let events = events["items"].as_array().unwrap();
        let created = events.iter().find(|e| e["target"]["id"] == second["id"]).expect("the second invitation's event");
        assert_eq!(created["details"]["superseded"], json!([first["id"]]), "{created}");
        let earlier = events.iter().find(|e| e["target"]["id"] == first["id"]).expect("the first invitation's event");
        assert_eq!(earlier["details"]["superseded"], json!([]), "{earlier}");
    }
}

both_backends! {
    async fn one_account_in_scope(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let admin = enroll_passkey(&app, &w, "alpha-hospital", "kanri@hikari.example.jp", "institution_admin").await;
        let staff = enroll_passkey(&app, &w, "alpha-hospital", "kango@hikari.example.jp", "institution_staff").await;
        let path = format!("/api/v1/accounts/{}", staff.id);

        let (status, a) = get_json!(&app, &path, bearer(&w, "alpha-hospital", Role::InstitutionAdmin));
        assert_eq!(status, StatusCode::OK, "{a}");
        assert_eq!(a["id"], staff.id.to_string());
        assert_eq!(a["email"], "kango@hikari.example.jp");
        assert_eq!(a["role"], "institution_staff");
        assert_eq!(a["status"], "active");
        assert_eq!(a["factors"], json!(["passkey"]));
        assert_eq!(a["passkeys"], 1);
        assert!(a["created_at"].is_string() && a["last_sign_in_at"].is_string(), "{a}");
        assert_eq!(a["open_sessions"], 1);
        // The list and the single account agree.
        let (_, list) = get_json!(&app, "/api/v1/accounts", bearer(&w, "alpha-hospital", Role::InstitutionAdmin));
        let listed = list["items"].as_array().unwrap().iter().find(|x| x["id"] == staff.id.to_string()).unwrap().clone();
        assert_eq!(listed, a);

        // Auditors read it too; staff may not; a session works like a token.
        let (status, _) = get_json!(&app, &path, bearer(&w, "alpha-hospital", Role::Auditor));
        assert_eq!(status, StatusCode::OK);
        let (status, p) = get_json!(&app, &path, bearer(&w, "alpha-hospital", Role::InstitutionStaff));
        assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
        let res = test::call_service(&app, with_session(test::TestRequest::get().uri(&path), &admin.session)).await;
        assert_eq!(res.status(), StatusCode::OK);

        // Outside the tenant: not found, whatever the role (the hospital's provider included),
        // and an unknown id likewise.
        for (slug, role) in [("beta-clinic", Role::InstitutionAdmin), ("alpha-clinic", Role::InstitutionAdmin), ("alpha-cloud", Role::ProviderAdmin), ("beta-clinic", Role::InstitutionStaff)] {
            let (status, p) = get_json!(&app, &path, bearer(&w, slug, role));
            assert_eq!(status, StatusCode::NOT_FOUND, "{slug} {role}: {p}");
        }
        let (status, _) = get_json!(&app, &format!("/api/v1/accounts/{}", Uuid::now_v7()), bearer(&w, "alpha-hospital", Role::InstitutionAdmin));
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The account page reads the same, and is not found for another tenant's account.
        let (status, html) = get_page!(&app, &format!("/accounts/{}", staff.id), admin.session.0);
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("kango@hikari.example.jp"));
        let other = enroll_passkey(&app, &w, "beta-clinic", "kanri@midori.example.jp", "institution_admin").await;
        let (status, _) = get_page!(&app, &format!("/accounts/{}", other.id), admin.session.0);
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

both_backends! {
    async fn grants_name_the_maintainer(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let maint = enroll_passkey(&app, &w, "alpha-cloud", "hoshu@alpha-cloud.example.jp", "provider_maintainer").await;
        let admin = enroll_passkey(&app, &w, "alpha-hospital", "kanri@hikari.example.jp", "institution_admin").await;
        let now = chrono::Utc::now();
        let res = test::call_service(&app, with_session(test::TestRequest::post().uri("/api/v1/maintenance-grants").set_json(json!({
            "institution_id": w.h1.id, "work_plan_ref": "WP-2026-001 連携障害の調査", "scope": "read",
            "starts_at": now.to_rfc3339(), "ends_at": (now + chrono::Duration::hours(2)).to_rfc3339()
        })), &maint.session)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let g: Value = test::read_body_json(res).await;
        assert_eq!(g["maintainer"], format!("user:{}", maint.id));
        assert_eq!(g["maintainer_name"], "試験 花子");
        assert_eq!(g["maintainer_email"], "hoshu@alpha-cloud.example.jp");
        let gid = g["id"].as_str().unwrap().to_string();

        // The institution's admin sees who asks, by name and email, and decides.
        let (_, list) = get_json!(&app, "/api/v1/maintenance-grants", bearer(&w, "alpha-hospital", Role::InstitutionAdmin));
        let item = &list["items"][0];
        assert_eq!((item["maintainer_name"].as_str(), item["maintainer_email"].as_str()), (Some("試験 花子"), Some("hoshu@alpha-cloud.example.jp")), "{list}");
        let (_, html) = get_page!(&app, "/maintenance-grants", admin.session.0);
        assert!(html.contains("hoshu@alpha-cloud.example.jp") && html.contains("試験 花子"), "the page names the maintainer");
        assert!(!html.contains("user:"), "no raw user ids on the page");
        let res = test::call_service(&app, with_session(test::TestRequest::post().uri(&format!("/api/v1/maintenance-grants/{gid}/decision")).set_json(json!({"approve": true, "note": "作業計画書を確認"})), &admin.session)).await;
        assert_eq!(res.status(), StatusCode::OK);
        let decided: Value = test::read_body_json(res).await;
        assert_eq!(decided["decided_by_name"], "試験 花子");

        // The provider's side sees who decided, by name.
        let (_, list) = get_json!(&app, "/api/v1/maintenance-grants", bearer(&w, "alpha-cloud", Role::ProviderAdmin));
        assert_eq!(list["items"][0]["decided_by"], format!("user:{}", admin.id));
        assert_eq!(list["items"][0]["decided_by_name"], "試験 花子");
        assert_eq!(list["items"][0]["maintainer_email"], "hoshu@alpha-cloud.example.jp");
        let (_, html) = get_page!(&app, "/maintenance-grants", maint.session.0);
        assert!(!html.contains("user:"), "no raw user ids on the maintainer's page either");
    }
}

both_backends! {
    async fn break_glass_use_counts_as_a_sign_in(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let admin = || bearer(&w, "alpha-hospital", Role::InstitutionAdmin);
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/break-glass").insert_header(admin()).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let issued: Value = test::read_body_json(res).await;
        let bg_account = || async {
            let (_, list) = get_json!(&app, "/api/v1/accounts", admin());
            list["items"].as_array().unwrap().iter().find(|a| a["break_glass"] == true).cloned().expect("the emergency account")
        };
        let before = bg_account().await;
        assert!(before["last_sign_in_at"].is_null(), "never used: {before}");
        assert_eq!(before["factors"], json!(["break_glass"]));

        let started = chrono::Utc::now();
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/break-glass").set_json(json!({"org": "alpha-hospital", "code": issued["code"], "reason": "電子カルテ障害のため緊急に参照する"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let after = bg_account().await;
        let last: chrono::DateTime<chrono::Utc> = after["last_sign_in_at"].as_str().expect("a last sign-in").parse().unwrap();
        assert!(last >= started - chrono::Duration::seconds(1) && last <= chrono::Utc::now(), "{after}");
        let id = after["id"].as_str().unwrap();
        let (_, one) = get_json!(&app, &format!("/api/v1/accounts/{id}"), admin());
        assert_eq!(one["last_sign_in_at"], after["last_sign_in_at"]);
        assert_eq!(one["open_sessions"], 1);
    }
}

both_backends! {
    async fn refused_passkey_sign_ins_reach_the_tenants_trail(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let mut staff = enroll_passkey(&app, &w, "alpha-hospital", "kango@hikari.example.jp", "institution_staff").await;
        let begin = || test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "kango@hikari.example.jp"})).to_request();
        let finish = |ceremony: &Value, credential: &Value| test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(json!({"ceremony_id": ceremony, "credential": credential})).to_request();
        let nil_sql = format!("SELECT COUNT(*) FROM audit_events WHERE action = 'auth.sign_in' AND outcome = 'failure' AND tenant_id = {}", lit(&db, Uuid::nil()));
        let nil_failures = || db.count_platform(&nil_sql);
        assert!(refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await.is_empty());

        // An assertion for one challenge sent with another ceremony of the same account.
        let a: Value = test::call_and_read_body_json(&app, begin()).await;
        let b: Value = test::call_and_read_body_json(&app, begin()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(a["public_key"].clone()).unwrap();
        let proof = serde_json::to_value(staff.device.do_authentication(origin(), rcr).unwrap()).unwrap();
        let res = test::call_service(&app, finish(&b["ceremony_id"], &proof)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let events = refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await;
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e["tenant_id"], w.h1.id.to_string());
        assert_eq!(e["target"], json!({"type": "user", "id": staff.id.to_string()}));
        assert_eq!(e["details"]["method"], "passkey");
        assert_eq!(e["actor"]["kind"], "anonymous");
        assert_eq!(nil_failures().await, 1, "the platform log keeps its record");

        // A real passkey sent with a ceremony that was never stored (an unknown address's
        // decoy challenge): the credential tells whose account it was.
        let decoy: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": "nobody@hikari.example.jp"})).to_request()).await;
        let c: Value = test::call_and_read_body_json(&app, begin()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(c["public_key"].clone()).unwrap();
        let proof = serde_json::to_value(staff.device.do_authentication(origin(), rcr).unwrap()).unwrap();
        let res = test::call_service(&app, finish(&decoy["ceremony_id"], &proof)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let events = refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(nil_failures().await, 2);

        // The auditor sees them too; other tenants see nothing of them.
        assert_eq!(refused_sign_ins(&app, &w, "alpha-hospital", Role::Auditor).await.len(), 2);
        assert!(refused_sign_ins(&app, &w, "beta-clinic", Role::InstitutionAdmin).await.is_empty());
        assert!(refused_sign_ins(&app, &w, "alpha-clinic", Role::InstitutionAdmin).await.is_empty());

        // A good sign-in is not a failure anywhere.
        let d: Value = test::call_and_read_body_json(&app, begin()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(d["public_key"].clone()).unwrap();
        let proof = serde_json::to_value(staff.device.do_authentication(origin(), rcr).unwrap()).unwrap();
        let res = test::call_service(&app, finish(&d["ceremony_id"], &proof)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await.len(), 2);
    }
}

// ---- OIDC: a real node oidc-provider, as in tests/it/oidc.rs --------------------------------

const CALLBACK: &str = "http://localhost:8080/auth/oidc/callback";

struct Provider {
    child: Child,
    base: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start_provider() -> Provider {
    let port = free_port();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/node");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/oidc-provider")
            .exists(),
        "run `npm ci` in tests/node (./infra/test.sh does)"
    );
    let child = Command::new("node")
        .current_dir(dir)
        .arg("oidc_provider.mjs")
        .env("PORT", port.to_string())
        .env("CLIENT_ID", "anshin-hikari")
        .env("CLIENT_SECRET", "provider-shared-secret-0123456789")
        .env("REDIRECT_URI", CALLBACK)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs the OpenID Provider");
    assert!(wait_for_port(port, 30), "oidc-provider did not start");
    Provider {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Plays the browser at the provider until it sends the browser back to Anshin's callback.
async fn at_provider(authorize_url: &str) -> String {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut url = reqwest::Url::parse(authorize_url).unwrap();
    for _ in 0..10 {
        let res = client.get(url.clone()).send().await.unwrap();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("the provider answered {} without a redirect", res.status()));
        if location.starts_with(CALLBACK) {
            return location
                .trim_start_matches("http://localhost:8080")
                .to_string();
        }
        url = url.join(&location).unwrap();
    }
    panic!("too many redirects at the provider");
}

both_backends! {
    async fn refused_organisation_sign_ins_reach_the_tenants_trail(db) {
        let w = World::build(&db).await;
        let provider = start_provider();
        let state = db.state().await;
        let admin = db.tokens().authenticate(w.token("alpha-hospital", Role::InstitutionAdmin)).await.unwrap().unwrap();
        state.identity.set_identity_provider(&admin, anshin_identity::ProviderSettings {
            issuer: provider.base.clone(),
            client_id: "anshin-hikari".into(),
            client_secret: Some("provider-shared-secret-0123456789".into()),
            allowed_domains: vec!["hikari.example.jp".into()],
            default_role: Role::InstitutionStaff,
            jit_provisioning: true,
            accepted_acr: vec![],
        }).await.unwrap();
        let app = test::init_service(anshin_server::app::app(state)).await;

        // A person of a domain the hospital does not allow: refused, on the hospital's record.
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=alpha-hospital&login_hint=mfa@other.example.com").to_request()).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let authorize = res.headers().get("location").unwrap().to_str().unwrap().to_string();
        let callback = at_provider(&authorize).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let events = refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["details"]["method"], "oidc");
        assert!(events[0]["reason"].as_str().unwrap().contains("domain"), "{}", events[0]);

        // The same response again (replayed state): refused, and on the hospital's record too.
        let res = test::call_service(&app, test::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await.len(), 2);

        // A state this server never issued names no tenant: the platform log only.
        let before = db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE action = 'auth.sign_in' AND outcome = 'failure' AND tenant_id = {}", lit(&db, Uuid::nil()))).await;
        assert_eq!(before, 2, "the platform log has both refusals");
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/callback?state=forged&code=x").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(refused_sign_ins(&app, &w, "alpha-hospital", Role::InstitutionAdmin).await.len(), 2);
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE action = 'auth.sign_in' AND outcome = 'failure' AND tenant_id = {}", lit(&db, Uuid::nil()))).await, 3);
        assert!(refused_sign_ins(&app, &w, "beta-clinic", Role::InstitutionAdmin).await.is_empty());
        drop(provider);
    }
}
