//! Sign-in with an organisation's OpenID Provider — a real node `oidc-provider` — on both
//! backends: multi-factor `amr`, an accepted `acr`, the passkey step-up when neither proves two
//! factors, and bad state, replay, bad nonce, wrong issuer and foreign domains.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::test;
use anshin_identity::{IdentityService, ProviderSettings};
use anshin_platform::Role;
use anshin_tests::{both_backends, free_port, wait_for_port, TestDb, World};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

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

fn start_provider(secret: &str, issuer_override: Option<&str>) -> Provider {
    start_provider_on(free_port(), secret, issuer_override, false)
}

/// `fresh_key`: the provider signs with a new key each start (a key rotation).
fn start_provider_on(
    port: u16,
    secret: &str,
    issuer_override: Option<&str>,
    fresh_key: bool,
) -> Provider {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/node");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/oidc-provider")
            .exists(),
        "run `npm ci` in tests/node (./infra/test.sh does)"
    );
    let mut c = Command::new("node");
    c.current_dir(dir)
        .arg("oidc_provider.mjs")
        .env("PORT", port.to_string())
        .env("CLIENT_ID", "anshin-hikari")
        .env("CLIENT_SECRET", secret)
        .env("REDIRECT_URI", CALLBACK)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(i) = issuer_override {
        c.env("ISSUER", i.replace("{port}", &port.to_string()));
    }
    if fresh_key {
        c.env("FRESH_SIGNING_KEY", "1");
    }
    let child = c.spawn().expect("node runs the OpenID Provider");
    assert!(wait_for_port(port, 30), "oidc-provider did not start");
    Provider {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Plays the browser at the provider: follows redirects (keeping its cookies) from the
/// authorization URL until the provider sends the browser back to Anshin's callback.
async fn at_provider(authorize_url: &str) -> String {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut url = reqwest::Url::parse(authorize_url).unwrap();
    for _ in 0..10 {
        let res = client.get(url.clone()).send().await.unwrap();
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let Some(location) = location else {
            panic!(
                "provider answered {status} without a redirect: {}",
                res.text().await.unwrap_or_default()
            );
        };
        if location.starts_with(CALLBACK) {
            return location
                .trim_start_matches("http://localhost:8080")
                .to_string();
        }
        url = url.join(&location).unwrap();
    }
    panic!("too many redirects at the provider");
}

fn settings(issuer: &str) -> ProviderSettings {
    ProviderSettings {
        issuer: issuer.into(),
        client_id: "anshin-hikari".into(),
        client_secret: Some("provider-shared-secret-0123456789".into()),
        allowed_domains: vec!["hikari.example.jp".into()],
        default_role: Role::InstitutionStaff,
        jit_provisioning: true,
        accepted_acr: vec!["urn:hikari:loa:3".into()],
    }
}

async fn admin_of(db: &TestDb, w: &World, slug: &str) -> anshin_platform::Principal {
    db.tokens()
        .authenticate(w.token(slug, Role::InstitutionAdmin))
        .await
        .unwrap()
        .unwrap()
}

fn identity(db: &TestDb) -> IdentityService {
    anshin_tests::identity_service(db, "http://localhost:8080")
}

fn location<B>(res: &actix_web::dev::ServiceResponse<B>) -> String {
    res.headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn cookie_of<B>(res: &actix_web::dev::ServiceResponse<B>) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("anshin_session=")?
                .split(';')
                .next()
                .map(String::from)
        })
        .filter(|v| !v.is_empty())
}

