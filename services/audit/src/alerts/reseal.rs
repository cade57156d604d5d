//! Re-encryption of notification channels sealed before the key service: webhook secrets,
//! URLs and mail recipient lists still under the interim secret box (`audit-secrets.key`), and
//! recipient lists stored readable before they were sealed at all, are sealed again under the
//! tenant's KEK.
//!
//! In batches, each a short read, then the sealing (outside any transaction: the key service
//! writes data keys in its own), then one write transaction in which every channel is updated
//! only if it still holds the value that was read (a channel deleted or changed meanwhile is
//! left alone) together with its audit event `audit.notification_channel.reseal`. Idempotent and
//! resumable: a value sealed by the key service is never selected again, so a pass interrupted
//! anywhere is simply run again.

use super::sealing::{
    recipients_context, secret_context, url_context, RECIPIENTS_PURPOSE, WEBHOOK_SECRET_PURPOSE,
    WEBHOOK_URL_PURPOSE,
};
use super::sql::{exec, query};
use super::{AlertError, AlertService};
use crate::event::{Actor, AuditEvent, Outcome, Target};
use anshin_platform::db::{begin_platform_tx, begin_platform_write_tx};
use anshin_platform::sealer::{ResealReport, SealerError, SecretSealer, SEALED_TEXT_PREFIX};
use uuid::Uuid;

/// The audit action of one re-sealed channel.
pub const RESEAL_ACTION: &str = "audit.notification_channel.reseal";

/// Channels per batch when the caller gives no size.
pub const DEFAULT_BATCH: u64 = 100;

struct Legacy {
    id: Uuid,
    tenant_id: Uuid,
    secret_sealed: Option<String>,
    url_sealed: Option<String>,
    /// A recipient list stored readable (before recipients were sealed).
    recipients: Option<String>,
    recipients_sealed: Option<String>,
}

struct Resealed {
    legacy: Legacy,
    secret_sealed: Option<String>,
    url_sealed: Option<String>,
    recipients_sealed: Option<String>,
    fields: Vec<&'static str>,
}

impl AlertService {
    /// Re-seals every channel whose webhook secret or URL is still under the interim secret box,
    /// `batch` channels at a time. Needs the key service ([`Self::with_sealer`]). Channels that
    /// cannot be moved (unreadable with the secret box's key, or the tenant's key is unusable —
    /// e.g. crypto-erased) are counted in `failed` and left as they are; an outage of the key
    /// service stops the pass with an error (what was done stays done).
    pub async fn reseal_legacy(
        &self,
        actor: &Actor,
        batch: u64,
    ) -> Result<ResealReport, AlertError> {
        let batch = batch.clamp(1, 10_000);
        let mut total = ResealReport::default();
        let mut after = None;
        loop {
            let (report, last, full) = self.reseal_batch(actor, after, batch).await?;
            total.add(report);
            match last {
                Some(id) if full => after = Some(id),
                _ => return Ok(total),
            }
        }
    }

