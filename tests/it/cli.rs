//! The `anshin` binary as an operator uses it: tenants, tokens, exit codes, and `serve --demo`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use anshin_platform::db::begin_platform_tx;
use anshin_tests::{anshin_bin, both_backends, free_port, http_get, wait_for_port, TestDb};
use sea_orm::{ConnectionTrait, Statement};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

fn anshin(db: &TestDb, args: &[&str]) -> Output {
    anshin_env(db, args, &[])
}

fn anshin_env(db: &TestDb, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut c = Command::new(anshin_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &db.env {
        c.env(k, v);
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output()
        .expect("run anshin (build it first: cargo build --bin anshin)")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}
fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

both_backends! {
    async fn tenants_and_tokens_from_the_command_line(db) {
        let o = anshin(&db, &["tenant", "create", "--kind", "provider", "--slug", "cli-prov", "--name", "CLI事業者"]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let o = anshin(&db, &["tenant", "create", "--kind", "institution", "--slug", "cli-clinic", "--name", "CLI診療所", "--parent", "cli-prov", "--pattern", "IV", "--beds", "5"]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let o = anshin(&db, &["tenant", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 2);
        let o = anshin(&db, &["tenant", "list"]);
        assert!(out(&o).contains("CLI診療所") && out(&o).contains("cli-prov"));

        let o = anshin(&db, &["token", "issue", "--tenant", "cli-clinic", "--role", "institution_admin", "--name", "レセコン連携", "--expires-in", "30d"]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let stdout = out(&o);
        let token = stdout.lines().last().unwrap().trim().to_string();
        assert!(token.starts_with("anshin_"), "last line is the token: {stdout}");
        assert_eq!(stdout.matches(&token).count(), 1, "the token is printed exactly once");
        assert!(!err(&o).contains(&token));

        // Only the hash is stored.
        let tx = begin_platform_tx(&db.app).await.unwrap();
        let rows = tx.query_all(Statement::from_string(db.db_backend(), "SELECT token_hash, prefix, name FROM api_tokens".to_string())).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rows.len(), 1);
        let hash: String = rows[0].try_get("", "token_hash").unwrap();
        assert_eq!(hash, anshin_tenancy::tokens::hash_token(&token));
        for r in &rows {
            for col in ["token_hash", "prefix", "name"] {
                assert_ne!(r.try_get::<String>("", col).unwrap(), token);
            }
        }

        let o = anshin(&db, &["token", "list", "--tenant", "cli-clinic", "--json"]);
        let tokens: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
        let id = tokens[0]["id"].as_str().unwrap().to_string();
        assert!(!out(&o).contains(&token));
        let o = anshin(&db, &["token", "list", "--tenant", "cli-clinic"]);
        assert!(out(&o).contains("active") && out(&o).contains("レセコン連携"));
        let o = anshin(&db, &["token", "revoke", &id]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let o = anshin(&db, &["token", "list", "--tenant", "cli-clinic"]);
        assert!(out(&o).contains("revoked"));
    }

    async fn exit_codes_and_clear_errors(db) {
        let o = anshin(&db, &["--help"]);
        assert_eq!(o.status.code(), Some(0));
        assert!(out(&o).contains("serve") && out(&o).contains("tenant"));
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);
        let cases: Vec<Case> = vec![
            (vec!["--bogus"], vec![], 2, "--bogus"),
            (vec!["tenant", "create", "--kind", "institution", "--slug", "orphan", "--name", "x", "--pattern", "IV"], vec![], 2, "--parent"),
            (vec!["tenant", "create", "--kind", "provider", "--slug", "Bad Slug", "--name", "x"], vec![], 2, "slug"),
            (vec!["token", "issue", "--tenant", "anything", "--role", "wizard"], vec![], 2, "unknown role 'wizard'"),
            (vec!["token", "issue", "--tenant", "anything", "--role", "auditor", "--expires-in", "soon"], vec![], 2, "not a duration"),
            (vec!["token", "revoke", "not-a-uuid"], vec![], 2, "not a token id"),
            (vec!["token", "list", "--tenant", "nobody"], vec![], 1, "no tenant with slug or id 'nobody'"),
            (vec!["tenant", "list"], vec![("ANSHIN_DATABASE_URL", "mysql://u:pw@localhost/x")], 2, "unsupported database backend 'mysql'"),
            (vec!["serve", "--listen", "not-an-address"], vec![], 2, "not-an-address"),
            (vec!["serve", "--services", "api,teleport"], vec![], 2, "teleport"),
        ];
        for (args, env, code, needle) in cases {
            let o = anshin_env(&db, &args, &env);
            assert_eq!(o.status.code(), Some(code), "{args:?}: {}", err(&o));
            assert!(err(&o).contains(needle), "{args:?}: stderr should name '{needle}': {}", err(&o));
            assert!(!err(&o).contains("pw@"), "secrets must not leak: {}", err(&o));
            assert!(!err(&o).contains("panicked"));
        }
        let o = anshin_env(&db, &["tenant", "list"], &[("ANSHIN_LISTN", "1")]);
        assert_eq!(o.status.code(), Some(0));
        assert!(err(&o).contains("ANSHIN_LISTN"), "unknown variables warn: {}", err(&o));
    }

    async fn serve_demo_is_idempotent_and_hands_out_working_tokens(db) {
        let first = run_demo(&db);
        let second = run_demo(&db);
        let tenants = anshin(&db, &["tenant", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&out(&tenants)).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 3, "demo seeding is idempotent");
        assert_eq!(first.len(), 6);
        assert_ne!(first, second, "each start issues fresh tokens");
        // The first run's tokens were revoked by the second.
        let port = free_port();
        let mut child = spawn_serve(&db, port);
        let (status, _) = http_get(port, "/api/v1/tenants", Some(&first[0].2));
        assert_eq!(status, 401);
        let (status, body) = http_get(port, "/api/v1/tenants", Some(&second[0].2));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("demo-clinic") && body.contains("さくら内科クリニック"));
        let (status, body) = http_get(port, "/", None);
        assert_eq!(status, 200);
        assert!(body.contains("Anshin"));
        child.kill().ok();
        child.wait().ok();
    }
}

fn spawn_serve(db: &TestDb, port: u16) -> std::process::Child {
    let mut c = Command::new(anshin_bin());
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &db.env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    assert!(wait_for_port(port, 30), "server did not start");
    child
}

/// Runs `serve --demo` until it is serving, returns (tenant, role, token) rows, and stops it.
fn run_demo(db: &TestDb) -> Vec<(String, String, String)> {
    let port = free_port();
    let mut c = Command::new(anshin_bin());
    c.args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in &db.env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut rows = Vec::new();
    let mut enrollment_link = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("Anshin is serving") {
            break;
        }
        if line.contains("/enroll#token=") {
            enrollment_link = Some(line.trim().to_string());
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 3 && parts[2].starts_with("anshin_") {
            rows.push((
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].to_string(),
            ));
        }
    }
    let link =
        enrollment_link.expect("--demo prints an enrollment link for the demo administrator");
    assert!(
        link.starts_with("http://localhost:8080/enroll#token="),
        "{link}"
    );
    assert!(wait_for_port(port, 30));
    let (status, body) = http_get(port, "/api/v1/tenants", Some(&rows[0].2));
    assert_eq!(status, 200, "{body}");
    child.kill().ok();
    child.wait().ok();
    rows
}
