//! Wall 2 on PostgreSQL: row-level security holds even when a query forgets its tenant filter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::{test, web, HttpResponse};
use anshin_platform::db::begin_tenant_tx;
use anshin_platform::error::Problem;
use anshin_platform::http::Authenticated;
use anshin_platform::Role;
use anshin_tenancy::entity::{api_token, tenant};
use anshin_tests::{Backend, TestDb, World, APP_ROLE};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, Statement, TransactionTrait};

/// A handler with a deliberate wall-1 bug: it queries every tenant with no scope filter.
async fn unfiltered(
    Authenticated(p): Authenticated,
    db: web::Data<DatabaseConnection>,
) -> Result<HttpResponse, Problem> {
    let tx = begin_tenant_tx(&db, p.tenant_id).await?;
    let tenants = tenant::Entity::find().all(&tx).await?;
    let tokens = api_token::Entity::find().all(&tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "tenants": tenants.iter().map(|t| t.slug.clone()).collect::<Vec<_>>(),
        "token_tenants": tokens.iter().map(|t| t.tenant_id).collect::<Vec<_>>(),
    })))
}

async fn pg() -> (TestDb, World) {
    let db = TestDb::new(Backend::Postgres).await;
    let w = World::build(&db).await;
    (db, w)
}

#[actix_web::test]
async fn unfiltered_query_inside_a_request_sees_only_its_tenant() {
    let (db, w) = pg().await;
    let app = test::init_service(
        db.app()
            .await
            .route("/__probe/unfiltered", web::get().to(unfiltered)),
    )
    .await;
    for (slug, role, visible) in [
        (
            "alpha-cloud",
            Role::ProviderAdmin,
            vec!["alpha-cloud", "alpha-clinic", "alpha-hospital"],
        ),
        ("alpha-clinic", Role::InstitutionStaff, vec!["alpha-clinic"]),
        (
            "beta-cloud",
            Role::Auditor,
            vec!["beta-cloud", "beta-clinic"],
        ),
    ] {
        let req = test::TestRequest::get()
            .uri("/__probe/unfiltered")
            .insert_header(("authorization", format!("Bearer {}", w.token(slug, role))))
            .to_request();
        let v: serde_json::Value = test::call_and_read_body_json(&app, req).await;
        let mut got: Vec<&str> = v["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        got.sort();
        let mut want = visible.clone();
        want.sort();
        assert_eq!(got, want, "{role}@{slug}");
        let ids: Vec<uuid::Uuid> = w
            .all()
            .iter()
            .filter(|t| visible.contains(&t.slug.as_str()))
            .map(|t| t.id)
            .collect();
        for tid in v["token_tenants"].as_array().unwrap() {
            let tid: uuid::Uuid = tid.as_str().unwrap().parse().unwrap();
            assert!(
                ids.contains(&tid),
                "{role}@{slug} saw a token of tenant {tid}"
            );
        }
    }
}

#[actix_web::test]
async fn writes_to_another_tenant_are_refused_by_the_database() {
    let (db, w) = pg().await;
    let tx = begin_tenant_tx(&db.app, w.p1.id).await.unwrap();
    let r = tx
        .execute(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "UPDATE tenants SET name = 'pwned' WHERE id = $1",
            [w.c2.id.into()],
        ))
        .await
        .unwrap();
    assert_eq!(
        r.rows_affected(),
        0,
        "RLS must hide the foreign row from UPDATE"
    );
    let insert = tx
        .execute(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "INSERT INTO tenants (id, kind, slug, name, parent_id, status, created_at, updated_at) VALUES ($1, 'institution', 'sneaky', 'x', $2, 'active', now(), now())",
            [uuid::Uuid::now_v7().into(), w.p2.id.into()],
        ))
        .await;
    assert!(
        insert.is_err(),
        "WITH CHECK must refuse a row for another provider"
    );
    drop(tx);
    assert_eq!(
        db.tenancy()
            .admin_find("beta-clinic")
            .await
            .unwrap()
            .unwrap()
            .name,
        w.c2.name
    );
}

#[actix_web::test]
async fn without_a_tenant_context_nothing_is_visible_and_nothing_can_be_deleted() {
    let (db, _w) = pg().await;
    assert_eq!(db.count("SELECT count(*) FROM tenants").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM api_tokens").await, 0);
    let tx = db.app.begin().await.unwrap();
    let del = tx.execute_unprepared("DELETE FROM tenants").await;
    assert!(del.is_err(), "the application role has no DELETE privilege");
}

#[actix_web::test]
async fn the_application_role_cannot_bypass_rls() {
    let (db, _w) = pg().await;
    let row = db
        .app
        .query_one(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_user::text AS u, rolsuper, rolbypassrls, \
             (SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = current_user) AS owned \
             FROM pg_roles WHERE rolname = current_user",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "u").unwrap(), APP_ROLE);
    assert!(!row.try_get::<bool>("", "rolsuper").unwrap());
    assert!(!row.try_get::<bool>("", "rolbypassrls").unwrap());
    assert_eq!(
        row.try_get::<i64>("", "owned").unwrap(),
        0,
        "the app role must own nothing"
    );
    for table in ["tenants", "api_tokens"] {
        let r = db
            .app
            .query_one(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = '{table}'"),
            ))
            .await
            .unwrap()
            .unwrap();
        assert!(
            r.try_get::<bool>("", "relrowsecurity").unwrap(),
            "{table} ENABLE RLS"
        );
        assert!(
            r.try_get::<bool>("", "relforcerowsecurity").unwrap(),
            "{table} FORCE RLS"
        );
    }
    // The server refuses to start as a role that could bypass RLS.
    let admin = sea_orm::Database::connect(anshin_tests::pg_admin_url())
        .await
        .unwrap();
    assert!(anshin_server::migrate::check_app_role(&admin)
        .await
        .unwrap_err()
        .contains("BYPASSRLS"));
    assert!(anshin_server::migrate::check_app_role(&db.app)
        .await
        .is_ok());
}
