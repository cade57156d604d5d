//! The key service across services, through its HTTP API, on SQLite and PostgreSQL: a KEK per
//! tenant from every creation path, key status in scope, the data plane's data keys and transit
//! encryption (audited, without key material), refusals, rotation with the durable re-wrap job,
//! crypto-erase, disabled keys, and row-level security of the key tables.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::header;
use actix_web::test;
use anshin_audit::Actor;
use anshin_keys::{KeyError, KeyService, KeyStatus};
use anshin_platform::db::{begin_platform_tx, begin_tenant_tx};
use anshin_platform::jobs::{JobQueue, JobStatus, Worker, WorkerOptions};
use anshin_platform::Role;
use anshin_tests::lit;
use anshin_tests::{anshin_bin, bearer, both_backends, Backend, TestDb, World};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use uuid::Uuid;

type Auth = (&'static str, String);

/// The in-process application, whatever its concrete service type.
trait App:
    actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<Self::Body>,
    Error = actix_web::Error,
>
{
    type Body: actix_web::body::MessageBody;
}

impl<S, B> App for S
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    type Body = B;
}

#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    cache_control: String,
    body: Value,
    raw: String,
}

async fn send<A: App>(app: &A, req: actix_http::Request) -> Resp {
    let res = test::call_service(app, req).await;
    let status = res.status().as_u16();
    let h = |n: header::HeaderName| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = h(header::CONTENT_TYPE);
    let cache_control = h(header::CACHE_CONTROL);
    let bytes = test::read_body(res).await;
    let raw = String::from_utf8_lossy(&bytes).to_string();
    Resp {
        status,
        content_type,
        cache_control,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        raw,
    }
}

async fn post<A: App>(app: &A, path: &str, auth: &Auth, body: Value) -> Resp {
    send(
        app,
        test::TestRequest::post()
            .uri(path)
            .insert_header(auth.clone())
            .set_json(body)
            .to_request(),
    )
    .await
}

async fn get<A: App>(app: &A, path: &str, auth: &Auth) -> Resp {
    send(
        app,
        test::TestRequest::get()
            .uri(path)
            .insert_header(auth.clone())
            .to_request(),
    )
    .await
}

async fn generate<A: App>(app: &A, auth: &Auth, purpose: &str) -> Resp {
    post(
        app,
        "/api/v1/keys/data-keys",
        auth,
        json!({"purpose": purpose}),
    )
    .await
}

async fn unwrap_key<A: App>(app: &A, auth: &Auth, purpose: &str, wrapped: &str) -> Resp {
    post(
        app,
        "/api/v1/keys/data-keys/unwrap",
        auth,
        json!({"purpose": purpose, "wrapped": wrapped}),
    )
    .await
}

async fn rewrap_key<A: App>(app: &A, auth: &Auth, purpose: &str, wrapped: &str) -> Resp {
    post(
        app,
        "/api/v1/keys/data-keys/rewrap",
        auth,
        json!({"purpose": purpose, "wrapped": wrapped}),
    )
    .await
}

async fn encrypt<A: App>(app: &A, auth: &Auth, purpose: &str, record: &str, pt: &[u8]) -> Resp {
    post(
        app,
        "/api/v1/keys/transit/encrypt",
        auth,
        json!({"purpose": purpose, "record_id": record, "plaintext": B64.encode(pt)}),
    )
    .await
}

async fn decrypt<A: App>(app: &A, auth: &Auth, purpose: &str, record: &str, ct: &[u8]) -> Resp {
    post(
        app,
        "/api/v1/keys/transit/decrypt",
        auth,
        json!({"purpose": purpose, "record_id": record, "ciphertext": B64.encode(ct)}),
    )
    .await
}

fn b64_field(r: &Resp, name: &str) -> Vec<u8> {
    B64.decode(
        r.body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {}", r.raw)),
    )
    .unwrap()
}

/// A refusal: the status, an RFC 9457 problem of the given kind, and nothing secret in it.
fn assert_problem(r: &Resp, status: u16, kind: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.raw);
    assert_eq!(
        r.content_type, "application/problem+json",
        "{what}: {}",
        r.raw
    );
    assert_eq!(
        r.body["type"],
        format!("urn:anshin:problem:{kind}"),
        "{what}: {}",
        r.raw
    );
    for field in ["plaintext", "wrapped", "ciphertext", "key_id"] {
        assert!(
            r.body.get(field).is_none(),
            "{what}: {field} in a problem: {}",
            r.raw
        );
    }
}

/// A machine client registered by the admin `admin` and an access token for it.
struct Client {
    client_id: String,
    id: String,
    auth: Auth,
}

async fn machine_client<A: App>(
    app: &A,
    admin: &Auth,
    role: &str,
    scopes: &[&str],
    ask: Option<&str>,
) -> Client {
    let r = post(
        app,
        "/api/v1/clients",
        admin,
        json!({"name": "電子カルテ連携", "role": role, "scopes": scopes, "auth_method": "client_secret"}),
    )
    .await;
    assert_eq!(r.status, 201, "register {role} client: {}", r.raw);
    let client_id = r.body["client_id"].as_str().unwrap().to_string();
    let secret = r.body["client_secret"].as_str().unwrap().to_string();
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    if let Some(s) = ask {
        form.push(("scope", s));
    }
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let t = send(
        app,
        test::TestRequest::post()
            .uri("/oauth2/token")
            .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
            .set_payload(form)
            .to_request(),
    )
    .await;
    assert_eq!(t.status, 200, "token: {}", t.raw);
    Client {
        id: r.body["id"].as_str().unwrap().to_string(),
        client_id,
        auth: (
            "authorization",
            format!("Bearer {}", t.body["access_token"].as_str().unwrap()),
        ),
    }
}

fn api_token(w: &World, slug: &str, role: Role) -> Auth {
    bearer(w, slug, role)
}

/// Every stored audit event of the key service (their canonical bodies), in platform scope.
async fn key_events(db: &TestDb) -> Vec<Value> {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    let rows = tx
        .query_all(Statement::from_string(
            db.db_backend(),
            "SELECT body FROM audit_events WHERE action LIKE 'keys.%' ORDER BY id".to_string(),
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(&r.try_get::<String>("", "body").unwrap()).unwrap())
        .collect()
}

/// Everything the audit trail holds, as text: event bodies and sealed log entries.
async fn audit_text(db: &TestDb) -> String {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    let mut out = String::new();
    for (sql, col) in [
        ("SELECT body FROM audit_events", "body"),
        ("SELECT entry FROM audit_log", "entry"),
    ] {
        for r in tx
            .query_all(Statement::from_string(db.db_backend(), sql.to_string()))
            .await
            .unwrap()
        {
            out.push_str(&r.try_get::<String>("", col).unwrap());
            out.push('\n');
        }
    }
    tx.commit().await.unwrap();
    out
}

fn find_event<'a>(
    events: &'a [Value],
    action: &str,
    outcome: &str,
    actor_label: &str,
) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["action"] == action && e["outcome"] == outcome && e["actor"]["label"] == actor_label
        })
        .collect()
}

/// The KEK id a data-key token names.
fn kek_of_token(wrapped: &[u8]) -> String {
    anshin_keys::ring::decode_token(wrapped).unwrap().0
}

/// Byte ranges of an embedded-DEK envelope: (KEK id, wrapped DEK, nonce, body, tag).
type Ranges = [std::ops::Range<usize>; 5];

