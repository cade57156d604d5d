//! Test harness: every storage test runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests create a fresh database owned by `anshin_owner` (which runs migrations) and
//! connect the application as `anshin_app` (no ownership, no superuser, no BYPASSRLS), exactly as
//! a deployment does. The admin connection comes from `TEST_PG_ADMIN_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`).

// Test support: a failed setup step should abort the test loudly, so panicking is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anshin_platform::config::Config;
use anshin_platform::db;
use anshin_platform::{Role, TenantKind};
use anshin_server::app::{app, AppState};
use anshin_server::services::ServiceSet;
use anshin_tenancy::{CreateTenant, ReferencePattern, TenancyService, Tenant, TokenService};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use std::collections::HashMap;
use std::path::PathBuf;

pub mod moto;

pub const OWNER_ROLE: &str = "anshin_owner";
pub const APP_ROLE: &str = "anshin_app";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn pg_admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_base() -> (String, u16) {
    let u = url::Url::parse(&pg_admin_url()).expect("TEST_PG_ADMIN_URL is a URL");
    (
        u.host_str().unwrap_or("127.0.0.1").to_string(),
        u.port().unwrap_or(5432),
    )
}

/// One isolated database and the configuration pointing at it.
pub struct TestDb {
    pub backend: Backend,
    /// Environment for an `anshin` child process using this database.
    pub env: Vec<(String, String)>,
    pub config: Config,
    pub app: DatabaseConnection,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

async fn admin_exec(sql: &str) {
    let admin = sea_orm::Database::connect(pg_admin_url())
        .await
        .expect("PostgreSQL must be reachable for the PostgreSQL half of the suite (see README: test command)");
    admin.execute_unprepared(sql).await.expect(sql);
    admin.close().await.ok();
}

/// Creates the owner and application roles once per process (idempotent across processes).
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

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut env = vec![(
            "ANSHIN_DATA_DIR".to_string(),
            data_dir.display().to_string(),
        )];
        if backend == Backend::Postgres {
            ensure_roles().await;
            let name = format!("anshin_t_{}", uuid::Uuid::new_v4().simple());
            admin_exec(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}")).await;
            let (host, port) = pg_base();
            env.push((
                "ANSHIN_DATABASE_URL".into(),
                format!("postgres://{APP_ROLE}@{host}:{port}/{name}"),
            ));
            env.push((
                "ANSHIN_MIGRATION_DATABASE_URL".into(),
                format!("postgres://{OWNER_ROLE}@{host}:{port}/{name}"),
            ));
        }
        #[derive(serde::Serialize)]
        struct NoFlags {}
        let mut config = Config::load_from(None, NoFlags {}, env.clone())
            .expect("test config")
            .config;
        config.database.max_connections = 8;
        // Many sign-ins from one in-process "address"; tests/it/http_edge.rs covers the limit.
        config.http.auth_rate_per_minute = 0;
        anshin_server::migrate::run(&config)
            .await
            .expect("migrations");
        let app = db::connect(&config.database_url(), &config.database)
            .await
            .expect("connect as app");
        Self {
            backend,
            env,
            config,
            app,
            data_dir,
            _dir: dir,
        }
    }

    pub fn tenancy(&self) -> TenancyService {
        TenancyService::new(self.app.clone())
    }

    pub fn tokens(&self) -> TokenService {
        TokenService::new(self.app.clone())
    }

    pub async fn state(&self) -> AppState {
        let web = anshin_server::web::Web::load(self.config.http.insecure_cookies)
            .expect("templates load");
        AppState::new(self.app.clone(), web, ServiceSet::all(), &self.config)
            .await
            .expect("app state")
    }

    pub async fn app(
        &self,
    ) -> actix_web::App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        app(self.state().await)
    }

    /// A raw query as the application role, outside any tenant context.
    pub async fn count(&self, sql: &str) -> i64 {
        let backend = self.app.get_database_backend();
        let row = self
            .app
            .query_one(Statement::from_string(backend, sql.to_string()))
            .await
            .expect(sql)
            .expect("one row");
        row.try_get_by_index::<i64>(0).expect("count")
    }

    /// A count in platform scope (RLS allows every tenant), for checking what was stored.
    pub async fn count_platform(&self, sql: &str) -> i64 {
        let tx = anshin_platform::db::begin_platform_tx(&self.app)
            .await
            .expect("platform tx");
        let row = tx
            .query_one(Statement::from_string(self.db_backend(), sql.to_string()))
            .await
            .expect(sql)
            .expect("one row");
        tx.commit().await.expect("commit");
        row.try_get_by_index::<i64>(0).expect("count")
    }

    /// Runs a statement as the application role in platform scope (RLS allows every tenant),
    /// for tests that move a row into a state no API can (for example, time in the past).
    pub async fn exec_platform(&self, sql: &str) -> u64 {
        let tx = anshin_platform::db::begin_platform_tx(&self.app)
            .await
            .expect("platform tx");
        let r = tx
            .execute(Statement::from_string(self.db_backend(), sql.to_string()))
            .await
            .expect(sql);
        tx.commit().await.expect("commit");
        r.rows_affected()
    }

    pub fn db_backend(&self) -> DbBackend {
        self.app.get_database_backend()
    }
}

