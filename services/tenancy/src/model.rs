//! Tenants as the API and the CLI see them, and the rules a valid tenant follows.

use crate::entity::tenant;
use anshin_platform::error::FieldError;
use anshin_platform::TenantKind;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::OnceLock;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ReferencePattern {
    /// Cloud EMR, institution with dedicated IT staff (参照パターン II).
    #[serde(rename = "II")]
    II,
    /// Cloud EMR, institution without dedicated IT staff (参照パターン IV).
    #[serde(rename = "IV")]
    IV,
}

impl ReferencePattern {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferencePattern::II => "II",
            ReferencePattern::IV => "IV",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "II" => Some(Self::II),
            "IV" => Some(Self::IV),
            _ => None,
        }
    }
}

/// 診療所 (at most 19 beds) or 病院 (20 beds or more), as the Medical Care Act defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstitutionType {
    Clinic,
    Hospital,
}

impl InstitutionType {
    pub fn as_str(self) -> &'static str {
        match self {
            InstitutionType::Clinic => "clinic",
            InstitutionType::Hospital => "hospital",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clinic" => Some(Self::Clinic),
            "hospital" => Some(Self::Hospital),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
    Offboarding,
    /// Set only by the destruction workflow.
    Destroyed,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Offboarding => "offboarding",
            TenantStatus::Destroyed => "destroyed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "offboarding" => Some(Self::Offboarding),
            "destroyed" => Some(Self::Destroyed),
            _ => None,
        }
    }

    /// Lifecycle changes an operator may make by hand.
    pub fn can_become(self, next: TenantStatus) -> bool {
        use TenantStatus::*;
        matches!(
            (self, next),
            (Active, Suspended)
                | (Suspended, Active)
                | (Active, Offboarding)
                | (Suspended, Offboarding)
                | (Offboarding, Active)
        ) || self == next && self != Destroyed
    }
}

/// A provider (事業者) or a medical institution (医療機関).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub kind: TenantKind,
    pub slug: String,
    pub name: String,
    /// The provider of an institution; absent for providers.
    pub parent_id: Option<Uuid>,
    pub institution_type: Option<InstitutionType>,
    pub reference_pattern: Option<ReferencePattern>,
    pub bed_count: Option<i32>,
    pub contract_start: Option<NaiveDate>,
    pub contract_end: Option<NaiveDate>,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub(crate) fn from_model(m: tenant::Model) -> Self {
        Self {
            id: m.id,
            kind: TenantKind::parse(&m.kind).unwrap_or(TenantKind::Institution),
            slug: m.slug,
            name: m.name,
            parent_id: m.parent_id,
            institution_type: m
                .institution_type
                .as_deref()
                .and_then(InstitutionType::parse),
            reference_pattern: m
                .reference_pattern
                .as_deref()
                .and_then(ReferencePattern::parse),
            bed_count: m.bed_count,
            contract_start: m.contract_start,
            contract_end: m.contract_end,
            status: TenantStatus::parse(&m.status).unwrap_or(TenantStatus::Suspended),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub kind: TenantKind,
    /// Lower-case letters, digits and hyphens; 2–63 characters; unique.
    #[schema(example = "sakura-clinic")]
    pub slug: String,
    #[schema(example = "さくら内科クリニック")]
    pub name: String,
    /// Slug or id of the provider; defaults to the caller's own provider.
    pub parent: Option<String>,
    pub reference_pattern: Option<ReferencePattern>,
    pub institution_type: Option<InstitutionType>,
    pub bed_count: Option<i32>,
    pub contract_start: Option<NaiveDate>,
    pub contract_end: Option<NaiveDate>,
}

/// Fields to change; a field set to `null` is cleared, an absent field is left alone.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    pub reference_pattern: Option<ReferencePattern>,
    pub institution_type: Option<InstitutionType>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i32>)]
    pub bed_count: Option<Option<i32>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    pub contract_start: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    pub contract_end: Option<Option<NaiveDate>>,
}

impl UpdateTenant {
    /// Names of the fields this patch sets, for the audit trail.
    pub fn changed_fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("status", self.status.is_some()),
            ("reference_pattern", self.reference_pattern.is_some()),
            ("institution_type", self.institution_type.is_some()),
            ("bed_count", self.bed_count.is_some()),
            ("contract_start", self.contract_start.is_some()),
            ("contract_end", self.contract_end.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.status.is_none()
            && self.reference_pattern.is_none()
            && self.institution_type.is_none()
            && self.bed_count.is_none()
            && self.contract_start.is_none()
            && self.contract_end.is_none()
    }

