//! SNTP client (RFC 4330; RFC 5905 client mode, one exchange per sample) and the task that keeps
//! [`crate::clock`] up to date.
//!
//! One exchange gives four timestamps: T1 (our transmit, host clock), T2 (server receive), T3
//! (server transmit), T4 (our receive, host clock). Then
//!
//! ```text
//! offset = ((T2 - T1) + (T3 - T4)) / 2     how far the server's clock is ahead of ours
//! delay  =  (T4 - T1) - (T3 - T2)          round trip, minus the server's processing time
//! ```
//!
//! A reply is accepted only if it is a server-mode packet whose originate timestamp echoes the
//! transmit timestamp we sent (so a stray or spoofed datagram is ignored), with a non-zero
//! transmit timestamp, a stratum in 1..=15 and a leap indicator other than 3 (alarm). Stratum 0
//! is a kiss-o'-death and is reported with its code.

use super::TimeError;
use crate::event::ClockStamp;
use anshin_platform::config::AuditConfig;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_DELTA: i64 = 2_208_988_800;
const NANOS: i128 = 1_000_000_000;
/// How long to wait for one answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Samples per check; the one with the smallest round trip is kept (the least disturbed by
/// queueing), as NTP's clock filter does.
pub const SAMPLES: usize = 3;
/// Pause between samples: public servers (ntpd `limited`, chrony `ratelimit`) drop or kiss
/// clients that poll faster than every 2 s.
pub const SAMPLE_SPACING: Duration = Duration::from_secs(2);
/// An offset beyond this is logged as a warning: event times are then visibly off.
const WARN_OFFSET_MS: i64 = 1_000;

/// The outcome of one SNTP exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The server as configured (`host`, `host:port`, `[v6]:port`).
    pub server: String,
    /// The address that answered.
    pub address: SocketAddr,
    /// Server clock minus host clock, in nanoseconds: positive when the host clock is behind.
    pub offset_ns: i64,
    /// Round-trip delay, in nanoseconds.
    pub delay_ns: i64,
    pub stratum: u8,
    /// The server's reference identifier: four ASCII characters at stratum 1 (`GPS`, `NICT`),
    /// an IPv4 address or hash above.
    pub reference_id: [u8; 4],
}

impl Measurement {
    /// The offset rounded to milliseconds.
    pub fn offset_ms(&self) -> i64 {
        round_div(self.offset_ns, 1_000_000)
    }

    pub fn delay_ms(&self) -> i64 {
        round_div(self.delay_ns, 1_000_000)
    }

    /// The clock stamp events get from this measurement.
    pub fn stamp(&self) -> ClockStamp {
        ClockStamp {
            source: format!("ntp:{}", self.server),
            offset_ms: Some(self.offset_ms()),
        }
    }
}

fn round_div(n: i64, d: i64) -> i64 {
    let half = d / 2;
    if n >= 0 {
        (n + half) / d
    } else {
        (n - half) / d
    }
}

/// One SNTP exchange with `server` (`host`, `host:port`, `ip`, `[ipv6]:port`; port 123 by
/// default), waiting at most `timeout` for the name lookup and at most `timeout` for the answer.
pub async fn measure(server: &str, timeout: Duration) -> Result<Measurement, TimeError> {
    let address = resolve(server, timeout).await?;
    let unreachable = |e: std::io::Error| TimeError::Unreachable {
        server: server.to_string(),
        reason: e.to_string(),
    };
    let local: SocketAddr = match address {
        SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(unreachable)?;
    // A connected socket only receives datagrams from the server, and reports ICMP "port
    // unreachable" as an error instead of waiting out the timeout.
    socket.connect(address).await.map_err(unreachable)?;

    let t1 = now_unix_nanos();
    let t1_wire = to_ntp(t1);
    let mut request = [0u8; 48];
    // LI 0 (no warning), VN 4, mode 3 (client).
    request[0] = (4 << 3) | 3;
    request[40..48].copy_from_slice(&t1_wire.to_be_bytes());
    socket.send(&request).await.map_err(unreachable)?;

    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
        let n = match received {
            Err(_) => {
                return Err(TimeError::Timeout {
                    server: server.to_string(),
                    timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
                })
            }
            Ok(Err(e)) => return Err(unreachable(e)),
            Ok(Ok(n)) => n,
        };
        let t4 = now_unix_nanos();
        let packet = &buf[..n];
        // Not an answer to this request (a late reply to an earlier one, or noise): keep waiting.
        if n < 48 || read_u64(packet, 24) != t1_wire {
            continue;
        }
        return parse_reply(server, address, packet, t1, t4);
    }
}

