//! Step-up for sensitive key operations (issue 5), on SQLite and PostgreSQL: a person signed in
//! with a session must have confirmed with their passkey within the last 5 minutes before
//! rotating the tenant's KEK, registering or removing BYOK, or crypto-erasing. Without it the
//! answer is 403 `urn:anshin:problem:step-up-required` and nothing changes; after the step-up
//! the same request works. Scope (404) and role (403 `forbidden`) are decided before the
//! step-up. API tokens are not people and keep today's rules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::test;
use anshin_keys::admin::AdminError;
use anshin_platform::stepup::StepUpError;
use anshin_platform::{Principal, Role};
use anshin_tests::{
    bearer, both_backends, enroll_passkey, problem, step_up, with_session, Person, World,
};
use serde_json::json;
use uuid::Uuid;

const STEP_UP: &str = "urn:anshin:problem:step-up-required";

/// Makes the person's passkey confirmation `minutes` old (as if they signed in long ago).
async fn age_step_up(db: &anshin_tests::TestDb, p: &Person, minutes: i64) {
    use anshin_identity::entity::session;
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let tx = anshin_platform::db::begin_platform_write_tx(&db.app)
        .await
        .unwrap();
    let r = session::Entity::update_many()
        .col_expr(
            session::Column::SteppedUpAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(minutes)),
        )
        .filter(session::Column::UserId.eq(p.id))
        .exec(&tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(r.rows_affected >= 1, "the person's session");
}

async fn principal_of(state: &anshin_server::app::AppState, p: &Person) -> Principal {
    state
        .identity
        .authenticate_session(&p.session.0, None, false)
        .await
        .unwrap()
        .expect("an open session")
}

async fn count(db: &anshin_tests::TestDb, action: &str) -> i64 {
    db.count_platform(&format!(
        "SELECT COUNT(*) FROM audit_events WHERE action = '{action}'"
    ))
    .await
}

const ARN: &str =
    "arn:aws:kms:ap-northeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

both_backends! {
    async fn key_administration_needs_a_fresh_step_up(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        for t in w.all() {
            state.keys.provision(anshin_server::keys::info(t)).await.unwrap();
        }
        let (h, c1) = (w.h1.id, w.c1.id);
        let mut admin = enroll_passkey(&app, &w, "alpha-hospital", "admin@hikari.example.jp", "institution_admin").await;
        let mut provider = enroll_passkey(&app, &w, "alpha-cloud", "admin@alpha-cloud.example.jp", "provider_admin").await;
        let staff = enroll_passkey(&app, &w, "alpha-hospital", "staff@hikari.example.jp", "institution_staff").await;
        // The enrollment counted as a confirmation; make both admins' confirmations stale.
        age_step_up(&db, &admin, 10).await;
        age_step_up(&db, &provider, 6).await;
        let before = state.keys.status_of(h).await.unwrap();
        let first_key = before.active.as_ref().unwrap().key_id.clone();

        // Without a recent step-up: rotate, BYOK register and remove are refused with the
        // step-up problem (BYOK before the local provider's own refusal), and nothing changes.
        let requests = [
            ("rotate", test::TestRequest::post().uri("/api/v1/keys/rotate")),
            ("byok register", test::TestRequest::put().uri("/api/v1/keys/byok").set_json(json!({"key_arn": ARN}))),
            ("byok remove", test::TestRequest::delete().uri("/api/v1/keys/byok")),
        ];
        for (what, req) in requests {
            let (status, p) = problem(test::call_service(&app, with_session(req, &admin.session)).await).await;
            assert_eq!(status.as_u16(), 403, "{what}: {p}");
            assert_eq!(p["type"], STEP_UP, "{what}: {p}");
            assert!(p["detail"].as_str().unwrap().contains("/api/v1/me/step-up/begin"), "{what}: the way forward: {p}");
        }
        // The provider admin on one of its institutions: the same.
        let (status, p) = problem(test::call_service(&app, with_session(test::TestRequest::post().uri(&format!("/api/v1/keys/rotate?tenant_id={h}")), &provider.session)).await).await;
        assert_eq!((status.as_u16(), p["type"].as_str()), (403, Some(STEP_UP)), "{p}");
        let after = state.keys.status_of(h).await.unwrap();
        assert_eq!(after.active.as_ref().unwrap().key_id, first_key, "no new key");
        assert!(after.previous.is_empty(), "nothing retired");
        assert_eq!(count(&db, "keys.kek.rotate").await, 0);

        // Scope and role come first: another provider's tenant is "not found", staff are
        // "forbidden" — neither is asked to step up for something they may not do anyway.
        let (status, p) = problem(test::call_service(&app, with_session(test::TestRequest::post().uri(&format!("/api/v1/keys/rotate?tenant_id={}", w.c2.id)), &admin.session)).await).await;
        assert_eq!(status.as_u16(), 404, "{p}");
        let (status, p) = problem(test::call_service(&app, with_session(test::TestRequest::post().uri("/api/v1/keys/rotate"), &staff.session)).await).await;
        assert_eq!(status.as_u16(), 403, "{p}");
        assert_eq!(p["type"], "urn:anshin:problem:forbidden", "{p}");

        // Crypto-erase through the typed API as the provider admin's session: refused, nothing
        // erased; an institution admin may not erase at all.
        let pa = principal_of(&state, &provider).await;
        let r = state.keys.crypto_erase_for(&pa, Some(c1), None).await;
        assert!(matches!(r, Err(AdminError::StepUp(StepUpError::Required(_)))), "{r:?}");
        let problem_of = anshin_platform::Problem::from(r.unwrap_err());
        assert_eq!((problem_of.status.as_u16(), problem_of.kind), (403, "step-up-required"));
        let st = state.keys.status_of(c1).await.unwrap();
        assert!(!st.erased && st.active.is_some(), "the clinic's key is untouched");
        assert_eq!(count(&db, "keys.crypto_erase").await, 0);
        let ia = principal_of(&state, &admin).await;
        let r = state.keys.crypto_erase_for(&ia, None, None).await;
        assert!(matches!(r, Err(AdminError::Key(anshin_keys::KeyError::Forbidden(_)))), "{r:?}");
        let other = anshin_tests::World::token(&w, "beta-cloud", Role::ProviderAdmin).to_string();
        let other = db.tokens().authenticate(&other).await.unwrap().unwrap();
        let r = state.keys.crypto_erase_for(&other, Some(c1), None).await;
        assert!(matches!(r, Err(AdminError::Key(anshin_keys::KeyError::NotFound(_)))), "another provider: {r:?}");

        // After a step-up the same requests go through.
        step_up(&app, &mut admin).await;
        let res = test::call_service(&app, with_session(test::TestRequest::post().uri("/api/v1/keys/rotate"), &admin.session)).await;
        assert_eq!(res.status().as_u16(), 202);
        let rotated: serde_json::Value = test::read_body_json(res).await;
        assert_ne!(rotated["new_kek"]["key_id"].as_str().unwrap(), first_key);
        assert_eq!(count(&db, "keys.kek.rotate").await, 1);
        // BYOK now reaches the key service's own checks (the local provider cannot use BYOK),
        // and removing BYOK that is not there is a conflict.
        let (status, p) = problem(test::call_service(&app, with_session(test::TestRequest::put().uri("/api/v1/keys/byok").set_json(json!({"key_arn": ARN})), &admin.session)).await).await;
        assert_eq!(status.as_u16(), 422, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("local provider"), "{p}");
        let (status, p) = problem(test::call_service(&app, with_session(test::TestRequest::delete().uri("/api/v1/keys/byok"), &admin.session)).await).await;
        assert_eq!(status.as_u16(), 409, "{p}");

        // The window is minutes: a confirmation 6 minutes old no longer counts.
        age_step_up(&db, &admin, 6).await;
        let (status, p) = problem(test::call_service(&app, with_session(test::TestRequest::post().uri("/api/v1/keys/rotate"), &admin.session)).await).await;
        assert_eq!((status.as_u16(), p["type"].as_str()), (403, Some(STEP_UP)), "{p}");
        age_step_up(&db, &admin, 4).await;
        let res = test::call_service(&app, with_session(test::TestRequest::post().uri("/api/v1/keys/rotate"), &admin.session)).await;
        assert_eq!(res.status().as_u16(), 202, "4 minutes old is recent enough");

        // The provider admin steps up and crypto-erases the clinic: evidence names the person.
        step_up(&app, &mut provider).await;
        let pa = principal_of(&state, &provider).await;
        let ev = state.keys.crypto_erase_for(&pa, Some(c1), Some(7)).await.unwrap();
        assert_eq!(ev.tenant_id, c1);
        assert_eq!(ev.principal, format!("user:{}", provider.id));
        assert!(state.keys.status_of(c1).await.unwrap().erased);
        assert_eq!(count(&db, "keys.crypto_erase").await, 1);
    }
}

