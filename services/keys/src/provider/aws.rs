//! AWS KMS as the key provider: one symmetric KEK per tenant (`SYMMETRIC_DEFAULT`, single-Region,
//! automatic rotation on), data keys from `GenerateDataKey`, unwrapping with `Decrypt` pinned to
//! the expected key and encryption context.
//!
//! Only the Japanese Regions are accepted (`ap-northeast-1` Tokyo, `ap-northeast-3` Osaka), so key
//! material and every cryptographic operation stay in Japan. An endpoint override (for the moto
//! test server) is a test-only setting and must be allowed explicitly; it also lifts the Region
//! rule, because a test server is not a Region.
//!
//! Timeouts and retries are kept short on purpose: when KMS cannot be reached, callers learn it
//! within `timeout` (at most two attempts inside that budget) and fail closed with
//! [`KeyError::Unavailable`].

use super::{
    CreateKey, EncryptionContext, GeneratedKey, KeyMeta, KeyOrigin, KeyProvider, KeyState, Receipt,
};
use crate::error::KeyError;
use aws_sdk_kms::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{ConfigBag, Intercept, Region};
use aws_sdk_kms::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::{Blob, DateTime as AwsDateTime};
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType, OriginType, Tag};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// The Regions Anshin may use: Tokyo and Osaka.
pub const ALLOWED_REGIONS: [&str; 2] = ["ap-northeast-1", "ap-northeast-3"];

/// Longest error text taken over from KMS into a [`KeyError`].
const MAX_MESSAGE: usize = 300;

/// How to reach KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// `ap-northeast-1` or `ap-northeast-3` (any value with a test endpoint).
    pub region: String,
    /// A different KMS endpoint (the moto test server). Refused unless `allow_test_endpoint`.
    pub endpoint_url: Option<String>,
    /// Allows `endpoint_url`: a test-only setting.
    pub allow_test_endpoint: bool,
    /// Budget for one KMS operation, retries included.
    pub timeout: Duration,
}

impl AwsSettings {
    /// Checks the Region and endpoint rules.
    pub fn validate(&self) -> Result<(), KeyError> {
        if self.endpoint_url.is_some() {
            if !self.allow_test_endpoint {
                return Err(KeyError::Config(
                    "a KMS endpoint override is a test-only setting; it is refused unless the \
                     test endpoint is explicitly allowed"
                        .into(),
                ));
            }
            // A test server is not a Region: any Region name is accepted.
            if self.region.trim().is_empty() {
                return Err(KeyError::Config("the AWS region is empty".into()));
            }
        } else if !ALLOWED_REGIONS.contains(&self.region.as_str()) {
            return Err(KeyError::Config(format!(
                "the AWS region {} is outside Japan; Anshin only uses ap-northeast-1 (Tokyo) or \
                 ap-northeast-3 (Osaka)",
                if self.region.is_empty() {
                    "(empty)"
                } else {
                    &self.region
                }
            )));
        }
        if self.timeout.is_zero() {
            return Err(KeyError::Config(
                "the KMS timeout must be greater than zero".into(),
            ));
        }
        Ok(())
    }

    fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.timeout)
            .read_timeout(self.timeout)
            .operation_attempt_timeout(self.timeout)
            .operation_timeout(self.timeout)
            .build()
    }

    fn retry_config() -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(500))
    }
}

/// Counts the KMS operations a client starts (one per API call; a retry of the same call is not
/// counted again).
#[derive(Debug)]
struct CallCounter(Arc<AtomicU64>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "AnshinKmsCallCounter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// [`KeyProvider`] on AWS KMS.
pub struct AwsKmsProvider {
    client: aws_sdk_kms::Client,
    calls: Arc<AtomicU64>,
    region: String,
    endpoint_url: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("timeout", &self.timeout)
            .field("calls", &self.calls())
            .finish()
    }
}

impl AwsKmsProvider {
    /// Connects with the standard AWS credential chain (environment, profile, SSO, container and
    /// instance roles). The settings are checked before any credentials are looked up.
    pub async fn connect(settings: &AwsSettings) -> Result<Self, KeyError> {
        settings.validate()?;
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .timeout_config(settings.timeout_config())
            .retry_config(AwsSettings::retry_config())
            .load()
            .await;
        Self::from_sdk_config(&conf, settings)
    }

