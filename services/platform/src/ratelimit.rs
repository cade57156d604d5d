//! Per-client rate limits for the endpoints an attacker would hammer: sign-in, enrollment,
//! break-glass, the OpenID Connect redirects and the OAuth2 token endpoint. Keyed by the peer
//! address; a request over the limit gets a 429 problem with `Retry-After`, and nothing else runs.

use crate::error::Problem;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

/// Paths under the limit.
const LIMITED: [&str; 3] = ["/api/v1/auth/", "/auth/oidc/", "/oauth2/token"];

#[derive(Clone)]
pub struct AuthRateLimit(Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>);

impl AuthRateLimit {
    /// `per_minute == 0` switches the limit off.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        match (NonZeroU32::new(per_minute), NonZeroU32::new(burst.max(1))) {
            (Some(rate), Some(burst)) => Self(Some(Arc::new(RateLimiter::keyed(
                Quota::per_minute(rate).allow_burst(burst),
            )))),
            _ => Self(None),
        }
    }
}

pub async fn limit_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let limiter = req
        .app_data::<web::Data<AuthRateLimit>>()
        .and_then(|l| l.0.clone());
    if let Some(limiter) = limiter {
        if LIMITED.iter().any(|p| req.path().starts_with(p)) {
            let ip = req
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            if let Err(not_until) = limiter.check_key(&ip) {
                let wait = not_until
                    .wait_time_from(DefaultClock::default().now())
                    .as_secs()
                    .max(1);
                let mut res = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many attempts",
                    format!(
                        "too many sign-in attempts from your address; try again in {wait} seconds"
                    ),
                )
                .error_response();
                if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&wait.to_string()) {
                    res.headers_mut()
                        .insert(actix_web::http::header::RETRY_AFTER, v);
                }
                return Ok(req.into_response(res));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
