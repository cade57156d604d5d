//! The public page that sets a new password with an administrator's reset link: it opens
//! without a session, in Japanese first and in English by `?lang=en`, loads its script from
//! `/static` (no inline script) and never needs the token on the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_tests::{Backend, TestDb};

/// GETs `uri`; yields status, headers and body.
macro_rules! get {
    ($app:expr, $uri:expr) => {{
        let res = test::call_service($app, test::TestRequest::get().uri($uri).to_request()).await;
        let status = res.status();
        let headers = res.headers().clone();
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        (status, headers, body)
    }};
}

#[actix_web::test]
async fn the_password_reset_page_renders_in_japanese_and_english() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = test::init_service(db.app().await).await;

    let (status, headers, html) = get!(&app, "/password-reset");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get(header::CONTENT_LANGUAGE).unwrap(), "ja");
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let csp = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(html.contains("<html lang=\"ja\">"));
    assert!(html.contains("新しいパスワードの設定"));
    assert!(html.contains("name=\"new_password\""));
    assert!(html.contains("name=\"new_password_again\""));
    assert!(html.contains("data-mismatch=\"2つのパスワードが一致しません。\""));
    assert!(html.contains("href=\"/signin\""));
    assert!(html.contains("<script src=\"/static/password_reset.js\"></script>"));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");

    let (status, headers, html) = get!(&app, "/password-reset?lang=en");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get(header::CONTENT_LANGUAGE).unwrap(), "en");
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("Set a new password"));
    assert!(html.contains("The two passwords do not match."));
    assert!(html.contains("Go to sign-in"));

    let (status, headers, js) = get!(&app, "/static/password_reset.js");
    assert_eq!(status, StatusCode::OK);
    assert!(headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.contains("/api/v1/auth/password-reset"));
    assert!(js.contains("new_password"));
}