/// Two providers, each with institutions, and a token for every role that fits each tenant.
pub struct World {
    pub p1: Tenant,
    pub c1: Tenant,
    pub h1: Tenant,
    pub p2: Tenant,
    pub c2: Tenant,
    /// (tenant slug, role) → bearer token
    pub tokens: HashMap<(String, Role), String>,
}

impl World {
    pub async fn build(db: &TestDb) -> Self {
        let t = db.tenancy();
        let mk = |kind, slug: &str, name: &str, parent: Option<&str>, pattern| CreateTenant {
            kind,
            slug: slug.into(),
            name: name.into(),
            parent: parent.map(String::from),
            reference_pattern: pattern,
            institution_type: None,
            bed_count: None,
            contract_start: None,
            contract_end: None,
        };
        let p1 = t
            .admin_create(mk(
                TenantKind::Provider,
                "alpha-cloud",
                "アルファクラウド",
                None,
                None,
            ))
            .await
            .unwrap();
        let c1 = t
            .admin_create(mk(
                TenantKind::Institution,
                "alpha-clinic",
                "あおば診療所",
                Some("alpha-cloud"),
                Some(ReferencePattern::IV),
            ))
            .await
            .unwrap();
        let mut hospital = mk(
            TenantKind::Institution,
            "alpha-hospital",
            "ひかり病院",
            Some("alpha-cloud"),
            Some(ReferencePattern::II),
        );
        hospital.institution_type = Some(anshin_tenancy::InstitutionType::Hospital);
        let h1 = t.admin_create(hospital).await.unwrap();
        let p2 = t
            .admin_create(mk(
                TenantKind::Provider,
                "beta-cloud",
                "ベータクラウド",
                None,
                None,
            ))
            .await
            .unwrap();
        let c2 = t
            .admin_create(mk(
                TenantKind::Institution,
                "beta-clinic",
                "みどり診療所",
                Some("beta-cloud"),
                Some(ReferencePattern::IV),
            ))
            .await
            .unwrap();
        let mut tokens = HashMap::new();
        let tok = db.tokens();
        for tenant in [&p1, &c1, &h1, &p2, &c2] {
            for role in Role::ALL {
                if role.fits(tenant.kind) {
                    let issued = tok
                        .issue(
                            &tenant.slug,
                            role,
                            &format!("test {role}"),
                            chrono::Duration::hours(1),
                        )
                        .await
                        .unwrap();
                    tokens.insert(
                        (tenant.slug.clone(), role),
                        issued.token.expose().to_string(),
                    );
                }
            }
        }
        Self {
            p1,
            c1,
            h1,
            p2,
            c2,
            tokens,
        }
    }

    pub fn token(&self, slug: &str, role: Role) -> &str {
        self.tokens
            .get(&(slug.to_string(), role))
            .map(String::as_str)
            .expect("token exists")
    }

    pub fn all(&self) -> [&Tenant; 5] {
        [&self.p1, &self.c1, &self.h1, &self.p2, &self.c2]
    }
}

/// Runs each listed async test once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        $(
            #[allow(clippy::unwrap_used, clippy::expect_used)]
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[actix_web::test]
                async fn sqlite() {
                    run($crate::TestDb::new($crate::Backend::Sqlite).await).await
                }
                #[actix_web::test]
                async fn postgres() {
                    run($crate::TestDb::new($crate::Backend::Postgres).await).await
                }
                async fn run($db: $crate::TestDb) $body
            }
        )*
    };
}

