use anshin_platform::db::TableGrant;
use anshin_tenancy::migration::{CURRENT_TENANT, PLATFORM_SCOPE};
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct CreateIdentityTables;

impl MigrationName for CreateIdentityTables {
    fn name(&self) -> &str {
        "m20261122_000200_identity"
    }
}

pub(crate) fn col(name: &str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
}

pub(crate) fn tenant_fk(table: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("{table}_tenant_fk"))
        .from(Alias::new(table), Alias::new("tenant_id"))
        .to(Alias::new("tenants"), Alias::new("id"))
        .to_owned()
}

pub(crate) fn user_fk(table: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("{table}_user_fk"))
        .from(Alias::new(table), Alias::new("user_id"))
        .to(Alias::new("users"), Alias::new("id"))
        .to_owned()
}

const TABLES: [&str; 5] = [
    "users",
    "webauthn_credentials",
    "webauthn_ceremonies",
    "sessions",
    "invitations",
];

#[async_trait::async_trait]
impl MigrationTrait for CreateIdentityTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("users"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("email").string_len(254).not_null().unique_key())
                .col(col("display_name").string_len(200).not_null())
                .col(col("role").string_len(32).not_null())
                .col(col("status").string_len(16).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("last_sign_in_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("users"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("webauthn_credentials"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("user_id").uuid().not_null())
                .col(col("tenant_id").uuid().not_null())
                .col(col("name").string_len(100).not_null())
                .col(
                    col("credential_id")
                        .string_len(1400)
                        .not_null()
                        .unique_key(),
                )
                .col(col("passkey").text().not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("last_used_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("webauthn_credentials"))
                .foreign_key(&mut user_fk("webauthn_credentials"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("webauthn_ceremonies"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("kind").string_len(16).not_null())
                .col(col("tenant_id").uuid().not_null())
                .col(col("user_id").uuid().not_null())
                .col(col("invitation_id").uuid().null())
                .col(col("state").text().not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("expires_at").timestamp_with_time_zone().not_null())
                .col(col("consumed_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("webauthn_ceremonies"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("sessions"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("token_hash").string_len(64).not_null().unique_key())
                .col(col("user_id").uuid().not_null())
                .col(col("tenant_id").uuid().not_null())
                .col(col("method").string_len(32).not_null())
                .col(col("csrf_token").string_len(64).not_null())
                .col(col("user_agent").string_len(512).null())
                .col(col("source_ip").string_len(64).null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("last_seen_at").timestamp_with_time_zone().not_null())
                .col(col("idle_timeout_secs").big_integer().not_null())
                .col(
                    col("absolute_expires_at")
                        .timestamp_with_time_zone()
                        .not_null(),
                )
                .col(col("ended_at").timestamp_with_time_zone().null())
                .col(col("ended_reason").string_len(32).null())
                .foreign_key(&mut tenant_fk("sessions"))
                .foreign_key(&mut user_fk("sessions"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("invitations"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("email").string_len(254).not_null())
                .col(col("display_name").string_len(200).not_null())
                .col(col("role").string_len(32).not_null())
                .col(col("token_hash").string_len(64).not_null().unique_key())
                .col(col("invited_by").string_len(64).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("expires_at").timestamp_with_time_zone().not_null())
                .col(col("used_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("invitations"))
                .to_owned(),
        )
        .await?;
        for (t, c) in [
            ("sessions", "user_id"),
            ("webauthn_credentials", "user_id"),
            ("users", "tenant_id"),
        ] {
            m.create_index(
                Index::create()
                    .name(format!("{t}_{c}_idx"))
                    .table(Alias::new(t))
                    .col(Alias::new(c))
                    .to_owned(),
            )
            .await?;
        }
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            for t in TABLES {
                db.execute_unprepared(&rls_sql(t)).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "invitations",
            "sessions",
            "webauthn_ceremonies",
            "webauthn_credentials",
            "users",
        ] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        Ok(())
    }
}

pub struct CreateOidcTables;

impl MigrationName for CreateOidcTables {
    fn name(&self) -> &str {
        "m20261122_000201_identity_oidc"
    }
}

const OIDC_TABLES: [&str; 3] = ["identity_providers", "federated_identities", "oidc_flows"];

#[async_trait::async_trait]
impl MigrationTrait for CreateOidcTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("identity_providers"))
                .col(col("tenant_id").uuid().not_null().primary_key())
                .col(col("issuer").string_len(512).not_null())
                .col(col("client_id").string_len(255).not_null())
                .col(col("client_secret_sealed").text().not_null())
                .col(col("allowed_domains").text().not_null())
                .col(col("default_role").string_len(32).not_null())
                .col(col("jit_provisioning").boolean().not_null())
                .col(col("accepted_acr").text().not_null())
                .col(col("updated_at").timestamp_with_time_zone().not_null())
                .foreign_key(&mut tenant_fk("identity_providers"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("federated_identities"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("user_id").uuid().not_null())
                .col(col("tenant_id").uuid().not_null())
                .col(col("issuer").string_len(512).not_null())
                .col(col("subject").string_len(255).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .foreign_key(&mut tenant_fk("federated_identities"))
                .foreign_key(&mut user_fk("federated_identities"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("federated_identities_issuer_subject")
                .table(Alias::new("federated_identities"))
                .col(Alias::new("issuer"))
                .col(Alias::new("subject"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("oidc_flows"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("state_hash").string_len(64).not_null().unique_key())
                .col(col("nonce").string_len(128).not_null())
                .col(col("pkce_verifier").string_len(128).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("expires_at").timestamp_with_time_zone().not_null())
                .col(col("consumed_at").timestamp_with_time_zone().null())
                .col(col("step_up_user_id").uuid().null())
                .col(col("step_up_done_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("oidc_flows"))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            for t in OIDC_TABLES {
                db.execute_unprepared(&rls_sql(t)).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["oidc_flows", "federated_identities", "identity_providers"] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Wall 2 for a tenant-scoped table: its own tenant, a provider's institutions, or platform scope.
pub(crate) fn rls_sql(t: &str) -> String {
    format!(
        "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;
         ALTER TABLE {t} FORCE ROW LEVEL SECURITY;
         CREATE POLICY {t}_isolation ON {t}
           USING (tenant_id = {c} OR tenant_id IN (SELECT id FROM tenants WHERE parent_id = {c}) OR {p})
           WITH CHECK (tenant_id = {c} OR tenant_id IN (SELECT id FROM tenants WHERE parent_id = {c}) OR {p});",
        c = CURRENT_TENANT,
        p = PLATFORM_SCOPE
    )
}

pub struct CreateBreakGlassTables;

impl MigrationName for CreateBreakGlassTables {
    fn name(&self) -> &str {
        "m20261122_000202_identity_break_glass"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBreakGlassTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("break_glass_credentials"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("user_id").uuid().not_null())
                .col(col("code_hash").string_len(64).not_null().unique_key())
                .col(col("status").string_len(16).not_null())
                .col(col("created_by").string_len(64).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("used_at").timestamp_with_time_zone().null())
                .col(col("used_reason").text().null())
                .col(col("used_from").string_len(64).null())
                .foreign_key(&mut tenant_fk("break_glass_credentials"))
                .foreign_key(&mut user_fk("break_glass_credentials"))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            m.get_connection()
                .execute_unprepared(&rls_sql("break_glass_credentials"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("break_glass_credentials"))
                .to_owned(),
        )
        .await
    }
}

pub struct CreateMaintenanceGrants;

impl MigrationName for CreateMaintenanceGrants {
    fn name(&self) -> &str {
        "m20261122_000203_identity_maintenance_grants"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateMaintenanceGrants {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("maintenance_grants"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("institution_id").uuid().not_null())
                .col(col("maintainer").string_len(64).not_null())
                .col(col("work_plan_ref").string_len(200).not_null())
                .col(col("scope").string_len(16).not_null())
                .col(col("starts_at").timestamp_with_time_zone().not_null())
                .col(col("ends_at").timestamp_with_time_zone().not_null())
                .col(col("incident").boolean().not_null())
                .col(col("status").string_len(16).not_null())
                .col(col("requested_at").timestamp_with_time_zone().not_null())
                .col(col("decided_by").string_len(64).null())
                .col(col("decided_at").timestamp_with_time_zone().null())
                .col(col("decision_note").text().null())
                .foreign_key(&mut tenant_fk("maintenance_grants"))
                .foreign_key(
                    &mut ForeignKey::create()
                        .name("maintenance_grants_institution_fk")
                        .from(
                            Alias::new("maintenance_grants"),
                            Alias::new("institution_id"),
                        )
                        .to(Alias::new("tenants"), Alias::new("id"))
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            // Visible to the maintainer's provider and to the institution the grant opens.
            m.get_connection()
                .execute_unprepared(&format!(
                    "ALTER TABLE maintenance_grants ENABLE ROW LEVEL SECURITY;
                     ALTER TABLE maintenance_grants FORCE ROW LEVEL SECURITY;
                     CREATE POLICY maintenance_grants_isolation ON maintenance_grants
                       USING (tenant_id = {c} OR institution_id = {c} OR {p})
                       WITH CHECK (tenant_id = {c} OR institution_id = {c} OR {p});",
                    c = CURRENT_TENANT,
                    p = PLATFORM_SCOPE
                ))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(Alias::new("maintenance_grants"))
                .to_owned(),
        )
        .await
    }
}

pub struct AddSessionStepUp;

impl MigrationName for AddSessionStepUp {
    fn name(&self) -> &str {
        "m20261122_000204_identity_session_step_up"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddSessionStepUp {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("sessions"))
                .add_column(col("stepped_up_at").timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("sessions"))
                .drop_column(Alias::new("stepped_up_at"))
                .to_owned(),
        )
        .await
    }
}

/// Guideline 14 ⑦: per-tenant identity policy, account review campaigns and the stale-account
/// flag on `users`.
pub struct CreateReviewAndPolicy;

impl MigrationName for CreateReviewAndPolicy {
    fn name(&self) -> &str {
        "m20261122_000206_identity_review_policy"
    }
}

const REVIEW_POLICY_TABLES: [&str; 3] = [
    "identity_policies",
    "account_reviews",
    "account_review_items",
];

#[async_trait::async_trait]
impl MigrationTrait for CreateReviewAndPolicy {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Alias::new("users"))
                .add_column(col("stale_flagged_at").timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("identity_policies"))
                .col(col("tenant_id").uuid().not_null().primary_key())
                .col(col("idle_timeout_secs").big_integer().not_null())
                .col(col("stale_after_days").big_integer().not_null())
                .col(col("disable_after_days").big_integer().not_null())
                .col(col("updated_by").string_len(64).not_null())
                .col(col("updated_at").timestamp_with_time_zone().not_null())
                .foreign_key(&mut tenant_fk("identity_policies"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("account_reviews"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("started_by").string_len(64).not_null())
                .col(col("started_at").timestamp_with_time_zone().not_null())
                .col(col("due_at").timestamp_with_time_zone().not_null())
                .col(col("closed_at").timestamp_with_time_zone().null())
                .col(col("closed_by").string_len(64).null())
                .col(col("status").string_len(16).not_null())
                .foreign_key(&mut tenant_fk("account_reviews"))
                .to_owned(),
        )
        .await?;
        // At most one open review per tenant, even when two admins start one at the same moment
        // (both backends support partial unique indexes).
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX account_reviews_one_open ON account_reviews (tenant_id) WHERE status = 'open'",
            )
            .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("account_review_items"))
                .col(col("review_id").uuid().not_null())
                .col(col("user_id").uuid().not_null())
                .col(col("tenant_id").uuid().not_null())
                .col(col("email").string_len(254).not_null())
                .col(col("display_name").string_len(200).not_null())
                .col(col("role").string_len(32).not_null())
                .col(col("status").string_len(16).not_null())
                .col(col("last_sign_in_at").timestamp_with_time_zone().null())
                .col(col("stale_since").timestamp_with_time_zone().null())
                .col(col("decision").string_len(16).null())
                .col(col("decided_by").string_len(64).null())
                .col(col("decided_at").timestamp_with_time_zone().null())
                .col(col("note").text().null())
                .primary_key(
                    Index::create()
                        .col(Alias::new("review_id"))
                        .col(Alias::new("user_id")),
                )
                .foreign_key(&mut tenant_fk("account_review_items"))
                .foreign_key(&mut user_fk("account_review_items"))
                .foreign_key(
                    &mut ForeignKey::create()
                        .name("account_review_items_review_fk")
                        .from(Alias::new("account_review_items"), Alias::new("review_id"))
                        .to(Alias::new("account_reviews"), Alias::new("id"))
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            for t in REVIEW_POLICY_TABLES {
                db.execute_unprepared(&rls_sql(t)).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "account_review_items",
            "account_reviews",
            "identity_policies",
        ] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        m.alter_table(
            Table::alter()
                .table(Alias::new("users"))
                .drop_column(Alias::new("stale_flagged_at"))
                .to_owned(),
        )
        .await
    }
}

pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(CreateIdentityTables),
        Box::new(CreateOidcTables),
        Box::new(CreateBreakGlassTables),
        Box::new(CreateMaintenanceGrants),
        Box::new(AddSessionStepUp),
        Box::new(crate::migration_passwords::AddPasswordsAndSecurityKeys),
        Box::new(CreateReviewAndPolicy),
        Box::new(CreateClientTables),
        Box::new(crate::migration_passwords::AddPasswordResets),
        Box::new(crate::migration_contact::SealContactData),
        Box::new(crate::migration_invitations::RecordInvitationRevocation),
    ]
}

/// Ceremonies, sessions, invitations and password resets are marked used or ended, never
/// deleted.
pub fn grants() -> Vec<TableGrant> {
    TABLES
        .iter()
        .chain(OIDC_TABLES.iter())
        .chain(["break_glass_credentials", "maintenance_grants"].iter())
        .chain(REVIEW_POLICY_TABLES.iter())
        .chain(crate::migration_passwords::TABLES.iter())
        .chain(CLIENT_TABLES.iter())
        .chain(crate::migration_passwords::RESET_TABLES.iter())
        .map(|t| TableGrant {
            table: t,
            // A person removes their own authenticators, and the hourly job prunes the jtis of
            // expired client assertions; everything else is only ever marked.
            privileges: if matches!(*t, "webauthn_credentials" | "client_assertion_jtis") {
                "SELECT, INSERT, UPDATE, DELETE"
            } else {
                "SELECT, INSERT, UPDATE"
            },
        })
        .collect()
}

/// Machine clients (OAuth2 client credentials) and the used `jti`s of their client assertions.
pub struct CreateClientTables;

impl MigrationName for CreateClientTables {
    fn name(&self) -> &str {
        "m20261122_000207_identity_clients"
    }
}

pub const CLIENT_TABLES: [&str; 2] = ["api_clients", "client_assertion_jtis"];

#[async_trait::async_trait]
impl MigrationTrait for CreateClientTables {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alias::new("api_clients"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("client_id").string_len(64).not_null().unique_key())
                .col(col("name").string_len(200).not_null())
                .col(col("role").string_len(32).not_null())
                .col(col("scopes").string_len(512).not_null())
                .col(col("auth_method").string_len(32).not_null())
                .col(col("secret_hash").string_len(64).null())
                .col(col("public_key_pem").text().null())
                .col(col("status").string_len(16).not_null())
                .col(col("created_by").string_len(64).not_null())
                .col(col("created_at").timestamp_with_time_zone().not_null())
                .col(col("revoked_at").timestamp_with_time_zone().null())
                .col(col("last_used_at").timestamp_with_time_zone().null())
                .foreign_key(&mut tenant_fk("api_clients"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Alias::new("client_assertion_jtis"))
                .col(col("id").uuid().not_null().primary_key())
                .col(col("tenant_id").uuid().not_null())
                .col(col("client_id").uuid().not_null())
                .col(col("jti").string_len(255).not_null())
                .col(col("expires_at").timestamp_with_time_zone().not_null())
                .col(col("used_at").timestamp_with_time_zone().not_null())
                .foreign_key(&mut tenant_fk("client_assertion_jtis"))
                .foreign_key(
                    &mut ForeignKey::create()
                        .name("client_assertion_jtis_client_fk")
                        .from(Alias::new("client_assertion_jtis"), Alias::new("client_id"))
                        .to(Alias::new("api_clients"), Alias::new("id"))
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("client_assertion_jtis_client_jti")
                .table(Alias::new("client_assertion_jtis"))
                .col(Alias::new("client_id"))
                .col(Alias::new("jti"))
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("api_clients_tenant_id_idx")
                .table(Alias::new("api_clients"))
                .col(Alias::new("tenant_id"))
                .to_owned(),
        )
        .await?;
        if m.get_database_backend() == DbBackend::Postgres {
            let db = m.get_connection();
            for t in CLIENT_TABLES {
                db.execute_unprepared(&rls_sql(t)).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in ["client_assertion_jtis", "api_clients"] {
            m.drop_table(Table::drop().table(Alias::new(t)).to_owned())
                .await?;
        }
        Ok(())
    }
}
