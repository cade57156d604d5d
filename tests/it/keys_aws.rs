//! The AWS KMS key provider against a real KMS API (moto's server, `tests/src/moto.rs`).
//!
//! moto does not reproduce every KMS behaviour: a blob decrypted with the wrong key id is
//! refused with `AccessDeniedException` (KMS says `IncorrectKeyException`), on-demand rotation
//! only records the rotation (the material stays the same), and a disabled key still decrypts.
//! The tests assert what both do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anshin_keys::provider::aws::{AwsKmsProvider, AwsSettings};
use anshin_keys::provider::{CreateKey, EncryptionContext, KeyOrigin, KeyProvider, KeyState};
use anshin_keys::KeyError;
use anshin_tests::moto::Moto;
use std::time::{Duration, Instant};

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tenant_ctx(tenant: &str) -> EncryptionContext {
    ctx(&[("tenant", tenant), ("purpose", "audit")])
}

async fn create(p: &AwsKmsProvider, alias: &str) -> String {
    let meta = p
        .create_key(&CreateKey {
            alias: alias.into(),
            description: format!("Anshin KEK {alias}"),
            tags: vec![
                (
                    "anshin:tenant".into(),
                    alias.rsplit('/').next().unwrap().into(),
                ),
                ("anshin:managed".into(), "true".into()),
            ],
        })
        .await
        .unwrap();
    meta.key_id
}

#[tokio::test]
async fn create_key_sets_alias_rotation_and_tags() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let meta = p
        .create_key(&CreateKey {
            alias: "anshin/tenant/aoba".into(),
            description: "Anshin KEK for あおば診療所".into(),
            tags: vec![("anshin:tenant".into(), "aoba".into())],
        })
        .await
        .unwrap();
    assert!(
        meta.key_id.starts_with("arn:aws:kms:ap-northeast-1:"),
        "{}",
        meta.key_id
    );
    assert_eq!(meta.state, KeyState::Enabled);
    assert_eq!(meta.origin, KeyOrigin::Provider);
    assert!(!meta.multi_region);
    assert!(meta.symmetric);
    assert_eq!(meta.rotation_enabled, Some(true));
    assert!(meta.deletion_date.is_none());
    let created = meta.created_at.expect("creation date");
    assert!((chrono::Utc::now() - created).num_minutes().abs() < 5);

    // The alias resolves to the same key.
    let by_alias = p.describe("alias/anshin/tenant/aoba").await.unwrap();
    assert_eq!(by_alias.key_id, meta.key_id);

    let kms = moto.kms_client();
    let aliases = kms
        .list_aliases()
        .key_id(&meta.key_id)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = aliases
        .aliases()
        .iter()
        .filter_map(|a| a.alias_name())
        .collect();
    assert_eq!(names, ["alias/anshin/tenant/aoba"]);
    let tags = kms
        .list_resource_tags()
        .key_id(&meta.key_id)
        .send()
        .await
        .unwrap();
    let tags: Vec<_> = tags
        .tags()
        .iter()
        .map(|t| (t.tag_key(), t.tag_value()))
        .collect();
    assert_eq!(tags, [("anshin:tenant", "aoba")]);
    let desc = kms
        .describe_key()
        .key_id(&meta.key_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        desc.key_metadata().unwrap().description(),
        Some("Anshin KEK for あおば診療所")
    );

    // The same alias again is a conflict, not a second key under the name.
    let err = p
        .create_key(&CreateKey {
            alias: "anshin/tenant/aoba".into(),
            description: String::new(),
            tags: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn data_key_round_trip() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let key = create(&p, "anshin/tenant/dk").await;
    let c = tenant_ctx("dk");
    let g = p.generate_data_key(&key, &c).await.unwrap();
    assert_eq!(g.key_id, key, "the ARN, not the alias or bare key id");
    assert_ne!(&g.wrapped[..], &g.plaintext[..]);
    assert!(format!("{g:?}").contains("[redacted]"));
    let back = p.unwrap(&key, &g.wrapped, &c).await.unwrap();
    assert_eq!(&back[..], &g.plaintext[..]);

    // Through the alias too.
    let g2 = p
        .generate_data_key("alias/anshin/tenant/dk", &c)
        .await
        .unwrap();
    assert_eq!(g2.key_id, key);
    assert_ne!(g2.plaintext, g.plaintext);
    let back = p.unwrap(&key, &g2.wrapped, &c).await.unwrap();
    assert_eq!(&back[..], &g2.plaintext[..]);

    // An empty context works as well (and must be empty on unwrap too).
    let g3 = p
        .generate_data_key(&key, &EncryptionContext::new())
        .await
        .unwrap();
    let back = p
        .unwrap(&key, &g3.wrapped, &EncryptionContext::new())
        .await
        .unwrap();
    assert_eq!(&back[..], &g3.plaintext[..]);
    let err = p.unwrap(&key, &g3.wrapped, &c).await.unwrap_err();
    assert!(matches!(err, KeyError::InvalidCiphertext), "{err:?}");
}

#[tokio::test]
async fn wrong_context_is_refused() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let key = create(&p, "anshin/tenant/ctx").await;
    let g = p.generate_data_key(&key, &tenant_ctx("ctx")).await.unwrap();
    for wrong in [
        tenant_ctx("other"),
        ctx(&[("tenant", "ctx"), ("purpose", "records")]),
        ctx(&[("tenant", "ctx")]),
        EncryptionContext::new(),
    ] {
        let err = p.unwrap(&key, &g.wrapped, &wrong).await.unwrap_err();
        assert!(
            matches!(err, KeyError::InvalidCiphertext),
            "{wrong:?}: {err:?}"
        );
    }
    // An altered blob is refused the same way.
    let mut altered = g.wrapped.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let err = p
        .unwrap(&key, &altered, &tenant_ctx("ctx"))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::InvalidCiphertext), "{err:?}");
    let err = p.unwrap(&key, &[], &tenant_ctx("ctx")).await.unwrap_err();
    assert!(matches!(err, KeyError::InvalidCiphertext), "{err:?}");
}

