//! Invitation mail through a real SMTP server (Python aiosmtpd), on both backends: the link
//! arrives only by mail and works; with the mail server down, nothing is created.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{both_backends, identity_with_smtp, Smtp, World, ORIGIN};
use serde_json::json;

both_backends! {
    async fn invitations_go_by_mail_and_nothing_is_created_when_mail_fails(db) {
        let w = World::build(&db).await;
        let admin = db.tokens().authenticate(w.token("alpha-clinic", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let smtp = Smtp::start(&db);
        let identity = identity_with_smtp(&db, &smtp);

        let inv = identity.invite(&admin, "yui@clinic.example.jp", "中村 結衣", Role::InstitutionStaff).await.unwrap();
        assert!(inv.mailed);
        assert!(inv.enrollment_url.is_none(), "the link goes only by mail");
        let mail = smtp.messages().pop().expect("the invitation was mailed");
        assert_eq!(mail["rcpt_tos"], json!(["yui@clinic.example.jp"]));
        assert!(mail["subject"].as_str().unwrap().contains("招待"));
        let body = mail["body"].as_str().unwrap();
        assert!(body.contains("中村 結衣 様") && body.contains("パスキー"), "{body}");
        let link = body.lines().find(|l| l.starts_with(&format!("{ORIGIN}/enroll#token="))).expect("the link is in the mail");
        let token = link.split("#token=").nth(1).unwrap();
        // The mailed link works.
        let app = test::init_service(db.app().await).await;
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
        assert!(invitations.iter().all(|i| i.id == inv.id), "only the mailed one");
    }
}
