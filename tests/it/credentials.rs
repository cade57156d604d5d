//! Security keys with passwords, several named credentials, password rules and lock, the
//! attestation allow list and counter regression, through the real HTTP endpoints with software
//! authenticators (webauthn-authenticator-rs SoftToken / SoftPasskey), on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{
    both_backends, origin, problem, session_cookie, session_of, with_session, World,
};
use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::{AuthenticatorBackend, WebauthnAuthenticator};

const GOOD_PASSWORD: &str = "桜並木の下で春を待つ2026";

fn admin(w: &World) -> String {
    format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionAdmin))
}

/// Invites `$email` into alpha-clinic and yields the enrollment token.
macro_rules! invite {
    ($app:expr, $w:expr, $email:expr) => {{
        let v: Value = test::call_and_read_body_json(
            $app,
            test::TestRequest::post()
                .uri("/api/v1/invitations")
                .insert_header(("authorization", admin($w)))
                .set_json(json!({"email": $email, "display_name": "鈴木 一郎", "role": "institution_staff"}))
                .to_request(),
        )
        .await;
        let url = v["enrollment_url"].as_str().unwrap_or_else(|| panic!("{v}"));
        url.split("#token=").nth(1).unwrap().to_string()
    }};
}

fn post(uri: &str, body: Value) -> test::TestRequest {
    test::TestRequest::post().uri(uri).set_json(body)
}

fn register(token: &mut SoftToken, v: &Value) -> Value {
    let ccr: CreationChallengeResponse = serde_json::from_value(v["public_key"].clone()).unwrap();
    serde_json::to_value(
        token
            .perform_register(origin(), ccr.public_key, 60_000)
            .unwrap(),
    )
    .unwrap()
}

fn assert_with(token: &mut SoftToken, v: &Value) -> Value {
    let rcr: RequestChallengeResponse = serde_json::from_value(v["public_key"].clone()).unwrap();
    serde_json::to_value(
        token
            .perform_auth(origin(), rcr.public_key, 60_000)
            .unwrap(),
    )
    .unwrap()
}

