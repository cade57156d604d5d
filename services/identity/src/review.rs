//! ID inventory review campaigns (ID の棚卸, guideline 14 ⑦). An admin starts a review of their
//! own tenant: every account is snapshotted (role, status, last sign-in, stale flag) as one item.
//! Each item gets a final decision — `confirmed` (still needed as it is) or `disabled` (the
//! account is disabled and its sessions end, in the same transaction) — recorded with who decided
//! and when. The review closes once every item is decided, or earlier with `force`, leaving the
//! undecided items visibly undecided. One open review per tenant.

use crate::access::{require_admin, require_reader};
use crate::entity::{account_review as review, account_review_item as item, user};
use crate::error::IdentityError;
use crate::inventory::{disable_in, effective_flag};
use crate::service::IdentityService;
use actix_web::{web, HttpResponse};
use anshin_platform::db::{begin_tenant_write_tx, is_unique_violation, tenant_reader};
use anshin_platform::error::{Problem, ProblemBody};
use anshin_platform::http::Authenticated;
use anshin_platform::{Principal, Subject};
use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// A review is due this long after it starts unless the request says otherwise.
pub const DEFAULT_DUE_DAYS: i64 = 30;
pub const MAX_DUE_DAYS: i64 = 365;
const MAX_NOTE_CHARS: usize = 1000;
/// Rows per INSERT when snapshotting (keeps SQLite under its bound-parameter limit).
const SNAPSHOT_CHUNK: usize = 500;

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReview {
    /// When the review should be finished; default 30 days from now, at most 365.
    pub due_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    /// The account is still needed as it is.
    Confirmed,
    /// The account is no longer needed: it is disabled and its sessions end.
    Disabled,
}

