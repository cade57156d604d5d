//! Alert rules as data: the rule file format (TOML), validation, per-tenant overrides, and the
//! pure matching functions the engine applies to each sealed event. There is no code per rule:
//! four kinds (`match`, `threshold`, `off_hours`, `volume`) cover every shipped rule.

use crate::event::{ActorKind, AuditEvent, Outcome};
use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, Offset, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use utoipa::ToSchema;

/// The rules shipped with Anshin (`services/audit/rules/default.toml`).
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");

/// Default deduplication window: one open alert per rule and group for this long after the
/// group's last event.
pub const DEFAULT_WINDOW_SECS: u64 = 3600;
pub const MIN_WINDOW_SECS: u64 = 60;
pub const MAX_WINDOW_SECS: u64 = 7 * 86_400;
pub const MAX_COUNT: u32 = 100_000;
const MAX_RULES: usize = 200;
const MAX_CLAUSES: usize = 20;
const MAX_GROUP_KEY: usize = 320;

/// Japan Standard Time: UTC+9 all year (Japan has no daylight saving time), so a fixed offset is
/// exactly Asia/Tokyo.
pub fn tokyo() -> FixedOffset {
    // +09:00 is well inside the valid range; the fallback is never taken.
    FixedOffset::east_opt(9 * 3600).unwrap_or(Utc.fix())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Every matching event raises an alert (or adds to the open one of its group).
    Match,
    /// `count` matching events within `window_secs`, per group.
    Threshold,
    /// A matching event outside the business hours (Asia/Tokyo).
    OffHours,
    /// A matching event whose numeric detail `field` is above `above`.
    Volume,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    pub fn label_ja(self) -> &'static str {
        match self {
            Severity::Info => "情報",
            Severity::Low => "低",
            Severity::Medium => "中",
            Severity::High => "高",
            Severity::Critical => "緊急",
        }
    }
}

/// Which fact of an event separates alert groups (counted and deduplicated apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    ActorId,
    /// The actor's name: an email address (also the address typed at a failed sign-in), a
    /// client id, a token name.
    ActorLabel,
    ActorKind,
    SourceIp,
    TargetId,
    Action,
    GrantId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn of(w: chrono::Weekday) -> Self {
        match w {
            chrono::Weekday::Mon => Day::Mon,
            chrono::Weekday::Tue => Day::Tue,
            chrono::Weekday::Wed => Day::Wed,
            chrono::Weekday::Thu => Day::Thu,
            chrono::Weekday::Fri => Day::Fri,
            chrono::Weekday::Sat => Day::Sat,
            chrono::Weekday::Sun => Day::Sun,
        }
    }
}

/// Opening hours in Asia/Tokyo. `start` and `end` are `HH:MM`; `end` before `start` means the
/// hours run past midnight (e.g. 20:00–08:00 for a night desk). Without `days`, every day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    #[schema(example = "07:00")]
    pub start: String,
    #[schema(example = "21:00")]
    pub end: String,
    /// Days on which the hours apply (the day on which a period starts, in JST); on other days
    /// any access is outside business hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Day>>,
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

impl BusinessHours {
    pub fn validate(&self) -> Result<(), String> {
        let (Some(s), Some(e)) = (parse_hhmm(&self.start), parse_hhmm(&self.end)) else {
            return Err("business hours need start and end as HH:MM (00:00–23:59)".into());
        };
        if s == e {
            return Err("business hours need an end different from their start".into());
        }
        if self.days.as_ref().is_some_and(|d| d.is_empty()) {
            return Err("business hours need at least one day, or no `days` for every day".into());
        }
        Ok(())
    }

