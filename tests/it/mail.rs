//! Invitation mail through a real SMTP server (Python aiosmtpd), on both backends: the link
//! arrives only by mail and works; with the mail server down, nothing is created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::test;
use anshin_identity::IdentityService;
use anshin_platform::secret::Secret;
use anshin_platform::Role;
use anshin_tests::{both_backends, free_port, wait_for_port, TestDb, World};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};

struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn start_smtp(port: u16, out: &std::path::Path) -> Smtp {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = std::path::Path::new(root).join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Python test peers are missing: run ./infra/test.sh (it creates .venv)"
    );
    let child = Command::new(python)
        .arg(std::path::Path::new(root).join("tests/python/smtp_receiver.py"))
        .arg(port.to_string())
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_port(port, 30), "aiosmtpd did not start");
    Smtp(child)
}

fn with_smtp(db: &TestDb, port: u16) -> IdentityService {
    let mut cfg = db.config.identity.clone();
    cfg.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
    cfg.mail_from = "Anshin <no-reply@anshin.example.jp>".into();
    IdentityService::new(
        db.app.clone(),
        "http://localhost:8080",
        cfg,
        anshin_server::app::secret_box(&db.config).unwrap(),
    )
    .unwrap()
}

both_backends! {
    async fn invitations_go_by_mail_and_nothing_is_created_when_mail_fails(db) {
        let w = World::build(&db).await;
        let admin = db.tokens().authenticate(w.token("alpha-clinic", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let port = free_port();
        let mailbox = db.data_dir.join("mailbox.jsonl");
        std::fs::create_dir_all(&db.data_dir).unwrap();
        let smtp = start_smtp(port, &mailbox);
        let identity = with_smtp(&db, port);

        let inv = identity.invite(&admin, "yui@clinic.example.jp", "中村 結衣", Role::InstitutionStaff).await.unwrap();
        assert!(inv.mailed);
        assert!(inv.enrollment_url.is_none(), "the link goes only by mail");
        let mail: Value = serde_json::from_str(std::fs::read_to_string(&mailbox).unwrap().lines().last().unwrap()).unwrap();
        assert_eq!(mail["rcpt_tos"], json!(["yui@clinic.example.jp"]));
        assert!(mail["subject"].as_str().unwrap().contains("招待"));
        let body = mail["body"].as_str().unwrap();
        assert!(body.contains("中村 結衣 様") && body.contains("パスキー"), "{body}");
        let link = body.lines().find(|l| l.starts_with("http://localhost:8080/enroll#token=")).expect("the link is in the mail");
        let token = link.split("#token=").nth(1).unwrap();
        // The mailed link works.
        let app = test::init_service(db.app()).await;
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);

        // Mail server down: a clear error and no invitation.
        drop(smtp);
        let err = identity.invite(&admin, "ren@clinic.example.jp", "小林 蓮", Role::InstitutionStaff).await.unwrap_err();
        let problem = anshin_platform::error::Problem::from(err);
        assert_eq!(problem.status, StatusCode::SERVICE_UNAVAILABLE);
        let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
        let invitations = {
            use sea_orm::EntityTrait;
            anshin_identity::entity::invitation::Entity::find().all(&tx).await.unwrap()
        };
        tx.commit().await.unwrap();
        assert_eq!(invitations.len(), 1, "the failed invitation was not kept");
        assert!(invitations.iter().all(|i| i.email != "ren@clinic.example.jp"));
    }
}