both_backends! {
    async fn a_provider_rotating_its_signing_key_is_followed(db) {
        let w = World::build(&db).await;
        let port = free_port();
        let secret = "provider-shared-secret-0123456789";
        let first = start_provider_on(port, secret, None, true);
        let id = identity(&db);
        id.set_identity_provider(&admin_of(&db, &w, "alpha-hospital").await, settings(&first.base)).await.unwrap();
        let app = test::init_service(db.app().await).await;
        let sign_in = || async {
            let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=alpha-hospital&login_hint=mfa@hikari.example.jp").to_request()).await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER);
            let callback = at_provider(&location(&res)).await;
            test::call_service(&app, test::TestRequest::get().uri(&callback).to_request()).await
        };
        let res = sign_in().await;
        assert_eq!(location(&res), "/portal");
        assert!(cookie_of(&res).is_some());

        // The provider restarts with a new signing key. Anshin still holds the old key set
        // (cached documents), finds no key for the new token, fetches the documents again and
        // accepts it.
        drop(first);
        let _second = start_provider_on(port, secret, None, true);
        let res = sign_in().await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{:?}", test::read_body(res).await);
        assert_eq!(location(&res), "/portal");
        assert!(cookie_of(&res).is_some());
    }

    async fn organisation_sign_in_with_and_without_multi_factor(db) {
        let w = World::build(&db).await;
        let provider = start_provider("provider-shared-secret-0123456789", None);
        let id = identity(&db);
        id.set_identity_provider(&admin_of(&db, &w, "alpha-hospital").await, settings(&provider.base)).await.unwrap();
        let app = test::init_service(db.app().await).await;

        // The client secret is stored sealed, never as given.
        let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
        let rows = {
            use sea_orm::EntityTrait;
            anshin_identity::entity::identity_provider::Entity::find().all(&tx).await.unwrap()
        };
        tx.commit().await.unwrap();
        assert!(!rows[0].client_secret_sealed.contains("provider-shared-secret"));

        let start = |hint: &str| test::TestRequest::get().uri(&format!("/auth/oidc/start?org=alpha-hospital&login_hint={hint}")).to_request();

        // amr shows several factors: signed in at once, account created just in time.
        let res = test::call_service(&app, start("mfa@hikari.example.jp")).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let authorize = location(&res);
        assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("nonce=") && authorize.contains("state="), "{authorize}");
        let callback = at_provider(&authorize).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{:?}", test::read_body(res).await);
        assert_eq!(location(&res), "/portal");
        let cookie = cookie_of(&res).expect("a session");
        let me: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/me").insert_header(("cookie", format!("anshin_session={cookie}"))).to_request()).await;
        assert_eq!(me["user"]["email"], "mfa@hikari.example.jp");
        assert_eq!(me["user"]["role"], "institution_staff");
        assert_eq!(me["user"]["display_name"], "多要素 花子");

        // The same callback again (replayed code and state): refused.
        let res = test::call_service(&app, test::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(cookie_of(&res).is_none());

        // Only a password, but an acr the tenant accepts: signed in.
        let res = test::call_service(&app, start("acr@hikari.example.jp")).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(&at_provider(&location(&res)).await).to_request()).await;
        assert_eq!(location(&res), "/portal");
        assert!(cookie_of(&res).is_some());

        // A person of another email domain: refused.
        let res = test::call_service(&app, start("mfa@other.example.com")).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(&at_provider(&location(&res)).await).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(cookie_of(&res).is_none());

        // Only a password and no passkey to add a factor: refused with a way forward.
        let res = test::call_service(&app, start("pwd@hikari.example.jp")).await;
        let res = test::call_service(&app, test::TestRequest::get().uri(&at_provider(&location(&res)).await).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let v: Value = test::read_body_json(res).await;
        assert!(v["detail"].as_str().unwrap().contains("second factor"), "{v}");
    }

    async fn single_factor_sign_in_completes_with_a_passkey_step_up(db) {
        let w = World::build(&db).await;
        let provider = start_provider("provider-shared-secret-0123456789", None);
        let id = identity(&db);
        let admin = admin_of(&db, &w, "alpha-hospital").await;
        let mut s = settings(&provider.base);
        s.jit_provisioning = false;
        id.set_identity_provider(&admin, s).await.unwrap();
        let app = test::init_service(db.app().await).await;
        let origin = Url::parse("http://localhost:8080").unwrap();

        // The person was invited and registered a passkey first.
        let inv = id.invite(&admin, "pwd@hikari.example.jp", "単要素 次郎", Role::InstitutionStaff).await.unwrap();
        let token = inv.enrollment_url.as_deref().unwrap().split("#token=").nth(1).unwrap();
        let (ceremony, ccr) = id.enroll_begin(token, anshin_identity::EnrollMethod::Passkey).await.unwrap();
        let ccr: CreationChallengeResponse = serde_json::from_value(serde_json::to_value(ccr).unwrap()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin.clone(), ccr).unwrap();
        id.enroll_finish(ceremony, &serde_json::from_value(serde_json::to_value(reg).unwrap()).unwrap(), None, Default::default()).await.unwrap();

        // Without JIT, someone never invited cannot get in.
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=alpha-hospital&login_hint=mfa@hikari.example.jp").to_request()).await;
        let loc = res.headers().get("location").unwrap().to_str().unwrap().to_string();
        let res = test::call_service(&app, test::TestRequest::get().uri(&at_provider(&loc).await).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        // Password-only at the provider → step-up.
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=alpha-hospital&login_hint=pwd@hikari.example.jp").to_request()).await;
        let loc = res.headers().get("location").unwrap().to_str().unwrap().to_string();
        let res = test::call_service(&app, test::TestRequest::get().uri(&at_provider(&loc).await).to_request()).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(cookie_of(&res).is_none(), "no session before the step-up");
        let to = res.headers().get("location").unwrap().to_str().unwrap().to_string();
        let flow = to.strip_prefix("/signin/step-up#flow=").unwrap_or_else(|| panic!("{to}")).to_string();
        let begin: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/auth/oidc/step-up/begin").set_json(json!({"flow_id": flow})).to_request()).await;
        let rcr: RequestChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let assertion = device.do_authentication(origin, rcr).unwrap();
        let finish = json!({"flow_id": flow, "ceremony_id": begin["ceremony_id"], "credential": assertion});
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/oidc/step-up/finish").set_json(&finish).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(cookie_of(&res).is_some());
        // The step-up cannot be used twice.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/oidc/step-up/begin").set_json(json!({"flow_id": flow})).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    async fn forged_and_mixed_up_responses_are_refused(db) {
        let w = World::build(&db).await;
        let provider = start_provider("provider-shared-secret-0123456789", None);
        let id = identity(&db);
        id.set_identity_provider(&admin_of(&db, &w, "alpha-hospital").await, settings(&provider.base)).await.unwrap();
        let app = test::init_service(db.app().await).await;

        // A state this server never issued.
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/callback?state=forged&code=abc").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let v: Value = test::read_body_json(res).await;
        assert_eq!(v["type"], "urn:anshin:problem:federation-failed");
        assert!(v["detail"].as_str().unwrap().contains("state"), "{v}");

        // An ID token carrying another nonce than the one this sign-in sent.
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=alpha-hospital&login_hint=mfa@hikari.example.jp").to_request()).await;
        let loc = res.headers().get("location").unwrap().to_str().unwrap().to_string();
        let mut url = reqwest::Url::parse(&loc).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| { let nonce = k == "nonce"; (k.into_owned(), if nonce { "injected-nonce".into() } else { v.into_owned() }) }).collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let res = test::call_service(&app, test::TestRequest::get().uri(&at_provider(url.as_str()).await).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(cookie_of(&res).is_none());
        let v: Value = test::read_body_json(res).await;
        assert!(v["detail"].as_str().unwrap().contains("ID token"), "{v}");

        // The provider's own error (the person cancelled).
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/callback?error=access_denied&error_description=cancelled").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);

        // A provider whose discovery document names another issuer (mix-up): refused up front.
        let liar = start_provider("provider-shared-secret-0123456789", Some("http://localhost:{port}"));
        id.set_identity_provider(&admin_of(&db, &w, "beta-clinic").await, ProviderSettings { allowed_domains: vec!["midori.example.jp".into()], ..settings(&liar.base) }).await.unwrap();
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=beta-clinic").to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);

        // An organisation without a provider, and settings only admins may change.
        let res = test::call_service(&app, test::TestRequest::get().uri("/auth/oidc/start?org=alpha-clinic").to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let staff = db.tokens().authenticate(w.token("alpha-clinic", Role::InstitutionStaff)).await.unwrap().unwrap();
        assert!(id.set_identity_provider(&staff, settings(&provider.base)).await.is_err());
        let admin = admin_of(&db, &w, "alpha-clinic").await;
        assert!(id.set_identity_provider(&admin, settings("http://login.example.jp")).await.is_err(), "plain http only on loopback");
        assert!(id.set_identity_provider(&admin, ProviderSettings { client_secret: None, ..settings(&provider.base) }).await.is_err(), "a first setting needs the secret");
    }
}