    /// Whether `t` falls inside the hours, read on the Asia/Tokyo clock.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let (Some(start), Some(end)) = (parse_hhmm(&self.start), parse_hhmm(&self.end)) else {
            // Invalid hours never pass validation; treat them as "always open" (no alert).
            return true;
        };
        let local = t.with_timezone(&tokyo());
        let now = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second())
            .unwrap_or(NaiveTime::MIN);
        let day_ok = |d: chrono::Weekday| {
            self.days
                .as_ref()
                .is_none_or(|days| days.contains(&Day::of(d)))
        };
        if start < end {
            day_ok(local.weekday()) && now >= start && now < end
        } else if now >= start {
            // Overnight hours: the evening part belongs to today's period…
            day_ok(local.weekday())
        } else if now < end {
            // …and the early-morning part to the period that started yesterday.
            day_ok(local.weekday().pred())
        } else {
            false
        }
    }
}

/// One condition set; an event matches it when every stated condition holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    /// Exact action names, prefixes ending in `.*`, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<Outcome>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_kinds: Vec<ActorKind>,
    /// Detail values that must be equal.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

pub fn action_matches(pattern: &str, action: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => action
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == action,
    }
}

fn valid_action_pattern(p: &str) -> bool {
    if p == "*" {
        return true;
    }
    let body = p.strip_suffix(".*").unwrap_or(p);
    !body.is_empty()
        && body.len() <= 128
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Clause {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        (self.actions.is_empty() || self.actions.iter().any(|p| action_matches(p, &e.action)))
            && (self.outcomes.is_empty() || self.outcomes.contains(&e.outcome))
            && (self.actor_kinds.is_empty() || self.actor_kinds.contains(&e.actor.kind))
            && self
                .details
                .iter()
                .all(|(k, v)| e.details.get(k).is_some_and(|got| got == v))
    }

    fn validate(&self) -> Result<(), String> {
        if self.actions.is_empty()
            && self.outcomes.is_empty()
            && self.actor_kinds.is_empty()
            && self.details.is_empty()
        {
            return Err("a `when` clause must state at least one condition".into());
        }
        if let Some(bad) = self.actions.iter().find(|p| !valid_action_pattern(p)) {
            return Err(format!(
                "action pattern '{bad}' is not valid: use an exact name, a prefix ending in '.*', or '*'"
            ));
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

fn default_window() -> u64 {
    DEFAULT_WINDOW_SECS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub title_ja: String,
    pub title_en: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
    /// Threshold window and deduplication window, in seconds.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// `threshold`: how many matching events within the window raise the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `volume`: the numeric detail compared with `above` (e.g. `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `volume`: an event whose `field` is greater than this raises the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// `off_hours`: the opening hours (Asia/Tokyo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    /// The event matches the rule if it matches any clause.
    pub when: Vec<Clause>,
}

fn valid_rule_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Rule {
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        let err = |m: String| format!("rule '{id}': {m}");
        if !valid_rule_id(id) {
            return Err(format!(
                "rule id '{id}' is not valid: use 1–64 characters of a-z, 0-9, '.', '_' and '-'"
            ));
        }
        for (name, t) in [("title_ja", &self.title_ja), ("title_en", &self.title_en)] {
            if t.trim().is_empty() || t.chars().count() > 200 {
                return Err(err(format!("{name} must have 1–200 characters")));
            }
        }
        if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&self.window_secs) {
            return Err(err(format!(
                "window_secs must be between {MIN_WINDOW_SECS} and {MAX_WINDOW_SECS}"
            )));
        }
        if self.when.is_empty() || self.when.len() > MAX_CLAUSES {
            return Err(err(format!("needs 1–{MAX_CLAUSES} `when` clauses")));
        }
        for c in &self.when {
            c.validate().map_err(err)?;
        }
        let kind = self.kind;
        let only = |present: bool, what: &str, k: RuleKind| {
            if present && kind != k {
                Err(err(format!("{what} applies only to rules of kind {k:?}")))
            } else {
                Ok(())
            }
        };
        only(self.count.is_some(), "count", RuleKind::Threshold)?;
        only(self.field.is_some(), "field", RuleKind::Volume)?;
        only(self.above.is_some(), "above", RuleKind::Volume)?;
        only(
            self.business_hours.is_some(),
            "business_hours",
            RuleKind::OffHours,
        )?;
        match kind {
            RuleKind::Match => {}
            RuleKind::Threshold => match self.count {
                Some(n) if (1..=MAX_COUNT).contains(&n) => {}
                _ => return Err(err(format!("a threshold rule needs count (1–{MAX_COUNT})"))),
            },
            RuleKind::OffHours => match &self.business_hours {
                Some(h) => h.validate().map_err(err)?,
                None => return Err(err("an off_hours rule needs business_hours".into())),
            },
            RuleKind::Volume => {
                if !self
                    .field
                    .as_deref()
                    .is_some_and(|f| !f.is_empty() && f.len() <= 64)
                {
                    return Err(err("a volume rule needs field (a detail name)".into()));
                }
                if !self.above.is_some_and(|a| a.is_finite() && a >= 0.0) {
                    return Err(err("a volume rule needs above (a number ≥ 0)".into()));
                }
            }
        }
        Ok(())
    }

    /// Whether the event raises this rule (its clauses and, by kind, the hours or the volume).
    /// Threshold rules also need enough such events in their window (the engine counts them).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        if !self.when.iter().any(|c| c.matches(e)) {
            return false;
        }
        match self.kind {
            RuleKind::Match | RuleKind::Threshold => true,
            RuleKind::OffHours => self
                .business_hours
                .as_ref()
                .is_some_and(|h| !h.contains(e.time)),
            RuleKind::Volume => {
                let (Some(field), Some(above)) = (self.field.as_deref(), self.above) else {
                    return false;
                };
                numeric(e.details.get(field)).is_some_and(|v| v > above)
            }
        }
    }

    /// The value of the event that groups it (empty without `group_by`; `-` when the event does
    /// not have it).
    pub fn group_key(&self, e: &AuditEvent) -> String {
        let Some(g) = self.group_by else {
            return String::new();
        };
        let v = match g {
            GroupBy::ActorId => e.actor.id.clone(),
            GroupBy::ActorLabel => e.actor.label.as_ref().map(|l| l.to_lowercase()),
            GroupBy::ActorKind => Some(e.actor.kind.as_str().to_string()),
            GroupBy::SourceIp => e.source.ip.clone(),
            GroupBy::TargetId => e.target.as_ref().map(|t| t.id.clone()),
            GroupBy::Action => Some(e.action.clone()),
            GroupBy::GrantId => e.actor.grant_id.map(|g| g.to_string()),
        };
        let mut v = v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
        if v.len() > MAX_GROUP_KEY {
            let mut end = MAX_GROUP_KEY;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
        }
        v
    }

    /// This rule with a tenant's override applied; refused when the override sets a parameter
    /// the rule's kind does not have, or a value out of range.
    pub fn with_override(&self, o: &RuleOverride) -> Result<Rule, String> {
        let mut r = self.clone();
        if let Some(e) = o.enabled {
            r.enabled = e;
        }
        if let Some(s) = o.severity {
            r.severity = s;
        }
        if let Some(w) = o.window_secs {
            r.window_secs = w;
        }
        if o.count.is_some() {
            r.count = o.count;
        }
        if o.above.is_some() {
            r.above = o.above;
        }
        if o.business_hours.is_some() {
            r.business_hours = o.business_hours.clone();
        }
        r.validate()?;
        Ok(r)
    }
}

