//! Machine clients (guideline 14.1.2) on both backends: admins register OAuth2 clients, clients
//! obtain short-lived access tokens at /oauth2/token with a secret (basic or post) or a signed
//! assertion (private_key_jwt), and those tokens act in the client's tenant with its role and
//! scopes until they expire or the client is revoked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{both_backends, Backend, TestDb, World};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};

const ORIGIN: &str = "http://localhost:8080";
const TOKEN_ENDPOINT: &str = "http://localhost:8080/oauth2/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn bearer(t: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {t}"))
}

fn basic(id: &str, secret: &str) -> (&'static str, String) {
    (
        "authorization",
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        ),
    )
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A P-256 key pair: (private PKCS#8 PEM, public SPKI PEM).
fn keypair() -> (String, String) {
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    (
        sk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        sk.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A client assertion signed with `private_pem`; `edit` changes the claims first.
fn assertion(private_pem: &str, client_id: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = json!({
        "iss": client_id, "sub": client_id, "aud": TOKEN_ENDPOINT,
        "iat": now(), "exp": now() + 120, "jti": uuid::Uuid::new_v4().to_string(),
    });
    edit(&mut claims);
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

macro_rules! call {
    ($app:expr, $req:expr) => {{
        let res = test::call_service($app, $req.to_request()).await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = test::read_body(res).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, headers, v)
    }};
}

/// Registers a client with the token of (`slug`, `role`); answers status and body.
macro_rules! register {
    ($app:expr, $w:expr, $slug:expr, $role:expr, $body:expr) => {{
        let (s, _, v) = call!(
            $app,
            test::TestRequest::post()
                .uri("/api/v1/clients")
                .insert_header(bearer($w.token($slug, $role)))
                .set_json($body)
        );
        (s, v)
    }};
}

/// A token request with `form` and optional HTTP Basic credentials.
macro_rules! token {
    ($app:expr, $form:expr) => {
        call!(
            $app,
            test::TestRequest::post()
                .uri("/oauth2/token")
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .set_payload($form)
        )
    };
    ($app:expr, $form:expr, $basic:expr) => {
        call!(
            $app,
            test::TestRequest::post()
                .uri("/oauth2/token")
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .insert_header($basic)
                .set_payload($form)
        )
    };
}

fn assert_oauth_error(
    status: StatusCode,
    headers: &header::HeaderMap,
    v: &Value,
    want_status: StatusCode,
    code: &str,
) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"], code, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{v}"
    );
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    if want_status == StatusCode::UNAUTHORIZED {
        assert!(
            headers.get(header::WWW_AUTHENTICATE).is_some(),
            "401 names the scheme"
        );
    }
}

fn slugs(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|t| t["slug"].as_str().unwrap().to_string())
        .collect();
    s.sort();
    s
}