/// `samples` exchanges, [`SAMPLE_SPACING`] apart; returns the one with the smallest round trip,
/// or the last error if none succeeded.
pub async fn measure_best(
    server: &str,
    timeout: Duration,
    samples: usize,
) -> Result<Measurement, TimeError> {
    let mut best: Option<Measurement> = None;
    let mut last_err = None;
    for i in 0..samples.max(1) {
        if i > 0 {
            tokio::time::sleep(SAMPLE_SPACING).await;
        }
        match measure(server, timeout).await {
            Ok(m) => {
                if best.as_ref().is_none_or(|b| m.delay_ns < b.delay_ns) {
                    best = Some(m);
                }
            }
            // A kiss-o'-death means "stop asking": do not send the remaining samples.
            Err(e @ TimeError::KissOfDeath { .. }) => return Err(e),
            Err(e) => last_err = Some(e),
        }
    }
    match (best, last_err) {
        (Some(m), _) => Ok(m),
        (None, Some(e)) => Err(e),
        (None, None) => Err(TimeError::Address(server.to_string())),
    }
}

/// Measures the host clock against `server` and publishes the result with
/// [`crate::clock::set`]; returns the stamp set. With no server, or when it does not answer,
/// the stamp is `system` with an unknown offset (and a warning is logged for the latter).
pub async fn check_clock(server: Option<&str>) -> ClockStamp {
    let stamp = match server.map(str::trim).filter(|s| !s.is_empty()) {
        None => ClockStamp::default(),
        Some(server) => match measure_best(server, QUERY_TIMEOUT, SAMPLES).await {
            Ok(m) => {
                let offset = m.offset_ms();
                if offset.abs() > WARN_OFFSET_MS {
                    tracing::warn!(
                        server,
                        offset_ms = offset,
                        "the host clock is more than {WARN_OFFSET_MS} ms off the NTP server; audit event times carry this offset"
                    );
                } else {
                    tracing::debug!(
                        server,
                        offset_ms = offset,
                        delay_ms = m.delay_ms(),
                        stratum = m.stratum,
                        "clock offset measured"
                    );
                }
                m.stamp()
            }
            Err(e) => {
                tracing::warn!(
                    server,
                    error = %e,
                    "the NTP server did not answer; audit events record the system clock with an unknown offset"
                );
                ClockStamp::default()
            }
        },
    };
    crate::clock::set(stamp.clone());
    stamp
}

