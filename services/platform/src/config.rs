//! Configuration: defaults, then an optional `anshin.toml`, then `ANSHIN_*` environment variables
//! (nested keys joined with `__`), then command-line flags.

use crate::secret::{redact_url, Secret};
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the embedded database and local key material.
    pub data_dir: PathBuf,
    /// Connection the server uses; on PostgreSQL a role that owns nothing and cannot bypass RLS.
    pub database_url: Option<Secret>,
    /// Connection migrations use (the schema owner). Defaults to `database_url`.
    pub migration_database_url: Option<Secret>,
    pub listen: String,
    /// The URL people use to reach Anshin; its host is the WebAuthn relying-party id and the
    /// URL is the only origin WebAuthn ceremonies accept.
    pub public_url: String,
    pub otlp_endpoint: Option<String>,
    /// `tracing` filter, e.g. `info,anshin=debug`.
    pub log: String,
    /// `json` (default) or `text`.
    pub log_format: LogFormat,
    /// Comma-separated service roles this process runs; empty means all.
    pub services: Option<String>,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub jobs: JobsConfig,
    pub identity: IdentityConfig,
    pub audit: AuditConfig,
    pub keys: KeysConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// A session unused this long ends (guideline 12 ⑥: unattended terminals).
    pub session_idle_timeout_secs: u64,
    /// A session ends this long after sign-in whatever its use.
    pub session_absolute_timeout_secs: u64,
    /// How long an enrollment link from an invitation stays valid.
    pub invitation_ttl_hours: u64,
    /// How long a started WebAuthn ceremony may take to finish.
    pub ceremony_timeout_secs: u64,
    /// Lifetime of a break-glass session (no extension by activity).
    pub break_glass_session_minutes: u64,
    /// Lifetime of the access tokens machine clients get at `/oauth2/token` (60–3600 s).
    pub access_token_ttl_secs: u64,
    /// Where security alerts (break-glass use) are POSTed, signed with `alert_webhook_secret`.
    pub alert_webhook_url: Option<String>,
    pub alert_webhook_secret: Option<Secret>,
    /// SMTP server for invitation mail, e.g. `smtp://127.0.0.1:25` or
    /// `smtps://user:password@mail.example.jp`; without it the link is shown to the inviter.
    pub smtp_url: Option<Secret>,
    pub mail_from: String,
    /// Shortest password accepted (a password is only ever one of two factors).
    pub password_min_length: usize,
    /// A new password may not equal any of this many previous ones.
    pub password_history: usize,
    /// Consecutive wrong passwords before the account's password is locked; each further
    /// failure doubles the lock, from one minute up to an hour.
    pub password_lockout_threshold: u32,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session_idle_timeout_secs: 15 * 60,
            session_absolute_timeout_secs: 12 * 3600,
            invitation_ttl_hours: 72,
            ceremony_timeout_secs: 300,
            break_glass_session_minutes: 60,
            access_token_ttl_secs: 600,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            smtp_url: None,
            mail_from: "Anshin <no-reply@localhost>".into(),
            password_min_length: 12,
            password_history: 5,
            password_lockout_threshold: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The sealer runs at least this often (a checkpoint every T seconds while events arrive).
    pub seal_interval_ms: u64,
    /// At most this many entries per checkpoint (a checkpoint every N events).
    pub checkpoint_max_entries: usize,
    /// NTP server whose offset from the host clock is measured and recorded with every event
    /// and checkpoint (17 ③), e.g. `ntp.nict.jp:123`; without it the offset is "unknown".
    pub ntp_server: Option<String>,
    pub ntp_check_interval_secs: u64,
    /// RFC 3161 time-stamping authority; each checkpoint gets a timestamp token when set.
    pub tsa_url: Option<String>,
    /// Alert rules (TOML); the shipped defaults apply when unset.
    pub alert_rules_file: Option<PathBuf>,
    /// Largest batch `POST /api/v1/audit/events` accepts.
    pub ingest_max_events: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            seal_interval_ms: 1_000,
            checkpoint_max_entries: 10_000,
            ntp_server: None,
            ntp_check_interval_secs: 300,
            tsa_url: None,
            alert_rules_file: None,
            ingest_max_events: 1_000,
        }
    }
}