    /// Whether only facts an institution may state about itself change (name, beds).
    pub fn is_self_service(&self) -> bool {
        self.status.is_none()
            && self.reference_pattern.is_none()
            && self.institution_type.is_none()
            && self.contract_start.is_none()
            && self.contract_end.is_none()
    }
}

fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn slug_re() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(
        || match regex::Regex::new(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])$") {
            Ok(r) => r,
            Err(e) => unreachable!("static slug pattern is valid: {e}"),
        },
    )
}

pub fn validate_slug(slug: &str, errors: &mut Vec<FieldError>) {
    if !slug_re().is_match(slug) || slug.contains("--") {
        errors.push(FieldError {
            field: "slug".into(),
            message: "use 2–63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit".into(),
        });
    }
}

pub fn validate_name(name: &str, errors: &mut Vec<FieldError>) -> String {
    let trimmed = name.trim().to_string();
    let len = trimmed.chars().count();
    if len == 0 || len > 200 {
        errors.push(FieldError {
            field: "name".into(),
            message: "give a name of 1–200 characters".into(),
        });
    } else if trimmed.chars().any(char::is_control) {
        errors.push(FieldError {
            field: "name".into(),
            message: "the name must not contain control characters".into(),
        });
    }
    trimmed
}

/// Rules that hold for every institution whatever changed.
pub fn validate_institution(
    kind_of_institution: InstitutionType,
    beds: Option<i32>,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    errors: &mut Vec<FieldError>,
) {
    if let Some(b) = beds {
        let ok = match kind_of_institution {
            InstitutionType::Clinic => (0..=19).contains(&b),
            InstitutionType::Hospital => (20..=10_000).contains(&b),
        };
        if !ok {
            errors.push(FieldError {
                field: "bed_count".into(),
                message: "a clinic has 0–19 beds and a hospital 20 or more".into(),
            });
        }
    }
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            errors.push(FieldError {
                field: "contract_end".into(),
                message: "the contract cannot end before it starts".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["ab", "sakura-clinic", "a1", "x".repeat(63).as_str()] {
            let mut e = vec![];
            validate_slug(ok, &mut e);
            assert!(e.is_empty(), "{ok}");
        }
        for bad in [
            "a",
            "-ab",
            "ab-",
            "Ab",
            "a_b",
            "a--b",
            "さくら",
            &"x".repeat(64),
        ] {
            let mut e = vec![];
            validate_slug(bad, &mut e);
            assert_eq!(e.len(), 1, "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        let mut e = vec![];
        assert_eq!(validate_name("  さくら内科  ", &mut e), "さくら内科");
        assert!(e.is_empty());
        validate_name("   ", &mut e);
        validate_name("a\u{7}b", &mut e);
        validate_name(&"名".repeat(201), &mut e);
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn beds_follow_the_medical_care_act() {
        let mut e = vec![];
        validate_institution(InstitutionType::Clinic, Some(19), None, None, &mut e);
        validate_institution(InstitutionType::Hospital, Some(20), None, None, &mut e);
        assert!(e.is_empty());
        validate_institution(InstitutionType::Clinic, Some(20), None, None, &mut e);
        validate_institution(InstitutionType::Hospital, Some(5), None, None, &mut e);
        validate_institution(InstitutionType::Clinic, Some(-1), None, None, &mut e);
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn lifecycle() {
        use TenantStatus::*;
        assert!(Active.can_become(Suspended));
        assert!(Offboarding.can_become(Active));
        assert!(!Active.can_become(Destroyed));
        assert!(!Destroyed.can_become(Active));
        assert!(!Destroyed.can_become(Destroyed));
    }

    #[test]
    fn update_distinguishes_null_from_absent() {
        let u: UpdateTenant = serde_json::from_str(r#"{"bed_count": null}"#).unwrap();
        assert_eq!(u.bed_count, Some(None));
        let u: UpdateTenant = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(u.bed_count, None);
        assert!(u.is_empty());
        assert!(serde_json::from_str::<UpdateTenant>(r#"{"slug":"x"}"#).is_err());
    }
}
