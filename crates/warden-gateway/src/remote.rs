//! What concerns a call or a session that another replica of the cluster holds: a
//! legacy client's answer to a server request that replica asked, a modern client's
//! retry of a call parked there, and the session messages the bus carries. Every
//! replica listens to the bus ([`listen`]) and acts on what names it.

use serde_json::{Map, Value};
use tokio::sync::broadcast;
use warden_store::Principal;

use crate::answer::hardening;
use crate::error::RpcError;
use crate::session::{Session, holder_of};
use crate::shared::{ACCEPT_TIMEOUT, BusMessage, BusPrincipal, RESUME_TIMEOUT};
use crate::state::AppState;

/// A legacy client's answer that this replica does not hold: passed to the replica
/// its id names. An id that names no replica (or this one) has no one waiting.
pub(crate) async fn pass_answer(
    state: &AppState,
    session: &Session,
    principal: &Principal,
    id: &str,
    outcome: Result<Value, Value>,
) {
    let Some(cluster) = state.cluster() else {
        return;
    };
    let Some(holder) = holder_of(id).filter(|holder| *holder != cluster.replica_id()) else {
        return;
    };
    let answer = BusMessage::Answer {
        to: holder.to_owned(),
        session: session.id.clone(),
        key_id: principal.key_id.clone(),
        request: id.to_owned(),
        outcome,
    };
    if cluster.publish(&answer).await.is_err() {
        tracing::warn!("a client's answer could not be passed to the replica that asked");
    }
}

/// A modern client's retry of a call parked on replica `holder`: run there, its
/// outcome brought back here.
pub(crate) async fn resume_elsewhere(
    state: &AppState,
    holder: &str,
    principal: &Principal,
    upstream: &str,
    tool: Option<&str>,
    method: &str,
    params: Map<String, Value>,
) -> Result<Value, RpcError> {
    let cluster = state.cluster().ok_or_else(unknown_state)?;
    let ticket = state.tickets().issue();
    let number = ticket.number;
    // However this ends (an outcome, a deadline, the client gone), the ticket goes.
    struct Forget<'a>(&'a crate::shared::Tickets, u64);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            self.0.forget(self.1);
        }
    }
    let _forget = Forget(state.tickets(), number);
    let resume = BusMessage::Resume {
        to: holder.to_owned(),
        from: cluster.replica_id().to_owned(),
        ticket: number,
        principal: BusPrincipal::of(principal),
        upstream: upstream.to_owned(),
        tool: tool.map(str::to_owned),
        method: method.to_owned(),
        params,
    };
    if cluster.publish(&resume).await.is_err() {
        return Err(RpcError::shared_unavailable());
    }
    // A holder that is gone (or a message lost) is known within seconds; a call that
    // runs takes as long as it takes.
    let outcome = async {
        tokio::time::timeout(ACCEPT_TIMEOUT, ticket.accepted)
            .await
            .ok()?
            .ok()?;
        tokio::time::timeout(RESUME_TIMEOUT, ticket.outcome)
            .await
            .ok()?
            .ok()
    };
    outcome.await.unwrap_or_else(|| Err(unknown_state()))
}

fn unknown_state() -> RpcError {
    RpcError::invalid_params(
        "params.requestState is unknown or expired: send the request again without it",
    )
}

/// Acts on what the other replicas say, until the bus closes.
pub(crate) async fn listen(state: AppState, mut messages: broadcast::Receiver<BusMessage>) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "cluster messages were missed (this replica fell behind)"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(cluster) = state.cluster() else {
            return;
        };
        let ours = cluster.replica_id();
        match message {
            BusMessage::Closed { session } => state.sessions().close_here(&session),
            BusMessage::Push { session, message } => {
                if let Some(session) = state.sessions().here(&session) {
                    session.push(&message, false);
                }
            }
            BusMessage::ListChanged { from, message } if from != ours => {
                for session in state.sessions().all() {
                    session.push(&message, false);
                }
            }
            BusMessage::Answer {
                to,
                session,
                key_id,
                request,
                outcome,
            } if to == ours => {
                // Only the key that owns the session answers its questions.
                let held = state
                    .sessions()
                    .here(&session)
                    .filter(|session| session.belongs_to(&key_id))
                    .and_then(|session| session.take_request(&request));
                if let Some(held) = held {
                    held.respond(outcome);
                }
            }
            BusMessage::Resume {
                to,
                from,
                ticket,
                principal,
                upstream,
                tool,
                method,
                params,
            } if to == ours => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Some(cluster) = state.cluster() {
                        let accepted = BusMessage::Accepted {
                            to: from.clone(),
                            ticket,
                        };
                        let _ = cluster.publish(&accepted).await;
                    }
                    let outcome = resume_here(
                        &state,
                        &principal,
                        &upstream,
                        tool.as_deref(),
                        &method,
                        params,
                    )
                    .await;
                    let Some(cluster) = state.cluster() else {
                        return;
                    };
                    let resumed = BusMessage::Resumed {
                        to: from,
                        ticket,
                        outcome: outcome.map_err(Into::into),
                    };
                    if cluster.publish(&resumed).await.is_err() {
                        tracing::warn!("a resumed call's outcome could not be passed back");
                    }
                });
            }
            BusMessage::Accepted { to, ticket } if to == ours => state.tickets().accepted(ticket),
            BusMessage::Resumed {
                to,
                ticket,
                outcome,
            } if to == ours => state.tickets().settle(ticket, outcome.map_err(Into::into)),
            _ => {}
        }
    }
}

/// Another replica's client retried a call parked here: the parked call checks that
/// the retry is the same key's, with the same method and arguments.
async fn resume_here(
    state: &AppState,
    principal: &BusPrincipal,
    upstream: &str,
    tool: Option<&str>,
    method: &str,
    params: Map<String, Value>,
) -> Result<Value, RpcError> {
    let principal = principal.principal().ok_or_else(unknown_state)?;
    let upstream = state
        .upstreams()
        .all()
        .into_iter()
        .find(|u| u.name() == upstream)
        .ok_or_else(unknown_state)?;
    // The result is hardened by the replica that answers the client, as any other.
    let hardening = hardening(&state.results(), &upstream, tool);
    crate::input_required::call_for_modern_client(
        state.input_lot(),
        hardening.as_ref(),
        &upstream,
        &principal,
        method,
        params,
        None,
    )
    .await
}

/// The replicas' bus, listened to for as long as the gateway serves.
pub(crate) fn start(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    let messages = state.cluster()?.messages();
    Some(tokio::spawn(listen(state.clone(), messages)))
}
