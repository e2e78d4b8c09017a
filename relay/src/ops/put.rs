//! `Put`: store a blob in a mailbox. Anyone who knows a mailbox ID may put;
//! the reply waits for durability (the connection awaits group commit).

use sotto_proto::wire::{self, ErrorCode};
use sotto_proto::{Blob, MailboxId, Ttl};

use crate::config::Limits;
use crate::refusal::Refusal;
use crate::relay::{Relay, Stats};
use crate::storage::{Seq, Storage};

/// A validated put.
#[derive(Debug)]
pub(crate) struct PutRequest {
    pub(crate) mailbox: MailboxId,
    pub(crate) blob: Blob,
    pub(crate) ttl_secs: u32,
}

impl PutRequest {
    pub(crate) fn parse(put: wire::Put, limits: &Limits) -> Result<Self, Refusal> {
        let mailbox = MailboxId::from_slice(&put.mailbox_id)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("mailbox_id: {e}")))?;
        let blob =
            Blob::new(put.blob).map_err(|e| Refusal::new(ErrorCode::BadBlobSize, e.to_string()))?;
        if !limits.blob_sizes.contains(&(blob.len() as u32)) {
            return Err(Refusal::new(
                ErrorCode::BadBlobSize,
                format!("this relay does not accept {}-byte blobs", blob.len()),
            ));
        }
        // Only the protocol's few TTLs, so a client's choice cannot single
        // it out (issue 18 item 11); 0 asks for this relay's default.
        let ttl_secs = match put.ttl_secs {
            0 => limits.default_ttl_secs,
            ttl => {
                let ttl = Ttl::from_secs(ttl)
                    .map_err(|e| Refusal::new(ErrorCode::TtlNotAllowed, e.to_string()))?;
                if ttl.secs() > limits.max_ttl_secs {
                    return Err(Refusal::new(
                        ErrorCode::TtlTooLong,
                        format!(
                            "TTL {}s exceeds this relay's maximum of {}s",
                            ttl.secs(),
                            limits.max_ttl_secs
                        ),
                    ));
                }
                ttl.secs()
            }
        };
        Ok(Self {
            mailbox,
            blob,
            ttl_secs,
        })
    }
}

/// Expiry rounded *up* to the minute, so stored times carry no finer timing
/// than a minute (DESIGN §2.4).
pub(crate) fn expiry(now_secs: u64, ttl_secs: u32) -> u64 {
    let raw = now_secs.saturating_add(u64::from(ttl_secs));
    raw.div_ceil(60).saturating_mul(60)
}

impl<S: Storage> Relay<S> {
    /// Checks quota and disk budget and stores the blob (not yet durable:
    /// the caller awaits group commit before replying).
    pub(crate) fn put(&self, request: &PutRequest) -> Result<Seq, Refusal> {
        let now = self.clock.now_secs();
        let expires_at = expiry(now, request.ttl_secs);
        let limits = &self.limits;
        let len = request.blob.len() as u64;
        let append = |store: &S| {
            // Checked inside the append critical section, so concurrent puts
            // cannot overshoot a quota together.
            if store.total_bytes() + len > limits.disk_budget_bytes {
                return Err(Refusal::new(
                    ErrorCode::DiskFull,
                    "the relay's disk budget is exhausted; fetch and ack still work",
                ));
            }
            let usage = store.mailbox_usage(&request.mailbox);
            if usage.count + 1 > limits.mailbox_max_blobs
                || usage.bytes + len > limits.mailbox_max_bytes
            {
                return Err(Refusal::new(
                    ErrorCode::QuotaExceeded,
                    "this mailbox is full; its owner must fetch and ack first",
                ));
            }
            Ok(store.append(&request.mailbox, &request.blob, now, expires_at)?)
        };
        // Subscribers queue the blob now, in stamp order; they push it once
        // the watermark covers it (see `hub`).
        let appended = |stamp, seq| {
            self.hub
                .appended(&request.mailbox, stamp, seq, &request.blob)
        };
        let stored = self.commit.append(&request.mailbox, append, appended)?;
        Stats::bump(&self.stats.puts, 1);
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_the_minute() {
        assert_eq!(expiry(0, 1), 60);
        assert_eq!(expiry(60, 0), 60);
        assert_eq!(expiry(61, 59), 120);
        assert!(
            expiry(u64::MAX - 5, 100) >= u64::MAX - 5,
            "saturates, never wraps"
        );
    }
}
