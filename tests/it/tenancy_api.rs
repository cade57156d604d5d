//! Tenant lifecycle over the API, token validity rules, and the contract-end sweep job.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::jobs::{JobQueue, NewJob, Worker, WorkerOptions};
use anshin_platform::Role;
use anshin_tenancy::{TenantStatus, UpdateTenant};
use anshin_tests::{both_backends, World};
use serde_json::{json, Value};

both_backends! {
    async fn provider_creates_and_manages_an_institution(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let auth = ("authorization", format!("Bearer {}", w.token("alpha-cloud", Role::ProviderOperator)));
        let req = test::TestRequest::post().uri("/api/v1/tenants").insert_header(auth.clone()).set_json(json!({
            "kind": "institution", "slug": "kaede-hospital", "name": "かえで記念病院",
            "reference_pattern": "II", "bed_count": 150, "contract_start": "2026-04-01", "contract_end": "2029-03-31"
        })).to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let location = res.headers().get(header::LOCATION).unwrap().to_str().unwrap().to_string();
        let created: Value = test::read_body_json(res).await;
        assert_eq!(created["institution_type"], "hospital", "150 beds make a hospital");
        assert_eq!(created["parent_id"], w.p1.id.to_string());
        assert_eq!(created["status"], "active");
        assert_eq!(location, format!("/api/v1/tenants/{}", created["id"].as_str().unwrap()));

        let got: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri(&location).insert_header(auth.clone()).to_request()).await;
        assert_eq!(got["name"], "かえで記念病院");

        for (status, want) in [("suspended", StatusCode::OK), ("active", StatusCode::OK), ("offboarding", StatusCode::OK), ("suspended", StatusCode::CONFLICT), ("active", StatusCode::OK)] {
            let res = test::call_service(&app, test::TestRequest::patch().uri(&location).insert_header(auth.clone()).set_json(json!({"status": status})).to_request()).await;
            assert_eq!(res.status(), want, "→ {status}");
        }
        let patched: Value = test::call_and_read_body_json(&app, test::TestRequest::patch().uri(&location).insert_header(auth.clone()).set_json(json!({"contract_end": null, "bed_count": 180})).to_request()).await;
        assert_eq!(patched["contract_end"], Value::Null);
        assert_eq!(patched["bed_count"], 180);
        assert_eq!(patched["contract_start"], "2026-04-01");

        let listed: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/tenants?kind=institution&status=active").insert_header(auth.clone()).to_request()).await;
        let slugs: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|i| i["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, vec!["alpha-clinic", "alpha-hospital", "kaede-hospital"]);
    }

    async fn institutions_cannot_be_added_to_a_suspended_provider(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        db.tenancy().admin_update("alpha-cloud", UpdateTenant { status: Some(TenantStatus::Suspended), ..Default::default() }).await.unwrap();
        // A suspended provider's tokens stop working, and so do its institutions'.
        for (slug, role) in [("alpha-cloud", Role::ProviderAdmin), ("alpha-clinic", Role::InstitutionAdmin)] {
            let req = test::TestRequest::get().uri("/api/v1/tenants").insert_header(("authorization", format!("Bearer {}", w.token(slug, role)))).to_request();
            assert_eq!(test::call_service(&app, req).await.status(), StatusCode::UNAUTHORIZED, "{slug}");
        }
        let err = db.tenancy().admin_create(anshin_tenancy::CreateTenant {
            kind: anshin_platform::TenantKind::Institution, slug: "late-clinic".into(), name: "遅い診療所".into(),
            parent: Some("alpha-cloud".into()), reference_pattern: Some(anshin_tenancy::ReferencePattern::IV),
            institution_type: None, bed_count: None, contract_start: None, contract_end: None,
        }).await.unwrap_err();
        assert!(err.to_string().contains("suspended"), "{err}");
        // The other provider is unaffected.
        let req = test::TestRequest::get().uri("/api/v1/tenants").insert_header(("authorization", format!("Bearer {}", w.token("beta-cloud", Role::ProviderAdmin)))).to_request();
        assert_eq!(test::call_service(&app, req).await.status(), StatusCode::OK);
    }

    async fn revoked_and_expired_tokens_are_refused(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let tokens = db.tokens();
        let issued = tokens.issue("beta-clinic", Role::Auditor, "short", chrono::Duration::seconds(1)).await.unwrap();
        let call = |t: String| test::TestRequest::get().uri("/api/v1/tenants").insert_header(("authorization", format!("Bearer {t}"))).to_request();
        assert_eq!(test::call_service(&app, call(issued.token.expose().into())).await.status(), StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        assert_eq!(test::call_service(&app, call(issued.token.expose().into())).await.status(), StatusCode::UNAUTHORIZED);

        let t = w.token("beta-cloud", Role::ProviderAdmin).to_string();
        let id = tokens.list("beta-cloud").await.unwrap().into_iter().find(|i| i.role == Role::ProviderAdmin).unwrap();
        assert!(id.last_used_at.is_none());
        assert_eq!(test::call_service(&app, call(t.clone())).await.status(), StatusCode::OK);
        let used = tokens.list("beta-cloud").await.unwrap().into_iter().find(|i| i.id == id.id).unwrap();
        assert!(used.last_used_at.is_some(), "last-used time is recorded");
        tokens.revoke(id.id).await.unwrap();
        assert_eq!(test::call_service(&app, call(t)).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn a_revocation_by_another_process_takes_effect_within_the_cache_ttl(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let token = w.token("alpha-hospital", Role::Auditor).to_string();
        let call = || test::TestRequest::get().uri("/api/v1/tenants").insert_header(("authorization", format!("Bearer {token}"))).to_request();
        assert_eq!(test::call_service(&app, call()).await.status(), StatusCode::OK);
        // Another process revokes it: this process's cache is not told.
        let tx = anshin_platform::db::begin_platform_tx(&db.app).await.unwrap();
        let hash = anshin_tenancy::tokens::hash_token(&token);
        use anshin_tenancy::entity::api_token;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let r = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, sea_orm::sea_query::Expr::value(chrono::Utc::now()))
            .filter(api_token::Column::TokenHash.eq(hash))
            .exec(&tx)
            .await
            .unwrap();
        assert_eq!(r.rows_affected, 1);
        tx.commit().await.unwrap();
        assert_eq!(db.config.http.auth_cache_ms, 1000);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(test::call_service(&app, call()).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn tokens_only_for_roles_that_fit_the_tenant(db) {
        let _w = World::build(&db).await;
        let t = db.tokens();
        assert!(t.issue("alpha-clinic", Role::ProviderAdmin, "x", chrono::Duration::hours(1)).await.is_err());
        assert!(t.issue("alpha-cloud", Role::InstitutionStaff, "x", chrono::Duration::hours(1)).await.is_err());
        assert!(t.issue("alpha-cloud", Role::Auditor, "x", chrono::Duration::hours(1)).await.is_ok());
        assert!(t.issue("no-such-tenant", Role::Auditor, "x", chrono::Duration::hours(1)).await.is_err());
    }

    async fn contract_sweep_moves_ended_contracts_to_offboarding(db) {
        let _w = World::build(&db).await;
        let t = db.tenancy();
        let yesterday = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
        let next_year = chrono::Utc::now().date_naive() + chrono::Duration::days(365);
        t.admin_update("alpha-clinic", UpdateTenant { contract_end: Some(Some(yesterday)), ..Default::default() }).await.unwrap();
        t.admin_update("beta-clinic", UpdateTenant { contract_end: Some(Some(next_year)), ..Default::default() }).await.unwrap();
        JobQueue::enqueue(&db.app, NewJob::new(anshin_tenancy::jobs::CONTRACT_SWEEP, json!({}))).await.unwrap();
        let worker = Worker::new(db.app.clone(), WorkerOptions::default()).register(anshin_tenancy::jobs::ContractSweep);
        assert!(worker.run_one().await.unwrap());
        assert_eq!(t.admin_find("alpha-clinic").await.unwrap().unwrap().status, TenantStatus::Offboarding);
        assert_eq!(t.admin_find("beta-clinic").await.unwrap().unwrap().status, TenantStatus::Active);
        assert_eq!(t.admin_find("alpha-hospital").await.unwrap().unwrap().status, TenantStatus::Active);
    }
}