both_backends! {
    async fn security_key_with_password_enrolls_signs_in_and_locks(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let token = invite!(&app, &w, "ichiro@sakura.example.jp");

        // The password is checked before the key is touched.
        for (bad, why) in [("short", "at least 12"), ("1qaz2wsx3edc", "commonly used"), ("ichiro-no-himitsu", "name or email")] {
            let (status, v) = problem(test::call_service(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token, "method": "security_key", "password": bad})).to_request()).await).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert!(v["detail"].as_str().unwrap().contains(why), "{bad}: {v}");
        }
        let (status, _) = problem(test::call_service(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token, "method": "security_key"})).to_request()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a security key needs a password");

        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token, "method": "security_key", "password": GOOD_PASSWORD})).to_request()).await;
        let (mut key, _ca) = SoftToken::new(false).unwrap();
        let reg = register(&mut key, &begin);
        let res = test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg, "credential_name": "病院支給キー 1"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let s = session_of(res).await;
        let sessions: Value = test::call_and_read_body_json(&app, with_session(test::TestRequest::get().uri("/api/v1/me/sessions"), &s)).await;
        assert_eq!(sessions["items"][0]["method"], "security_key+password");
        let creds: Value = test::call_and_read_body_json(&app, with_session(test::TestRequest::get().uri("/api/v1/me/credentials"), &s)).await;
        assert_eq!(creds["has_password"], true);
        assert_eq!(creds["items"][0]["kind"], "security_key");
        assert_eq!(creds["items"][0]["name"], "病院支給キー 1");
        let user_id = {
            let me: Value = test::call_and_read_body_json(&app, with_session(test::TestRequest::get().uri("/api/v1/me"), &s)).await;
            me["user"]["id"].as_str().unwrap().to_string()
        };
        // Only the argon2id hash is stored.
        assert_eq!(db.count_platform("SELECT count(*) FROM password_credentials").await, 1);
        assert_eq!(db.count_platform("SELECT count(*) FROM password_credentials WHERE hash LIKE '$argon2id$v=19$%'").await, 1);

        // Wrong password and unknown address get the same answer; no key challenge.
        let wrong = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "ichiro@sakura.example.jp", "password": "間違ったパスワードです12"})).to_request()).await;
        let unknown = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "nobody@sakura.example.jp", "password": "間違ったパスワードです12"})).to_request()).await;
        let (ws, wv) = problem(wrong).await;
        let (us, uv) = problem(unknown).await;
        assert_eq!((ws, us), (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST));
        assert_eq!(wv["detail"], uv["detail"]);
        assert_eq!(wv["type"], "urn:anshin:problem:sign-in-failed");

        // Password, then the key: a session.
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "ichiro@sakura.example.jp", "password": GOOD_PASSWORD})).to_request()).await;
        let cred = assert_with(&mut key, &begin);
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": cred})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(session_cookie(&res).is_some());
        // The key alone cannot finish a passkey sign-in ceremony, and the password ceremony is single-use.
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": cred})).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(session_cookie(&res).is_none());

        // Five wrong passwords lock it, even against the right one, with Retry-After.
        for _ in 0..5 {
            let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "ichiro@sakura.example.jp", "password": "間違ったパスワードです12"})).to_request()).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        }
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "ichiro@sakura.example.jp", "password": GOOD_PASSWORD})).to_request()).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().get(header::RETRY_AFTER).is_some());

        // The institution admin sees the lock and lifts it; staff may not look.
        let status: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{user_id}/password")).insert_header(("authorization", admin(&w))).to_request()).await;
        assert_eq!(status["failed_count"], 5);
        assert!(status["locked_until"].is_string(), "{status}");
        let staff = format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionStaff));
        let res = test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/accounts/{user_id}/password")).insert_header(("authorization", staff.clone())).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = test::call_service(&app, test::TestRequest::delete().uri(&format!("/api/v1/accounts/{user_id}/password-lock")).insert_header(("authorization", staff)).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        // Another provider's admin cannot find the account.
        let foreign = format!("Bearer {}", w.token("beta-cloud", Role::ProviderAdmin));
        let res = test::call_service(&app, test::TestRequest::delete().uri(&format!("/api/v1/accounts/{user_id}/password-lock")).insert_header(("authorization", foreign)).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let unlocked: Value = test::call_and_read_body_json(&app, test::TestRequest::delete().uri(&format!("/api/v1/accounts/{user_id}/password-lock")).insert_header(("authorization", admin(&w))).to_request()).await;
        assert_eq!(unlocked["failed_count"], 0);
        assert!(unlocked["locked_until"].is_null());
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "ichiro@sakura.example.jp", "password": GOOD_PASSWORD})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn sign_in_begin_does_not_reveal_accounts(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        // A passkey account, to compare a real challenge with the decoys.
        let token = invite!(&app, &w, "real@sakura.example.jp");
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin(), ccr).unwrap();
        let res = test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);

        let shape = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> = v["public_key"]["publicKey"].as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys.push(format!("{}", v["public_key"]["publicKey"]["allowCredentials"].as_array().unwrap().len()));
            keys
        };
        let real: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/sign-in/begin", json!({"email": "real@sakura.example.jp"})).to_request()).await;
        let d1: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/sign-in/begin", json!({"email": "nobody@sakura.example.jp"})).to_request()).await;
        let d2: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/sign-in/begin", json!({"email": "nobody@sakura.example.jp"})).to_request()).await;
        assert_eq!(shape(&real), shape(&d1));
        // Decoys are stable per address (as real credential lists are) but challenges are fresh.
        assert_eq!(d1["public_key"]["publicKey"]["allowCredentials"], d2["public_key"]["publicKey"]["allowCredentials"]);
        assert_ne!(d1["public_key"]["publicKey"]["challenge"], d2["public_key"]["publicKey"]["challenge"]);
        // Finishing a decoy and finishing a real ceremony with a forged assertion answer alike.
        let forged = json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key", "response": {"authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA"}, "extensions": {}});
        let (rs, v_real) = problem(test::call_service(&app, post("/api/v1/auth/sign-in/finish", json!({"ceremony_id": real["ceremony_id"], "credential": forged})).to_request()).await).await;
        let (ds, v_decoy) = problem(test::call_service(&app, post("/api/v1/auth/sign-in/finish", json!({"ceremony_id": d1["ceremony_id"], "credential": forged})).to_request()).await).await;
        assert_eq!((rs, ds), (StatusCode::BAD_REQUEST, StatusCode::BAD_REQUEST));
        assert_eq!(v_real["detail"], v_decoy["detail"]);
        assert_eq!(v_real["type"], "urn:anshin:problem:webauthn-failed");
    }

    async fn credentials_are_named_added_and_removed_after_step_up(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let token = invite!(&app, &w, "multi@sakura.example.jp");
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut phone = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = phone.do_registration(origin(), ccr).unwrap();
        let s = session_of(test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg, "credential_name": "私のスマホ"})).to_request()).await).await;
        let list = |s: &(String, String)| with_session(test::TestRequest::get().uri("/api/v1/me/credentials"), s);
        let creds: Value = test::call_and_read_body_json(&app, list(&s)).await;
        let passkey_id = creds["items"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(creds["has_password"], false);

        // The only passkey cannot go.
        let res = test::call_service(&app, with_session(test::TestRequest::delete().uri(&format!("/api/v1/me/credentials/{passkey_id}")), &s)).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);

        // A security key needs a password; adding one sets it.
        let (status, _) = problem(test::call_service(&app, with_session(post("/api/v1/me/credentials/begin", json!({"kind": "security_key"})), &s)).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let begin: Value = test::call_and_read_body_json(&app, with_session(post("/api/v1/me/credentials/begin", json!({"kind": "security_key", "password": GOOD_PASSWORD})), &s)).await;
        let excluded = begin["public_key"]["publicKey"]["excludeCredentials"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(excluded, 1, "the existing passkey is excluded");
        let (mut key, _) = SoftToken::new(false).unwrap();
        let reg = register(&mut key, &begin);
        let res = test::call_service(&app, with_session(post("/api/v1/me/credentials/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg, "name": "ナースステーションのキー"})), &s)).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let key_info: Value = test::read_body_json(res).await;
        assert_eq!(key_info["kind"], "security_key");
        // The same ceremony cannot register twice.
        let res = test::call_service(&app, with_session(post("/api/v1/me/credentials/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})), &s)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);

        // Rename, with validation.
        let res = test::call_service(&app, with_session(test::TestRequest::patch().uri(&format!("/api/v1/me/credentials/{passkey_id}")).set_json(json!({"name": "  "})), &s)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let renamed: Value = test::call_and_read_body_json(&app, with_session(test::TestRequest::patch().uri(&format!("/api/v1/me/credentials/{passkey_id}")).set_json(json!({"name": "古いスマホ"})), &s)).await;
        assert_eq!(renamed["name"], "古いスマホ");

        // Removal needs a fresh step-up: age it and the removal is refused.
        db.exec_platform("UPDATE sessions SET stepped_up_at = NULL").await;
        let (status, v) = problem(test::call_service(&app, with_session(test::TestRequest::delete().uri(&format!("/api/v1/me/credentials/{passkey_id}")), &s)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(v["type"], "urn:anshin:problem:step-up-required");
        // Step up with the passkey, then the passkey can go (key + password remain).
        let su: Value = test::call_and_read_body_json(&app, with_session(post("/api/v1/me/step-up/begin", json!({})), &s)).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(su["public_key"].clone()).unwrap();
        let proof = phone.do_authentication(origin(), rcr).unwrap();
        let res = test::call_service(&app, with_session(post("/api/v1/me/step-up/finish", json!({"ceremony_id": su["ceremony_id"], "credential": proof})), &s)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = test::call_service(&app, with_session(test::TestRequest::delete().uri(&format!("/api/v1/me/credentials/{passkey_id}")), &s)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let creds: Value = test::call_and_read_body_json(&app, list(&s)).await;
        assert_eq!(creds["items"].as_array().unwrap().len(), 1);
        // The last key cannot go; the removed passkey no longer signs in.
        let res = test::call_service(&app, with_session(test::TestRequest::delete().uri(&format!("/api/v1/me/credentials/{}", key_info["id"].as_str().unwrap())), &s)).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(db.count_platform("SELECT count(*) FROM webauthn_credentials WHERE kind = 'passkey' AND name = '古いスマホ'").await, 0);
        assert_eq!(db.count_platform("SELECT count(*) FROM webauthn_credentials WHERE kind = 'security_key'").await, 1);

        // Password change: reuse refused, then a new one works and the old one does not.
        let (status, v) = problem(test::call_service(&app, with_session(test::TestRequest::put().uri("/api/v1/me/password").set_json(json!({"new_password": GOOD_PASSWORD})), &s)).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["detail"].as_str().unwrap().contains("last 5"), "{v}");
        let res = test::call_service(&app, with_session(test::TestRequest::put().uri("/api/v1/me/password").set_json(json!({"new_password": "紫陽花が咲く梅雨の午後3時"})), &s)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "multi@sakura.example.jp", "password": GOOD_PASSWORD})).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "multi@sakura.example.jp", "password": "紫陽花が咲く梅雨の午後3時"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);

        // Another person's credential id is not found.
        let token2 = invite!(&app, &w, "other@sakura.example.jp");
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token2})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let reg = WebauthnAuthenticator::new(SoftPasskey::new(true)).do_registration(origin(), ccr).unwrap();
        let s2 = session_of(test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await).await;
        let res = test::call_service(&app, with_session(test::TestRequest::patch().uri(&format!("/api/v1/me/credentials/{}", key_info["id"].as_str().unwrap())).set_json(json!({"name": "乗っ取り"})), &s2)).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    async fn attestation_allow_list_admits_only_listed_key_models(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (mut issued, issued_ca) = SoftToken::new(false).unwrap();
        let (mut foreign, _) = SoftToken::new(false).unwrap();
        let pem = String::from_utf8(issued_ca.to_pem().unwrap()).unwrap();
        let aaguid = webauthn_authenticator_rs::softtoken::AAGUID.to_string();
        let policy = json!({"mode": "allow_list", "models": [{"aaguid": aaguid, "description": "病院支給キー", "ca_pem": pem}]});

        // Only admins set it; malformed policies are refused; every role can read it.
        let staff = format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionStaff));
        let res = test::call_service(&app, test::TestRequest::put().uri("/api/v1/attestation-policy").insert_header(("authorization", staff.clone())).set_json(&policy).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        for bad in [json!({"mode": "allow_list", "models": []}), json!({"mode": "allow_list", "models": [{"aaguid": aaguid, "description": "x", "ca_pem": "not a certificate"}]}), json!({"mode": "any", "models": [{"aaguid": aaguid, "description": "x", "ca_pem": pem}]})] {
            let res = test::call_service(&app, test::TestRequest::put().uri("/api/v1/attestation-policy").insert_header(("authorization", admin(&w))).set_json(&bad).to_request()).await;
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
        let set: Value = test::call_and_read_body_json(&app, test::TestRequest::put().uri("/api/v1/attestation-policy").insert_header(("authorization", admin(&w))).set_json(&policy).to_request()).await;
        assert_eq!(set["mode"], "allow_list");
        let read: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/attestation-policy").insert_header(("authorization", staff)).to_request()).await;
        assert_eq!(read["models"][0]["aaguid"], aaguid);
        // Another institution keeps accepting any authenticator.
        let other: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/attestation-policy").insert_header(("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionAdmin)))).to_request()).await;
        assert_eq!(other["mode"], "any");

        // Passkeys (no attestation) are refused for this institution.
        let token = invite!(&app, &w, "nurse@sakura.example.jp");
        let (status, v) = problem(test::call_service(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token})).to_request()).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(v["detail"].as_str().unwrap().contains("security keys it issued"), "{v}");
        // A key from another manufacturer CA is refused and nothing is created.
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token, "method": "security_key", "password": GOOD_PASSWORD})).to_request()).await;
        assert_eq!(begin["public_key"]["publicKey"]["attestation"], "direct");
        let reg = register(&mut foreign, &begin);
        let res = test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(session_cookie(&res).is_none());
        assert_eq!(anshin_tests::count_users_with_email(&db, "nurse@sakura.example.jp").await, 0);
        // The issued key is accepted and its model recorded.
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token, "method": "security_key", "password": GOOD_PASSWORD})).to_request()).await;
        let reg = register(&mut issued, &begin);
        let res = test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let s = session_of(res).await;
        let creds: Value = test::call_and_read_body_json(&app, with_session(test::TestRequest::get().uri("/api/v1/me/credentials"), &s)).await;
        assert_eq!(creds["items"][0]["aaguid"], aaguid);
    }

    async fn a_cloned_key_is_refused_by_its_counter(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let token = invite!(&app, &w, "clone@sakura.example.jp");
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token, "method": "security_key", "password": GOOD_PASSWORD})).to_request()).await;
        let (mut key, _) = SoftToken::new(false).unwrap();
        let reg = register(&mut key, &begin);
        let res = test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        // An attacker copies the key's secrets now.
        let mut copy = SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap();

        let sign_in = |k: &mut SoftToken, begin: &Value| json!({"ceremony_id": begin["ceremony_id"], "credential": assert_with(k, begin)});
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "clone@sakura.example.jp", "password": GOOD_PASSWORD})).to_request()).await;
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/finish", sign_in(&mut key, &begin)).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK, "the genuine key signs in");
        // The copy's counter is behind the genuine key's: refused, no session.
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/password-sign-in/begin", json!({"email": "clone@sakura.example.jp", "password": GOOD_PASSWORD})).to_request()).await;
        let res = test::call_service(&app, post("/api/v1/auth/password-sign-in/finish", sign_in(&mut copy, &begin)).to_request()).await;
        assert!(session_cookie(&res).is_none());
        let (status, v) = problem(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["detail"].as_str().unwrap().contains("counter went backwards"), "{v}");
    }

    async fn sessions_take_the_tenants_idle_timeout(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let res = test::call_service(&app, test::TestRequest::put().uri("/api/v1/identity-policy").insert_header(("authorization", admin(&w))).set_json(json!({"idle_timeout_secs": 120, "stale_after_days": 90, "disable_after_days": 30})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let token = invite!(&app, &w, "idle@sakura.example.jp");
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/enrollment/begin", json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin(), ccr).unwrap();
        let res = test::call_service(&app, post("/api/v1/auth/enrollment/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(db.count_platform("SELECT count(*) FROM sessions WHERE idle_timeout_secs = 120").await, 1);
        // A passkey sign-in's session takes it too (read with the ceremony, in one query).
        let begin: Value = test::call_and_read_body_json(&app, post("/api/v1/auth/sign-in/begin", json!({"email": "idle@sakura.example.jp"})).to_request()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let assertion = device.do_authentication(origin(), rcr).unwrap();
        let res = test::call_service(&app, post("/api/v1/auth/sign-in/finish", json!({"ceremony_id": begin["ceremony_id"], "credential": assertion})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(db.count_platform("SELECT count(*) FROM sessions WHERE idle_timeout_secs = 120").await, 2);
        // Three idle minutes end it (the default 15 would not).
        db.exec_platform(&format!("UPDATE sessions SET last_seen_at = '{}' WHERE idle_timeout_secs = 120", (chrono::Utc::now() - chrono::Duration::minutes(3)).format("%Y-%m-%d %H:%M:%S%:z"))).await;
        let s = session_of(res).await;
        let res = test::call_service(&app, with_session(test::TestRequest::get().uri("/api/v1/me"), &s)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}
