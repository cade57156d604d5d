//! What each CLI command does. Errors carry the exit code: 2 for bad usage or configuration,
//! 1 for everything else.

use crate::app::{app, AppState};
use crate::cli::*;
use crate::services::{Service, ServiceSet};
use crate::{demo, migrate, web};
use anshin_platform::config::Config;
use anshin_platform::db::{self, DbSetupError};
use anshin_platform::jobs::{Worker, WorkerOptions};
use anshin_platform::{Role, TenantKind};
use anshin_tenancy::{
    CreateTenant, InstitutionType, ReferencePattern, TenancyError, TenancyService, Tenant,
    TokenInfo, TokenService,
};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use unicode_width::UnicodeWidthStr;

#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(m: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: m.into(),
        }
    }
    pub fn failure(m: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: m.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<DbSetupError> for CliError {
    fn from(e: DbSetupError) -> Self {
        match e {
            DbSetupError::UnsupportedBackend(_) | DbSetupError::InvalidUrl(_) => {
                CliError::usage(e.to_string())
            }
            _ => CliError::failure(e.to_string()),
        }
    }
}

impl From<migrate::MigrateError> for CliError {
    fn from(e: migrate::MigrateError) -> Self {
        match e {
            migrate::MigrateError::Setup(s) => s.into(),
            other => CliError::failure(other.to_string()),
        }
    }
}

impl From<TenancyError> for CliError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::Validation(_) => CliError::usage(e.to_string()),
            TenancyError::Db(d) => CliError::failure(format!("database error: {d}")),
            other => CliError::failure(other.to_string()),
        }
    }
}

pub(crate) async fn open(config: &Config) -> Result<sea_orm::DatabaseConnection, CliError> {
    migrate::run(config).await?;
    let db = db::connect(&config.database_url(), &config.database).await?;
    migrate::register_tenants_with_audit(&db)
        .await
        .map_err(CliError::failure)?;
    Ok(db)
}

pub async fn migrate_cmd(config: &Config) -> Result<(), CliError> {
    let applied = migrate::run(config).await?;
    println!(
        "Migrations applied: {applied} new ({}).",
        config.database_url_for_logs()
    );
    Ok(())
}