    /// A provider on an existing SDK configuration (credentials, HTTP client). The Region,
    /// endpoint, timeouts and retries always come from `settings`: an endpoint inherited from the
    /// environment (`AWS_ENDPOINT_URL…`) or a profile is dropped, so only an explicitly allowed
    /// test endpoint can redirect KMS traffic.
    pub fn from_sdk_config(
        conf: &aws_config::SdkConfig,
        settings: &AwsSettings,
    ) -> Result<Self, KeyError> {
        settings.validate()?;
        if conf.endpoint_url().is_some() && settings.endpoint_url.is_none() {
            tracing::warn!(
                "an AWS endpoint URL from the environment or profile is ignored for KMS; \
                 Anshin only talks to the regional KMS endpoint"
            );
        }
        let calls = Arc::new(AtomicU64::new(0));
        let mut builder = aws_sdk_kms::config::Builder::from(conf)
            .region(Region::new(settings.region.clone()))
            .timeout_config(settings.timeout_config())
            .retry_config(AwsSettings::retry_config())
            .interceptor(CallCounter(calls.clone()));
        builder.set_endpoint_url(settings.endpoint_url.clone());
        Ok(Self {
            client: aws_sdk_kms::Client::from_conf(builder.build()),
            calls,
            region: settings.region.clone(),
            endpoint_url: settings.endpoint_url.clone(),
            timeout: settings.timeout,
        })
    }

    /// How many KMS API calls this provider has made (one per operation, retries not counted).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The AWS SDK error of a call, as a [`KeyError`] about `key`.
    fn map_err<E>(&self, err: SdkError<E>, key: &str) -> KeyError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_error(err, key, self.timeout)
    }

    async fn rotation_status(&self, key_id: &str) -> Result<Option<bool>, KeyError> {
        match self
            .client
            .get_key_rotation_status()
            .key_id(key_id)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.key_rotation_enabled)),
            Err(e) => match self.map_err(e, key_id) {
                // Not readable (a BYOK policy without the permission), or not applicable to this
                // key (imported material, pending deletion): unknown rather than a failure.
                KeyError::AccessDenied(_) | KeyError::KeyUnusable { .. } => Ok(None),
                KeyError::Provider(m) if m.starts_with("UnsupportedOperationException") => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Best-effort cleanup of a key whose setup failed half-way (no alias or no rotation).
    async fn abandon(&self, key_id: &str) {
        if let Err(e) = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(7)
            .send()
            .await
        {
            tracing::warn!(
                key = key_id,
                error = %self.map_err(e, key_id),
                "could not schedule deletion of a half-created KMS key"
            );
        }
    }
}

fn kms_context(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    if context.is_empty() {
        None
    } else {
        Some(
            context
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

fn to_chrono(t: &AwsDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn map_state(state: Option<&aws_sdk_kms::types::KeyState>) -> KeyState {
    use aws_sdk_kms::types::KeyState as S;
    match state {
        Some(S::Enabled) => KeyState::Enabled,
        Some(S::Disabled) => KeyState::Disabled,
        Some(S::PendingDeletion) => KeyState::PendingDeletion,
        _ => KeyState::Other,
    }
}

fn map_origin(origin: Option<&OriginType>) -> KeyOrigin {
    match origin {
        Some(OriginType::AwsKms) => KeyOrigin::Provider,
        Some(OriginType::External) => KeyOrigin::Imported,
        _ => KeyOrigin::Other,
    }
}

fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX_MESSAGE).collect();
        out.push('…');
        out
    }
}

/// The state a `KMSInvalidStateException` or `DisabledException` message describes.
fn state_from_message(message: Option<&str>) -> &'static str {
    let m = message.unwrap_or_default().to_ascii_lowercase();
    if m.contains("pending deletion") || m.contains("pendingdeletion") {
        "pending deletion"
    } else if m.contains("pending import") || m.contains("pendingimport") {
        "pending import"
    } else if m.contains("disabled") {
        "disabled"
    } else {
        "not in a usable state"
    }
}