    /// One batch of channels after `after` (by id). Returns what it did, the last id it saw and
    /// whether the batch was full (more may follow).
    async fn reseal_batch(
        &self,
        actor: &Actor,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<(ResealReport, Option<Uuid>, bool), AlertError> {
        let sealer = self
            .sealing
            .sealer()
            .ok_or(AlertError::Sealer(SealerError::NotConfigured))?
            .clone();
        let rows = self.legacy_channels(after, limit).await?;
        let full = rows.len() as u64 == limit;
        let last = rows.last().map(|r| r.id);
        let mut report = ResealReport {
            examined: rows.len() as u64,
            ..ResealReport::default()
        };
        let mut done = Vec::new();
        for legacy in rows {
            match self.reseal_one(sealer.as_ref(), legacy).await {
                Ok(r) => done.push(r),
                Err((id, e)) if e.is_transient() => {
                    tracing::warn!(channel = %id, error = %e, "re-encryption of notification channels paused: the key service is unavailable");
                    return Err(AlertError::Sealer(e));
                }
                Err((id, e)) => {
                    report.failed += 1;
                    tracing::warn!(channel = %id, error = %e, "a notification channel's webhook secret or URL could not be re-encrypted; it stays under the interim key");
                }
            }
        }
        if done.is_empty() {
            return Ok((report, last, full));
        }
        let tx = begin_platform_write_tx(&self.db).await?;
        for r in &done {
            let changed = exec(
                &tx,
                "UPDATE audit_notification_channels SET secret_sealed = $2, url_sealed = $3, recipients_sealed = $6, recipients = NULL \
                 WHERE id = $1 AND deleted_at IS NULL AND COALESCE(secret_sealed, '') = $4 AND COALESCE(url_sealed, '') = $5 \
                 AND COALESCE(recipients_sealed, '') = $7 AND COALESCE(recipients, '') = $8",
                vec![
                    r.legacy.id.into(),
                    r.secret_sealed.clone().into(),
                    r.url_sealed.clone().into(),
                    r.legacy.secret_sealed.clone().unwrap_or_default().into(),
                    r.legacy.url_sealed.clone().unwrap_or_default().into(),
                    r.recipients_sealed.clone().into(),
                    r.legacy.recipients_sealed.clone().unwrap_or_default().into(),
                    r.legacy.recipients.clone().unwrap_or_default().into(),
                ],
            )
            .await?;
            if changed.rows_affected() != 1 {
                // Deleted or changed since it was read: nothing of the old value is left to move.
                continue;
            }
            let e = AuditEvent::new(
                r.legacy.tenant_id,
                actor.clone(),
                RESEAL_ACTION,
                Outcome::Success,
            )
            .target(Target::new("notification_channel", r.legacy.id))
            .detail("fields", &r.fields)
            .detail(
                "from",
                if r.fields == ["recipients"] && r.legacy.recipients.is_some() {
                    "plaintext"
                } else {
                    "secretbox"
                },
            )
            .detail("to", "key-service");
            crate::store::record(&tx, &e).await?;
            report.resealed += 1;
        }
        tx.commit().await?;
        if report.resealed > 0 {
            tracing::info!(
                resealed = report.resealed,
                "notification channels re-encrypted under their tenants' keys"
            );
        }
        Ok((report, last, full))
    }

    /// Channels (not deleted) with a secret or URL that is not sealed by the key service.
    async fn legacy_channels(
        &self,
        after: Option<Uuid>,
        limit: u64,
    ) -> Result<Vec<Legacy>, AlertError> {
        let pattern = format!("{SEALED_TEXT_PREFIX}%");
        let mut values = vec![pattern.into()];
        let cursor = match after {
            Some(id) => {
                values.push(id.into());
                "AND id > $2"
            }
            None => "",
        };
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let lim = values.len();
        let sql = format!(
            "SELECT id, tenant_id, secret_sealed, url_sealed, recipients, recipients_sealed FROM audit_notification_channels \
             WHERE deleted_at IS NULL \
             AND ((secret_sealed IS NOT NULL AND secret_sealed NOT LIKE $1) OR (url_sealed IS NOT NULL AND url_sealed NOT LIKE $1) \
               OR recipients IS NOT NULL OR (recipients_sealed IS NOT NULL AND recipients_sealed NOT LIKE $1)) \
             {cursor} ORDER BY id LIMIT ${lim}"
        );
        let tx = begin_platform_tx(&self.db).await?;
        let rows = query(&tx, &sql, values).await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(Legacy {
                    id: r.try_get("", "id")?,
                    tenant_id: r.try_get("", "tenant_id")?,
                    secret_sealed: r.try_get("", "secret_sealed")?,
                    url_sealed: r.try_get("", "url_sealed")?,
                    recipients: r.try_get("", "recipients")?,
                    recipients_sealed: r.try_get("", "recipients_sealed")?,
                })
            })
            .collect()
    }

    /// Opens the legacy values of one channel and seals them with the key service.
    async fn reseal_one(
        &self,
        sealer: &dyn SecretSealer,
        legacy: Legacy,
    ) -> Result<Resealed, (Uuid, SealerError)> {
        let (t, id) = (legacy.tenant_id, legacy.id);
        let mut fields = Vec::new();
        let secret_sealed = self
            .reseal_value(
                sealer,
                t,
                legacy.secret_sealed.as_deref(),
                WEBHOOK_SECRET_PURPOSE,
                &secret_context(t, id),
            )
            .await
            .map_err(|e| (id, e))?;
        if secret_sealed.1 {
            fields.push("secret");
        }
        let url_sealed = self
            .reseal_value(
                sealer,
                t,
                legacy.url_sealed.as_deref(),
                WEBHOOK_URL_PURPOSE,
                &url_context(t, id),
            )
            .await
            .map_err(|e| (id, e))?;
        if url_sealed.1 {
            fields.push("url");
        }
        let rctx = recipients_context(t, id);
        let recipients_sealed = match legacy.recipients.as_deref() {
            // Readable from before recipients were sealed: seal them as they are.
            Some(plain) => (
                Some(
                    sealer
                        .seal(t, RECIPIENTS_PURPOSE, &rctx, plain)
                        .await
                        .map_err(|e| (id, e))?,
                ),
                true,
            ),
            None => self
                .reseal_value(
                    sealer,
                    t,
                    legacy.recipients_sealed.as_deref(),
                    RECIPIENTS_PURPOSE,
                    &rctx,
                )
                .await
                .map_err(|e| (id, e))?,
        };
        if recipients_sealed.1 {
            fields.push("recipients");
        }
        Ok(Resealed {
            legacy,
            secret_sealed: secret_sealed.0,
            url_sealed: url_sealed.0,
            recipients_sealed: recipients_sealed.0,
            fields,
        })
    }

    /// The value to store instead of `stored`, and whether it changed: a secret box value is
    /// opened and sealed with the key service; anything else stays.
    async fn reseal_value(
        &self,
        sealer: &dyn SecretSealer,
        tenant: Uuid,
        stored: Option<&str>,
        purpose: &str,
        context: &str,
    ) -> Result<(Option<String>, bool), SealerError> {
        match stored {
            Some(s) if !sealer.is_sealed(s) => {
                let plain = self.sealing.open_legacy(s, context)?;
                let sealed = sealer
                    .seal(tenant, purpose, context, plain.expose())
                    .await?;
                Ok((Some(sealed), true))
            }
            other => Ok((other.map(str::to_string), false)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::alerts::sealing::tests::FakeSealer;
    use crate::alerts::{ChannelKind, NewChannel, RuleSet, SecretBox};
    use crate::event::Source;
    use anshin_platform::config::DatabaseConfig;
    use anshin_platform::error::Problem;
    use anshin_platform::secret::Secret;
    use anshin_platform::{Principal, Role, Subject, TenantKind};
    use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
    use sea_orm_migration::{MigrationTrait, MigratorTrait};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            let mut all = anshin_platform::migration::migrations();
            all.extend(crate::migrations());
            all
        }
    }

    async fn db(dir: &std::path::Path) -> DatabaseConnection {
        let url = Secret::new(format!("sqlite://{}?mode=rwc", dir.join("a.db").display()));
        let db = anshin_platform::db::connect(&url, &DatabaseConfig::default())
            .await
            .unwrap();
        Migrator::up(&db, None).await.unwrap();
        db
    }

    fn admin(tenant: Uuid) -> Principal {
        Principal {
            subject: Subject::ApiToken {
                id: Uuid::now_v7(),
                name: "admin token".into(),
            },
            tenant_id: tenant,
            tenant_kind: TenantKind::Institution,
            role: Role::InstitutionAdmin,
            grant: None,
        }
    }

    fn webhook(url: &str) -> NewChannel {
        NewChannel {
            tenant_id: None,
            kind: ChannelKind::Webhook,
            name: "SOC".into(),
            url: Some(url.into()),
            recipients: None,
            min_severity: None,
        }
    }

    async fn strings(db: &DatabaseConnection, sql: &str) -> Vec<String> {
        db.query_all(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                r.try_get_by_index::<Option<String>>(0)
                    .unwrap()
                    .unwrap_or_default()
            })
            .collect()
    }

    async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
        db.query_one(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap()
    }

    #[tokio::test]
    async fn legacy_channels_move_to_the_key_service_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        let rules = Arc::new(RuleSet::shipped().unwrap());
        let legacy = SecretBox::from_key([5; 32]);
        let fake = Arc::new(FakeSealer::default());
        let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
        let src = Source::default();

        // Three channels from before the key service, one of a tenant later crypto-erased.
        let old = AlertService::new(db.clone(), rules.clone(), legacy.clone());
        let mut created = Vec::new();
        for (t, n) in [(t1, 1), (t1, 2), (t2, 3)] {
            let c = old
                .create_channel(
                    &admin(t),
                    webhook(&format!("https://hooks.example.jp/{n}?token=t{n}")),
                    &src,
                )
                .await
                .unwrap();
            created.push(c);
        }
        let svc = AlertService::new(db.clone(), rules, legacy).with_sealer(fake.clone());
        // A channel created with the key service is sealed by it at once.
        let fresh = svc
            .create_channel(&admin(t1), webhook("https://hooks.example.jp/new"), &src)
            .await
            .unwrap();
        assert_eq!(fake.seals.load(Ordering::SeqCst), 2, "secret and URL");
        let stored = strings(
            &db,
            "SELECT secret_sealed FROM audit_notification_channels ORDER BY id",
        )
        .await;
        assert_eq!(
            stored
                .iter()
                .filter(|s| s.starts_with("anshin-env1:"))
                .count(),
            1
        );

        // Without a sealer there is nothing to move them to.
        assert!(matches!(
            old.reseal_legacy(&Actor::system("test"), 10).await,
            Err(AlertError::Sealer(SealerError::NotConfigured))
        ));
        // An outage stops the pass and changes nothing.
        fake.down.store(true, Ordering::SeqCst);
        let e = svc
            .reseal_legacy(&Actor::system("test"), 2)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AlertError::Sealer(s) if s.is_transient()),
            "{e}"
        );
        assert_eq!(Problem::from(e).status.as_u16(), 503);
        fake.down.store(false, Ordering::SeqCst);
        fake.erased.lock().unwrap().push(t2);

        // Batches of two: every channel is seen once, the erased tenant's is left alone.
        let r = svc.reseal_legacy(&Actor::system("test"), 2).await.unwrap();
        assert_eq!(
            r,
            ResealReport {
                examined: 3,
                resealed: 2,
                failed: 1
            }
        );
        let moved = |i: usize| created[i].channel.id;
        for i in [0, 1] {
            let n = i + 1;
            let row = |col: &str| {
                format!("SELECT {col} FROM audit_notification_channels WHERE url = 'https://hooks.example.jp/{n}'")
            };
            let secret = strings(&db, &row("secret_sealed")).await;
            let url = strings(&db, &row("url_sealed")).await;
            assert!(secret.len() == 1 && url.len() == 1);
            assert!(secret[0].starts_with("anshin-env1:") && url[0].starts_with("anshin-env1:"));
            // It opens through the key service to what the administrator was given.
            let got = svc
                .sealing
                .open(
                    t1,
                    WEBHOOK_SECRET_PURPOSE,
                    &secret_context(t1, moved(i)),
                    &secret[0],
                )
                .await
                .unwrap();
            assert_eq!(Some(got.expose()), created[i].secret.as_deref());
            let got = svc
                .sealing
                .open(t1, WEBHOOK_URL_PURPOSE, &url_context(t1, moved(i)), &url[0])
                .await
                .unwrap();
            assert_eq!(
                got.expose(),
                format!("https://hooks.example.jp/{n}?token=t{n}")
            );
        }
        assert_eq!(
            count(
                &db,
                &format!("SELECT COUNT(*) FROM audit_events WHERE action = '{RESEAL_ACTION}'")
            )
            .await,
            2
        );
        let bodies = strings(
            &db,
            &format!("SELECT body FROM audit_events WHERE action = '{RESEAL_ACTION}'"),
        )
        .await;
        for b in &bodies {
            assert!(
                b.contains("secretbox") && !b.contains("whsec_") && !b.contains("token=t"),
                "{b}"
            );
        }
        assert!(fresh.secret.is_some());

        // A second pass finds only the channel it cannot move, and changes nothing.
        let before = strings(
            &db,
            "SELECT secret_sealed FROM audit_notification_channels ORDER BY id",
        )
        .await;
        let again = svc.reseal_legacy(&Actor::system("test"), 2).await.unwrap();
        assert_eq!(
            again,
            ResealReport {
                examined: 1,
                resealed: 0,
                failed: 1
            }
        );
        assert_eq!(
            before,
            strings(
                &db,
                "SELECT secret_sealed FROM audit_notification_channels ORDER BY id"
            )
            .await
        );
        assert_eq!(
            count(
                &db,
                &format!("SELECT COUNT(*) FROM audit_events WHERE action = '{RESEAL_ACTION}'")
            )
            .await,
            2
        );
        // Deleted channels are not touched (their secrets are already gone).
        svc.delete_channel(&admin(t2), created[2].channel.id, &src)
            .await
            .unwrap();
        assert_eq!(
            svc.reseal_legacy(&Actor::system("test"), 2).await.unwrap(),
            ResealReport::default()
        );
    }

    #[tokio::test]
    async fn creating_a_channel_during_an_outage_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        let fake = Arc::new(FakeSealer::default());
        let svc = AlertService::new(
            db.clone(),
            Arc::new(RuleSet::shipped().unwrap()),
            SecretBox::from_key([1; 32]),
        )
        .with_sealer(fake.clone());
        fake.down.store(true, Ordering::SeqCst);
        let t = Uuid::now_v7();
        let e = svc
            .create_channel(
                &admin(t),
                webhook("https://hooks.example.jp/x"),
                &Source::default(),
            )
            .await
            .unwrap_err();
        let p = Problem::from(e);
        assert_eq!(p.status.as_u16(), 503);
        assert_eq!(p.kind, "key-provider-unavailable");
        assert!(!p.detail.contains("hooks.example.jp"));
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM audit_notification_channels").await,
            0
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM audit_events").await, 0);
        // Mail channels seal their recipients (contact data): refused as well.
        let e = svc
            .create_channel(&admin(t), mail(), &Source::default())
            .await
            .unwrap_err();
        assert_eq!(Problem::from(e).status.as_u16(), 503);
        assert_eq!(
            count(&db, "SELECT COUNT(*) FROM audit_notification_channels").await,
            0
        );
        fake.down.store(false, Ordering::SeqCst);
        svc.create_channel(&admin(t), mail(), &Source::default())
            .await
            .unwrap();
    }

    fn mail() -> NewChannel {
        NewChannel {
            tenant_id: None,
            kind: ChannelKind::Email,
            name: "情報システム室".into(),
            url: None,
            recipients: Some(vec![
                "it@clinic.example.jp".into(),
                "cio@clinic.example.jp".into(),
            ]),
            min_severity: None,
        }
    }

    #[tokio::test]
    async fn recipients_are_sealed_and_readable_ones_are_moved() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        let fake = Arc::new(FakeSealer::default());
        let svc = AlertService::new(
            db.clone(),
            Arc::new(RuleSet::shipped().unwrap()),
            SecretBox::from_key([2; 32]),
        )
        .with_sealer(fake.clone());
        let (t, src) = (Uuid::now_v7(), Source::default());
        let a = svc.create_channel(&admin(t), mail(), &src).await.unwrap();
        assert_eq!(a.channel.recipients.len(), 2);
        // Nothing readable in the table or the trail.
        let dump = strings(
            &db,
            "SELECT COALESCE(recipients, '') || '|' || COALESCE(recipients_sealed, '') FROM audit_notification_channels",
        )
        .await;
        assert!(dump[0].starts_with("|anshin-env1:"), "{dump:?}");
        let bodies = strings(&db, "SELECT body FROM audit_events").await;
        assert!(
            bodies.iter().all(|b| !b.contains("it@clinic")),
            "{bodies:?}"
        );
        assert!(
            bodies.iter().any(|b| b.contains("i…@clinic.example.jp")),
            "{bodies:?}"
        );
        let listed = svc.channels(&admin(t), None).await.unwrap();
        assert_eq!(
            listed[0].recipients,
            vec!["it@clinic.example.jp", "cio@clinic.example.jp"]
        );

        // A channel from before recipients were sealed: readable until the pass moves it.
        let b = svc.create_channel(&admin(t), mail(), &src).await.unwrap();
        db.execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE audit_notification_channels SET recipients = $1, recipients_sealed = NULL WHERE id = $2",
            vec![r#"["old@clinic.example.jp"]"#.into(), b.channel.id.into()],
        ))
        .await
        .unwrap();
        let listed = svc.channels(&admin(t), None).await.unwrap();
        assert_eq!(listed[1].recipients, vec!["old@clinic.example.jp"]);
        let r = svc.reseal_legacy(&Actor::system("test"), 10).await.unwrap();
        assert_eq!(
            r,
            ResealReport {
                examined: 1,
                resealed: 1,
                failed: 0
            }
        );
        let dump = strings(
            &db,
            "SELECT COALESCE(recipients, '') || '|' || COALESCE(recipients_sealed, '') FROM audit_notification_channels ORDER BY id",
        )
        .await;
        assert!(
            dump.iter().all(|d| d.starts_with("|anshin-env1:")),
            "{dump:?}"
        );
        let listed = svc.channels(&admin(t), None).await.unwrap();
        assert_eq!(listed[1].recipients, vec!["old@clinic.example.jp"]);
        let moved = strings(
            &db,
            &format!("SELECT body FROM audit_events WHERE action = '{RESEAL_ACTION}'"),
        )
        .await;
        assert!(
            moved.len() == 1 && moved[0].contains("plaintext") && moved[0].contains("recipients"),
            "{moved:?}"
        );
        assert_eq!(
            svc.reseal_legacy(&Actor::system("test"), 10).await.unwrap(),
            ResealReport::default()
        );
        // Deleting a channel deletes its recipients.
        svc.delete_channel(&admin(t), a.channel.id, &src)
            .await
            .unwrap();
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM audit_notification_channels WHERE recipients_sealed IS NOT NULL"
            )
            .await,
            1
        );
    }
}
