//! Audit alerts against a real database, on SQLite and PostgreSQL (as an owner that migrates and
//! an application role subject to row-level security, like a deployment): events recorded with
//! `store::record`, sealed by a `Sealer` with the alert engine as its hook; the inbox and the API
//! with scope-before-role; webhooks delivered to a local HTTP receiver (HMAC checked, a failing
//! receiver retried, every attempt recorded); mail delivered to a real SMTP server (aiosmtpd).
//!
//! PostgreSQL comes from `TEST_PG_ADMIN_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::{test, web, App, HttpRequest, HttpResponse, HttpServer};
use anshin_audit::alerts::{
    self, AlertDeliveryJob, AlertEngine, AlertError, AlertMailer, AlertQuery, AlertService,
    AlertStatus, AlertView, ChannelKind, NewChannel, PutRules, RuleOverride, RuleSet, SecretBox,
    Severity, DELIVERY_JOB,
};
use anshin_audit::{
    record_all, register_tenant, Actor, ActorKind, AuditEvent, LocalSigner, Outcome, Sealer, Source,
};
use anshin_platform::config::DatabaseConfig;
use anshin_platform::db::{self, begin_platform_tx, begin_tenant_tx, TableGrant};
use anshin_platform::http::{Authenticator, SharedAuthenticator};
use anshin_platform::jobs::{JobQueue, JobStatus, Worker, WorkerOptions};
use anshin_platform::secret::Secret;
use anshin_platform::{Principal, Problem, Role, Subject, TenantKind};
use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

// ---- Database on both backends ------------------------------------------------------------

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        // `anshin_audit::migrations()` includes `alerts::migrations()`.
        let mut all = anshin_platform::migration::migrations();
        all.extend(anshin_audit::migrations());
        all
    }
}

fn grants() -> Vec<TableGrant> {
    let mut all = vec![TableGrant {
        table: "seaql_migrations",
        privileges: "SELECT",
    }];
    all.extend(anshin_platform::migration::grants());
    // Includes `alerts::grants()`.
    all.extend(anshin_audit::grants());
    all
}

const OWNER_ROLE: &str = "anshin_owner";
const APP_ROLE: &str = "anshin_app";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

fn pg_admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin_exec(sql: &str) {
    let admin = sea_orm::Database::connect(pg_admin_url())
        .await
        .expect("PostgreSQL must be reachable for the PostgreSQL half of the suite");
    admin.execute_unprepared(sql).await.expect(sql);
    admin.close().await.ok();
}

async fn ensure_roles() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        admin_exec(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
                 CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS CREATEDB;
               END IF;
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                 CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
               END IF;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;"
        ))
        .await;
    })
    .await;
}

struct TestDb {
    app: DatabaseConnection,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestDb {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let cfg = DatabaseConfig {
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        let app = match backend {
            Backend::Sqlite => {
                let url = Secret::new(format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("anshin.db").display()
                ));
                let db = db::connect(&url, &cfg).await.unwrap();
                Migrator::up(&db, None).await.unwrap();
                db
            }
            Backend::Postgres => {
                ensure_roles().await;
                let name = format!("anshin_audit_t_{}", Uuid::new_v4().simple());
                admin_exec(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}")).await;
                let u = url::Url::parse(&pg_admin_url()).unwrap();
                let (host, port) = (
                    u.host_str().unwrap_or("127.0.0.1").to_string(),
                    u.port().unwrap_or(5432),
                );
                let owner_url =
                    Secret::new(format!("postgres://{OWNER_ROLE}@{host}:{port}/{name}"));
                let owner = db::connect(&owner_url, &cfg).await.unwrap();
                Migrator::up(&owner, None).await.unwrap();
                db::apply_grants(&owner, APP_ROLE, &grants(), &[])
                    .await
                    .unwrap();
                owner.close().await.ok();
                let app_url = Secret::new(format!("postgres://{APP_ROLE}@{host}:{port}/{name}"));
                db::connect(&app_url, &cfg).await.unwrap()
            }
        };
        Self {
            app,
            data_dir,
            _dir: dir,
        }
    }

    /// A number from a query in platform scope (RLS admits every tenant).
    async fn count(&self, sql: &str) -> i64 {
        let tx = begin_platform_tx(&self.app).await.unwrap();
        let row = tx
            .query_one(Statement::from_string(
                tx.get_database_backend(),
                sql.to_string(),
            ))
            .await
            .expect(sql)
            .expect("one row");
        tx.commit().await.unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    }

    async fn strings(&self, sql: &str) -> Vec<String> {
        let tx = begin_platform_tx(&self.app).await.unwrap();
        let rows = tx
            .query_all(Statement::from_string(
                tx.get_database_backend(),
                sql.to_string(),
            ))
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
}

macro_rules! both_backends {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[actix_web::test]
                async fn sqlite() {
                    run(TestDb::new(Backend::Sqlite).await).await
                }
                #[actix_web::test]
                async fn postgres() {
                    run(TestDb::new(Backend::Postgres).await).await
                }
                async fn run($db: TestDb) $body
            }
        )*
    };
}

// ---- Tenants, principals, events ----------------------------------------------------------

struct World {
    provider: Uuid,
    clinic: Uuid,
    other_provider: Uuid,
    other_clinic: Uuid,
}

