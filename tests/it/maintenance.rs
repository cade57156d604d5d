//! Maintenance access (guideline 10 ③) on both backends: a maintainer has no standing access to
//! institutions, requests a grant for a work plan and window, acts under it only once the
//! institution's admin approved it and only inside the window, read-only, attributable to the
//! grant; a declared incident opens at once and is approved afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::StatusCode;
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{both_backends, World};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

both_backends! {
    async fn maintainers_act_only_under_approved_grants_in_their_window(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;
        let maint = ("authorization", format!("Bearer {}", w.token("alpha-cloud", Role::ProviderMaintainer)));
        let inst_admin = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionAdmin)));
        let get_c1 = |grant: Option<&str>| {
            let mut r = test::TestRequest::get().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(maint.clone());
            if let Some(g) = grant {
                r = r.insert_header(("x-anshin-grant", g.to_string()));
            }
            r.to_request()
        };

        // No standing access: the maintainer sees only its own provider.
        let listed: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(maint.clone()).to_request()).await;
        let slugs: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, vec!["alpha-cloud"]);
        assert_eq!(test::call_service(&app, get_c1(None)).await.status(), StatusCode::NOT_FOUND);

        // Request a grant for the clinic.
        let now = Utc::now();
        let req = json!({"institution_id": w.c1.id, "work_plan_ref": "WP-2026-1122-03 レセコン連携の障害調査", "scope": "read",
                         "starts_at": (now - Duration::minutes(1)).to_rfc3339(), "ends_at": (now + Duration::hours(2)).to_rfc3339()});
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/maintenance-grants").insert_header(maint.clone()).set_json(&req).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let g: Value = test::read_body_json(res).await;
        let gid = g["id"].as_str().unwrap().to_string();
        assert_eq!(g["status"], "requested");
        assert_eq!(g["active"], false);

        // Not approved yet: refused.
        assert_eq!(test::call_service(&app, get_c1(Some(&gid))).await.status(), StatusCode::FORBIDDEN);

        // Another institution's admin cannot see or decide it; the clinic's admin approves.
        let other_admin = ("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionAdmin)));
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/maintenance-grants/{gid}/decision")).insert_header(other_admin.clone()).set_json(json!({"approve": true})).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let seen: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/maintenance-grants").insert_header(other_admin).to_request()).await;
        assert!(seen["items"].as_array().unwrap().is_empty());
        let staff = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::InstitutionStaff)));
        let res = test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/maintenance-grants/{gid}/decision")).insert_header(staff).set_json(json!({"approve": true})).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let decided: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri(&format!("/api/v1/maintenance-grants/{gid}/decision")).insert_header(inst_admin.clone()).set_json(json!({"approve": true, "note": "作業計画を確認"})).to_request()).await;
        assert_eq!(decided["status"], "approved");
        assert_eq!(decided["active"], true);

        // Under the grant: the clinic, and only the clinic, read-only.
        let res = test::call_service(&app, get_c1(Some(&gid))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let in_scope: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(maint.clone()).insert_header(("x-anshin-grant", gid.clone())).to_request()).await;
        let slugs: Vec<&str> = in_scope["items"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
        assert_eq!(slugs, vec!["alpha-clinic"]);
        let res = test::call_service(&app, test::TestRequest::get().uri(&format!("/api/v1/tenants/{}", w.h1.id)).insert_header(maint.clone()).insert_header(("x-anshin-grant", gid.clone())).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "the grant opens one institution only");
        let res = test::call_service(&app, test::TestRequest::patch().uri(&format!("/api/v1/tenants/{}", w.c1.id)).insert_header(maint.clone()).insert_header(("x-anshin-grant", gid.clone())).set_json(json!({"name": "x"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        // Another maintainer cannot borrow the grant; a malformed grant id is a clear 400.
        let other_maint = ("authorization", format!("Bearer {}", w.token("beta-cloud", Role::ProviderMaintainer)));
        let res = test::call_service(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(other_maint).insert_header(("x-anshin-grant", gid.clone())).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let res = test::call_service(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(maint.clone()).insert_header(("x-anshin-grant", "not-a-grant")).to_request()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        // Other roles cannot use grants at all.
        let res = test::call_service(&app, test::TestRequest::get().uri("/api/v1/tenants").insert_header(inst_admin.clone()).insert_header(("x-anshin-grant", gid.clone())).to_request()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);

        // Outside the window: a grant that has not started yet is refused even when approved.
        let later = json!({"institution_id": w.c1.id, "work_plan_ref": "WP-later", "scope": "read",
                           "starts_at": (now + Duration::hours(1)).to_rfc3339(), "ends_at": (now + Duration::hours(3)).to_rfc3339()});
        let g2: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/maintenance-grants").insert_header(maint.clone()).set_json(&later).to_request()).await;
        let g2id = g2["id"].as_str().unwrap().to_string();
        test::call_service(&app, test::TestRequest::post().uri(&format!("/api/v1/maintenance-grants/{g2id}/decision")).insert_header(inst_admin.clone()).set_json(json!({"approve": true})).to_request()).await;
        assert_eq!(test::call_service(&app, get_c1(Some(&g2id))).await.status(), StatusCode::FORBIDDEN);

        // A declared incident: usable at once, awaiting the institution's after-the-fact approval.
        let incident = json!({"institution_id": w.c1.id, "work_plan_ref": "INC-0042 夜間の電子カルテ停止", "scope": "operate", "incident": true,
                              "starts_at": now.to_rfc3339(), "ends_at": (now + Duration::hours(4)).to_rfc3339()});
        let g3: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/maintenance-grants").insert_header(maint.clone()).set_json(&incident).to_request()).await;
        assert_eq!(g3["status"], "incident");
        assert_eq!(test::call_service(&app, get_c1(Some(g3["id"].as_str().unwrap()))).await.status(), StatusCode::OK);
        let pending: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/maintenance-grants").insert_header(inst_admin.clone()).to_request()).await;
        assert!(pending["items"].as_array().unwrap().iter().any(|g| g["status"] == "incident"));

        // Bad requests: a window that is too long, an unknown scope, another provider's institution.
        for (body, want) in [
            (json!({"institution_id": w.c1.id, "work_plan_ref": "WP", "scope": "read", "starts_at": now.to_rfc3339(), "ends_at": (now + Duration::days(10)).to_rfc3339()}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"institution_id": w.c1.id, "work_plan_ref": "WP", "scope": "root", "starts_at": now.to_rfc3339(), "ends_at": (now + Duration::hours(1)).to_rfc3339()}), StatusCode::UNPROCESSABLE_ENTITY),
            (json!({"institution_id": w.c2.id, "work_plan_ref": "WP", "scope": "read", "starts_at": now.to_rfc3339(), "ends_at": (now + Duration::hours(1)).to_rfc3339()}), StatusCode::NOT_FOUND),
        ] {
            let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/maintenance-grants").insert_header(maint.clone()).set_json(&body).to_request()).await;
            assert_eq!(res.status(), want, "{body}");
        }

        // The clinic's audit trail holds the request, the approval, every request made under the
        // grant (with its route) and the refused use outside the window (10 ③④, 17.1).
        db.state().await.audit.sealer().seal_all().await.unwrap();
        let auditor = ("authorization", format!("Bearer {}", w.token("alpha-clinic", Role::Auditor)));
        let trail: Value = test::call_and_read_body_json(&app, test::TestRequest::get().uri("/api/v1/audit/events?action=maintenance_grant.*&limit=500").insert_header(auditor).to_request()).await;
        let items = trail["items"].as_array().unwrap();
        let has = |action: &str, outcome: &str| items.iter().any(|e| e["action"] == action && e["outcome"] == outcome);
        assert!(has("maintenance_grant.request", "success") && has("maintenance_grant.approve", "success"), "{trail}");
        let access: Vec<&Value> = items.iter().filter(|e| e["action"] == "maintenance_grant.access" && e["outcome"] == "success").collect();
        assert!(access.iter().any(|e| e["details"]["request"] == format!("GET /api/v1/tenants/{}", w.c1.id)), "{trail}");
        assert!(access.iter().all(|e| e["actor"]["kind"] == "maintenance_grant" && e["actor"]["grant_id"].is_string()));
        let denied = items.iter().find(|e| e["action"] == "maintenance_grant.access" && e["outcome"] == "denied").expect("the refused early use is on record");
        assert_eq!(denied["details"]["outside_window"], true);
    }
}
