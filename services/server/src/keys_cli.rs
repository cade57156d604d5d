//! `anshin keys …`: platform operations on tenants' keys.

use crate::cli::KeysCommand;
use crate::commands::{open, CliError};
use anshin_audit::Actor;
use anshin_keys::jobs::TenantList;
use anshin_platform::config::Config;
use anshin_tenancy::TenancyService;

pub async fn run(config: &Config, cmd: KeysCommand) -> Result<(), CliError> {
    if let KeysCommand::Reencrypt { batch } = &cmd {
        if !(1..=10_000).contains(batch) {
            return Err(CliError::usage(format!(
                "--batch must be between 1 and 10000, not {batch}"
            )));
        }
    }
    let db = open(config).await?;
    let provider = crate::keys::key_provider(config)
        .await
        .map_err(|e| CliError::usage(format!("keys: {e}")))?;
    let keys = crate::keys::service(db.clone(), config, provider);
    let tenancy = TenancyService::new(db.clone());
    let find = |slug: String| {
        let tenancy = tenancy.clone();
        async move {
            tenancy
                .admin_find(&slug)
                .await?
                .ok_or_else(|| CliError::usage(format!("no tenant with slug or id '{slug}'")))
        }
    };
    match cmd {
        KeysCommand::Status { tenant, json } => {
            let t = find(tenant).await?;
            let s = keys
                .status_of(t.id)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s)
                        .map_err(|e| CliError::failure(e.to_string()))?
                );
                return Ok(());
            }
            println!("Tenant {} ({}), key provider {}", t.slug, t.id, s.provider);
            match &s.active {
                Some(k) => println!(
                    "Active KEK  {}\n  origin {}, state {}, automatic rotation {}, health {}, created {}, last used {}, stored data keys {}",
                    k.key_id,
                    k.origin,
                    k.key_state,
                    match k.rotation_enabled {
                        Some(true) => "on",
                        Some(false) => "off",
                        None => "unknown",
                    },
                    k.health,
                    k.created_at.to_rfc3339(),
                    k.last_used_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    k.stored_data_keys
                ),
                None if s.erased => println!("Crypto-erased: the tenant has no usable key."),
                None => println!("No KEK yet (run `anshin keys backfill`)."),
            }
            for k in &s.previous {
                println!(
                    "{:<8} {}  state {}, retired {}, erased {}, deletion {}",
                    k.status,
                    k.key_id,
                    k.key_state,
                    k.retired_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    k.erased_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    k.deletion_date.map(|t| t.to_rfc3339()).unwrap_or_default()
                );
            }
            Ok(())
        }
        KeysCommand::Backfill => {
            let all = crate::keys::Directory(tenancy.clone())
                .all()
                .await
                .map_err(CliError::failure)?;
            let n = keys
                .backfill(&all)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
            println!("Created {n} KEKs; every tenant has its own key.");
            Ok(())
        }
        KeysCommand::Reencrypt { batch } => {
            let (identity, alerts) = crate::keys::reencrypt_services(db.clone(), config, &keys)
                .map_err(CliError::usage)?;
            let r = crate::keys::reencrypt(&identity, &alerts, &Actor::operator(), batch).await;
            for (what, found, c) in [
                (
                    "Identity provider client secrets",
                    "under the interim key",
                    &r.identity_providers,
                ),
                (
                    "People's e-mail addresses",
                    "stored readable",
                    &r.contact_data,
                ),
                (
                    "Alert webhook secrets and URLs",
                    "under the interim key",
                    &r.notification_channels,
                ),
            ] {
                println!(
                    "{what}: {} found {found}, {} sealed under the tenant's KEK, {} left.",
                    c.examined, c.resealed, c.failed
                );
            }
            if let Some(e) = r.errors.first() {
                let hint = if e.transient {
                    " Nothing else changed; run it again when the key provider answers."
                } else {
                    ""
                };
                let more = r
                    .errors
                    .iter()
                    .skip(1)
                    .map(|e| format!("; {e}"))
                    .collect::<String>();
                return Err(CliError::failure(format!("{e}{more}.{hint}")));
            }
            if r.failed() > 0 {
                return Err(CliError::failure(format!(
                    "{} values could not be sealed under their tenant's KEK and stay as they were: unreadable with the interim key, the tenant's key is unusable (crypto-erased or disabled), or an address another account already holds. The log above names each by id.",
                    r.failed()
                )));
            }
            println!("Every secret Anshin holds is sealed under its tenant's KEK.");
            Ok(())
        }
        KeysCommand::CryptoErase {
            tenant,
            pending_days,
            confirm,
        } => {
            let t = find(tenant).await?;
            if confirm != t.slug {
                return Err(CliError::usage(format!(
                    "--confirm must repeat the tenant's slug ({}) to crypto-erase it",
                    t.slug
                )));
            }
            let evidence = keys
                .crypto_erase(Actor::operator(), t.id, pending_days)
                .await
                .map_err(|e| CliError::failure(e.to_string()))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&evidence)
                    .map_err(|e| CliError::failure(e.to_string()))?
            );
            Ok(())
        }
    }
}