impl World {
    async fn build(db: &TestDb) -> Self {
        let w = Self {
            provider: Uuid::now_v7(),
            clinic: Uuid::now_v7(),
            other_provider: Uuid::now_v7(),
            other_clinic: Uuid::now_v7(),
        };
        let tx = begin_platform_tx(&db.app).await.unwrap();
        register_tenant(&tx, w.clinic, w.provider).await.unwrap();
        register_tenant(&tx, w.other_clinic, w.other_provider)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        w
    }

    fn clinic_as(&self, role: Role) -> Principal {
        principal(self.clinic, TenantKind::Institution, role)
    }
}

fn principal(tenant: Uuid, kind: TenantKind, role: Role) -> Principal {
    Principal {
        subject: Subject::ApiToken {
            id: Uuid::now_v7(),
            name: format!("{role} token"),
        },
        tenant_id: tenant,
        tenant_kind: kind,
        role,
        grant: None,
    }
}

async fn record(db: &TestDb, events: &[AuditEvent]) {
    let mut by_tenant: HashMap<Uuid, Vec<AuditEvent>> = HashMap::new();
    for e in events {
        by_tenant.entry(e.tenant_id).or_default().push(e.clone());
    }
    for (tenant, evs) in by_tenant {
        let tx = begin_tenant_tx(&db.app, tenant).await.unwrap();
        record_all(&tx, &evs).await.unwrap();
        tx.commit().await.unwrap();
    }
}

fn sealer(db: &TestDb, engine: AlertEngine) -> Sealer {
    Sealer::new(
        db.app.clone(),
        Arc::new(LocalSigner::from_seed(&[7; 32])),
        1000,
    )
    .with_hook(Arc::new(engine))
}

fn services(db: &TestDb) -> (AlertService, SecretBox) {
    let rules = Arc::new(RuleSet::shipped().unwrap());
    let secrets = anshin_audit::alerts::secretbox::load(&db.data_dir).unwrap();
    (
        AlertService::new(db.app.clone(), rules, secrets.clone()),
        secrets,
    )
}

fn failed_sign_in(tenant: Uuid, who: &str, at: DateTime<Utc>) -> AuditEvent {
    let mut e = AuditEvent::new(
        tenant,
        Actor::anonymous(Some(who)),
        "auth.sign_in",
        Outcome::Failure,
    )
    .source(Source::new(Some("203.0.113.5".into()), Some("test"), None));
    e.time = at;
    e
}

fn break_glass(tenant: Uuid) -> AuditEvent {
    AuditEvent::new(
        tenant,
        Actor {
            kind: ActorKind::BreakGlass,
            id: Some(format!("break-glass-{tenant}")),
            label: Some("break-glass".into()),
            tenant_id: Some(tenant),
            role: Some("institution_admin".into()),
            session_id: None,
            grant_id: None,
        },
        "break_glass.use",
        Outcome::Success,
    )
    .reason("救急外来で患者の既往歴を至急確認するため")
}

fn staff(tenant: Uuid) -> Actor {
    Actor::user(
        Uuid::now_v7(),
        "dr.sato@clinic.example.jp",
        tenant,
        "institution_staff",
    )
}

async fn alerts_of(svc: &AlertService, p: &Principal) -> Vec<AlertView> {
    svc.list(
        p,
        &AlertQuery {
            limit: Some(500),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .items
}

fn by_rule<'a>(alerts: &'a [AlertView], rule: &str) -> Vec<&'a AlertView> {
    alerts.iter().filter(|a| a.rule_id == rule).collect()
}

// ---- A webhook receiver and a mail server -------------------------------------------------

/// A received request: its headers and body.
type Received = (HashMap<String, String>, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

async fn hook(req: HttpRequest, body: web::Bytes, st: web::Data<Receiver>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    st.got.lock().unwrap().push((headers, body.to_vec()));
    let failing = st
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        HttpResponse::InternalServerError().body("not today")
    } else {
        HttpResponse::NoContent().finish()
    }
}

fn start_receiver(r: Receiver) -> (u16, actix_web::dev::ServerHandle) {
    let srv = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(r.clone()))
            .route("/hook", web::post().to(hook))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = srv.addrs()[0].port();
    let srv = srv.run();
    let handle = srv.handle();
    actix_web::rt::spawn(srv);
    (port, handle)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The workspace's test SMTP server (`tests/python/smtp_receiver.py`, Python aiosmtpd from
/// `.venv`); every message is a JSON line in `mailbox`. Stopped when dropped.
struct Smtp {
    child: std::process::Child,
    port: u16,
    mailbox: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Smtp {
    fn start(dir: &std::path::Path) -> Self {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the Python test peers are missing: run ./infra/test.sh (it creates .venv)"
        );
        let port = free_port();
        let mailbox = dir.join("mailbox.jsonl");
        let child = std::process::Command::new(python)
            .arg(root.join("tests/python/smtp_receiver.py"))
            .arg(port.to_string())
            .arg(&mailbox)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let smtp = Self {
            child,
            port,
            mailbox,
        };
        assert!(wait_for_port(port, 30), "aiosmtpd did not start");
        smtp
    }

    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.mailbox)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Runs delivery jobs with a fast back-off until every one of them has finished.