/// Where tenants' key-encryption keys live and how data keys are cached (guideline 7 ③, 13 ⑦).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// `local` (key files under `<data_dir>/keys`, the embedded default) or `aws-kms`.
    pub provider: String,
    /// AWS region of the KMS keys: `ap-northeast-1` (Tokyo) or `ap-northeast-3` (Osaka) only.
    pub aws_region: String,
    /// Test-only: a KMS endpoint such as a moto server. Refused unless `allow_test_endpoint`.
    pub aws_endpoint_url: Option<String>,
    pub allow_test_endpoint: bool,
    /// Seconds before a KMS call is abandoned (the operation then fails closed with 503).
    pub aws_timeout_secs: u64,
    /// Seals the local provider's key files with a key derived from this passphrase (argon2id).
    /// Set it through `ANSHIN_KEYS__LOCAL_PASSPHRASE`, never in a file under version control.
    pub local_passphrase: Option<Secret>,
    /// Data-key cache: a cached data key is replaced after this many seconds …
    pub cache_max_age_secs: u64,
    /// … or messages …
    pub cache_max_messages: u64,
    /// … or bytes encrypted, whichever comes first.
    pub cache_max_bytes: u64,
    pub cache_capacity: usize,
    /// KMS waiting period before a crypto-erased key is deleted (7–30 days).
    pub deletion_window_days: u32,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            provider: "local".into(),
            aws_region: "ap-northeast-1".into(),
            aws_endpoint_url: None,
            allow_test_endpoint: false,
            aws_timeout_secs: 5,
            local_passphrase: None,
            cache_max_age_secs: 300,
            cache_max_messages: 1_000_000,
            cache_max_bytes: 1 << 36,
            cache_capacity: 4096,
            deletion_window_days: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub min_connections: u32,
    pub connect_timeout_secs: u64,
    pub sqlite_busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// actix worker threads; 0 means one per core.
    pub workers: usize,
    pub max_body_bytes: usize,
    /// Set only for plain-HTTP local development; cookies are `Secure` otherwise.
    pub insecure_cookies: bool,
    /// How long a successful API-token check is reused in this process (0 disables). Revocations
    /// made elsewhere take effect on this process within this time.
    pub auth_cache_ms: u64,
    /// Sign-in and ceremony requests allowed per client address and minute (0 disables).
    pub auth_rate_per_minute: u32,
    /// Requests a client may make in a burst before the per-minute rate applies.
    pub auth_rate_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    pub concurrency: usize,
    pub poll_interval_ms: u64,
    pub lease_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            migration_database_url: None,
            listen: "127.0.0.1:8080".into(),
            public_url: "http://localhost:8080".into(),
            otlp_endpoint: None,
            log: "info".into(),
            log_format: LogFormat::Json,
            services: None,
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            jobs: JobsConfig::default(),
            identity: IdentityConfig::default(),
            audit: AuditConfig::default(),
            keys: KeysConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            connect_timeout_secs: 10,
            sqlite_busy_timeout_ms: 5_000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            max_body_bytes: 256 * 1024,
            insecure_cookies: false,
            auth_cache_ms: 1_000,
            auth_rate_per_minute: 60,
            auth_rate_burst: 30,
        }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            poll_interval_ms: 500,
            lease_secs: 30,
        }
    }
}

/// Every key an `ANSHIN_*` variable may set, as `figment` sees it after the `__` split.
const KNOWN_KEYS: &[&str] = &[
    "data_dir",
    "database_url",
    "migration_database_url",
    "listen",
    "public_url",
    "otlp_endpoint",
    "log",
    "log_format",
    "services",
    "database.max_connections",
    "database.min_connections",
    "database.connect_timeout_secs",
    "database.sqlite_busy_timeout_ms",
    "http.workers",
    "http.max_body_bytes",
    "http.insecure_cookies",
    "http.auth_cache_ms",
    "http.auth_rate_per_minute",
    "http.auth_rate_burst",
    "jobs.concurrency",
    "jobs.poll_interval_ms",
    "jobs.lease_secs",
    "identity.session_idle_timeout_secs",
    "identity.session_absolute_timeout_secs",
    "identity.invitation_ttl_hours",
    "identity.ceremony_timeout_secs",
    "identity.break_glass_session_minutes",
    "identity.access_token_ttl_secs",
    "identity.alert_webhook_url",
    "identity.alert_webhook_secret",
    "identity.smtp_url",
    "identity.mail_from",
    "identity.password_min_length",
    "identity.password_history",
    "identity.password_lockout_threshold",
    "audit.seal_interval_ms",
    "audit.checkpoint_max_entries",
    "audit.ntp_server",
    "audit.ntp_check_interval_secs",
    "audit.tsa_url",
    "audit.alert_rules_file",
    "audit.ingest_max_events",
    "keys.provider",
    "keys.aws_region",
    "keys.aws_endpoint_url",
    "keys.allow_test_endpoint",
    "keys.aws_timeout_secs",
    "keys.local_passphrase",
    "keys.cache_max_age_secs",
    "keys.cache_max_messages",
    "keys.cache_max_bytes",
    "keys.cache_capacity",
    "keys.deletion_window_days",
];

