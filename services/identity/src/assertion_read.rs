//! What finishing a WebAuthn assertion needs to read, in one query: the ceremony, the presented
//! credential (only if it belongs to the ceremony's account), the account and its tenant's
//! identity policy. A sign-in is read-heavy and every statement is a round trip (on SQLite a
//! hop to the driver's worker thread, on PostgreSQL also a transaction with its scope set), so
//! four reads become one.

use crate::entity::{ceremony, credential, identity_policy as policy, user};
use crate::error::IdentityError;
use anshin_platform::db::platform_reader;
use sea_orm::sea_query::{Alias, Condition, Expr, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, IdenStatic,
    Iterable,
};
use uuid::Uuid;

pub(crate) struct AssertionContext {
    pub ceremony: ceremony::Model,
    /// The credential with the presented id, if the ceremony's account has it.
    pub credential: Option<credential::Model>,
    pub user: Option<user::Model>,
    /// The tenant's identity policy, if it set one.
    pub policy: Option<policy::Model>,
}

/// Reads the context of ceremony `id` of `kind` for the credential `credential_id` (base64url,
/// as stored). `None` when there is no such ceremony.
pub(crate) async fn read(
    db: &DatabaseConnection,
    id: Uuid,
    kind: &str,
    credential_id: &str,
) -> Result<Option<AssertionContext>, IdentityError> {
    let q = query(id, kind, credential_id);
    let r = platform_reader(db).await?;
    let row = r.query_one(r.get_database_backend().build(&q)).await?;
    r.finish().await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(AssertionContext {
        ceremony: ceremony::Model::from_query_result(&row, "c_")?,
        credential: credential::Model::from_query_result_optional(&row, "k_")?,
        user: user::Model::from_query_result_optional(&row, "u_")?,
        policy: policy::Model::from_query_result_optional(&row, "p_")?,
    }))
}

fn query(id: Uuid, kind: &str, credential_id: &str) -> SelectStatement {
    let mut q = Query::select();
    select_model::<ceremony::Entity>(&mut q, "c_");
    select_model::<credential::Entity>(&mut q, "k_");
    select_model::<user::Entity>(&mut q, "u_");
    select_model::<policy::Entity>(&mut q, "p_");
    q.from(ceremony::Entity)
        .left_join(
            user::Entity,
            Expr::col((user::Entity, user::Column::Id))
                .equals((ceremony::Entity, ceremony::Column::UserId)),
        )
        .left_join(
            credential::Entity,
            Condition::all()
                .add(
                    Expr::col((credential::Entity, credential::Column::UserId))
                        .equals((ceremony::Entity, ceremony::Column::UserId)),
                )
                .add(credential::Column::CredentialId.eq(credential_id)),
        )
        .left_join(
            policy::Entity,
            Expr::col((policy::Entity, policy::Column::TenantId))
                .equals((ceremony::Entity, ceremony::Column::TenantId)),
        )
        .and_where(ceremony::Column::Id.eq(id))
        .and_where(ceremony::Column::Kind.eq(kind));
    q
}

/// Every column of `E`, each named `prefix` + column name, as sea-orm's own joined selects do,
/// so `Model::from_query_result(row, prefix)` reads them back.
fn select_model<E: EntityTrait>(q: &mut SelectStatement, prefix: &str) {
    for col in E::Column::iter() {
        q.expr_as(
            col.select_as(Expr::col((E::default(), col))),
            Alias::new(format!("{prefix}{}", col.as_str())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::DbBackend;

    /// The credential join is limited to the presented id of the ceremony's own account, so a
    /// credential of someone else never comes back.
    #[test]
    fn the_credential_is_joined_by_id_and_account() {
        let sql = DbBackend::Postgres
            .build(&query(Uuid::nil(), "sign_in", "abc"))
            .to_string();
        assert!(sql.contains(r#"LEFT JOIN "webauthn_credentials" ON "webauthn_credentials"."user_id" = "webauthn_ceremonies"."user_id" AND "webauthn_credentials"."credential_id" = 'abc'"#), "{sql}");
        assert!(sql.contains(r#""users"."email" AS "u_email""#), "{sql}");
    }
}