fn envelope_ranges(ct: &[u8]) -> Ranges {
    assert_eq!(&ct[..4], b"ANSE");
    assert_eq!(ct[4], 2, "version");
    assert_eq!(ct[5], 1, "embedded DEK");
    let kl = u16::from_be_bytes([ct[6], ct[7]]) as usize;
    let kek = 8..8 + kl;
    let wl = u16::from_be_bytes([ct[kek.end], ct[kek.end + 1]]) as usize;
    let wrapped = kek.end + 2..kek.end + 2 + wl;
    let nonce = wrapped.end..wrapped.end + 12;
    let body = nonce.end..ct.len() - 16;
    let tag = ct.len() - 16..ct.len();
    [kek, wrapped, nonce, body, tag]
}

fn kek_of_envelope(ct: &[u8]) -> String {
    String::from_utf8(ct[envelope_ranges(ct)[0].clone()].to_vec()).unwrap()
}

async fn status_api<A: App>(app: &A, auth: &Auth, tenant: Option<Uuid>) -> Resp {
    let path = match tenant {
        Some(t) => format!("/api/v1/keys/status?tenant_id={t}"),
        None => "/api/v1/keys/status".to_string(),
    };
    get(app, &path, auth).await
}

fn active_key_id(s: &KeyStatus) -> String {
    s.active.as_ref().expect("an active KEK").key_id.clone()
}

/// The local provider's file of a key's material.
fn key_file(db: &TestDb, key_id: &str) -> std::path::PathBuf {
    let id = key_id.strip_prefix("local:").expect("a local key id");
    db.config.data_dir.join("keys").join(format!("{id}.key"))
}

/// Runs `anshin` with the test database's environment.
fn anshin_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(anshin_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &db.env {
        c.env(k, v);
    }
    c.output()
        .expect("run anshin (build it first: cargo build --bins)")
}

/// The in-process app sharing `state` (so the test reaches the same key service and cache).
macro_rules! app_of {
    ($state:expr) => {
        test::init_service(anshin_server::app::app($state.clone())).await
    };
}