pub async fn serve(config: Config, services: ServiceSet, demo_mode: bool) -> Result<(), CliError> {
    migrate::run(&config).await?;
    let db = db::connect(&config.database_url(), &config.database).await?;
    migrate::check_app_role(&db)
        .await
        .map_err(CliError::usage)?;
    migrate::register_tenants_with_audit(&db)
        .await
        .map_err(CliError::failure)?;
    let web = web::Web::load(config.http.insecure_cookies)
        .map_err(|e| CliError::failure(e.to_string()))?;
    let key_provider = crate::keys::key_provider(&config)
        .await
        .map_err(|e| CliError::usage(format!("keys: {e}")))?;
    let state =
        AppState::with_key_provider(db.clone(), web, services.clone(), &config, key_provider)
            .await
            .map_err(|e| CliError::usage(e.to_string()))?;
    // Identity seals the addresses it stores with the key service, so the demo invitation waits
    // for it.
    let identity = state.identity.clone();
    if demo_mode {
        let token_service = TokenService::new(db.clone());
        let tokens = demo::seed(&TenancyService::new(db.clone()), &token_service).await?;
        let link = demo::invitation(&identity, &token_service, &tokens)
            .await
            .map_err(CliError::failure)?;
        print_demo(&tokens, &config.public_url, link.as_deref());
    }
    // Tenants created before the key service (or while the provider was down) get their KEK now;
    // the backfill job keeps retrying if the provider is unreachable.
    let directory = Arc::new(crate::keys::Directory(TenancyService::new(db.clone())));
    match anshin_keys::jobs::TenantList::all(directory.as_ref()).await {
        Ok(all) => {
            if let Err(e) = state.keys.backfill(&all).await {
                tracing::warn!(error = %e, "tenant KEK backfill deferred to the worker");
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing tenants for the KEK backfill failed"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = if services.contains(Service::Worker) {
        for s in anshin_tenancy::jobs::schedules()
            .into_iter()
            .chain(anshin_identity::jobs::schedules())
            .chain(anshin_keys::jobs::schedules())
            .chain([crate::keys::reencrypt_schedule()])
        {
            s.register(&db)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
        }
        let w = Worker::new(
            db.clone(),
            WorkerOptions {
                concurrency: config.jobs.concurrency,
                poll_interval: Duration::from_millis(config.jobs.poll_interval_ms),
                lease: Duration::from_secs(config.jobs.lease_secs.max(3)),
                ..WorkerOptions::default()
            },
        )
        .register(anshin_tenancy::jobs::ContractSweep)
        .register(anshin_identity::jobs::StaleAccountSweep)
        .register(anshin_keys::jobs::RewrapJob(state.keys.clone()))
        .register(anshin_keys::jobs::ByokHealthJob(state.keys.clone()))
        .register(anshin_keys::jobs::BackfillJob {
            keys: state.keys.clone(),
            tenants: directory.clone(),
        })
        // Secrets sealed with the interim keys move under the tenants' KEKs (first run at the
        // first start, then hourly; `anshin keys reencrypt` does the same on demand).
        .register(crate::keys::ReencryptJob {
            identity: state.identity.clone(),
            alerts: state.alerts.clone(),
        })
        .register(
            anshin_audit::alerts::AlertDeliveryJob::new(
                state.alert_secrets.clone(),
                config
                    .identity
                    .smtp_url
                    .as_ref()
                    .map(|u| anshin_audit::alerts::AlertMailer::new(u, &config.identity.mail_from))
                    .transpose()
                    .map_err(CliError::usage)?,
            )
            .map_err(CliError::failure)?
            .with_sealer(state.keys.sealer())
            .with_console_url(config.public_url.clone()),
        )
        .register(anshin_identity::break_glass::BreakGlassAlertJob {
            webhook_url: config.identity.alert_webhook_url.clone(),
            secret: config.identity.alert_webhook_secret.clone(),
            http: identity.http_client(),
        });
        let sealer = actix_web::rt::spawn(anshin_audit::sealer::run(
            state.audit.sealer().clone(),
            Duration::from_millis(config.audit.seal_interval_ms.max(50)),
            state.audit.notifier(),
            stop_rx.clone(),
        ));
        // 17 ③: the clock's offset from the configured NTP server, stamped on every event.
        anshin_audit::trusted_time::check_clock(config.audit.ntp_server.as_deref()).await;
        actix_web::rt::spawn(anshin_audit::trusted_time::run_clock_monitor(
            config.audit.clone(),
            stop_rx.clone(),
        ));
        if let Some(url) = &config.audit.tsa_url {
            let tsa = anshin_audit::trusted_time::tsp::TsaClient::new(url)
                .map_err(|e| CliError::usage(format!("audit.tsa_url: {e}")))?;
            actix_web::rt::spawn(anshin_audit::trusted_time::run_timestamper(
                db.clone(),
                tsa,
                Duration::from_millis(config.audit.seal_interval_ms.max(1_000)),
                stop_rx.clone(),
            ));
        }
        Some((actix_web::rt::spawn(w.run(stop_rx)), sealer))
    } else {
        None
    };
    let mut server = actix_web::HttpServer::new(move || app(state.clone())).shutdown_timeout(10);
    if config.http.workers > 0 {
        server = server.workers(config.http.workers);
    }
    let server = server
        .bind(&config.listen)
        .map_err(|e| CliError::failure(format!("cannot listen on {}: {e}", config.listen)))?
        .run();
    tracing::info!(listen = %config.listen, services = %services, database = %config.database_url_for_logs(), "anshin serving");
    println!(
        "Anshin is serving on http://{} (services: {services}).",
        config.listen
    );
    let result = server.await;
    let _ = stop_tx.send(true);
    if let Some((w, sealer)) = worker {
        let _ = w.await;
        let _ = sealer.await;
    }
    db.close().await.ok();
    result.map_err(|e| CliError::failure(format!("the HTTP server failed: {e}")))
}

fn print_demo(tokens: &[demo::DemoToken], public_url: &str, enrollment: Option<&str>) {
    println!(
        "Demo tenants are ready (デモテナントを用意しました): {}, {}, {}.",
        demo::PROVIDER,
        demo::CLINIC,
        demo::HOSPITAL
    );
    println!(
        "API tokens, valid for 30 days; each start issues new ones (起動のたびに再発行されます):"
    );
    for t in tokens {
        println!("  {:<14} {:<18} {}", t.tenant, t.role.as_str(), t.token);
    }
    if let Some(first) = tokens.first() {
        println!(
            "Try: curl -H 'Authorization: Bearer {}' {public_url}/api/v1/tenants",
            first.token
        );
    }
    match enrollment {
        Some(link) => println!(
            "Register a passkey as the demo clinic's administrator ({}) (パスキー登録):\n  {link}",
            demo::DEMO_ADMIN_EMAIL
        ),
        None => println!(
            "Sign in with your passkey as {} at {public_url}/signin",
            demo::DEMO_ADMIN_EMAIL
        ),
    }
}

pub async fn tenant(config: &Config, cmd: TenantCommand) -> Result<(), CliError> {
    let db = open(config).await?;
    let keys = crate::keys::service(
        db.clone(),
        config,
        crate::keys::key_provider(config)
            .await
            .map_err(|e| CliError::usage(format!("keys: {e}")))?,
    );
    // Each tenant created here gets its own KEK at once (the worker's backfill retries if the
    // key provider is unreachable).
    let svc =
        TenancyService::new(db).with_created_hook(Arc::new(crate::keys::ProvisionOnCreate(keys)));
    match cmd {
        TenantCommand::Create {
            kind,
            slug,
            name,
            parent,
            pattern,
            institution_type,
            beds,
            contract_start,
            contract_end,
            json,
        } => {
            let t = svc
                .admin_create(CreateTenant {
                    kind: match kind {
                        KindArg::Provider => TenantKind::Provider,
                        KindArg::Institution => TenantKind::Institution,
                    },
                    slug,
                    name,
                    parent,
                    reference_pattern: pattern.map(|p| match p {
                        PatternArg::II => ReferencePattern::II,
                        PatternArg::IV => ReferencePattern::IV,
                    }),
                    institution_type: institution_type.map(|t| match t {
                        InstitutionTypeArg::Clinic => InstitutionType::Clinic,
                        InstitutionTypeArg::Hospital => InstitutionType::Hospital,
                    }),
                    bed_count: beds,
                    contract_start,
                    contract_end,
                })
                .await?;
            if json {
                println!("{}", to_json(&t)?);
            } else {
                println!(
                    "Created {} '{}' ({}), id {}.",
                    t.kind.as_str(),
                    t.slug,
                    t.name,
                    t.id
                );
            }
        }
        TenantCommand::List { json } => {
            let all = svc.admin_list().await?;
            if json {
                println!("{}", to_json(&all)?);
            } else {
                print_tenants(&all);
            }
        }
    }
    Ok(())
}

fn to_json(v: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(v)
        .map_err(|e| CliError::failure(format!("cannot encode JSON: {e}")))
}

fn pad(s: &str, width: usize) -> String {
    let w = UnicodeWidthStr::width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| UnicodeWidthStr::width(*h)).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(UnicodeWidthStr::width(c.as_str()));
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| pad(c, widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

fn print_tenants(all: &[Tenant]) {
    if all.is_empty() {
        println!("No tenants yet. Create a provider with: anshin tenant create --kind provider --slug SLUG --name NAME");
        return;
    }
    let slug_of = |id: Option<uuid::Uuid>| {
        id.and_then(|id| all.iter().find(|t| t.id == id))
            .map(|t| t.slug.clone())
            .unwrap_or_else(|| "-".into())
    };
    let rows = all
        .iter()
        .map(|t| {
            vec![
                t.slug.clone(),
                t.kind.as_str().into(),
                t.name.clone(),
                t.reference_pattern
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "-".into()),
                t.status.as_str().into(),
                slug_of(t.parent_id),
                t.id.to_string(),
            ]
        })
        .collect();
    table(
        &["SLUG", "KIND", "NAME", "PATTERN", "STATUS", "PARENT", "ID"],
        rows,
    );
}

pub async fn token(config: &Config, cmd: TokenCommand) -> Result<(), CliError> {
    // Validate arguments before touching the database, so bad usage changes nothing.
    match &cmd {
        TokenCommand::Issue {
            role, expires_in, ..
        } => {
            parse_role(role)?;
            parse_duration(expires_in)?;
        }
        TokenCommand::Revoke { id } => {
            parse_id(id)?;
        }
        TokenCommand::List { .. } => {}
    }
    let db = open(config).await?;
    let svc = TokenService::new(db);
    match cmd {
        TokenCommand::Issue {
            tenant,
            role,
            name,
            expires_in,
        } => {
            let issued = svc
                .issue(
                    &tenant,
                    parse_role(&role)?,
                    &name,
                    parse_duration(&expires_in)?,
                )
                .await?;
            println!(
                "Issued API token {} for {tenant} as {} (expires {}). It is shown only once; store it now.",
                issued.info.id,
                issued.info.role,
                issued.info.expires_at.format("%Y-%m-%d %H:%M UTC")
            );
            println!("{}", issued.token.expose());
        }
        TokenCommand::Revoke { id } => {
            let info = svc.revoke(parse_id(&id)?).await?;
            let when = info
                .revoked_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            println!(
                "API token {} ({}) is revoked since {when}.",
                info.id, info.name
            );
        }
        TokenCommand::List { tenant, json } => {
            let all = svc.list(&tenant).await?;
            if json {
                println!("{}", to_json(&all)?);
            } else {
                print_tokens(&all);
            }
        }
    }
    Ok(())
}

fn print_tokens(all: &[TokenInfo]) {
    if all.is_empty() {
        println!("This tenant has no API tokens.");
        return;
    }
    let now = chrono::Utc::now();
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let rows = all
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.name.clone(),
                t.role.as_str().into(),
                format!("{}…", t.prefix),
                t.state(now).into(),
                fmt(Some(t.expires_at)),
                fmt(t.last_used_at),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "ROLE",
            "PREFIX",
            "STATE",
            "EXPIRES",
            "LAST USED",
        ],
        rows,
    );
}

