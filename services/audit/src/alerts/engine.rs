//! The rule engine. [`AlertEngine`] is a [`SealHook`]: it sees each batch inside the sealing
//! transaction, so an alert (and the durable jobs that deliver it) commits exactly when the
//! events that raised it are sealed, and a failure rolls both back to be retried.
//!
//! Evaluation is one loop for every rule kind: an event that matches an enabled rule either adds
//! to the open alert of its rule and group (deduplication: the group's previous event is less
//! than `window_secs` ago) or raises a new alert. Threshold rules first count the matching events
//! of the group within the window (`audit_alert_hits`, pruned as the window moves).

use super::delivery::{DELIVERY_JOB, DELIVERY_MAX_ATTEMPTS};
use super::rules::{Rule, RuleKind, RuleOverride, RuleSet, Severity};
use super::sql::{exec, query, query_one};
use crate::event::AuditEvent;
use crate::sealer::{SealHook, SealedEvent};
use crate::AuditError;
use anshin_platform::jobs::{JobQueue, NewJob};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// How many matching events of a threshold rule's group are in its window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowHits {
    pub count: u64,
    pub first_event_id: Uuid,
    pub first_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpenAlert {
    pub id: Uuid,
    pub last_event_at: DateTime<Utc>,
}

/// An alert the engine raised.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub rule_id: String,
    pub severity: Severity,
    pub title_ja: String,
    pub title_en: String,
    pub group_key: String,
    pub first_event_id: Uuid,
    pub first_event_at: DateTime<Utc>,
    pub last_event_id: Uuid,
    pub last_event_at: DateTime<Utc>,
    pub count: u64,
    /// What the UI and the notifications show of the event that raised it.
    pub context: Value,
    pub created_at: DateTime<Utc>,
}

