//! Telemetry from a running `anshin serve`: JSON logs with a span per request, and OTLP/HTTP
//! export of traces and metrics, received and decoded by a real OTLP listener in this test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed assertion

use actix_web::{web, App, HttpResponse, HttpServer};
use anshin_platform::Role;
use anshin_tests::{anshin_bin, free_port, http_get, wait_for_port, Backend, TestDb, World};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Received {
    /// span name → attributes
    spans: Vec<(String, HashMap<String, String>)>,
    metrics: Vec<String>,
    resource: HashMap<String, String>,
}

fn attr_string(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

async fn traces(body: web::Bytes, state: web::Data<Arc<Mutex<Received>>>) -> HttpResponse {
    let req = ExportTraceServiceRequest::decode(body.as_ref()).expect("valid OTLP trace protobuf");
    let mut r = state.lock().unwrap();
    for rs in req.resource_spans {
        if let Some(res) = rs.resource {
            for a in res.attributes {
                r.resource.insert(a.key, attr_string(&a.value));
            }
        }
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), attr_string(&a.value)))
                    .collect();
                r.spans.push((s.name, attrs));
            }
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(Vec::<u8>::new())
}

async fn metrics(body: web::Bytes, state: web::Data<Arc<Mutex<Received>>>) -> HttpResponse {
    let req =
        ExportMetricsServiceRequest::decode(body.as_ref()).expect("valid OTLP metrics protobuf");
    let mut r = state.lock().unwrap();
    for rm in req.resource_metrics {
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                r.metrics.push(m.name);
            }
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(Vec::<u8>::new())
}

#[actix_web::test]
async fn requests_are_logged_as_json_and_exported_over_otlp() {
    let db = TestDb::new(Backend::Sqlite).await;
    let w = World::build(&db).await;
    let token = w.token("alpha-cloud", Role::ProviderAdmin).to_string();

    let received = Arc::new(Mutex::new(Received::default()));
    let otlp_port = free_port();
    let state = received.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .route("/v1/traces", web::post().to(traces))
            .route("/v1/metrics", web::post().to(metrics))
    })
    .workers(1)
    .bind(("127.0.0.1", otlp_port))
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let port = free_port();
    let mut c = Command::new(anshin_bin());
    c.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env(
            "ANSHIN_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{otlp_port}"),
        )
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &db.env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    let pid = child.id();
    let t2 = token.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        assert!(wait_for_port(port, 30));
        vec![
            http_get(port, "/api/v1/tenants", Some(&t2)).0,
            http_get(
                port,
                &format!("/api/v1/tenants/{}", uuid::Uuid::nil()),
                Some(&t2),
            )
            .0,
            http_get(port, "/healthz", None).0,
        ]
    })
    .await
    .unwrap();
    assert_eq!(statuses, vec![200, 404, 200]);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // SIGTERM: graceful shutdown flushes what is buffered.
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "anshin exited with {:?}",
        output.status
    );
    handle.stop(true).await;

    let r = received.lock().unwrap();
    let list = r
        .spans
        .iter()
        .find(|(name, _)| name == "GET /api/v1/tenants")
        .unwrap_or_else(|| {
            panic!(
                "no span for the tenant list; got {:?}",
                r.spans.iter().map(|s| &s.0).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        list.1.get("tenant").map(String::as_str),
        Some(w.p1.id.to_string().as_str())
    );
    assert!(list.1.get("principal").unwrap().starts_with("token:"));
    assert_eq!(
        list.1.get("role").map(String::as_str),
        Some("provider_admin")
    );
    assert_eq!(
        list.1.get("http.response.status_code").map(String::as_str),
        Some("200")
    );
    assert!(list.1.contains_key("latency_ms"));
    let missing = r
        .spans
        .iter()
        .find(|(name, _)| name == "GET /api/v1/tenants/{id}")
        .expect("span for the 404");
    assert_eq!(
        missing
            .1
            .get("http.response.status_code")
            .map(String::as_str),
        Some("404")
    );
    assert_eq!(
        r.resource.get("service.name").map(String::as_str),
        Some("anshin")
    );
    assert!(
        r.metrics
            .iter()
            .any(|m| m == "http.server.request.duration"),
        "metrics: {:?}",
        r.metrics
    );
    assert!(r.metrics.iter().any(|m| m == "http.server.requests"));

    // JSON logs on stderr: one completion line per request with its span's fields; no secrets.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(&token), "the API token leaked into logs");
    let completed: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "request completed")
        .collect();
    assert_eq!(completed.len(), 3, "{stderr}");
    let first = completed
        .iter()
        .find(|v| v["span"]["http.route"] == "/api/v1/tenants")
        .unwrap();
    assert_eq!(first["span"]["tenant"], w.p1.id.to_string());
    assert!(first["span"]["request_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(first["fields"]["status"], 200);
}
