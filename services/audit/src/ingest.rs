//! Access events from the EMR data plane (17 ①): who opened which patient record, when and for
//! how long. Machine clients send batches; every event is validated before any is stored, and a
//! client's own event id makes retries idempotent.

use crate::event::{Actor, ActorKind, AuditEvent, ClockStamp, Outcome, Source, Target};
use crate::service::AuditService;
use crate::AuditError;
use anshin_platform::db::begin_tenant_tx;
use anshin_platform::{Principal, Subject, TenantScope};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

const MAX_ID: usize = 200;
const MAX_DETAILS_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestBatch {
    pub events: Vec<IngestEvent>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestEvent {
    /// The client's own id for this event (1–200 characters): sending it again is harmless.
    pub client_event_id: String,
    /// The institution the record belongs to; default the client's own tenant.
    pub tenant_id: Option<Uuid>,
    /// When it happened (RFC 3339, at most 5 minutes in the future).
    pub time: DateTime<Utc>,
    /// Dotted lower-case name, e.g. `record.open`, `record.update`, `record.print`.
    pub action: String,
    pub actor: IngestActor,
    pub target: IngestTarget,
    /// Default `success`.
    pub outcome: Option<Outcome>,
    /// How long the record was open, in milliseconds.
    pub duration_ms: Option<u64>,
    pub reason: Option<String>,
    /// The terminal or address the person used.
    pub source_ip: Option<String>,
    #[schema(value_type = Object)]
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestActor {
    /// The EMR's id for the person.
    pub id: String,
    /// Name or staff number shown to auditors.
    pub label: Option<String>,
    /// The person's job role in the EMR (医師, 看護師, 事務…).
    pub role: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestTarget {
    /// e.g. `patient_record`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestResult {
    /// Events stored now.
    pub accepted: usize,
    /// Events already stored by an earlier call (same client event id).
    pub duplicates: usize,
}

fn valid_action(a: &str) -> bool {
    let parts: Vec<&str> = a.split('.').collect();
    a.len() <= 128
        && parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

fn bounded(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.trim().is_empty() {
        Err(format!("{field} must not be empty"))
    } else if v.chars().count() > max {
        Err(format!("{field} is longer than {max} characters"))
    } else {
        Ok(())
    }
}

impl AuditService {
    /// Stores a batch from a machine client. Either every event is valid and the new ones are
    /// stored together, or nothing is stored and the error names the first bad event.
    pub async fn ingest(
        &self,
        p: &Principal,
        source: Source,
        batch: IngestBatch,
    ) -> Result<IngestResult, AuditError> {
        let (client_id, client_label) = match &p.subject {
            Subject::Client { id, client_id, .. } => (id.to_string(), client_id.clone()),
            Subject::ApiToken { id, name } => (id.to_string(), name.clone()),
            Subject::User { .. } => {
                return Err(AuditError::Forbidden(
                    "audit events are sent by machine clients (OAuth2 client credentials or an API token), not by people".into(),
                ))
            }
        };
        if !p.may_write() {
            return Err(AuditError::Forbidden(
                "sending audit events needs the write scope".into(),
            ));
        }
        if batch.events.is_empty() {
            return Err(AuditError::Invalid("events must not be empty".into()));
        }
        if batch.events.len() > self.ingest_max_events() {
            return Err(AuditError::Invalid(format!(
                "at most {} events per request",
                self.ingest_max_events()
            )));
        }
        let now = Utc::now();
        let mut seen = std::collections::HashSet::new();
        let mut rows = Vec::with_capacity(batch.events.len());
        let mut tenants = std::collections::BTreeSet::new();
        for (i, e) in batch.events.into_iter().enumerate() {
            let bad = |m: String| AuditError::Invalid(format!("events[{i}]: {m}"));
            bounded("client_event_id", &e.client_event_id, MAX_ID).map_err(bad)?;
            if !seen.insert(e.client_event_id.clone()) {
                return Err(bad("client_event_id repeats within the batch".into()));
            }
            if !valid_action(&e.action) {
                return Err(bad(
                    "action must be a dotted lower-case name such as record.open".into(),
                ));
            }
            bounded("actor.id", &e.actor.id, MAX_ID).map_err(bad)?;
            bounded("target.type", &e.target.kind, 64).map_err(bad)?;
            bounded("target.id", &e.target.id, 256).map_err(bad)?;
            if let Some(l) = &e.actor.label {
                bounded("actor.label", l, 320).map_err(bad)?;
            }
            if e.time > now + Duration::minutes(5) {
                return Err(bad("time is in the future".into()));
            }
            if let Some(ip) = &e.source_ip {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| bad("source_ip is not an IP address".into()))?;
            }
            let details = match e.details {
                None => serde_json::json!({}),
                Some(v @ serde_json::Value::Object(_)) => v,
                Some(_) => return Err(bad("details must be an object".into())),
            };
            if serde_json::to_vec(&details)
                .map(|v| v.len())
                .unwrap_or(usize::MAX)
                > MAX_DETAILS_BYTES
            {
                return Err(bad(format!(
                    "details are larger than {MAX_DETAILS_BYTES} bytes"
                )));
            }
            let tenant = e.tenant_id.unwrap_or(p.tenant_id);
            tenants.insert(tenant);
            let mut event = AuditEvent::new(
                tenant,
                Actor {
                    kind: ActorKind::EmrUser,
                    id: Some(e.actor.id),
                    label: e.actor.label,
                    tenant_id: Some(tenant),
                    role: e.actor.role,
                    session_id: None,
                    grant_id: None,
                },
                &e.action,
                e.outcome.unwrap_or(Outcome::Success),
            )
            .target(Target {
                kind: e.target.kind,
                id: e.target.id,
            })
            .source(Source {
                ip: e.source_ip,
                user_agent: None,
                request_id: source.request_id.clone(),
            })
            .details(details);
            // The client's clock stamped the event; Anshin's receipt time is kept beside it.
            event.time = e.time.trunc_subsecs(6);
            event.clock = ClockStamp {
                source: format!("client:{client_label}"),
                offset_ms: None,
            };
            event = event
                .detail("reported_by", format!("client:{client_id}"))
                .detail("received_at", now.trunc_subsecs(6));
            if let Some(d) = e.duration_ms {
                event = event.detail("duration_ms", d);
            }
            if let Some(r) = e.reason {
                event = event.reason(r);
            }
            rows.push((event, format!("{client_id}:{}", e.client_event_id)));
        }
        for t in &tenants {
            self.ingest_scope(p, *t).await?;
        }
        let total = rows.len();
        let tx = begin_tenant_tx(self.db(), p.tenant_id).await?;
        let accepted = crate::store::record_ingested(&tx, &rows).await?;
        tx.commit().await?;
        if accepted > 0 {
            self.wake_sealer();
        }
        Ok(IngestResult {
            accepted,
            duplicates: total - accepted,
        })
    }

    /// A client may report for its own tenant, or (a provider's client) for its institutions.
    async fn ingest_scope(&self, p: &Principal, tenant: Uuid) -> Result<(), AuditError> {
        if tenant == p.tenant_id {
            return Ok(());
        }
        let TenantScope::Provider(provider) = p.scope() else {
            return Err(AuditError::NotFound(format!("no such tenant {tenant}")));
        };
        let tx = begin_tenant_tx(self.db(), p.tenant_id).await?;
        let q = Query::select()
            .expr(Expr::val(1))
            .from(Alias::new("audit_tenants"))
            .and_where(Expr::col(Alias::new("tenant_id")).eq(tenant))
            .and_where(Expr::col(Alias::new("provider_id")).eq(provider))
            .to_owned();
        let found = tx.query_one(tx.get_database_backend().build(&q)).await?;
        tx.commit().await?;
        found
            .map(|_| ())
            .ok_or_else(|| AuditError::NotFound(format!("no such tenant {tenant}")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn actions_are_dotted_lower_case() {
        assert!(super::valid_action("record.open"));
        assert!(super::valid_action("emr.record.print_2"));
        assert!(!super::valid_action("record"));
        assert!(!super::valid_action("Record.Open"));
        assert!(!super::valid_action("record..open"));
        assert!(!super::valid_action("record.open%"));
    }
}