#[tokio::test]
async fn blob_of_another_key_is_refused() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let a = create(&p, "anshin/tenant/a").await;
    let b = create(&p, "anshin/tenant/b").await;
    let c = tenant_ctx("a");
    let g = p.generate_data_key(&a, &c).await.unwrap();
    let err = p.unwrap(&b, &g.wrapped, &c).await.unwrap_err();
    // KMS: IncorrectKeyException → InvalidCiphertext; moto: AccessDeniedException.
    assert!(
        matches!(err, KeyError::InvalidCiphertext | KeyError::AccessDenied(_)),
        "{err:?}"
    );
    let err = p
        .unwrap("alias/anshin/tenant/b", &g.wrapped, &c)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KeyError::InvalidCiphertext | KeyError::AccessDenied(_)),
        "{err:?}"
    );
    // The right key still works.
    assert_eq!(
        &p.unwrap(&a, &g.wrapped, &c).await.unwrap()[..],
        &g.plaintext[..]
    );
}

#[tokio::test]
async fn wrap_and_unwrap_existing_material() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let old = create(&p, "anshin/tenant/old").await;
    let new = create(&p, "anshin/tenant/new").await;
    let c = tenant_ctx("rewrap");
    let g = p.generate_data_key(&old, &c).await.unwrap();
    // Re-wrap the data key under the new KEK.
    let rewrapped = p.wrap(&new, &g.plaintext[..], &c).await.unwrap();
    assert_ne!(rewrapped, g.wrapped);
    let back = p.unwrap(&new, &rewrapped, &c).await.unwrap();
    assert_eq!(&back[..], &g.plaintext[..]);
    let err = p
        .unwrap(&new, &rewrapped, &tenant_ctx("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::InvalidCiphertext), "{err:?}");

    // Sizes KMS cannot wrap are refused before any call.
    let before = p.calls();
    let err = p.wrap(&new, &[], &c).await.unwrap_err();
    assert!(matches!(err, KeyError::Invalid(_)), "{err:?}");
    let err = p.wrap(&new, &[0u8; 4097], &c).await.unwrap_err();
    assert!(matches!(err, KeyError::Invalid(_)), "{err:?}");
    assert_eq!(p.calls(), before);
}

#[tokio::test]
async fn rotation_keeps_old_blobs_readable() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let key = create(&p, "anshin/tenant/rot").await;
    let c = tenant_ctx("rot");
    let before = p.generate_data_key(&key, &c).await.unwrap();
    let receipt = p.rotate_material(&key).await.unwrap();
    assert_eq!(receipt.key_id, key);
    assert_eq!(receipt.state, KeyState::Enabled);
    assert!(receipt.request_id.is_some_and(|r| !r.is_empty()));
    let kms = moto.kms_client();
    let rotations = kms.list_key_rotations().key_id(&key).send().await.unwrap();
    assert_eq!(rotations.rotations().len(), 1, "one on-demand rotation");

    let back = p.unwrap(&key, &before.wrapped, &c).await.unwrap();
    assert_eq!(&back[..], &before.plaintext[..]);
    let after = p.generate_data_key(&key, &c).await.unwrap();
    assert_eq!(
        &p.unwrap(&key, &after.wrapped, &c).await.unwrap()[..],
        &after.plaintext[..]
    );
    assert_eq!(p.describe(&key).await.unwrap().rotation_enabled, Some(true));
}