impl ReviewDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewDecision::Confirmed => "confirmed",
            ReviewDecision::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "confirmed" => Some(ReviewDecision::Confirmed),
            "disabled" => Some(ReviewDecision::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideItem {
    /// The account (an item of this review).
    pub user_id: Uuid,
    pub decision: ReviewDecision,
    /// Why (at most 1000 characters), e.g. "退職 2026-10-31".
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseReview {
    /// Close even though some items are undecided; they stay undecided on the record.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewSummary {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    /// `open` or `closed`.
    pub status: String,
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_by: Option<String>,
    /// Open past its due date.
    pub overdue: bool,
    pub total: u32,
    pub confirmed: u32,
    pub disabled: u32,
    pub undecided: u32,
}

/// One account of a review: the snapshot taken when the review started, and the decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewItemView {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    /// Role at the start of the review.
    pub role: String,
    /// Status (`active`/`disabled`) at the start of the review.
    pub status: String,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// Stale flag at the start of the review.
    pub stale_since: Option<DateTime<Utc>>,
    /// `None` while undecided.
    pub decision: Option<ReviewDecision>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewDetail {
    pub review: ReviewSummary,
    pub items: Vec<ReviewItemView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewList {
    pub items: Vec<ReviewSummary>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    confirmed: u32,
    disabled: u32,
    undecided: u32,
}

impl Counts {
    fn add(&mut self, decision: Option<&str>, n: u32) {
        match decision.and_then(ReviewDecision::parse) {
            Some(ReviewDecision::Confirmed) => self.confirmed += n,
            Some(ReviewDecision::Disabled) => self.disabled += n,
            None => self.undecided += n,
        }
    }
}

fn summary(r: review::Model, c: Counts, now: DateTime<Utc>) -> ReviewSummary {
    ReviewSummary {
        overdue: r.status == "open" && now > r.due_at,
        total: c.confirmed + c.disabled + c.undecided,
        confirmed: c.confirmed,
        disabled: c.disabled,
        undecided: c.undecided,
        id: r.id,
        tenant_id: r.tenant_id,
        started_by: r.started_by,
        started_at: r.started_at,
        due_at: r.due_at,
        status: r.status,
        closed_at: r.closed_at,
        closed_by: r.closed_by,
    }
}

/// An item with its (opened) address.
fn item_view(i: item::Model, email: String) -> ReviewItemView {
    ReviewItemView {
        decision: i.decision.as_deref().and_then(ReviewDecision::parse),
        user_id: i.user_id,
        email,
        display_name: i.display_name,
        role: i.role,
        status: i.status,
        last_sign_in_at: i.last_sign_in_at,
        stale_since: i.stale_since,
        decided_by: i.decided_by,
        decided_at: i.decided_at,
        note: i.note,
    }
}

fn counts_of(items: &[item::Model]) -> Counts {
    let mut c = Counts::default();
    for i in items {
        c.add(i.decision.as_deref(), 1);
    }
    c
}

/// The due date of a new review: the requested one (after `now`, at most 365 days ahead) or the
/// default of 30 days.
pub fn due_date(
    requested: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, IdentityError> {
    match requested {
        None => Ok(now + Duration::days(DEFAULT_DUE_DAYS)),
        Some(d) if d > now && d <= now + Duration::days(MAX_DUE_DAYS) => Ok(d),
        Some(_) => Err(IdentityError::Invalid(format!(
            "due_at must be in the future and at most {MAX_DUE_DAYS} days from now"
        ))),
    }
}

/// A note as stored: trimmed, empty means none, at most 1000 characters.
pub fn clean_note(note: Option<String>) -> Result<Option<String>, IdentityError> {
    let Some(n) = note else { return Ok(None) };
    let n = n.trim();
    if n.chars().count() > MAX_NOTE_CHARS {
        return Err(IdentityError::Invalid(format!(
            "the note is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok((!n.is_empty()).then(|| n.to_string()))
}

fn not_found() -> IdentityError {
    IdentityError::NotFound("no account review with this id in your tenant".into())
}

async fn review_in(
    c: &impl sea_orm::ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<review::Model, IdentityError> {
    review::Entity::find_by_id(id)
        .filter(review::Column::TenantId.eq(tenant_id))
        .one(c)
        .await?
        .ok_or_else(not_found)
}

/// Takes the review's row lock (PostgreSQL) while it is open; false when it is closed.
async fn lock_open(
    tx: &DatabaseTransaction,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, IdentityError> {
    let r = review::Entity::update_many()
        .col_expr(review::Column::Status, Expr::value("open"))
        .filter(review::Column::Id.eq(id))
        .filter(review::Column::TenantId.eq(tenant_id))
        .filter(review::Column::Status.eq("open"))
        .exec(tx)
        .await?;
    Ok(r.rows_affected == 1)
}

async fn items_of(
    c: &impl sea_orm::ConnectionTrait,
    tenant_id: Uuid,
    review_id: Uuid,
) -> Result<Vec<item::Model>, IdentityError> {
    Ok(item::Entity::find()
        .filter(item::Column::ReviewId.eq(review_id))
        .filter(item::Column::TenantId.eq(tenant_id))
        .order_by_asc(item::Column::UserId)
        .all(c)
        .await?)
}

impl IdentityService {
    /// The items as answered, sorted by address (opened here: the stored ones are sealed, so
    /// the database cannot order them).
    async fn item_views(
        &self,
        items: Vec<item::Model>,
    ) -> Result<Vec<ReviewItemView>, IdentityError> {
        let mut out = Vec::with_capacity(items.len());
        for i in items {
            out.push(self.one_item_view(i).await?);
        }
        out.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(out)
    }

    async fn one_item_view(&self, i: item::Model) -> Result<ReviewItemView, IdentityError> {
        // The snapshot holds the account's own sealed address, bound to the account.
        let email = self
            .email_for_display(i.tenant_id, i.user_id, &i.email_sealed)
            .await?;
        Ok(item_view(i, email))
    }

    /// Starts a review of every account of the caller's tenant (admins); 409 while one is open.
    pub async fn start_review(
        &self,
        actor: &Principal,
        req: StartReview,
    ) -> Result<ReviewDetail, IdentityError> {
        require_admin(actor, "run account reviews")?;
        let now = Utc::now();
        let due_at = due_date(req.due_at, now)?;
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        let open = review::Entity::find()
            .filter(review::Column::TenantId.eq(actor.tenant_id))
            .filter(review::Column::Status.eq("open"))
            .one(&tx)
            .await?;
        if let Some(o) = open {
            return Err(IdentityError::Conflict(format!(
                "review {} is still open; close it before starting another",
                o.id
            )));
        }
        let r = review::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(actor.tenant_id),
            started_by: Set(actor.subject.label()),
            started_at: Set(now),
            due_at: Set(due_at),
            closed_at: Set(None),
            closed_by: Set(None),
            status: Set("open".into()),
        }
        .insert(&tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                IdentityError::Conflict(
                    "another review of this tenant was just started; close it first".into(),
                )
            } else {
                e.into()
            }
        })?;
        let users = user::Entity::find()
            .filter(user::Column::TenantId.eq(actor.tenant_id))
            .all(&tx)
            .await?;
        let rows: Vec<item::ActiveModel> = users
            .into_iter()
            .map(|u| item::ActiveModel {
                review_id: Set(r.id),
                user_id: Set(u.id),
                tenant_id: Set(actor.tenant_id),
                stale_since: Set(effective_flag(u.last_sign_in_at, u.stale_flagged_at)),
                // A copy of the sealed value: it stays bound to the account whose address it is.
                email_sealed: Set(u.email_sealed),
                display_name: Set(u.display_name),
                role: Set(u.role),
                status: Set(u.status),
                last_sign_in_at: Set(u.last_sign_in_at),
                decision: Set(None),
                decided_by: Set(None),
                decided_at: Set(None),
                note: Set(None),
            })
            .collect();
        for chunk in rows.chunks(SNAPSHOT_CHUNK) {
            item::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(&tx)
                .await?;
        }
        let items = items_of(&tx, actor.tenant_id, r.id).await?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "account_review.start",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("account_review", r.id))
            .detail("accounts", items.len())
            .detail("due_at", r.due_at),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %actor.tenant_id, review = %r.id, accounts = items.len(), "account review started");
        Ok(ReviewDetail {
            review: summary(r, counts_of(&items), now),
            items: self.item_views(items).await?,
        })
    }

    /// The caller's tenant's reviews, newest first (admins and auditors).
    pub async fn list_reviews(
        &self,
        actor: &Principal,
    ) -> Result<Vec<ReviewSummary>, IdentityError> {
        require_reader(actor, "read account reviews")?;
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let reviews = review::Entity::find()
            .filter(review::Column::TenantId.eq(actor.tenant_id))
            .order_by_desc(review::Column::StartedAt)
            .all(&r)
            .await?;
        let counted: Vec<(Uuid, Option<String>, i64)> = item::Entity::find()
            .select_only()
            .column(item::Column::ReviewId)
            .column(item::Column::Decision)
            .column_as(item::Column::UserId.count(), "n")
            .filter(item::Column::TenantId.eq(actor.tenant_id))
            .group_by(item::Column::ReviewId)
            .group_by(item::Column::Decision)
            .into_tuple()
            .all(&r)
            .await?;
        r.finish().await?;
        let mut counts: HashMap<Uuid, Counts> = HashMap::new();
        for (id, decision, n) in counted {
            counts
                .entry(id)
                .or_default()
                .add(decision.as_deref(), u32::try_from(n).unwrap_or(u32::MAX));
        }
        let now = Utc::now();
        Ok(reviews
            .into_iter()
            .map(|r| {
                let c = counts.get(&r.id).copied().unwrap_or_default();
                summary(r, c, now)
            })
            .collect())
    }

    /// One review with its items (admins and auditors of the tenant; 404 elsewhere).
    pub async fn review(&self, actor: &Principal, id: Uuid) -> Result<ReviewDetail, IdentityError> {
        let r = tenant_reader(self.db(), actor.tenant_id).await?;
        let rv = review_in(&r, actor.tenant_id, id).await?;
        require_reader(actor, "read account reviews")?;
        let items = items_of(&r, actor.tenant_id, id).await?;
        r.finish().await?;
        Ok(ReviewDetail {
            review: summary(rv, counts_of(&items), Utc::now()),
            items: self.item_views(items).await?,
        })
    }

    /// Records the decision on one account of an open review (admins). `disabled` disables the
    /// account and ends its sessions in the same transaction. Decisions are final.
    pub async fn decide_review_item(
        &self,
        actor: &Principal,
        id: Uuid,
        d: DecideItem,
    ) -> Result<ReviewItemView, IdentityError> {
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        review_in(&tx, actor.tenant_id, id).await?;
        // Scope first (404 outside the tenant), then role (403), as everywhere.
        require_admin(actor, "run account reviews")?;
        let note = clean_note(d.note)?;
        if !lock_open(&tx, actor.tenant_id, id).await? {
            return Err(IdentityError::Conflict(
                "this review is closed; its decisions can no longer change".into(),
            ));
        }
        let it = item::Entity::find_by_id((id, d.user_id))
            .filter(item::Column::TenantId.eq(actor.tenant_id))
            .one(&tx)
            .await?
            .ok_or_else(|| {
                IdentityError::NotFound("this account is not part of this review".into())
            })?;
        if let Subject::User { id: me, .. } = &actor.subject {
            if *me == d.user_id && d.decision == ReviewDecision::Disabled {
                return Err(IdentityError::Conflict(
                    "you cannot disable your own account; another admin must decide it".into(),
                ));
            }
        }
        if let Some(prev) = &it.decision {
            return Err(IdentityError::Conflict(format!(
                "this account was already decided ({prev}); decisions are final"
            )));
        }
        let now = Utc::now();
        // Compare-and-set: of two admins deciding at once, only one wins.
        let set = item::Entity::update_many()
            .col_expr(item::Column::Decision, Expr::value(d.decision.as_str()))
            .col_expr(item::Column::DecidedBy, Expr::value(actor.subject.label()))
            .col_expr(item::Column::DecidedAt, Expr::value(now))
            .col_expr(item::Column::Note, Expr::value(note))
            .filter(item::Column::ReviewId.eq(id))
            .filter(item::Column::UserId.eq(d.user_id))
            .filter(item::Column::TenantId.eq(actor.tenant_id))
            .filter(item::Column::Decision.is_null())
            .exec(&tx)
            .await?;
        if set.rows_affected != 1 {
            return Err(IdentityError::Conflict(
                "this account was decided by someone else just now".into(),
            ));
        }
        if d.decision == ReviewDecision::Disabled {
            disable_in(&tx, actor.tenant_id, d.user_id, "account_review").await?;
        }
        let it = item::Entity::find_by_id((id, d.user_id))
            .one(&tx)
            .await?
            .ok_or_else(|| {
                IdentityError::NotFound("this account is not part of this review".into())
            })?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "account_review.decide",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("user", d.user_id))
            .detail("review_id", id)
            .detail("decision", d.decision.as_str())
            .detail("note", &it.note),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(tenant = %actor.tenant_id, review = %id, user = %d.user_id, decision = d.decision.as_str(), "account review decision");
        self.one_item_view(it).await
    }

    /// Closes an open review (admins): refused (409) while items are undecided unless `force`.
    pub async fn close_review(
        &self,
        actor: &Principal,
        id: Uuid,
        c: CloseReview,
    ) -> Result<ReviewSummary, IdentityError> {
        let tx = begin_tenant_write_tx(self.db(), actor.tenant_id).await?;
        review_in(&tx, actor.tenant_id, id).await?;
        require_admin(actor, "run account reviews")?;
        let now = Utc::now();
        let closed = review::Entity::update_many()
            .col_expr(review::Column::Status, Expr::value("closed"))
            .col_expr(review::Column::ClosedAt, Expr::value(now))
            .col_expr(review::Column::ClosedBy, Expr::value(actor.subject.label()))
            .filter(review::Column::Id.eq(id))
            .filter(review::Column::TenantId.eq(actor.tenant_id))
            .filter(review::Column::Status.eq("open"))
            .exec(&tx)
            .await?;
        if closed.rows_affected != 1 {
            return Err(IdentityError::Conflict(
                "this review is already closed".into(),
            ));
        }
        let items = items_of(&tx, actor.tenant_id, id).await?;
        let counts = counts_of(&items);
        if counts.undecided > 0 && !c.force {
            // Dropping the transaction rolls the close back.
            return Err(IdentityError::Conflict(format!(
                "{} account(s) are still undecided; decide them or close with {{\"force\": true}}",
                counts.undecided
            )));
        }
        let rv = review_in(&tx, actor.tenant_id, id).await?;
        crate::audit::record(
            &tx,
            crate::audit::AuditEvent::new(
                actor.tenant_id,
                crate::audit::Actor::from_principal(actor),
                "account_review.close",
                crate::audit::Outcome::Success,
            )
            .target(crate::audit::Target::new("account_review", id))
            .detail("undecided", counts.undecided)
            .detail("forced", c.force),
        )
        .await?;
        tx.commit().await?;
        if counts.undecided > 0 {
            tracing::warn!(tenant = %actor.tenant_id, review = %id, undecided = counts.undecided, "account review closed with undecided accounts");
        }
        Ok(summary(rv, counts, now))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/account-reviews", web::post().to(start_review))
        .route("/api/v1/account-reviews", web::get().to(list_reviews))
        .route("/api/v1/account-reviews/{id}", web::get().to(get_review))
        .route(
            "/api/v1/account-reviews/{id}/decisions",
            web::post().to(decide_review_item),
        )
        .route(
            "/api/v1/account-reviews/{id}/close",
            web::post().to(close_review),
        );
}

/// Starts an ID inventory review of the caller's tenant (admins): every account is snapshotted
/// as an item to decide. Send `{}` for the default due date (30 days). 409 while one is open.
#[utoipa::path(post, path = "/api/v1/account-reviews", tag = "identity", request_body = StartReview,
    responses((status = 201, body = ReviewDetail), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn start_review(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    body: web::Json<StartReview>,
) -> Result<HttpResponse, Problem> {
    Ok(HttpResponse::Created().json(svc.start_review(&p, body.into_inner()).await?))
}

/// The account reviews of the caller's tenant, newest first, with their progress (admins and
/// auditors).
#[utoipa::path(get, path = "/api/v1/account-reviews", tag = "identity",
    responses((status = 200, body = ReviewList), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn list_reviews(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
) -> Result<web::Json<ReviewList>, Problem> {
    Ok(web::Json(ReviewList {
        items: svc.list_reviews(&p).await?,
    }))
}

/// One account review with every item: the snapshot and who decided what, when (admins and
/// auditors).
#[utoipa::path(get, path = "/api/v1/account-reviews/{id}", tag = "identity", params(("id" = Uuid, Path, description = "Review id")),
    responses((status = 200, body = ReviewDetail), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn get_review(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
) -> Result<web::Json<ReviewDetail>, Problem> {
    Ok(web::Json(svc.review(&p, id.into_inner()).await?))
}

/// Decides one account of an open review (admins): `confirmed`, or `disabled`, which disables the
/// account and ends its sessions at once. Decisions are final; nobody disables themselves.
#[utoipa::path(post, path = "/api/v1/account-reviews/{id}/decisions", tag = "identity", params(("id" = Uuid, Path, description = "Review id")), request_body = DecideItem,
    responses((status = 200, body = ReviewItemView), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn decide_review_item(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
    body: web::Json<DecideItem>,
) -> Result<web::Json<ReviewItemView>, Problem> {
    Ok(web::Json(
        svc.decide_review_item(&p, id.into_inner(), body.into_inner())
            .await?,
    ))
}

/// Closes an open review (admins). Refused (409) while accounts are undecided, unless
/// `{"force": true}`: they then stay undecided on the record.
#[utoipa::path(post, path = "/api/v1/account-reviews/{id}/close", tag = "identity", params(("id" = Uuid, Path, description = "Review id")), request_body = CloseReview,
    responses((status = 200, body = ReviewSummary), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)), security(("bearer" = []), ("session" = [])))]
pub async fn close_review(
    Authenticated(p): Authenticated,
    svc: web::Data<IdentityService>,
    id: web::Path<Uuid>,
    body: web::Json<CloseReview>,
) -> Result<web::Json<ReviewSummary>, Problem> {
    Ok(web::Json(
        svc.close_review(&p, id.into_inner(), body.into_inner())
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_dates() {
        let now = Utc::now();
        assert_eq!(due_date(None, now).ok(), Some(now + Duration::days(30)));
        let d = now + Duration::days(7);
        assert_eq!(due_date(Some(d), now).ok(), Some(d));
        assert!(due_date(Some(now + Duration::days(365)), now).is_ok());
        for bad in [now, now - Duration::days(1), now + Duration::days(366)] {
            assert!(matches!(
                due_date(Some(bad), now),
                Err(IdentityError::Invalid(_))
            ));
        }
    }

    #[test]
    fn notes() {
        assert_eq!(clean_note(None).ok(), Some(None));
        assert_eq!(clean_note(Some("   ".into())).ok(), Some(None));
        assert_eq!(
            clean_note(Some(" 退職 2026-10-31 ".into())).ok(),
            Some(Some("退職 2026-10-31".into()))
        );
        assert!(clean_note(Some("あ".repeat(1000))).is_ok());
        assert!(matches!(
            clean_note(Some("あ".repeat(1001))),
            Err(IdentityError::Invalid(_))
        ));
    }

    #[test]
    fn counts_follow_decisions() {
        let mut c = Counts::default();
        c.add(Some("confirmed"), 2);
        c.add(Some("disabled"), 1);
        c.add(None, 3);
        assert_eq!((c.confirmed, c.disabled, c.undecided), (2, 1, 3));
    }
}
