//! Logs (JSON by default) through `tracing`, and OpenTelemetry traces and metrics over OTLP/HTTP
//! when an endpoint is configured.

use crate::config::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log filter '{0}' is not valid (example: info,anshin=debug)")]
    Filter(String),
    #[error("cannot set up OTLP export to {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

pub struct TelemetrySettings<'a> {
    pub filter: &'a str,
    pub format: LogFormat,
    pub otlp_endpoint: Option<&'a str>,
    /// Which services this process runs, recorded on every exported span and metric.
    pub service_roles: String,
    /// How often metrics are pushed; short in tests.
    pub metrics_interval: Duration,
}

/// Holds the exporters; `shutdown` flushes what is buffered. Call it before the process exits.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(t) = self.tracer {
            if let Err(e) = t.shutdown() {
                eprintln!("warning: flushing traces failed: {e}");
            }
        }
        if let Some(m) = self.meter {
            if let Err(e) = m.shutdown() {
                eprintln!("warning: flushing metrics failed: {e}");
            }
        }
    }
}

/// Must run before the async runtime starts: the OTLP exporters use blocking HTTP clients on their
/// own threads.
pub fn init(s: TelemetrySettings<'_>) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_new(s.filter).map_err(|_| TelemetryError::Filter(s.filter.into()))?;
    let fmt_layer = match s.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (tracer, meter, otel_layer) = match s.otlp_endpoint {
        None => (None, None, None),
        Some(endpoint) => {
            let base = endpoint.trim_end_matches('/');
            let err = |reason: String| TelemetryError::Otlp {
                endpoint: endpoint.to_string(),
                reason,
            };
            let resource = Resource::builder()
                .with_service_name("anshin")
                .with_attribute(KeyValue::new("anshin.services", s.service_roles.clone()))
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build();
            let spans = SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| err(e.to_string()))?;
            let tracer_provider = SdkTracerProvider::builder()
                .with_batch_exporter(spans)
                .with_resource(resource.clone())
                .build();
            let metrics_exporter = MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/metrics"))
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| err(e.to_string()))?;
            let reader = PeriodicReader::builder(metrics_exporter)
                .with_interval(s.metrics_interval)
                .build();
            let meter_provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_meter_provider(meter_provider.clone());
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer_provider.tracer("anshin"))
                .boxed();
            (Some(tracer_provider), Some(meter_provider), Some(layer))
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(Telemetry { tracer, meter })
}