#[tokio::test]
async fn disable_and_enable() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let key = create(&p, "anshin/tenant/dis").await;
    let r = p.disable(&key).await.unwrap();
    assert_eq!(
        (r.key_id.as_str(), r.state),
        (key.as_str(), KeyState::Disabled)
    );
    assert!(r.request_id.is_some());
    assert_eq!(p.describe(&key).await.unwrap().state, KeyState::Disabled);
    // (moto still decrypts with a disabled key, so that refusal is not asserted here; the
    // mapping of DisabledException is covered by the unit tests of the provider.)
    let r = p.enable(&key).await.unwrap();
    assert_eq!(r.state, KeyState::Enabled);
    assert_eq!(p.describe(&key).await.unwrap().state, KeyState::Enabled);
    p.generate_data_key(&key, &tenant_ctx("dis")).await.unwrap();
}

#[tokio::test]
async fn schedule_deletion() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let key = create(&p, "anshin/tenant/del").await;

    // Outside 7..=30 days: refused without asking KMS.
    let calls = p.calls();
    for days in [0, 3, 6, 31] {
        let err = p.schedule_deletion(&key, days).await.unwrap_err();
        assert!(matches!(err, KeyError::Invalid(_)), "{days}: {err:?}");
    }
    assert_eq!(p.calls(), calls, "no KMS call for an invalid window");
    assert_eq!(p.describe(&key).await.unwrap().state, KeyState::Enabled);

    let r = p.schedule_deletion(&key, 7).await.unwrap();
    assert_eq!(r.key_id, key);
    assert_eq!(r.state, KeyState::PendingDeletion);
    assert!(r.request_id.as_deref().is_some_and(|id| !id.is_empty()));
    let when = r.deletion_date.expect("deletion date");
    let ahead = when - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::days(7) - chrono::Duration::minutes(5)
            && ahead <= chrono::Duration::days(7) + chrono::Duration::minutes(5),
        "deletion {ahead:?} ahead"
    );
    let meta = p.describe(&key).await.unwrap();
    assert_eq!(meta.state, KeyState::PendingDeletion);
    assert!(meta
        .deletion_date
        .is_some_and(|d| (d - when).num_seconds().abs() <= 1));
}