both_backends! {
    async fn every_tenant_gets_its_own_kek_and_status_is_read_in_scope(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let alpha_admin = api_token(&w, "alpha-cloud", Role::ProviderAdmin);

        // Through the API: the provider adds an institution; the creation hook gives it a KEK.
        let r = post(&app, "/api/v1/tenants", &api_token(&w, "alpha-cloud", Role::ProviderOperator), json!({
            "kind": "institution", "slug": "kaede-hospital", "name": "かえで記念病院", "reference_pattern": "II", "bed_count": 120
        })).await;
        assert_eq!(r.status, 201, "{}", r.raw);
        let kaede: Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
        let kaede_status = state.keys.status_of(kaede).await.unwrap();
        let kaede_key = kaede_status.active.clone().expect("a KEK right after creation");
        assert_eq!(kaede_key.provider, "local");
        assert_eq!(kaede_key.origin, "managed");
        assert_eq!(kaede_key.status, "active");
        assert_eq!(kaede_key.key_state, "enabled");
        assert_eq!(kaede_key.alias.as_deref(), Some(format!("alias/anshin/tenant/{kaede}").as_str()));
        assert!(kaede_key.key_id.starts_with("local:"), "{}", kaede_key.key_id);
        assert!(key_file(&db, &kaede_key.key_id).exists(), "the local key file exists");

        // Through the command line: a provider and its institution, each with its own KEK.
        for args in [
            vec!["tenant", "create", "--kind", "provider", "--slug", "cli-prov", "--name", "CLI事業者"],
            vec!["tenant", "create", "--kind", "institution", "--slug", "cli-clinic", "--name", "CLI診療所", "--parent", "cli-prov", "--pattern", "IV"],
        ] {
            let o = anshin_cli(&db, &args);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let tenancy = db.tenancy();
        let mut key_ids = vec![kaede_key.key_id.clone()];
        for slug in ["cli-prov", "cli-clinic"] {
            let t = tenancy.admin_find(slug).await.unwrap().unwrap();
            let s = state.keys.status_of(t.id).await.unwrap();
            let k = s.active.expect("a KEK from the CLI path");
            assert!(k.key_id.starts_with("local:"));
            assert!(key_file(&db, &k.key_id).exists(), "{slug}: key file");
            key_ids.push(k.key_id);
        }
        // Tenants created before the key service (the harness's world) get theirs on first use.
        for t in w.all() {
            let k = state.keys.seal(t.id, "test.provision", "r", b"x").await.unwrap();
            assert!(!k.is_empty());
            key_ids.push(active_key_id(&state.keys.status_of(t.id).await.unwrap()));
        }
        let mut distinct = key_ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), key_ids.len(), "every tenant has its own KEK: {key_ids:?}");

        // The creation is audited in the tenant's own log.
        let events = key_events(&db).await;
        assert!(events.iter().any(|e| e["action"] == "keys.kek.create" && e["tenant_id"] == kaede.to_string() && e["details"]["key_id"] == kaede_key.key_id.as_str()), "kek.create for kaede");

        // Status API: own tenant and, for a provider, its institutions.
        let r = status_api(&app, &alpha_admin, Some(kaede)).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(r.body["tenant_id"], kaede.to_string());
        assert_eq!(r.body["provider"], "local");
        assert_eq!(r.body["active"]["key_id"], kaede_key.key_id.as_str());
        assert_eq!(r.body["erased"], false);
        assert!(r.body["data_key_policy"]["max_age_secs"].as_u64().unwrap() > 0);
        assert!(!r.raw.contains("plain:"), "no key material in the status");
        for (auth, tenant, want, who) in [
            (api_token(&w, "alpha-cloud", Role::ProviderOperator), Some(kaede), 200, "provider operator → institution"),
            (api_token(&w, "alpha-cloud", Role::Auditor), Some(w.c1.id), 200, "provider auditor → institution"),
            (api_token(&w, "alpha-cloud", Role::ProviderAdmin), None, 200, "provider admin → own"),
            (api_token(&w, "alpha-clinic", Role::InstitutionAdmin), None, 200, "institution admin → own"),
            (api_token(&w, "alpha-clinic", Role::Auditor), None, 200, "institution auditor → own"),
            (api_token(&w, "beta-cloud", Role::ProviderAdmin), Some(kaede), 404, "another provider"),
            (api_token(&w, "beta-clinic", Role::InstitutionAdmin), Some(w.c1.id), 404, "another institution"),
            (api_token(&w, "alpha-clinic", Role::InstitutionAdmin), Some(w.h1.id), 404, "a sibling institution"),
            (api_token(&w, "alpha-clinic", Role::InstitutionAdmin), Some(w.p1.id), 404, "an institution → its provider"),
            (api_token(&w, "alpha-clinic", Role::InstitutionStaff), None, 403, "institution staff"),
            (api_token(&w, "alpha-cloud", Role::ProviderMaintainer), None, 403, "maintainer → own"),
            (api_token(&w, "alpha-cloud", Role::ProviderMaintainer), Some(w.c1.id), 404, "maintainer → institution (no grant)"),
            (api_token(&w, "alpha-cloud", Role::ProviderAdmin), Some(Uuid::new_v4()), 404, "no such tenant"),
        ] {
            let r = status_api(&app, &auth, tenant).await;
            assert_eq!(r.status, want, "{who}: {}", r.raw);
            if want != 200 {
                assert_eq!(r.content_type, "application/problem+json", "{who}");
            }
        }
        let r = send(&app, test::TestRequest::get().uri("/api/v1/keys/status").to_request()).await;
        assert_eq!(r.status, 401);
    }

    async fn data_plane_round_trip_is_audited_without_key_material(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        // The provider's EMR platform: a machine client with read and write.
        let emr = machine_client(&app, &api_token(&w, "alpha-cloud", Role::ProviderAdmin), "provider_operator", &["read", "write", "keys"], None).await;

        let g = generate(&app, &emr.auth, "emr.record").await;
        assert_eq!(g.status, 200, "{}", g.raw);
        assert_eq!(g.cache_control, "no-store", "key material is not cached");
        let key_id = g.body["key_id"].as_str().unwrap().to_string();
        assert_eq!(key_id, active_key_id(&state.keys.status_of(w.p1.id).await.unwrap()), "the caller's tenant's KEK");
        let plaintext_b64 = g.body["plaintext"].as_str().unwrap().to_string();
        let key = B64.decode(&plaintext_b64).unwrap();
        assert_eq!(key.len(), 32);
        let wrapped_b64 = g.body["wrapped"].as_str().unwrap().to_string();
        let wrapped = B64.decode(&wrapped_b64).unwrap();
        assert_eq!(kek_of_token(&wrapped), key_id);
        assert!(!wrapped.windows(32).any(|w| w == key.as_slice()), "the token does not carry the key in clear");

        let u = unwrap_key(&app, &emr.auth, "emr.record", &wrapped_b64).await;
        assert_eq!(u.status, 200, "{}", u.raw);
        assert_eq!(u.cache_control, "no-store");
        assert_eq!(b64_field(&u, "plaintext"), key, "the same key bytes come back");

        // A second data key is a different key.
        let g2 = generate(&app, &emr.auth, "emr.record").await;
        assert_ne!(b64_field(&g2, "plaintext"), key);

        let note = "診療記録：右下腹部痛。虫垂炎の疑いで外科へ紹介。".as_bytes();
        let e = encrypt(&app, &emr.auth, "emr.note", "P-000123/visit-1", note).await;
        assert_eq!(e.status, 200, "{}", e.raw);
        let ct = b64_field(&e, "ciphertext");
        assert_eq!(&ct[..4], b"ANSE");
        assert_eq!(kek_of_envelope(&ct), key_id, "the envelope names the KEK");
        assert!(!ct.windows(note.len()).any(|w| w == note));
        let d = decrypt(&app, &emr.auth, "emr.note", "P-000123/visit-1", &ct).await;
        assert_eq!(d.status, 200, "{}", d.raw);
        assert_eq!(d.cache_control, "no-store");
        assert_eq!(b64_field(&d, "plaintext"), note);

        // An institution's own integration (API token) works with the institution's KEK.
        let clinic = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let gc = generate(&app, &clinic, "emr.record").await;
        assert_eq!(gc.status, 200, "{}", gc.raw);
        let clinic_key_id = gc.body["key_id"].as_str().unwrap().to_string();
        assert_ne!(clinic_key_id, key_id, "the institution's own KEK, not its provider's");
        assert_eq!(clinic_key_id, active_key_id(&state.keys.status_of(w.c1.id).await.unwrap()));
        let uc = unwrap_key(&app, &clinic, "emr.record", gc.body["wrapped"].as_str().unwrap()).await;
        assert_eq!(b64_field(&uc, "plaintext"), b64_field(&gc, "plaintext"));

        // Each call is in the caller's tenant's audit trail, with the key id and the caller.
        let events = key_events(&db).await;
        for action in ["keys.data_key.generate", "keys.data_key.unwrap", "keys.encrypt", "keys.decrypt"] {
            let found = find_event(&events, action, "success", &emr.client_id);
            assert!(!found.is_empty(), "{action} by the client: {events:#?}");
            for e in found {
                assert_eq!(e["tenant_id"], w.p1.id.to_string(), "{action}");
                assert_eq!(e["actor"]["kind"], "client", "{action}");
                assert_eq!(e["actor"]["id"], emr.id.as_str(), "{action}");
                assert_eq!(e["actor"]["role"], "provider_operator", "{action}");
                assert_eq!(e["details"]["key_id"], key_id.as_str(), "{action}: {e}");
                assert_eq!(e["target"]["id"], key_id.as_str(), "{action}");
            }
        }
        assert_eq!(find_event(&events, "keys.data_key.generate", "success", &emr.client_id).len(), 2);
        let enc = &find_event(&events, "keys.encrypt", "success", &emr.client_id)[0];
        assert_eq!(enc["details"]["purpose"], "emr.note");
        assert_eq!(enc["details"]["record_id"], "P-000123/visit-1");
        let by_token: Vec<_> = events.iter().filter(|e| e["actor"]["kind"] == "api_token" && e["tenant_id"] == w.c1.id.to_string()).collect();
        assert!(by_token.iter().any(|e| e["action"] == "keys.data_key.generate" && e["details"]["key_id"] == clinic_key_id.as_str()));
        assert!(by_token.iter().any(|e| e["action"] == "keys.data_key.unwrap"));

        // No key material, no record content, anywhere in the trail (also once sealed).
        state.audit.sealer().seal_all().await.unwrap();
        let trail = audit_text(&db).await;
        let secrets = [
            plaintext_b64.clone(),
            g2.body["plaintext"].as_str().unwrap().to_string(),
            gc.body["plaintext"].as_str().unwrap().to_string(),
            hex::encode(&key),
            B64.encode(note),
            String::from_utf8(note.to_vec()).unwrap(),
        ];
        for s in &secrets {
            assert!(!trail.contains(s.as_str()), "the audit trail holds {s}");
        }
        assert!(trail.contains(&key_id), "the key id is recorded");
    }

    async fn data_plane_refusals(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let a_api = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let b_api = api_token(&w, "beta-clinic", Role::InstitutionAdmin);
        let p1_emr = machine_client(&app, &api_token(&w, "alpha-cloud", Role::ProviderAdmin), "provider_operator", &["read", "write", "keys"], None).await;
        let p2_emr = machine_client(&app, &api_token(&w, "beta-cloud", Role::ProviderAdmin), "provider_operator", &["read", "write", "keys"], None).await;
        // A token without the keys scope gets no key operation at all.
        let p1_read_only = machine_client(&app, &api_token(&w, "alpha-cloud", Role::ProviderAdmin), "provider_operator", &["read", "write", "keys"], Some("read write")).await;

        let g = generate(&app, &a_api, "emr.record").await;
        assert_eq!(g.status, 200, "{}", g.raw);
        let wrapped = g.body["wrapped"].as_str().unwrap().to_string();

        // Another institution, another provider's client, and even the institution's own
        // provider cannot unwrap it.
        let r = unwrap_key(&app, &b_api, "emr.record", &wrapped).await;
        assert_problem(&r, 400, "invalid-ciphertext", "another institution's API token");
        let r = unwrap_key(&app, &p2_emr.auth, "emr.record", &wrapped).await;
        assert_problem(&r, 400, "invalid-ciphertext", "another provider's client");
        let r = unwrap_key(&app, &p1_emr.auth, "emr.record", &wrapped).await;
        assert_problem(&r, 400, "invalid-ciphertext", "the provider of the token's tenant");
        let events = key_events(&db).await;
        for (label, tenant, kind) in [(p2_emr.client_id.as_str(), w.p2.id, "client"), ("test institution_admin", w.c2.id, "api_token"), (p1_emr.client_id.as_str(), w.p1.id, "client")] {
            let failed: Vec<_> = find_event(&events, "keys.data_key.unwrap", "failure", label).into_iter().filter(|e| e["tenant_id"] == tenant.to_string()).collect();
            assert_eq!(failed.len(), 1, "the refused unwrap by {label} is audited in its own log: {events:#?}");
            assert_eq!(failed[0]["actor"]["kind"], kind);
            assert!(failed[0]["reason"].as_str().unwrap().contains("cannot be decrypted"), "{}", failed[0]);
        }
        // … and nothing about them lands in A's log.
        assert!(!events.iter().any(|e| e["tenant_id"] == w.c1.id.to_string() && e["action"] == "keys.data_key.unwrap"));

        // Wrong purpose, malformed purpose, not a token, not base64.
        let r = unwrap_key(&app, &a_api, "emr.other", &wrapped).await;
        assert_problem(&r, 400, "invalid-ciphertext", "wrong purpose");
        let r = unwrap_key(&app, &a_api, "EMR Record", &wrapped).await;
        assert_problem(&r, 422, "validation", "malformed purpose");
        let r = unwrap_key(&app, &a_api, "emr.record", &B64.encode(b"garbage")).await;
        assert_problem(&r, 422, "validation", "not a token");
        let r = unwrap_key(&app, &a_api, "emr.record", "***").await;
        assert_problem(&r, 422, "validation", "not base64");
        let mut tampered = B64.decode(&wrapped).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let r = unwrap_key(&app, &a_api, "emr.record", &B64.encode(&tampered)).await;
        assert_problem(&r, 400, "invalid-ciphertext", "altered token");
        let r = generate(&app, &a_api, "").await;
        assert_problem(&r, 422, "validation", "empty purpose");

        // Transit: the record, the purpose and the tenant are bound.
        let e = encrypt(&app, &a_api, "emr.note", "P-1", "処方：アムロジピン 5mg".as_bytes()).await;
        assert_eq!(e.status, 200, "{}", e.raw);
        let ct = b64_field(&e, "ciphertext");
        assert_eq!(decrypt(&app, &a_api, "emr.note", "P-1", &ct).await.status, 200);
        assert_problem(&decrypt(&app, &a_api, "emr.note", "P-2", &ct).await, 400, "invalid-ciphertext", "wrong record");
        assert_problem(&decrypt(&app, &a_api, "emr.other", "P-1", &ct).await, 400, "invalid-ciphertext", "wrong purpose");
        assert_problem(&decrypt(&app, &b_api, "emr.note", "P-1", &ct).await, 400, "invalid-ciphertext", "another institution");
        assert_problem(&decrypt(&app, &p2_emr.auth, "emr.note", "P-1", &ct).await, 400, "invalid-ciphertext", "another provider");
        assert_problem(&decrypt(&app, &p1_emr.auth, "emr.note", "P-1", &ct).await, 400, "invalid-ciphertext", "the provider");
        assert!(key_events(&db).await.iter().any(|e| e["action"] == "keys.decrypt" && e["outcome"] == "failure" && e["tenant_id"] == w.c2.id.to_string()), "refused decrypts are audited");
        assert_problem(&decrypt(&app, &a_api, "emr.note", "P-1", b"not an envelope").await, 400, "invalid-ciphertext", "garbage");
        assert_problem(&decrypt(&app, &a_api, "emr.note", "P-1", &ct[..ct.len() - 1]).await, 400, "invalid-ciphertext", "truncated");
        assert_problem(&encrypt(&app, &a_api, "emr.note", "", b"x").await, 422, "validation", "empty record id");
        let big = vec![b'a'; anshin_keys::data::TRANSIT_MAX_BYTES + 1];
        let r = encrypt(&app, &a_api, "emr.note", "P-1", &big).await;
        assert_eq!(r.status, 422, "larger than the transit limit: {}", r.raw);

        // People never handle key material, whatever their role.
        let person = anshin_tests::enroll_passkey(&app, &w, "alpha-clinic", "kanri@aoba.example.jp", "institution_admin").await;
        for (path, body) in [
            ("/api/v1/keys/data-keys", json!({"purpose": "emr.record"})),
            ("/api/v1/keys/data-keys/unwrap", json!({"purpose": "emr.record", "wrapped": wrapped})),
            ("/api/v1/keys/data-keys/rewrap", json!({"purpose": "emr.record", "wrapped": wrapped})),
            ("/api/v1/keys/transit/encrypt", json!({"purpose": "emr.note", "record_id": "P-1", "plaintext": B64.encode(b"x")})),
            ("/api/v1/keys/transit/decrypt", json!({"purpose": "emr.note", "record_id": "P-1", "ciphertext": B64.encode(&ct)})),
        ] {
            let r = send(&app, anshin_tests::with_session(test::TestRequest::post().uri(path).set_json(body), &person.session)).await;
            assert_problem(&r, 403, "forbidden", path);
        }
        // The person may read the key status (an institution admin).
        let r = send(&app, anshin_tests::with_session(test::TestRequest::get().uri("/api/v1/keys/status"), &person.session)).await;
        assert_eq!(r.status, 200, "{}", r.raw);

        // A token without the keys scope creates no keys or ciphertexts and unwraps nothing.
        for path in ["/api/v1/keys/data-keys", "/api/v1/keys/transit/encrypt", "/api/v1/keys/data-keys/rewrap", "/api/v1/keys/data-keys/unwrap", "/api/v1/keys/transit/decrypt"] {
            let body = json!({"purpose": "emr.note", "record_id": "P-1", "plaintext": B64.encode(b"x"), "wrapped": wrapped, "ciphertext": B64.encode(&ct)});
            let r = post(&app, path, &p1_read_only.auth, body).await;
            assert_eq!(r.status, 403, "{path}: {}", r.raw);
            assert_eq!(r.content_type, "application/problem+json");
            assert!(r.body.get("plaintext").is_none() && r.body.get("ciphertext").is_none());
        }

        // Without credentials: 401.
        let r = send(&app, test::TestRequest::post().uri("/api/v1/keys/data-keys").set_json(json!({"purpose": "emr.record"})).to_request()).await;
        assert_eq!(r.status, 401);
    }

    async fn institution_clients_need_the_keys_scope(db) {
        // An institution's machine clients have read-only roles (institution_staff); the keys
        // scope is what lets its EMR use data keys, and without it every key operation is refused.
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let a_api = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let a_emr = machine_client(&app, &a_api, "institution_staff", &["read", "keys"], None).await;
        let a_reader = machine_client(&app, &a_api, "institution_staff", &["read"], None).await;
        let b_emr = machine_client(&app, &api_token(&w, "beta-clinic", Role::InstitutionAdmin), "institution_staff", &["read", "keys"], None).await;
        let g = generate(&app, &a_emr.auth, "emr.record").await;
        assert_eq!(g.status, 200, "an institution's keys-scoped client generates: {}", g.raw);
        let wrapped = g.body["wrapped"].as_str().unwrap().to_string();
        let e = encrypt(&app, &a_emr.auth, "emr.note", "P-1", "処方：アムロジピン 5mg".as_bytes()).await;
        assert_eq!(e.status, 200, "{}", e.raw);
        let ct = b64_field(&e, "ciphertext");
        let u = unwrap_key(&app, &a_emr.auth, "emr.record", &wrapped).await;
        assert_eq!(u.status, 200, "{}", u.raw);
        assert_eq!(b64_field(&u, "plaintext"), b64_field(&g, "plaintext"));
        let d = decrypt(&app, &a_emr.auth, "emr.note", "P-1", &ct).await;
        assert_eq!(d.status, 200, "{}", d.raw);
        assert_eq!(b64_field(&d, "plaintext"), "処方：アムロジピン 5mg".as_bytes());

        for path in ["/api/v1/keys/data-keys", "/api/v1/keys/transit/encrypt", "/api/v1/keys/data-keys/rewrap", "/api/v1/keys/data-keys/unwrap", "/api/v1/keys/transit/decrypt"] {
            let body = json!({"purpose": "emr.note", "record_id": "P-1", "plaintext": B64.encode(b"x"), "wrapped": wrapped, "ciphertext": B64.encode(&ct)});
            let r = post(&app, path, &a_reader.auth, body).await;
            assert_problem(&r, 403, "forbidden", path);
        }
        let refused = find_event(&key_events(&db).await, "keys.data_key.unwrap", "denied", &a_reader.client_id).len();
        assert_eq!(refused, 1, "refusals are audited");

        // Another institution's client: refused as a foreign key, and audited there.
        let r = unwrap_key(&app, &b_emr.auth, "emr.record", &wrapped).await;
        assert_problem(&r, 400, "invalid-ciphertext", "another institution's client");
        let failed = find_event(&key_events(&db).await, "keys.data_key.unwrap", "failure", &b_emr.client_id).len();
        assert_eq!(failed, 1, "the refused unwrap is audited in B's log");
    }

    async fn read_only_roles_cannot_create_keys_with_api_tokens(db) {
        // Auditors, institution staff and maintainers are read-only roles
        // (`Role::is_read_only`); their API tokens must not mint data keys or ciphertexts, as a
        // read-only machine client cannot.
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        for (slug, role) in [("alpha-clinic", Role::Auditor), ("alpha-clinic", Role::InstitutionStaff), ("alpha-cloud", Role::Auditor), ("alpha-cloud", Role::ProviderMaintainer)] {
            let t = api_token(&w, slug, role);
            let r = generate(&app, &t, "emr.record").await;
            assert_eq!(r.status, 403, "{role}@{slug} generated a data key: {}", r.raw);
            let r = encrypt(&app, &t, "emr.note", "P-1", b"x").await;
            assert_eq!(r.status, 403, "{role}@{slug} encrypted: {}", r.raw);
        }
    }

    async fn every_altered_byte_of_a_transit_ciphertext_is_refused(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let a = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let value = "検査結果：HbA1c 6.9%".as_bytes();
        let e = encrypt(&app, &a, "emr.lab", "P-42/lab-7", value).await;
        assert_eq!(e.status, 200, "{}", e.raw);
        let ct = b64_field(&e, "ciphertext");
        let [kek, wrapped, nonce, body, tag] = envelope_ranges(&ct);
        assert_eq!(body.len(), value.len());
        // One named byte of each part: 400 invalid-ciphertext, no plaintext.
        for (i, part) in [(0usize, "magic"), (5, "kind"), (6, "KEK id length"), (kek.start, "KEK id"), (kek.end, "wrapped length"), (wrapped.start, "wrapped DEK (first)"), (wrapped.end - 1, "wrapped DEK (last)"), (nonce.start, "nonce"), (nonce.end - 1, "nonce (last)"), (body.start, "body"), (body.end - 1, "body (last)"), (tag.start, "tag"), (tag.end - 1, "tag (last)")] {
            let mut t = ct.clone();
            t[i] ^= 0x01;
            let r = decrypt(&app, &a, "emr.lab", "P-42/lab-7", &t).await;
            assert_problem(&r, 400, "invalid-ciphertext", &format!("{part} (byte {i})"));
        }
        // The version byte names the format this server reads.
        let mut t = ct.clone();
        t[4] = 3;
        let r = decrypt(&app, &a, "emr.lab", "P-42/lab-7", &t).await;
        assert_problem(&r, 422, "validation", "version");
        assert!(r.body["detail"].as_str().unwrap().contains("version"), "{}", r.raw);
        // Every other byte, too: never a 2xx, never plaintext.
        for i in 0..ct.len() {
            let mut t = ct.clone();
            t[i] ^= 0x80;
            let r = decrypt(&app, &a, "emr.lab", "P-42/lab-7", &t).await;
            assert!(r.status == 400 || r.status == 422, "byte {i}: {} {}", r.status, r.raw);
            assert!(r.body.get("plaintext").is_none());
        }
        // The original still decrypts.
        let d = decrypt(&app, &a, "emr.lab", "P-42/lab-7", &ct).await;
        assert_eq!(b64_field(&d, "plaintext"), value);
    }

    async fn rotation_keeps_old_values_readable_and_the_job_rewraps_stored_keys(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let keys = state.keys.clone();
        let admin = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let c1 = w.c1.id;

        // Before: stored values (Anshin's own secrets) under five purposes, a data-plane token
        // and a transit ciphertext.
        let mut sealed = Vec::new();
        for i in 0..5 {
            let purpose = format!("test.secret-{i}");
            let text = format!("秘密の値 {i}");
            let ct = keys.seal(c1, &purpose, &format!("rec-{i}"), text.as_bytes()).await.unwrap();
            sealed.push((purpose, format!("rec-{i}"), text, ct));
        }
        let sealed_text = keys.seal_text(c1, "test.text", "rec-t", "連携先のパスワード").await.unwrap();
        let before = keys.status_of(c1).await.unwrap();
        let old = before.active.clone().unwrap();
        assert_eq!(old.stored_data_keys, 6);
        let g = generate(&app, &admin, "emr.record").await;
        let old_token = g.body["wrapped"].as_str().unwrap().to_string();
        let old_key = b64_field(&g, "plaintext");
        let e = encrypt(&app, &admin, "emr.note", "P-1", "旧い鍵で暗号化".as_bytes()).await;
        let old_ct = b64_field(&e, "ciphertext");
        assert_eq!(kek_of_envelope(&old_ct), old.key_id);

        // Who may rotate: institution and provider admins, in scope.
        for (auth, tenant, want, who) in [
            (api_token(&w, "alpha-clinic", Role::InstitutionStaff), None, 403, "staff"),
            (api_token(&w, "alpha-clinic", Role::Auditor), None, 403, "auditor"),
            (api_token(&w, "alpha-cloud", Role::ProviderOperator), Some(c1), 403, "provider operator"),
            (api_token(&w, "alpha-cloud", Role::ProviderMaintainer), Some(c1), 404, "maintainer without a grant"),
            (api_token(&w, "beta-cloud", Role::ProviderAdmin), Some(c1), 404, "another provider"),
            (api_token(&w, "beta-clinic", Role::InstitutionAdmin), Some(c1), 404, "another institution"),
        ] {
            let path = match tenant { Some(t) => format!("/api/v1/keys/rotate?tenant_id={t}"), None => "/api/v1/keys/rotate".into() };
            let r = post(&app, &path, &auth, json!({})).await;
            assert_eq!(r.status, want, "{who}: {}", r.raw);
        }
        assert_eq!(active_key_id(&keys.status_of(c1).await.unwrap()), old.key_id, "refusals changed nothing");

        let r = post(&app, "/api/v1/keys/rotate", &admin, json!({})).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        let new_key_id = r.body["new_kek"]["key_id"].as_str().unwrap().to_string();
        assert_ne!(new_key_id, old.key_id);
        assert_eq!(r.body["retired_kek"], old.id.to_string());
        assert_eq!(r.body["tenant_id"], c1.to_string());
        let job_id = r.body["rewrap_job"].as_str().unwrap().to_string();

        let mid = keys.status_of(c1).await.unwrap();
        assert_eq!(active_key_id(&mid), new_key_id);
        let retired = mid.previous.iter().find(|k| k.id == old.id).unwrap();
        assert_eq!(retired.status, "retired");
        assert!(retired.retired_at.is_some());
        assert_eq!(retired.stored_data_keys, 6, "not moved until the job runs");
        let events = key_events(&db).await;
        assert!(events.iter().any(|e| e["action"] == "keys.kek.rotate" && e["tenant_id"] == c1.to_string() && e["details"]["new_key_id"] == new_key_id.as_str() && e["details"]["old_key_id"] == old.key_id.as_str() && e["actor"]["kind"] == "api_token"));

        // Everything from before still opens; new data uses the new KEK at once.
        for (purpose, record, text, ct) in &sealed {
            assert_eq!(keys.open(c1, purpose, record, ct).await.unwrap().as_slice(), text.as_bytes());
        }
        let g2 = generate(&app, &admin, "emr.record").await;
        assert_eq!(g2.body["key_id"], new_key_id.as_str());
        let e2 = encrypt(&app, &admin, "emr.note", "P-1", b"new").await;
        assert_eq!(kek_of_envelope(&b64_field(&e2, "ciphertext")), new_key_id, "the cache was flushed by the rotation");
        let after_seal = keys.seal(c1, "test.after", "rec-a", b"after rotation").await.unwrap();
        assert_eq!(keys.status_of(c1).await.unwrap().active.unwrap().stored_data_keys, 1);

        // The durable re-wrap job moves the stored data keys.
        let worker = Worker::new(db.app.clone(), WorkerOptions::default())
            .register(anshin_keys::jobs::RewrapJob(keys.clone()));
        assert!(worker.run_one().await.unwrap(), "the re-wrap job ran");
        let job = JobQueue::new(db.app.clone()).get(&job_id).await.unwrap();
        assert_eq!(job.kind, "keys.rewrap");
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
        let done = keys.status_of(c1).await.unwrap();
        assert_eq!(done.active.as_ref().unwrap().stored_data_keys, 7);
        assert_eq!(done.previous.iter().find(|k| k.id == old.id).unwrap().stored_data_keys, 0, "nothing left under the old KEK");
        assert!(key_events(&db).await.iter().any(|e| e["action"] == "keys.rewrap.complete" && e["details"]["from_key_id"] == old.key_id.as_str()));
        // Running it again is harmless.
        assert_eq!(keys.rewrap_batch(c1, old.id, 100).await.unwrap(), 0);

        // Old values still open — also in a process with a cold cache, which must unwrap the
        // moved keys under the new KEK.
        let cold = db.state().await.keys;
        for k in [&keys, &cold] {
            for (purpose, record, text, ct) in &sealed {
                assert_eq!(k.open(c1, purpose, record, ct).await.unwrap().as_slice(), text.as_bytes());
            }
            assert_eq!(k.open_text(c1, "test.text", "rec-t", &sealed_text).await.unwrap().as_str(), "連携先のパスワード");
            assert_eq!(k.open(c1, "test.after", "rec-a", &after_seal).await.unwrap().as_slice(), b"after rotation");
        }
        // With the old KEK disabled, a fresh process still opens everything: nothing needs it.
        let fresh = db.state().await.keys;
        fresh.ring().provider().disable(&old.key_id).await.unwrap();
        for (purpose, record, text, ct) in &sealed {
            assert_eq!(fresh.open(c1, purpose, record, ct).await.unwrap().as_slice(), text.as_bytes());
        }
        fresh.ring().provider().enable(&old.key_id).await.unwrap();

        // Data-plane tokens and ciphertexts from before the rotation still work, and re-wrap.
        let u = unwrap_key(&app, &admin, "emr.record", &old_token).await;
        assert_eq!(u.status, 200, "{}", u.raw);
        assert_eq!(b64_field(&u, "plaintext"), old_key);
        let d = decrypt(&app, &admin, "emr.note", "P-1", &old_ct).await;
        assert_eq!(b64_field(&d, "plaintext"), "旧い鍵で暗号化".as_bytes());
        let rw = rewrap_key(&app, &admin, "emr.record", &old_token).await;
        assert_eq!(rw.status, 200, "{}", rw.raw);
        let new_token = rw.body["wrapped"].as_str().unwrap().to_string();
        assert_eq!(kek_of_token(&B64.decode(&new_token).unwrap()), new_key_id);
        let u2 = unwrap_key(&app, &admin, "emr.record", &new_token).await;
        assert_eq!(b64_field(&u2, "plaintext"), old_key, "the same data key under the new KEK");
        assert_problem(&rewrap_key(&app, &admin, "emr.other", &old_token).await, 400, "invalid-ciphertext", "rewrap with the wrong purpose");
        assert_problem(&rewrap_key(&app, &api_token(&w, "beta-clinic", Role::InstitutionAdmin), "emr.record", &old_token).await, 400, "invalid-ciphertext", "rewrap by another tenant");
        assert!(find_event(&key_events(&db).await, "keys.data_key.rewrap", "success", "test institution_admin").iter().any(|e| e["details"]["key_id"] == new_key_id.as_str()));

        // A provider admin rotates an institution of theirs.
        let r = post(&app, &format!("/api/v1/keys/rotate?tenant_id={c1}"), &api_token(&w, "alpha-cloud", Role::ProviderAdmin), json!({})).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        let third = r.body["new_kek"]["key_id"].as_str().unwrap().to_string();
        let s = keys.status_of(c1).await.unwrap();
        assert_eq!(active_key_id(&s), third);
        assert_eq!(s.previous.len(), 2);
        // Values from two KEKs ago still open, and tokens still unwrap.
        assert_eq!(cold.open(c1, &sealed[0].0, &sealed[0].1, &sealed[0].3).await.unwrap().as_slice(), sealed[0].2.as_bytes());
        assert_eq!(b64_field(&unwrap_key(&app, &admin, "emr.record", &old_token).await, "plaintext"), old_key);
    }

    async fn crypto_erase_destroys_the_tenants_keys_and_nothing_else(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let keys = state.keys.clone();
        let (c1, c2) = (w.c1.id, w.c2.id);
        let a = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let b = api_token(&w, "beta-clinic", Role::InstitutionAdmin);

        let mut mine = Vec::new();
        let mut theirs = Vec::new();
        for i in 0..3 {
            let p = format!("test.erase-{i}");
            mine.push((p.clone(), keys.seal(c1, &p, "r", b"clinic A secret").await.unwrap()));
            theirs.push((p.clone(), keys.seal(c2, &p, "r", b"clinic B secret").await.unwrap()));
        }
        let a_token = generate(&app, &a, "emr.record").await.body["wrapped"].as_str().unwrap().to_string();
        let a_ct = b64_field(&encrypt(&app, &a, "emr.note", "P-1", b"A").await, "ciphertext");
        let b_gen = generate(&app, &b, "emr.record").await;
        let b_token = b_gen.body["wrapped"].as_str().unwrap().to_string();
        let b_ct = b64_field(&encrypt(&app, &b, "emr.note", "P-1", b"B").await, "ciphertext");
        // A rotation first, so the tenant has two KEKs (the erase must take both).
        let r = post(&app, "/api/v1/keys/rotate", &a, json!({})).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        mine.push(("test.erase-new".into(), keys.seal(c1, "test.erase-new", "r", b"clinic A secret").await.unwrap()));
        let before = keys.status_of(c1).await.unwrap();
        let kek_ids: Vec<String> = before.active.iter().chain(before.previous.iter()).map(|k| k.key_id.clone()).collect();
        assert_eq!(kek_ids.len(), 2);
        let b_kek = active_key_id(&keys.status_of(c2).await.unwrap());

        // Out-of-range waiting periods are refused before anything changes.
        assert!(matches!(keys.crypto_erase(Actor::operator(), c1, Some(3)).await, Err(KeyError::Invalid(_))));
        assert!(matches!(keys.crypto_erase(Actor::operator(), Uuid::new_v4(), None).await, Err(KeyError::NotFound(_))));

        let ev = keys.crypto_erase(Actor::operator(), c1, Some(7)).await.unwrap();
        assert_eq!(ev.tenant_id, c1);
        assert_eq!(ev.keys.len(), 2, "{ev:?}");
        for k in &ev.keys {
            assert!(kek_ids.contains(&k.key_id), "{k:?}");
            assert_eq!(k.provider, "local");
            assert_eq!(k.state_before, anshin_keys::KeyState::Enabled);
            assert_eq!(k.state_after, anshin_keys::KeyState::Destroyed);
            assert!(k.deletion_date.is_some(), "{k:?}");
            assert!(k.disable_request_id.is_some(), "{k:?}");
            assert!(k.deletion_request_id.is_some(), "{k:?}");
            assert!(!key_file(&db, &k.key_id).exists(), "the material file of {} is gone", k.key_id);
            let tomb = key_file(&db, &k.key_id).with_extension("json");
            let meta: Value = serde_json::from_str(&std::fs::read_to_string(&tomb).unwrap()).unwrap();
            assert_eq!(meta["state"], "destroyed", "the metadata stays as a tombstone");
        }
        assert_eq!(ev.data_keys_deleted, 4, "the stored data keys of the tenant");
        assert!(ev.completed_at >= ev.requested_at);
        assert!(ev.principal.starts_with("system:anshin-cli:"), "{}", ev.principal);
        let audited = db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE id = {} AND action = 'keys.crypto_erase' AND tenant_id = {}", lit(&db, ev.audit_event_id), lit(&db, c1))).await;
        assert_eq!(audited, 1, "the evidence names its audit event");
        let body = key_events(&db).await.into_iter().find(|e| e["id"] == ev.audit_event_id.to_string()).unwrap();
        assert_eq!(body["details"]["data_keys_deleted"], 4);
        assert_eq!(body["details"]["keys"].as_array().unwrap().len(), 2);
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM key_data_keys WHERE tenant_id = {}", lit(&db, c1))).await, 0);

        // Nothing of A opens any more, through any path, in this process or a fresh one.
        let cold = db.state().await.keys;
        for k in [&keys, &cold] {
            for (p, ct) in &mine {
                assert!(matches!(k.open(c1, p, "r", ct).await, Err(KeyError::KeyDestroyed(_))), "{p}");
            }
            assert!(matches!(k.seal(c1, "test.erase-0", "r", b"x").await, Err(KeyError::KeyDestroyed(_))), "no new key for an erased tenant");
        }
        let r = unwrap_key(&app, &a, "emr.record", &a_token).await;
        assert!(r.status == 400 || r.status == 409, "old token after erase: {}", r.raw);
        assert!(r.body.get("plaintext").is_none());
        let r = decrypt(&app, &a, "emr.note", "P-1", &a_ct).await;
        assert!(r.status == 400 || r.status == 409, "old ciphertext after erase: {}", r.raw);
        assert!(r.body.get("plaintext").is_none());
        assert_problem(&generate(&app, &a, "emr.record").await, 409, "key-unusable", "generate after erase");
        assert_problem(&encrypt(&app, &a, "emr.fresh", "P-1", b"x").await, 409, "key-unusable", "encrypt after erase");
        assert_problem(&post(&app, "/api/v1/keys/rotate", &a, json!({})).await, 409, "key-unusable", "rotate after erase");
        let s = status_api(&app, &a, None).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.body["erased"], true);
        assert!(s.body["active"].is_null());
        assert!(s.body["previous"].as_array().unwrap().iter().all(|k| k["status"] == "erased" && k["key_state"] == "destroyed" && !k["erased_at"].is_null()));
        // The server's backfill does not give an erased tenant a new key.
        let all = [anshin_keys::TenantInfo { id: c1, kind: anshin_platform::TenantKind::Institution, provider_id: w.p1.id }];
        assert_eq!(keys.backfill(&all).await.unwrap(), 0);
        assert!(keys.status_of(c1).await.unwrap().active.is_none());

        // B is untouched.
        for k in [&keys, &cold] {
            for (p, ct) in &theirs {
                assert_eq!(k.open(c2, p, "r", ct).await.unwrap().as_slice(), b"clinic B secret");
            }
        }
        assert!(key_file(&db, &b_kek).exists());
        let u = unwrap_key(&app, &b, "emr.record", &b_token).await;
        assert_eq!(b64_field(&u, "plaintext"), b64_field(&b_gen, "plaintext"));
        assert_eq!(b64_field(&decrypt(&app, &b, "emr.note", "P-1", &b_ct).await, "plaintext"), b"B");
        assert_eq!(generate(&app, &b, "emr.record").await.status, 200);

        // Running it again (after a partial failure, say) records the keys as they are.
        let again = keys.crypto_erase(Actor::operator(), c1, None).await.unwrap();
        assert_eq!(again.keys.len(), 2);
        assert!(again.keys.iter().all(|k| k.state_before == anshin_keys::KeyState::Destroyed && k.state_after == anshin_keys::KeyState::Destroyed));
        assert_eq!(again.data_keys_deleted, 0);
        // Erasing a tenant whose KEK is its own (BYOK) is refused; registering BYOK needs the AWS
        // KMS provider, so that case is covered with moto, not here.
        let byok = send(&app, test::TestRequest::put().uri("/api/v1/keys/byok").insert_header(b.clone()).set_json(json!({"key_arn": "arn:aws:kms:ap-northeast-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"})).to_request()).await;
        assert_problem(&byok, 422, "key-refused", "BYOK on the local provider");
    }

    async fn a_disabled_key_fails_closed_and_works_again_when_enabled(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = app_of!(state);
        let keys = state.keys.clone();
        let c1 = w.c1.id;
        let a = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
        let g = generate(&app, &a, "emr.record").await;
        assert_eq!(g.status, 200);
        let token = g.body["wrapped"].as_str().unwrap().to_string();
        let sealed = keys.seal(c1, "test.disabled", "r", b"stored").await.unwrap();
        let ct = b64_field(&encrypt(&app, &a, "emr.note", "P-1", b"transit").await, "ciphertext");
        let key_id = active_key_id(&keys.status_of(c1).await.unwrap());

        let receipt = keys.ring().provider().disable(&key_id).await.unwrap();
        assert_eq!(receipt.state, anshin_keys::KeyState::Disabled);

        assert_problem(&generate(&app, &a, "emr.record").await, 409, "key-unusable", "generate");
        assert_problem(&unwrap_key(&app, &a, "emr.record", &token).await, 409, "key-unusable", "unwrap");
        assert_problem(&rewrap_key(&app, &a, "emr.record", &token).await, 409, "key-unusable", "rewrap");
        // New data under a purpose nothing cached: refused.
        assert_problem(&encrypt(&app, &a, "emr.fresh", "P-1", b"x").await, 409, "key-unusable", "transit encrypt");
        // A process that has no key in memory cannot decrypt either.
        let cold_state = db.state().await;
        let cold_app = app_of!(cold_state);
        assert_problem(&decrypt(&cold_app, &a, "emr.note", "P-1", &ct).await, 409, "key-unusable", "transit decrypt (cold cache)");
        assert!(matches!(cold_state.keys.open(c1, "test.disabled", "r", &sealed).await, Err(KeyError::KeyUnusable { .. })));
        assert!(matches!(keys.seal(c1, "test.fresh", "r", b"x").await, Err(KeyError::KeyUnusable { .. })));
        let detail = generate(&app, &a, "emr.record").await.body["detail"].as_str().unwrap().to_string();
        assert!(detail.contains("disabled"), "{detail}");
        // Failures are audited as such.
        assert!(key_events(&db).await.iter().any(|e| e["action"] == "keys.data_key.generate" && e["outcome"] == "failure" && e["tenant_id"] == c1.to_string()));

        keys.ring().provider().enable(&key_id).await.unwrap();
        let g2 = generate(&app, &a, "emr.record").await;
        assert_eq!(g2.status, 200, "{}", g2.raw);
        assert_eq!(b64_field(&unwrap_key(&app, &a, "emr.record", &token).await, "plaintext"), b64_field(&g, "plaintext"));
        assert_eq!(encrypt(&app, &a, "emr.fresh", "P-1", b"x").await.status, 200);
        assert_eq!(b64_field(&decrypt(&cold_app, &a, "emr.note", "P-1", &ct).await, "plaintext"), b"transit");
        assert_eq!(cold_state.keys.open(c1, "test.disabled", "r", &sealed).await.unwrap().as_slice(), b"stored");
    }
}

