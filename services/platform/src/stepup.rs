//! Step-up for sensitive actions: a person must have confirmed their presence with a registered
//! authenticator (a fresh WebAuthn assertion) within a short window before, for example, rotating
//! a tenant's keys.
//!
//! The identity service knows sessions and implements [`StepUpVerifier`]; services that must not
//! depend on identity (keys) ask through this trait. Only people are asked: API tokens and
//! machine clients are not people and keep the rules of their role and scopes.

use crate::error::Problem;
use crate::principal::{Principal, Subject};
use actix_web::http::StatusCode;

/// How recent a step-up must be for a sensitive action (the same window identity uses for
/// credential changes).
pub const SENSITIVE_ACTION_WINDOW_MINUTES: i64 = 5;

/// The problem type that tells a client to confirm with a passkey and retry
/// (`urn:anshin:problem:step-up-required`).
pub const STEP_UP_REQUIRED: &str = "step-up-required";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepUpError {
    /// The person has not confirmed recently enough: confirm (`POST /api/v1/me/step-up/begin`
    /// and `finish`) and try again.
    #[error("{0}")]
    Required(String),
    /// Whether the person confirmed cannot be told (no verifier wired, storage unreachable).
    /// Fails closed.
    #[error("the step-up could not be checked: {0}")]
    Unavailable(String),
}

impl StepUpError {
    /// The usual refusal, naming the window.
    pub fn required(within: chrono::Duration) -> Self {
        StepUpError::Required(format!(
            "confirm with your passkey (POST /api/v1/me/step-up/begin and finish) and try again within {} minutes",
            within.num_minutes()
        ))
    }
}

impl From<StepUpError> for Problem {
    fn from(e: StepUpError) -> Self {
        match e {
            StepUpError::Required(d) => Problem::new(
                StatusCode::FORBIDDEN,
                STEP_UP_REQUIRED,
                "Confirm with your passkey first",
                d,
            ),
            StepUpError::Unavailable(d) => {
                tracing::error!(detail = %d, "step-up check unavailable");
                Problem::unavailable("whether you confirmed with your passkey cannot be checked right now; nothing was changed. Retry later.")
                    .with_retry_after(5)
            }
        }
    }
}

/// Whether the principal is a person signed in through a session (the only principals asked to
/// step up).
pub fn is_person(p: &Principal) -> bool {
    matches!(p.subject, Subject::User { .. })
}

/// Answers "did this person confirm with an authenticator within `within`?".
#[async_trait::async_trait]
pub trait StepUpVerifier: Send + Sync + 'static {
    /// `Ok` when `p` is not a person (API token, machine client), or when the person's session
    /// proved a registered authenticator within `within`; otherwise [`StepUpError::Required`].
    async fn require_recent_step_up(
        &self,
        p: &Principal,
        within: chrono::Duration,
    ) -> Result<(), StepUpError>;
}

/// What a service without a wired verifier answers: machines pass, people are refused (fail
/// closed), since nobody can tell whether they confirmed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefusePeople;

#[async_trait::async_trait]
impl StepUpVerifier for RefusePeople {
    async fn require_recent_step_up(
        &self,
        p: &Principal,
        _within: chrono::Duration,
    ) -> Result<(), StepUpError> {
        if is_person(p) {
            Err(StepUpError::Unavailable(
                "no step-up verifier is configured for this service".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{Role, TenantKind};
    use uuid::Uuid;

    fn principal(subject: Subject) -> Principal {
        Principal {
            subject,
            tenant_id: Uuid::nil(),
            tenant_kind: TenantKind::Institution,
            role: Role::InstitutionAdmin,
            grant: None,
        }
    }

    fn person() -> Principal {
        principal(Subject::User {
            id: Uuid::nil(),
            session_id: Uuid::nil(),
            email: "a@example.jp".into(),
        })
    }

    fn token() -> Principal {
        principal(Subject::ApiToken {
            id: Uuid::nil(),
            name: "t".into(),
        })
    }

    #[test]
    fn only_people_are_asked() {
        assert!(is_person(&person()));
        assert!(!is_person(&token()));
        assert!(!is_person(&principal(Subject::Client {
            id: Uuid::nil(),
            client_id: "anc_x".into(),
            scopes: vec!["write".into()],
        })));
    }

    #[test]
    fn refusals_become_problems() {
        let p = Problem::from(StepUpError::required(chrono::Duration::minutes(5)));
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        assert_eq!(p.kind, STEP_UP_REQUIRED);
        assert!(p.detail.contains("within 5 minutes"), "{}", p.detail);
        let p = Problem::from(StepUpError::Unavailable("db down".into()));
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!p.detail.contains("db down"), "internals stay in the log");
    }

    #[actix_web::test]
    async fn without_a_verifier_people_are_refused_and_machines_pass() {
        let v = RefusePeople;
        let w = chrono::Duration::minutes(5);
        assert!(matches!(
            v.require_recent_step_up(&person(), w).await,
            Err(StepUpError::Unavailable(_))
        ));
        assert!(v.require_recent_step_up(&token(), w).await.is_ok());
    }
}
