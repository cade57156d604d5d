//! The identity administration pages (accounts and reviews, invitations, break-glass, maintenance
//! grants) on both backends: each opens (200) for the roles that use it, answers 403 with a
//! friendly page for the others, sends visitors without a session to /signin, and the portal
//! links only to the pages a role may open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_platform::Role;
use anshin_tests::{both_backends, World};
use serde_json::{json, Value};
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, Url};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

const ORIGIN: &str = "http://localhost:8080";

/// The pages behind a sign-in, with the roles that open them (the rest get 403).
const PAGES: [(&str, &[&str]); 7] = [
    (
        "/accounts",
        &["provider_admin", "institution_admin", "auditor"],
    ),
    (
        "/accounts/reviews",
        &["provider_admin", "institution_admin", "auditor"],
    ),
    (
        "/accounts/{me}",
        &["provider_admin", "institution_admin", "auditor"],
    ),
    (
        "/accounts/reviews/{review}",
        &["provider_admin", "institution_admin", "auditor"],
    ),
    ("/invitations", &["provider_admin", "institution_admin"]),
    (
        "/break-glass",
        &["provider_admin", "institution_admin", "auditor"],
    ),
    (
        "/maintenance-grants",
        &[
            "provider_admin",
            "provider_operator",
            "provider_maintainer",
            "institution_admin",
            "auditor",
        ],
    ),
];

fn session_cookie<B>(res: &actix_web::dev::ServiceResponse<B>) -> Option<String> {
    res.headers().get_all(header::SET_COOKIE).find_map(|v| {
        let rest = v.to_str().ok()?.strip_prefix("anshin_session=")?;
        Some(rest.split(';').next()?.to_string()).filter(|v| !v.is_empty())
    })
}

/// Invites `email` as `role` into `slug` (with that tenant's admin token) and enrolls a software
/// passkey; yields the session cookie.
macro_rules! person {
    ($app:expr, $w:expr, $slug:expr, $admin:expr, $email:expr, $role:expr) => {{
        let admin = $w.token($slug, $admin);
        let inv: Value = test::call_and_read_body_json($app, test::TestRequest::post().uri("/api/v1/invitations")
            .insert_header(("authorization", format!("Bearer {admin}")))
            .set_json(json!({"email": $email, "display_name": "テスト 太郎", "role": $role})).to_request()).await;
        let token = inv["enrollment_url"].as_str().unwrap_or_else(|| panic!("{inv}")).split("#token=").nth(1).unwrap().to_string();
        let begin: Value = test::call_and_read_body_json($app, test::TestRequest::post().uri("/api/v1/auth/enrollment/begin").set_json(json!({"token": token})).to_request()).await;
        let ccr: CreationChallengeResponse = serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(Url::parse(ORIGIN).unwrap(), ccr).unwrap();
        let res = test::call_service($app, test::TestRequest::post().uri("/api/v1/auth/enrollment/finish").set_json(json!({"ceremony_id": begin["ceremony_id"], "credential": reg})).to_request()).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let cookie = session_cookie(&res).unwrap();
        let signed: Value = test::read_body_json(res).await;
        (cookie, signed["user"]["id"].as_str().unwrap().to_string())
    }};
}

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
        let csp = res
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .map(|v| v.to_str().unwrap().to_string());
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        (status, location, body, csp)
    }};
}

