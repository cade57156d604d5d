//! What Anshin stores that is secret, sealed under the tenants' KEKs, on SQLite and PostgreSQL:
//! webhook channels created with the key service are stored as `anshin-env1:` envelopes and
//! delivered with the right HMAC secret to the right URL; a key-provider outage refuses new
//! channels (503) and makes deliveries wait and retry, never sending without the secret; values
//! sealed under the interim secret boxes (identity providers' client secrets, webhook secrets and
//! URLs) are moved by `anshin keys reencrypt` — audited, idempotent, still opening to the same
//! plaintext (through sign-in and delivery themselves) — and a crypto-erase of the tenant makes
//! them unreadable. Anshin's own signing keys (access tokens, audit checkpoints) live in the key
//! service too, the same for every replica, and key files of earlier versions are imported.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::test;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anshin_audit::alerts::{self, AlertDeliveryJob, AlertService, ChannelKind, NewChannel};
use anshin_audit::{Actor, AuditEvent, Outcome, Source};
use anshin_keys::provider::{
    CreateKey, EncryptionContext, GeneratedKey, KeyMeta, KeyProvider, Receipt,
};
use anshin_keys::{KeyError, KeyService};
use anshin_platform::db::{begin_platform_tx, begin_tenant_tx};
use anshin_platform::jobs::{JobQueue, JobRecord, JobStatus, Worker, WorkerOptions};
use anshin_platform::{Principal, Role};
use anshin_server::app::AppState;
use anshin_server::services::ServiceSet;
use anshin_tests::lit;
use anshin_tests::{anshin_bin, both_backends, free_port, TestDb, World};
use chrono::Utc;
use p256::elliptic_curve::zeroize::Zeroizing;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const OIDC_PURPOSE: &str = "identity.oidc-client-secret";

// ---- A key provider that can be switched off ----------------------------------------------

