//! What an audit event says: who did what to which target, in which tenant, with what outcome,
//! when (and by which clock), from where. Events never carry secrets or tokens: details are
//! scrubbed of keys that name them before anything is stored.

use anshin_platform::{Principal, Subject};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The log of events that belong to no tenant (operator commands run from the CLI).
pub const PLATFORM_LOG: Uuid = Uuid::nil();

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    /// A machine client with an OAuth2 access token.
    Client,
    ApiToken,
    /// A maintainer acting in an institution under a maintenance grant (10 ③).
    MaintenanceGrant,
    /// A person in a break-glass session (11 ①).
    BreakGlass,
    /// Anshin itself: background jobs, the sealer, schedulers.
    System,
    /// Someone not (yet) authenticated: failed sign-ins, enrollment before the account exists.
    Anonymous,
    /// A person as identified by the EMR data plane, reported by a machine client (17 ①).
    EmrUser,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Client => "client",
            ActorKind::ApiToken => "api_token",
            ActorKind::MaintenanceGrant => "maintenance_grant",
            ActorKind::BreakGlass => "break_glass",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
            ActorKind::EmrUser => "emr_user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub kind: ActorKind,
    /// The user, client, token or job id (`None` for anonymous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human-readable name: an email address, a client id, a token name, a job name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The tenant the actor belongs to (a provider maintainer acting in an institution keeps
    /// their provider here; the event's own tenant is the institution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    /// Set for every action under a maintenance grant, so each one is attributable to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<Uuid>,
}

