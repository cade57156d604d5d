//! The audit trail across services, on SQLite and PostgreSQL: events written with the changes
//! they describe, sealing, tenant-scoped reading, proofs, append-only storage, ingest from the
//! data plane, crash safety and concurrent sealers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use actix_web::test;
use anshin_audit::{Actor, AuditEvent, Outcome};
use anshin_platform::Role;
use anshin_tests::lit;
use anshin_tests::{bearer, both_backends, World};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{json, Value};

async fn get_json<S, B>(app: &S, path: &str, token: (&'static str, String)) -> (u16, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(
        app,
        test::TestRequest::get()
            .uri(path)
            .insert_header(token)
            .to_request(),
    )
    .await;
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post_json<S, B>(
    app: &S,
    path: &str,
    token: (&'static str, String),
    body: Value,
) -> (u16, Value)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(
        app,
        test::TestRequest::post()
            .uri(path)
            .insert_header(token)
            .set_json(body)
            .to_request(),
    )
    .await;
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn actions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// The log's sequence numbers for a tenant are exactly 0..n, each event once.
async fn assert_log_contiguous(db: &anshin_tests::TestDb, tenant: uuid::Uuid) -> i64 {
    let n = db
        .count_platform(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE tenant_id = {t}",
            t = lit(db, tenant)
        ))
        .await;
    let max = db
        .count_platform(&format!(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_log WHERE tenant_id = {t}",
            t = lit(db, tenant)
        ))
        .await;
    let distinct = db
        .count_platform(&format!(
            "SELECT COUNT(DISTINCT event_id) FROM audit_log WHERE tenant_id = {t}",
            t = lit(db, tenant)
        ))
        .await;
    assert_eq!(n, max, "no gap in seq");
    assert_eq!(n, distinct, "no event twice");
    n
}

both_backends! {
    async fn tenant_and_token_changes_are_sealed_and_readable_in_scope(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        let report = state.audit.sealer().seal_all().await.unwrap();
        assert!(report.entries >= 5, "tenant creations and token issues were recorded: {report:?}");
        assert_eq!(db.count_platform("SELECT COUNT(*) FROM audit_pending").await, 0);
        let app = test::init_service(db.app().await).await;

        // An institution auditor reads its own trail, sealed.
        let (s, page) = get_json(&app, "/api/v1/audit/events?limit=500", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 200, "{page}");
        let acts = actions(&page);
        assert!(acts.contains(&"tenant.create".to_string()), "{acts:?}");
        assert!(acts.contains(&"api_token.issue".to_string()), "{acts:?}");
        assert!(page["items"].as_array().unwrap().iter().all(|e| e["seq"].is_u64()));
        assert!(page["items"].as_array().unwrap().iter().all(|e| e["tenant_id"] == w.c1.id.to_string()));

        // Filters: prefix and exact action, actor, outcome.
        let (_, p) = get_json(&app, "/api/v1/audit/events?action=api_token.*", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert!(!actions(&p).is_empty() && actions(&p).iter().all(|a| a.starts_with("api_token.")));
        let (s, _) = get_json(&app, "/api/v1/audit/events?action=api%25", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 422);
        let (s, _) = get_json(&app, "/api/v1/audit/events?outcome=maybe", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 422);

        // The provider admin reads an institution of theirs; the other provider cannot.
        let path = format!("/api/v1/audit/events?tenant_id={}", w.c1.id);
        let (s, p) = get_json(&app, &path, bearer(&w, "alpha-cloud", Role::ProviderAdmin)).await;
        assert_eq!(s, 200);
        assert!(!actions(&p).is_empty());
        let (s, _) = get_json(&app, &path, bearer(&w, "beta-cloud", Role::ProviderAdmin)).await;
        assert_eq!(s, 404, "a foreign tenant is not found");
        let (s, _) = get_json(&app, &path, bearer(&w, "beta-clinic", Role::InstitutionAdmin)).await;
        assert_eq!(s, 404);
        // Staff and operators do not read the trail.
        let (s, _) = get_json(&app, "/api/v1/audit/events", bearer(&w, "alpha-clinic", Role::InstitutionStaff)).await;
        assert_eq!(s, 403);
        let (s, _) = get_json(&app, "/api/v1/audit/events", bearer(&w, "alpha-cloud", Role::ProviderOperator)).await;
        assert_eq!(s, 403);

        // The proof of one event verifies against the signed checkpoint.
        let id = page["items"][0]["id"].as_str().unwrap().to_string();
        let (s, proof) = get_json(&app, &format!("/api/v1/audit/events/{id}/proof"), bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 200, "{proof}");
        assert_eq!(proof["verified"], true);
        assert!(proof["entry"].as_str().unwrap().contains(&id));
        // Another tenant's auditor cannot see it at all.
        let (s, _) = get_json(&app, &format!("/api/v1/audit/events/{id}/proof"), bearer(&w, "beta-clinic", Role::Auditor)).await;
        assert_eq!(s, 404);
        assert_log_contiguous(&db, w.c1.id).await;

        // The public key is published.
        let res = test::call_service(&app, test::TestRequest::get().uri("/api/v1/audit/public-key").to_request()).await;
        assert_eq!(res.status(), 200);
        let key: Value = test::read_body_json(res).await;
        assert_eq!(key["algorithm"], "ed25519");
    }

    async fn an_event_exists_exactly_when_its_change_commits(db) {
        let w = World::build(&db).await;
        let sql = format!("SELECT COUNT(*) FROM audit_events WHERE tenant_id = {} AND action = 'test.change'", lit(&db, w.c1.id));
        let count = || db.count_platform(&sql);
        let event = || AuditEvent::new(w.c1.id, Actor::system("test"), "test.change", Outcome::Success);
        let tx = anshin_platform::db::begin_tenant_tx(&db.app, w.c1.id).await.unwrap();
        anshin_audit::record(&tx, &event()).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(count().await, 0, "rolled back: no event");
        let tx = anshin_platform::db::begin_tenant_tx(&db.app, w.c1.id).await.unwrap();
        anshin_audit::record(&tx, &event()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count().await, 1, "committed: the event");
        // A tenant transaction cannot write into another tenant's log (PostgreSQL RLS).
        if db.backend == anshin_tests::Backend::Postgres {
            let tx = anshin_platform::db::begin_tenant_tx(&db.app, w.c2.id).await.unwrap();
            let r = anshin_audit::record(&tx, &event()).await;
            assert!(r.is_err(), "RLS refuses an event for another tenant");
        }
    }

    async fn sealed_records_cannot_be_changed_or_deleted(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        state.audit.sealer().seal_all().await.unwrap();
        for sql in [
            "UPDATE audit_events SET action = 'forged'".to_string(),
            "DELETE FROM audit_events".to_string(),
            "UPDATE audit_log SET entry = 'forged'".to_string(),
            "DELETE FROM audit_log".to_string(),
            "UPDATE audit_checkpoints SET root_hash = 'forged'".to_string(),
            "DELETE FROM audit_checkpoints".to_string(),
            format!("DELETE FROM audit_tenants WHERE tenant_id = {}", lit(&db, w.c1.id)),
        ] {
            let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
            let r = tx.execute(Statement::from_string(db.db_backend(), sql.clone())).await;
            assert!(r.is_err(), "{sql} must be refused");
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("append-only") || msg.contains("permission denied"), "{sql}: {msg}");
            tx.rollback().await.ok();
        }
        if db.backend == anshin_tests::Backend::Postgres {
            // Even the schema owner's own UPDATE hits the trigger.
            let owner = anshin_platform::db::connect(&db.config.migration_database_url(), &db.config.database).await.unwrap();
            let tx = anshin_platform::db::begin_platform_tx(&owner).await.unwrap();
            let r = tx.execute_unprepared("UPDATE audit_events SET action = 'forged'").await;
            assert!(r.unwrap_err().to_string().contains("append-only"));
            tx.rollback().await.ok();
            let r = owner.execute_unprepared("TRUNCATE audit_log").await;
            assert!(r.is_err(), "TRUNCATE refused");
        }
        assert!(db.count_platform("SELECT COUNT(*) FROM audit_log").await > 0);
    }

    async fn the_data_plane_sends_access_events_idempotently(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let ev = |id: &str, action: &str| json!({
            "client_event_id": id,
            "time": chrono::Utc::now().to_rfc3339(),
            "action": action,
            "actor": {"id": "dr-0042", "label": "山田 花子", "role": "医師"},
            "target": {"type": "patient_record", "id": "P-000123"},
            "duration_ms": 93000,
            "source_ip": "10.0.0.7",
            "details": {"screen": "カルテ閲覧"}
        });
        let token = || bearer(&w, "alpha-clinic", Role::InstitutionAdmin);
        let (s, r) = post_json(&app, "/api/v1/audit/events", token(), json!({"events": [ev("e-1", "record.open"), ev("e-2", "record.close")]})).await;
        assert_eq!(s, 202, "{r}");
        assert_eq!(r, json!({"accepted": 2, "duplicates": 0}));
        let (s, r) = post_json(&app, "/api/v1/audit/events", token(), json!({"events": [ev("e-1", "record.open"), ev("e-3", "record.print")]})).await;
        assert_eq!(s, 202);
        assert_eq!(r, json!({"accepted": 1, "duplicates": 1}));
        let sql = format!("SELECT COUNT(*) FROM audit_events WHERE tenant_id = {} AND action LIKE 'record.%'", lit(&db, w.c1.id));
        let stored = || db.count_platform(&sql);
        assert_eq!(stored().await, 3);

        // One bad event refuses the whole batch, naming it.
        for (bad, needle) in [
            (json!({"events": [ev("e-4", "record.open"), ev("e-5", "Record Open")]}), "events[1]"),
            (json!({"events": [ev("e-6", "record.open"), ev("e-6", "record.open")]}), "repeats"),
            (json!({"events": []}), "empty"),
            (json!({"events": [{"client_event_id": "x"}]}), ""),
        ] {
            let (s, r) = post_json(&app, "/api/v1/audit/events", token(), bad).await;
            assert_eq!(s, 422, "{r}");
            assert!(r["detail"].as_str().unwrap_or("").contains(needle), "{r}");
        }
        let mut future = ev("e-7", "record.open");
        future["time"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
        let (s, _) = post_json(&app, "/api/v1/audit/events", token(), json!({"events": [future]})).await;
        assert_eq!(s, 422);
        assert_eq!(stored().await, 3, "refused batches stored nothing");

        // A provider's client reports for its institution, not for another provider's.
        let mut for_c1 = ev("p-1", "record.open");
        for_c1["tenant_id"] = json!(w.c1.id);
        let (s, _) = post_json(&app, "/api/v1/audit/events", bearer(&w, "alpha-cloud", Role::ProviderOperator), json!({"events": [for_c1]})).await;
        assert_eq!(s, 202);
        let mut for_c2 = ev("p-2", "record.open");
        for_c2["tenant_id"] = json!(w.c2.id);
        let (s, _) = post_json(&app, "/api/v1/audit/events", bearer(&w, "alpha-cloud", Role::ProviderOperator), json!({"events": [for_c2]})).await;
        assert_eq!(s, 404);

        // Sealed and searchable with who, what and how long.
        db.state().await.audit.sealer().seal_all().await.unwrap();
        let (s, page) = get_json(&app, "/api/v1/audit/events?action=record.open&target=P-000123", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 200);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        let e = &items[0];
        assert_eq!(e["actor"]["kind"], "emr_user");
        assert_eq!(e["actor"]["label"], "山田 花子");
        assert_eq!(e["details"]["duration_ms"], 93000);
        assert!(e["details"]["reported_by"].as_str().unwrap().starts_with("client:"));
        assert!(e["clock"]["source"].as_str().unwrap().starts_with("client:"));
        assert!(e["seq"].is_u64());
    }

    async fn checkpoints_are_consistent_with_each_other(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        state.audit.sealer().seal_all().await.unwrap();
        for i in 0..7 {
            state.audit.record_now(&AuditEvent::new(w.h1.id, Actor::system("test"), "test.tick", Outcome::Success).detail("i", i)).await.unwrap();
        }
        state.audit.sealer().seal_all().await.unwrap();
        let app = test::init_service(db.app().await).await;
        let (s, cps) = get_json(&app, "/api/v1/audit/checkpoints", bearer(&w, "alpha-hospital", Role::Auditor)).await;
        assert_eq!(s, 200);
        let sizes: Vec<u64> = cps["items"].as_array().unwrap().iter().map(|c| c["tree_size"].as_u64().unwrap()).collect();
        assert!(sizes.len() >= 2, "{sizes:?}");
        let (new, old) = (sizes[0], sizes[sizes.len() - 1]);
        let (s, p) = get_json(&app, &format!("/api/v1/audit/consistency?old={old}&new={new}"), bearer(&w, "alpha-hospital", Role::Auditor)).await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["verified"], true);
        let (s, _) = get_json(&app, &format!("/api/v1/audit/consistency?old={new}&new={old}"), bearer(&w, "alpha-hospital", Role::Auditor)).await;
        assert_eq!(s, 422);
        let (s, _) = get_json(&app, "/api/v1/audit/consistency?old=1&new=999999", bearer(&w, "alpha-hospital", Role::Auditor)).await;
        assert_eq!(s, 404);
        assert_eq!(assert_log_contiguous(&db, w.h1.id).await as u64, new);
    }

    async fn a_sealer_killed_mid_batch_loses_and_duplicates_nothing(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        for i in 0..40 {
            state.audit.record_now(&AuditEvent::new(w.c1.id, Actor::system("test"), "test.crash", Outcome::Success).detail("i", i)).await.unwrap();
        }
        let total = db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE tenant_id = {}", lit(&db, w.c1.id))).await;
        for point in ["after_log_insert", "after_pending_delete", "after_checkpoint_insert"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit-seal-fixture"))
                .env("FIXTURE_DB_URL", db.config.database_url().expose())
                .envs(db.env.clone())
                .env("FIXTURE_BATCH", "7")
                .env("ANSHIN_AUDIT_FAULT", point)
                .output()
                .unwrap();
            assert!(!out.status.success(), "the fixture must crash at {point}");
            assert!(String::from_utf8_lossy(&out.stderr).contains(point));
        }
        // After three crashes, nothing was sealed for c1 beyond whole batches, and a clean run
        // seals everything exactly once.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_audit-seal-fixture"))
            .env("FIXTURE_DB_URL", db.config.database_url().expose())
            .envs(db.env.clone())
            .env("FIXTURE_BATCH", "7")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(assert_log_contiguous(&db, w.c1.id).await, total);
        assert_eq!(db.count_platform("SELECT COUNT(*) FROM audit_pending").await, 0);
        let app = test::init_service(db.app().await).await;
        let (_, cps) = get_json(&app, "/api/v1/audit/checkpoints?limit=500", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        let sizes: Vec<u64> = cps["items"].as_array().unwrap().iter().map(|c| c["tree_size"].as_u64().unwrap()).collect();
        assert_eq!(sizes[0], total as u64);
        let (s, p) = get_json(&app, &format!("/api/v1/audit/consistency?old={}&new={}", sizes[sizes.len() - 1], sizes[0]), bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 200);
        assert_eq!(p["verified"], true);
    }

    async fn writers_and_two_sealer_processes_run_together(db) {
        let w = World::build(&db).await;
        // Creates the signing key the sealer processes share.
        let state = db.state().await;
        let spawn = || std::process::Command::new(env!("CARGO_BIN_EXE_audit-seal-fixture"))
            .env("FIXTURE_DB_URL", db.config.database_url().expose())
            .envs(db.env.clone())
            .env("FIXTURE_BATCH", "13")
            .env("FIXTURE_RUN_SECS", "6")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (mut a, mut b) = (spawn(), spawn());
        let mut writers = Vec::new();
        for wi in 0..4 {
            let audit = state.audit.clone();
            let tenants = [w.c1.id, w.h1.id];
            writers.push(tokio::spawn(async move {
                for i in 0..60 {
                    let t = tenants[(i + wi) % 2];
                    audit.record_now(&AuditEvent::new(t, Actor::system("writer"), "test.concurrent", Outcome::Success).detail("i", i)).await.unwrap();
                }
            }));
        }
        for h in writers {
            h.await.unwrap();
        }
        assert!(a.wait().unwrap().success());
        assert!(b.wait().unwrap().success());
        state.audit.sealer().seal_all().await.unwrap();
        for t in [w.c1.id, w.h1.id] {
            let events = db.count_platform(&format!("SELECT COUNT(*) FROM audit_events WHERE tenant_id = {}", lit(&db, t))).await;
            assert_eq!(assert_log_contiguous(&db, t).await, events, "every event sealed once");
        }
    }

    async fn an_export_verifies_offline_and_tampering_is_located(db) {
        let w = World::build(&db).await;
        let state = db.state().await;
        state.audit.sealer().seal_all().await.unwrap();
        for i in 0..25 {
            state.audit.record_now(&AuditEvent::new(w.c1.id, Actor::system("test"), "test.export", Outcome::Success).detail("i", i)).await.unwrap();
            if i % 6 == 0 {
                state.audit.sealer().seal_all().await.unwrap();
            }
        }
        let mid = chrono::Utc::now();
        for i in 0..5 {
            state.audit.record_now(&AuditEvent::new(w.c1.id, Actor::system("test"), "test.later", Outcome::Success).detail("i", i)).await.unwrap();
        }
        let app = test::init_service(db.app().await).await;
        let download = |path: String| {
            let app = &app;
            let w = &w;
            async move {
                let res = test::call_service(app, test::TestRequest::get().uri(&path).insert_header(bearer(w, "alpha-clinic", Role::Auditor)).to_request()).await;
                let status = res.status().as_u16();
                let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
                (status, ct, test::read_body(res).await.to_vec())
            }
        };
        let (s, ct, full) = download("/api/v1/audit/export".into()).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&full));
        assert_eq!(ct.as_deref(), Some("application/x-ndjson"));
        let key = state.audit.public_key();
        let report = anshin_audit::verify::verify(&full[..], Some(std::slice::from_ref(&key))).expect("the export verifies");
        let text = report.to_string();
        assert!(!text.is_empty());

        // A time range starting later exports a run that does not begin at seq 0.
        let from = (mid - chrono::Duration::milliseconds(1)).to_rfc3339();
        let (s, _, later) = download(format!("/api/v1/audit/export?from={}", urlencode(&from))).await;
        assert_eq!(s, 200);
        let header: Value = serde_json::from_slice(later.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert!(header["first"].as_u64().unwrap() > 0, "{header}");
        anshin_audit::verify::verify(&later[..], Some(std::slice::from_ref(&key))).expect("a later range verifies");

        // Offline, with the CLI and with the independent Python verifier.
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.jsonl");
        std::fs::write(&good, &full).unwrap();
        let cli = std::process::Command::new(anshin_tests::anshin_bin())
            .args(["audit", "verify"]).arg(&good).args(["--public-key", &key.public_key])
            .output().unwrap();
        assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
        let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/verify_audit.py");
        let py = std::process::Command::new(&python).arg(&script).arg(&good).args(["--public-key", &key.public_key]).output().unwrap();
        assert!(py.status.success(), "python: {} {}", String::from_utf8_lossy(&py.stdout), String::from_utf8_lossy(&py.stderr));

        // Change one byte of the 10th entry's event: every verifier names seq 9... of this log.
        let lines: Vec<&[u8]> = full.split(|b| *b == b'\n').collect();
        let target = lines.iter().position(|l| String::from_utf8_lossy(l).contains("\"seq\":9,")).unwrap();
        let mut tampered_lines: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
        let line = String::from_utf8(tampered_lines[target].clone()).unwrap().replacen("test.export", "test.exporT", 1);
        tampered_lines[target] = line.into_bytes();
        let tampered = tampered_lines.join(&b'\n');
        let err = anshin_audit::verify::verify(&tampered[..], Some(std::slice::from_ref(&key))).unwrap_err();
        assert!(err.to_string().contains("seq 9") || err.to_string().contains("seq=9"), "{err}");
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, &tampered).unwrap();
        let cli = std::process::Command::new(anshin_tests::anshin_bin())
            .args(["audit", "verify"]).arg(&bad).output().unwrap();
        assert!(!cli.status.success());
        let py = std::process::Command::new(&python).arg(&script).arg(&bad).output().unwrap();
        assert!(!py.status.success());
        assert!(String::from_utf8_lossy(&py.stdout).contains('9') || String::from_utf8_lossy(&py.stderr).contains('9'));

        // The export itself is on record, and a foreign tenant cannot export.
        state.audit.sealer().seal_all().await.unwrap();
        let (_, p) = get_json(&app, "/api/v1/audit/events?action=audit.export", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(p["items"].as_array().unwrap().len(), 2);
        let (s, _) = get_json(&app, &format!("/api/v1/audit/export?tenant_id={}", w.c1.id), bearer(&w, "beta-cloud", Role::ProviderAdmin)).await;
        assert_eq!(s, 404);
    }

    async fn identity_actions_are_sealed_with_who_when_and_from_where(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let mut nurse = anshin_tests::enroll_passkey(&app, &w, "alpha-clinic", "kango@aoba.example.jp", "institution_staff").await;
        anshin_tests::step_up(&app, &mut nurse).await;
        // A session ended by its owner.
        let res = test::call_service(&app, anshin_tests::with_session(
            test::TestRequest::post().uri("/api/v1/auth/sign-out"), &nurse.session)).await;
        assert!(res.status().is_success(), "{}", res.status());
        // A refused password sign-in for an address nobody has.
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/password-sign-in/begin")
            .insert_header(("user-agent", "probe-agent/1.0"))
            .set_json(json!({"email": "nobody@aoba.example.jp", "password": "a wrong password entirely"})).to_request()).await;
        assert_eq!(res.status(), 400);
        let state = db.state().await;
        state.audit.sealer().seal_all().await.unwrap();

        let (s, page) = get_json(&app, "/api/v1/audit/events?limit=500", bearer(&w, "alpha-clinic", Role::Auditor)).await;
        assert_eq!(s, 200);
        let acts = actions(&page);
        for a in ["invitation.create", "account.enroll", "auth.sign_in", "auth.step_up", "session.end"] {
            assert!(acts.contains(&a.to_string()), "{a} missing from {acts:?}");
        }
        let items = page["items"].as_array().unwrap();
        let sign_in = items.iter().find(|e| e["action"] == "auth.sign_in").unwrap();
        assert_eq!(sign_in["actor"]["label"], "kango@aoba.example.jp");
        assert_eq!(sign_in["actor"]["kind"], "user");
        assert_eq!(sign_in["details"]["method"], "passkey");
        assert!(sign_in["source"]["request_id"].is_string(), "request id recorded: {sign_in}");
        assert!(items.iter().all(|e| e["seq"].is_u64()), "all sealed");
        // Nothing secret is in the trail.
        let text = page.to_string();
        assert!(!text.contains("a wrong password entirely"));
        // The refused sign-in names no tenant: it is in the platform's log.
        let failures = db.count_platform("SELECT COUNT(*) FROM audit_events WHERE action = 'auth.sign_in' AND outcome = 'failure'").await;
        assert_eq!(failures, 1);
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