/// Keeps [`crate::clock`] current until `shutdown` turns true: measures at once, then every
/// `audit.ntp_check_interval_secs` (at least 1 s). Without `audit.ntp_server` it sets the
/// "system, offset unknown" stamp once and waits for shutdown.
pub async fn run_clock_monitor(
    config: AuditConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let server = config
        .ntp_server
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let interval = Duration::from_secs(config.ntp_check_interval_secs.max(1));
    loop {
        tokio::select! {
            _ = check_clock(server.as_deref()) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        if server.is_none() {
            // Nothing to measure: just wait for shutdown.
            while shutdown.changed().await.is_ok() {
                if *shutdown.borrow() {
                    return;
                }
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

async fn resolve(server: &str, timeout: Duration) -> Result<SocketAddr, TimeError> {
    let bad = || TimeError::Address(server.to_string());
    let s = server.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok((ip, 123).into());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (s, 123),
    };
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| TimeError::Timeout {
            server: server.to_string(),
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        })?
        .map_err(|e| TimeError::Unreachable {
            server: server.to_string(),
            reason: format!("name lookup failed: {e}"),
        })?;
    let addrs: Vec<SocketAddr> = found.collect();
    // Prefer IPv4: hosts without IPv6 routes are common, and the answer is the same clock.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| TimeError::Unreachable {
            server: server.to_string(),
            reason: "the name has no address".into(),
        })
}

fn parse_reply(
    server: &str,
    address: SocketAddr,
    p: &[u8],
    t1: i128,
    t4: i128,
) -> Result<Measurement, TimeError> {
    let bad = |reason: &str| TimeError::BadReply {
        server: server.to_string(),
        reason: reason.to_string(),
    };
    let leap = p[0] >> 6;
    let version = (p[0] >> 3) & 0x7;
    let mode = p[0] & 0x7;
    let stratum = p[1];
    let mut reference_id = [0u8; 4];
    reference_id.copy_from_slice(&p[12..16]);
    if !(1..=4).contains(&version) {
        return Err(bad(&format!("unsupported NTP version {version}")));
    }
    if mode != 4 {
        return Err(bad(&format!("mode {mode} is not a server answer")));
    }
    if stratum == 0 {
        let code = String::from_utf8_lossy(&reference_id)
            .trim_end_matches('\0')
            .to_string();
        return Err(TimeError::KissOfDeath {
            server: server.to_string(),
            code,
        });
    }
    if leap == 3 || stratum >= 16 {
        return Err(TimeError::Unsynchronized {
            server: server.to_string(),
        });
    }
    let t2_wire = read_u64(p, 32);
    let t3_wire = read_u64(p, 40);
    if t3_wire == 0 || t2_wire == 0 {
        return Err(bad("zero receive or transmit timestamp"));
    }
    let t2 = from_ntp(t2_wire, t1);
    let t3 = from_ntp(t3_wire, t4);
    let offset = ((t2 - t1) + (t3 - t4)) / 2;
    let delay = ((t4 - t1) - (t3 - t2)).max(0);
    let to_i64 = |v: i128| i64::try_from(v).map_err(|_| bad("timestamps out of range"));
    Ok(Measurement {
        server: server.to_string(),
        address,
        offset_ns: to_i64(offset)?,
        delay_ns: to_i64(delay)?,
        stratum,
        reference_id,
    })
}

fn read_u64(p: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The host clock as nanoseconds since the Unix epoch (negative before it).
fn now_unix_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Unix nanoseconds to a 64-bit NTP timestamp (era folded away, as on the wire).
fn to_ntp(unix_nanos: i128) -> u64 {
    let secs = unix_nanos.div_euclid(NANOS);
    let frac_nanos = unix_nanos.rem_euclid(NANOS);
    let ntp_secs = (secs + NTP_UNIX_DELTA as i128).rem_euclid(1 << 32) as u64;
    let frac = ((frac_nanos << 32) / NANOS) as u64;
    (ntp_secs << 32) | frac
}

/// A 64-bit NTP timestamp to Unix nanoseconds, in the 136-year era closest to `pivot` (so the
/// 2036 wrap of the seconds field is handled).
fn from_ntp(wire: u64, pivot_unix_nanos: i128) -> i128 {
    let secs = (wire >> 32) as i128;
    let frac = (wire & 0xffff_ffff) as i128;
    let era = 1i128 << 32;
    let mut unix_secs = secs - NTP_UNIX_DELTA as i128;
    let pivot_secs = pivot_unix_nanos.div_euclid(NANOS);
    while unix_secs - pivot_secs > era / 2 {
        unix_secs -= era;
    }
    while pivot_secs - unix_secs > era / 2 {
        unix_secs += era;
    }
    unix_secs * NANOS + ((frac * NANOS + (1 << 31)) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_timestamps_round_trip_across_eras() {
        for unix in [
            0i128,
            1_700_000_000 * NANOS + 123_456_789,
            // After the 2036 wrap of the NTP seconds field.
            2_200_000_000 * NANOS + 5,
        ] {
            let back = from_ntp(to_ntp(unix), unix + 1_000 * NANOS);
            assert!((back - unix).abs() <= 1, "{unix} -> {back}");
        }
    }

    #[test]
    fn offset_and_delay_follow_rfc_5905() {
        let t1 = 1_700_000_000 * NANOS;
        // Server 1.5 s ahead; 20 ms each way; 1 ms processing.
        let t2 = t1 + 1_500 * 1_000_000 + 20 * 1_000_000;
        let t3 = t2 + 1_000_000;
        let t4 = t1 + 41 * 1_000_000;
        let mut p = [0u8; 48];
        p[0] = (4 << 3) | 4;
        p[1] = 1;
        p[24..32].copy_from_slice(&to_ntp(t1).to_be_bytes());
        p[32..40].copy_from_slice(&to_ntp(t2).to_be_bytes());
        p[40..48].copy_from_slice(&to_ntp(t3).to_be_bytes());
        let addr: SocketAddr = "127.0.0.1:123".parse().unwrap();
        let m = parse_reply("x", addr, &p, t1, t4).unwrap();
        assert_eq!(m.offset_ms(), 1_500);
        assert_eq!(m.delay_ms(), 40);
        p[1] = 0;
        p[12..16].copy_from_slice(b"RATE");
        assert!(matches!(
            parse_reply("x", addr, &p, t1, t4),
            Err(TimeError::KissOfDeath { code, .. }) if code == "RATE"
        ));
        p[1] = 2;
        p[0] = (3 << 6) | (4 << 3) | 4;
        assert!(matches!(
            parse_reply("x", addr, &p, t1, t4),
            Err(TimeError::Unsynchronized { .. })
        ));
    }

    #[test]
    fn rounding_is_symmetric() {
        assert_eq!(round_div(1_499_999, 1_000_000), 1);
        assert_eq!(round_div(1_500_000, 1_000_000), 2);
        assert_eq!(round_div(-1_500_000, 1_000_000), -2);
        assert_eq!(round_div(-1_400_000, 1_000_000), -1);
    }

    #[tokio::test]
    async fn addresses_parse() {
        let t = Duration::from_secs(1);
        assert_eq!(
            resolve("127.0.0.1", t).await.unwrap(),
            "127.0.0.1:123".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]:1234", t).await.unwrap(),
            "[::1]:1234".parse().unwrap()
        );
        assert_eq!(
            resolve("::1", t).await.unwrap(),
            "[::1]:123".parse().unwrap()
        );
        assert_eq!(
            resolve("localhost:9", t).await.unwrap().port(),
            9,
            "names resolve"
        );
        assert!(matches!(
            resolve("host:notaport", t).await,
            Err(TimeError::Address(_))
        ));
        assert!(matches!(resolve("", t).await, Err(TimeError::Address(_))));
    }
}
