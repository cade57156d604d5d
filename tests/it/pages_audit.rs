//! The audit pages (issue 4 item 10) on both backends: the search, one event with its proof, the
//! export download and the alert inbox open for auditors and admins (403 with the friendly page
//! for the other roles, /signin without a session); search filters work, with times typed in
//! Japan time; a sealed event shows its proof as re-verified (✓); the export link of the page
//! downloads a file that verifies offline; another provider's tenant or event is "not found".

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::http::{header, StatusCode};
use actix_web::test;
use anshin_audit::{Actor, ActorKind, AuditEvent, Outcome, Target};
use anshin_platform::Role;
use anshin_tests::{both_backends, enroll_passkey, World};
use chrono::{DateTime, Utc};

/// The audit pages, with the roles that open them (the rest get 403).
const READERS: [&str; 3] = ["provider_admin", "institution_admin", "auditor"];

macro_rules! get_page {
    ($app:expr, $path:expr, $cookie:expr) => {{
        let mut r = test::TestRequest::get().uri($path);
        if let Some(c) = $cookie {
            r = r.insert_header(("cookie", format!("anshin_session={c}")));
        }
        let res = test::call_service($app, r.to_request()).await;
        let status = res.status();
        let header_of = |h: header::HeaderName| {
            res.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let location = header_of(header::LOCATION);
        let content_type = header_of(header::CONTENT_TYPE);
        let disposition = header_of(header::CONTENT_DISPOSITION);
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        (status, location, body, content_type, disposition)
    }};
}

/// The `value` of the input named `name` inside the element that starts at `anchor`.
fn input_value(body: &str, anchor: &str, name: &str) -> String {
    let form = &body[body
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} in page"))..];
    let form = &form[..form.find("</form>").unwrap()];
    let at = form
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("{name} in {anchor}"));
    let rest = &form[at..];
    let v = &rest[rest.find("value=\"").unwrap() + 7..];
    v[..v.find('"').unwrap()].to_string()
}

/// The `href` right after `marker` (e.g. `rel="next" href="`).
fn href_after(body: &str, marker: &str) -> Option<String> {
    let at = body.find(marker)? + marker.len();
    let rest = &body[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// `s` as tera escapes it into a page.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2F;")
}

/// The results row of `e` on a search page.
fn row<'a>(body: &'a str, e: &AuditEvent) -> &'a str {
    let at = body
        .find(&format!("data-event=\"{}\"", e.id))
        .unwrap_or_else(|| panic!("{} is listed", e.action));
    let rest = &body[at..];
    &rest[..rest.find("</tr>").unwrap()]
}

fn event_at(
    tenant: uuid::Uuid,
    actor: Actor,
    action: &str,
    outcome: Outcome,
    at: &str,
) -> AuditEvent {
    let mut e = AuditEvent::new(tenant, actor, action, outcome);
    e.time = at.parse::<DateTime<Utc>>().unwrap();
    e
}