/// Path of the `anshin` binary built for this test run.
pub fn anshin_bin() -> PathBuf {
    // Integration tests live in another package; the binary sits beside the test executable.
    let mut p = std::env::current_exe().expect("current exe");
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("anshin")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.1 client over loopback for tests against a child `anshin` process.
pub fn http_get(port: u16, path: &str, bearer: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Waits until `port` accepts connections or the deadline passes.
pub fn wait_for_port(port: u16, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

// ---- Helpers shared by the identity tests --------------------------------------------------

/// The public URL of the test apps: the only origin WebAuthn ceremonies accept.
pub const ORIGIN: &str = "http://localhost:8080";

/// [`ORIGIN`] as the URL a software authenticator signs for.
pub fn origin() -> webauthn_authenticator_rs::prelude::Url {
    webauthn_authenticator_rs::prelude::Url::parse(ORIGIN).unwrap()
}

/// The value of the session cookie a response sets, if any (not a removal).
pub fn session_cookie<B>(res: &actix_web::dev::ServiceResponse<B>) -> Option<String> {
    res.headers()
        .get_all(actix_web::http::header::SET_COOKIE)
        .find_map(|v| {
            let v = v.to_str().ok()?;
            let rest = v.strip_prefix("anshin_session=")?;
            let value = rest.split(';').next()?.to_string();
            Some(value).filter(|v| !v.is_empty())
        })
}

/// The `authorization` header of the API token of (`slug`, `role`).
pub fn bearer(w: &World, slug: &str, role: Role) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", w.token(slug, role)))
}

/// A signed-in browser session: (cookie value, CSRF token).
pub type Session = (String, String);

/// `req` sent with the session's cookie and CSRF token.
pub fn with_session(req: actix_web::test::TestRequest, s: &Session) -> actix_http::Request {
    req.insert_header(("cookie", format!("anshin_session={}", s.0)))
        .insert_header(("x-csrf-token", s.1.clone()))
        .to_request()
}

/// The session of a sign-in or enrollment response.
pub async fn session_of<B: actix_web::body::MessageBody>(
    res: actix_web::dev::ServiceResponse<B>,
) -> Session {
    let cookie = session_cookie(&res).expect("session cookie");
    let v: serde_json::Value = actix_web::test::read_body_json(res).await;
    (cookie, v["csrf_token"].as_str().unwrap().to_string())
}

/// Status and JSON body (a problem, usually) of a response.
pub async fn problem<B: actix_web::body::MessageBody>(
    res: actix_web::dev::ServiceResponse<B>,
) -> (actix_web::http::StatusCode, serde_json::Value) {
    let status = res.status();
    (status, actix_web::test::read_body_json(res).await)
}

/// A person enrolled with a software passkey, signed in.
pub struct Person {
    pub id: uuid::Uuid,
    pub email: String,
    pub session: Session,
    pub device: webauthn_authenticator_rs::WebauthnAuthenticator<
        webauthn_authenticator_rs::softpasskey::SoftPasskey,
    >,
}

/// Invites `email` as `role` into the tenant `slug` (with its admin's API token) and enrolls a
/// fresh software passkey through the HTTP API.
pub async fn enroll_passkey<S, B>(app: &S, w: &World, slug: &str, email: &str, role: &str) -> Person
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    use actix_web::test;
    use serde_json::{json, Value};
    let tenant = w
        .all()
        .into_iter()
        .find(|t| t.slug == slug)
        .expect("a tenant of the world");
    let inviter = match tenant.kind {
        TenantKind::Provider => Role::ProviderAdmin,
        TenantKind::Institution => Role::InstitutionAdmin,
    };
    let inv: Value = test::call_and_read_body_json(
        app,
        test::TestRequest::post()
            .uri("/api/v1/invitations")
            .insert_header(bearer(w, slug, inviter))
            .set_json(json!({"email": email, "display_name": "試験 花子", "role": role}))
            .to_request(),
    )
    .await;
    let token = inv["enrollment_url"]
        .as_str()
        .unwrap_or_else(|| panic!("not an invitation: {inv}"))
        .split("#token=")
        .nth(1)
        .unwrap()
        .to_string();
    let begin: Value = test::call_and_read_body_json(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/enrollment/begin")
            .set_json(json!({"token": token}))
            .to_request(),
    )
    .await;
    let ccr: webauthn_authenticator_rs::prelude::CreationChallengeResponse =
        serde_json::from_value(begin["public_key"].clone()).unwrap();
    let mut device = webauthn_authenticator_rs::WebauthnAuthenticator::new(
        webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true),
    );
    let reg = device.do_registration(origin(), ccr).unwrap();
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri("/api/v1/auth/enrollment/finish")
            .set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg}))
            .to_request(),
    )
    .await;
    assert_eq!(
        res.status(),
        actix_web::http::StatusCode::CREATED,
        "enrollment of {email}"
    );
    let cookie = session_cookie(&res).expect("session cookie");
    let signed: Value = test::read_body_json(res).await;
    Person {
        id: signed["user"]["id"].as_str().unwrap().parse().unwrap(),
        email: email.to_string(),
        session: (cookie, signed["csrf_token"].as_str().unwrap().to_string()),
        device,
    }
}