impl Actor {
    pub fn system(job: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
            label: Some(job.to_string()),
            tenant_id: None,
            role: None,
            session_id: None,
            grant_id: None,
        }
    }

    /// Someone not authenticated; `label` is what they claimed (e.g. the email they typed), if
    /// anything.
    pub fn anonymous(label: Option<&str>) -> Self {
        Self {
            kind: ActorKind::Anonymous,
            id: None,
            label: label.map(|l| truncate(l, 320)),
            tenant_id: None,
            role: None,
            session_id: None,
            grant_id: None,
        }
    }

    pub fn user(id: Uuid, email: &str, tenant_id: Uuid, role: &str) -> Self {
        Self {
            kind: ActorKind::User,
            id: Some(id.to_string()),
            label: Some(email.to_string()),
            tenant_id: Some(tenant_id),
            role: Some(role.to_string()),
            session_id: None,
            grant_id: None,
        }
    }

    /// The platform operator running a CLI command on the server host.
    pub fn operator() -> Self {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            kind: ActorKind::System,
            id: None,
            label: Some(format!("anshin-cli:{user}")),
            tenant_id: None,
            role: None,
            session_id: None,
            grant_id: None,
        }
    }

    pub fn with_session(mut self, session_id: Uuid) -> Self {
        self.session_id = Some(session_id);
        self
    }

    pub fn from_principal(p: &Principal) -> Self {
        let (kind, id, label, session_id) = match &p.subject {
            Subject::User {
                id,
                session_id,
                email,
            } => (
                ActorKind::User,
                id.to_string(),
                email.clone(),
                Some(*session_id),
            ),
            Subject::ApiToken { id, name } => {
                (ActorKind::ApiToken, id.to_string(), name.clone(), None)
            }
            Subject::Client { id, client_id, .. } => {
                (ActorKind::Client, id.to_string(), client_id.clone(), None)
            }
        };
        let kind = if p.grant.is_some() {
            ActorKind::MaintenanceGrant
        } else {
            kind
        };
        Self {
            kind,
            id: Some(id),
            label: Some(label),
            tenant_id: Some(p.tenant_id),
            role: Some(p.role.as_str().to_string()),
            session_id,
            grant_id: p.grant,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Target {
    /// What kind of thing: `user`, `tenant`, `credential`, `session`, `patient_record`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl Target {
    pub fn new(kind: &str, id: impl ToString) -> Self {
        Self {
            kind: kind.to_string(),
            id: id.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// The request was valid but did not succeed (wrong password, expired challenge).
    Failure,
    /// Refused by authorization (role, scope, grant window).
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Source {
    pub fn new(ip: Option<String>, user_agent: Option<&str>, request_id: Option<&str>) -> Self {
        Self {
            ip,
            user_agent: user_agent.map(|u| truncate(u, 512)),
            request_id: request_id.map(|r| truncate(r, 128)),
        }
    }
}

/// Which clock stamped the event and how far it was from the reference when last measured
/// (17 ③). `offset_ms` is `None` when no time server was reachable ("unknown").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClockStamp {
    pub source: String,
    #[serde(default)]
    pub offset_ms: Option<i64>,
}

impl Default for ClockStamp {
    fn default() -> Self {
        Self {
            source: "system".into(),
            offset_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: Uuid,
    /// The log the event belongs to: the tenant whose data or people it concerns
    /// ([`PLATFORM_LOG`] for operator commands outside any tenant).
    pub tenant_id: Uuid,
    /// UTC, microsecond precision.
    pub time: DateTime<Utc>,
    pub clock: ClockStamp,
    pub actor: Actor,
    /// Dotted name: `auth.sign_in`, `credential.add`, `tenant.suspend`, `record.open`, …
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub source: Source,
    /// Structured, action-specific facts. Keys naming secrets are replaced by `[redacted]`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: Value,
}

impl AuditEvent {
    pub fn new(tenant_id: Uuid, actor: Actor, action: &str, outcome: Outcome) -> Self {
        Self {
            id: Uuid::now_v7(),
            tenant_id,
            time: Utc::now().trunc_subsecs(6),
            clock: crate::clock::current(),
            actor,
            action: action.to_string(),
            target: None,
            outcome,
            reason: None,
            source: anshin_platform::http::current_client()
                .map(|c| Source::new(c.ip, c.user_agent.as_deref(), c.request_id.as_deref()))
                .unwrap_or_default(),
            details: Value::Object(Map::new()),
        }
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(truncate(&reason.into(), 2000));
        self
    }

    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Adds one detail; a key that names a secret stores `[redacted]` instead of the value.
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        let v = serde_json::to_value(value).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut self.details {
            m.insert(key.to_string(), v);
        }
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The form that is stored and sealed: secrets scrubbed, strings bounded.
    pub(crate) fn sanitized(&self) -> Self {
        let mut e = self.clone();
        scrub(&mut e.details);
        if !e.details.is_object() {
            e.details = serde_json::json!({ "value": e.details });
        }
        e.action = truncate(&e.action, 128);
        e
    }
}

const SECRET_WORDS: [&str; 7] = [
    "password",
    "secret",
    "token",
    "private_key",
    "credential_key",
    "passphrase",
    "cookie",
];

fn names_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if names_secret(k) && !val.is_null() && !val.is_boolean() {
                    *val = Value::String("[redacted]".into());
                } else {
                    scrub(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(scrub),
        _ => {}
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_at_any_depth() {
        let e = AuditEvent::new(
            Uuid::nil(),
            Actor::anonymous(Some("a@example.jp")),
            "auth.sign_in",
            Outcome::Failure,
        )
        .details(serde_json::json!({
            "password": "hunter22hunter22",
            "nested": {"client_secret": "s3cr3t", "ok": 1, "items": [{"access_token": "t"}]},
            "token_revoked": true,
        }))
        .sanitized();
        let s = serde_json::to_string(&e).unwrap();
        assert!(!s.contains("hunter22") && !s.contains("s3cr3t") && !s.contains("\"t\""));
        assert_eq!(e.details["nested"]["ok"], 1);
        assert_eq!(e.details["token_revoked"], true, "flags about secrets stay");
    }

    #[test]
    fn maintenance_actions_are_attributed_to_the_grant() {
        let grant = Uuid::now_v7();
        let p = Principal {
            subject: Subject::User {
                id: Uuid::nil(),
                session_id: Uuid::nil(),
                email: "m@provider.jp".into(),
            },
            tenant_id: Uuid::nil(),
            tenant_kind: anshin_platform::TenantKind::Institution,
            role: anshin_platform::Role::ProviderMaintainer,
            grant: Some(grant),
        };
        let a = Actor::from_principal(&p);
        assert_eq!(a.kind, ActorKind::MaintenanceGrant);
        assert_eq!(a.grant_id, Some(grant));
    }

    #[test]
    fn truncation_respects_utf8() {
        assert_eq!(truncate("あいう", 4), "あ");
    }
}