/// Where the engine keeps its state: the sealing transaction, or memory in unit tests.
#[async_trait::async_trait]
pub(crate) trait AlertState: Send {
    /// Records a matching event of a threshold rule; returns the group's hits in
    /// `(at - window, at]`.
    async fn hit(
        &mut self,
        tenant: Uuid,
        rule: &Rule,
        group: &str,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<WindowHits, AuditError>;
    /// Forgets hits of a rule at or before `before`.
    async fn prune(
        &mut self,
        tenant: Uuid,
        rule_id: &str,
        before: DateTime<Utc>,
    ) -> Result<(), AuditError>;
    /// The most recent open alert of a rule and group.
    async fn open_alert(
        &mut self,
        tenant: Uuid,
        rule_id: &str,
        group: &str,
    ) -> Result<Option<OpenAlert>, AuditError>;
    /// Adds one event to an open alert.
    async fn add_to(
        &mut self,
        alert_id: Uuid,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), AuditError>;
    async fn create(&mut self, alert: &NewAlert) -> Result<(), AuditError>;
}

fn context_of(e: &AuditEvent) -> Value {
    let mut c = json!({
        "action": e.action,
        "outcome": e.outcome.as_str(),
        "actor": {
            "kind": e.actor.kind.as_str(),
            "id": e.actor.id,
            "label": e.actor.label,
            "tenant_id": e.actor.tenant_id,
            "grant_id": e.actor.grant_id,
        },
        "source_ip": e.source.ip,
        "time": e.time,
    });
    if let Some(t) = &e.target {
        c["target"] = json!({"type": t.kind, "id": t.id});
    }
    if let Some(r) = &e.reason {
        c["reason"] = Value::String(r.chars().take(500).collect());
    }
    c
}

/// Applies the enabled `rules` to a sealed batch of one tenant, in log order. Returns the alerts
/// raised (not those that only grew).
pub(crate) async fn evaluate<S: AlertState + ?Sized>(
    st: &mut S,
    tenant: Uuid,
    rules: &[Rule],
    events: &[SealedEvent],
) -> Result<Vec<NewAlert>, AuditError> {
    let mut created = Vec::new();
    // Latest event time per threshold rule, to prune its hits once per batch.
    let mut latest: HashMap<&str, (DateTime<Utc>, Duration)> = HashMap::new();
    for se in events {
        let e = &se.event;
        for rule in rules.iter().filter(|r| r.enabled) {
            if !rule.matches(e) {
                continue;
            }
            let group = rule.group_key(e);
            let window = Duration::seconds(i64::try_from(rule.window_secs).unwrap_or(i64::MAX / 2));
            let open = st
                .open_alert(tenant, &rule.id, &group)
                .await?
                .filter(|a| a.last_event_at > e.time - window);
            let (count, first_event_id, first_event_at) = if rule.kind == RuleKind::Threshold {
                let hits = st.hit(tenant, rule, &group, e.id, e.time).await?;
                let l = latest.entry(rule.id.as_str()).or_insert((e.time, window));
                l.0 = l.0.max(e.time);
                if open.is_none() && hits.count < u64::from(rule.count.unwrap_or(1)) {
                    continue;
                }
                (hits.count, hits.first_event_id, hits.first_at)
            } else {
                (1, e.id, e.time)
            };
            if let Some(a) = open {
                st.add_to(a.id, e.id, e.time).await?;
                continue;
            }
            let alert = NewAlert {
                id: Uuid::now_v7(),
                tenant_id: tenant,
                rule_id: rule.id.clone(),
                severity: rule.severity,
                title_ja: rule.title_ja.clone(),
                title_en: rule.title_en.clone(),
                group_key: group,
                first_event_id,
                first_event_at,
                last_event_id: e.id,
                last_event_at: e.time,
                count,
                context: context_of(e),
                created_at: Utc::now(),
            };
            st.create(&alert).await?;
            created.push(alert);
        }
    }
    for (rule_id, (at, window)) in latest {
        st.prune(tenant, rule_id, at - window).await?;
    }
    Ok(created)
}

/// The alert rules as a [`SealHook`]: register it on the sealer
/// (`Sealer::with_hook(Arc::new(AlertEngine::new(rules)))`).
#[derive(Clone)]
pub struct AlertEngine {
    rules: Arc<RuleSet>,
    max_attempts: i32,
}

impl AlertEngine {
    pub fn new(rules: Arc<RuleSet>) -> Self {
        Self {
            rules,
            max_attempts: DELIVERY_MAX_ATTEMPTS,
        }
    }

    /// Delivery attempts per alert and channel before the job gives up (default 10).
    pub fn with_max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }
}

#[async_trait::async_trait]
impl SealHook for AlertEngine {
    async fn on_sealed(
        &self,
        tx: &DatabaseTransaction,
        tenant_id: Uuid,
        events: &[SealedEvent],
    ) -> Result<(), AuditError> {
        // Most batches hold nothing any rule looks at: skip the database then. Overrides change
        // parameters, never clauses, so the base rules decide what is a candidate.
        let candidate = events.iter().any(|se| {
            self.rules
                .rules()
                .iter()
                .any(|r| r.when.iter().any(|c| c.matches(&se.event)))
        });
        if !candidate {
            return Ok(());
        }
        let overrides = load_overrides(tx, tenant_id).await?;
        let rules = self.rules.effective(&overrides);
        let mut st = DbState { tx };
        let created = evaluate(&mut st, tenant_id, &rules, events).await?;
        if !created.is_empty() {
            enqueue_deliveries(tx, tenant_id, &created, self.max_attempts).await?;
            for a in &created {
                tracing::warn!(tenant = %tenant_id, alert = %a.id, rule = %a.rule_id, severity = a.severity.as_str(), "audit alert raised");
            }
        }
        Ok(())
    }
}

