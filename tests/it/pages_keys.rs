//! The key page (`/keys`) on both backends:
//! - in-process: it opens for institution admins, provider admins and operators and auditors
//!   (403 with the friendly page for the other roles, /signin without a session) and shows the
//!   active KEK as `GET /api/v1/keys/status` does, the data-key policy, and after a rotation the
//!   new key with the old one listed as retired; the actions show for admins only; a provider
//!   picks among its institutions (another provider's is "not found"); a crypto-erased tenant and
//!   a BYOK key that lost access get their banners; English renders;
//! - in Chromium (`tests/node/keys_pages.mjs`, against a real `anshin serve`): an institution
//!   admin opens the page from the menu, rotates the key (the admin's passkey confirmation is made
//!   stale first, so the API asks for a step-up: the page confirms with the virtual authenticator
//!   and retries), tries BYOK with the local provider and
//!   sees the refusal; an auditor reads only; a provider admin picks the hospital; institution
//!   staff gets the forbidden page. Screenshots in Japanese and English.
//!
//! With `ANSHIN_SCREENSHOTS=DIR` the screenshots are copied there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{
    anshin_bin, bearer, both_backends, enroll_passkey, free_port, wait_for_port, World,
};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The roles the key page opens for (the readers of `KeyService::status`).
const READERS: [&str; 4] = [
    "institution_admin",
    "auditor",
    "provider_admin",
    "provider_operator",
];

macro_rules! get_page {
    ($app:expr, $path:expr, $cookie:expr) => {{
        let mut r = test::TestRequest::get().uri($path);
        if let Some(c) = $cookie {
            r = r.insert_header(("cookie", format!("anshin_session={c}")));
        }
        let res = test::call_service($app, r.to_request()).await;
        let status = res.status();
        let location = res
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        (status, location, body)
    }};
}

/// The text of the element with `id` (up to its first tag inside or its end).
fn by_id<'a>(body: &'a str, id: &str) -> &'a str {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} in page"));
    let rest = &body[at..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    &rest[..rest.find('<').unwrap()]
}

/// The row of the previous-keys table for the KEK `id`.
fn previous_row<'a>(body: &'a str, id: &str) -> &'a str {
    let at = body
        .find(&format!("data-kek=\"{id}\""))
        .unwrap_or_else(|| panic!("KEK {id} is listed"));
    let rest = &body[at..];
    &rest[..rest.find("</tr>").unwrap()]
}

fn browser_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/node"))
}

