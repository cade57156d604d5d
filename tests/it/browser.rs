//! A person in Chromium: invited, enrolls a passkey, sees the portal, signs out and in again.
//! Runs `tests/node/enroll_and_sign_in.mjs` (playwright-core, Debian Chromium, a virtual
//! authenticator) against a real `anshin serve`, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use anshin_identity::IdentityService;
use anshin_platform::Role;
use anshin_tests::{anshin_bin, both_backends, free_port, wait_for_port, World};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn browser_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/node"))
}

both_backends! {
    async fn a_person_enrolls_a_passkey_in_chromium_and_signs_in(db) {
        assert!(
            browser_dir().join("node_modules/playwright-core").exists(),
            "playwright-core is missing: run `npm ci` in tests/node (./infra/test.sh does)"
        );
        let w = World::build(&db).await;
        let port = free_port();
        let base = format!("http://localhost:{port}");
        let admin = db.tokens().authenticate(w.token("alpha-hospital", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let identity = IdentityService::new(db.app.clone(), &base, db.config.identity.clone(), anshin_server::app::secret_box(&db.config).unwrap()).unwrap();
        // The hospital's own OpenID Provider knows this person with a password only.
        let email = "pwd@hikari.example.jp".to_string();
        let inv = identity.invite(&admin, &email, "高橋 看護師", Role::InstitutionStaff).await.unwrap();
        let provider_port = free_port();
        let mut provider = Command::new("node")
            .current_dir(browser_dir())
            .arg("oidc_provider.mjs")
            .env("PORT", provider_port.to_string())
            .env("CLIENT_ID", "anshin-hikari")
            .env("CLIENT_SECRET", "browser-test-client-secret-0123")
            .env("REDIRECT_URI", format!("{base}/auth/oidc/callback"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs the OpenID Provider");
        assert!(wait_for_port(provider_port, 30), "oidc-provider did not start");
        identity
            .set_identity_provider(&admin, anshin_identity::ProviderSettings {
                issuer: format!("http://127.0.0.1:{provider_port}"),
                client_id: "anshin-hikari".into(),
                client_secret: Some("browser-test-client-secret-0123".into()),
                allowed_domains: vec!["hikari.example.jp".into()],
                default_role: Role::InstitutionStaff,
                jit_provisioning: false,
                accepted_acr: vec![],
            })
            .await
            .unwrap();

        let mut c = Command::new(anshin_bin());
        c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("ANSHIN_PUBLIC_URL", &base)
            .env("ANSHIN_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &db.env {
            c.env(k, v);
        }
        let mut server = c.spawn().unwrap();
        assert!(wait_for_port(port, 30), "server did not start");

        let shots = db.data_dir.join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let out = Command::new("node")
            .current_dir(browser_dir())
            .args(["enroll_and_sign_in.mjs", &base, inv.enrollment_url.as_deref().unwrap(), &email, "高橋 看護師", &shots.display().to_string(), "alpha-hospital"])
            .output()
            .expect("node is needed for the browser tests");
        server.kill().ok();
        server.wait().ok();
        provider.kill().ok();
        provider.wait().ok();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Ok(dir) = std::env::var("ANSHIN_SCREENSHOTS") {
            for f in ["enroll.png", "portal.png", "credentials.png", "signin.png", "step-up.png", "failure.png"] {
                let _ = std::fs::copy(shots.join(f), PathBuf::from(&dir).join(format!("{}-{f}", if db.backend == anshin_tests::Backend::Sqlite { "sqlite" } else { "pg" })));
            }
        }
        assert!(out.status.success(), "browser flow failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("ok: enrolled, signed out and signed in"), "{stdout}");
        assert!(stdout.contains("ok: organisation sign-in with passkey step-up"), "{stdout}");
        // The enrollment link was used exactly once and the person has one passkey.
        let user_sessions = {
            use anshin_identity::entity::{credential, session};
            use sea_orm::EntityTrait;
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            let creds = credential::Entity::find().all(&tx).await.unwrap();
            let sessions = session::Entity::find().all(&tx).await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(creds.len(), 1);
            assert_eq!(creds[0].name, "テスト端末");
            sessions
        };
        assert_eq!(user_sessions.len(), 3, "sessions from enrollment, passkey sign-in and organisation sign-in");
        assert_eq!(user_sessions.iter().filter(|s| s.ended_reason.as_deref() == Some("signed_out")).count(), 2);
        assert_eq!(user_sessions.iter().filter(|s| s.method == "oidc+passkey").count(), 1);
    }
}
