//! Passwords, only ever as the second factor beside a security key (guideline 14 ⑤⑥).
//!
//! argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) in a blocking thread so hashing never
//! stalls the async workers; a minimum length and a shipped list of common passwords instead of
//! composition rules or forced periodic changes (NIST SP 800-63B); the last N hashes kept to
//! refuse reuse; consecutive failures lock the password with a doubling back-off.

use crate::error::IdentityError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashSet;
use std::sync::OnceLock;
use zeroize::Zeroizing;

const MAX_LENGTH: usize = 128;
const COMMON: &str = include_str!("../data/common-passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().map(str::trim).collect())
}

fn argon2() -> Result<Argon2<'static>, IdentityError> {
    let params = Params::new(19 * 1024, 2, 1, None)
        .map_err(|e| IdentityError::Setup(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Why a password was refused; the message is shown to the person choosing it.
pub fn check_policy(
    password: &str,
    min_length: usize,
    email: &str,
    display_name: &str,
) -> Result<(), IdentityError> {
    let n = password.chars().count();
    if n < min_length {
        return Err(IdentityError::Invalid(format!(
            "the password must have at least {min_length} characters"
        )));
    }
    if n > MAX_LENGTH {
        return Err(IdentityError::Invalid(format!(
            "the password may have at most {MAX_LENGTH} characters"
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(IdentityError::Invalid(
            "the password may not contain control characters".into(),
        ));
    }
    let lower = password.to_lowercase();
    if common().contains(lower.as_str()) {
        return Err(IdentityError::Invalid(
            "this password is on the list of commonly used passwords; choose another".into(),
        ));
    }
    let distinct: HashSet<char> = lower.chars().collect();
    if distinct.len() < 4 {
        return Err(IdentityError::Invalid(
            "the password repeats too few different characters; choose another".into(),
        ));
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    let name: String = display_name
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    if (local.chars().count() >= 3 && compact.contains(&local))
        || (name.chars().count() >= 3 && compact.contains(&name))
    {
        return Err(IdentityError::Invalid(
            "the password may not contain your name or email address".into(),
        ));
    }
    Ok(())
}

/// An argon2id PHC string with a fresh salt.
pub async fn hash(password: &str) -> Result<String, IdentityError> {
    let password = zeroizing(password);
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()?
            .hash_password(password.as_slice(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| IdentityError::Setup(format!("argon2: {e}")))
    })
    .await
    .map_err(|e| IdentityError::Setup(format!("password hashing stopped: {e}")))?
}

/// Whether `password` matches the PHC string `phc`. Unreadable stored hashes count as no match.
pub async fn verify(password: &str, phc: &str) -> Result<bool, IdentityError> {
    let password = zeroizing(password);
    let phc = phc.to_string();
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return Ok(false);
        };
        Ok(argon2()?
            .verify_password(password.as_slice(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| IdentityError::Setup(format!("password check stopped: {e}")))?
}

/// Burns the same time as a real verification, for addresses that have no password, so the
/// answer time does not tell whether an account exists.
pub async fn verify_dummy(password: &str) -> Result<(), IdentityError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = match DUMMY.get() {
        Some(p) => p.clone(),
        None => {
            let h = hash("anshin-dummy-password-for-timing").await?;
            DUMMY.get_or_init(|| h).clone()
        }
    };
    verify(password, &phc).await.map(|_| ())
}

/// The lock that follows the `failures`-th consecutive failure: none below the threshold, then
/// one minute doubling per further failure, at most an hour.
pub fn lock_after(failures: u32, threshold: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if threshold == 0 || failures < threshold {
        return None;
    }
    let exp = (failures - threshold).min(6);
    let minutes = (1i64 << exp).min(60);
    Some(now + Duration::minutes(minutes))
}

/// A copy of the password that is wiped when dropped (it crosses into a blocking thread).
fn zeroizing(p: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(p.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_common_and_personal_passwords() {
        let ok = |p: &str| check_policy(p, 12, "hanako.sato@sakura.example.jp", "佐藤 花子");
        assert!(ok("correct horse battery staple").is_ok());
        assert!(
            ok("桜の花が咲く春の朝に").is_err(),
            "10 characters is too short"
        );
        assert!(ok("桜の花が咲く春の朝に散歩").is_ok());
        assert!(ok("short").is_err());
        assert!(ok("1qaz2wsx3edc").is_err(), "common");
        assert!(
            ok("aaaaaaaaaaaaaaaa").is_err(),
            "too few distinct characters"
        );
        assert!(ok("my-hanako.sato-2026").is_err(), "contains the email");
        assert!(
            ok("佐藤花子のパスワード です").is_err(),
            "contains the name"
        );
        assert!(ok(&"x1y2".repeat(40)).is_err(), "too long");
        assert!(ok("tab\tinside password").is_err());
    }

    #[test]
    fn the_shipped_list_is_loaded() {
        assert!(common().len() > 19_000);
        assert!(common().contains("qwerty"));
        // Long common ones are refused too, case-insensitively.
        assert!(check_policy("Password1234", 12, "a@b.jp", "x").is_err());
    }

    #[test]
    fn lockout_backs_off_and_caps() {
        let now = Utc::now();
        assert_eq!(lock_after(4, 5, now), None);
        assert_eq!(lock_after(5, 5, now), Some(now + Duration::minutes(1)));
        assert_eq!(lock_after(6, 5, now), Some(now + Duration::minutes(2)));
        assert_eq!(lock_after(8, 5, now), Some(now + Duration::minutes(8)));
        assert_eq!(lock_after(50, 5, now), Some(now + Duration::minutes(60)));
        assert_eq!(lock_after(50, 0, now), None, "0 disables the lock");
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse battery staple").await.unwrap();
        let b = hash("correct horse battery staple").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "fresh salt each time");
        assert!(verify("correct horse battery staple", &a).await.unwrap());
        assert!(!verify("correct horse battery stable", &a).await.unwrap());
        assert!(!verify("anything", "not a phc string").await.unwrap());
        verify_dummy("x").await.unwrap();
    }
}