/// The local provider, except that while `down` every call fails as an unreachable KMS does.
struct Flaky {
    inner: Arc<dyn KeyProvider>,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), KeyError> {
        if self.down.load(Ordering::SeqCst) {
            Err(KeyError::Unavailable(
                "the test provider is switched off".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl KeyProvider for Flaky {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn create_key(&self, req: &CreateKey) -> Result<KeyMeta, KeyError> {
        self.check()?;
        self.inner.create_key(req).await
    }
    async fn describe(&self, key_id: &str) -> Result<KeyMeta, KeyError> {
        self.check()?;
        self.inner.describe(key_id).await
    }
    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        self.check()?;
        self.inner.generate_data_key(key_id, context).await
    }
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        self.check()?;
        self.inner.wrap(key_id, plaintext, context).await
    }
    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.check()?;
        self.inner.unwrap(key_id, wrapped, context).await
    }
    async fn rotate_material(&self, key_id: &str) -> Result<Receipt, KeyError> {
        self.check()?;
        self.inner.rotate_material(key_id).await
    }
    async fn enable(&self, key_id: &str) -> Result<Receipt, KeyError> {
        self.check()?;
        self.inner.enable(key_id).await
    }
    async fn disable(&self, key_id: &str) -> Result<Receipt, KeyError> {
        self.check()?;
        self.inner.disable(key_id).await
    }
    async fn schedule_deletion(
        &self,
        key_id: &str,
        pending_days: u32,
    ) -> Result<Receipt, KeyError> {
        self.check()?;
        self.inner.schedule_deletion(key_id, pending_days).await
    }
    async fn ping(&self) -> Result<(), KeyError> {
        self.check()?;
        self.inner.ping().await
    }
}

// ---- A webhook receiver and an OpenID Provider's discovery --------------------------------

/// A received request: its path and query, headers and body.
type Received = (String, HashMap<String, String>, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
}

async fn hook(req: HttpRequest, body: web::Bytes, st: web::Data<Receiver>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    st.got
        .lock()
        .unwrap()
        .push((req.uri().to_string(), headers, body.to_vec()));
    HttpResponse::NoContent().finish()
}

/// Serves `/hook` (a webhook receiver) and an OpenID Provider's discovery document and JWKS for
/// the issuer `http://127.0.0.1:<port>` — enough for Anshin to start a sign-in, which opens the
/// client secret.
fn start_peer(r: Receiver) -> (u16, actix_web::dev::ServerHandle) {
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let srv = HttpServer::new(move || {
        let issuer = issuer.clone();
        App::new()
            .app_data(web::Data::new(r.clone()))
            .route("/hook", web::post().to(hook))
            .route(
                "/.well-known/openid-configuration",
                web::get().to(move || {
                    let issuer = issuer.clone();
                    async move {
                        HttpResponse::Ok().json(json!({
                            "issuer": issuer,
                            "authorization_endpoint": format!("{issuer}/auth"),
                            "token_endpoint": format!("{issuer}/token"),
                            "jwks_uri": format!("{issuer}/jwks"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                        }))
                    }
                }),
            )
            .route(
                "/jwks",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"keys": []})) }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", port))
    .unwrap();
    let srv = srv.run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    (port, handle)
}

// ---- Helpers ------------------------------------------------------------------------------

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

async fn principal(db: &TestDb, w: &World, slug: &str, role: Role) -> Principal {
    db.tokens()
        .authenticate(w.token(slug, role))
        .await
        .unwrap()
        .unwrap()
}

fn webhook(url: String) -> NewChannel {
    NewChannel {
        tenant_id: None,
        kind: ChannelKind::Webhook,
        name: "情報システム室 webhook".into(),
        url: Some(url),
        recipients: None,
        min_severity: None,
    }
}

/// Records a bulk export by a new person in `tenant` and seals it: the `export.bulk` rule raises
/// an alert, and a delivery job is queued for each of the tenant's channels.
async fn raise_alert(db: &TestDb, state: &AppState, tenant: Uuid) {
    let e = AuditEvent::new(
        tenant,
        Actor::user(
            Uuid::now_v7(),
            "dr.sato@clinic.example.jp",
            tenant,
            "institution_staff",
        ),
        "audit.export",
        Outcome::Success,
    )
    .detail("count", 5000);
    let tx = begin_tenant_tx(&db.app, tenant).await.unwrap();
    anshin_audit::record(&tx, &e).await.unwrap();
    tx.commit().await.unwrap();
    state.audit.sealer().seal_all().await.unwrap();
}

fn worker(db: &TestDb, job: AlertDeliveryJob) -> Worker {
    Worker::new(
        db.app.clone(),
        WorkerOptions {
            backoff_base: Duration::from_millis(40),
            max_backoff: Duration::from_millis(200),
            poll_interval: Duration::from_millis(20),
            run_scheduler: false,
            ..WorkerOptions::default()
        },
    )
    .register(job)
}

/// Runs delivery jobs until every one has finished.
async fn deliver_all(db: &TestDb, worker: &Worker) -> Vec<JobRecord> {
    let queue = JobQueue::new(db.app.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if !worker.run_one().await.unwrap() {
            let jobs = queue.list_by_kind(alerts::DELIVERY_JOB).await.unwrap();
            if jobs
                .iter()
                .all(|j| matches!(j.status, JobStatus::Succeeded | JobStatus::Failed))
            {
                return jobs;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "delivery jobs did not finish: {jobs:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The request a channel's delivery made (found by the token in its URL), checked against the
/// secret its administrator was given.
fn assert_signed_delivery(got: &[Received], token: &str, secret: &str) {
    let (uri, h, body) = got
        .iter()
        .find(|(uri, _, _)| uri.contains(token))
        .unwrap_or_else(|| panic!("no delivery to the URL with {token}: {got:?}"));
    assert_eq!(
        uri,
        &format!("/hook?token={token}"),
        "the full URL, query included"
    );
    assert!(
        alerts::verify_webhook(
            secret,
            &h[alerts::TIMESTAMP_HEADER],
            &h[alerts::SIGNATURE_HEADER],
            body,
            Utc::now(),
            Duration::from_secs(300)
        ),
        "signed with the channel's secret"
    );
    assert!(!alerts::verify_webhook(
        "whsec_wrong",
        &h[alerts::TIMESTAMP_HEADER],
        &h[alerts::SIGNATURE_HEADER],
        body,
        Utc::now(),
        Duration::from_secs(300)
    ));
}

/// Delivery jobs not finished yet.
async fn pending(db: &TestDb) -> Vec<JobRecord> {
    JobQueue::new(db.app.clone())
        .list_by_kind(alerts::DELIVERY_JOB)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| !matches!(j.status, JobStatus::Succeeded | JobStatus::Failed))
        .collect()
}

/// The bodies of the audit events with `action`.
async fn events(db: &TestDb, action: &str) -> Vec<String> {
    strings(
        db,
        &format!("SELECT body FROM audit_events WHERE action = '{action}'"),
    )
    .await
}

fn idp_secret(db: &TestDb, tenant: Uuid) -> String {
    format!(
        "SELECT client_secret_sealed FROM identity_providers WHERE tenant_id = {}",
        lit(db, tenant)
    )
}

fn channel_col(db: &TestDb, col: &str, id: Uuid) -> String {
    format!(
        "SELECT {col} FROM audit_notification_channels WHERE id = {}",
        lit(db, id)
    )
}

/// Every stored secret of these identity providers and channels.
async fn snapshot(db: &TestDb, tenants: &[Uuid], channels: &[Uuid]) -> Vec<String> {
    let mut all = Vec::new();
    for t in tenants {
        all.extend(strings(db, &idp_secret(db, *t)).await);
    }
    for id in channels {
        all.extend(strings(db, &channel_col(db, "secret_sealed", *id)).await);
        all.extend(strings(db, &channel_col(db, "url_sealed", *id)).await);
    }
    all
}

fn anshin(db: &TestDb, args: &[&str]) -> Output {
    let mut c = Command::new(anshin_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ANSHIN_LOG", "warn");
    for (k, v) in &db.env {
        c.env(k, v);
    }
    c.output()
        .expect("run anshin (build it first: cargo build --bin anshin)")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The stored row of a platform secret, read as the platform.
async fn platform_secret_row(db: &TestDb, name: &str) -> Option<Vec<u8>> {
    let tx = begin_platform_tx(&db.app).await.unwrap();
    let backend = db.app.get_database_backend();
    let row = tx
        .query_one(Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    "SELECT sealed FROM key_index_keys WHERE purpose = $1"
                }
                _ => "SELECT sealed FROM key_index_keys WHERE purpose = ?",
            },
            [format!("secret:{name}").into()],
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    row.map(|r| r.try_get_by_index::<Vec<u8>>(0).unwrap())
}

both_backends! {
    async fn signing_keys_are_sealed_by_the_key_service_and_shared_by_replicas(db) {
        use anshin_server::signing_keys::{AUDIT_SIGNING_KEY, TOKEN_SIGNING_KEY};
        let a = db.state().await;
        let b = db.state().await;
        // One key for every replica, published the same way by each.
        assert_eq!(a.clients.keys().kid(), b.clients.keys().kid());
        assert_eq!(a.audit.public_key(), b.audit.public_key());
        // Never a file; stored only as key-service envelopes.
        for f in ["identity-token-signing.key", "audit-signing.key"] {
            assert!(!db.data_dir.join(f).exists(), "{f}");
        }
        let token_row = platform_secret_row(&db, TOKEN_SIGNING_KEY).await.expect("stored");
        assert!(!String::from_utf8_lossy(&token_row).contains("PRIVATE KEY"));
        let stored = a.keys.platform_secret(TOKEN_SIGNING_KEY, || panic!("already stored")).await.unwrap();
        let pem = String::from_utf8(stored.to_vec()).unwrap();
        assert_eq!(anshin_identity::clients::TokenKeys::from_pkcs8_pem(&pem).unwrap().kid(), a.clients.keys().kid());
        let seed = platform_secret_row(&db, AUDIT_SIGNING_KEY).await.expect("stored");
        assert!(seed.len() > 32, "an envelope, not the seed");
    }

    async fn signing_key_files_of_earlier_versions_are_imported_then_removed(db) {
        use anshin_server::signing_keys::{legacy_audit_key_file, legacy_token_key_file, AUDIT_SIGNING_KEY};
        // Keys as an earlier version wrote them, one unusable: the start stops with a clear
        // error and that key is not stored.
        std::fs::create_dir_all(&db.data_dir).unwrap();
        let pem = anshin_identity::clients::TokenKeys::generate_pkcs8_pem().unwrap();
        let token_file = legacy_token_key_file(&db.config);
        std::fs::write(&token_file, &pem).unwrap();
        let audit_file = legacy_audit_key_file(&db.config);
        std::fs::write(&audit_file, b"short").unwrap();
        let web = anshin_server::web::Web::load(db.config.http.insecure_cookies).unwrap();
        let e = AppState::new(db.app.clone(), web, ServiceSet::all(), &db.config).await.err().expect("refused");
        assert!(e.to_string().contains("audit-signing.key cannot be imported"), "{e}");
        assert!(platform_secret_row(&db, AUDIT_SIGNING_KEY).await.is_none());
        assert!(audit_file.exists(), "left for the operator");

        // Once it is put right: the same keys as the files held, the files gone.
        std::fs::write(&audit_file, [9u8; 32]).unwrap();
        let state = db.state().await;
        assert_eq!(state.clients.keys().kid(), anshin_identity::clients::TokenKeys::from_pkcs8_pem(&pem).unwrap().kid());
        assert_eq!(state.audit.public_key(), anshin_audit::Signer::public_key(&anshin_audit::LocalSigner::from_seed(&[9u8; 32])));
        assert!(!token_file.exists() && !audit_file.exists(), "imported files are removed");
        // The next start uses the stored keys.
        let again = db.state().await;
        assert_eq!(again.audit.public_key(), state.audit.public_key());
    }

    async fn channels_are_sealed_by_the_key_service_and_wait_out_an_outage(db) {
        let w = World::build(&db).await;
        let flaky = Arc::new(Flaky {
            inner: anshin_server::keys::local_provider(&db.config).unwrap(),
            down: AtomicBool::new(false),
        });
        let web = anshin_server::web::Web::load(db.config.http.insecure_cookies).unwrap();
        let state = AppState::with_key_provider(db.app.clone(), web, ServiceSet::all(), &db.config, flaky.clone()).await.unwrap();
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        let receiver = Receiver::default();
        let (port, server) = start_peer(receiver.clone());
        let clinic_admin = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionAdmin)));

        // A webhook channel through the API: its secret and full URL are key-service envelopes.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/audit/notification-channels")
            .insert_header(clinic_admin.clone())
            .set_json(json!({"kind": "webhook", "name": "SOC", "url": format!("http://127.0.0.1:{port}/hook?token=first")}))
            .to_request()).await;
        assert_eq!(res.status().as_u16(), 201);
        let created: Value = test::read_body_json(res).await;
        let secret = created["secret"].as_str().unwrap().to_string();
        let channel = Uuid::parse_str(created["channel"]["id"].as_str().unwrap()).unwrap();
        let stored_secret = strings(&db, &channel_col(&db, "secret_sealed", channel)).await.pop().unwrap();
        let stored_url = strings(&db, &channel_col(&db, "url_sealed", channel)).await.pop().unwrap();
        for s in [&stored_secret, &stored_url] {
            assert!(s.starts_with("anshin-env1:"), "{s}");
            assert!(!s.contains(&secret) && !s.contains("token=first"));
        }
        for purpose in [alerts::WEBHOOK_SECRET_PURPOSE, alerts::WEBHOOK_URL_PURPOSE] {
            let n = db.count_platform(&format!("SELECT COUNT(*) FROM key_data_keys WHERE tenant_id = {} AND purpose = '{purpose}'", lit(&db, w.c1.id))).await;
            assert_eq!(n, 1, "a data key of the clinic wrapped under its KEK for {purpose}");
        }
        // Bound to its channel: the secret does not open as the URL, nor for another tenant.
        let ctx = format!("audit-webhook:{}:{channel}", w.c1.id);
        assert_eq!(state.keys.open_text(w.c1.id, alerts::WEBHOOK_SECRET_PURPOSE, &ctx, &stored_secret).await.unwrap().as_str(), secret);
        assert!(state.keys.open_text(w.c1.id, alerts::WEBHOOK_URL_PURPOSE, &ctx, &stored_secret).await.is_err());
        assert!(state.keys.open_text(w.c2.id, alerts::WEBHOOK_SECRET_PURPOSE, &ctx, &stored_secret).await.is_err());

        // Delivered by the job with the key service, signed with the secret the admin was given.
        raise_alert(&db, &state, w.c1.id).await;
        let worker_a = worker(&db, AlertDeliveryJob::new(state.alert_secrets.clone(), None).unwrap().with_sealer(state.keys.sealer()));
        let jobs = deliver_all(&db, &worker_a).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, JobStatus::Succeeded, "{jobs:?}");
        assert_eq!(receiver.got.lock().unwrap().len(), 1);
        assert_signed_delivery(&receiver.got.lock().unwrap(), "first", &secret);
        // Without the key service the same channel cannot be read, so nothing is sent.
        raise_alert(&db, &state, w.c1.id).await;
        let jobs = deliver_all(&db, &worker(&db, AlertDeliveryJob::new(state.alert_secrets.clone(), None).unwrap())).await;
        let blind = jobs.iter().find(|j| j.status == JobStatus::Failed).expect("the job without the key service fails");
        assert!(blind.last_error.as_deref().unwrap_or("").contains("not configured"), "{blind:?}");
        assert_eq!(receiver.got.lock().unwrap().len(), 1);

        // The key provider goes away.
        flaky.down.store(true, Ordering::SeqCst);
        let hospital_admin = ("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionAdmin)));
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/audit/notification-channels")
            .insert_header(hospital_admin.clone())
            .set_json(json!({"kind": "webhook", "name": "SOC", "url": format!("http://127.0.0.1:{port}/hook?token=outage")}))
            .to_request()).await;
        assert_eq!(res.status().as_u16(), 503);
        assert!(res.headers().get("retry-after").is_some());
        let problem: Value = test::read_body_json(res).await;
        assert_eq!(problem["type"], "urn:anshin:problem:key-provider-unavailable", "{problem}");
        assert!(!problem.to_string().contains("token=outage"));
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM audit_notification_channels WHERE tenant_id = {}", lit(&db, w.h1.id))).await, 0, "nothing stored");
        assert_eq!(events(&db, "audit.notification_channel.create").await.len(), 1);

        // A delivery in a process with no key in memory waits: each attempt is recorded as failed
        // and retried, and nothing is sent until the provider answers again.
        let cold: KeyService = anshin_server::keys::service(db.app.clone(), &db.config, flaky.clone());
        let worker_b = worker(&db, AlertDeliveryJob::new(state.alert_secrets.clone(), None).unwrap().with_sealer(cold.sealer()));
        raise_alert(&db, &state, w.c1.id).await;
        assert_eq!(pending(&db).await.len(), 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            worker_b.run_one().await.unwrap();
            let p = pending(&db).await;
            if p.first().is_some_and(|j| j.attempts >= 2) {
                assert_eq!(p[0].status, JobStatus::Queued, "retried, not given up: {p:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no retried attempt: {p:?}");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(receiver.got.lock().unwrap().len(), 1, "nothing sent without the secret");
        let admin = principal(&db, &w, "alpha-clinic", Role::InstitutionAdmin).await;
        let attempts = state.alerts.deliveries(&admin, channel, None).await.unwrap();
        let waiting: Vec<_> = attempts.iter().filter(|d| d.error.as_deref().unwrap_or("").contains("key service is unavailable")).collect();
        assert!(waiting.len() >= 2, "{attempts:?}");
        assert!(waiting.iter().all(|d| d.status == "failed" && d.status_code.is_none()));
        assert!(attempts.iter().all(|d| !d.error.as_deref().unwrap_or("").contains(&secret)));

        // Back: the same job delivers, signed with the same secret.
        flaky.down.store(false, Ordering::SeqCst);
        let jobs = deliver_all(&db, &worker_b).await;
        assert_eq!(jobs.iter().filter(|j| j.status == JobStatus::Succeeded).count(), 2, "{jobs:?}");
        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_signed_delivery(&got[1..], "first", &secret);
        server.stop(true).await;
    }

    async fn interim_secrets_are_moved_under_the_tenants_keys_once(db) {
        let w = World::build(&db).await;
        let receiver = Receiver::default();
        let (port, server) = start_peer(receiver.clone());
        let clinic = principal(&db, &w, "alpha-clinic", Role::InstitutionAdmin).await;
        let hospital = principal(&db, &w, "alpha-hospital", Role::InstitutionAdmin).await;
        let provider = principal(&db, &w, "alpha-cloud", Role::ProviderAdmin).await;

        // Before the key service: services built with the interim secret boxes only.
        let legacy_identity = anshin_tests::identity_service(&db, "http://localhost:8080").sealing_secrets_with_secret_box();
        let legacy_alerts = AlertService::new(db.app.clone(), Arc::new(alerts::RuleSet::shipped().unwrap()), alerts::secretbox::load(&db.data_dir).unwrap());
        let settings = |secret: &str| anshin_identity::ProviderSettings {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: "anshin".into(),
            client_secret: Some(secret.into()),
            allowed_domains: vec!["example.jp".into()],
            default_role: Role::InstitutionStaff,
            jit_provisioning: false,
            accepted_acr: vec![],
        };
        legacy_identity.set_identity_provider(&clinic, settings("clinic-client-secret-0001")).await.unwrap();
        legacy_identity.set_identity_provider(&hospital, settings("hospital-client-secret-0002")).await.unwrap();
        let src = Source::default();
        let c_channel = legacy_alerts.create_channel(&clinic, webhook(format!("http://127.0.0.1:{port}/hook?token=clinic")), &src).await.unwrap();
        let p_channel = legacy_alerts.create_channel(&provider, webhook(format!("http://127.0.0.1:{port}/hook?token=provider")), &src).await.unwrap();
        let (tenants, channels) = ([w.c1.id, w.h1.id], [c_channel.channel.id, p_channel.channel.id]);
        let before = snapshot(&db, &tenants, &channels).await;
        assert_eq!(before.len(), 6);
        assert!(before.iter().all(|s| !s.is_empty() && !s.starts_with("anshin-env1:")), "{before:?}");

        // The operator's command: batches of one, every value moved, each change audited.
        let o = anshin(&db, &["keys", "reencrypt", "--batch", "1"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
        let stdout = out(&o);
        assert!(stdout.contains("Identity provider client secrets: 2 found under the interim key, 2 sealed under the tenant's KEK, 0 left."), "{stdout}");
        assert!(stdout.contains("Alert webhook secrets and URLs: 2 found under the interim key, 2 sealed under the tenant's KEK, 0 left."), "{stdout}");
        assert!(stdout.contains("People's e-mail addresses: 0 found stored readable, 0 sealed under the tenant's KEK, 0 left."), "addresses have their own line: {stdout}");
        let after = snapshot(&db, &tenants, &channels).await;
        assert!(after.iter().all(|s| s.starts_with("anshin-env1:")), "{after:?}");
        for s in &after {
            assert!(!s.contains("client-secret") && !s.contains("token="));
        }
        let idp_events = events(&db, "identity_provider.client_secret.reseal").await;
        let channel_events = events(&db, "audit.notification_channel.reseal").await;
        assert_eq!((idp_events.len(), channel_events.len()), (2, 2));
        for b in idp_events.iter().chain(&channel_events) {
            assert!(b.contains("anshin-cli:") && b.contains("secretbox") && b.contains("key-service"), "{b}");
            assert!(!b.contains("client-secret-000") && !b.contains("whsec_") && !b.contains("token="), "no secret in the trail: {b}");
        }
        for t in [w.c1.id, w.h1.id] {
            assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE action = 'identity_provider.client_secret.reseal' AND tenant_id = {}", lit(&db, t))).await, 1);
        }

        // Still the same plaintext, opened under each tenant's key …
        let state = db.state().await;
        let keys = state.keys.clone();
        let c_idp = strings(&db, &idp_secret(&db, w.c1.id)).await.pop().unwrap();
        let h_idp = strings(&db, &idp_secret(&db, w.h1.id)).await.pop().unwrap();
        let ctx = |t: Uuid| format!("identity-provider:{t}");
        assert_eq!(keys.open_text(w.c1.id, OIDC_PURPOSE, &ctx(w.c1.id), &c_idp).await.unwrap().as_str(), "clinic-client-secret-0001");
        assert_eq!(keys.open_text(w.h1.id, OIDC_PURPOSE, &ctx(w.h1.id), &h_idp).await.unwrap().as_str(), "hospital-client-secret-0002");
        assert!(keys.open_text(w.h1.id, OIDC_PURPOSE, &ctx(w.h1.id), &c_idp).await.is_err(), "bound to its tenant");
        // … by sign-in itself (starting an OIDC sign-in opens the client secret) …
        let start = state.identity.oidc_start("alpha-clinic", None).await.unwrap();
        assert!(start.as_str().starts_with(&format!("http://127.0.0.1:{port}/auth?")), "{start}");
        // … and by alert delivery, to the full URL with the secret the admin was given.
        raise_alert(&db, &state, w.c1.id).await;
        let job = AlertDeliveryJob::new(state.alert_secrets.clone(), None).unwrap().with_sealer(keys.sealer());
        let jobs = deliver_all(&db, &worker(&db, job)).await;
        assert!(!jobs.is_empty() && jobs.iter().all(|j| j.status == JobStatus::Succeeded), "{jobs:?}");
        assert_signed_delivery(&receiver.got.lock().unwrap(), "clinic", c_channel.secret.as_deref().unwrap());

        // A second pass finds nothing and changes nothing.
        let o = anshin(&db, &["keys", "reencrypt"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
        assert!(out(&o).contains("Identity provider client secrets: 0 found"), "{}", out(&o));
        assert!(out(&o).contains("Alert webhook secrets and URLs: 0 found"), "{}", out(&o));
        assert_eq!(snapshot(&db, &tenants, &channels).await, after);
        assert_eq!(events(&db, "identity_provider.client_secret.reseal").await.len(), 2);
        assert_eq!(events(&db, "audit.notification_channel.reseal").await.len(), 2);
        // Bad usage changes nothing.
        let o = anshin(&db, &["keys", "reencrypt", "--batch", "0"]);
        assert_eq!(o.status.code(), Some(2), "{}", err(&o));
        assert!(err(&o).contains("--batch"), "{}", err(&o));

        // Crypto-erase of the clinic: its re-sealed secrets no longer open, anywhere.
        keys.crypto_erase(Actor::operator(), w.c1.id, None).await.unwrap();
        let cold = db.state().await;
        for k in [&keys, &cold.keys] {
            assert!(matches!(k.open_text(w.c1.id, OIDC_PURPOSE, &ctx(w.c1.id), &c_idp).await, Err(KeyError::KeyDestroyed(_))));
            let s = strings(&db, &channel_col(&db, "secret_sealed", c_channel.channel.id)).await.pop().unwrap();
            let c = format!("audit-webhook:{}:{}", w.c1.id, c_channel.channel.id);
            assert!(k.open_text(w.c1.id, alerts::WEBHOOK_SECRET_PURPOSE, &c, &s).await.is_err());
        }
        assert!(state.identity.oidc_start("alpha-clinic", None).await.is_err(), "sign-in cannot use the erased secret");
        // The hospital's is untouched.
        assert_eq!(cold.keys.open_text(w.h1.id, OIDC_PURPOSE, &ctx(w.h1.id), &h_idp).await.unwrap().as_str(), "hospital-client-secret-0002");
        assert!(state.identity.oidc_start("alpha-hospital", None).await.is_ok());

        // A value still under the interim key for an erased tenant cannot be moved: the command
        // says so and fails.
        let left = legacy_alerts.create_channel(&clinic, webhook(format!("http://127.0.0.1:{port}/hook?token=late")), &src).await.unwrap();
        let o = anshin(&db, &["keys", "reencrypt"]);
        assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
        assert!(out(&o).contains("Alert webhook secrets and URLs: 1 found under the interim key, 0 sealed under the tenant's KEK, 1 left."), "{}", out(&o));
        assert!(err(&o).contains("could not be sealed under their tenant's KEK"), "{}", err(&o));
        assert!(err(&o).contains(&left.channel.id.to_string()), "the log names the channel: {}", err(&o));
        assert!(!err(&o).contains("token=late") && !err(&o).contains(left.secret.as_deref().unwrap()));
        server.stop(true).await;
    }

    async fn the_server_moves_interim_secrets_by_itself(db) {
        let w = World::build(&db).await;
        let clinic = principal(&db, &w, "alpha-clinic", Role::InstitutionAdmin).await;
        let legacy_identity = anshin_tests::identity_service(&db, "http://localhost:8080").sealing_secrets_with_secret_box();
        legacy_identity.set_identity_provider(&clinic, anshin_identity::ProviderSettings {
            issuer: "https://login.aoba.example.jp".into(),
            client_id: "anshin".into(),
            client_secret: Some("clinic-client-secret-0003".into()),
            allowed_domains: vec!["aoba.example.jp".into()],
            default_role: Role::InstitutionStaff,
            jit_provisioning: false,
            accepted_acr: vec![],
        }).await.unwrap();
        let stored = || async { strings(&db, &idp_secret(&db, w.c1.id)).await.pop().unwrap() };
        assert!(!stored().await.starts_with("anshin-env1:"));

        // `anshin serve` with its worker: the `keys.reencrypt` job is due at the first start.
        let port = free_port();
        let mut c = Command::new(anshin_bin());
        c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ANSHIN_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in &db.env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let moved = loop {
            let s = stored().await;
            if s.starts_with("anshin-env1:") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                child.kill().ok();
                panic!("the server did not re-encrypt the client secret: {s}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        child.kill().ok();
        child.wait().ok();
        let keys = db.state().await.keys;
        let ctx = format!("identity-provider:{}", w.c1.id);
        assert_eq!(keys.open_text(w.c1.id, OIDC_PURPOSE, &ctx, &moved).await.unwrap().as_str(), "clinic-client-secret-0003");
        let events = events(&db, "identity_provider.client_secret.reseal").await;
        assert_eq!(events.len(), 1);
        assert!(events[0].contains("keys.reencrypt"), "the job is the actor: {}", events[0]);
    }
}