/// A KEK disabled while a data key for it sits in the cache: the cached key must not keep
/// encrypting new data or decrypting old data once the service has seen that the KEK is
/// disabled (`DataKeyCache::flush_tenant`: "after a KEK rotation, a disable or a crypto-erase,
/// nothing may keep working from memory").
#[actix_web::test]
async fn a_disabled_key_is_not_served_from_the_cache() {
    let db = TestDb::new(Backend::Sqlite).await;
    let w = World::build(&db).await;
    let state = db.state().await;
    let app = app_of!(state);
    let a = api_token(&w, "alpha-clinic", Role::InstitutionAdmin);
    let ct = b64_field(
        &encrypt(&app, &a, "emr.note", "P-1", b"transit").await,
        "ciphertext",
    );
    assert_eq!(decrypt(&app, &a, "emr.note", "P-1", &ct).await.status, 200);
    let key_id = active_key_id(&state.keys.status_of(w.c1.id).await.unwrap());
    state.keys.ring().provider().disable(&key_id).await.unwrap();
    // The service sees the disabled key …
    assert_eq!(generate(&app, &a, "emr.record").await.status, 409);
    // … yet the cached data keys of the same tenant keep working.
    assert_problem(
        &encrypt(&app, &a, "emr.note", "P-2", b"new").await,
        409,
        "key-unusable",
        "cached encrypt",
    );
    assert_problem(
        &decrypt(&app, &a, "emr.note", "P-1", &ct).await,
        409,
        "key-unusable",
        "cached decrypt",
    );
}

