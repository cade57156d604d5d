//! Shared foundation of every Anshin service.

pub mod batch;
pub mod config;
pub mod db;
pub mod error;
pub mod fsutil;
pub mod http;
pub mod jobs;
pub mod migration;
pub mod principal;
pub mod ratelimit;
pub mod sealer;
pub mod secret;
pub mod secretbox;
pub mod stepup;
pub mod telemetry;

pub use error::Problem;
pub use principal::{Principal, Role, Subject, TenantKind, TenantScope};