both_backends! {
    async fn key_page_shows_status_rotation_and_byok(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let app = test::init_service(anshin_server::app::app(state.clone())).await;
        // The world's tenants are created without the server's hook: give them their KEKs.
        for t in w.all() {
            state.keys.provision(anshin_server::keys::info(t)).await.unwrap();
        }
        let h = w.h1.id;
        // Something Anshin stores for the hospital: one data key under its KEK.
        state.keys.seal(h, "test.secret", "r-1", b"secret").await.unwrap();

        let people = [
            ("alpha-hospital", "admin@hikari.example.jp", "institution_admin"),
            ("alpha-hospital", "staff@hikari.example.jp", "institution_staff"),
            ("alpha-hospital", "audit@hikari.example.jp", "auditor"),
            ("alpha-cloud", "admin@alpha-cloud.example.jp", "provider_admin"),
            ("alpha-cloud", "ops@alpha-cloud.example.jp", "provider_operator"),
            ("alpha-cloud", "maint@alpha-cloud.example.jp", "provider_maintainer"),
        ];
        let mut cookies = Vec::new();
        for (slug, email, role) in people {
            let p = enroll_passkey(&app, &w, slug, email, role).await;
            cookies.push((slug, role, p.session.0));
        }
        let hospital_admin = Some(cookies[0].2.clone());
        let hospital_auditor = Some(cookies[2].2.clone());
        let provider_admin = Some(cookies[3].2.clone());
        let provider_operator = Some(cookies[4].2.clone());

        // Access by role, and the menu link for exactly those roles.
        for (slug, role, cookie) in &cookies {
            let (status, _, body) = get_page!(&app, "/keys", Some(cookie));
            if READERS.contains(role) {
                assert_eq!(status, StatusCode::OK, "{role} of {slug} opens /keys: {body}");
                assert!(!body.contains("<script>"), "no inline script");
                assert!(body.contains("src=\"/static/keys.js\""));
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} of {slug} is refused /keys");
                assert!(body.contains("この画面を使う権限がありません"), "friendly 403 page for {role}");
            }
            let (_, _, portal) = get_page!(&app, "/portal", Some(cookie));
            assert_eq!(portal.contains("href=\"/keys\""), READERS.contains(role), "{role}: menu link to /keys");
        }
        for cookie in [None, Some("x".repeat(43))] {
            let (status, location, _) = get_page!(&app, "/keys", cookie.as_ref());
            assert_eq!(status, StatusCode::SEE_OTHER);
            assert_eq!(location.as_deref(), Some("/signin"));
        }

        // The hospital admin sees the KEK the API reports.
        let api_status = || async {
            let req = test::TestRequest::get()
                .uri("/api/v1/keys/status")
                .insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin))
                .to_request();
            let v: Value = test::call_and_read_body_json(&app, req).await;
            v
        };
        let api = api_status().await;
        let first_key = api["active"]["key_id"].as_str().unwrap().to_string();
        assert!(first_key.starts_with("local:"), "{first_key}");
        let (_, _, body) = get_page!(&app, "/keys", hospital_admin.as_ref());
        assert_eq!(by_id(&body, "active-key-id"), first_key, "the page shows the API's key");
        assert_eq!(by_id(&body, "keys-tenant"), "ひかり病院");
        assert!(!body.contains("id=\"k_tenant\""), "an institution has no tenant picker");
        // Two data keys: the secret above, and the one sealing the hospital's people's addresses.
        for s in ["鍵の管理", "ローカル（このサーバー上の鍵ファイル）", "Anshin 管理", "有効（毎年）", "正常", " JST", "2 件", "5 分", "1,000,000 回", "64 GiB", "以前の鍵はありません。"] {
            assert!(body.contains(s), "the page shows {s}");
        }
        assert!(body.contains("data-keys=\"rotate\"") && body.contains("data-keys=\"byok-register\""), "admins get the actions");
        assert!(body.contains("id=\"keys-step-up-note\"") && body.contains("src=\"/static/webauthn.js\""), "admins are told about the step-up, and the page can run it");
        assert!(body.contains("id=\"keys-byok-local\"") && body.contains("ap-northeast-3") && body.contains("arn:aws:kms:ap-northeast-1:123456789012:key/"), "BYOK requirements and format");
        assert!(!body.contains("data-keys=\"byok-remove\""), "no BYOK to remove");
        for cookie in [&hospital_auditor, &provider_operator] {
            let (_, _, body) = get_page!(&app, "/keys", cookie.as_ref());
            assert!(!body.contains("data-keys="), "read-only roles get no actions");
            assert!(body.contains("閲覧のみできます"));
        }

        // Rotation (through the API, as the page's script does): the page shows the new key and
        // lists the old one as retired, with the data key waiting to be re-wrapped.
        let req = test::TestRequest::post()
            .uri("/api/v1/keys/rotate")
            .insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let rotated: Value = test::read_body_json(res).await;
        let (_, _, body) = get_page!(&app, "/keys", hospital_admin.as_ref());
        let new_key = by_id(&body, "active-key-id").to_string();
        assert_ne!(new_key, first_key, "a new active key");
        assert_eq!(new_key, api_status().await["active"]["key_id"].as_str().unwrap());
        let row = previous_row(&body, rotated["retired_kek"].as_str().unwrap());
        assert!(row.contains(&first_key) && row.contains("data-status=\"retired\"") && row.contains("退役（復号のみ）"), "{row}");
        assert!(body.contains("id=\"keys-rewrap\"") && body.contains("データキー 2 件"), "the re-wrap is pending");

        // BYOK with the local provider: refused with a clear problem.
        let req = test::TestRequest::put()
            .uri("/api/v1/keys/byok")
            .insert_header(bearer(&w, "alpha-hospital", Role::InstitutionAdmin))
            .set_json(serde_json::json!({"key_arn": "arn:aws:kms:ap-northeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}))
            .to_request();
        let (status, problem) = anshin_tests::problem(test::call_service(&app, req).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(problem["detail"].as_str().unwrap().contains("local provider"), "{problem}");

        // A provider picks among its institutions; other tenants are "not found".
        let (_, _, body) = get_page!(&app, "/keys", provider_admin.as_ref());
        assert_eq!(by_id(&body, "keys-tenant"), "アルファクラウド", "the provider's own keys first");
        assert!(body.contains(&format!("<option value=\"{h}\"")) && body.contains(&format!("<option value=\"{}\"", w.c1.id)));
        assert!(!body.contains(&format!("<option value=\"{}\"", w.c2.id)), "not another provider's");
        let (status, _, body) = get_page!(&app, &format!("/keys?tenant={h}"), provider_admin.as_ref());
        assert_eq!(status, StatusCode::OK);
        assert_eq!(by_id(&body, "keys-tenant"), "ひかり病院");
        assert_eq!(by_id(&body, "active-key-id"), new_key, "the provider sees the hospital's key");
        assert!(body.contains(&format!("data-tenant=\"{h}\"")), "the script acts on the hospital");
        for (cookie, tenant) in [(&provider_admin, w.c2.id.to_string()), (&hospital_admin, w.c1.id.to_string()), (&hospital_admin, w.p1.id.to_string()), (&provider_admin, "not-a-uuid".to_string())] {
            let (status, _, _) = get_page!(&app, &format!("/keys?tenant={tenant}"), cookie.as_ref());
            assert_eq!(status, StatusCode::NOT_FOUND, "{tenant} is outside the scope");
        }

        // A crypto-erased clinic: the banner, its erased key, and no actions.
        state.keys.crypto_erase(anshin_audit::Actor::system("test"), w.c1.id, None).await.unwrap();
        let (status, _, body) = get_page!(&app, &format!("/keys?tenant={}", w.c1.id), provider_admin.as_ref());
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("id=\"keys-erased\"") && body.contains("暗号学的に消去"), "the erasure banner");
        assert!(body.contains("data-status=\"erased\"") && body.contains("消去済み") && body.contains("KMS での削除予定"));
        assert!(!body.contains("id=\"active-key-id\"") && !body.contains("data-keys="), "no key and no actions");

        // A BYOK key that lost access (as the health job records it): the banner and the remove
        // button; rotation is the key owner's.
        {
            use anshin_keys::entity::kek;
            use sea_orm::sea_query::Expr;
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            let tx = anshin_platform::db::begin_platform_write_tx(&db.app).await.unwrap();
            let r = kek::Entity::update_many()
                .col_expr(kek::Column::Origin, Expr::value("byok"))
                .col_expr(kek::Column::Health, Expr::value("denied"))
                .col_expr(kek::Column::HealthDetail, Expr::value("AccessDeniedException: grant revoked"))
                .filter(kek::Column::TenantId.eq(w.p1.id))
                .filter(kek::Column::Status.eq("active"))
                .exec(&tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(r.rows_affected, 1);
        }
        let (_, _, body) = get_page!(&app, "/keys", provider_admin.as_ref());
        assert!(body.contains("id=\"keys-byok-lost\"") && body.contains("AccessDeniedException: grant revoked"), "the access-lost banner");
        assert!(body.contains("持ち込み鍵（BYOK）") && body.contains("data-health=\"denied\"") && body.contains("アクセス拒否"));
        assert!(body.contains("data-keys=\"byok-remove\"") && !body.contains("data-keys=\"rotate\"") && body.contains("id=\"keys-rotate-byok\""));

        // English.
        let (_, _, body) = get_page!(&app, "/keys?lang=en", hospital_admin.as_ref());
        for s in ["Key management", "Managed by Anshin", "Healthy", "Rotate now", "Retired (decrypt only)", "Register BYOK", "5 min", "64 GiB"] {
            assert!(body.contains(s), "the English page shows {s}");
        }
        assert_eq!(by_id(&body, "active-key-id"), new_key);
    }
}

both_backends! {
    async fn key_page_works_in_chromium(db) {
        assert!(
            browser_dir().join("node_modules/playwright-core").exists(),
            "playwright-core is missing: run `npm ci` in tests/node (./infra/test.sh does)"
        );
        let w = World::build(&db).await;
        let port = free_port();
        let base = format!("http://localhost:{port}");
        // KEKs for the world's tenants (created without the server's hook), with the server's
        // local provider files under the same data directory.
        let state = db.state().await;
        for t in w.all() {
            state.keys.provision(anshin_server::keys::info(t)).await.unwrap();
        }
        state.keys.seal(w.h1.id, "test.secret", "r-1", b"secret").await.unwrap();
        let tokens = db.tokens();
        let hospital_admin = tokens.authenticate(w.token("alpha-hospital", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let provider_admin = tokens.authenticate(w.token("alpha-cloud", Role::ProviderAdmin)).await.unwrap().unwrap();
        let identity = anshin_tests::identity_service(&db, &base);
        let invite = |who: &anshin_platform::Principal, email: &'static str, name: &'static str, role: Role| {
            let identity = identity.clone();
            let who = who.clone();
            async move { identity.invite(&who, email, name, role).await.unwrap().enrollment_url.unwrap() }
        };
        let admin_link = invite(&hospital_admin, "kanri@hikari.example.jp", "山田 管理者", Role::InstitutionAdmin).await;
        let auditor_link = invite(&hospital_admin, "kansa@hikari.example.jp", "佐藤 監査人", Role::Auditor).await;
        let staff_link = invite(&hospital_admin, "kango@hikari.example.jp", "高橋 看護師", Role::InstitutionStaff).await;
        let provider_link = invite(&provider_admin, "kanri@alpha-cloud.example.jp", "田中 事業者管理者", Role::ProviderAdmin).await;

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
        let mut node = Command::new("node")
            .current_dir(browser_dir())
            .args([
                "keys_pages.mjs",
                &base,
                &admin_link,
                &auditor_link,
                &staff_link,
                &provider_link,
                &w.h1.id.to_string(),
                &shots.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node is needed for the browser tests");
        // Before the rotation the script pauses: the admin's passkey confirmation (from the
        // enrollment) becomes stale, so the page must run the step-up and retry.
        let mut early = String::new();
        {
            use std::io::{BufRead, Write};
            let mut lines = std::io::BufReader::new(node.stdout.as_mut().unwrap());
            loop {
                let mut line = String::new();
                if lines.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                early.push_str(&line);
                if line.trim() == "pause: stale-step-up" {
                    let kanri = anshin_tests::email_index(&db, "kanri@hikari.example.jp").await;
                    let aged = db
                        .exec_platform(&format!("UPDATE sessions SET stepped_up_at = NULL WHERE user_id IN (SELECT id FROM users WHERE email_index = '{kanri}')"))
                        .await;
                    assert!(aged >= 1, "the admin's session");
                    let stdin = node.stdin.as_mut().unwrap();
                    stdin.write_all(b"go\n").unwrap();
                    stdin.flush().unwrap();
                    break;
                }
            }
        }
        let out = node.wait_with_output().unwrap();
        server.kill().ok();
        server.wait().ok();
        let stdout = format!("{early}{}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        copy_screenshots(&shots, &db);
        assert!(out.status.success(), "browser flow failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("pause: stale-step-up"), "{stdout}");
        assert!(stdout.contains("ok: key page status, rotation after step-up, BYOK refusal, provider view and roles"), "{stdout}");

        // What the page did is on the record: one rotation of the hospital's key.
        let st = state.keys.status_of(w.h1.id).await.unwrap();
        let active = st.active.expect("an active key");
        assert_eq!(st.previous.len(), 1, "one previous key");
        assert_eq!(st.previous[0].status, "retired");
        assert_eq!(active.origin, "managed", "BYOK was refused");
        assert_eq!(db.count_platform("SELECT COUNT(*) FROM audit_events WHERE action = 'keys.kek.rotate'").await, 1);
        assert!(db.count_platform("SELECT COUNT(*) FROM audit_events WHERE action = 'auth.step_up' AND outcome = 'success'").await >= 1, "the page's step-up is on record");
        assert_eq!(db.count_platform("SELECT COUNT(*) FROM audit_events WHERE action = 'keys.byok.register'").await, 0, "BYOK was refused");
    }
}

/// Copies the run's screenshots to `$ANSHIN_SCREENSHOTS` (if set), prefixed by backend; the
/// SQLite run's Japanese and English pages also to /tmp for a quick look.
fn copy_screenshots(shots: &std::path::Path, db: &anshin_tests::TestDb) {
    let sqlite = db.backend == anshin_tests::Backend::Sqlite;
    if sqlite {
        for (from, to) in [
            ("keys-ja.png", "/tmp/keys-page-ja.png"),
            ("keys-en.png", "/tmp/keys-page-en.png"),
        ] {
            let _ = std::fs::copy(shots.join(from), to);
        }
    }
    let Ok(dir) = std::env::var("ANSHIN_SCREENSHOTS") else {
        return;
    };
    let backend = if sqlite { "sqlite" } else { "pg" };
    for entry in std::fs::read_dir(shots).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".png") {
            let _ = std::fs::copy(
                entry.path(),
                PathBuf::from(&dir).join(format!("{backend}-{name}")),
            );
        }
    }
}