async fn deliver_all(db: &TestDb, job: AlertDeliveryJob) -> Vec<anshin_platform::jobs::JobRecord> {
    let worker = Worker::new(
        db.app.clone(),
        WorkerOptions {
            backoff_base: Duration::from_millis(40),
            max_backoff: Duration::from_millis(200),
            poll_interval: Duration::from_millis(20),
            run_scheduler: false,
            ..WorkerOptions::default()
        },
    )
    .register(job);
    let queue = JobQueue::new(db.app.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if !worker.run_one().await.unwrap() {
            let jobs = queue.list_by_kind(DELIVERY_JOB).await.unwrap();
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

fn webhook(tenant: Option<Uuid>, url: String, min: Option<Severity>) -> NewChannel {
    NewChannel {
        tenant_id: tenant,
        kind: ChannelKind::Webhook,
        name: "情報システム室 webhook".into(),
        url: Some(url),
        recipients: None,
        min_severity: min,
    }
}

// ---- The tests ----------------------------------------------------------------------------

both_backends! {
    async fn rules_raise_deduplicated_alerts_and_the_inbox_is_scoped(db) {
        let w = World::build(&db).await;
        let (svc, _) = services(&db);
        let sealer = sealer(&db, svc.engine());
        let now = Utc::now();
        let admin = w.clinic_as(Role::InstitutionAdmin);

        // Five failed sign-ins for yui within ten minutes (four for ren): one alert, for yui.
        let yui: Vec<_> = (0..5)
            .map(|i| failed_sign_in(w.clinic, "yui@clinic.example.jp", now - ChronoDuration::seconds(300 - i * 30)))
            .collect();
        let ren: Vec<_> = (0..4)
            .map(|i| failed_sign_in(w.clinic, "ren@clinic.example.jp", now - ChronoDuration::seconds(200 - i * 10)))
            .collect();
        // A record opened at 00:30 in Tokyo (15:30 UTC the day before).
        let mut late = AuditEvent::new(w.clinic, staff(w.clinic), "record.open", Outcome::Success)
            .target(anshin_audit::Target::new("patient_record", "P-0001"));
        late.time = Utc.with_ymd_and_hms(2026, 1, 5, 15, 30, 0).unwrap();
        let export = AuditEvent::new(w.clinic, staff(w.clinic), "audit.export", Outcome::Success)
            .detail("count", 25_000);
        let small_export = AuditEvent::new(w.clinic, staff(w.clinic), "audit.export", Outcome::Success)
            .detail("count", 10);
        let mut maint = AuditEvent::new(w.clinic, staff(w.clinic), "tenant.update", Outcome::Denied);
        maint.actor.kind = ActorKind::MaintenanceGrant;
        maint.actor.grant_id = Some(Uuid::now_v7());
        // Another tenant's break-glass use raises that tenant's alert only.
        let mut events = yui.clone();
        events.extend(ren);
        events.extend([break_glass(w.clinic), late, export, small_export, maint, break_glass(w.other_clinic)]);
        record(&db, &events).await;
        let report = sealer.seal_all().await.unwrap();
        assert_eq!(report.entries, events.len() as u64);

        let alerts = alerts_of(&svc, &admin).await;
        let rules: Vec<_> = {
            let mut r: Vec<_> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
            r.sort();
            r
        };
        assert_eq!(rules, ["auth.sign_in_failures", "break_glass.use", "export.bulk", "maintenance.outside_window", "record.access_off_hours"]);
        assert!(alerts.iter().all(|a| a.tenant_id == w.clinic && a.status == AlertStatus::Open));
        let s = by_rule(&alerts, "auth.sign_in_failures")[0].clone();
        assert_eq!(s.group_key.as_deref(), Some("yui@clinic.example.jp"));
        assert_eq!(s.count, 5);
        assert_eq!(s.first_event_id, yui[0].id);
        assert_eq!(s.last_event_id, yui[4].id);
        assert_eq!(s.severity, Severity::High);
        assert_eq!(s.title_ja, "サインインの失敗が繰り返されています");
        let bg = by_rule(&alerts, "break_glass.use")[0].clone();
        assert_eq!(bg.severity, Severity::Critical);
        assert_eq!(bg.context["reason"], "救急外来で患者の既往歴を至急確認するため");

        // Two more failures join the open alert instead of raising another.
        let more: Vec<_> = (0..2)
            .map(|i| failed_sign_in(w.clinic, "yui@clinic.example.jp", now + ChronoDuration::seconds(i)))
            .collect();
        record(&db, &more).await;
        sealer.seal_all().await.unwrap();
        let alerts = alerts_of(&svc, &admin).await;
        let s = by_rule(&alerts, "auth.sign_in_failures");
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].count, s[0].last_event_id), (7, more[1].id));
        assert_eq!(alerts.len(), 5);

        // Filters.
        let crit = svc.list(&admin, &AlertQuery { severity: Some("critical".into()), ..Default::default() }).await.unwrap();
        assert_eq!(crit.items.len(), 1);
        assert!(matches!(
            svc.list(&admin, &AlertQuery { status: Some("closed".into()), ..Default::default() }).await,
            Err(AlertError::Invalid(_))
        ));

        // Scope before role: the auditor reads; staff may not; the provider sees its
        // institutions; another provider sees nothing and gets "not found".
        assert_eq!(alerts_of(&svc, &w.clinic_as(Role::Auditor)).await.len(), 5);
        assert!(matches!(svc.list(&w.clinic_as(Role::InstitutionStaff), &AlertQuery::default()).await, Err(AlertError::Forbidden(_))));
        let provider_admin = principal(w.provider, TenantKind::Provider, Role::ProviderAdmin);
        assert_eq!(alerts_of(&svc, &provider_admin).await.len(), 5);
        let q = AlertQuery { tenant_id: Some(w.clinic), ..Default::default() };
        assert_eq!(svc.list(&provider_admin, &q).await.unwrap().items.len(), 5);
        let stranger = principal(w.other_provider, TenantKind::Provider, Role::ProviderAdmin);
        assert!(matches!(svc.list(&stranger, &q).await, Err(AlertError::NotFound(_))));
        let theirs = alerts_of(&svc, &stranger).await;
        assert_eq!(theirs.len(), 1, "the other provider sees its own institution's alert");
        assert_eq!(theirs[0].tenant_id, w.other_clinic);
        assert!(matches!(svc.get(&stranger, bg.id).await, Err(AlertError::NotFound(_))));
        let src = Source::default();
        assert!(matches!(svc.acknowledge(&stranger, bg.id, None, &src).await, Err(AlertError::NotFound(_))));
        assert!(matches!(svc.acknowledge(&w.clinic_as(Role::Auditor), bg.id, None, &src).await, Err(AlertError::Forbidden(_))));

        // Acknowledge, then resolve; each change is itself an audit event.
        let a = svc.acknowledge(&admin, bg.id, Some("院長に確認中".into()), &src).await.unwrap();
        assert_eq!(a.status, AlertStatus::Acknowledged);
        assert_eq!(a.acknowledged_by.as_deref(), Some(admin.subject.label().as_str()));
        assert!(a.acknowledged_at.is_some());
        assert!(matches!(svc.acknowledge(&admin, bg.id, None, &src).await, Err(AlertError::Conflict(_))));
        // A provider admin resolves it for the institution.
        let r = svc.resolve(&provider_admin, bg.id, Some("正当な緊急利用と確認".into()), &src).await.unwrap();
        assert_eq!(r.status, AlertStatus::Resolved);
        assert_eq!(r.note.as_deref(), Some("正当な緊急利用と確認"));
        assert!(matches!(svc.resolve(&admin, bg.id, None, &src).await, Err(AlertError::Conflict(_))));
        assert_eq!(
            db.count(&format!("SELECT COUNT(*) FROM audit_events WHERE action IN ('audit.alert.acknowledge', 'audit.alert.resolve') AND target_id = '{}'", bg.id)).await,
            2
        );
        let q = AlertQuery { status: Some("open".into()), ..Default::default() };
        assert_eq!(svc.list(&admin, &q).await.unwrap().items.len(), 4);

        // Overrides: the admin disables break-glass alerts and lowers the sign-in threshold.
        let put = |o: Vec<RuleOverride>| PutRules { tenant_id: None, overrides: o };
        let ov = vec![
            RuleOverride { rule_id: "break_glass.use".into(), enabled: Some(false), ..Default::default() },
            RuleOverride { rule_id: "auth.sign_in_failures".into(), count: Some(2), window_secs: Some(120), ..Default::default() },
        ];
        assert!(matches!(svc.put_rules(&w.clinic_as(Role::Auditor), put(ov.clone()), &src).await, Err(AlertError::Forbidden(_))));
        let bad = vec![RuleOverride { rule_id: "auth.sign_in_failures".into(), above: Some(3.0), ..Default::default() }];
        assert!(matches!(svc.put_rules(&admin, put(bad), &src).await, Err(AlertError::Invalid(_))));
        let unknown = vec![RuleOverride { rule_id: "no.such.rule".into(), enabled: Some(false), ..Default::default() }];
        assert!(matches!(svc.put_rules(&admin, put(unknown), &src).await, Err(AlertError::Invalid(_))));
        let view = svc.put_rules(&admin, put(ov), &src).await.unwrap();
        let eff = |v: &alerts::RulesView, id: &str| v.rules.iter().find(|r| r.rule.id == id).unwrap().clone();
        assert!(!eff(&view, "break_glass.use").rule.enabled);
        assert!(eff(&view, "break_glass.use").base.enabled);
        assert_eq!(eff(&view, "auth.sign_in_failures").rule.count, Some(2));
        let again = svc.tenant_rules(&w.clinic_as(Role::Auditor), None).await.unwrap();
        assert!(eff(&again, "break_glass.use").tenant_override.is_some());
        assert!(eff(&again, "export.bulk").tenant_override.is_none());
        assert_eq!(db.count("SELECT COUNT(*) FROM audit_events WHERE action = 'audit.alert_rules.update'").await, 1);

        let sora: Vec<_> = (0..2)
            .map(|i| failed_sign_in(w.clinic, "sora@clinic.example.jp", Utc::now() + ChronoDuration::seconds(i)))
            .collect();
        let mut evs = sora.clone();
        evs.push(break_glass(w.clinic));
        record(&db, &evs).await;
        sealer.seal_all().await.unwrap();
        let alerts = alerts_of(&svc, &admin).await;
        assert_eq!(by_rule(&alerts, "break_glass.use").len(), 1, "disabled: no new break-glass alert");
        let s: Vec<_> = by_rule(&alerts, "auth.sign_in_failures").into_iter().filter(|a| a.group_key.as_deref() == Some("sora@clinic.example.jp")).collect();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].count, 2);
        // The other tenant keeps the shipped rules.
        record(&db, &[break_glass(w.other_clinic)]).await;
        sealer.seal_all().await.unwrap();
        assert_eq!(alerts_of(&svc, &stranger).await[0].count, 2, "joined its open alert");

        // The threshold state stays bounded: hits older than the (now two-minute) window are
        // pruned; yui's two latest failures and sora's two remain.
        assert_eq!(db.count("SELECT COUNT(*) FROM audit_alert_hits WHERE rule_id = 'auth.sign_in_failures'").await, 4);
        assert_eq!(db.count("SELECT COUNT(*) FROM audit_alert_hits WHERE rule_id = 'auth.sign_in_failures_by_ip'").await, 13);
    }

    async fn webhooks_are_signed_retried_and_every_attempt_recorded(db) {
        let w = World::build(&db).await;
        let (svc, secrets) = services(&db);
        let sealer = sealer(&db, svc.engine().with_max_attempts(4));
        let admin = w.clinic_as(Role::InstitutionAdmin);
        let src = Source::default();

        let receiver = Receiver::default();
        receiver.fail_first.store(2, Ordering::SeqCst);
        let (port, server) = start_receiver(receiver.clone());
        let created = svc
            .create_channel(&admin, webhook(None, format!("http://127.0.0.1:{port}/hook?token=abc"), None), &src)
            .await
            .unwrap();
        let secret = created.secret.clone().expect("a webhook gets its secret once");
        assert!(secret.starts_with("whsec_"));
        assert_eq!(created.channel.url.as_deref(), Some(format!("http://127.0.0.1:{port}/hook").as_str()));
        // Nowhere to be read back: not in the list, not in plain text in the database, not in
        // the audit trail.
        let listed = svc.channels(&w.clinic_as(Role::Auditor), None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!serde_json::to_string(&listed).unwrap().contains(&secret));
        for s in db.strings("SELECT secret_sealed FROM audit_notification_channels").await {
            assert!(!s.is_empty() && !s.contains(&secret));
        }
        for s in db.strings("SELECT body FROM audit_events").await {
            assert!(!s.contains(&secret) && !s.contains("token=abc"));
        }
        for s in db.strings("SELECT url_sealed FROM audit_notification_channels").await {
            assert!(!s.is_empty() && !s.contains("token=abc"), "the full URL is sealed too");
        }
        for s in db.strings("SELECT url FROM audit_notification_channels").await {
            assert!(!s.contains("token=abc"));
        }
        assert_eq!(db.count("SELECT COUNT(*) FROM audit_events WHERE action = 'audit.notification_channel.create'").await, 1);
        // A closed port: every attempt fails.
        let dead = svc
            .create_channel(&admin, webhook(None, format!("http://127.0.0.1:{}/hook", free_port()), None), &src)
            .await
            .unwrap();
        // Only critical alerts for this one.
        let critical_only = svc
            .create_channel(&admin, webhook(None, format!("http://127.0.0.1:{port}/hook"), Some(Severity::Critical)), &src)
            .await
            .unwrap();
        // Writers only, in scope.
        assert!(matches!(
            svc.create_channel(&w.clinic_as(Role::Auditor), webhook(None, "https://hooks.example.jp/x".into(), None), &src).await,
            Err(AlertError::Forbidden(_))
        ));
        let stranger = principal(w.other_provider, TenantKind::Provider, Role::ProviderAdmin);
        assert!(matches!(
            svc.create_channel(&stranger, webhook(Some(w.clinic), "https://hooks.example.jp/x".into(), None), &src).await,
            Err(AlertError::NotFound(_))
        ));
        assert!(matches!(
            svc.create_channel(&admin, webhook(None, "http://hooks.example.jp/x".into(), None), &src).await,
            Err(AlertError::Invalid(_))
        ));

        let mut export = AuditEvent::new(w.clinic, staff(w.clinic), "audit.export", Outcome::Success)
            .detail("count", 5000);
        export.time = Utc::now();
        record(&db, &[export]).await;
        sealer.seal_all().await.unwrap();
        let alert = alerts_of(&svc, &admin).await.pop().unwrap();
        assert_eq!(alert.rule_id, "export.bulk");

        // The job was queued with the alert, one per channel that wants a "high" alert.
        let jobs = JobQueue::new(db.app.clone()).list_by_kind(DELIVERY_JOB).await.unwrap();
        assert_eq!(jobs.len(), 2, "not to the critical-only channel");
        let job = AlertDeliveryJob::new(secrets.clone(), None).unwrap();
        let jobs = deliver_all(&db, job).await;
        let of = |ch: Uuid| jobs.iter().find(|j| j.payload["channel_id"] == json!(ch)).unwrap().clone();
        let good = of(created.channel.id);
        assert_eq!((good.status, good.attempts), (JobStatus::Succeeded, 3));
        let bad = of(dead.channel.id);
        assert_eq!((bad.status, bad.attempts), (JobStatus::Failed, 4));

        // The receiver got three requests, each signed over its timestamp and body.
        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3);
        let delivery_ids: Vec<_> = got.iter().map(|(h, _)| h["x-anshin-delivery"].clone()).collect();
        assert!(delivery_ids.iter().all(|d| *d == good.id), "stable across retries");
        for (h, body) in &got {
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(h["x-anshin-event"], "audit.alert");
            assert!(alerts::verify_webhook(&secret, &h["x-anshin-timestamp"], &h["x-anshin-signature"], body, Utc::now(), Duration::from_secs(300)));
            assert!(!alerts::verify_webhook("whsec_wrong", &h["x-anshin-timestamp"], &h["x-anshin-signature"], body, Utc::now(), Duration::from_secs(300)));
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["type"], "audit.alert");
            assert_eq!(v["alert"]["id"], json!(alert.id));
            assert_eq!(v["alert"]["rule_id"], "export.bulk");
            assert_eq!(v["alert"]["tenant_id"], json!(w.clinic));
            assert_eq!(v["alert"]["title_ja"], "大量のデータがエクスポートされました");
        }

        // Every attempt is on record, newest first.
        let d = svc.deliveries(&w.clinic_as(Role::Auditor), created.channel.id, None).await.unwrap();
        let summary: Vec<_> = d.iter().map(|x| (x.attempt, x.status.as_str(), x.status_code)).collect();
        assert_eq!(summary, [(3, "delivered", Some(204)), (2, "failed", Some(500)), (1, "failed", Some(500))]);
        assert!(d.iter().all(|x| x.alert_id == alert.id));
        assert_eq!(d[1].error.as_deref(), Some("the webhook answered 500 Internal Server Error"));
        let d = svc.deliveries(&admin, dead.channel.id, Some(10)).await.unwrap();
        assert_eq!(d.len(), 4);
        assert!(d.iter().all(|x| x.status == "failed" && x.status_code.is_none()));
        let error = d[0].error.as_deref().unwrap();
        assert!(error.contains("could not be reached") && error.to_lowercase().contains("refused"), "{error}");
        assert!(svc.deliveries(&w.clinic_as(Role::Auditor), critical_only.channel.id, None).await.unwrap().is_empty());
        assert!(matches!(svc.deliveries(&stranger, created.channel.id, None).await, Err(AlertError::NotFound(_))));
        // Delivery records cannot be changed.
        let tx = begin_platform_tx(&db.app).await.unwrap();
        let changed = tx.execute_unprepared("UPDATE audit_alert_deliveries SET status = 'delivered'").await;
        assert!(changed.is_err(), "delivery records are append-only");
        drop(tx);

        // A deleted channel receives nothing more, and its record stays.
        svc.delete_channel(&admin, dead.channel.id, &src).await.unwrap();
        assert!(matches!(svc.delete_channel(&admin, dead.channel.id, &src).await, Err(AlertError::NotFound(_))));
        assert_eq!(svc.channels(&admin, None).await.unwrap().len(), 2);
        assert_eq!(svc.deliveries(&admin, dead.channel.id, None).await.unwrap().len(), 4);
        let mut export = AuditEvent::new(w.clinic, staff(w.clinic), "record.export", Outcome::Success)
            .detail("count", 9000);
        export.time = Utc.with_ymd_and_hms(2026, 1, 5, 3, 0, 0).unwrap(); // noon in Tokyo
        record(&db, &[export]).await;
        sealer.seal_all().await.unwrap();
        let jobs = JobQueue::new(db.app.clone()).list_by_kind(DELIVERY_JOB).await.unwrap();
        assert_eq!(jobs.len(), 3, "one more job, for the remaining high-severity channel");
        assert!(jobs.iter().all(|j| j.payload["channel_id"] != json!(dead.channel.id) || j.status == JobStatus::Failed));
        assert_eq!(db.count("SELECT COUNT(*) FROM audit_events WHERE action = 'audit.notification_channel.delete'").await, 1);
        server.stop(true).await;
    }

    async fn alert_mail_reaches_every_recipient_through_smtp(db) {
        let w = World::build(&db).await;
        let (svc, secrets) = services(&db);
        let sealer = sealer(&db, svc.engine().with_max_attempts(3));
        let admin = w.clinic_as(Role::InstitutionAdmin);
        let src = Source::default();
        let smtp = Smtp::start(&db.data_dir);
        let mail_channel = |recipients: Vec<&str>| NewChannel {
            tenant_id: None,
            kind: ChannelKind::Email,
            name: "管理者メール".into(),
            url: None,
            recipients: Some(recipients.into_iter().map(String::from).collect()),
            min_severity: None,
        };
        assert!(matches!(svc.create_channel(&admin, mail_channel(vec!["not-an-address"]), &src).await, Err(AlertError::Invalid(_))));
        let ch = svc
            .create_channel(&admin, mail_channel(vec!["admin1@clinic.example.jp", "admin2@clinic.example.jp"]), &src)
            .await
            .unwrap();
        assert!(ch.secret.is_none());
        assert_eq!(ch.channel.recipients, ["admin1@clinic.example.jp", "admin2@clinic.example.jp"]);

        record(&db, &[break_glass(w.clinic)]).await;
        sealer.seal_all().await.unwrap();
        let mailer = AlertMailer::new(&Secret::new(format!("smtp://127.0.0.1:{}", smtp.port)), "Anshin <alerts@anshin.example.jp>").unwrap();
        let job = AlertDeliveryJob::new(secrets.clone(), Some(mailer))
            .unwrap()
            .with_console_url("https://anshin.example.jp");
        let jobs = deliver_all(&db, job).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, JobStatus::Succeeded);

        let mut mails = smtp.messages();
        assert_eq!(mails.len(), 2);
        mails.sort_by_key(|m| m["rcpt_tos"].to_string());
        assert_eq!(mails[0]["rcpt_tos"], json!(["admin1@clinic.example.jp"]));
        assert_eq!(mails[1]["rcpt_tos"], json!(["admin2@clinic.example.jp"]));
        for m in &mails {
            let subject = m["subject"].as_str().unwrap();
            assert!(subject.contains("監査アラート") && subject.contains("非常時用アカウント"), "{subject}");
            assert!(subject.contains("Break-glass emergency access was used"), "{subject}");
            let body = m["body"].as_str().unwrap();
            assert!(body.contains("救急外来で患者の既往歴を至急確認するため"), "{body}");
            assert!(body.contains("https://anshin.example.jp/audit/alerts/"), "{body}");
            assert!(body.find("重要度").unwrap() < body.find("Severity").unwrap(), "Japanese first");
        }
        let d = svc.deliveries(&admin, ch.channel.id, None).await.unwrap();
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|x| x.status == "delivered" && x.status_code == Some(250)));
        let mut rcpts: Vec<_> = d.iter().map(|x| x.recipient.clone().unwrap()).collect();
        rcpts.sort();
        // Delivery records tell recipients apart without keeping their addresses.
        assert_eq!(rcpts, ["a…@clinic.example.jp", "a…@clinic.example.jp"]);
        for sql in [
            "SELECT COUNT(*) FROM audit_notification_channels WHERE COALESCE(recipients, '') LIKE '%admin1@%' OR COALESCE(recipients_sealed, '') LIKE '%admin1@%'",
            "SELECT COUNT(*) FROM audit_alert_deliveries WHERE COALESCE(recipient, '') LIKE '%admin1@%'",
            "SELECT COUNT(*) FROM audit_events WHERE body LIKE '%admin1@%'",
        ] {
            // Platform scope: row-level security would hide the rows from a tenant-less read.
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            let n: i64 = tx
                .query_one(sea_orm::Statement::from_string(db.app.get_database_backend(), sql))
                .await
                .unwrap()
                .unwrap()
                .try_get_by_index(0)
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(n, 0, "an address is stored readable: {sql}");
        }
        assert_eq!(svc.channels(&admin, None).await.unwrap()[0].recipients, ["admin1@clinic.example.jp", "admin2@clinic.example.jp"]);

        // The mail server goes away: attempts fail, are retried and recorded, then given up.
        drop(smtp);
        let mut maint = AuditEvent::new(w.clinic, staff(w.clinic), "grant.action", Outcome::Failure)
            .detail("outside_window", true);
        maint.actor.kind = ActorKind::MaintenanceGrant;
        record(&db, &[maint]).await;
        sealer.seal_all().await.unwrap();
        let mailer = AlertMailer::new(&Secret::new(format!("smtp://127.0.0.1:{}", free_port())), "Anshin <alerts@anshin.example.jp>").unwrap();
        let jobs = deliver_all(&db, AlertDeliveryJob::new(secrets, Some(mailer)).unwrap()).await;
        let failed: Vec<_> = jobs.iter().filter(|j| j.status == JobStatus::Failed).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].attempts, 3);
        let d = svc.deliveries(&admin, ch.channel.id, Some(500)).await.unwrap();
        let failures: Vec<_> = d.iter().filter(|x| x.status == "failed").collect();
        assert_eq!(failures.len(), 6, "two recipients × three attempts");
        assert!(failures.iter().all(|x| x.error.is_some() && x.recipient.is_some()));
    }

    async fn http_api_with_problems_and_scope_before_role(db) {
        let w = World::build(&db).await;
        let (svc, _) = services(&db);
        let sealer = sealer(&db, svc.engine());
        let mut tokens = HashMap::new();
        tokens.insert("admin".to_string(), w.clinic_as(Role::InstitutionAdmin));
        tokens.insert("auditor".to_string(), w.clinic_as(Role::Auditor));
        tokens.insert("staff".to_string(), w.clinic_as(Role::InstitutionStaff));
        tokens.insert("stranger".to_string(), principal(w.other_provider, TenantKind::Provider, Role::ProviderAdmin));
        let auth: SharedAuthenticator = Arc::new(Tokens(tokens));
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(auth))
                .app_data(web::Data::new(svc.clone()))
                .configure(alerts::routes::configure),
        )
        .await;
        let call = |method: &str, uri: &str, who: &str, body: Option<Value>| {
            let req = match method {
                "GET" => test::TestRequest::get(),
                "POST" => test::TestRequest::post(),
                "PUT" => test::TestRequest::put(),
                _ => test::TestRequest::delete(),
            }
            .uri(uri)
            .insert_header(("authorization", format!("Bearer {who}")));
            match body {
                Some(b) => req.set_json(b).to_request(),
                None => req.to_request(),
            }
        };
        macro_rules! send {
            ($m:expr, $uri:expr, $who:expr) => { send!($m, $uri, $who, None) };
            ($m:expr, $uri:expr, $who:expr, $body:expr) => {{
                let res = test::call_service(&app, call($m, &$uri, $who, $body)).await;
                let status = res.status();
                let ctype = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                let bytes = test::read_body(res).await;
                let v: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                (status, ctype, v)
            }};
        }

        // Channels: created by the admin (secret once), listed without it.
        let (s, _, created) = send!("POST", "/api/v1/audit/notification-channels", "admin",
            Some(json!({"kind": "webhook", "name": "SOC", "url": "https://soc.example.jp/anshin", "min_severity": "high"})));
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let secret = created["secret"].as_str().unwrap().to_string();
        let (s, _, listed) = send!("GET", "/api/v1/audit/notification-channels", "auditor");
        assert_eq!(s, StatusCode::OK);
        assert_eq!(listed["items"][0]["name"], "SOC");
        assert_eq!(listed["items"][0]["min_severity"], "high");
        assert!(!listed.to_string().contains(&secret) && listed["items"][0].get("secret").is_none());
        let (s, ctype, p) = send!("POST", "/api/v1/audit/notification-channels", "auditor",
            Some(json!({"kind": "webhook", "name": "x", "url": "https://soc.example.jp/x"})));
        assert_eq!((s, ctype.as_str()), (StatusCode::FORBIDDEN, "application/problem+json"));
        assert_eq!(p["status"], 403);
        let (s, _, _) = send!("POST", "/api/v1/audit/notification-channels", "admin",
            Some(json!({"kind": "email", "name": "x", "recipients": []})));
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let id = created["channel"]["id"].as_str().unwrap().to_string();
        let (s, _, d) = send!("GET", format!("/api/v1/audit/notification-channels/{id}/deliveries"), "auditor");
        assert_eq!((s, d["items"].as_array().unwrap().len()), (StatusCode::OK, 0));
        let (s, _, _) = send!("GET", format!("/api/v1/audit/notification-channels/{id}/deliveries"), "stranger");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = send!("DELETE", format!("/api/v1/audit/notification-channels/{id}"), "stranger");
        assert_eq!(s, StatusCode::NOT_FOUND, "scope before role");
        let (s, _, _) = send!("DELETE", format!("/api/v1/audit/notification-channels/{id}"), "auditor");
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = send!("DELETE", format!("/api/v1/audit/notification-channels/{id}"), "admin");
        assert_eq!(s, StatusCode::NO_CONTENT);

        // Rules.
        let (s, _, rules) = send!("GET", "/api/v1/audit/alert-rules", "auditor");
        assert_eq!(s, StatusCode::OK);
        assert_eq!(rules["tenant_id"], json!(w.clinic));
        assert!(rules["rules"].as_array().unwrap().len() >= 5);
        let (s, _, _) = send!("GET", format!("/api/v1/audit/alert-rules?tenant_id={}", w.clinic), "stranger");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let hours = json!({"overrides": [{"rule_id": "record.access_off_hours", "business_hours": {"start": "08:30", "end": "18:00", "days": ["mon", "tue", "wed", "thu", "fri"]}}]});
        let (s, _, _) = send!("PUT", "/api/v1/audit/alert-rules", "auditor", Some(hours.clone()));
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = send!("PUT", "/api/v1/audit/alert-rules", "admin",
            Some(json!({"overrides": [{"rule_id": "record.access_off_hours", "business_hours": {"start": "8:30", "end": "18:00"}}]})));
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _, v) = send!("PUT", "/api/v1/audit/alert-rules", "admin", Some(hours));
        assert_eq!(s, StatusCode::OK, "{v}");
        let r = v["rules"].as_array().unwrap().iter().find(|r| r["rule"]["id"] == "record.access_off_hours").unwrap().clone();
        assert_eq!(r["rule"]["business_hours"]["start"], "08:30");
        assert_eq!(r["base"]["business_hours"]["start"], "07:00");
        assert_eq!(r["override"]["business_hours"]["end"], "18:00");

        // The new hours apply: 19:00 on a Monday in Tokyo is now outside them.
        let mut e = AuditEvent::new(w.clinic, staff(w.clinic), "record.open", Outcome::Success);
        e.time = Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap();
        record(&db, &[e]).await;
        sealer.seal_all().await.unwrap();

        // Alerts.
        let (s, _, page) = send!("GET", "/api/v1/audit/alerts?status=open&severity=medium", "auditor");
        assert_eq!(s, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["rule_id"], "record.access_off_hours");
        let alert = items[0]["id"].as_str().unwrap().to_string();
        let (s, _, _) = send!("GET", "/api/v1/audit/alerts?status=bogus", "auditor");
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let (s, _, _) = send!("GET", "/api/v1/audit/alerts", "staff");
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, _) = send!("GET", format!("/api/v1/audit/alerts?tenant_id={}", w.clinic), "stranger");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = send!("GET", format!("/api/v1/audit/alerts/{alert}"), "stranger");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = send!("POST", format!("/api/v1/audit/alerts/{}/acknowledge", Uuid::now_v7()), "admin");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = send!("POST", format!("/api/v1/audit/alerts/{alert}/acknowledge"), "stranger");
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _, _) = send!("POST", format!("/api/v1/audit/alerts/{alert}/acknowledge"), "auditor");
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _, a) = send!("POST", format!("/api/v1/audit/alerts/{alert}/acknowledge"), "admin");
        assert_eq!((s, a["status"].as_str()), (StatusCode::OK, Some("acknowledged")));
        let (s, _, a) = send!("POST", format!("/api/v1/audit/alerts/{alert}/resolve"), "admin", Some(json!({"note": "夜間当直の正当なアクセス"})));
        assert_eq!((s, a["status"].as_str(), a["note"].as_str()), (StatusCode::OK, Some("resolved"), Some("夜間当直の正当なアクセス")));
        let (s, ctype, p) = send!("POST", format!("/api/v1/audit/alerts/{alert}/resolve"), "admin");
        assert_eq!((s, ctype.as_str()), (StatusCode::CONFLICT, "application/problem+json"));
        assert!(p["detail"].as_str().unwrap().contains("resolved"));
        assert_eq!(
            db.count("SELECT COUNT(*) FROM audit_events WHERE action LIKE 'audit.%'").await,
            5,
            "channel created and deleted, rules changed, alert acknowledged and resolved"
        );
    }
}

struct Tokens(HashMap<String, Principal>);

#[async_trait::async_trait]
impl Authenticator for Tokens {
    async fn authenticate_bearer(&self, token: &str) -> Result<Option<Principal>, Problem> {
        Ok(self.0.get(token).cloned())
    }
}