both_backends! {
    async fn api_tokens_are_not_asked_to_step_up(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        for t in w.all() {
            state.keys.provision(anshin_server::keys::info(t)).await.unwrap();
        }
        // Rotation with an admin's API token: as before, no step-up.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/keys/rotate").insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin)).to_request()).await;
        assert_eq!(res.status().as_u16(), 202);
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/keys/rotate?tenant_id={}", w.c1.id)).insert_header(bearer(&w, "alpha-cloud", Role::ProviderAdmin)).to_request()).await;
        assert_eq!(res.status().as_u16(), 202);
        // BYOK reaches the provider check; roles that could not before still cannot.
        let (status, p) = problem(test::call_service(&app, test::TestRequest::put().uri("/api/v1/keys/byok").insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin)).set_json(json!({"key_arn": ARN})).to_request()).await).await;
        assert_eq!(status.as_u16(), 422, "{p}");
        for (slug, role) in [("alpha-hospital", Role::InstitutionStaff), ("alpha-hospital", Role::Auditor), ("alpha-cloud", Role::ProviderOperator)] {
            let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/keys/rotate?tenant_id={}", w.h1.id)).insert_header(bearer(&w, slug, role)).to_request()).await;
            assert_eq!(res.status().as_u16(), 403, "{role}");
        }
        // Crypto-erase with the provider admin's token: allowed without a step-up.
        let token = db.tokens().authenticate(w.token("alpha-cloud", Role::ProviderAdmin)).await.unwrap().unwrap();
        let ev = state.keys.crypto_erase_for(&token, Some(w.h1.id), None).await.unwrap();
        assert!(ev.principal.starts_with("api_token:") || ev.principal.starts_with("token:"), "{}", ev.principal);
        assert_eq!(count(&db, "keys.kek.rotate").await, 2);
        assert_eq!(count(&db, "keys.crypto_erase").await, 1);
        // A key service without the identity's verifier (other processes, the CLI) refuses
        // people and lets tokens through.
        let bare = anshin_server::keys::service(db.app.clone(), &db.config, anshin_server::keys::local_provider(&db.config).unwrap());
        let person = Principal {
            subject: anshin_platform::Subject::User { id: Uuid::now_v7(), session_id: Uuid::now_v7(), email: "x@example.jp".into() },
            ..token.clone()
        };
        assert!(matches!(bare.require_step_up(&person).await, Err(StepUpError::Unavailable(_))));
        assert!(bare.require_step_up(&token).await.is_ok());
    }
}
