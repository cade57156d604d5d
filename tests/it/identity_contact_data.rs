//! People's e-mail addresses at rest, on SQLite and PostgreSQL (guideline 7 ③ / 10 ②): after an
//! invitation and an enrollment the address columns hold `anshin-env1:` envelopes sealed under
//! the tenant's KEK, never the address; sign-in and "is this address taken?" still find people
//! by address (through the blind index), case-insensitively; the API shows the addresses as
//! before. Rows stored readable before this are still found, and the re-encryption pass seals
//! and indexes them (audited, once). A crypto-erase of the tenant leaves its addresses
//! unreadable: the inventory shows a placeholder instead of failing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::test;
use anshin_audit::Actor;
use anshin_keys::KeyError;
use anshin_platform::db::begin_platform_tx;
use anshin_platform::Role;
use anshin_tests::lit;
use anshin_tests::{bearer, both_backends, enroll_passkey, origin, Person, TestDb, World};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use uuid::Uuid;
use webauthn_authenticator_rs::prelude::RequestChallengeResponse;

const PURPOSE: &str = "identity.email";

/// The text values of a one-column query, read with raw SQL in platform scope (NULL as "").
async fn strings(db: &TestDb, sql: &str) -> Vec<String> {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    let rows = tx
        .query_all(Statement::from_string(db.db_backend(), sql.to_string()))
        .await
        .expect(sql);
    tx.commit().await.unwrap();
    rows.iter()
        .map(|r| {
            r.try_get_by_index::<Option<String>>(0)
                .unwrap()
                .unwrap_or_default()
        })
        .collect()
}

async fn one(db: &TestDb, sql: &str) -> String {
    let mut v = strings(db, sql).await;
    assert_eq!(v.len(), 1, "{sql}: {v:?}");
    v.pop().unwrap()
}

fn col(db: &TestDb, table: &str, column: &str, id: Uuid) -> String {
    format!("SELECT {column} FROM {table} WHERE id = {}", lit(db, id))
}

/// A stored address as it must look: an envelope that does not show the address.
fn assert_sealed(stored: &str, address: &str) {
    assert!(stored.starts_with("anshin-env1:"), "{stored}");
    let lower = stored.to_lowercase();
    assert!(!lower.contains(&address.to_lowercase()), "{stored}");
    let local = address.split('@').next().unwrap().to_lowercase();
    assert!(!lower.contains(&local) && !stored.contains('@'), "{stored}");
}

fn assert_index(stored: &str) {
    assert_eq!(stored.len(), 64, "{stored}");
    assert!(stored.chars().all(|c| c.is_ascii_hexdigit()), "{stored}");
}

/// A passkey sign-in by address through the HTTP API: the status and body of the finish.
async fn sign_in<S, B>(app: &S, email: &str, person: &mut Person) -> (StatusCode, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let begin: Value = test::call_and_read_body_json(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/sign-in/begin")
            .set_json(json!({"email": email}))
            .to_request(),
    )
    .await;
    let rcr: RequestChallengeResponse =
        serde_json::from_value(begin["public_key"].clone()).unwrap();
    // A decoy challenge (unknown address) lists credentials the device does not have.
    let Ok(assertion) = person.device.do_authentication(origin(), rcr) else {
        return (StatusCode::NOT_FOUND, Value::Null);
    };
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/sign-in/finish")
            .set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": assertion}))
            .to_request(),
    )
    .await;
    let status = res.status();
    (status, test::read_body_json(res).await)
}

async fn get<S, B>(app: &S, path: &str, auth: (&'static str, String)) -> Value
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
        test::TestRequest::get()
            .uri(path)
            .insert_header(auth)
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "{path}");
    test::read_body_json(res).await
}

async fn invite<S, B>(app: &S, w: &World, slug: &str, email: &str) -> (StatusCode, Value)
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
            .uri("/api/v1/invitations")
            .insert_header(bearer(w, slug, Role::InstitutionAdmin))
            .set_json(
                json!({"email": email, "display_name": "重複 確認", "role": "institution_staff"}),
            )
            .to_request(),
    )
    .await;
    let status = res.status();
    (status, test::read_body_json(res).await)
}

