//! Load generator: completed WebAuthn sign-ins per second against a running `anshin serve`.
//! Each sign-in is begin + a soft-passkey assertion + finish, ending with a session cookie,
//! exactly what a browser does. The soft authenticator's signing runs on the same machine and
//! counts against the figure.
//!
//!   signin-bench URL ADMIN_TOKEN [USERS=32] [CONCURRENCY=32] [SECONDS=15]
//!
//! ADMIN_TOKEN is an institution_admin API token (it invites the benchmark users).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: fail loudly

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

async fn post(
    c: &reqwest::Client,
    url: String,
    body: Value,
    bearer: Option<&str>,
) -> (u16, Value, bool) {
    let mut r = c.post(url).json(&body);
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let res = r.send().await.expect("request");
    let status = res.status().as_u16();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.starts_with("anshin_session=")));
    let v = res.json().await.unwrap_or(Value::Null);
    (status, v, cookie)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: signin-bench URL ADMIN_TOKEN [USERS] [CONCURRENCY] [SECONDS]");
        std::process::exit(2);
    }
    let base = args[1].trim_end_matches('/').to_string();
    let token = args[2].clone();
    let n = |i: usize, d: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (users, concurrency, seconds) = (n(3, 32), n(4, 32), n(5, 15));
    let origin = Url::parse(&base).unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();

    // Enroll the users through the API, as invited people would.
    let mut people = Vec::new();
    for i in 0..users {
        let email = format!("bench-{run}-{i}@bench.example.jp");
        let (s, inv, _) = post(
            &client,
            format!("{base}/api/v1/invitations"),
            json!({"email": email, "display_name": "ベンチ", "role": "institution_staff"}),
            Some(&token),
        )
        .await;
        assert_eq!(s, 201, "invitation: {inv}");
        let t = inv["enrollment_url"]
            .as_str()
            .unwrap()
            .split("#token=")
            .nth(1)
            .unwrap()
            .to_string();
        let (_, begin, _) = post(
            &client,
            format!("{base}/api/v1/auth/enrollment/begin"),
            json!({"token": t}),
            None,
        )
        .await;
        let ccr: CreationChallengeResponse =
            serde_json::from_value(begin["public_key"].clone()).unwrap();
        let mut device = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let reg = device.do_registration(origin.clone(), ccr).unwrap();
        let (s, v, _) = post(
            &client,
            format!("{base}/api/v1/auth/enrollment/finish"),
            json!({"ceremony_id": begin["ceremony_id"], "credential": reg}),
            None,
        )
        .await;
        assert_eq!(s, 201, "enrollment: {v}");
        people.push((email, device));
    }

    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let server_pid = std::env::var("SERVER_PID").ok();
    let cpu_before = CpuSample::take(server_pid.as_deref());
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_task = people.len().div_ceil(concurrency).max(1);
    let mut chunks: Vec<Vec<(String, WebauthnAuthenticator<SoftPasskey>)>> = Vec::new();
    while !people.is_empty() {
        let take = per_task.min(people.len());
        chunks.push(people.drain(..take).collect());
    }
    for mut mine in chunks {
        let client = client.clone();
        let base = base.clone();
        let origin = origin.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0;
            while Instant::now() < deadline {
                let k = i % mine.len();
                let (email, device) = &mut mine[k];
                i += 1;
                let t0 = Instant::now();
                let (s, begin, _) = post(
                    &client,
                    format!("{base}/api/v1/auth/sign-in/begin"),
                    json!({"email": email}),
                    None,
                )
                .await;
                if s != 200 {
                    errors += 1;
                    continue;
                }
                let rcr: RequestChallengeResponse =
                    serde_json::from_value(begin["public_key"].clone()).unwrap();
                let assertion = device.do_authentication(origin.clone(), rcr).unwrap();
                let (s, _, cookie) = post(
                    &client,
                    format!("{base}/api/v1/auth/sign-in/finish"),
                    json!({"ceremony_id": begin["ceremony_id"], "credential": assertion}),
                    None,
                )
                .await;
                if s == 200 && cookie {
                    latencies.push(t0.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = CpuSample::take(server_pid.as_deref());
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "sign-ins: {} in {:.1} s = {:.0}/s; p50 {:.1} ms, p99 {:.1} ms; errors {}; users {}, concurrency {}",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        errors,
        users,
        concurrency
    );
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        b.since(&a).report(all.len());
    }
}

/// CPU time (Linux clock ticks, 100 per second) of this process, the server and the whole
/// machine, to tell what one sign-in costs the server apart from the load generator on the
/// same cores.
struct CpuSample {
    own: u64,
    server: u64,
    busy: u64,
    total: u64,
}

impl CpuSample {
    fn take(server_pid: Option<&str>) -> Option<Self> {
        let (busy, total) = machine_ticks()?;
        Some(Self {
            own: process_ticks("self")?,
            server: process_ticks(server_pid?)?,
            busy,
            total,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            own: self.own - before.own,
            server: self.server - before.server,
            busy: self.busy - before.busy,
            total: self.total - before.total,
        }
    }

    fn report(&self, sign_ins: usize) {
        if sign_ins == 0 || self.total == 0 {
            return;
        }
        let ms = |ticks: u64| ticks as f64 * 10.0 / sign_ins as f64;
        let other = self.busy.saturating_sub(self.own + self.server);
        println!(
            "cpu per sign-in: server {:.2} ms, load generator {:.2} ms, everything else (database, kernel) {:.2} ms; machine busy {:.0} %",
            ms(self.server),
            ms(self.own),
            ms(other),
            self.busy as f64 * 100.0 / self.total as f64
        );
    }
}

/// utime + stime of a process.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Busy and total ticks of all cores (`/proc/stat`; idle and iowait are not busy).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4)?;
    Some((total - idle, total))
}
