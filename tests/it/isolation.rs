//! Wall 1 probe matrix: every API route × every role × another tenant's ids finds nothing, on
//! SQLite and PostgreSQL. Routes are read from the OpenAPI document, so a new route is probed as
//! soon as it exists (and fails here until it has a probe body below).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{Method, StatusCode};
use actix_web::test;
use anshin_platform::{Role, TenantKind};
use anshin_tests::{both_backends, World};
use serde_json::{json, Value};

/// What a probe sends and what it must get back.
enum Probe {
    /// The path names a foreign resource: always 404.
    ForeignId(Value),
    /// The body names a foreign tenant (as parent): 404, or 403 for roles refused first.
    ForeignParent(Value),
    /// A list: 200 with nothing outside the caller's scope.
    List,
    /// Acts only in the caller's own tenant; the answer must mention nothing foreign.
    OwnTenant(Value, &'static [u16]),
    /// Public sign-in ceremony endpoints: they take no tenant id and return no tenant data.
    Public,
}

/// The probe for each API route; a route without one fails the test until it gets one.
fn probe(method: &Method, path: &str, foreign_ref: &str) -> Option<Probe> {
    if path.contains("{id}") {
        let body = match (method.as_str(), path) {
            ("PATCH", "/api/v1/tenants/{id}") => json!({"name": "侵入テスト"}),
            (
                _,
                "/api/v1/tenants/{id}"
                | "/api/v1/me/sessions/{id}"
                | "/api/v1/accounts/{id}/sessions"
                | "/api/v1/clients/{id}",
            ) => Value::Null,
            ("GET", "/api/v1/accounts/{id}") | ("DELETE", "/api/v1/invitations/{id}") => {
                Value::Null
            }
            ("PATCH", "/api/v1/accounts/{id}") => json!({"status": "disabled"}),
            ("POST", "/api/v1/maintenance-grants/{id}/decision") => json!({"approve": true}),
            ("GET", "/api/v1/account-reviews/{id}") => Value::Null,
            ("POST", "/api/v1/account-reviews/{id}/decisions") => {
                json!({"user_id": uuid::Uuid::new_v4(), "decision": "disabled"})
            }
            ("POST", "/api/v1/account-reviews/{id}/close") => json!({"force": true}),
            ("PATCH", "/api/v1/me/credentials/{id}") => json!({"name": "侵入テスト"}),
            ("DELETE", "/api/v1/me/credentials/{id}" | "/api/v1/accounts/{id}/password-lock")
            | ("GET", "/api/v1/accounts/{id}/password" | "/api/v1/accounts/{id}/password-resets") => {
                Value::Null
            }
            ("POST", "/api/v1/accounts/{id}/password-resets") => {
                json!({"method": "in_person_id_card", "note": "侵入テスト"})
            }
            // Audit events, proofs, alerts and channels named by an id of another tenant.
            (
                "GET",
                "/api/v1/audit/events/{id}"
                | "/api/v1/audit/events/{id}/proof"
                | "/api/v1/audit/alerts/{id}"
                | "/api/v1/audit/notification-channels/{id}/deliveries",
            )
            | ("DELETE", "/api/v1/audit/notification-channels/{id}") => Value::Null,
            (
                "POST",
                "/api/v1/audit/alerts/{id}/acknowledge" | "/api/v1/audit/alerts/{id}/resolve",
            ) => {
                json!({"note": "侵入テスト"})
            }
            _ => return None,
        };
        return Some(Probe::ForeignId(body));
    }
    match (method.as_str(), path) {
        ("GET", "/api/v1/tenants") => Some(Probe::List),
        ("POST", "/api/v1/tenants") => Some(Probe::ForeignParent(json!({
            "kind": "institution", "slug": format!("probe-{}", uuid::Uuid::new_v4().simple()),
            "name": "侵入テスト", "parent": foreign_ref, "reference_pattern": "IV"
        }))),
        ("POST", "/api/v1/invitations") => Some(Probe::OwnTenant(
            json!({"email": format!("probe-{}@example.jp", uuid::Uuid::new_v4().simple()), "display_name": "調査", "role": "auditor"}),
            &[201, 403],
        )),
        // API tokens have no user account or sessions.
        ("GET", "/api/v1/me" | "/api/v1/me/sessions") => {
            Some(Probe::OwnTenant(Value::Null, &[404]))
        }
        ("POST", "/api/v1/auth/sign-out") => Some(Probe::OwnTenant(Value::Null, &[400])),
        ("POST", "/api/v1/me/step-up/begin") => Some(Probe::OwnTenant(Value::Null, &[404])),
        // Needs a ceremony started by a signed-in person; tests/it/identity.rs covers it.
        ("POST", "/api/v1/me/step-up/finish") => Some(Probe::Public),
        ("GET", "/api/v1/maintenance-grants") => Some(Probe::OwnTenant(Value::Null, &[200])),
        // Maintainers cannot find a foreign institution (404); every other role is refused (403).
        ("POST", "/api/v1/maintenance-grants") if uuid::Uuid::parse_str(foreign_ref).is_ok() => {
            Some(Probe::OwnTenant(
                json!({
                    "institution_id": foreign_ref, "work_plan_ref": "WP-1", "scope": "read",
                    "starts_at": chrono::Utc::now().to_rfc3339(), "ends_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
                }),
                &[403, 404],
            ))
        }
        ("POST", "/api/v1/maintenance-grants") => Some(Probe::Public),
        ("GET", "/api/v1/accounts" | "/api/v1/invitations") => {
            Some(Probe::OwnTenant(Value::Null, &[200, 403]))
        }
        // Machine clients: admins register in their own tenant, admins and auditors list it.
        ("POST", "/api/v1/clients") => Some(Probe::OwnTenant(
            json!({"name": "侵入テスト", "role": "auditor", "scopes": ["read"], "auth_method": "client_secret"}),
            &[201, 403],
        )),
        ("GET", "/api/v1/clients") => Some(Probe::OwnTenant(Value::Null, &[200, 403])),
        ("POST", "/api/v1/break-glass") => Some(Probe::OwnTenant(Value::Null, &[201, 403])),
        ("GET", "/api/v1/break-glass") => Some(Probe::OwnTenant(Value::Null, &[200, 404])),
        ("GET", "/api/v1/identity-provider") => Some(Probe::OwnTenant(Value::Null, &[200, 404])),
        ("PUT", "/api/v1/identity-provider") => Some(Probe::OwnTenant(
            json!({"issuer": "https://login.example.jp", "client_id": "c", "client_secret": "s",
                   "allowed_domains": ["example.jp"], "default_role": "auditor", "jit_provisioning": false}),
            &[200, 403],
        )),
        // Admins start a review of their own tenant (201, then 409 while it is open).
        ("POST", "/api/v1/account-reviews") => Some(Probe::OwnTenant(json!({}), &[201, 403, 409])),
        ("GET", "/api/v1/account-reviews") => Some(Probe::OwnTenant(Value::Null, &[200, 403])),
        ("GET", "/api/v1/identity-policy") => Some(Probe::OwnTenant(Value::Null, &[200, 403])),
        ("PUT", "/api/v1/identity-policy") => Some(Probe::OwnTenant(
            json!({"idle_timeout_secs": 900, "stale_after_days": 90, "disable_after_days": 30}),
            &[200, 403],
        )),
        // API tokens have no credentials or password of their own.
        ("GET", "/api/v1/me/credentials") => Some(Probe::OwnTenant(Value::Null, &[404])),
        ("POST", "/api/v1/me/credentials/begin") => {
            Some(Probe::OwnTenant(json!({"kind": "passkey"}), &[404]))
        }
        // Needs a ceremony started by a signed-in person; tests/it/credentials.rs covers it.
        ("POST", "/api/v1/me/credentials/finish") => Some(Probe::Public),
        ("PUT", "/api/v1/me/password") => Some(Probe::OwnTenant(
            json!({"new_password": "侵入テストの長いパスワード"}),
            &[404],
        )),
        ("GET", "/api/v1/attestation-policy") => Some(Probe::OwnTenant(Value::Null, &[200])),
        ("PUT", "/api/v1/attestation-policy") => {
            Some(Probe::OwnTenant(json!({"mode": "any"}), &[200, 403]))
        }
        // The audit trail: reads are scoped to the caller (tenant_id of another tenant is covered
        // in tests/it/audit.rs); bodies naming a foreign tenant are not found.
        (
            "GET",
            "/api/v1/audit/events"
            | "/api/v1/audit/checkpoints"
            | "/api/v1/audit/alerts"
            | "/api/v1/audit/alert-rules"
            | "/api/v1/audit/notification-channels",
        ) => Some(Probe::OwnTenant(Value::Null, &[200, 403])),
        ("GET", "/api/v1/audit/export") => Some(Probe::OwnTenant(Value::Null, &[200, 403, 404])),
        // Needs old and new tree sizes; tests/it/audit.rs covers it.
        ("GET", "/api/v1/audit/consistency") => Some(Probe::OwnTenant(Value::Null, &[400, 403])),
        ("GET", "/api/v1/audit/public-key") => Some(Probe::Public),
        ("POST", "/api/v1/audit/events") => Some(Probe::OwnTenant(
            json!({"events": [{"client_event_id": uuid::Uuid::new_v4().to_string(), "time": chrono::Utc::now().to_rfc3339(),
                "action": "record.open", "actor": {"id": "probe"}, "target": {"type": "patient_record", "id": "P-1"}}]}),
            &[202, 403],
        )),
        ("PUT", "/api/v1/audit/alert-rules") if uuid::Uuid::parse_str(foreign_ref).is_ok() => Some(
            Probe::ForeignParent(json!({"tenant_id": foreign_ref, "overrides": []})),
        ),
        ("PUT", "/api/v1/audit/alert-rules") => {
            Some(Probe::OwnTenant(json!({"overrides": []}), &[200, 403]))
        }
        ("POST", "/api/v1/audit/notification-channels")
            if uuid::Uuid::parse_str(foreign_ref).is_ok() =>
        {
            Some(Probe::ForeignParent(
                json!({"tenant_id": foreign_ref, "kind": "email", "name": "侵入テスト", "recipients": ["probe@example.jp"]}),
            ))
        }
        ("POST", "/api/v1/audit/notification-channels") => Some(Probe::OwnTenant(
            json!({"kind": "email", "name": "侵入テスト", "recipients": ["probe@example.jp"]}),
            &[201, 403],
        )),
        // Keys act for the caller's own tenant only (a foreign tenant_id is covered in
        // tests/it/keys.rs); the local provider refuses BYOK.
        ("GET", "/api/v1/keys/status") => Some(Probe::OwnTenant(Value::Null, &[200, 403])),
        ("POST", "/api/v1/keys/rotate") => Some(Probe::OwnTenant(Value::Null, &[202, 403])),
        ("PUT", "/api/v1/keys/byok") => Some(Probe::OwnTenant(
            json!({"key_arn": "arn:aws:kms:ap-northeast-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}),
            &[403, 422],
        )),
        ("DELETE", "/api/v1/keys/byok") => Some(Probe::OwnTenant(Value::Null, &[403, 409])),
        // Read-only roles may not create keys; auditors and maintainers get no keys at all.
        ("POST", "/api/v1/keys/data-keys") => Some(Probe::OwnTenant(
            json!({"purpose": "emr.record"}),
            &[200, 403],
        )),
        ("POST", "/api/v1/keys/data-keys/unwrap" | "/api/v1/keys/data-keys/rewrap") => {
            Some(Probe::OwnTenant(
                json!({"purpose": "emr.record", "wrapped": "QU5TSwE="}),
                &[403, 422],
            ))
        }
        ("POST", "/api/v1/keys/transit/encrypt") => Some(Probe::OwnTenant(
            json!({"purpose": "emr.record", "record_id": "P-1", "plaintext": "5oKj6ICF"}),
            &[200, 403],
        )),
        ("POST", "/api/v1/keys/transit/decrypt") => Some(Probe::OwnTenant(
            json!({"purpose": "emr.record", "record_id": "P-1", "ciphertext": "QU5TRQEC"}),
            &[400, 403],
        )),
        // Takes only a reset link's token; tests/it/password_reset.rs covers it.
        ("POST", "/api/v1/auth/password-reset") => Some(Probe::Public),
        ("POST", p) if p.starts_with("/api/v1/auth/") => Some(Probe::Public),
        _ => None,
    }
}

fn api_routes() -> Vec<(Method, String)> {
    let doc = serde_json::to_value(anshin_server::openapi::document()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") {
            continue;
        }
        for m in item.as_object().unwrap().keys() {
            out.push((
                Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
                path.clone(),
            ));
        }
    }
    assert!(
        out.len() >= 4,
        "expected the tenant routes in the OpenAPI document"
    );
    out
}

both_backends! {
    async fn probe_matrix_finds_no_leak(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let before: Vec<_> = db.tenancy().admin_list().await.unwrap();
        let mut probes = 0;
        for ((slug, role), token) in &w.tokens {
            let me = w.all().into_iter().find(|t| &t.slug == slug).unwrap();
            // What this principal may see: its provider and the provider's institutions, or itself.
            let visible: Vec<uuid::Uuid> = match me.kind {
                TenantKind::Provider => w.all().iter().filter(|t| t.id == me.id || t.parent_id == Some(me.id)).map(|t| t.id).collect(),
                TenantKind::Institution => vec![me.id],
            };
            let foreign: Vec<_> = w.all().into_iter().filter(|t| !visible.contains(&t.id)).collect();
            assert!(!foreign.is_empty());
            for (method, path) in api_routes() {
                for f in &foreign {
                    for foreign_ref in [f.id.to_string(), f.slug.clone()] {
                        let probe = probe(&method, &path, &foreign_ref)
                            .unwrap_or_else(|| panic!("add a probe for {method} {path}"));
                        let body = match &probe {
                            Probe::Public => continue,
                            Probe::ForeignId(b) | Probe::ForeignParent(b) | Probe::OwnTenant(b, _) => b.clone(),
                            Probe::List => Value::Null,
                        };
                        let uri = path.replace("{id}", &f.id.to_string());
                        let mut req = test::TestRequest::default()
                            .method(method.clone())
                            .uri(&uri)
                            .insert_header(("authorization", format!("Bearer {token}")));
                        if !body.is_null() {
                            req = req.set_json(&body);
                        }
                        let res = test::call_service(&app, req.to_request()).await;
                        let status = res.status();
                        let bytes = test::read_body(res).await;
                        let text = String::from_utf8_lossy(&bytes);
                        probes += 1;
                        // Nothing about the foreign tenant may appear in any answer.
                        assert!(!text.contains(&f.name), "{role} {method} {uri} leaked the name of {}: {text}", f.slug);
                        match probe {
                            Probe::ForeignId(_) => {
                                assert_eq!(status, StatusCode::NOT_FOUND, "{role}@{slug} {method} {uri}: {text}");
                            }
                            Probe::ForeignParent(_) => {
                                // Roles that may not create are refused before any lookup (403,
                                // which reveals nothing); the others cannot find the parent (404).
                                assert!(matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN), "{role} POST parent={foreign_ref}: {status} {text}");
                                if *role == Role::ProviderAdmin || *role == Role::ProviderOperator {
                                    assert_eq!(status, StatusCode::NOT_FOUND, "{role} POST parent={foreign_ref}: {text}");
                                }
                            }
                            Probe::OwnTenant(_, allowed) => {
                                assert!(allowed.contains(&status.as_u16()), "{role}@{slug} {method} {uri}: {status} {text}");
                                assert!(!text.contains(&f.id.to_string()), "{role} {method} {uri} mentioned {}", f.slug);
                            }
                            Probe::List => {
                                assert_eq!(status, StatusCode::OK, "{role} {method} {uri}");
                                let v: Value = serde_json::from_slice(&bytes).unwrap();
                                for item in v["items"].as_array().unwrap() {
                                    let id: uuid::Uuid = item["id"].as_str().unwrap().parse().unwrap();
                                    assert!(visible.contains(&id), "{role}@{slug} listed {id}");
                                }
                            }
                            Probe::Public => {}
                        }
                    }
                }
            }
        }
        assert!(probes > 200, "only {probes} probes ran");
        // Nothing changed anywhere.
        let after = db.tenancy().admin_list().await.unwrap();
        assert_eq!(before, after);
    }

    async fn each_role_sees_exactly_its_scope(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let cases = [
            ("alpha-cloud", Role::ProviderAdmin, vec![&w.p1, &w.c1, &w.h1]),
            ("alpha-cloud", Role::Auditor, vec![&w.p1, &w.c1, &w.h1]),
            ("alpha-clinic", Role::InstitutionStaff, vec![&w.c1]),
            ("alpha-clinic", Role::Auditor, vec![&w.c1]),
            ("beta-cloud", Role::ProviderOperator, vec![&w.p2, &w.c2]),
        ];
        for (slug, role, expected) in cases {
            let req = test::TestRequest::get()
                .uri("/api/v1/tenants")
                .insert_header(("authorization", format!("Bearer {}", w.token(slug, role))))
                .to_request();
            let v: Value = test::call_and_read_body_json(&app, req).await;
            let mut got: Vec<String> = v["items"].as_array().unwrap().iter().map(|i| i["slug"].as_str().unwrap().to_string()).collect();
            let mut want: Vec<String> = expected.iter().map(|t| t.slug.clone()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{role}@{slug}");
        }
        // An institution cannot see its own provider or a sibling.
        for target in [&w.p1, &w.h1] {
            let req = test::TestRequest::get()
                .uri(&format!("/api/v1/tenants/{}", target.id))
                .insert_header(("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionAdmin))))
                .to_request();
            assert_eq!(test::call_service(&app, req).await.status(), StatusCode::NOT_FOUND);
        }
    }

    async fn route_role_matrix(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        // (acting tenant, role, target, body, expected status)
        let cases: Vec<(&str, Role, &anshin_tenancy::Tenant, Value, StatusCode)> = vec![
            ("alpha-cloud", Role::ProviderAdmin, &w.c1, json!({"name": "あおば内科"}), StatusCode::OK),
            ("alpha-cloud", Role::ProviderOperator, &w.c1, json!({"status": "offboarding"}), StatusCode::OK),
            ("alpha-cloud", Role::ProviderOperator, &w.p1, json!({"name": "改名"}), StatusCode::FORBIDDEN),
            ("alpha-cloud", Role::ProviderAdmin, &w.p1, json!({"name": "アルファクラウド株式会社"}), StatusCode::OK),
            ("alpha-cloud", Role::Auditor, &w.c1, json!({"name": "x"}), StatusCode::FORBIDDEN),
            ("alpha-hospital", Role::InstitutionAdmin, &w.h1, json!({"bed_count": 120}), StatusCode::OK),
            ("alpha-hospital", Role::InstitutionAdmin, &w.h1, json!({"reference_pattern": "IV"}), StatusCode::FORBIDDEN),
            ("alpha-hospital", Role::InstitutionStaff, &w.h1, json!({"name": "x"}), StatusCode::FORBIDDEN),
            ("alpha-hospital", Role::Auditor, &w.h1, json!({"name": "x"}), StatusCode::FORBIDDEN),
        ];
        for (slug, role, target, body, want) in cases {
            let req = test::TestRequest::patch()
                .uri(&format!("/api/v1/tenants/{}", target.id))
                .insert_header(("authorization", format!("Bearer {}", w.token(slug, role))))
                .set_json(&body)
                .to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(res.status(), want, "{role}@{slug} PATCH {} {body}", target.slug);
        }
        for (slug, role, want) in [
            ("alpha-cloud", Role::ProviderAdmin, StatusCode::CREATED),
            ("alpha-cloud", Role::ProviderOperator, StatusCode::CREATED),
            ("alpha-cloud", Role::Auditor, StatusCode::FORBIDDEN),
            ("alpha-clinic", Role::InstitutionAdmin, StatusCode::FORBIDDEN),
            ("alpha-clinic", Role::InstitutionStaff, StatusCode::FORBIDDEN),
        ] {
            let req = test::TestRequest::post()
                .uri("/api/v1/tenants")
                .insert_header(("authorization", format!("Bearer {}", w.token(slug, role))))
                .set_json(json!({"kind": "institution", "slug": format!("new-{}", role.as_str().replace('_', "-")), "name": "新規", "reference_pattern": "II"}))
                .to_request();
            assert_eq!(test::call_service(&app, req).await.status(), want, "{role}@{slug} POST");
        }
    }
}