/// Loaded configuration plus the warnings found while loading it (logged once telemetry is up).
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Config {
    /// `overrides` are command-line flags, serialized with absent flags skipped.
    pub fn load(
        file: Option<&Path>,
        overrides: impl serde::Serialize,
    ) -> Result<Loaded, ConfigError> {
        Self::load_from(file, overrides, std::env::vars())
    }

    pub fn load_from(
        file: Option<&Path>,
        overrides: impl serde::Serialize,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ANSHIN_"))
            .collect();
        let mut warnings = Vec::new();
        for (k, _) in &env {
            let key = k["ANSHIN_".len()..].to_ascii_lowercase().replace("__", ".");
            if !KNOWN_KEYS.contains(&key.as_str()) {
                warnings.push(format!(
                    "ignoring unknown environment variable {k}; see README.md for the supported ANSHIN_* settings"
                ));
            }
        }
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only recognised variables reach figment, so a typo warns instead of failing the load.
        let known_env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                let key = k["ANSHIN_".len()..].to_ascii_lowercase().replace("__", ".");
                KNOWN_KEYS.contains(&key.as_str())
            })
            .collect();
        fig = fig.merge(EnvMap(known_env));
        fig = fig.merge(Serialized::globals(overrides));
        let mut config: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(first_error(e)))?;
        config.normalize()?;
        Ok(Loaded { config, warnings })
    }

    fn normalize(&mut self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "listen address '{}' is not of the form HOST:PORT (for example 127.0.0.1:8080)",
                self.listen
            )));
        }
        match url::Url::parse(&self.public_url) {
            Ok(u) if u.host_str().is_some() && matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "public URL '{}' is not an http(s) URL (for example https://anshin.example.jp)",
                    self.public_url
                )))
            }
        }
        if let Some(ep) = &self.otlp_endpoint {
            if url::Url::parse(ep).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "OTLP endpoint '{ep}' is not a URL (for example http://127.0.0.1:4318)"
                )));
            }
        }
        if !(60..=3600).contains(&self.identity.access_token_ttl_secs) {
            return Err(ConfigError::Invalid(
                "identity.access_token_ttl_secs must be between 60 and 3600 seconds".into(),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "database.max_connections must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The server's database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> Secret {
        match &self.database_url {
            Some(u) => u.clone(),
            None => Secret::new(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("anshin.db").display()
            )),
        }
    }

    pub fn migration_database_url(&self) -> Secret {
        self.migration_database_url
            .clone()
            .unwrap_or_else(|| self.database_url())
    }

    pub fn database_url_for_logs(&self) -> String {
        redact_url(self.database_url().expose())
    }
}

fn first_error(e: figment::Error) -> String {
    let mut msg = e.to_string();
    // figment quotes the offending value for some errors; secrets must not leak through that.
    if msg.contains("database_url") {
        msg = "database URL setting has an invalid value".into();
    }
    msg
}

/// A figment provider over an explicit map of `ANSHIN_*` variables.
struct EnvMap(std::collections::HashMap<String, String>);

impl figment::Provider for EnvMap {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("ANSHIN_* environment variables")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        let mut root = Dict::new();
        for (k, v) in &self.0 {
            let key = k["ANSHIN_".len()..].to_ascii_lowercase();
            let parts: Vec<&str> = key.split("__").collect();
            let value: Value = v.parse().unwrap_or_else(|_| Value::from(v.clone()));
            insert_path(&mut root, &parts, value);
        }
        let mut map = figment::value::Map::new();
        map.insert(figment::Profile::Default, root);
        Ok(map)
    }
}

fn insert_path(dict: &mut figment::value::Dict, parts: &[&str], value: figment::value::Value) {
    use figment::value::{Dict, Value};
    match parts {
        [] => {}
        [last] => {
            dict.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, Default)]
    struct NoFlags {}

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply() {
        let l = Config::load_from(None, NoFlags {}, env(&[])).unwrap();
        assert_eq!(l.config.listen, "127.0.0.1:8080");
        assert!(l
            .config
            .database_url()
            .expose()
            .starts_with("sqlite://./data/anshin.db"));
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("anshin.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n[database]\nmax_connections = 3\n",
        )
        .unwrap();
        let l = Config::load_from(
            Some(&file),
            NoFlags {},
            env(&[
                ("ANSHIN_LOG", "warn"),
                ("ANSHIN_DATABASE__MAX_CONNECTIONS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(l.config.listen, "127.0.0.1:9000");
        assert_eq!(l.config.log, "warn");
        assert_eq!(l.config.database.max_connections, 7);

        #[derive(serde::Serialize)]
        struct Flags {
            listen: &'static str,
        }
        let l = Config::load_from(
            Some(&file),
            Flags {
                listen: "127.0.0.1:9100",
            },
            env(&[("ANSHIN_LISTEN", "127.0.0.1:9001")]),
        )
        .unwrap();
        assert_eq!(l.config.listen, "127.0.0.1:9100");
    }

    #[test]
    fn unknown_variables_warn_and_are_ignored() {
        let l = Config::load_from(None, NoFlags {}, env(&[("ANSHIN_LISTN", "x")])).unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("ANSHIN_LISTN"));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = Config::load_from(None, NoFlags {}, env(&[("ANSHIN_LISTEN", "nowhere")]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("nowhere"));
        let e = Config::load_from(
            Some(Path::new("/nonexistent/anshin.toml")),
            NoFlags {},
            env(&[]),
        )
        .err()
        .unwrap();
        assert!(matches!(e, ConfigError::MissingFile(_)));
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let l = Config::load_from(
            None,
            NoFlags {},
            env(&[("ANSHIN_DATABASE_URL", "postgres://a:topsecret@h/db")]),
        )
        .unwrap();
        assert!(!format!("{:?}", l.config).contains("topsecret"));
        assert!(!l.config.database_url_for_logs().contains("topsecret"));
    }
}
