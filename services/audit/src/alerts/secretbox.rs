//! Webhook signing secrets and URLs, which Anshin must read back to deliver, are sealed at rest
//! with the platform's secret box under their own key, `audit-secrets.key` in the data directory.
//! The keys service will replace it with per-tenant KMS keys.

pub use anshin_platform::secretbox::SecretBox;
use std::path::Path;

/// The key file's name under the data directory.
pub const KEY_FILE: &str = "audit-secrets.key";

/// The audit service's secret box, `data_dir/audit-secrets.key`, created (mode 0600) on first use.
pub fn load(data_dir: &Path) -> Result<SecretBox, String> {
    SecretBox::load_or_create(&data_dir.join(KEY_FILE)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_separate_key_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let b = super::load(dir.path()).unwrap();
        assert!(dir.path().join(super::KEY_FILE).exists());
        let sealed = b.seal("whsec", "ch:1");
        assert_eq!(
            super::load(dir.path())
                .unwrap()
                .open(&sealed, "ch:1")
                .unwrap(),
            "whsec"
        );
    }
}