/// Maps a KMS error response (its code, message and HTTP status) onto a [`KeyError`] about `key`.
/// The message is KMS's own text, which never contains key material or plaintext.
pub(crate) fn classify(
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    key: &str,
) -> KeyError {
    let code = code.unwrap_or_default();
    // Some responses carry a namespaced code ("com.amazonaws.kms#NotFoundException").
    let code = code.rsplit('#').next().unwrap_or(code);
    let described = || match message {
        Some(m) if !m.trim().is_empty() => shorten(&format!("{code}: {m}")),
        _ if !code.is_empty() => code.to_string(),
        _ => format!("HTTP {}", status.unwrap_or_default()),
    };
    match code {
        "ThrottlingException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "ServiceUnavailable" => KeyError::Unavailable(described()),
        "DisabledException" => KeyError::KeyUnusable {
            key: key.to_string(),
            state: "disabled".into(),
        },
        "KMSInvalidStateException" => KeyError::KeyUnusable {
            key: key.to_string(),
            state: state_from_message(message).into(),
        },
        "NotFoundException" => KeyError::KeyNotFound(key.to_string()),
        "AccessDeniedException" | "AccessDenied" => KeyError::AccessDenied(key.to_string()),
        "InvalidCiphertextException" | "IncorrectKeyException" => KeyError::InvalidCiphertext,
        "AlreadyExistsException" => KeyError::Conflict(described()),
        _ if status.is_some_and(|s| s >= 500) => KeyError::Unavailable(described()),
        _ => KeyError::Provider(described()),
    }
}

/// Maps any AWS SDK error onto a [`KeyError`] about `key`.
pub(crate) fn map_sdk_error<E>(err: SdkError<E>, key: &str, timeout: Duration) -> KeyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => {
            KeyError::Unavailable(format!("KMS did not answer within {timeout:?}"))
        }
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() {
                format!("KMS did not answer within {timeout:?}")
            } else if d.is_io() {
                "KMS cannot be reached (connection failed)".to_string()
            } else {
                let detail = d
                    .as_connector_error()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "dispatch failure".into());
                shorten(&format!("the request to KMS failed: {detail}"))
            };
            KeyError::Unavailable(why)
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            if status >= 500 || status == 429 {
                KeyError::Unavailable(format!("KMS answered HTTP {status}"))
            } else {
                KeyError::Provider(format!("unreadable KMS response (HTTP {status})"))
            }
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            classify(err.code(), err.message(), Some(status), key)
        }
        SdkError::ConstructionFailure(_) => KeyError::Provider(shorten(&format!(
            "the KMS request could not be built: {}",
            aws_sdk_kms::error::DisplayErrorContext(&err)
        ))),
        _ => KeyError::Provider(shorten(&format!(
            "{}",
            aws_sdk_kms::error::DisplayErrorContext(&err)
        ))),
    }
}