both_backends! {
    async fn audit_pages_search_prove_export_and_alert(db) {
        let w = World::build(&db).await;
        // The server's state: its sealer evaluates the alert rules as it seals.
        let state = db.state().await;
        let alerts = state.alerts.clone();
        let app = test::init_service(anshin_server::app::app(state.clone())).await;

        let people = [
            ("alpha-hospital", "admin@hikari.example.jp", "institution_admin"),
            ("alpha-hospital", "staff@hikari.example.jp", "institution_staff"),
            ("alpha-hospital", "audit@hikari.example.jp", "auditor"),
            ("alpha-cloud", "admin@alpha-cloud.example.jp", "provider_admin"),
            ("alpha-cloud", "ops@alpha-cloud.example.jp", "provider_operator"),
            ("alpha-cloud", "maint@alpha-cloud.example.jp", "provider_maintainer"),
            ("alpha-cloud", "audit@alpha-cloud.example.jp", "auditor"),
        ];
        let mut cookies = Vec::new();
        for (slug, email, role) in people {
            let p = enroll_passkey(&app, &w, slug, email, role).await;
            cookies.push((slug, role, p.session.0));
        }
        let hospital_admin = Some(cookies[0].2.clone());
        let hospital_auditor = Some(cookies[2].2.clone());
        let provider_admin = Some(cookies[3].2.clone());

        // The hospital's trail: a nurse opens a record, someone fails to sign in as the doctor,
        // the doctor signs in and opens another record (times in UTC; JST is +9).
        let h = w.h1.id;
        let nurse = Actor::user(uuid::Uuid::now_v7(), "nurse@hikari.example.jp", h, "institution_staff");
        let doctor = Actor::user(uuid::Uuid::now_v7(), "doctor@hikari.example.jp", h, "institution_staff");
        let e1 = event_at(h, nurse.clone(), "record.open", Outcome::Success, "2026-04-01T01:00:00Z")
            .target(Target::new("patient_record", "P-0001"));
        let e2 = event_at(h, Actor::anonymous(Some("doctor@hikari.example.jp")), "auth.sign_in", Outcome::Failure, "2026-04-01T23:00:00Z")
            .reason("wrong password");
        let e3 = event_at(h, doctor.clone(), "record.open", Outcome::Success, "2026-04-02T01:00:00Z")
            .target(Target::new("patient_record", "P-0002"))
            .detail("duration_secs", 95);
        let e4 = event_at(h, doctor.clone(), "auth.sign_in", Outcome::Success, "2026-04-01T23:05:00Z");
        // Another provider's clinic, and an institution of the same provider.
        let foreign = event_at(w.c2.id, Actor::system("test"), "record.open", Outcome::Success, "2026-04-01T01:00:00Z");
        let clinic = event_at(w.c1.id, Actor::system("test"), "record.open", Outcome::Success, "2026-04-01T01:00:00Z");
        for e in [&e1, &e2, &e3, &e4, &foreign, &clinic] {
            state.audit.record_now(e).await.unwrap();
        }

        // Before sealing, the search says so.
        let (status, _, body, _, _) = get_page!(&app, "/audit", hospital_admin.as_ref());
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(row(&body, &e1).contains("封印待ち"), "pending events are marked");
        let (_, _, body, _, _) = get_page!(&app, &format!("/audit/events/{}", e1.id), hospital_admin.as_ref());
        assert!(body.contains("id=\"proof-pending\""), "no proof before sealing");
        state.audit.sealer().seal_all().await.unwrap();

        // Access by role: the readers open every page, the others get the friendly 403.
        let pages = [
            "/audit".to_string(),
            format!("/audit/events/{}", e1.id),
            "/audit/alerts".to_string(),
            "/audit/export".to_string(),
        ];
        for (slug, role, cookie) in &cookies {
            for path in &pages {
                let (status, _, body, content_type, _) = get_page!(&app, path, Some(cookie));
                if READERS.contains(role) {
                    assert_eq!(status, StatusCode::OK, "{role} of {slug} opens {path}: {body}");
                    if !path.ends_with("/export") {
                        assert!(content_type.unwrap().starts_with("text/html"));
                        assert!(!body.contains("<script>"), "{path}: no inline script");
                    }
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{role} of {slug} is refused {path}");
                    assert!(body.contains("この画面を使う権限がありません"), "{path}: friendly 403 page for {role}");
                }
            }
            // The menu links the audit pages exactly for the readers.
            let (_, _, portal, _, _) = get_page!(&app, "/portal", Some(cookie));
            assert_eq!(portal.contains("href=\"/audit\""), READERS.contains(role), "{role}: menu link to /audit");
            assert_eq!(portal.contains("href=\"/audit/alerts\""), READERS.contains(role), "{role}: menu link to /audit/alerts");
        }
        // Without a session (or with a dead one): to the sign-in page.
        for path in &pages {
            for cookie in [None, Some("x".repeat(43))] {
                let (status, location, _, _, _) = get_page!(&app, path, cookie.as_ref());
                assert_eq!(status, StatusCode::SEE_OTHER, "{path} without a session");
                assert_eq!(location.as_deref(), Some("/signin"), "{path}");
            }
        }

        // The search lists the hospital's events, sealed, newest first, each linking its detail.
        let (_, _, body, _, _) = get_page!(&app, "/audit", hospital_admin.as_ref());
        for e in [&e1, &e2, &e3, &e4] {
            assert!(body.contains(&format!("href=\"/audit/events/{}\"", e.id)), "{} listed", e.action);
        }
        for e in [&e1, &e2, &e3, &e4] {
            assert!(row(&body, e).contains("class=\"seq\">#"), "{} is sealed now", e.action);
        }
        assert!(body.contains("2026-04-01 10:00:00 JST"), "times in Japan time");
        assert!(!body.contains(&foreign.id.to_string()) && !body.contains(&clinic.id.to_string()), "only the hospital's trail");
        assert!(body.find(&e3.id.to_string()).unwrap() < body.find(&e1.id.to_string()).unwrap(), "newest first");
        assert!(body.contains(&html(&state.audit.public_key().public_key)), "the public key is shown");
        assert!(body.contains("anshin audit verify") && body.contains(&html("docs/audit-verification.md")));

        // Filters: actor, action (exact and prefix), target, outcome, time range in JST.
        let only = |body: &str, want: &[&AuditEvent]| {
            for e in [&e1, &e2, &e3, &e4] {
                assert_eq!(body.contains(&format!("data-event=\"{}\"", e.id)), want.iter().any(|w| w.id == e.id), "{} {}", e.action, e.time);
            }
        };
        let (_, _, body, _, _) = get_page!(&app, "/audit?actor=doctor%40hikari.example.jp", hospital_admin.as_ref());
        only(&body, &[&e2, &e3, &e4]);
        assert!(body.contains("value=\"doctor@hikari.example.jp\""), "the form keeps the actor");
        assert!(body.contains("href=\"&#x2F;audit?actor=doctor%40hikari.example.jp&amp;lang=en\""), "the language switch keeps the search");
        let (_, _, body, _, _) = get_page!(&app, "/audit?action=record.*", hospital_admin.as_ref());
        only(&body, &[&e1, &e3]);
        let (_, _, body, _, _) = get_page!(&app, "/audit?action=auth.sign_in&outcome=failure", hospital_admin.as_ref());
        only(&body, &[&e2]);
        let (_, _, body, _, _) = get_page!(&app, "/audit?target=P-0001", hospital_admin.as_ref());
        only(&body, &[&e1]);
        // 09:30–10:30 JST on 1 April is 00:30–01:30 UTC: only the nurse's record access.
        let (_, _, body, _, _) = get_page!(&app, "/audit?from=2026-04-01T09%3A30&to=2026-04-01T10%3A30", hospital_admin.as_ref());
        only(&body, &[&e1]);
        assert!(body.contains("value=\"2026-04-01T09:30\""), "the form keeps the range");
        // A whole day in Japan: 2 April JST holds the failure, the sign-in and the second access.
        let (_, _, body, _, _) = get_page!(&app, "/audit?from=2026-04-02&to=2026-04-02", hospital_admin.as_ref());
        only(&body, &[&e2, &e3, &e4]);
        // Mistakes are explained on the page, not as errors.
        for (q, says) in [
            ("from=yesterday", "開始日時を"),
            ("action=AUTH", "操作には英小文字"),
            ("from=2026-04-02T00%3A00&to=2026-04-01T00%3A00", "開始日時は終了日時より前"),
            ("outcome=maybe", "結果は"),
        ] {
            let (status, _, body, _, _) = get_page!(&app, &format!("/audit?{q}"), hospital_admin.as_ref());
            assert_eq!(status, StatusCode::OK, "{q}");
            assert!(body.contains(says), "{q}: {says}");
            assert!(!body.contains("id=\"audit-events\""), "{q}: no results");
        }
        let (_, _, body, _, _) = get_page!(&app, "/audit?lang=en", hospital_admin.as_ref());
        assert!(body.contains("Search the audit trail") && body.contains("Time (JST)"), "English page");

        // Scope: the provider picks among its institutions; other tenants are "not found".
        let (_, _, body, _, _) = get_page!(&app, "/audit", provider_admin.as_ref());
        assert!(body.contains(&format!("<option value=\"{h}\"")) && body.contains("ひかり病院"), "provider admins pick an institution");
        assert!(!body.contains(&format!("<option value=\"{}\"", w.c2.id)), "not another provider's");
        let (status, _, body, _, _) = get_page!(&app, &format!("/audit?tenant={h}"), provider_admin.as_ref());
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(&format!("data-event=\"{}\"", e1.id)), "the provider reads its institution's trail");
        for (cookie, tenant) in [(&provider_admin, w.c2.id), (&hospital_admin, w.c1.id), (&hospital_admin, w.p1.id)] {
            let (status, _, _, _, _) = get_page!(&app, &format!("/audit?tenant={tenant}"), cookie.as_ref());
            assert_eq!(status, StatusCode::NOT_FOUND, "a tenant outside the scope");
        }

        // Paging: 51 events in the clinic, 50 a page.
        for i in 0..51 {
            state.audit.record_now(&AuditEvent::new(w.c1.id, Actor::system("test"), "test.page", Outcome::Success).detail("i", i)).await.unwrap();
        }
        let (_, _, body, _, _) = get_page!(&app, &format!("/audit?tenant={}&action=test.page", w.c1.id), provider_admin.as_ref());
        assert_eq!(body.matches("data-action=\"test.page\"").count(), 50);
        assert!(!body.contains("rel=\"prev\""));
        let next = href_after(&body, "rel=\"next\" href=\"").expect("a next page");
        assert!(next.contains("offset=50") && next.contains(&format!("tenant={}", w.c1.id)), "{next}");
        let (_, _, body, _, _) = get_page!(&app, &next, provider_admin.as_ref());
        assert_eq!(body.matches("data-action=\"test.page\"").count(), 1);
        assert!(body.contains("rel=\"prev\"") && !body.contains("rel=\"next\""));

        // The detail of a sealed event: every field, the entry bytes, the proof, verified.
        for cookie in [&hospital_auditor, &provider_admin] {
            let (status, _, body, _, _) = get_page!(&app, &format!("/audit/events/{}", e3.id), cookie.as_ref());
            assert_eq!(status, StatusCode::OK);
            assert!(body.contains("id=\"proof-verdict\"") && body.contains("class=\"verdict ok\"") && body.contains("✓"), "{body}");
            assert!(!body.contains("✗"));
            for s in ["doctor@hikari.example.jp", "P-0002", "patient_record", "2026-04-02 10:00:00 JST", "2026-04-02T01:00:00.000000Z", "duration_secs", "system", "id=\"entry-bytes\"", "id=\"inclusion-proof\"", "封印されました", "最新のチェックポイント"] {
                assert!(body.contains(s), "the detail shows {s}");
            }
            // The entry bytes are the exact line that was hashed (HTML-escaped on the page).
            assert!(body.contains(&format!("&quot;id&quot;:&quot;{}&quot;", e3.id)), "entry bytes with the event");
        }
        let (_, _, body, _, _) = get_page!(&app, &format!("/audit/events/{}?lang=en", e2.id), hospital_admin.as_ref());
        assert!(body.contains("Verified by the server just now") && body.contains("wrong password") && body.contains("Not signed in"));
        // Another tenant's event, an unknown id or no id at all: not found.
        for path in [format!("/audit/events/{}", foreign.id), format!("/audit/events/{}", uuid::Uuid::now_v7()), "/audit/events/not-a-uuid".into()] {
            let (status, _, body, _, _) = get_page!(&app, &path, hospital_admin.as_ref());
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.contains("ページが見つかりません"));
        }
        let (status, _, _, _, _) = get_page!(&app, &format!("/audit/events/{}", clinic.id), hospital_admin.as_ref());
        assert_eq!(status, StatusCode::NOT_FOUND, "a sibling institution's event");
        let (status, _, _, _, _) = get_page!(&app, &format!("/audit/events/{}", foreign.id), provider_admin.as_ref());
        assert_eq!(status, StatusCode::NOT_FOUND, "another provider's institution's event");

        // Export from the page's form: the range of the search, as a download that verifies.
        let (_, _, body, _, _) = get_page!(&app, "/audit?from=2026-04-01T09%3A30&to=2026-04-01T10%3A30", hospital_auditor.as_ref());
        assert!(body.contains("action=\"/audit/export\""));
        let (tenant, from, to) = (input_value(&body, "id=\"audit-export\"", "tenant"), input_value(&body, "id=\"audit-export\"", "from"), input_value(&body, "id=\"audit-export\"", "to"));
        assert_eq!((tenant.as_str(), from.as_str(), to.as_str()), (h.to_string().as_str(), "2026-04-01T09:30", "2026-04-01T10:30"));
        let link = format!("/audit/export?tenant={tenant}&from={}&to={}", from.replace(':', "%3A"), to.replace(':', "%3A"));
        let (status, _, file, content_type, disposition) = get_page!(&app, &link, hospital_auditor.as_ref());
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(content_type.as_deref(), Some("application/x-ndjson"));
        let disposition = disposition.unwrap();
        assert!(disposition.starts_with("attachment; filename=\"anshin-audit-") && disposition.ends_with(".jsonl\""), "{disposition}");
        let header_line: serde_json::Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
        assert_eq!(header_line["format"], "anshin-audit-export/1");
        assert_eq!(header_line["from"], "2026-04-01T00:30:00Z");
        assert!(file.contains(&e1.id.to_string()) && !file.contains(&e3.id.to_string()), "just the range");
        let key = state.audit.public_key();
        anshin_audit::verify::verify(file.as_bytes(), Some(std::slice::from_ref(&key))).expect("the downloaded export verifies");
        // The export is on the record.
        let (_, _, body, _, _) = get_page!(&app, "/audit?action=audit.export", hospital_admin.as_ref());
        assert!(body.contains("data-action=\"audit.export\""), "the export is recorded");
        // Nothing in the range: the page says so.
        let (status, _, body, _, disposition) = get_page!(&app, &format!("/audit/export?tenant={h}&from=2020-01-01T00%3A00&to=2020-01-02T00%3A00"), hospital_auditor.as_ref());
        assert_eq!(status, StatusCode::OK);
        assert!(disposition.is_none() && body.contains("id=\"export-error\"") && body.contains("封印済みの記録がありません"));
        let (status, _, _, _, _) = get_page!(&app, &format!("/audit/export?tenant={}", w.c2.id), hospital_auditor.as_ref());
        assert_eq!(status, StatusCode::NOT_FOUND, "no export of another tenant");

        // An event after the last seal is pending on its detail page.
        let late = AuditEvent::new(h, nurse.clone(), "record.open", Outcome::Success);
        state.audit.record_now(&late).await.unwrap();
        let (status, _, body, _, _) = get_page!(&app, &format!("/audit/events/{}", late.id), hospital_admin.as_ref());
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("id=\"proof-pending\"") && !body.contains("id=\"proof-verdict\""));

        // Alerts: a break-glass use raises a critical alert when sealed.
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts", hospital_admin.as_ref());
        assert!(body.contains("id=\"alerts-empty\""), "no alerts yet");
        let mut bg = AuditEvent::new(h, Actor { kind: ActorKind::BreakGlass, id: Some("bg-1".into()), label: Some("非常時用".into()), ..Actor::system("x") }, "break_glass.use", Outcome::Success)
            .reason("電子カルテ障害のため緊急に参照");
        bg.time = Utc::now();
        state.audit.record_now(&bg).await.unwrap();
        state.audit.sealer().seal_all().await.unwrap();
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts", hospital_admin.as_ref());
        assert!(body.contains("非常時用アカウント（ブレークグラス）が使用されました"), "{body}");
        assert!(body.contains("class=\"badge sev-critical\"") && body.contains("緊急"));
        assert!(body.contains(&format!("href=\"/audit/events/{}\"", bg.id)), "the alert links its event");
        assert!(body.contains("電子カルテ障害のため緊急に参照"), "with the reason");
        assert!(body.contains("data-admin=\"alert-transition\"") && body.contains("value=\"acknowledge\""), "admins act on it");
        assert!(body.contains("src=\"/static/admin.js\""));
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts", hospital_auditor.as_ref());
        assert!(body.contains("非常時用アカウント") && !body.contains("data-admin=\"alert-transition\""), "auditors read only");
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts?lang=en", provider_admin.as_ref());
        assert!(body.contains("Break-glass emergency access was used") && body.contains("ひかり病院"), "providers see their institutions' alerts");
        // The event linked from the alert opens for the provider too.
        let (status, _, _, _, _) = get_page!(&app, &format!("/audit/events/{}", bg.id), provider_admin.as_ref());
        assert_eq!(status, StatusCode::OK);

        // Acknowledged, then resolved: the tabs follow.
        let admin = db.tokens().authenticate(w.token("alpha-hospital", Role::InstitutionAdmin)).await.unwrap().unwrap();
        let listed = alerts.list(&admin, &anshin_audit::alerts::AlertQuery::default()).await.unwrap();
        let alert = listed.items.iter().find(|a| a.rule_id == "break_glass.use").unwrap();
        alerts.acknowledge(&admin, alert.id, Some("確認中です".into()), &anshin_audit::Source::default()).await.unwrap();
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts", hospital_admin.as_ref());
        assert!(!body.contains(&format!("data-alert=\"{}\"", alert.id)), "no longer open");
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts?status=acknowledged", hospital_admin.as_ref());
        assert!(body.contains(&format!("data-alert=\"{}\"", alert.id)) && body.contains("確認中です") && body.contains("対応中"));
        assert!(!body.contains("value=\"acknowledge\"") && body.contains("value=\"resolve\""), "only resolving is left");
        alerts.resolve(&admin, alert.id, None, &anshin_audit::Source::default()).await.unwrap();
        let (_, _, body, _, _) = get_page!(&app, "/audit/alerts?status=resolved", hospital_admin.as_ref());
        assert!(body.contains(&format!("data-alert=\"{}\"", alert.id)) && !body.contains("data-admin=\"alert-transition\""));
        assert!(body.contains("aria-current=\"page\">解決済み"), "the resolved tab is current");
    }
}
