//! Owner-only mailbox operations: fetch, ack, subscribe, unsubscribe.
//!
//! Every one is authorized the same way (DESIGN §4): the request names the
//! mailbox and carries the blinded key `B`; the relay checks that
//! `SHA-256("sotto/mailbox/v1" || B)` is that mailbox and that `B` signed
//! `"sotto/req/v1" || challenge || body` (`verify_strict`). The body is
//! decoded only after the signature verified.

use std::sync::Arc;

use sotto_proto::Message;
use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{AuthError, BlindedKey, Challenge, MailboxId};

use crate::refusal::Refusal;
use crate::relay::{Relay, Stats};
use crate::storage::{Seq, Storage};

/// Most seqs one ack may name (the protocol's limit, shared with clients).
pub(crate) use sotto_proto::MAX_ACK_SEQS;

/// An authorized owner operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OwnerOp {
    Fetch { after: Seq, limit: u32 },
    Ack { seqs: Vec<Seq> },
    Subscribe { after: Seq },
    Unsubscribe,
}

/// Verifies the owner's signature and decodes the operation.
pub(crate) fn authorize(
    request: &wire::MailboxRequest,
    challenge: &Challenge,
) -> Result<(MailboxId, OwnerOp), Refusal> {
    let mailbox = MailboxId::from_slice(&request.mailbox_id)
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("mailbox_id: {e}")))?;
    let key = BlindedKey::from_slice(&request.blinded_key)
        .map_err(|e| Refusal::new(ErrorCode::Unauthorized, format!("blinded_key: {e}")))?;
    key.authorize(&mailbox, challenge, &request.body, &request.signature)
        .map_err(|e| match e {
            AuthError::WrongMailbox => Refusal::new(
                ErrorCode::Unauthorized,
                "the key does not belong to this mailbox",
            ),
            AuthError::BadSignature => Refusal::new(
                ErrorCode::Unauthorized,
                "the request signature does not verify for this connection",
            ),
        })?;
    let op = wire::MailboxOp::decode(request.body.clone())
        .map_err(|e| Refusal::new(ErrorCode::Malformed, format!("mailbox operation: {e}")))?;
    let op = match op.op {
        Some(wire::mailbox_op::Op::Fetch(f)) => OwnerOp::Fetch {
            after: f.after,
            limit: f.limit,
        },
        Some(wire::mailbox_op::Op::Ack(a)) => {
            if a.seqs.len() > MAX_ACK_SEQS {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("one ack may name at most {MAX_ACK_SEQS} blobs"),
                ));
            }
            OwnerOp::Ack { seqs: a.seqs }
        }
        Some(wire::mailbox_op::Op::Subscribe(s)) => OwnerOp::Subscribe { after: s.after },
        Some(wire::mailbox_op::Op::Unsubscribe(_)) => OwnerOp::Unsubscribe,
        None => {
            return Err(Refusal::new(
                ErrorCode::UnknownRequest,
                "unknown mailbox operation",
            ));
        }
    };
    Ok((mailbox, op))
}

impl<S: Storage> Relay<S> {
    /// One page of durable blobs after `after`.
    pub(crate) fn fetch(
        &self,
        mailbox: &MailboxId,
        after: Seq,
        limit: u32,
    ) -> Result<wire::FetchOk, Refusal> {
        let limit = if limit == 0 { u32::MAX } else { limit };
        let page = self.fetch_page(mailbox, after, limit as usize)?;
        Stats::bump(&self.stats.fetches, 1);
        Ok(wire::FetchOk {
            blobs: page
                .blobs
                .into_iter()
                .map(|b| wire::StoredBlob {
                    seq: b.seq,
                    blob: b.blob.into_bytes(),
                })
                .collect(),
            more: page.more,
        })
    }

    /// Deletes the named blobs of `mailbox` (not yet durable: the caller
    /// awaits group commit before replying).
    pub(crate) fn ack(&self, mailbox: &MailboxId, seqs: &[Seq]) -> Result<u32, Refusal> {
        let deleted = self.storage().delete(mailbox, seqs)?;
        Stats::bump(&self.stats.acked, u64::from(deleted));
        Ok(deleted)
    }

    /// [`Self::ack`] on a blocking thread, one ack at a time relay-wide,
    /// with a pause as long as the deletion after it.
    ///
    /// Deleting is the costliest storage step per blob (sled rebuilds and
    /// merges the leaves it empties), and receivers that ack in batches
    /// often ack together: 64 receivers acking 64 blobs each kept both of a
    /// 2-core relay's async workers busy for 20–50 ms at a time, and every
    /// put and push waited behind them (put→push p99 24–31 ms at 5,000
    /// msg/s). Paced like this the deletions take at most half a core and
    /// the workers keep serving. The connection awaits this before its
    /// next request, so requests still take effect in order.
    pub(crate) async fn ack_apart(
        self: &Arc<Self>,
        mailbox: MailboxId,
        seqs: Vec<Seq>,
    ) -> Result<u32, Refusal> {
        // Neither happens in a running relay: the semaphore is never closed,
        // and the task ends unless the runtime is stopping.
        let failed = || {
            Refusal::new(
                ErrorCode::Internal,
                "the relay could not finish this ack; retry",
            )
        };
        let turn = self
            .deleting
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| failed())?;
        let relay = self.clone();
        let started = tokio::time::Instant::now();
        let deleted = tokio::task::spawn_blocking(move || relay.ack(&mailbox, &seqs))
            .await
            .map_err(|_| failed())?;
        // At most half a core: the next ack's deletions start no sooner
        // than these took, so a burst of acks is spread out instead of
        // taking a core for its whole length (the flushes that make those
        // deletions durable also grow with their rate).
        let took = started.elapsed();
        tokio::spawn(async move {
            tokio::time::sleep(took).await;
            drop(turn);
        });
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use sotto_proto::request_signing_message;

    fn request(
        signer: &SigningKey,
        mailbox: MailboxId,
        challenge: &Challenge,
        op: wire::mailbox_op::Op,
    ) -> wire::MailboxRequest {
        let body = wire::MailboxOp { op: Some(op) }.encode_to_vec();
        let signature = signer.sign(&request_signing_message(challenge, &body));
        wire::MailboxRequest {
            mailbox_id: mailbox.as_bytes().to_vec().into(),
            blinded_key: signer.verifying_key().as_bytes().to_vec().into(),
            body: body.into(),
            signature: signature.to_bytes().to_vec().into(),
        }
    }

    #[test]
    fn an_owner_request_is_decoded_only_when_authorized() {
        let owner = SigningKey::from_bytes(&[3; 32]);
        let mailbox = MailboxId::for_key_bytes(owner.verifying_key().as_bytes());
        let challenge = Challenge::from_bytes([1; 32]);
        let ack = wire::mailbox_op::Op::Ack(wire::Ack { seqs: vec![4, 5] });
        let good = request(&owner, mailbox, &challenge, ack.clone());
        assert_eq!(
            authorize(&good, &challenge).unwrap(),
            (mailbox, OwnerOp::Ack { seqs: vec![4, 5] })
        );
        // Replayed on a connection with another challenge.
        let replay = authorize(&good, &Challenge::from_bytes([2; 32])).unwrap_err();
        assert_eq!(replay.code, ErrorCode::Unauthorized);
        // A valid signature by a key that is not the mailbox's.
        let intruder = SigningKey::from_bytes(&[4; 32]);
        let foreign = request(&intruder, mailbox, &challenge, ack);
        assert_eq!(
            authorize(&foreign, &challenge).unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }
}