#[async_trait::async_trait]
impl KeyProvider for AwsKmsProvider {
    fn name(&self) -> &'static str {
        "aws-kms"
    }

    async fn create_key(&self, req: &CreateKey) -> Result<KeyMeta, KeyError> {
        let alias = req
            .alias
            .strip_prefix("alias/")
            .unwrap_or(&req.alias)
            .to_string();
        if alias.is_empty() {
            return Err(KeyError::Invalid("the key alias is empty".into()));
        }
        let tags = req
            .tags
            .iter()
            .map(|(k, v)| {
                Tag::builder()
                    .tag_key(k)
                    .tag_value(v)
                    .build()
                    .map_err(|e| KeyError::Invalid(format!("key tag {k}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let created = self
            .client
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .multi_region(false)
            .description(&req.description)
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(|e| self.map_err(e, &format!("alias/{alias}")))?;
        let meta = created
            .key_metadata()
            .ok_or_else(|| KeyError::Provider("CreateKey returned no key metadata".into()))?;
        let key_id = meta.arn().unwrap_or(meta.key_id()).to_string();

        if let Err(e) = self
            .client
            .create_alias()
            .alias_name(format!("alias/{alias}"))
            .target_key_id(&key_id)
            .send()
            .await
        {
            let err = self.map_err(e, &key_id);
            self.abandon(&key_id).await;
            return Err(err);
        }
        if let Err(e) = self
            .client
            .enable_key_rotation()
            .key_id(&key_id)
            .send()
            .await
        {
            let err = self.map_err(e, &key_id);
            // The alias would point at a key about to be deleted: remove it so a retry can reuse
            // the name.
            let _ = self
                .client
                .delete_alias()
                .alias_name(format!("alias/{alias}"))
                .send()
                .await;
            self.abandon(&key_id).await;
            return Err(err);
        }
        self.describe(&key_id).await
    }

    async fn describe(&self, key_id: &str) -> Result<KeyMeta, KeyError> {
        let out = self
            .client
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        let m = out
            .key_metadata()
            .ok_or_else(|| KeyError::Provider("DescribeKey returned no key metadata".into()))?;
        let arn = m.arn().unwrap_or(m.key_id()).to_string();
        let rotation_enabled = self.rotation_status(&arn).await?;
        Ok(KeyMeta {
            key_id: arn,
            state: map_state(m.key_state()),
            origin: map_origin(m.origin()),
            multi_region: m.multi_region().unwrap_or(false),
            rotation_enabled,
            deletion_date: m.deletion_date().and_then(to_chrono),
            created_at: m.creation_date().and_then(to_chrono),
            symmetric: m.key_spec() == Some(&KeySpec::SymmetricDefault),
        })
    }

    async fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KeyError> {
        let mut out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(kms_context(context))
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        let plaintext = Zeroizing::new(
            out.plaintext
                .take()
                .ok_or_else(|| KeyError::Provider("GenerateDataKey returned no plaintext".into()))?
                .into_inner(),
        );
        if plaintext.len() != 32 {
            return Err(KeyError::Provider(format!(
                "GenerateDataKey returned a {}-byte key instead of 32 bytes",
                plaintext.len()
            )));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plaintext);
        let wrapped = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| KeyError::Provider("GenerateDataKey returned no ciphertext".into()))?
            .into_inner();
        Ok(GeneratedKey {
            plaintext: key,
            wrapped,
            key_id: out.key_id.take().unwrap_or_else(|| key_id.to_string()),
        })
    }

    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyError> {
        if plaintext.is_empty() || plaintext.len() > 4096 {
            return Err(KeyError::Invalid(format!(
                "KMS wraps 1 to 4096 bytes, not {}",
                plaintext.len()
            )));
        }
        let mut out = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext.to_vec()))
            .set_encryption_context(kms_context(context))
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        Ok(out
            .ciphertext_blob
            .take()
            .ok_or_else(|| KeyError::Provider("Encrypt returned no ciphertext".into()))?
            .into_inner())
    }

    async fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if wrapped.is_empty() {
            return Err(KeyError::InvalidCiphertext);
        }
        let mut out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped.to_vec()))
            .set_encryption_context(kms_context(context))
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        Ok(Zeroizing::new(
            out.plaintext
                .take()
                .ok_or_else(|| KeyError::Provider("Decrypt returned no plaintext".into()))?
                .into_inner(),
        ))
    }

    async fn rotate_material(&self, key_id: &str) -> Result<Receipt, KeyError> {
        let out = self
            .client
            .rotate_key_on_demand()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        Ok(Receipt {
            key_id: key_id.to_string(),
            state: KeyState::Enabled,
            request_id: out.request_id().map(str::to_string),
            deletion_date: None,
        })
    }

    async fn enable(&self, key_id: &str) -> Result<Receipt, KeyError> {
        let out = self
            .client
            .enable_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        Ok(Receipt {
            key_id: key_id.to_string(),
            state: KeyState::Enabled,
            request_id: out.request_id().map(str::to_string),
            deletion_date: None,
        })
    }

    async fn disable(&self, key_id: &str) -> Result<Receipt, KeyError> {
        let out = self
            .client
            .disable_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        Ok(Receipt {
            key_id: key_id.to_string(),
            state: KeyState::Disabled,
            request_id: out.request_id().map(str::to_string),
            deletion_date: None,
        })
    }

    async fn schedule_deletion(
        &self,
        key_id: &str,
        pending_days: u32,
    ) -> Result<Receipt, KeyError> {
        if !(7..=30).contains(&pending_days) {
            return Err(KeyError::Invalid(format!(
                "the KMS deletion waiting period must be 7 to 30 days, not {pending_days}"
            )));
        }
        let out = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(pending_days as i32)
            .send()
            .await
            .map_err(|e| self.map_err(e, key_id))?;
        let state = match out.key_state() {
            None => KeyState::PendingDeletion,
            s => map_state(s),
        };
        Ok(Receipt {
            key_id: key_id.to_string(),
            state,
            request_id: out.request_id().map(str::to_string),
            deletion_date: out.deletion_date().and_then(to_chrono),
        })
    }

    async fn ping(&self) -> Result<(), KeyError> {
        self.client
            .list_keys()
            .limit(1)
            .send()
            .await
            .map_err(|e| self.map_err(e, "(none)"))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn settings(region: &str, endpoint: Option<&str>, allow: bool) -> AwsSettings {
        AwsSettings {
            region: region.into(),
            endpoint_url: endpoint.map(String::from),
            allow_test_endpoint: allow,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn only_japanese_regions_are_accepted() {
        assert!(settings("ap-northeast-1", None, false).validate().is_ok());
        assert!(settings("ap-northeast-3", None, false).validate().is_ok());
        for region in [
            "ap-southeast-1",
            "us-east-1",
            "ap-northeast-2",
            "",
            "AP-NORTHEAST-1",
        ] {
            let err = settings(region, None, false).validate().unwrap_err();
            let KeyError::Config(m) = &err else {
                panic!("{region}: {err:?}")
            };
            assert!(m.contains("outside Japan"), "{m}");
            assert!(m.contains("ap-northeast-1 (Tokyo)"), "{m}");
        }
        // Allowing the test endpoint without using one does not lift the Region rule.
        assert!(matches!(
            settings("us-east-1", None, true).validate(),
            Err(KeyError::Config(_))
        ));
    }

    #[test]
    fn endpoint_override_is_test_only() {
        let err = settings("ap-northeast-1", Some("http://127.0.0.1:5000"), false)
            .validate()
            .unwrap_err();
        let KeyError::Config(m) = &err else {
            panic!("{err:?}")
        };
        assert!(m.contains("test-only"), "{m}");
        // With the test flag, a test server may use any Region name.
        assert!(settings("us-east-1", Some("http://127.0.0.1:5000"), true)
            .validate()
            .is_ok());
    }

    #[test]
    fn zero_timeout_is_refused() {
        let mut s = settings("ap-northeast-1", None, false);
        s.timeout = Duration::ZERO;
        assert!(matches!(s.validate(), Err(KeyError::Config(_))));
    }

    #[tokio::test]
    async fn from_sdk_config_checks_settings_before_anything() {
        let conf = aws_config::SdkConfig::builder().build();
        let err = AwsKmsProvider::from_sdk_config(&conf, &settings("eu-west-1", None, false))
            .unwrap_err();
        assert!(matches!(err, KeyError::Config(_)), "{err:?}");
        let p = AwsKmsProvider::from_sdk_config(&conf, &settings("ap-northeast-3", None, false))
            .unwrap();
        assert_eq!(p.region(), "ap-northeast-3");
        assert_eq!(p.calls(), 0);
        assert_eq!(p.name(), "aws-kms");
    }

    #[test]
    fn errors_map_onto_key_errors() {
        let k = "arn:aws:kms:ap-northeast-1:111122223333:key/x";
        let c =
            |code: &str, msg: Option<&str>, status: u16| classify(Some(code), msg, Some(status), k);
        for code in [
            "ThrottlingException",
            "KMSInternalException",
            "DependencyTimeoutException",
        ] {
            assert!(
                matches!(c(code, None, 400), KeyError::Unavailable(_)),
                "{code}"
            );
        }
        assert!(matches!(c("Whatever", None, 503), KeyError::Unavailable(_)));
        assert!(
            matches!(c("DisabledException", None, 400), KeyError::KeyUnusable { state, .. } if state == "disabled")
        );
        assert!(matches!(
            c("KMSInvalidStateException", Some(&format!("{k} is pending deletion.")), 400),
            KeyError::KeyUnusable { state, .. } if state == "pending deletion"
        ));
        assert!(matches!(
            c("KMSInvalidStateException", Some("odd"), 400),
            KeyError::KeyUnusable { state, .. } if state == "not in a usable state"
        ));
        assert!(matches!(c("NotFoundException", None, 400), KeyError::KeyNotFound(x) if x == k));
        assert!(
            matches!(c("AccessDeniedException", None, 400), KeyError::AccessDenied(x) if x == k)
        );
        assert!(matches!(
            c("com.amazonaws.kms#AccessDeniedException", None, 400),
            KeyError::AccessDenied(_)
        ));
        assert!(matches!(
            c("InvalidCiphertextException", None, 400),
            KeyError::InvalidCiphertext
        ));
        assert!(matches!(
            c("IncorrectKeyException", None, 400),
            KeyError::InvalidCiphertext
        ));
        assert!(matches!(
            c("AlreadyExistsException", None, 400),
            KeyError::Conflict(_)
        ));
        let KeyError::Provider(m) = c("ValidationException", Some(&"x".repeat(1000)), 400) else {
            panic!()
        };
        assert!(m.starts_with("ValidationException: x") && m.chars().count() <= MAX_MESSAGE + 1);
    }
}
