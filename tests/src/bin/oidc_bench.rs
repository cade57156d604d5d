//! Load generator: completed OpenID Connect sign-ins per second against a running `anshin serve`
//! and the organisation's OpenID Provider (tests/node/oidc_provider.mjs). Each sign-in is what a
//! browser does: `GET /auth/oidc/start` at Anshin, the authorization request at the provider with
//! its login and consent interactions (a fresh cookie jar each time, as a browser that is not yet
//! signed in there), and `GET /auth/oidc/callback` at Anshin, which exchanges the code, checks the
//! ID token and ends with a session cookie. The provider's `amr` proves several factors, so no
//! passkey step-up follows.
//!
//! Then, separately, the callback alone: in rounds, 100 sign-ins are taken to the point where the
//! provider sends the browser back, and those callbacks are then replayed at Anshin at the same
//! concurrency (the provider only answers discovery and the code exchange), until the replays
//! add up to half of SECONDS. Only the replays are timed.
//!
//!   oidc-bench URL ORG [CONCURRENCY=16] [SECONDS=15] [EMAIL=mfa@hikari.example.jp]
//!
//! ORG is the tenant slug whose identity provider is configured; EMAIL is the provider account.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::Url;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Callbacks prepared per round of the callback-alone phase. The provider keeps its codes,
/// grants, sessions and interactions in an LRU of 1,000 entries (oidc-provider's MemoryAdapter),
/// about six per sign-in: a larger batch would have its first codes evicted before their replay.
const BATCH: usize = 100;

type Failure = String;

fn location(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(String::from)
}

/// Starts a sign-in at Anshin and plays the browser at the provider until it sends the browser
/// back to Anshin's callback; returns the callback's path and query.
async fn to_callback(c: &reqwest::Client, base: &str, start: &str) -> Result<String, Failure> {
    let res = c
        .get(format!("{base}{start}"))
        .send()
        .await
        .map_err(|e| format!("start: {e}"))?;
    let authorize = match (res.status().as_u16(), location(&res)) {
        (303, Some(l)) => l,
        (s, _) => {
            return Err(format!(
                "start answered {s}: {}",
                res.text().await.unwrap_or_default()
            ))
        }
    };
    let mut url = Url::parse(&authorize).map_err(|e| format!("authorize URL: {e}"))?;
    let callback = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .ok_or("the authorize URL has no redirect_uri")?;
    let jar = Jar::default();
    for _ in 0..10 {
        let mut req = c.get(url.clone());
        if let Some(cookies) = jar.cookies(&url) {
            req = req.header(COOKIE, cookies);
        }
        let res = req.send().await.map_err(|e| format!("provider: {e}"))?;
        jar.set_cookies(&mut res.headers().get_all(SET_COOKIE).iter(), &url);
        let Some(next) = location(&res) else {
            return Err(format!(
                "provider answered {} without a redirect: {}",
                res.status(),
                res.text().await.unwrap_or_default()
            ));
        };
        if next.starts_with(&callback) {
            let back = Url::parse(&next).map_err(|e| format!("callback URL: {e}"))?;
            return Ok(format!(
                "{}?{}",
                back.path(),
                back.query().unwrap_or_default()
            ));
        }
        url = url
            .join(&next)
            .map_err(|e| format!("provider redirect: {e}"))?;
    }
    Err("too many redirects at the provider".into())
}

/// The callback at Anshin: signed in only with a 303 to /portal carrying a session cookie.
async fn callback(c: &reqwest::Client, base: &str, path: &str) -> Result<(), Failure> {
    let res = c
        .get(format!("{base}{path}"))
        .send()
        .await
        .map_err(|e| format!("callback: {e}"))?;
    let status = res.status().as_u16();
    let to = location(&res);
    let cookie = res.headers().get_all(SET_COOKIE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.starts_with("anshin_session=") && !v.starts_with("anshin_session=;"))
    });
    if status == 303 && to.as_deref() == Some("/portal") && cookie {
        Ok(())
    } else {
        Err(format!(
            "callback answered {status} to {to:?} (session cookie: {cookie}): {}",
            res.text().await.unwrap_or_default()
        ))
    }
}

#[derive(Default)]
struct Tally {
    flows: Vec<Duration>,
    callbacks: Vec<Duration>,
    errors: u64,
    first_error: Option<Failure>,
}