both_backends! {
    async fn identity_pages_open_by_role_and_redirect_without_a_session(db) {
        let w = World::build(&db).await;
        let app = test::init_service(db.app().await).await;

        let people = [
            ("alpha-hospital", Role::InstitutionAdmin, "admin@hikari.example.jp", "institution_admin"),
            ("alpha-hospital", Role::InstitutionAdmin, "staff@hikari.example.jp", "institution_staff"),
            ("alpha-hospital", Role::InstitutionAdmin, "audit@hikari.example.jp", "auditor"),
            ("alpha-cloud", Role::ProviderAdmin, "admin@alpha-cloud.example.jp", "provider_admin"),
            ("alpha-cloud", Role::ProviderAdmin, "ops@alpha-cloud.example.jp", "provider_operator"),
            ("alpha-cloud", Role::ProviderAdmin, "maint@alpha-cloud.example.jp", "provider_maintainer"),
            ("alpha-cloud", Role::ProviderAdmin, "audit@alpha-cloud.example.jp", "auditor"),
        ];
        let mut cookies = Vec::new();
        for (slug, admin, email, role) in people {
            let (cookie, id) = person!(&app, &w, slug, admin, email, role);
            cookies.push((slug, role, email, cookie, id));
        }

        // One review per tenant, started with the admin's token, so the review page has an id
        // and items.
        let mut reviews = std::collections::HashMap::new();
        for (slug, admin) in [("alpha-hospital", Role::InstitutionAdmin), ("alpha-cloud", Role::ProviderAdmin)] {
            let started: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/account-reviews")
                .insert_header(("authorization", format!("Bearer {}", w.token(slug, admin)))).set_json(json!({})).to_request()).await;
            reviews.insert(slug, started["review"]["id"].as_str().unwrap_or_else(|| panic!("{started}")).to_string());
        }

        for (slug, role, email, cookie, me) in &cookies {
            for (page, open_to) in PAGES {
                let path = page.replace("{me}", me).replace("{review}", &reviews[slug]);
                let (status, _, body, _) = get_page!(&app, &path, Some(cookie));
                if open_to.contains(role) {
                    assert_eq!(status, StatusCode::OK, "{role} of {slug} opens {path}: {body}");
                    assert!(body.contains("<meta name=\"csrf-token\""), "{path} carries the CSRF token");
                    assert!(body.contains("src=\"/static/admin.js\""), "{path} loads admin.js");
                    assert!(!body.contains("<script>"), "{path}: no inline script");
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{role} of {slug} is refused {path}");
                    assert!(body.contains("この画面を使う権限がありません"), "{path}: friendly 403 page for {role}");
                }
            }
            // The portal links exactly the pages the role opens.
            let (status, _, portal, _) = get_page!(&app, "/portal", Some(cookie));
            assert_eq!(status, StatusCode::OK);
            for (href, page) in [("/accounts", 0), ("/invitations", 4), ("/break-glass", 5), ("/maintenance-grants", 6)] {
                assert_eq!(
                    portal.contains(&format!("href=\"{href}\"")),
                    PAGES[page].1.contains(role),
                    "{role}: portal link to {href}"
                );
            }
            // The inventory shows the person themselves.
            if PAGES[0].1.contains(role) {
                let (_, _, body, _) = get_page!(&app, "/accounts", Some(cookie));
                assert!(body.contains(email), "{role} sees {email} in the inventory");
            }
        }

        // The inventory of the hospital lists its people and not the provider's; an account of
        // another tenant, or no account id at all, is not found.
        let hospital_admin = &cookies[0].3;
        let (_, _, body, _) = get_page!(&app, "/accounts", Some(hospital_admin));
        assert!(body.contains("staff@hikari.example.jp") && body.contains("audit@hikari.example.jp"));
        assert!(!body.contains("alpha-cloud.example.jp"), "no other tenant's accounts");
        let provider_admin_id = &cookies[3].4;
        let (status, _, _, _) = get_page!(&app, &format!("/accounts/{provider_admin_id}"), Some(hospital_admin));
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _, _) = get_page!(&app, "/accounts/not-a-uuid", Some(hospital_admin));
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _, _) = get_page!(&app, &format!("/accounts/reviews/{}", reviews["alpha-cloud"]), Some(hospital_admin));
        assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's review");
        // The review page offers decisions to the admin, not to the auditor.
        let (_, _, body, _) = get_page!(&app, &format!("/accounts/reviews/{}", reviews["alpha-hospital"]), Some(hospital_admin));
        assert!(body.contains("data-admin=\"review-decide\"") && body.contains("data-admin=\"review-close\""));
        let (_, _, body, _) = get_page!(&app, &format!("/accounts/reviews/{}", reviews["alpha-hospital"]), Some(&cookies[2].3));
        assert!(!body.contains("data-admin=\"review-decide\""), "auditors read only");
        // English on request.
        let (_, _, body, _) = get_page!(&app, "/accounts?lang=en", Some(hospital_admin));
        assert!(body.contains("Accounts (ID inventory)"), "English page");
        // The maintainer gets the request form, the institution admin sees the institution's id.
        let (_, _, body, _) = get_page!(&app, "/maintenance-grants", Some(&cookies[5].3));
        assert!(body.contains("data-admin=\"grant-request\""));
        let (_, _, body, _) = get_page!(&app, "/maintenance-grants", Some(hospital_admin));
        assert!(body.contains(&w.h1.id.to_string()) && !body.contains("data-admin=\"grant-request\""));

        // Without a session (or with a dead one): to the sign-in page.
        for (page, _) in PAGES {
            let path = page.replace("{me}", &cookies[0].4).replace("{review}", &reviews["alpha-hospital"]);
            for cookie in [None, Some("x".repeat(43))] {
                let (status, location, _, _) = get_page!(&app, &path, cookie.as_ref());
                assert_eq!(status, StatusCode::SEE_OTHER, "{path} without a session");
                assert_eq!(location.as_deref(), Some("/signin"), "{path}");
            }
        }
        // The break-glass use page is public, and only its script runs.
        let (status, _, body, csp) = get_page!(&app, "/break-glass/use?org=alpha-hospital", None::<&String>);
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("非常時アクセス") && body.contains("value=\"alpha-hospital\""));
        assert!(csp.unwrap().contains("script-src 'self'"));
        let (_, _, body, _) = get_page!(&app, "/break-glass/use?org=%22%3E%3Cx", None::<&String>);
        assert!(!body.contains("<x"), "org is filtered");

        // A break-glass session: the banner shows on every page, and it cannot issue a new code.
        let issued: Value = test::call_and_read_body_json(&app, test::TestRequest::post().uri("/api/v1/break-glass")
            .insert_header(("authorization", format!("Bearer {}", w.token("alpha-hospital", Role::InstitutionAdmin)))).to_request()).await;
        let res = test::call_service(&app, test::TestRequest::post().uri("/api/v1/auth/break-glass")
            .set_json(json!({"org": "alpha-hospital", "code": issued["code"], "reason": "電子カルテ障害のため緊急に参照する"})).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let emergency = session_cookie(&res).unwrap();
        for path in ["/portal", "/accounts", "/break-glass"] {
            let (status, _, body, _) = get_page!(&app, path, Some(&emergency));
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(body.contains("非常時アクセス中"), "{path} shows the emergency banner");
            assert!(body.contains("に終了します"), "{path} says when the session ends");
        }
        let (_, _, body, _) = get_page!(&app, "/break-glass", Some(&emergency));
        assert!(!body.contains("data-admin=\"break-glass-issue\"") && body.contains("使用済み"));
        let (_, _, body, _) = get_page!(&app, "/accounts", Some(hospital_admin));
        assert!(!body.contains("非常時アクセス中"), "no banner in a normal session");
    }
}
