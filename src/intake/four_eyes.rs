//! Four-eyes: with `[operators] four_eyes` naming an action, the operator
//! who asks for it records a request instead of acting, and a *different*
//! operator approves it (the action is carried out then) or denies it.
//! The ledger records at most one decision per request, so however many
//! approvers race, the action is carried out at most once; a request not
//! decided within `request_ttl_hours` expires.

use super::{Gateway, IntakeError, Outcome};
use crate::ledger::{Decided, DeliveryRow, NewRequest, RequestRow};
use crate::model::{OverrideAction, RequestState};
use crate::outbound::OutboundError;

/// What carrying out an override did.
#[derive(Debug, Clone)]
pub enum Carried {
    /// release, supersede, redeliver: the file's outcome.
    File(Outcome),
    /// reject: the file closed.
    Rejected(i64),
    /// resend: the new delivery (recorded, not uploaded yet).
    Delivery(DeliveryRow),
}

impl Gateway {
    /// Carry out an override now, as `actor`.
    pub async fn carry_out(
        &self,
        action: OverrideAction,
        id: i64,
        reason: &str,
        actor: &str,
    ) -> Result<Carried, IntakeError> {
        match action {
            OverrideAction::Release => self.release(id, reason, actor).await.map(Carried::File),
            OverrideAction::Supersede => self.supersede(id, reason, actor).await.map(Carried::File),
            OverrideAction::Redeliver => self.redeliver(id, reason, actor).await.map(Carried::File),
            OverrideAction::Reject => self
                .reject(id, reason, actor)
                .await
                .map(|()| Carried::Rejected(id)),
            OverrideAction::Resend => self
                .resend(id, reason, actor)
                .await
                .map(Carried::Delivery)
                .map_err(|e| match e {
                    OutboundError::Refused(m) => IntakeError::Refused(m),
                    OutboundError::NoSuchDelivery(id) => {
                        IntakeError::Refused(format!("no delivery {id} in the ledger"))
                    }
                    OutboundError::Intake(i) => i,
                    OutboundError::Ledger(l) => IntakeError::Ledger(l),
                    other => IntakeError::Internal(other.to_string()),
                }),
        }
    }

    /// Record a request for `action` on file (or delivery) `id`, by
    /// `operator`, instead of carrying it out.
    pub async fn request_override(
        &self,
        action: OverrideAction,
        id: i64,
        reason: &str,
        operator: &str,
    ) -> Result<RequestRow, IntakeError> {
        let exists = if action.on_delivery() {
            self.ledger.delivery(id).await?.is_some()
        } else {
            self.ledger.file(id).await?.is_some()
        };
        if !exists {
            let what = if action.on_delivery() {
                "delivery"
            } else {
                "file"
            };
            return Err(IntakeError::Refused(format!(
                "no {what} {id} in the ledger"
            )));
        }
        let now = self.clock.now();
        let ttl = chrono::Duration::hours(i64::from(self.config.operators.request_ttl_hours));
        let row = self
            .ledger
            .record_request(&NewRequest {
                action,
                file_id: (!action.on_delivery()).then_some(id),
                delivery_id: action.on_delivery().then_some(id),
                operator,
                reason,
                at: now,
                expires_at: now + ttl,
            })
            .await?;
        tracing::info!(request_id = row.id, action = %action, id, operator, "override requested; awaiting a second operator");
        Ok(row)
    }

    /// A request that is still pending at `now`, or why not.
    async fn pending(&self, request_id: i64) -> Result<RequestRow, IntakeError> {
        let r = self
            .ledger
            .request(request_id)
            .await?
            .ok_or_else(|| IntakeError::Refused(format!("no request {request_id}")))?;
        if r.state != RequestState::Pending {
            return Err(IntakeError::Refused(format!(
                "request {request_id} is already {} by {}",
                r.state,
                r.decided_by.as_deref().unwrap_or("?")
            )));
        }
        if r.expired(self.clock.now()) {
            return Err(IntakeError::Refused(format!(
                "request {request_id} expired at {}; ask again",
                r.expires_at
                    .with_timezone(&self.config.timezone)
                    .to_rfc3339()
            )));
        }
        Ok(r)
    }

    /// Approve a pending request as `operator` (not the one who asked) and
    /// carry it out. Refused, changing nothing, when it is the same
    /// operator, when the request expired or was decided (also by an
    /// approver racing this one). An action the file's state no longer
    /// allows is recorded as the request's failed outcome.
    pub async fn approve(
        &self,
        request_id: i64,
        operator: &str,
        reason: Option<&str>,
    ) -> Result<(RequestRow, Carried), IntakeError> {
        let r = self.pending(request_id).await?;
        if r.operator == operator {
            tracing::warn!(request_id, operator, "own request: approval refused");
            return Err(IntakeError::Refused(format!(
                "request {request_id} was made by {operator}; another operator must approve it"
            )));
        }
        if !self
            .ledger
            .decide_request(&r, Decided::Approved, operator, reason, self.clock.now())
            .await?
        {
            return Err(IntakeError::Refused(format!(
                "request {request_id} was decided by another operator meanwhile"
            )));
        }
        let target = r.file_id.or(r.delivery_id).unwrap_or_default();
        let why = format!(
            "{} (request {} by {}, approved by {})",
            r.reason, r.id, r.operator, operator
        );
        let result = self.carry_out(r.action, target, &why, operator).await;
        let (done, message) = match &result {
            Ok(Carried::File(o)) => (true, format!("{}: {}", o.verdict, o.reason)),
            Ok(Carried::Rejected(id)) => (true, format!("file {id} rejected")),
            Ok(Carried::Delivery(d)) => (true, format!("delivery {} recorded", d.id)),
            Err(e) => (false, e.to_string()),
        };
        self.ledger
            .request_outcome(&r, done, &message, operator, self.clock.now())
            .await?;
        let carried = result?;
        let r = self.ledger.request(request_id).await?.unwrap_or(r);
        Ok((r, carried))
    }

    /// Deny a pending request (its own operator may withdraw it).
    pub async fn deny(
        &self,
        request_id: i64,
        operator: &str,
        reason: &str,
    ) -> Result<RequestRow, IntakeError> {
        let r = self.pending(request_id).await?;
        if !self
            .ledger
            .decide_request(
                &r,
                Decided::Denied,
                operator,
                Some(reason),
                self.clock.now(),
            )
            .await?
        {
            return Err(IntakeError::Refused(format!(
                "request {request_id} was decided by another operator meanwhile"
            )));
        }
        Ok(self.ledger.request(request_id).await?.unwrap_or(r))
    }
}
