use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Anshin (安心): the compliance control plane for Japanese cloud EMR providers.
///
/// Configuration comes from defaults, then --config FILE, then ANSHIN_* environment variables,
/// then these flags. Exit codes: 0 success, 2 bad usage or configuration, 1 any other failure.
#[derive(Debug, Parser)]
#[command(
    name = "anshin",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// TOML configuration file (anshin.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and background workers (migrations are applied first).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage providers (事業者) and medical institutions (医療機関).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API tokens for machine clients.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Export and verify the tamper-evident audit trail (監査証跡).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Tenants' key-encryption keys (鍵管理): status, backfill, re-encryption and crypto-erase.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show a tenant's KEKs: the active one, rotation, last use, BYOK state and health.
    Status {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give every tenant that has none its own KEK (tenants created before the key service, or
    /// while the key provider was unreachable).
    Backfill,
    /// Re-encrypt under the tenants' KEKs what Anshin sealed with its interim keys before the key
    /// service (identity providers' client secrets, alert webhooks' secrets and URLs). Idempotent:
    /// run it again after an interruption. Prints the counts; exits 1 if anything was left.
    Reencrypt {
        /// Rows per batch (1–10000); each batch is one short transaction.
        #[arg(long, value_name = "N", default_value_t = 100)]
        batch: u64,
    },
    /// Crypto-erase a tenant: disable its KEKs, schedule their deletion (the local provider
    /// destroys them at once) and delete the wrapped data keys Anshin holds. Irreversible: every
    /// copy of the tenant's encrypted data, backups included, becomes unreadable. Prints the
    /// evidence as JSON.
    CryptoErase {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// KMS waiting period before deletion, 7–30 days [default: keys.deletion_window_days].
        #[arg(long)]
        pending_days: Option<u32>,
        /// Repeat the tenant's slug to confirm.
        #[arg(long, value_name = "SLUG")]
        confirm: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify an export offline: every entry, the hash chain, the Merkle roots and the checkpoint
    /// signatures. Needs no server or database. Exit 0 when it verifies, 1 naming the first
    /// offending entry when it does not.
    Verify {
        /// The export file (JSON Lines), as downloaded from /api/v1/audit/export.
        file: PathBuf,
        /// The checkpoint-signing public key you obtained independently (base64 raw Ed25519, as
        /// served at /api/v1/audit/public-key). Without it the keys in the export are trusted.
        #[arg(long, value_name = "BASE64")]
        public_key: Option<String>,
    },
    /// Export a tenant's trail for a time range (platform operation).
    Export {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// RFC 3339 start (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 end (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Where to write the export; `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Seal every pending event now and print how many were sealed.
    Seal,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Comma-separated services to run in this process: api, web, worker [default: all].
    #[arg(long, value_name = "LIST")]
    pub services: Option<String>,
    /// Seed demo tenants (idempotent) and print one fresh API token per role.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Provider,
    Institution,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PatternArg {
    #[value(name = "II")]
    II,
    #[value(name = "IV")]
    IV,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InstitutionTypeArg {
    Clinic,
    Hospital,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a provider, or a medical institution under a provider.
    Create {
        #[arg(long, value_enum)]
        kind: KindArg,
        /// 2–63 lower-case letters, digits and hyphens.
        #[arg(long)]
        slug: String,
        /// Display name, e.g. さくら内科クリニック.
        #[arg(long)]
        name: String,
        /// Slug of the provider (institutions only).
        #[arg(long, value_name = "SLUG")]
        parent: Option<String>,
        /// Reference pattern: II (cloud, with IT staff) or IV (cloud, without).
        #[arg(long, value_enum)]
        pattern: Option<PatternArg>,
        /// clinic (診療所, ≤19 beds) or hospital (病院, ≥20 beds).
        #[arg(long = "type", value_enum)]
        institution_type: Option<InstitutionTypeArg>,
        #[arg(long)]
        beds: Option<i32>,
        /// Contract start date, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        contract_start: Option<chrono::NaiveDate>,
        /// Contract end date, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        contract_end: Option<chrono::NaiveDate>,
        /// Print the tenant as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every tenant.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; the token is printed once, as the last line of output.
    Issue {
        /// Slug of the tenant the token acts for.
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        /// provider_admin, provider_operator, institution_admin, institution_staff or auditor.
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "api token")]
        name: String,
        /// Lifetime such as 30d, 12h or 90d [default: 90d].
        #[arg(long, value_name = "DURATION", default_value = "90d")]
        expires_in: String,
    },
    /// Revoke a token by id.
    Revoke { id: String },
    /// List a tenant's tokens (never the secrets).
    List {
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
}
