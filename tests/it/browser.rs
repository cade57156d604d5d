//! People in Chromium, against a real `anshin serve`, on both backends (playwright-core, Debian
//! Chromium, virtual authenticators):
//! - `tests/node/enroll_and_sign_in.mjs`: invited, enrolls a passkey, sees the portal, signs out
//!   and in again, and signs in through the organisation with a passkey step-up;
//! - `tests/node/identity_pages.mjs`: the administration pages — account inventory, invitation,
//!   review campaign, break-glass issue and use (emergency banner), maintenance grant request
//!   and approval;
//! - `tests/node/audit_pages.mjs`: the audit pages — search by actor and Japan-time range, an
//!   event with its verified proof, the export download, the alert inbox (acknowledge, resolve).
//!
//! With `ANSHIN_SCREENSHOTS=DIR` the screenshots are copied there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

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
        let identity = anshin_tests::identity_service(&db, &base);
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

both_backends! {
    async fn identity_admin_pages_work_in_chromium(db) {
        assert!(
            browser_dir().join("node_modules/playwright-core").exists(),
            "playwright-core is missing: run `npm ci` in tests/node (./infra/test.sh does)"
        );
        let w = World::build(&db).await;
        let port = free_port();
        let base = format!("http://localhost:{port}");
        let tokens = db.tokens();
        let hospital_admin = tokens.authenticate(w.token("alpha-hospital", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let provider_admin = tokens.authenticate(w.token("alpha-cloud", Role::ProviderAdmin)).await.unwrap().unwrap();
        let identity = anshin_tests::identity_service(&db, &base);
        let admin_inv = identity.invite(&hospital_admin, "kanri@hikari.example.jp", "山田 管理者", Role::InstitutionAdmin).await.unwrap();
        let maint_inv = identity.invite(&provider_admin, "hoshu@alpha-cloud.example.jp", "鈴木 保守", Role::ProviderMaintainer).await.unwrap();

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
            .args([
                "identity_pages.mjs",
                &base,
                admin_inv.enrollment_url.as_deref().unwrap(),
                maint_inv.enrollment_url.as_deref().unwrap(),
                "alpha-hospital",
                &w.h1.id.to_string(),
                &shots.display().to_string(),
            ])
            .output()
            .expect("node is needed for the browser tests");
        server.kill().ok();
        server.wait().ok();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        copy_screenshots(&shots, &db, "pages");
        assert!(out.status.success(), "browser flow failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("ok: inventory, invitation, review, break-glass and maintenance grant pages"), "{stdout}");

        // What the pages did is on the record.
        let count = |sql: &'static str| db.count_platform(sql);
        assert_eq!(count("SELECT COUNT(*) FROM account_reviews WHERE status = 'closed'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM account_review_items WHERE decision = 'confirmed'").await, 1);
        // Addresses are stored sealed; the account is found by its blind index, as sign-in does.
        let shinjin = anshin_tests::email_index(&db, "shinjin@hikari.example.jp").await;
        assert_eq!(db.count_platform(&format!("SELECT COUNT(*) FROM users WHERE email_index = '{shinjin}' AND email LIKE 'anshin-env1:%' AND status = 'disabled'")).await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM maintenance_grants WHERE status = 'approved' AND decided_by IS NOT NULL").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM break_glass_credentials WHERE status = 'used'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM sessions WHERE method = 'break_glass'").await, 1);
    }
}

both_backends! {
    async fn audit_pages_work_in_chromium(db) {
        use anshin_audit::{Actor, ActorKind, AuditEvent, Outcome, Target};
        assert!(
            browser_dir().join("node_modules/playwright-core").exists(),
            "playwright-core is missing: run `npm ci` in tests/node (./infra/test.sh does)"
        );
        let w = World::build(&db).await;
        let port = free_port();
        let base = format!("http://localhost:{port}");
        let tokens = db.tokens();
        let hospital_admin = tokens.authenticate(w.token("alpha-hospital", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let identity = anshin_tests::identity_service(&db, &base);
        let admin_inv = identity.invite(&hospital_admin, "kanri@hikari.example.jp", "山田 管理者", Role::InstitutionAdmin).await.unwrap();
        let auditor_inv = identity.invite(&hospital_admin, "kansa@hikari.example.jp", "佐藤 監査人", Role::Auditor).await.unwrap();
        let provider_admin = tokens.authenticate(w.token("alpha-cloud", Role::ProviderAdmin)).await.unwrap().unwrap();
        let provider_inv = identity.invite(&provider_admin, "kanri@alpha-cloud.example.jp", "田中 事業者管理者", Role::ProviderAdmin).await.unwrap();

        // The hospital's trail: a nurse opens three records in the last half hour, a doctor one;
        // someone uses the break-glass code (a critical alert). Sealed with the server's sealer.
        let state = db.state().await;
        let h = w.h1.id;
        let now = chrono::Utc::now();
        let nurse = Actor::user(uuid::Uuid::now_v7(), "nurse@hikari.example.jp", h, "institution_staff");
        let doctor = Actor::user(uuid::Uuid::now_v7(), "doctor@hikari.example.jp", h, "institution_staff");
        for (i, (who, patient)) in [(&nurse, "P-0001"), (&doctor, "P-0002"), (&nurse, "P-0003"), (&nurse, "P-0004")].into_iter().enumerate() {
            let mut e = AuditEvent::new(h, who.clone(), "record.open", Outcome::Success)
                .target(Target::new("patient_record", patient))
                .detail("duration_secs", 30 + i);
            e.time = now - chrono::Duration::minutes(30 - 5 * i as i64);
            state.audit.record_now(&e).await.unwrap();
        }
        let bg = Actor { kind: ActorKind::BreakGlass, id: Some("bg-1".into()), label: Some("非常時用".into()), ..Actor::system("x") };
        state.audit.record_now(&AuditEvent::new(h, bg, "break_glass.use", Outcome::Success).reason("電子カルテ障害のため緊急に参照")).await.unwrap();
        state.audit.sealer().seal_all().await.unwrap();
        let jst = |t: chrono::DateTime<chrono::Utc>| (t + chrono::Duration::hours(9)).format("%Y-%m-%dT%H:%M").to_string();

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
            .args([
                "audit_pages.mjs",
                &base,
                admin_inv.enrollment_url.as_deref().unwrap(),
                auditor_inv.enrollment_url.as_deref().unwrap(),
                provider_inv.enrollment_url.as_deref().unwrap(),
                "nurse@hikari.example.jp",
                &jst(now - chrono::Duration::hours(1)),
                &jst(now + chrono::Duration::minutes(1)),
                &h.to_string(),
                &shots.display().to_string(),
            ])
            .output()
            .expect("node is needed for the browser tests");
        server.kill().ok();
        server.wait().ok();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        copy_screenshots(&shots, &db, "audit");
        assert!(out.status.success(), "browser flow failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("ok: audit search, event proof, export download and alert inbox"), "{stdout}");

        // What the pages did is on the record.
        let count = |sql: &'static str| db.count_platform(sql);
        assert_eq!(count("SELECT COUNT(*) FROM audit_alerts WHERE rule_id = 'break_glass.use' AND status = 'resolved' AND note = '本人に確認中'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM audit_events WHERE action = 'audit.export'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM audit_events WHERE action IN ('audit.alert.acknowledge', 'audit.alert.resolve')").await, 2);
    }
}

/// Copies a run's screenshots to `$ANSHIN_SCREENSHOTS` (if set), prefixed by backend and flow.
fn copy_screenshots(shots: &std::path::Path, db: &anshin_tests::TestDb, flow: &str) {
    let Ok(dir) = std::env::var("ANSHIN_SCREENSHOTS") else {
        return;
    };
    let backend = if db.backend == anshin_tests::Backend::Sqlite {
        "sqlite"
    } else {
        "pg"
    };
    for entry in std::fs::read_dir(shots).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".png") {
            let _ = std::fs::copy(
                entry.path(),
                PathBuf::from(&dir).join(format!("{backend}-{flow}-{name}")),
            );
        }
    }
}