fn emails(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["email"].as_str().unwrap().to_string())
        .collect()
}

both_backends! {
    async fn addresses_are_sealed_and_still_found_by_address(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        let mut kana = enroll_passkey(&app, &w, "alpha-clinic", "Kana.Sato@Aoba.example.jp", "institution_staff").await;
        let ren = enroll_passkey(&app, &w, "alpha-clinic", "ren@aoba.example.jp", "institution_staff").await;
        let (status, pending) = invite(&app, &w, "alpha-clinic", "Pending.Person@aoba.example.jp").await;
        assert_eq!(status, StatusCode::CREATED, "{pending}");
        assert_eq!(pending["email"], "pending.person@aoba.example.jp", "the answer shows the address");
        let pending_id: Uuid = pending["id"].as_str().unwrap().parse().unwrap();
        // The longest addresses fit sealed (PostgreSQL's address columns were 254 characters).
        let long = format!("{}@aoba.example.jp", "l".repeat(230));
        let (status, body) = invite(&app, &w, "alpha-clinic", &long).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let long_id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        assert!(one(&db, &col(&db, "invitations", "email", long_id)).await.len() > 254);

        // Read with raw SQL, the columns hold envelopes and a 64-hex-digit blind index.
        let stored = one(&db, &col(&db, "users", "email", kana.id)).await;
        assert_sealed(&stored, "kana.sato@aoba.example.jp");
        assert_index(&one(&db, &col(&db, "users", "email_index", kana.id)).await);
        assert_sealed(&one(&db, &col(&db, "invitations", "email", pending_id)).await, "pending.person@aoba.example.jp");
        assert_index(&one(&db, &col(&db, "invitations", "email_index", pending_id)).await);
        for table in ["users", "invitations"] {
            assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM {table} WHERE email LIKE '%@%' OR email NOT LIKE 'anshin-env1:%' OR email_index IS NULL")).await, 0, "{table}");
        }
        // Sealed under the clinic's own KEK, bound to the account.
        let keys = state.keys.clone();
        assert_eq!(keys.open_text(w.c1.id, PURPOSE, &kana.id.to_string(), &stored).await.unwrap().as_str(), "kana.sato@aoba.example.jp");
        assert!(keys.open_text(w.c1.id, PURPOSE, &ren.id.to_string(), &stored).await.is_err(), "bound to its row");
        assert!(keys.open_text(w.h1.id, PURPOSE, &kana.id.to_string(), &stored).await.is_err(), "bound to its tenant");
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM key_data_keys WHERE tenant_id = {} AND purpose = '{PURPOSE}'", lit(&db, w.c1.id))).await, 1, "one data key of the clinic, wrapped under its KEK");

        // Sign-in by address still works, whatever the case typed.
        let (status, signed) = sign_in(&app, " KANA.SATO@aoba.EXAMPLE.jp ", &mut kana).await;
        assert_eq!(status, StatusCode::OK, "{signed}");
        assert_eq!(signed["user"]["email"], "kana.sato@aoba.example.jp");
        let cookie = ("cookie", format!("anshin_session={}", kana.session.0));
        assert_eq!(get(&app, "/api/v1/me", cookie).await["user"]["email"], "kana.sato@aoba.example.jp");

        // A second account with the same address is refused: at the invitation, in any tenant …
        for (slug, typed) in [("alpha-clinic", "kana.sato@aoba.example.jp"), ("alpha-hospital", "KANA.Sato@aoba.example.jp")] {
            let (status, body) = invite(&app, &w, slug, typed).await;
            assert_eq!(status, StatusCode::CONFLICT, "{slug}: {body}");
        }
        // … and at an enrollment whose invitation was sent before the account existed.
        let (_, early) = invite(&app, &w, "alpha-hospital", "Ichiro@Hikari.example.jp").await;
        enroll_passkey(&app, &w, "alpha-clinic", "ichiro@hikari.example.jp", "institution_staff").await;
        let token = early["enrollment_url"].as_str().unwrap().split("#token=").nth(1).unwrap().to_string();
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        let ccr = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = webauthn_authenticator_rs::WebauthnAuthenticator::new(webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true));
        let reg = device.do_registration(origin(), ccr).unwrap();
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM users WHERE tenant_id = {}", lit(&db, w.h1.id))).await, 0);

        // The inventory and the pending invitations show the addresses, the inventory sorted.
        let inventory = get(&app, "/api/v1/accounts", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(emails(&inventory), vec!["ichiro@hikari.example.jp", "kana.sato@aoba.example.jp", "ren@aoba.example.jp"]);
        let one_account = get(&app, &format!("/api/v1/accounts/{}", ren.id), bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).await;
        assert_eq!(one_account["email"], "ren@aoba.example.jp");
        let invitations = get(&app, "/api/v1/invitations", bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).await;
        assert_eq!(emails(&invitations), vec![long.as_str(), "pending.person@aoba.example.jp"], "newest first");
        // The trail names people as before.
        let enrolled = strings(&db, "SELECT body FROM audit_events WHERE action = 'account.enroll'").await;
        assert!(enrolled.iter().any(|b| b.contains("kana.sato@aoba.example.jp")), "{enrolled:?}");
    }

    async fn readable_rows_are_found_until_the_pass_seals_them(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        let mut old = enroll_passkey(&app, &w, "alpha-clinic", "old.timer@aoba.example.jp", "institution_staff").await;
        let (_, inv) = invite(&app, &w, "alpha-clinic", "waiting@aoba.example.jp").await;
        let inv_id: Uuid = inv["id"].as_str().unwrap().parse().unwrap();
        let review: Value = {
            let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/account-reviews").insert_header(bearer(&w, "alpha-clinic", Role::InstitutionAdmin)).set_json(json!({})).to_request()).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            test::read_body_json(res).await
        };
        let review_id = review["review"]["id"].as_str().unwrap().to_string();
        // Rows as Anshin wrote them before addresses were sealed: readable, no index.
        for (table, id, address) in [("users", old.id, "old.timer@aoba.example.jp"), ("invitations", inv_id, "waiting@aoba.example.jp")] {
            let n = db.exec_platform(&format!("UPDATE {table} SET email = '{address}', email_index = NULL WHERE id = {}", lit(&db, id))).await;
            assert_eq!(n, 1);
        }
        assert_eq!(db.exec_platform(&format!("UPDATE account_review_items SET email = 'old.timer@aoba.example.jp' WHERE user_id = {}", lit(&db, old.id))).await, 1);

        // Still found at sign-in, still unique, still shown.
        let (status, signed) = sign_in(&app, "Old.Timer@aoba.example.jp", &mut old).await;
        assert_eq!(status, StatusCode::OK, "{signed}");
        assert_eq!(signed["user"]["email"], "old.timer@aoba.example.jp");
        let (status, _) = invite(&app, &w, "alpha-hospital", "OLD.TIMER@aoba.example.jp").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(emails(&get(&app, "/api/v1/accounts", bearer(&w, "alpha-clinic", Role::Auditor)).await), vec!["old.timer@aoba.example.jp"]);
        assert_eq!(emails(&get(&app, "/api/v1/invitations", bearer(&w, "alpha-clinic", Role::Auditor)).await), vec!["waiting@aoba.example.jp"]);

        // The pass (as `anshin keys reencrypt` and the hourly job run it), in batches of one.
        let report = state.identity.reseal_legacy_contact_data(&Actor::operator(), 1).await.unwrap();
        assert_eq!((report.examined, report.resealed, report.failed), (3, 3, 0), "{report:?}");
        let stored = one(&db, &col(&db, "users", "email", old.id)).await;
        assert_sealed(&stored, "old.timer@aoba.example.jp");
        let index = one(&db, &col(&db, "users", "email_index", old.id)).await;
        assert_eq!(index, state.keys.blind_index(PURPOSE, "old.timer@aoba.example.jp").await.unwrap(), "the index of the normalised address");
        assert_sealed(&one(&db, &col(&db, "invitations", "email", inv_id)).await, "waiting@aoba.example.jp");
        assert_index(&one(&db, &col(&db, "invitations", "email_index", inv_id)).await);
        let item = one(&db, &format!("SELECT email FROM account_review_items WHERE user_id = {}", lit(&db, old.id))).await;
        assert_sealed(&item, "old.timer@aoba.example.jp");
        // Each change audited in the row's tenant, without the address.
        let events = strings(&db, &format!("SELECT body FROM audit_events WHERE action = 'identity.email.reseal' AND tenant_id = {}", lit(&db, w.c1.id))).await;
        assert_eq!(events.len(), 3, "{events:?}");
        for b in &events {
            assert!(b.contains("anshin-cli:") && b.contains("key-service"), "{b}");
            assert!(!b.contains("old.timer") && !b.contains("waiting@"), "no address in the trail: {b}");
        }

        // Everything still works the same, and a second pass finds nothing.
        let (status, _) = sign_in(&app, "old.timer@aoba.example.jp", &mut old).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(emails(&get(&app, "/api/v1/invitations", bearer(&w, "alpha-clinic", Role::Auditor)).await), vec!["waiting@aoba.example.jp"]);
        let detail = get(&app, &format!("/api/v1/account-reviews/{review_id}"), bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(emails(&detail), vec!["old.timer@aoba.example.jp"]);
        let again = state.identity.reseal_legacy_contact_data(&Actor::operator(), 100).await.unwrap();
        assert_eq!((again.examined, again.resealed, again.failed), (0, 0, 0));
        assert_eq!(one(&db, &col(&db, "users", "email", old.id)).await, stored, "untouched");
        assert_eq!(strings(&db, "SELECT body FROM audit_events WHERE action = 'identity.email.reseal'").await.len(), 3);
    }

    async fn a_crypto_erase_leaves_the_tenants_addresses_unreadable(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        let kana = enroll_passkey(&app, &w, "alpha-clinic", "kana@aoba.example.jp", "institution_staff").await;
        enroll_passkey(&app, &w, "alpha-hospital", "nurse@hikari.example.jp", "institution_staff").await;
        let stored = one(&db, &col(&db, "users", "email", kana.id)).await;
        let record = kana.id.to_string();
        assert_eq!(state.keys.open_text(w.c1.id, PURPOSE, &record, &stored).await.unwrap().as_str(), "kana@aoba.example.jp");

        state.keys.crypto_erase(Actor::operator(), w.c1.id, None).await.unwrap();
        let cold = db.state().await;
        for k in [&state.keys, &cold.keys] {
            assert!(matches!(k.open_text(w.c1.id, PURPOSE, &record, &stored).await, Err(KeyError::KeyDestroyed(_))));
        }
        // The inventory still answers, with a placeholder where the address was; the hospital
        // is untouched.
        for a in [test::init_service(anshin_server::app::app(state.clone())).await, test::init_service(anshin_server::app::app(cold.clone())).await] {
            let clinic = get(&a, "/api/v1/accounts", bearer(&w, "alpha-clinic", Role::Auditor)).await;
            assert_eq!(emails(&clinic), vec![anshin_identity::ERASED_EMAIL]);
            assert_eq!(clinic["items"][0]["id"], kana.id.to_string());
            let hospital = get(&a, "/api/v1/accounts", bearer(&w, "alpha-hospital", Role::Auditor)).await;
            assert_eq!(emails(&hospital), vec!["nurse@hikari.example.jp"]);
        }
        assert!(one(&db, &col(&db, "users", "email", kana.id)).await.starts_with("anshin-env1:"));
    }
}