#[tokio::test]
async fn unknown_key_is_not_found() {
    let moto = Moto::start();
    let p = moto.provider().await;
    let missing =
        "arn:aws:kms:ap-northeast-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let err = p.describe(missing).await.unwrap_err();
    assert!(
        matches!(&err, KeyError::KeyNotFound(k) if k == missing),
        "{err:?}"
    );
    let err = p
        .generate_data_key(missing, &tenant_ctx("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::KeyNotFound(_)), "{err:?}");
    p.ping().await.unwrap();
}

#[tokio::test]
async fn region_outside_japan_is_refused() {
    let moto = Moto::start();
    let conf = moto.sdk_config();
    for region in ["ap-southeast-1", "us-east-1", "ap-northeast-2"] {
        let settings = AwsSettings {
            region: region.into(),
            endpoint_url: None,
            allow_test_endpoint: false,
            timeout: Duration::from_secs(2),
        };
        let err = AwsKmsProvider::from_sdk_config(&conf, &settings).unwrap_err();
        let KeyError::Config(m) = &err else {
            panic!("{region}: {err:?}")
        };
        assert!(m.contains(region) && m.contains("outside Japan"), "{m}");
        // `connect` refuses before looking for credentials.
        let err = AwsKmsProvider::connect(&settings).await.unwrap_err();
        assert!(matches!(err, KeyError::Config(_)), "{err:?}");
    }
    for region in ["ap-northeast-1", "ap-northeast-3"] {
        let settings = AwsSettings {
            region: region.into(),
            endpoint_url: None,
            allow_test_endpoint: false,
            timeout: Duration::from_secs(2),
        };
        let p = AwsKmsProvider::from_sdk_config(&conf, &settings).unwrap();
        assert_eq!(p.region(), region);
    }
}

#[tokio::test]
async fn endpoint_needs_the_test_flag() {
    let moto = Moto::start();
    let mut settings = moto.settings();
    settings.allow_test_endpoint = false;
    let err = AwsKmsProvider::from_sdk_config(&moto.sdk_config(), &settings).unwrap_err();
    let KeyError::Config(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.contains("test-only"), "{m}");
    let err = AwsKmsProvider::connect(&settings).await.unwrap_err();
    assert!(matches!(err, KeyError::Config(_)), "{err:?}");

    // With the flag, a test server may claim any Region.
    settings.allow_test_endpoint = true;
    settings.region = "us-east-1".into();
    let p = AwsKmsProvider::from_sdk_config(&moto.sdk_config(), &settings).unwrap();
    p.ping().await.unwrap();
    // `connect` builds a provider on the standard credential chain without calling anything.
    let p = AwsKmsProvider::connect(&settings).await.unwrap();
    assert_eq!((p.region(), p.calls()), ("us-east-1", 0));
}

#[tokio::test]
async fn outage_is_reported_quickly_and_recovers() {
    let mut moto = Moto::start();
    let p = moto.provider().await;
    let key = create(&p, "anshin/tenant/outage").await;
    let c = tenant_ctx("outage");
    let g = p.generate_data_key(&key, &c).await.unwrap();

    // A hung endpoint: connections are accepted, nothing answers.
    moto.pause();
    let started = Instant::now();
    let err = p.generate_data_key(&key, &c).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, KeyError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let err = p.unwrap(&key, &g.wrapped, &c).await.unwrap_err();
    assert!(matches!(err, KeyError::Unavailable(_)), "{err:?}");
    let err = p.ping().await.unwrap_err();
    assert!(matches!(err, KeyError::Unavailable(_)), "{err:?}");

    // Back: the key and its blobs are still there.
    moto.resume();
    let back = p.unwrap(&key, &g.wrapped, &c).await.unwrap();
    assert_eq!(&back[..], &g.plaintext[..]);
    p.generate_data_key(&key, &c).await.unwrap();
    p.ping().await.unwrap();

    // Down: connection refused, reported as unavailable too.
    moto.stop();
    let started = Instant::now();
    let err = p.generate_data_key(&key, &c).await.unwrap_err();
    assert!(matches!(err, KeyError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A restarted moto has lost its keys (it keeps them only in memory).
    moto.restart();
    p.ping().await.unwrap();
    let err = p.describe(&key).await.unwrap_err();
    assert!(matches!(err, KeyError::KeyNotFound(_)), "{err:?}");
}

#[tokio::test]
async fn calls_are_counted() {
    let moto = Moto::start();
    let p = moto.provider().await;
    assert_eq!(p.calls(), 0);
    p.ping().await.unwrap();
    assert_eq!(p.calls(), 1);
    let key = create(&p, "anshin/tenant/count").await;
    // CreateKey, CreateAlias, EnableKeyRotation, DescribeKey, GetKeyRotationStatus.
    assert_eq!(p.calls(), 6);
    let c = tenant_ctx("count");
    let g = p.generate_data_key(&key, &c).await.unwrap();
    p.unwrap(&key, &g.wrapped, &c).await.unwrap();
    assert_eq!(p.calls(), 8);
    // Failed calls count as well.
    p.unwrap(&key, &g.wrapped, &tenant_ctx("x"))
        .await
        .unwrap_err();
    assert_eq!(p.calls(), 9);
    // Another provider has its own counter.
    let q = moto.provider().await;
    q.ping().await.unwrap();
    assert_eq!((p.calls(), q.calls()), (9, 1));
}