/// Confirms the person's session with their passkey (the step-up sensitive actions need).
pub async fn step_up<S, B>(app: &S, p: &mut Person)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    use actix_web::test;
    use serde_json::{json, Value};
    let begin: Value = test::call_and_read_body_json(
        app,
        with_session(
            test::TestRequest::post().uri("/api/v1/me/step-up/begin"),
            &p.session,
        ),
    )
    .await;
    let rcr: webauthn_authenticator_rs::prelude::RequestChallengeResponse =
        serde_json::from_value(begin["public_key"].clone()).unwrap();
    let proof = p.device.do_authentication(origin(), rcr).unwrap();
    let res = test::call_service(
        app,
        with_session(
            test::TestRequest::post()
                .uri("/api/v1/me/step-up/finish")
                .set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": proof})),
            &p.session,
        ),
    )
    .await;
    assert_eq!(
        res.status(),
        actix_web::http::StatusCode::NO_CONTENT,
        "step-up"
    );
}

// ---- A real SMTP server (Python aiosmtpd) -------------------------------------------------

/// The test SMTP server (`tests/python/smtp_receiver.py`); every message it receives is a JSON
/// line in `mailbox`. Stopped when dropped.
pub struct Smtp {
    child: std::process::Child,
    pub port: u16,
    pub mailbox: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Smtp {
    /// Starts the server on a free port, writing to `mailbox.jsonl` in the database's data
    /// directory.
    pub fn start(db: &TestDb) -> Self {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the Python test peers are missing: run ./infra/test.sh (it creates .venv)"
        );
        std::fs::create_dir_all(&db.data_dir).unwrap();
        let port = free_port();
        let mailbox = db.data_dir.join("mailbox.jsonl");
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

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.mailbox)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (yielding to the runtime, so mail sent in the background goes out) until at least
    /// `n` messages arrived, for at most `secs` seconds; returns what arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let got = self.messages();
            if got.len() >= n || std::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// An identity service on the test database that sends its mail to `smtp`.
pub fn identity_with_smtp(db: &TestDb, smtp: &Smtp) -> anshin_identity::IdentityService {
    let mut cfg = db.config.identity.clone();
    cfg.smtp_url = Some(anshin_platform::secret::Secret::new(format!(
        "smtp://127.0.0.1:{}",
        smtp.port
    )));
    cfg.mail_from = "Anshin <no-reply@anshin.example.jp>".into();
    anshin_identity::IdentityService::new(
        db.app.clone(),
        ORIGIN,
        cfg,
        anshin_server::app::secret_box(&db.config).unwrap(),
        key_service(db),
    )
    .unwrap()
}

/// The key service of the test database, as the server builds it (the local provider under the
/// data directory).
pub fn key_service(db: &TestDb) -> anshin_keys::KeyService {
    anshin_server::keys::service(
        db.app.clone(),
        &db.config,
        anshin_server::keys::local_provider(&db.config).unwrap(),
    )
}

/// The blind index identity stores beside a sealed address (the address normalised first), for
/// finding rows with raw SQL: `users.email` holds only the sealed address.
pub async fn email_index(db: &TestDb, email: &str) -> String {
    key_service(db)
        .blind_index("identity.email", &email.trim().to_lowercase())
        .await
        .unwrap()
}

/// How many accounts have `email`, counted with raw SQL in platform scope.
pub async fn count_users_with_email(db: &TestDb, email: &str) -> i64 {
    let index = email_index(db, email).await;
    db.count_platform(&format!(
        "SELECT COUNT(*) FROM users WHERE email_index = '{index}'"
    ))
    .await
}

/// An identity service on the test database for `public_url`, with its key service.
pub fn identity_service(db: &TestDb, public_url: &str) -> anshin_identity::IdentityService {
    anshin_identity::IdentityService::new(
        db.app.clone(),
        public_url,
        db.config.identity.clone(),
        anshin_server::app::secret_box(&db.config).unwrap(),
        key_service(db),
    )
    .unwrap()
}

/// A UUID as an SQL literal of the backend: SQLite stores UUIDs as 16-byte blobs, PostgreSQL as
/// `uuid` (for raw-SQL checks in platform scope).
pub fn lit(db: &TestDb, id: uuid::Uuid) -> String {
    match db.backend {
        Backend::Sqlite => format!("X'{}'", id.simple()),
        Backend::Postgres => format!("'{id}'"),
    }
}
