//! Identity: people and their two-factor sign-in. Invitations lead to enrollment of a passkey
//! (WebAuthn, user verification required, so one gesture proves two factors); sign-in creates a
//! server-side session; every ceremony is stored server-side, single-use and expiring, so any
//! replica can finish what another began.

mod access;
mod assertion_read;
mod audit;
pub mod break_glass;
pub mod clients;
mod contact;
pub mod credential_routes;
pub mod credentials;
pub mod entity;
pub mod error;
pub mod grants;
pub mod inventory;
pub mod jobs;
pub mod mail;
pub mod migration;
mod migration_contact;
mod migration_invitations;
mod migration_passwords;
pub mod oidc;
mod oidc_metadata;
pub mod password;
pub mod password_reset;
pub mod policy;
mod reseal;
pub mod review;
pub mod routes;
/// The secret box moved to the platform (audit alerts use it too); re-exported for callers.
pub use anshin_platform::secretbox;
mod secrets;
pub mod service;

pub use clients::{ClientService, TokenKeys};
pub use contact::{ERASED_EMAIL, UNREADABLE_EMAIL};
pub use error::IdentityError;
pub use migration::{grants, migrations};
pub use oidc::{OidcOutcome, ProviderSettings, ProviderView};
pub use secretbox::SecretBox;
pub use service::{
    ClientMeta, EnrollMethod, IdentityService, InvitationInfo, NewSession, SessionInfo, UserInfo,
};
