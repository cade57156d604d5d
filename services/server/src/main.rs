use anshin_platform::config::{Config, LogFormat};
use anshin_platform::telemetry::{self, TelemetrySettings};
use anshin_server::cli::{Cli, Command};
use anshin_server::commands::{self, CliError};
use anshin_server::services::ServiceSet;
use clap::Parser;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

// Sign-in and the data-key API allocate many small, short-lived buffers on several threads at
// once; mimalloc serves them with less contention and less time in free than the system
// allocator (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line values that override configuration; absent flags are skipped.
#[derive(Serialize, Default)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    services: Option<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Openapi = cli.command {
        print!("{}", anshin_server::openapi::document_json());
        return Ok(());
    }
    // Offline verification needs no configuration, database or server.
    if let Command::Audit(anshin_server::cli::AuditCommand::Verify { file, public_key }) =
        &cli.command
    {
        return commands::audit_verify(file, public_key.as_deref());
    }
    let overrides = match &cli.command {
        Command::Serve(a) => Overrides {
            listen: a.listen.clone(),
            services: a.services.clone(),
        },
        _ => Overrides::default(),
    };
    let loaded = Config::load(cli.config.as_deref(), overrides)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let config = loaded.config;
    let serving = matches!(cli.command, Command::Serve(_));
    let services = ServiceSet::parse(config.services.as_deref()).map_err(CliError::usage)?;
    // One-shot commands log only problems, as text, so their stdout stays readable.
    let explicit_log = std::env::var_os("ANSHIN_LOG").is_some();
    let (filter, format) = if serving || explicit_log {
        (
            config.log.clone(),
            if serving {
                config.log_format
            } else {
                LogFormat::Text
            },
        )
    } else {
        ("warn".to_string(), LogFormat::Text)
    };
    let telemetry = telemetry::init(TelemetrySettings {
        filter: &filter,
        format,
        otlp_endpoint: if serving {
            config.otlp_endpoint.as_deref()
        } else {
            None
        },
        service_roles: services.to_string(),
        metrics_interval: Duration::from_millis(
            std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(15_000),
        ),
    })
    .map_err(|e| CliError::usage(e.to_string()))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let result = match cli.command {
        Command::Serve(args) => {
            actix_web::rt::System::new().block_on(commands::serve(config, services, args.demo))
        }
        other => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
            rt.block_on(async move {
                match other {
                    Command::Migrate => commands::migrate_cmd(&config).await,
                    Command::Tenant(c) => commands::tenant(&config, c).await,
                    Command::Token(c) => commands::token(&config, c).await,
                    Command::Audit(c) => commands::audit(&config, c).await,
                    Command::Keys(c) => anshin_server::keys_cli::run(&config, c).await,
                    Command::Serve(_) | Command::Openapi => Ok(()),
                }
            })
        }
    };
    telemetry.shutdown();
    result
}