fn parse_role(s: &str) -> Result<Role, CliError> {
    Role::parse(s).ok_or_else(|| {
        CliError::usage(format!(
            "unknown role '{s}'; choose one of provider_admin, provider_operator, institution_admin, institution_staff, auditor"
        ))
    })
}

fn parse_duration(s: &str) -> Result<chrono::Duration, CliError> {
    let d = humantime::parse_duration(s).map_err(|_| {
        CliError::usage(format!(
            "'{s}' is not a duration; write it like 30d, 12h or 90d"
        ))
    })?;
    chrono::Duration::from_std(d)
        .ok()
        .filter(|d| *d > chrono::Duration::zero() && *d <= chrono::Duration::days(3660))
        .ok_or_else(|| {
            CliError::usage(format!(
                "the lifetime '{s}' must be more than zero and at most ten years"
            ))
        })
}

fn parse_id(s: &str) -> Result<uuid::Uuid, CliError> {
    uuid::Uuid::parse_str(s).map_err(|_| {
        CliError::usage(format!(
            "'{s}' is not a token id (a UUID as shown by `anshin token list`)"
        ))
    })
}

/// `anshin audit verify FILE`: prints the report, or the first offending entry and exit 1.
pub fn audit_verify(file: &std::path::Path, public_key: Option<&str>) -> Result<(), CliError> {
    let trusted = public_key
        .map(anshin_audit::verify::trusted_ed25519_key)
        .transpose()
        .map_err(|e| CliError::usage(format!("--public-key: {e}")))?;
    let f = std::fs::File::open(file)
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", file.display())))?;
    let keys = trusted.map(|k| vec![k]);
    match anshin_audit::verify::verify(std::io::BufReader::new(f), keys.as_deref()) {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(e) => Err(CliError::failure(format!(
            "the export does NOT verify: {e}"
        ))),
    }
}

