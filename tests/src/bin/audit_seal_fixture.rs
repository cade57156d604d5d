//! A sealer process for the audit crash and concurrency tests: seals everything pending once
//! (or for FIXTURE_RUN_SECS) and exits. With `ANSHIN_AUDIT_FAULT=<point>` (debug builds) it
//! aborts inside the sealing transaction at that point, as a crash would.
//!
//! Environment: the test database's `ANSHIN_*` settings (the signing key is the server's, from
//! the key service), FIXTURE_DB_URL (the application role's connection), FIXTURE_BATCH,
//! FIXTURE_RUN_SECS (0 = seal once).

// A test fixture process: failing loudly is what the tests want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anshin_audit::Sealer;
use anshin_platform::config::Config;
use anshin_platform::config::DatabaseConfig;
use anshin_platform::secret::Secret;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = Secret::new(std::env::var("FIXTURE_DB_URL").expect("FIXTURE_DB_URL"));
    let db = anshin_platform::db::connect(&url, &DatabaseConfig::default())
        .await
        .expect("connect");
    #[derive(serde::Serialize)]
    struct NoFlags {}
    let config = Config::load_from(None, NoFlags {}, std::env::vars())
        .expect("config")
        .config;
    let provider = anshin_server::keys::key_provider(&config)
        .await
        .expect("key provider");
    let keys = anshin_server::keys::service(db.clone(), &config, provider);
    let signer = anshin_server::signing_keys::audit_signer(&keys, &config)
        .await
        .expect("signing key");
    let batch = std::env::var("FIXTURE_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(100);
    let run_secs: u64 = std::env::var("FIXTURE_RUN_SECS")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let sealer = Sealer::new(db, signer, batch);
    let until = Instant::now() + Duration::from_secs(run_secs);
    loop {
        let r = sealer.seal_all().await.expect("seal");
        println!(
            "sealed {} entries in {} checkpoints",
            r.entries, r.checkpoints
        );
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