/// A tenant's stored rule overrides.
pub(crate) async fn load_overrides<C: ConnectionTrait>(
    c: &C,
    tenant: Uuid,
) -> Result<Vec<RuleOverride>, AuditError> {
    let rows = query(
        c,
        "SELECT rule_id, settings FROM audit_alert_rule_overrides WHERE tenant_id = $1 ORDER BY rule_id",
        vec![tenant.into()],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let rule_id: String = r.try_get("", "rule_id")?;
        let settings: String = r.try_get("", "settings")?;
        match serde_json::from_str::<RuleOverride>(&settings) {
            Ok(mut o) => {
                o.rule_id = rule_id;
                out.push(o);
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, rule = %rule_id, error = %e, "an alert rule override could not be read; ignored")
            }
        }
    }
    Ok(out)
}

/// One delivery job per new alert and channel that wants its severity, in the same transaction.
async fn enqueue_deliveries(
    tx: &DatabaseTransaction,
    tenant: Uuid,
    created: &[NewAlert],
    max_attempts: i32,
) -> Result<(), AuditError> {
    let rows = query(
        tx,
        "SELECT id, min_severity FROM audit_notification_channels WHERE tenant_id = $1 AND enabled = $2 AND deleted_at IS NULL",
        vec![tenant.into(), true.into()],
    )
    .await?;
    let mut channels = Vec::with_capacity(rows.len());
    for r in rows {
        let id: Uuid = r.try_get("", "id")?;
        let min: String = r.try_get("", "min_severity")?;
        channels.push((id, Severity::parse(&min).unwrap_or(Severity::Info)));
    }
    for a in created {
        for (channel, min) in &channels {
            if a.severity < *min {
                continue;
            }
            let job = NewJob::new(
                DELIVERY_JOB,
                json!({"tenant_id": tenant, "alert_id": a.id, "channel_id": channel}),
            )
            .tenant(tenant)
            .max_attempts(max_attempts)
            .idempotency_key(format!("audit-alert:{}:{}", a.id, channel));
            JobQueue::enqueue(tx, job)
                .await
                .map_err(|e| AuditError::Setup(format!("cannot queue an alert delivery: {e}")))?;
        }
    }
    Ok(())
}

struct DbState<'a> {
    tx: &'a DatabaseTransaction,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