pub async fn audit(config: &Config, cmd: crate::cli::AuditCommand) -> Result<(), CliError> {
    use crate::cli::AuditCommand;
    let db = open(config).await?;
    let key_provider = crate::keys::key_provider(config)
        .await
        .map_err(|e| CliError::usage(format!("keys: {e}")))?;
    let keys = crate::keys::service(db.clone(), config, key_provider);
    let signer = crate::signing_keys::audit_signer(&keys, config)
        .await
        .map_err(|e| CliError::failure(e.to_string()))?;
    let svc = anshin_audit::AuditService::new(
        db.clone(),
        signer,
        &anshin_audit::AuditSettings::from(&config.audit),
    );
    let parse_time = |flag: &str,
                      v: Option<String>|
     -> Result<Option<chrono::DateTime<chrono::Utc>>, CliError> {
        v.map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    CliError::usage(format!(
                        "{flag} must be an RFC 3339 time such as 2026-04-01T00:00:00+09:00"
                    ))
                })
        })
        .transpose()
    };
    match cmd {
        AuditCommand::Verify { file, public_key } => audit_verify(&file, public_key.as_deref()),
        AuditCommand::Seal => {
            let r = svc
                .sealer()
                .seal_all()
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
            println!(
                "Sealed {} events for {} tenants in {} checkpoints.",
                r.entries, r.tenants, r.checkpoints
            );
            Ok(())
        }
        AuditCommand::Export {
            tenant,
            from,
            to,
            out,
        } => {
            let q = anshin_audit::export::ExportQuery {
                tenant_id: None,
                from: parse_time("--from", from)?,
                to: parse_time("--to", to)?,
            };
            let t = TenancyService::new(db.clone())
                .admin_find(&tenant)
                .await?
                .ok_or_else(|| CliError::usage(format!("no tenant with slug or id '{tenant}'")))?;
            let (bytes, summary) = anshin_audit::export::export_as_operator(&svc, t.id, &q)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
            if out.as_os_str() == "-" {
                use std::io::Write;
                std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|e| CliError::failure(e.to_string()))?;
            } else {
                std::fs::write(&out, &bytes).map_err(|e| {
                    CliError::failure(format!("cannot write {}: {e}", out.display()))
                })?;
                eprintln!(
                    "Exported entries {}..{} of {} ({} checkpoints) to {}.",
                    summary.first,
                    summary.last,
                    t.slug,
                    summary.checkpoints,
                    out.display()
                );
            }
            Ok(())
        }
    }
}