fn numeric(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A tenant's adjustment of one rule; unset fields keep the rule's own value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub rule_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// `threshold` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `volume` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// `off_hours` rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
}

impl RuleOverride {
    /// Whether it changes nothing (storing it would be pointless).
    pub fn is_empty(&self) -> bool {
        self.enabled.is_none()
            && self.severity.is_none()
            && self.window_secs.is_none()
            && self.count.is_none()
            && self.above.is_none()
            && self.business_hours.is_none()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: u32,
    #[serde(default)]
    rule: Vec<Rule>,
}

/// The base rules every tenant starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Parses and validates a rule file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: RuleFile = toml::from_str(text).map_err(|e| format!("alert rules: {e}"))?;
        if f.version != 1 {
            return Err(format!(
                "alert rules: version {} is not supported (expected 1)",
                f.version
            ));
        }
        if f.rule.len() > MAX_RULES {
            return Err(format!("alert rules: at most {MAX_RULES} rules"));
        }
        let mut seen = HashSet::new();
        for r in &f.rule {
            r.validate().map_err(|e| format!("alert rules: {e}"))?;
            if !seen.insert(r.id.clone()) {
                return Err(format!("alert rules: rule id '{}' appears twice", r.id));
            }
        }
        Ok(Self { rules: f.rule })
    }

    /// The shipped rules.
    pub fn shipped() -> Result<Self, String> {
        Self::parse(DEFAULT_RULES)
    }

    /// The rules of `path` (`audit.alert_rules_file`), or the shipped ones without it.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, String> {
        match path {
            None => Self::shipped(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read alert rules {}: {e}", p.display()))?;
                Self::parse(&text).map_err(|e| format!("{} ({})", e, p.display()))
            }
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// The rules with a tenant's overrides applied. An override that no longer fits (its rule
    /// changed kind or disappeared from the file) is skipped, and the rule keeps its base form.
    pub fn effective(&self, overrides: &[RuleOverride]) -> Vec<Rule> {
        self.rules
            .iter()
            .map(|r| {
                match overrides.iter().find(|o| o.rule_id == r.id) {
                    Some(o) => r.with_override(o).unwrap_or_else(|e| {
                        tracing::warn!(rule = %r.id, error = %e, "a tenant's alert rule override no longer applies; using the rule as shipped");
                        r.clone()
                    }),
                    None => r.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Source};
    use chrono::TimeZone;
    use uuid::Uuid;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ev(action: &str, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(
            Uuid::nil(),
            Actor::anonymous(Some("a@example.jp")),
            action,
            outcome,
        )
    }

    #[test]
    fn shipped_rules_parse_and_cover_every_kind() {
        let set = RuleSet::shipped().unwrap();
        let kinds: HashSet<_> = set.rules().iter().map(|r| r.kind).collect();
        assert_eq!(kinds.len(), 4);
        for id in [
            "break_glass.use",
            "auth.sign_in_failures",
            "maintenance.outside_window",
            "record.access_off_hours",
            "export.bulk",
        ] {
            let r = set.get(id).unwrap();
            assert!(!r.title_ja.is_empty() && !r.title_en.is_empty());
        }
    }

    #[test]
    fn action_patterns() {
        assert!(action_matches("record.*", "record.open"));
        assert!(action_matches("record.*", "record.export.csv"));
        assert!(!action_matches("record.*", "record"));
        assert!(!action_matches("record.*", "records.open"));
        assert!(action_matches("*", "anything"));
        assert!(action_matches("auth.sign_in", "auth.sign_in"));
        assert!(!action_matches("auth.sign_in", "auth.sign_in_begin"));
        assert!(valid_action_pattern("record.*") && !valid_action_pattern("rec*rd"));
        assert!(!valid_action_pattern(".*") && !valid_action_pattern("A.b"));
    }

    #[test]
    fn clauses_are_or_of_ands() {
        let set = RuleSet::shipped().unwrap();
        let r = set.get("maintenance.outside_window").unwrap();
        let mut denied = ev("record.open", Outcome::Denied);
        denied.actor.kind = ActorKind::MaintenanceGrant;
        assert!(r.matches(&denied));
        let mut ok = ev("record.open", Outcome::Success);
        ok.actor.kind = ActorKind::MaintenanceGrant;
        assert!(!r.matches(&ok), "a maintainer's allowed action is fine");
        let flagged = ev("grant.use", Outcome::Failure).detail("outside_window", true);
        assert!(r.matches(&flagged), "the detail alone matches");
        let not_flagged = ev("grant.use", Outcome::Failure).detail("outside_window", false);
        assert!(!r.matches(&not_flagged));
        let user_denied = ev("record.open", Outcome::Denied);
        assert!(
            !r.matches(&user_denied),
            "a user's denial is not a maintenance alert"
        );
    }

    #[test]
    fn volume_rules_compare_the_detail() {
        let set = RuleSet::shipped().unwrap();
        let r = set.get("export.bulk").unwrap();
        assert!(!r.matches(&ev("audit.export", Outcome::Success).detail("count", 1000)));
        assert!(r.matches(&ev("audit.export", Outcome::Success).detail("count", 1001)));
        assert!(r.matches(&ev("record.export", Outcome::Success).detail("count", "5000")));
        assert!(
            !r.matches(&ev("record.export", Outcome::Success)),
            "no count"
        );
        assert!(!r.matches(&ev("record.open", Outcome::Success).detail("count", 5000)));
        let lower = r
            .with_override(&RuleOverride {
                rule_id: r.id.clone(),
                above: Some(10.0),
                ..Default::default()
            })
            .unwrap();
        assert!(lower.matches(&ev("audit.export", Outcome::Success).detail("count", 11)));
    }

    #[test]
    fn business_hours_in_tokyo_across_the_day_boundary() {
        let h = BusinessHours {
            start: "07:00".into(),
            end: "21:00".into(),
            days: None,
        };
        h.validate().unwrap();
        // 2026-01-05 (Mon) in UTC; JST is nine hours ahead.
        assert!(h.contains(at("2026-01-04T22:00:00Z")), "07:00 JST Mon");
        assert!(!h.contains(at("2026-01-04T21:59:59Z")), "06:59:59 JST Mon");
        assert!(h.contains(at("2026-01-05T11:59:59Z")), "20:59:59 JST");
        assert!(!h.contains(at("2026-01-05T12:00:00Z")), "21:00 JST closes");
        assert!(
            !h.contains(at("2026-01-05T14:59:00Z")),
            "23:59 JST, still 5 Jan in both zones"
        );
        assert!(
            !h.contains(at("2026-01-05T15:30:00Z")),
            "00:30 JST on 6 Jan while UTC is still 5 Jan"
        );
        assert!(
            h.contains(at("2026-01-05T03:00:00Z")),
            "12:00 JST (03:00 UTC, which would be outside hours read as UTC)"
        );

        // Weekdays only: the day is the Tokyo day, not the UTC one.
        let weekdays = BusinessHours {
            days: Some(vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri]),
            ..h.clone()
        };
        // 2026-01-09 is a Friday; 23:30 UTC Friday is 08:30 JST Saturday.
        assert!(
            weekdays.contains(at("2026-01-09T01:00:00Z")),
            "Fri 10:00 JST"
        );
        assert!(
            !weekdays.contains(at("2026-01-09T23:30:00Z")),
            "Sat 08:30 JST"
        );
        // Sunday 22:30 UTC is Monday 07:30 JST.
        assert!(
            weekdays.contains(at("2026-01-11T22:30:00Z")),
            "Mon 07:30 JST"
        );

        // Overnight hours 20:00–08:00, starting on weekdays only.
        let night = BusinessHours {
            start: "20:00".into(),
            end: "08:00".into(),
            days: Some(vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri]),
        };
        night.validate().unwrap();
        assert!(night.contains(at("2026-01-09T12:00:00Z")), "Fri 21:00 JST");
        assert!(
            night.contains(at("2026-01-09T20:00:00Z")),
            "Sat 05:00 JST, Friday's night"
        );
        assert!(!night.contains(at("2026-01-10T12:00:00Z")), "Sat 21:00 JST");
        assert!(!night.contains(at("2026-01-09T03:00:00Z")), "Fri 12:00 JST");
    }

    #[test]
    fn off_hours_rule_fires_only_outside_hours() {
        let set = RuleSet::shipped().unwrap();
        let r = set.get("record.access_off_hours").unwrap();
        let mut e = ev("record.open", Outcome::Success);
        e.time = Utc.with_ymd_and_hms(2026, 1, 5, 3, 0, 0).unwrap(); // 12:00 JST
        assert!(!r.matches(&e));
        e.time = Utc.with_ymd_and_hms(2026, 1, 5, 15, 30, 0).unwrap(); // 00:30 JST
        assert!(r.matches(&e));
        e.action = "auth.sign_in".into();
        assert!(!r.matches(&e), "not a record action");
    }

    #[test]
    fn group_keys() {
        let set = RuleSet::shipped().unwrap();
        let r = set.get("auth.sign_in_failures").unwrap();
        let mut e = ev("auth.sign_in", Outcome::Failure);
        e.actor.label = Some("Yui@Clinic.example.JP".into());
        assert_eq!(r.group_key(&e), "yui@clinic.example.jp");
        let by_ip = set.get("auth.sign_in_failures_by_ip").unwrap();
        assert_eq!(by_ip.group_key(&e), "-");
        e.source = Source::new(Some("192.0.2.7".into()), None, None);
        assert_eq!(by_ip.group_key(&e), "192.0.2.7");
    }

    #[test]
    fn overrides_are_checked_against_the_kind() {
        let set = RuleSet::shipped().unwrap();
        let t = set.get("auth.sign_in_failures").unwrap();
        let o = |f: fn(&mut RuleOverride)| {
            let mut o = RuleOverride {
                rule_id: t.id.clone(),
                ..Default::default()
            };
            f(&mut o);
            o
        };
        let r = t
            .with_override(&o(|o| {
                o.count = Some(3);
                o.window_secs = Some(120);
                o.enabled = Some(false);
            }))
            .unwrap();
        assert_eq!((r.count, r.window_secs, r.enabled), (Some(3), 120, false));
        assert!(t.with_override(&o(|o| o.above = Some(1.0))).is_err());
        assert!(t.with_override(&o(|o| o.count = Some(0))).is_err());
        assert!(t.with_override(&o(|o| o.window_secs = Some(1))).is_err());
        let h = set.get("record.access_off_hours").unwrap();
        let bad_hours = RuleOverride {
            rule_id: h.id.clone(),
            business_hours: Some(BusinessHours {
                start: "25:00".into(),
                end: "08:00".into(),
                days: None,
            }),
            ..Default::default()
        };
        assert!(h.with_override(&bad_hours).is_err());
        // The effective set skips an override that does not fit.
        let eff = set.effective(&[o(|o| o.above = Some(1.0))]);
        assert_eq!(eff.iter().find(|r| r.id == t.id).unwrap(), t);
    }

    #[test]
    fn bad_rule_files_are_refused_with_the_reason() {
        let base = r#"
            version = 1
            [[rule]]
            id = "x"
            kind = "threshold"
            severity = "high"
            title_ja = "テスト"
            title_en = "Test"
            count = 3
            [[rule.when]]
            actions = ["auth.sign_in"]
        "#;
        assert!(RuleSet::parse(base).is_ok());
        let e = RuleSet::parse(&base.replace("count = 3", "")).unwrap_err();
        assert!(e.contains("needs count"), "{e}");
        let e = RuleSet::parse(&base.replace("version = 1", "version = 2")).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        let e = RuleSet::parse(&base.replace("actions = [\"auth.sign_in\"]", "")).unwrap_err();
        assert!(e.contains("at least one condition"), "{e}");
        let e = RuleSet::parse(&base.replace("severity = \"high\"", "severity = \"huge\""))
            .unwrap_err();
        assert!(e.contains("huge"), "{e}");
        let twice = format!("{base}\n{}", &base[base.find("[[rule]]").unwrap()..]);
        assert!(RuleSet::parse(&twice).unwrap_err().contains("twice"));
        let e = RuleSet::parse(&base.replace("id = \"x\"", "id = \"X Y\"")).unwrap_err();
        assert!(e.contains("not valid"), "{e}");
    }
}