#[async_trait::async_trait]
impl AlertState for DbState<'_> {
    async fn hit(
        &mut self,
        tenant: Uuid,
        rule: &Rule,
        group: &str,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<WindowHits, AuditError> {
        exec(
            self.tx,
            "INSERT INTO audit_alert_hits (tenant_id, rule_id, event_id, group_key, at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, rule_id, event_id) DO NOTHING",
            vec![
                tenant.into(),
                rule.id.clone().into(),
                event_id.into(),
                group.into(),
                ms(at).into(),
            ],
        )
        .await?;
        let from = ms(at) - i64::try_from(rule.window_secs).unwrap_or(0) * 1000;
        let args = || -> Vec<sea_orm::Value> {
            vec![
                tenant.into(),
                rule.id.clone().into(),
                group.into(),
                from.into(),
                ms(at).into(),
            ]
        };
        let where_ =
            "tenant_id = $1 AND rule_id = $2 AND group_key = $3 AND at_ms > $4 AND at_ms <= $5";
        let count: i64 = query_one(
            self.tx,
            &format!("SELECT COUNT(*) AS n FROM audit_alert_hits WHERE {where_}"),
            args(),
        )
        .await?
        .map(|r| r.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
        let first = query_one(
            self.tx,
            &format!(
                "SELECT event_id, at_ms FROM audit_alert_hits WHERE {where_} ORDER BY at_ms, event_id LIMIT 1"
            ),
            args(),
        )
        .await?;
        let (first_event_id, first_at) = match first {
            Some(r) => {
                let id: Uuid = r.try_get("", "event_id")?;
                let at_ms: i64 = r.try_get("", "at_ms")?;
                (id, DateTime::from_timestamp_millis(at_ms).unwrap_or(at))
            }
            None => (event_id, at),
        };
        Ok(WindowHits {
            count: u64::try_from(count).unwrap_or(0),
            first_event_id,
            first_at,
        })
    }

    async fn prune(
        &mut self,
        tenant: Uuid,
        rule_id: &str,
        before: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        exec(
            self.tx,
            "DELETE FROM audit_alert_hits WHERE tenant_id = $1 AND rule_id = $2 AND at_ms <= $3",
            vec![tenant.into(), rule_id.into(), ms(before).into()],
        )
        .await?;
        Ok(())
    }

    async fn open_alert(
        &mut self,
        tenant: Uuid,
        rule_id: &str,
        group: &str,
    ) -> Result<Option<OpenAlert>, AuditError> {
        let row = query_one(
            self.tx,
            "SELECT id, last_event_at FROM audit_alerts WHERE tenant_id = $1 AND rule_id = $2 AND group_key = $3 AND status = 'open' \
             ORDER BY last_event_at DESC LIMIT 1",
            vec![tenant.into(), rule_id.into(), group.into()],
        )
        .await?;
        row.map(|r| {
            Ok(OpenAlert {
                id: r.try_get("", "id")?,
                last_event_at: r.try_get("", "last_event_at")?,
            })
        })
        .transpose()
    }

    async fn add_to(
        &mut self,
        alert_id: Uuid,
        event_id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), AuditError> {
        exec(
            self.tx,
            "UPDATE audit_alerts SET count = count + 1, last_event_id = $2, last_event_at = $3, updated_at = $4 WHERE id = $1",
            vec![alert_id.into(), event_id.into(), at.into(), Utc::now().into()],
        )
        .await?;
        Ok(())
    }

    async fn create(&mut self, a: &NewAlert) -> Result<(), AuditError> {
        exec(
            self.tx,
            "INSERT INTO audit_alerts (id, tenant_id, rule_id, severity, title_ja, title_en, group_key, first_event_id, first_event_at, \
             last_event_id, last_event_at, count, context, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'open', $14, $14)",
            vec![
                a.id.into(),
                a.tenant_id.into(),
                a.rule_id.clone().into(),
                a.severity.as_str().into(),
                a.title_ja.clone().into(),
                a.title_en.clone().into(),
                a.group_key.clone().into(),
                a.first_event_id.into(),
                a.first_event_at.into(),
                a.last_event_id.into(),
                a.last_event_at.into(),
                i64::try_from(a.count).unwrap_or(i64::MAX).into(),
                serde_json::to_string(&a.context)?.into(),
                a.created_at.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod memory {
    //! The engine's state in memory, for unit tests of the rule logic.

    use super::*;

    #[derive(Debug, Clone)]
    pub struct StoredAlert {
        pub alert: NewAlert,
        pub status: &'static str,
    }

    #[derive(Default)]
    pub struct MemoryState {
        pub hits: Vec<(Uuid, String, String, Uuid, DateTime<Utc>)>,
        pub alerts: Vec<StoredAlert>,
    }

    #[async_trait::async_trait]
    impl AlertState for MemoryState {
        async fn hit(
            &mut self,
            tenant: Uuid,
            rule: &Rule,
            group: &str,
            event_id: Uuid,
            at: DateTime<Utc>,
        ) -> Result<WindowHits, AuditError> {
            self.hits
                .push((tenant, rule.id.clone(), group.to_string(), event_id, at));
            let from = at - Duration::seconds(rule.window_secs as i64);
            let mut inside: Vec<_> = self
                .hits
                .iter()
                .filter(|h| {
                    h.0 == tenant && h.1 == rule.id && h.2 == group && h.4 > from && h.4 <= at
                })
                .collect();
            inside.sort_by_key(|h| (h.4, h.3));
            let first = inside.first().map(|h| (h.3, h.4)).unwrap_or((event_id, at));
            Ok(WindowHits {
                count: inside.len() as u64,
                first_event_id: first.0,
                first_at: first.1,
            })
        }

        async fn prune(
            &mut self,
            tenant: Uuid,
            rule_id: &str,
            before: DateTime<Utc>,
        ) -> Result<(), AuditError> {
            self.hits
                .retain(|h| !(h.0 == tenant && h.1 == rule_id && h.4 <= before));
            Ok(())
        }

        async fn open_alert(
            &mut self,
            tenant: Uuid,
            rule_id: &str,
            group: &str,
        ) -> Result<Option<OpenAlert>, AuditError> {
            Ok(self
                .alerts
                .iter()
                .filter(|a| {
                    a.status == "open"
                        && a.alert.tenant_id == tenant
                        && a.alert.rule_id == rule_id
                        && a.alert.group_key == group
                })
                .max_by_key(|a| a.alert.last_event_at)
                .map(|a| OpenAlert {
                    id: a.alert.id,
                    last_event_at: a.alert.last_event_at,
                }))
        }

        async fn add_to(
            &mut self,
            alert_id: Uuid,
            event_id: Uuid,
            at: DateTime<Utc>,
        ) -> Result<(), AuditError> {
            if let Some(a) = self.alerts.iter_mut().find(|a| a.alert.id == alert_id) {
                a.alert.count += 1;
                a.alert.last_event_id = event_id;
                a.alert.last_event_at = at;
            }
            Ok(())
        }

        async fn create(&mut self, alert: &NewAlert) -> Result<(), AuditError> {
            self.alerts.push(StoredAlert {
                alert: alert.clone(),
                status: "open",
            });
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryState;
    use super::*;
    use crate::event::{Actor, ActorKind, Outcome, Source};
    use chrono::TimeZone;

    const T: Uuid = Uuid::from_u128(0x42);

    fn rules() -> Vec<Rule> {
        RuleSet::shipped().unwrap().effective(&[])
    }

    /// 2026-01-05 (Monday) 12:00 JST plus `secs`.
    fn noon(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 3, 0, 0).unwrap() + Duration::seconds(secs)
    }

    fn failed_sign_in(who: &str, at: DateTime<Utc>) -> AuditEvent {
        let mut e = AuditEvent::new(
            T,
            Actor::anonymous(Some(who)),
            "auth.sign_in",
            Outcome::Failure,
        )
        .source(Source::new(Some("198.51.100.9".into()), None, None));
        e.time = at;
        e
    }

    fn sealed(events: Vec<AuditEvent>) -> Vec<SealedEvent> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| SealedEvent {
                seq: i as u64,
                event,
            })
            .collect()
    }

    async fn run(st: &mut MemoryState, rules: &[Rule], events: Vec<AuditEvent>) -> Vec<NewAlert> {
        evaluate(st, T, rules, &sealed(events)).await.unwrap()
    }

    #[tokio::test]
    async fn match_rule_raises_and_dedupes_within_its_window() {
        let rules = rules();
        let mut st = MemoryState::default();
        let bg = |at| {
            let mut e = AuditEvent::new(
                T,
                Actor {
                    kind: ActorKind::BreakGlass,
                    id: Some("u1".into()),
                    ..Actor::system("x")
                },
                "break_glass.use",
                Outcome::Success,
            )
            .reason("患者急変のため緊急に閲覧");
            e.time = at;
            e
        };
        let created = run(&mut st, &rules, vec![bg(noon(0)), bg(noon(60))]).await;
        assert_eq!(created.len(), 1);
        let a = &created[0];
        assert_eq!(
            (a.rule_id.as_str(), a.severity),
            ("break_glass.use", Severity::Critical)
        );
        assert_eq!(a.context["reason"], "患者急変のため緊急に閲覧");
        assert_eq!(
            st.alerts[0].alert.count, 2,
            "the second use joined the open alert"
        );
        // After the window (1 h since the last use) a new alert.
        let created = run(&mut st, &rules, vec![bg(noon(60 + 3600))]).await;
        assert_eq!(created.len(), 1);
        // A resolved alert does not absorb new events.
        st.alerts.iter_mut().for_each(|a| a.status = "resolved");
        let created = run(&mut st, &rules, vec![bg(noon(3700))]).await;
        assert_eq!(created.len(), 1);
    }

    #[tokio::test]
    async fn threshold_counts_per_group_within_the_window() {
        let rules = rules();
        let mut st = MemoryState::default();
        // Four failures for yui (and some for ren) in ten minutes: nothing yet.
        let mut evs: Vec<_> = (0..4)
            .map(|i| failed_sign_in("yui@clinic.example.jp", noon(i * 60)))
            .collect();
        evs.push(failed_sign_in("ren@clinic.example.jp", noon(30)));
        assert!(run(&mut st, &rules, evs).await.is_empty());
        // The fifth within 10 minutes of the first raises one alert with all five.
        let first_id = st.hits[0].3;
        let created = run(
            &mut st,
            &rules,
            vec![failed_sign_in("YUI@clinic.example.jp", noon(590))],
        )
        .await;
        assert_eq!(created.len(), 1);
        let a = &created[0];
        assert_eq!(a.rule_id, "auth.sign_in_failures");
        assert_eq!(a.group_key, "yui@clinic.example.jp");
        assert_eq!(a.count, 5);
        assert_eq!(a.first_event_id, first_id);
        // A sixth adds to it instead of raising another.
        assert!(run(
            &mut st,
            &rules,
            vec![failed_sign_in("yui@clinic.example.jp", noon(600))]
        )
        .await
        .is_empty());
        assert_eq!(st.alerts[0].alert.count, 6);
    }

    #[tokio::test]
    async fn threshold_window_slides() {
        let rules = rules();
        let mut st = MemoryState::default();
        // Five failures, but spread over more than ten minutes: never five in one window.
        let evs: Vec<_> = (0..5)
            .map(|i| failed_sign_in("kai@clinic.example.jp", noon(i * 160)))
            .collect();
        assert!(run(&mut st, &rules, evs).await.is_empty());
        // Old hits are pruned as the window moves.
        assert!(st.hits.iter().all(|h| h.4 > noon(640 - 600)));
    }

    #[tokio::test]
    async fn disabled_rules_and_overrides() {
        let set = RuleSet::shipped().unwrap();
        let mut st = MemoryState::default();
        let off = set.effective(&[RuleOverride {
            rule_id: "auth.sign_in_failures".into(),
            enabled: Some(false),
            ..Default::default()
        }]);
        let evs: Vec<_> = (0..6).map(|i| failed_sign_in("a@b.jp", noon(i))).collect();
        assert!(run(&mut st, &off, evs).await.is_empty());
        let low = set.effective(&[RuleOverride {
            rule_id: "auth.sign_in_failures".into(),
            count: Some(2),
            ..Default::default()
        }]);
        let mut st = MemoryState::default();
        let created = run(
            &mut st,
            &low,
            vec![
                failed_sign_in("a@b.jp", noon(0)),
                failed_sign_in("a@b.jp", noon(1)),
            ],
        )
        .await;
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].count, 2);
    }

    #[tokio::test]
    async fn off_hours_volume_and_maintenance_rules() {
        let rules = rules();
        let mut st = MemoryState::default();
        let user = Actor::user(Uuid::from_u128(7), "dr@clinic.jp", T, "institution_staff");
        let mut late = AuditEvent::new(T, user.clone(), "record.open", Outcome::Success);
        late.time = Utc.with_ymd_and_hms(2026, 1, 5, 15, 30, 0).unwrap(); // 00:30 JST
        let mut day = late.clone();
        day.id = Uuid::now_v7();
        day.time = noon(0);
        let mut export = AuditEvent::new(T, user.clone(), "audit.export", Outcome::Success)
            .detail("count", 250_000);
        export.time = noon(5);
        let mut maint = AuditEvent::new(T, user, "tenant.update", Outcome::Denied);
        maint.actor.kind = ActorKind::MaintenanceGrant;
        maint.actor.grant_id = Some(Uuid::from_u128(9));
        maint.time = noon(10);
        let created = run(&mut st, &rules, vec![day, late, export, maint]).await;
        let ids: Vec<_> = created.iter().map(|a| a.rule_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "record.access_off_hours",
                "export.bulk",
                "maintenance.outside_window"
            ]
        );
        assert_eq!(created[2].group_key, Uuid::from_u128(9).to_string());
    }
}