async fn count_in(tx: &sea_orm::DatabaseTransaction, sql: String) -> i64 {
    tx.query_one(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        sql.clone(),
    ))
    .await
    .expect(&sql)
    .unwrap()
    .try_get_by_index::<i64>(0)
    .unwrap()
}

/// Wall 2 for the key tables: as the application role, under one tenant's context, another
/// tenant's KEKs and data keys are invisible and cannot be changed.
#[actix_web::test]
async fn key_tables_are_isolated_by_row_level_security() {
    let db = TestDb::new(Backend::Postgres).await;
    let w = World::build(&db).await;
    let keys: KeyService = db.state().await.keys;
    for t in w.all() {
        keys.seal(t.id, "test.rls", "r", b"x").await.unwrap();
    }
    for (ctx, visible) in [
        (w.c1.id, vec![w.c1.id]),
        (w.c2.id, vec![w.c2.id]),
        (w.p1.id, vec![w.p1.id, w.c1.id, w.h1.id]),
        (w.p2.id, vec![w.p2.id, w.c2.id]),
    ] {
        let tx = begin_tenant_tx(&db.app, ctx).await.unwrap();
        for table in ["key_keks", "key_data_keys"] {
            // An unfiltered query sees only what the context allows.
            let rows = tx
                .query_all(Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!("SELECT DISTINCT tenant_id FROM {table}"),
                ))
                .await
                .unwrap();
            let mut seen: Vec<Uuid> = rows
                .iter()
                .map(|r| r.try_get_by_index(0).unwrap())
                .collect();
            seen.sort();
            let mut want = visible.clone();
            want.sort();
            assert_eq!(seen, want, "{table} under {ctx}");
            for t in w.all().iter().filter(|t| !visible.contains(&t.id)) {
                let n = count_in(
                    &tx,
                    format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = '{}'", t.id),
                )
                .await;
                assert_eq!(n, 0, "{table}: {} visible under {ctx}", t.slug);
            }
        }
        tx.commit().await.unwrap();
    }

    // Under A's context, B's rows cannot be changed or deleted, and none can be added for B.
    let tx = begin_tenant_tx(&db.app, w.c1.id).await.unwrap();
    let r = tx
        .execute(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!(
                "UPDATE key_keks SET status = 'retired' WHERE tenant_id = '{}'",
                w.c2.id
            ),
        ))
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 0);
    let r = tx
        .execute(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("DELETE FROM key_data_keys WHERE tenant_id = '{}'", w.c2.id),
        ))
        .await
        .unwrap();
    assert_eq!(r.rows_affected(), 0);
    let c2_kek = keys.status_of(w.c2.id).await.unwrap().active.unwrap().id;
    let insert_for_c2 = format!(
        "INSERT INTO key_data_keys (id, tenant_id, kek_id, purpose, wrapped, created_at) VALUES ('{}', '{}', '{c2_kek}', 'x', '\\x00', now())",
        Uuid::now_v7(),
        w.c2.id
    );
    let insert = tx
        .execute(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            insert_for_c2.clone(),
        ))
        .await;
    assert!(
        insert.is_err(),
        "WITH CHECK refuses a row for another tenant"
    );
    drop(tx);
    // The same statement is fine in B's own context (rolled back).
    let tx = begin_tenant_tx(&db.app, w.c2.id).await.unwrap();
    tx.execute(Statement::from_string(
        sea_orm::DbBackend::Postgres,
        insert_for_c2,
    ))
    .await
    .expect("B may add its own data key");
    drop(tx);
    // Without any tenant context nothing is visible.
    assert_eq!(db.count("SELECT COUNT(*) FROM key_keks").await, 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM key_data_keys").await, 0);
    // B's data still opens.
    assert_eq!(
        db.count_platform(&format!(
            "SELECT COUNT(*) FROM key_data_keys WHERE tenant_id = '{}'",
            w.c2.id
        ))
        .await,
        1
    );
}
