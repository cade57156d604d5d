//! ID inventory (guideline 14 ⑦) on both backends: the per-tenant identity policy, account review
//! campaigns (snapshot, decisions, close rules, who may do what) and the stale-account sweep
//! (flag, then disable; a sign-in lifts the flag), with real accounts enrolled through the HTTP
//! API with a software passkey.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_identity::entity::{session, user};
use anshin_identity::jobs::{sweep_stale_accounts, StaleAccountSweep, STALE_ACCOUNT_SWEEP};
use anshin_platform::db::{begin_platform_tx, begin_tenant_tx};
use anshin_platform::jobs::{JobQueue, JobStatus, NewJob, Worker, WorkerOptions};
use anshin_platform::Role;
use anshin_tests::{bearer, both_backends, enroll_passkey, origin, session_cookie, TestDb, World};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;
use webauthn_authenticator_rs::prelude::RequestChallengeResponse;

/// Invites `$email` as `$role` into the institution `$slug` (its admin token) and enrolls a soft
/// passkey; yields (account id, session cookie, CSRF token, device).
macro_rules! enroll {
    ($app:expr, $w:expr, $slug:expr, $email:expr, $role:expr) => {{
        let p = enroll_passkey($app, $w, $slug, &$email, $role).await;
        (p.id, p.session.0, p.session.1, p.device)
    }};
}

/// Signs in with the passkey; yields the session cookie, or `None` when any step is refused (a
/// disabled account gets at most a decoy challenge its passkey cannot answer).
macro_rules! sign_in {
    ($app:expr, $email:expr, $device:expr) => {{
        let res = test::call_service($app, test::TestRequest::post().uri("/api/v1/auth/sign-in/begin").set_json(json!({"email": $email})).to_request()).await;
        if res.status() != StatusCode::OK {
            None
        } else {
            let begin: Value = test::read_body_json(res).await;
            let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
            match $device.do_authentication(origin(), rcr) {
                Err(_) => None,
                Ok(assertion) => {
                    let res = test::call_service($app, test::TestRequest::post().uri("/api/v1/auth/sign-in/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": assertion})).to_request()).await;
                    if res.status() == StatusCode::OK { session_cookie(&res) } else { None }
                }
            }
        }
    }};
}

fn me(cookie: &str) -> actix_http::Request {
    test::TestRequest::get()
        .uri("/api/v1/me")
        .insert_header(("cookie", format!("anshin_session={cookie}")))
        .to_request()
}