impl Tally {
    fn fail(&mut self, e: Failure) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, o: Tally) {
        self.flows.extend(o.flows);
        self.callbacks.extend(o.callbacks);
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: oidc-bench URL ORG [CONCURRENCY] [SECONDS] [EMAIL]");
        std::process::exit(2);
    }
    let base = args[1].trim_end_matches('/').to_string();
    let n = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (concurrency, seconds) = (n(3, 16).max(1), n(4, 15));
    let email = args
        .get(5)
        .cloned()
        .unwrap_or_else(|| "mfa@hikari.example.jp".into());
    let start = {
        let mut u = Url::parse("http://x/auth/oidc/start").unwrap();
        u.query_pairs_mut()
            .append_pair("org", &args[2])
            .append_pair("login_hint", &email);
        format!("{}?{}", u.path(), u.query().unwrap())
    };
    // No cookie store and no redirects: each flow keeps its own provider cookies, and every
    // redirect is followed by hand, as the test does (tests/it/oidc.rs `at_provider`). Idle
    // connections are dropped before node closes them (its keep-alive timeout is 5 s), so a
    // request never races the server's close.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(concurrency * 2)
        .build()
        .unwrap();

    // One sign-in first: creates the account (just-in-time) and fails loudly on a bad setup.
    let path = to_callback(&client, &base, &start).await.expect("warm-up");
    callback(&client, &base, &path).await.expect("warm-up");

    // The whole flow, closed loop.
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, start) = (client.clone(), base.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let path = match to_callback(&client, &base, &start).await {
                    Ok(p) => p,
                    Err(e) => {
                        t.fail(e);
                        continue;
                    }
                };
                let t1 = Instant::now();
                match callback(&client, &base, &path).await {
                    Ok(()) => {
                        t.callbacks.push(t1.elapsed());
                        t.flows.push(t0.elapsed());
                    }
                    Err(e) => t.fail(e),
                }
            }
            t
        }));
    }
    let mut flow = Tally::default();
    for t in tasks {
        flow.merge(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    flow.flows.sort();
    flow.callbacks.sort();

    // The callback alone, in rounds: take BATCH sign-ins up to the provider's redirect back,
    // then replay their callbacks at Anshin from a shared queue; only the replays are timed.
    let mut alone = Tally::default();
    let (mut replay, mut count) = (0.0, 0);
    let budget = (seconds as f64 / 2.0).max(1.0);
    while replay < budget {
        let ready = Arc::new(Mutex::new(Vec::with_capacity(BATCH)));
        let taken = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, base, start) = (client.clone(), base.clone(), start.clone());
            let (ready, taken) = (ready.clone(), taken.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while taken.fetch_add(1, Ordering::Relaxed) < BATCH {
                    match to_callback(&client, &base, &start).await {
                        Ok(p) => ready.lock().unwrap().push(p),
                        Err(e) => t.fail(e),
                    }
                }
                t
            }));
        }
        for t in tasks {
            alone.merge(t.await.unwrap());
        }
        let ready = Arc::new(std::mem::take(&mut *ready.lock().unwrap()));
        if ready.is_empty() {
            break;
        }
        count += ready.len();
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, base) = (client.clone(), base.clone());
            let (ready, next) = (ready.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut t = Tally::default();
                while let Some(path) = ready.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t1 = Instant::now();
                    match callback(&client, &base, path).await {
                        Ok(()) => t.callbacks.push(t1.elapsed()),
                        Err(e) => t.fail(e),
                    }
                }
                t
            }));
        }
        for t in tasks {
            alone.merge(t.await.unwrap());
        }
        replay += started.elapsed().as_secs_f64();
    }
    alone.callbacks.sort();

    if let Some(e) = flow.first_error.as_ref().or(alone.first_error.as_ref()) {
        eprintln!("first error: {e}");
    }
    println!(
        "sign-ins: {} in {:.1} s = {:.0}/s; flow p50 {:.1} ms, p99 {:.1} ms; callback p50 {:.1} ms, p99 {:.1} ms; \
         callbacks alone: {} of {} in {:.1} s = {:.0}/s, p50 {:.1} ms, p99 {:.1} ms; errors {}; concurrency {}",
        flow.flows.len(),
        elapsed,
        flow.flows.len() as f64 / elapsed,
        pct(&flow.flows, 0.5),
        pct(&flow.flows, 0.99),
        pct(&flow.callbacks, 0.5),
        pct(&flow.callbacks, 0.99),
        alone.callbacks.len(),
        count,
        replay,
        alone.callbacks.len() as f64 / replay,
        pct(&alone.callbacks, 0.5),
        pct(&alone.callbacks, 0.99),
        flow.errors + alone.errors,
        concurrency
    );
}