both_backends! {
    async fn registration_is_for_admins_and_the_secret_is_shown_once(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let ok = json!({"name": "電子カルテ連携", "role": "provider_operator", "scopes": ["read", "write"], "auth_method": "client_secret"});

        // People and tokens without an admin role cannot register clients.
        for (slug, role) in [("alpha-cloud", Role::ProviderOperator), ("alpha-cloud", Role::Auditor), ("alpha-cloud", Role::ProviderMaintainer), ("alpha-clinic", Role::InstitutionStaff), ("alpha-clinic", Role::Auditor)] {
            let body = json!({"name": "x", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret"});
            let (s, v) = register!(&app, w, slug, role, &body);
            assert_eq!(s, StatusCode::FORBIDDEN, "{role}@{slug}: {v}");
        }

        let (s, _, created) = call!(&app, test::TestRequest::post().uri("/api/v1/clients").insert_header(bearer(w.token("alpha-cloud", Role::ProviderAdmin))).set_json(&ok));
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let client_id = created["client_id"].as_str().unwrap().to_string();
        let secret = created["client_secret"].as_str().unwrap().to_string();
        assert!(client_id.starts_with("anc_"), "{client_id}");
        assert!(secret.starts_with("ancs_") && secret.len() >= 48, "high-entropy secret");
        assert_eq!(created["tenant_id"], w.p1.id.to_string());
        assert_eq!(created["role"], "provider_operator");
        assert_eq!(created["scopes"], json!(["read", "write"]));
        assert_eq!(created["status"], "active");
        assert_eq!(created["token_endpoint"], TOKEN_ENDPOINT);

        // Bad registrations are 422 with a reason.
        for (body, why) in [
            (json!({"name": "x", "role": "provider_admin", "scopes": ["read"], "auth_method": "client_secret"}), "admin"),
            (json!({"name": "x", "role": "provider_maintainer", "scopes": ["read"], "auth_method": "client_secret"}), "maintainer"),
            (json!({"name": "x", "role": "institution_staff", "scopes": ["read"], "auth_method": "client_secret"}), "cannot belong"),
            (json!({"name": "x", "role": "root", "scopes": ["read"], "auth_method": "client_secret"}), "unknown variant `root`"),
            (json!({"name": "x", "role": "auditor", "scopes": ["admin"], "auth_method": "client_secret"}), "unknown scope"),
            (json!({"name": "x", "role": "auditor", "scopes": ["read", "write"], "auth_method": "client_secret"}), "read-only"),
            (json!({"name": "x", "role": "auditor", "scopes": [], "auth_method": "client_secret"}), "at least one scope"),
            (json!({"name": "  ", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret"}), "name"),
            (json!({"name": "x", "role": "auditor", "scopes": ["read"], "auth_method": "private_key_jwt"}), "public_key_pem"),
            (json!({"name": "x", "role": "auditor", "scopes": ["read"], "auth_method": "private_key_jwt", "public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}), "P-256"),
            (json!({"name": "x", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret", "public_key_pem": keypair().1}), "only for"),
            (json!({"name": "x", "role": "auditor", "scopes": ["read"], "auth_method": "password"}), "unknown variant `password`"),
        ] {
            let (s, v) = register!(&app, w, "alpha-cloud", Role::ProviderAdmin, &body);
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
            assert!(v["detail"].as_str().unwrap().contains(why), "{why}: {v}");
        }

        // An institution admin registers in the institution only.
        let (s, clinic) = register!(&app, w, "alpha-clinic", Role::InstitutionAdmin, &json!({"name": "受付端末連携", "role": "institution_staff", "scopes": ["read"], "auth_method": "client_secret"}));
        assert_eq!(s, StatusCode::CREATED, "{clinic}");
        assert_eq!(clinic["tenant_id"], w.c1.id.to_string());

        // Admins and auditors list their own tenant's clients; the secret is never shown again.
        for role in [Role::ProviderAdmin, Role::Auditor] {
            let (s, _, listed) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(w.token("alpha-cloud", role))));
            assert_eq!(s, StatusCode::OK);
            let items = listed["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "own tenant only: {listed}");
            assert_eq!(items[0]["client_id"], client_id.as_str());
            let text = listed.to_string();
            assert!(!text.contains(&secret), "secret shown again");
            assert!(items[0].get("client_secret").is_none() && !text.contains("secret_hash"), "{text}");
        }
        for (slug, role) in [("alpha-cloud", Role::ProviderOperator), ("alpha-clinic", Role::InstitutionStaff)] {
            let (s, _, v) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(w.token(slug, role))));
            assert_eq!(s, StatusCode::FORBIDDEN, "{role}: {v}");
        }
        let (_, _, theirs) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(w.token("beta-cloud", Role::ProviderAdmin))));
        assert!(theirs["items"].as_array().unwrap().is_empty(), "another provider sees nothing");
    }

    async fn client_secret_tokens_act_in_their_tenant_with_their_scope(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (_, rw) = register!(&app, w, "alpha-cloud", Role::ProviderAdmin, &json!({"name": "運用自動化", "role": "provider_operator", "scopes": ["read", "write"], "auth_method": "client_secret"}));
        let (rw_id, rw_secret) = (rw["client_id"].as_str().unwrap().to_string(), rw["client_secret"].as_str().unwrap().to_string());
        let (_, ro) = register!(&app, w, "alpha-clinic", Role::InstitutionAdmin, &json!({"name": "閲覧連携", "role": "institution_staff", "scopes": ["read"], "auth_method": "client_secret"}));
        let (ro_id, ro_secret) = (ro["client_id"].as_str().unwrap().to_string(), ro["client_secret"].as_str().unwrap().to_string());

        // client_secret_basic: every scope of the client by default.
        let (s, h, t) = token!(&app, form(&[("grant_type", "client_credentials")]), basic(&rw_id, &rw_secret));
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(t["token_type"], "Bearer");
        assert_eq!(t["expires_in"], 600);
        assert_eq!(t["scope"], "read write");
        let rw_token = t["access_token"].as_str().unwrap().to_string();
        assert_eq!(rw_token.split('.').count(), 3);

        // client_secret_post, asking for less.
        let (s, _, t) = token!(&app, form(&[("grant_type", "client_credentials"), ("scope", "read"), ("client_id", &rw_id), ("client_secret", &rw_secret)]));
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(t["scope"], "read");
        let rw_read_token = t["access_token"].as_str().unwrap().to_string();
        let (s, _, t) = token!(&app, form(&[("grant_type", "client_credentials"), ("client_id", &ro_id), ("client_secret", &ro_secret)]));
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(t["scope"], "read");
        let ro_token = t["access_token"].as_str().unwrap().to_string();

        // Refusals in RFC 6749 form.
        let cc = form(&[("grant_type", "client_credentials")]);
        let (s, h, v) = token!(&app, cc.clone(), basic(&rw_id, "ancs_wrong"));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(!v.to_string().contains(&rw_secret));
        let (s, h, v) = token!(&app, cc.clone(), basic(&ro_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        let (s, h, v) = token!(&app, cc.clone(), basic("anc_nobody", &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials"), ("client_id", &rw_id), ("client_secret", "nope")]));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        let (s, h, v) = token!(&app, cc.clone());
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        let (s, h, v) = token!(&app, form(&[("grant_type", "password"), ("username", "a"), ("password", "b")]), basic(&rw_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "unsupported_grant_type");
        let (s, h, v) = token!(&app, form(&[("scope", "read")]), basic(&rw_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_request");
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials"), ("scope", "write")]), basic(&ro_id, &ro_secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_scope");
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials"), ("scope", "read keys:admin")]), basic(&rw_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_scope");
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials"), ("client_id", &rw_id), ("client_secret", &rw_secret)]), basic(&rw_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_request");
        let (s, h, v) = token!(&app, "grant_type=client_credentials&grant_type=client_credentials", basic(&rw_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_request");
        let (s, h, v) = call!(&app, test::TestRequest::post().uri("/oauth2/token").insert_header(basic(&rw_id, &rw_secret)).set_json(json!({"grant_type": "client_credentials"})));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_request");

        // The access token acts in the client's tenant scope, with its role.
        let (s, _, v) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&ro_token)));
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(slugs(&v), vec!["alpha-clinic"], "an institution client sees only its own tenant");
        let (_, _, v) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&rw_token)));
        assert_eq!(slugs(&v), vec!["alpha-clinic", "alpha-cloud", "alpha-hospital"]);
        for (t, target) in [(&ro_token, &w.p1), (&rw_token, &w.p2), (&rw_token, &w.c2)] {
            let (s, _, _) = call!(&app, test::TestRequest::get().uri(&format!("/api/v1/tenants/{}", target.id)).insert_header(bearer(t)));
            assert_eq!(s, StatusCode::NOT_FOUND, "{}", target.slug);
        }

        // Writing needs the write scope, whatever the role allows.
        let patch = |t: &str| test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(bearer(t)).set_json(json!({"name": "あおば内科"}));
        let (s, h, v) = call!(&app, patch(&rw_read_token));
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["type"], "urn:anshin:problem:insufficient-scope");
        assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/problem+json");
        let (s, _, v) = call!(&app, patch(&ro_token));
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, _, v) = call!(&app, patch(&rw_token));
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["name"], "あおば内科");
        // Clients never manage clients, even with write.
        let (s, _, _) = call!(&app, test::TestRequest::post().uri("/api/v1/clients").insert_header(bearer(&rw_token)).set_json(json!({"name": "x", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret"})));
        assert_eq!(s, StatusCode::FORBIDDEN);

        // Tampered, foreign or expired tokens are 401 like an unknown API token.
        let parts: Vec<&str> = rw_token.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], ORIGIN);
        assert_eq!(claims["aud"], "anshin-api");
        assert_eq!(claims["sub"], rw_id.as_str());
        assert_eq!(claims["tenant"], w.p1.id.to_string());
        assert_eq!(claims["role"], "provider_operator");
        assert_eq!(claims["scope"], "read write");
        assert!(claims["jti"].as_str().is_some() && claims["iat"].as_i64().is_some());
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
        claims["tenant"] = json!(w.p2.id);
        let forged = format!("{}.{}.{}", parts[0], base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
        let mut flipped = rw_token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        for t in [forged, String::from_utf8(flipped).unwrap(), "a.b.c".to_string()] {
            let (s, h, v) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&t)));
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
            assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/problem+json");
        }
        // Signed with Anshin's own key (from the key service) but expired, or for another
        // audience: refused; the same claims, current, are accepted (so the signer is right).
        let stored = db.state().await.keys.platform_secret(anshin_server::signing_keys::TOKEN_SIGNING_KEY, || panic!("created at start")).await.unwrap();
        let key_pem = String::from_utf8(stored.to_vec()).unwrap();
        let (_, _, jwks) = call!(&app, test::TestRequest::get().uri("/.well-known/jwks.json"));
        let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
        let sign = |exp: i64, aud: &str| {
            let mut h = Header::new(Algorithm::ES256);
            h.typ = Some("at+jwt".into());
            h.kid = Some(kid.clone());
            let c = json!({"iss": ORIGIN, "sub": rw_id, "aud": aud, "exp": exp, "iat": now() - 700, "jti": uuid::Uuid::new_v4().to_string(),
                           "tenant": w.p1.id, "role": "provider_operator", "scope": "read"});
            jsonwebtoken::encode(&h, &c, &EncodingKey::from_ec_pem(key_pem.as_bytes()).unwrap()).unwrap()
        };
        for (t, want) in [(sign(now() - 60, "anshin-api"), StatusCode::UNAUTHORIZED), (sign(now() + 60, "another-api"), StatusCode::UNAUTHORIZED), (sign(now() + 60, "anshin-api"), StatusCode::OK)] {
            let (s, _, v) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&t)));
            assert_eq!(s, want, "{v}");
        }

        // The published key set verifies the issued token offline.
        let key = DecodingKey::from_jwk(&serde_json::from_value(jwks["keys"][0].clone()).unwrap()).unwrap();
        let mut val = Validation::new(Algorithm::ES256);
        val.set_audience(&["anshin-api"]);
        val.set_issuer(&[ORIGIN]);
        let verified = jsonwebtoken::decode::<Value>(&rw_token, &key, &val).unwrap();
        assert_eq!(verified.claims["sub"], rw_id.as_str());
        assert_eq!(verified.header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert!(jwks["keys"][0].get("d").is_none());

        // The list shows when the client was last used.
        let (_, _, listed) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(w.token("alpha-cloud", Role::ProviderAdmin))));
        assert!(listed["items"][0]["last_used_at"].is_string(), "{listed}");

        // Revocation: scope first (404 elsewhere), then role (403), then the client is dead.
        let (s, _, _) = call!(&app, test::TestRequest::delete().uri(&format!("/api/v1/clients/{rw_id}")).insert_header(bearer(w.token("alpha-clinic", Role::InstitutionAdmin))));
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = call!(&app, test::TestRequest::delete().uri(&format!("/api/v1/clients/{rw_id}")).insert_header(bearer(w.token("alpha-cloud", Role::ProviderOperator))));
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, v) = call!(&app, test::TestRequest::delete().uri(&format!("/api/v1/clients/{rw_id}")).insert_header(bearer(w.token("alpha-cloud", Role::ProviderAdmin))));
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["status"], "revoked");
        assert!(v["revoked_at"].is_string());
        let (s, _, _) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&rw_token)));
        assert_eq!(s, StatusCode::UNAUTHORIZED, "a revoked client's token stops working");
        let (s, h, v) = token!(&app, cc.clone(), basic(&rw_id, &rw_secret));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        // By its UUID, a second time: still revoked, never deleted.
        let uuid = rw["id"].as_str().unwrap();
        let (s, _, v) = call!(&app, test::TestRequest::delete().uri(&format!("/api/v1/clients/{uuid}")).insert_header(bearer(w.token("alpha-cloud", Role::ProviderAdmin))));
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["status"], "revoked");
        let (_, _, listed) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(w.token("alpha-cloud", Role::ProviderAdmin))));
        assert_eq!(listed["items"][0]["status"], "revoked");
        // The other client is unaffected.
        let (s, _, _) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&ro_token)));
        assert_eq!(s, StatusCode::OK);
    }

    async fn private_key_jwt_assertions_are_verified_and_single_use(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (private_pem, public_pem) = keypair();
        let (s, c) = register!(&app, w, "alpha-clinic", Role::InstitutionAdmin, &json!({"name": "鍵取得エージェント", "role": "auditor", "scopes": ["read"], "auth_method": "private_key_jwt", "public_key_pem": public_pem}));
        assert_eq!(s, StatusCode::CREATED, "{c}");
        assert!(c.get("client_secret").is_none(), "no secret for key-based clients");
        assert_eq!(c["auth_method"], "private_key_jwt");
        assert_eq!(c["assertion_alg"], "ES256");
        let id = c["client_id"].as_str().unwrap().to_string();
        let req = |a: &str| form(&[("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER), ("client_assertion", a)]);

        let a = assertion(&private_pem, &id, |_| {});
        let (s, _, t) = token!(&app, req(&a));
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(t["scope"], "read");
        let (s, _, v) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(t["access_token"].as_str().unwrap())));
        assert_eq!(s, StatusCode::OK);
        assert_eq!(slugs(&v), vec!["alpha-clinic"]);

        // The same assertion again: replay.
        let (s, h, v) = token!(&app, req(&a));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(v["error_description"].as_str().unwrap().contains("already used"), "{v}");

        // With client_id in the body (allowed when it matches).
        let (s, _, t) = token!(&app, form(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_assertion_type", JWT_BEARER), ("client_assertion", &assertion(&private_pem, &id, |_| {}))]));
        assert_eq!(s, StatusCode::OK, "{t}");

        let (other_private, _) = keypair();
        for (bad, why) in [
            (assertion(&private_pem, &id, |c| c["aud"] = json!("http://localhost:8080")), "aud"),
            (assertion(&private_pem, &id, |c| c["aud"] = json!(["https://evil.example", "http://localhost:8080/oauth2"])), "aud"),
            (assertion(&private_pem, &id, |c| { c["exp"] = json!(now() - 120); c["iat"] = json!(now() - 300); }), "expired"),
            (assertion(&private_pem, &id, |c| c["exp"] = json!(now() + 3600)), "300 seconds"),
            (assertion(&private_pem, &id, |c| { c.as_object_mut().unwrap().remove("jti"); }), "jti"),
            (assertion(&private_pem, &id, |c| { c.as_object_mut().unwrap().remove("exp"); }), "exp"),
            (assertion(&private_pem, &id, |c| c["sub"] = json!("anc_someone")), "sub"),
            (assertion(&other_private, &id, |_| {}), "signature"),
            (assertion(&private_pem, "anc_unknown", |_| {}), "authentication failed"),
            ("not.a.jwt".to_string(), "well-formed"),
        ] {
            let (s, h, v) = token!(&app, req(&bad));
            assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
            assert!(v["error_description"].as_str().unwrap().contains(why), "{why}: {v}");
        }
        // Mismatched client_id, a wrong assertion type, or a secret for a key-based client.
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials"), ("client_id", "anc_other"), ("client_assertion_type", JWT_BEARER), ("client_assertion", &assertion(&private_pem, &id, |_| {}))]));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials"), ("client_assertion_type", "urn:example:saml"), ("client_assertion", &assertion(&private_pem, &id, |_| {}))]));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "invalid_request");
        let (s, h, v) = token!(&app, form(&[("grant_type", "client_credentials")]), basic(&id, "ancs_guess"));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");

        // A secret-based client cannot authenticate with an assertion.
        let (_, sc) = register!(&app, w, "alpha-clinic", Role::InstitutionAdmin, &json!({"name": "秘密鍵なし", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret"}));
        let sc_id = sc["client_id"].as_str().unwrap();
        let (s, h, v) = token!(&app, req(&assertion(&private_pem, sc_id, |_| {})));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");

        // Revoked: the key no longer gets tokens.
        let (s, _, _) = call!(&app, test::TestRequest::delete().uri(&format!("/api/v1/clients/{id}")).insert_header(bearer(w.token("alpha-clinic", Role::InstitutionAdmin))));
        assert_eq!(s, StatusCode::OK);
        let (s, h, v) = token!(&app, req(&assertion(&private_pem, &id, |_| {})));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
    }

    async fn another_tenant_s_clients_cannot_be_seen_or_revoked(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (_, foreign) = register!(&app, w, "beta-clinic", Role::InstitutionAdmin, &json!({"name": "みどり連携", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret"}));
        let foreign_refs = [foreign["id"].as_str().unwrap().to_string(), foreign["client_id"].as_str().unwrap().to_string()];
        let mut probes = 0;
        for ((slug, role), token) in &w.tokens {
            if slug == "beta-clinic" || slug == "beta-cloud" {
                continue;
            }
            for r in &foreign_refs {
                let (s, _, v) = call!(&app, test::TestRequest::delete().uri(&format!("/api/v1/clients/{r}")).insert_header(bearer(token)));
                assert_eq!(s, StatusCode::NOT_FOUND, "{role}@{slug} DELETE {r}: {v}");
                probes += 1;
            }
            let (s, _, v) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(token)));
            assert!(matches!(s.as_u16(), 200 | 403), "{role}@{slug}: {v}");
            assert!(!v.to_string().contains(&foreign_refs[1]), "{role}@{slug} listed a foreign client");
        }
        assert!(probes >= 20, "{probes}");
        let (_, _, listed) = call!(&app, test::TestRequest::get().uri("/api/v1/clients").insert_header(bearer(w.token("beta-clinic", Role::Auditor))));
        assert_eq!(listed["items"][0]["status"], "active", "nothing was revoked");
    }

    async fn a_suspended_tenant_s_clients_stop(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (_, c) = register!(&app, w, "alpha-clinic", Role::InstitutionAdmin, &json!({"name": "連携", "role": "institution_staff", "scopes": ["read"], "auth_method": "client_secret"}));
        let (id, secret) = (c["client_id"].as_str().unwrap().to_string(), c["client_secret"].as_str().unwrap().to_string());
        let cc = form(&[("grant_type", "client_credentials")]);
        let (s, _, t) = token!(&app, cc.clone(), basic(&id, &secret));
        assert_eq!(s, StatusCode::OK);
        let at = t["access_token"].as_str().unwrap().to_string();
        let (s, _, _) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&at)));
        assert_eq!(s, StatusCode::OK);
        // Suspending the provider stops its institutions' clients too.
        db.tenancy().admin_update("alpha-cloud", anshin_tenancy::UpdateTenant { status: Some(anshin_tenancy::TenantStatus::Suspended), ..Default::default() }).await.unwrap();
        // Client state is cached for at most the authentication cache time (1 s).
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (s, _, _) = call!(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(bearer(&at)));
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, h, v) = token!(&app, cc, basic(&id, &secret));
        assert_oauth_error(s, &h, &v, StatusCode::BAD_REQUEST, "unauthorized_client");
    }

    async fn used_jtis_are_pruned_once_their_assertions_expired(db) {
        use anshin_identity::entity::client_assertion_jti as jti;
        use anshin_identity::jobs::{prune_client_assertion_jtis, StaleAccountSweep, JTI_KEEP_AFTER_EXPIRY_SECS, STALE_ACCOUNT_SWEEP};
        use anshin_platform::jobs::{JobQueue, JobStatus, NewJob, Worker, WorkerOptions};
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let (private_pem, public_pem) = keypair();
        let (s, c) = register!(&app, w, "alpha-clinic", Role::InstitutionAdmin, &json!({"name": "鍵取得エージェント", "role": "auditor", "scopes": ["read"], "auth_method": "private_key_jwt", "public_key_pem": public_pem}));
        assert_eq!(s, StatusCode::CREATED, "{c}");
        let id = c["client_id"].as_str().unwrap().to_string();
        let req = |a: &str| form(&[("grant_type", "client_credentials"), ("client_assertion_type", JWT_BEARER), ("client_assertion", a)]);
        let mut used = Vec::new();
        for name in ["long-expired", "just-expired", "live"] {
            let a = assertion(&private_pem, &id, |c| c["jti"] = json!(name));
            let (s, _, t) = token!(&app, req(&a));
            assert_eq!(s, StatusCode::OK, "{t}");
            used.push(a);
        }
        // Move the first two assertions' expiry into the past: one long ago, one still within
        // the leeway the token endpoint allows on exp.
        let set_expiry = |name: &'static str, at: chrono::DateTime<chrono::Utc>| {
            let db = &db;
            async move {
                let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
                let n = jti::Entity::update_many().col_expr(jti::Column::ExpiresAt, sea_orm::sea_query::Expr::value(at)).filter(jti::Column::Jti.eq(name)).exec(&tx).await.unwrap().rows_affected;
                tx.commit().await.unwrap();
                assert_eq!(n, 1, "{name}");
            }
        };
        let now = chrono::Utc::now();
        set_expiry("long-expired", now - chrono::Duration::hours(2)).await;
        set_expiry("just-expired", now - chrono::Duration::seconds(JTI_KEEP_AFTER_EXPIRY_SECS / 2)).await;
        assert_eq!(db.count_platform("SELECT count(*) FROM client_assertion_jtis").await, 3);

        // The hourly identity job, through the queue with the real handler, prunes.
        JobQueue::enqueue(&db.app, NewJob::new(STALE_ACCOUNT_SWEEP, json!({}))).await.unwrap();
        let worker = Worker::new(db.app.clone(), WorkerOptions::default()).register(StaleAccountSweep);
        assert!(worker.run_one().await.unwrap(), "the job ran");
        let jobs = JobQueue::new(db.app.clone()).list_by_kind(STALE_ACCOUNT_SWEEP).await.unwrap();
        assert_eq!(jobs[0].status, JobStatus::Succeeded, "{:?}", jobs[0]);
        let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
        let mut left: Vec<String> = jti::Entity::find().all(&tx).await.unwrap().into_iter().map(|j| j.jti).collect();
        tx.commit().await.unwrap();
        left.sort();
        assert_eq!(left, vec!["just-expired", "live"]);
        // A kept jti still refuses its replay; pruning again finds nothing more.
        let (s, h, v) = token!(&app, req(&used[2]));
        assert_oauth_error(s, &h, &v, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(v["error_description"].as_str().unwrap().contains("already used"), "{v}");
        assert_eq!(prune_client_assertion_jtis(&db.app, chrono::Utc::now()).await.unwrap(), 0);
        // Once the leeway has passed for the other one too, it goes.
        let later = chrono::Utc::now() + chrono::Duration::seconds(JTI_KEEP_AFTER_EXPIRY_SECS);
        assert_eq!(prune_client_assertion_jtis(&db.app, later).await.unwrap(), 1);
    }
}