/// Moves an account's last sign-in into the past (tests may touch tables directly).
async fn last_sign_in(db: &TestDb, id: Uuid, at: DateTime<Utc>) {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    user::Entity::update_many()
        .col_expr(user::Column::LastSignInAt, Expr::value(at))
        .filter(user::Column::Id.eq(id))
        .exec(&tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn account(db: &TestDb, id: Uuid) -> user::Model {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    let u = user::Entity::find_by_id(id)
        .one(&tx)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    u
}

async fn ended_reasons(db: &TestDb, id: Uuid) -> Vec<Option<String>> {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    let s = session::Entity::find()
        .filter(session::Column::UserId.eq(id))
        .all(&tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    s.into_iter().map(|s| s.ended_reason).collect()
}

/// The inventory entry of `$email` in the institution `$slug` (its admin token).
macro_rules! entry {
    ($app:expr, $w:expr, $slug:expr, $email:expr) => {{
        let inv: Value = test::call_and_read_body_json(
            $app,
            test::TestRequest::get()
                .uri("/api/v1/accounts")
                .insert_header(bearer($w, $slug, Role::InstitutionAdmin))
                .to_request(),
        )
        .await;
        let email: &str = &$email;
        inv["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["email"] == email)
            .cloned()
            .unwrap_or_else(|| panic!("{email} not in {inv}"))
    }};
}

both_backends! {
    async fn identity_policy_defaults_changes_and_refusals(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let get = |slug: &str, role: Role| test::TestRequest::get().uri("/api/v1/identity-policy").insert_header(bearer(&w, slug, role)).to_request();
        let put = |slug: &str, role: Role, body: Value| test::TestRequest::put().uri("/api/v1/identity-policy").insert_header(bearer(&w, slug, role)).set_json(body).to_request();

        // No policy yet: the defaults, with the configured idle timeout.
        let v: Value = test::call_and_read_body_json(&app, get("alpha-clinic", Role::InstitutionAdmin)).await;
        assert_eq!(v["default"], true, "{v}");
        assert_eq!(v["idle_timeout_secs"], db.config.identity.session_idle_timeout_secs);
        assert_eq!(v["idle_timeout_secs"], 900);
        assert_eq!(v["stale_after_days"], 90);
        assert_eq!(v["disable_after_days"], 30);
        assert_eq!(v["tenant_id"], w.c1.id.to_string());
        for (slug, role, want) in [
            ("alpha-clinic", Role::Auditor, StatusCode::OK),
            ("alpha-cloud", Role::ProviderAdmin, StatusCode::OK),
            ("alpha-clinic", Role::InstitutionStaff, StatusCode::FORBIDDEN),
            ("alpha-cloud", Role::ProviderOperator, StatusCode::FORBIDDEN),
            ("alpha-cloud", Role::ProviderMaintainer, StatusCode::FORBIDDEN),
        ] {
            assert_eq!(test::call_service(&app, get(slug, role)).await.status(), want, "GET {role}@{slug}");
        }

        // The clinic's admin sets it.
        let body = json!({"idle_timeout_secs": 600, "stale_after_days": 30, "disable_after_days": 14});
        let res = test::call_service(&app, put("alpha-clinic", Role::InstitutionAdmin, body.clone())).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["default"], false);
        assert_eq!(v["idle_timeout_secs"], 600);
        assert!(v["updated_by"].as_str().unwrap().starts_with("token:"), "{v}");
        let v: Value = test::call_and_read_body_json(&app, get("alpha-clinic", Role::Auditor)).await;
        assert_eq!((v["idle_timeout_secs"].as_i64(), v["stale_after_days"].as_i64(), v["disable_after_days"].as_i64()), (Some(600), Some(30), Some(14)));
        // Another institution of the same provider keeps the defaults.
        let v: Value = test::call_and_read_body_json(&app, get("alpha-hospital", Role::InstitutionAdmin)).await;
        assert_eq!(v["default"], true);

        // The typed function the session code uses, inside a tenant transaction.
        let svc = db.state().await.identity;
        let tx = begin_tenant_tx(&db.app, w.c1.id).await.unwrap();
        assert_eq!(svc.idle_timeout_secs(&tx, w.c1.id).await.unwrap(), 600);
        tx.commit().await.unwrap();
        let tx = begin_tenant_tx(&db.app, w.h1.id).await.unwrap();
        assert_eq!(svc.idle_timeout_secs(&tx, w.h1.id).await.unwrap(), 900);
        tx.commit().await.unwrap();

        // A provider admin sets the provider's own policy, not its institutions'.
        let res = test::call_service(&app, put("alpha-cloud", Role::ProviderAdmin, json!({"idle_timeout_secs": 1800, "stale_after_days": 180, "disable_after_days": 60}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = test::call_and_read_body_json(&app, get("alpha-cloud", Role::ProviderAdmin)).await;
        assert_eq!(v["idle_timeout_secs"], 1800);
        assert_eq!(v["tenant_id"], w.p1.id.to_string());
        let v: Value = test::call_and_read_body_json(&app, get("alpha-clinic", Role::InstitutionAdmin)).await;
        assert_eq!(v["idle_timeout_secs"], 600, "the clinic's own policy is untouched");

        // Only admins change it.
        for (slug, role) in [
            ("alpha-clinic", Role::InstitutionStaff),
            ("alpha-clinic", Role::Auditor),
            ("alpha-cloud", Role::ProviderOperator),
            ("alpha-cloud", Role::ProviderMaintainer),
        ] {
            assert_eq!(test::call_service(&app, put(slug, role, body.clone())).await.status(), StatusCode::FORBIDDEN, "PUT {role}@{slug}");
        }

        // Out of range: a 422 naming every offending value; nothing changes.
        let res = test::call_service(&app, put("alpha-clinic", Role::InstitutionAdmin, json!({"idle_timeout_secs": 59, "stale_after_days": 731, "disable_after_days": 0}))).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), "application/problem+json");
        let v: Value = test::read_body_json(res).await;
        let detail = v["detail"].as_str().unwrap();
        for field in ["idle_timeout_secs", "stale_after_days", "disable_after_days"] {
            assert!(detail.contains(field), "{detail}");
        }
        for bad in [
            json!({"idle_timeout_secs": 3601, "stale_after_days": 90, "disable_after_days": 30}),
            json!({"idle_timeout_secs": 900, "stale_after_days": 6, "disable_after_days": 30}),
            json!({"idle_timeout_secs": 900, "stale_after_days": 90, "disable_after_days": 366}),
            json!({"idle_timeout_secs": 900, "stale_after_days": 90}),
            json!({"idle_timeout_secs": 900, "stale_after_days": 90, "disable_after_days": 30, "extra": 1}),
        ] {
            assert_eq!(test::call_service(&app, put("alpha-clinic", Role::InstitutionAdmin, bad.clone())).await.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        let v: Value = test::call_and_read_body_json(&app, get("alpha-clinic", Role::InstitutionAdmin)).await;
        assert_eq!(v["idle_timeout_secs"], 600);
        // The bounds themselves are accepted.
        for ok in [
            json!({"idle_timeout_secs": 60, "stale_after_days": 7, "disable_after_days": 1}),
            json!({"idle_timeout_secs": 3600, "stale_after_days": 730, "disable_after_days": 365}),
        ] {
            assert_eq!(test::call_service(&app, put("alpha-clinic", Role::InstitutionAdmin, ok.clone())).await.status(), StatusCode::OK, "{ok}");
        }
    }

    async fn review_campaign_snapshot_decisions_and_close(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (admin_id, admin_cookie, admin_csrf, _admin_dev) = enroll!(&app, &w, "alpha-clinic", "head@aoba.example.jp", "institution_admin");
        let (kana_id, _kana_cookie, _, _kana_dev) = enroll!(&app, &w, "alpha-clinic", "kana@aoba.example.jp", "institution_staff");
        let (old_id, old_cookie, _, mut old_dev) = enroll!(&app, &w, "alpha-clinic", "old@aoba.example.jp", "institution_staff");
        // Someone in the sibling hospital, who must not appear in the clinic's review.
        enroll!(&app, &w, "alpha-hospital", "nurse@hikari.example.jp", "institution_staff");
        let admin = bearer(&w, "alpha-clinic", Role::InstitutionAdmin);
        let auditor = bearer(&w, "alpha-clinic", Role::Auditor);
        let staff = bearer(&w, "alpha-clinic", Role::InstitutionStaff);
        let as_person = |r: test::TestRequest| r.insert_header(("cookie", format!("anshin_session={admin_cookie}"))).insert_header(("x-csrf-token", admin_csrf.clone())).to_request();
        last_sign_in(&db, old_id, Utc::now() - Duration::days(200)).await;

        // Only admins start a review.
        for (h, want) in [(&staff, StatusCode::FORBIDDEN), (&auditor, StatusCode::FORBIDDEN)] {
            let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(h.clone()).set_json(json!({})).to_request()).await;
            assert_eq!(res.status(), want);
        }
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(admin.clone()).set_json(json!({"due_at": (Utc::now() - Duration::days(1)).to_rfc3339()})).to_request()).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "a due date in the past");

        // Start: every account of the clinic, as it is now.
        let due = Utc::now() + Duration::days(14);
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(admin.clone()).set_json(json!({"due_at": due.to_rfc3339()})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let started: Value = test::read_body_json(res).await;
        let rid = started["review"]["id"].as_str().unwrap().to_string();
        assert_eq!(started["review"]["status"], "open");
        assert_eq!(started["review"]["total"], 3);
        assert_eq!(started["review"]["undecided"], 3);
        assert_eq!(started["review"]["overdue"], false);
        assert!(started["review"]["started_by"].as_str().unwrap().starts_with("token:"));
        let items = started["items"].as_array().unwrap();
        let mut emails: Vec<&str> = items.iter().map(|i| i["email"].as_str().unwrap()).collect();
        emails.sort();
        assert_eq!(emails, vec!["head@aoba.example.jp", "kana@aoba.example.jp", "old@aoba.example.jp"]);
        let old_item = items.iter().find(|i| i["user_id"] == old_id.to_string()).unwrap();
        assert_eq!(old_item["role"], "institution_staff");
        assert_eq!(old_item["status"], "active");
        let snap: DateTime<Utc> = old_item["last_sign_in_at"].as_str().unwrap().parse().unwrap();
        assert!(snap < Utc::now() - Duration::days(199), "the snapshot has the last sign-in at the start");
        assert!(old_item["decision"].is_null());
        // The snapshot stays as it was even when the account changes afterwards.
        last_sign_in(&db, old_id, Utc::now()).await;

        // One open review per tenant.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(admin.clone()).set_json(json!({})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);

        // Auditors read; staff do not; auditors cannot decide or close.
        let list: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/account-reviews").insert_header(auditor.clone()).to_request()).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["undecided"], 3);
        let detail: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri(&format!("/api/v1/account-reviews/{rid}")).insert_header(auditor.clone()).to_request()).await;
        assert_eq!(detail["items"].as_array().unwrap().len(), 3);
        let old_item = detail["items"].as_array().unwrap().iter().find(|i| i["user_id"] == old_id.to_string()).unwrap();
        assert_eq!(old_item["last_sign_in_at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap(), snap);
        assert_eq!(test::call_service(&app, test::TestRequest::get().uri("/api/v1/account-reviews").insert_header(staff.clone()).to_request()).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/account-reviews/{rid}")).insert_header(staff.clone()).to_request()).await.status(), StatusCode::FORBIDDEN);
        for h in [&auditor, &staff] {
            let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).insert_header(h.clone()).set_json(json!({"user_id": kana_id, "decision": "confirmed"})).to_request()).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
            let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/close")).insert_header(h.clone()).set_json(json!({"force": true})).to_request()).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN);
        }

        // Other tenants find nothing: the sibling hospital and even the clinic's own provider.
        for (slug, role) in [("alpha-hospital", Role::InstitutionAdmin), ("alpha-cloud", Role::ProviderAdmin), ("beta-clinic", Role::InstitutionAdmin)] {
            let h = bearer(&w, slug, role);
            assert_eq!(test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/account-reviews/{rid}")).insert_header(h.clone()).to_request()).await.status(), StatusCode::NOT_FOUND, "{role}@{slug}");
            let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).insert_header(h.clone()).set_json(json!({"user_id": kana_id, "decision": "disabled"})).to_request()).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{role}@{slug}");
            let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/close")).insert_header(h.clone()).set_json(json!({"force": true})).to_request()).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{role}@{slug}");
            let list: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/account-reviews").insert_header(h).to_request()).await;
            assert!(list["items"].as_array().unwrap().is_empty(), "{role}@{slug}: {list}");
        }
        assert_eq!(entry!(&app, &w, "alpha-clinic", "kana@aoba.example.jp")["status"], "active");
        // Path ids must be UUIDs.
        assert_eq!(test::call_service(&app, test::TestRequest::get().uri("/api/v1/account-reviews/latest").insert_header(admin.clone()).to_request()).await.status(), StatusCode::NOT_FOUND);

        // The admin, signed in, cannot disable their own account; confirming it is fine.
        let res = test::call_service(&app, as_person(test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).set_json(json!({"user_id": admin_id, "decision": "disabled"})))).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let v: Value = test::read_body_json(res).await;
        assert!(v["detail"].as_str().unwrap().contains("your own account"), "{v}");
        let res = test::call_service(&app, as_person(test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).set_json(json!({"user_id": admin_id, "decision": "confirmed"})))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["decided_by"], format!("user:{admin_id}"));

        // Bad decisions: unknown value, an account outside the review, an unknown field.
        for (body, want) in [
            (json!({"user_id": kana_id, "decision": "deleted"}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"user_id": Uuid::new_v4(), "decision": "confirmed"}), StatusCode::NOT_FOUND),
            (json!({"user_id": kana_id, "decision": "confirmed", "by": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"user_id": kana_id, "decision": "confirmed", "note": "あ".repeat(1001)}), StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).insert_header(admin.clone()).set_json(&body).to_request()).await;
            assert_eq!(res.status(), want, "{body}");
        }

        // Kana is confirmed; decisions are final.
        let v: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).insert_header(admin.clone()).set_json(json!({"user_id": kana_id, "decision": "confirmed", "note": "受付担当 継続"})).to_request()).await;
        assert_eq!(v["decision"], "confirmed");
        assert_eq!(v["note"], "受付担当 継続");
        assert!(v["decided_by"].as_str().unwrap().starts_with("token:"));
        assert!(v["decided_at"].is_string());
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).insert_header(admin.clone()).set_json(json!({"user_id": kana_id, "decision": "disabled"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(entry!(&app, &w, "alpha-clinic", "kana@aoba.example.jp")["status"], "active");

        // Closing is refused while an account is undecided.
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/close")).insert_header(admin.clone()).set_json(json!({})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let v: Value = test::read_body_json(res).await;
        assert!(v["detail"].as_str().unwrap().contains("undecided"), "{v}");

        // "disabled": the account is disabled and its session ends, at once.
        assert_eq!(test::call_service(&app, me(&old_cookie)).await.status(), StatusCode::OK);
        let res = test::call_service(&app, as_person(test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).set_json(json!({"user_id": old_id, "decision": "disabled", "note": "退職 2026-10-31"})))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["decision"], "disabled");
        assert_eq!(v["decided_by"], format!("user:{admin_id}"));
        assert_eq!(test::call_service(&app, me(&old_cookie)).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ended_reasons(&db, old_id).await, vec![Some("account_review".to_string())]);
        assert_eq!(entry!(&app, &w, "alpha-clinic", "old@aoba.example.jp")["status"], "disabled");
        assert!(sign_in!(&app, "old@aoba.example.jp", old_dev).is_none(), "a disabled account cannot sign in");

        // Every account decided: the review closes; afterwards nothing changes any more.
        let v: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/close")).insert_header(admin.clone()).set_json(json!({})).to_request()).await;
        assert_eq!(v["status"], "closed");
        assert_eq!((v["confirmed"].as_u64(), v["disabled"].as_u64(), v["undecided"].as_u64()), (Some(2), Some(1), Some(0)));
        assert!(v["closed_by"].as_str().unwrap().starts_with("token:"));
        assert!(v["closed_at"].is_string());
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/close")).insert_header(admin.clone()).set_json(json!({"force": true})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/decisions")).insert_header(admin.clone()).set_json(json!({"user_id": admin_id, "decision": "confirmed"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);

        // A new review can start now; closing it early needs force and leaves the rest undecided.
        let second: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(admin.clone()).set_json(json!({})).to_request()).await;
        let rid2 = second["review"]["id"].as_str().unwrap().to_string();
        assert_eq!(second["review"]["total"], 3);
        let old_now = second["items"].as_array().unwrap().iter().find(|i| i["user_id"] == old_id.to_string()).unwrap().clone();
        assert_eq!(old_now["status"], "disabled", "the new snapshot shows the disabled account");
        test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid2}/decisions")).insert_header(admin.clone()).set_json(json!({"user_id": kana_id, "decision": "confirmed"})).to_request()).await;
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid2}/close")).insert_header(admin.clone()).set_json(json!({"force": false})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let v: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid2}/close")).insert_header(admin.clone()).set_json(json!({"force": true})).to_request()).await;
        assert_eq!(v["status"], "closed");
        assert_eq!(v["undecided"], 2);
        let detail: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri(&format!("/api/v1/account-reviews/{rid2}")).insert_header(auditor.clone()).to_request()).await;
        assert_eq!(detail["items"].as_array().unwrap().iter().filter(|i| i["decision"].is_null()).count(), 2);
        let list: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/account-reviews").insert_header(admin.clone()).to_request()).await;
        let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![rid2.as_str(), rid.as_str()], "newest first");

        // A provider admin reviews the provider's own accounts only (none of its institutions').
        let p: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(bearer(&w, "alpha-cloud", Role::ProviderAdmin)).set_json(json!({})).to_request()).await;
        assert_eq!(p["review"]["tenant_id"], w.p1.id.to_string());
        assert!(p["items"].as_array().unwrap().is_empty(), "{p}");
    }

    async fn maintainers_under_a_grant_do_not_run_reviews(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let maint = bearer(&w, "alpha-cloud", Role::ProviderMaintainer);
        let now = Utc::now();
        let g: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/maintenance-grants").insert_header(maint.clone())
            .set_json(json!({"institution_id": w.c1.id, "work_plan_ref": "WP-1", "scope": "operate", "incident": true,
                             "starts_at": now.to_rfc3339(), "ends_at": (now + Duration::hours(1)).to_rfc3339()})).to_request()).await;
        let gid = g["id"].as_str().unwrap().to_string();
        let rv: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).set_json(json!({})).to_request()).await;
        let rid = rv["review"]["id"].as_str().unwrap().to_string();
        let under = |r: test::TestRequest| r.insert_header(maint.clone()).insert_header(("x-anshin-grant", gid.clone())).to_request();
        // The grant works (the clinic is visible), but reviews and the policy are not for maintainers.
        assert_eq!(test::call_service(&app, under(test::TestRequest::get().uri(&format!("/api/v1/tenants/{}", w.c1.id)))).await.status(), StatusCode::OK);
        for (req, label) in [
            (under(test::TestRequest::post().uri("/api/v1/account-reviews").set_json(json!({}))), "start"),
            (under(test::TestRequest::get().uri("/api/v1/account-reviews")), "list"),
            (under(test::TestRequest::get().uri(&format!("/api/v1/account-reviews/{rid}"))), "read"),
            (under(test::TestRequest::post().uri(&format!("/api/v1/account-reviews/{rid}/close")).set_json(json!({"force": true}))), "close"),
            (under(test::TestRequest::get().uri("/api/v1/identity-policy")), "policy read"),
            (under(test::TestRequest::put().uri("/api/v1/identity-policy").set_json(json!({"idle_timeout_secs": 3600, "stale_after_days": 730, "disable_after_days": 365}))), "policy write"),
        ] {
            assert_eq!(test::call_service(&app, req).await.status(), StatusCode::FORBIDDEN, "{label}");
        }
    }

    async fn stale_accounts_are_flagged_then_disabled_and_a_sign_in_lifts_the_flag(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (idle_id, idle_cookie, _, _idle_dev) = enroll!(&app, &w, "alpha-clinic", "idle@aoba.example.jp", "institution_staff");
        let (back_id, _, _, mut back_dev) = enroll!(&app, &w, "alpha-clinic", "back@aoba.example.jp", "institution_staff");
        let (fresh_id, _, _, _fresh_dev) = enroll!(&app, &w, "alpha-clinic", "fresh@aoba.example.jp", "institution_staff");
        let (nurse_id, _, _, _nurse_dev) = enroll!(&app, &w, "alpha-hospital", "nurse@hikari.example.jp", "institution_staff");
        // The clinic's break-glass account: created, never used, and meant to stay that way.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/break-glass").insert_header(bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let bg_email = format!("break-glass+{}@anshin.invalid", w.c1.id);
        let bg_id: Uuid = entry!(&app, &w, "alpha-clinic", bg_email)["id"].as_str().unwrap().parse().unwrap();
        {
            let tx = begin_platform_tx(&db.app).await.unwrap();
            user::Entity::update_many().col_expr(user::Column::CreatedAt, Expr::value(Utc::now() - Duration::days(400)))
                .filter(user::Column::Id.eq(bg_id)).exec(&tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        // The hospital is stricter: stale after 7 days.
        let res = test::call_service(&app, test::TestRequest::put().uri("/api/v1/identity-policy").insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin))
            .set_json(json!({"idle_timeout_secs": 900, "stale_after_days": 7, "disable_after_days": 3})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        last_sign_in(&db, idle_id, Utc::now() - Duration::days(100)).await;
        last_sign_in(&db, back_id, Utc::now() - Duration::days(120)).await;
        last_sign_in(&db, fresh_id, Utc::now() - Duration::days(8)).await;
        // 60 days: stale under the hospital's 7, would not be under the clinic's 90.
        last_sign_in(&db, nurse_id, Utc::now() - Duration::days(60)).await;

        // First sweep, through the job queue with the real handler: flags only.
        JobQueue::enqueue(&db.app, NewJob::new(STALE_ACCOUNT_SWEEP, json!({}))).await.unwrap();
        let worker = Worker::new(db.app.clone(), WorkerOptions::default()).register(StaleAccountSweep);
        assert!(worker.run_one().await.unwrap(), "the sweep job ran");
        let jobs = JobQueue::new(db.app.clone()).list_by_kind(STALE_ACCOUNT_SWEEP).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, JobStatus::Succeeded, "{:?}", jobs[0]);
        for (id, flagged) in [(idle_id, true), (back_id, true), (fresh_id, false), (nurse_id, true), (bg_id, false)] {
            let a = account(&db, id).await;
            assert_eq!(a.stale_flagged_at.is_some(), flagged, "{}", a.id);
            assert_eq!(a.status, "active", "{}", a.id);
        }
        let e = entry!(&app, &w, "alpha-clinic", "idle@aoba.example.jp");
        assert!(e["stale_since"].is_string(), "{e}");
        assert!(entry!(&app, &w, "alpha-clinic", "fresh@aoba.example.jp")["stale_since"].is_null());
        let bg = entry!(&app, &w, "alpha-clinic", bg_email);
        assert!(bg["stale_since"].is_null() && bg["break_glass"] == true, "{bg}");
        assert_eq!(test::call_service(&app, me(&idle_cookie)).await.status(), StatusCode::OK, "flagging alone cuts nothing");

        // A second sweep right away changes nothing (idempotent, within the grace period).
        let r = sweep_stale_accounts(&db.app, Utc::now()).await.unwrap();
        assert_eq!((r.flagged, r.cleared, r.disabled), (0, 0, 0), "{r:?}");

        // 31 days later (the clinic's default grace period is 30) — but "back" signs in first.
        {
            let tx = begin_platform_tx(&db.app).await.unwrap();
            user::Entity::update_many().col_expr(user::Column::StaleFlaggedAt, Expr::value(Utc::now() - Duration::days(31)))
                .filter(user::Column::StaleFlaggedAt.is_not_null()).exec(&tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert!(sign_in!(&app, "back@aoba.example.jp", back_dev).is_some());
        assert!(entry!(&app, &w, "alpha-clinic", "back@aoba.example.jp")["stale_since"].is_null(), "a sign-in lifts the flag at once");

        let r = sweep_stale_accounts(&db.app, Utc::now()).await.unwrap();
        assert_eq!((r.flagged, r.cleared, r.disabled), (0, 1, 2), "{r:?}");
        let idle = account(&db, idle_id).await;
        assert_eq!(idle.status, "disabled");
        assert_eq!(test::call_service(&app, me(&idle_cookie)).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ended_reasons(&db, idle_id).await, vec![Some("stale_account".to_string())]);
        assert_eq!(account(&db, nurse_id).await.status, "disabled", "the hospital's 3-day grace period has passed too");
        let back = account(&db, back_id).await;
        assert_eq!(back.status, "active");
        assert!(back.stale_flagged_at.is_none(), "the sweep clears a lifted flag");
        let fresh = account(&db, fresh_id).await;
        assert_eq!((fresh.status.as_str(), fresh.stale_flagged_at), ("active", None), "8 days is fine under the clinic's 90");
        let bg = account(&db, bg_id).await;
        assert_eq!((bg.status.as_str(), bg.stale_flagged_at), ("active", None), "break-glass accounts are never swept");

        // Re-enabled by an admin: the flag starts over, so the person gets a full grace period.
        let res = test::call_service(&app, test::TestRequest::patch().uri(&format!("/api/v1/accounts/{idle_id}")).insert_header(bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).set_json(json!({"status": "active"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert!(account(&db, idle_id).await.stale_flagged_at.is_none());
        let r = sweep_stale_accounts(&db.app, Utc::now()).await.unwrap();
        assert_eq!((r.flagged, r.disabled), (1, 0), "{r:?}");
        assert_eq!(account(&db, idle_id).await.status, "active");
    }
}