/// Wall 2: on PostgreSQL, a tenant transaction sees only its own clients even unfiltered.
#[actix_web::test]
async fn client_rows_are_isolated_by_rls() {
    use anshin_identity::entity::{api_client, client_assertion_jti};
    use sea_orm::{EntityTrait, TransactionTrait};
    let db = TestDb::new(Backend::Postgres).await;
    let w = World::build(&db).await;
    let app = test::init_service(db.app().await).await;
    let (private_pem, public_pem) = keypair();
    for (slug, role) in [
        ("alpha-clinic", Role::InstitutionAdmin),
        ("beta-clinic", Role::InstitutionAdmin),
    ] {
        let (s, c) = register!(
            &app,
            w,
            slug,
            role,
            &json!({"name": "連携", "role": "auditor", "scopes": ["read"], "auth_method": "private_key_jwt", "public_key_pem": public_pem})
        );
        assert_eq!(s, StatusCode::CREATED);
        let id = c["client_id"].as_str().unwrap();
        let (s, _, _) = token!(
            &app,
            form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &assertion(&private_pem, id, |_| {}))
            ])
        );
        assert_eq!(s, StatusCode::OK);
    }
    let tx = anshin_platform::db::begin_tenant_tx(&db.app, w.c2.id)
        .await
        .unwrap();
    let clients = api_client::Entity::find().all(&tx).await.unwrap();
    let jtis = client_assertion_jti::Entity::find().all(&tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(clients.len(), 1);
    assert!(clients.iter().all(|c| c.tenant_id == w.c2.id));
    assert_eq!(jtis.len(), 1);
    assert!(jtis.iter().all(|j| j.tenant_id == w.c2.id));
    // Outside any tenant or platform scope the application role sees nothing at all.
    let tx = db.app.begin().await.unwrap();
    assert!(api_client::Entity::find()
        .all(&tx)
        .await
        .unwrap()
        .is_empty());
    tx.commit().await.unwrap();
}

/// The token endpoint is rate-limited per client address like sign-in (guessing secrets).
#[actix_web::test]
async fn the_token_endpoint_is_rate_limited() {
    let mut db = TestDb::new(Backend::Sqlite).await;
    db.config.http.auth_rate_per_minute = 1;
    db.config.http.auth_rate_burst = 2;
    let app = test::init_service(db.app().await).await;
    let cc = form(&[("grant_type", "client_credentials")]);
    for _ in 0..2 {
        let (s, _, v) = token!(&app, cc.clone(), basic("anc_guess", "ancs_guess"));
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    let (s, h, v) = token!(&app, cc, basic("anc_guess", "ancs_guess"));
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(h.get(header::RETRY_AFTER).is_some());
    // The API itself is not limited.
    let (s, _, _) = call!(&app, test::TestRequest::get().uri("/.well-known/jwks.json"));
    assert_eq!(s, StatusCode::OK);
}
