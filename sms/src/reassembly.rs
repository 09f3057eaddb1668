//! Reassembling concatenated messages (TS 23.040 9.2.3.24.1).
//!
//! Parts arrive in any order, sometimes twice (the network retries when an
//! acknowledgement is lost), and sometimes never. Sets are keyed by
//! (sender, reference, total, reference width); a part that repeats one
//! already held is dropped if identical and refused if not, and incomplete
//! sets are handed back by [`Reassembler::expire`] rather than silently
//! discarded, so the caller can still show what arrived.
//!
//! Time is a parameter, not read from a clock, so tests are deterministic.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::deliver::Deliver;
use crate::submit::Submit;
use crate::udh::{ConcatReference, Concatenation};
use crate::user_data::{Payload, UserData};
use crate::{Error, gsm7, ucs2};

/// A PDU that can be one part of a concatenated message.
pub trait Fragment {
    /// The other party, which scopes the concatenation reference.
    fn peer(&self) -> &Address;
    /// The user data, header included.
    fn user_data(&self) -> &UserData;
}

impl Fragment for Deliver {
    fn peer(&self) -> &Address {
        &self.originator
    }
    fn user_data(&self) -> &UserData {
        &self.user_data
    }
}

/// SUBMITs are reassembled when reading back a modem's sent-messages store.
impl Fragment for Submit {
    fn peer(&self) -> &Address {
        &self.destination
    }
    fn user_data(&self) -> &UserData {
        &self.user_data
    }
}

/// What identifies one concatenated message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReassemblyKey {
    /// Sender (or recipient, for SUBMITs).
    pub peer: Address,
    /// Reference, with its width.
    pub reference: ConcatReference,
    /// Number of parts.
    pub total: u8,
}

/// A whole message: one part, or all parts of a concatenated one in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<F> {
    /// `None` for a message that was not concatenated.
    pub key: Option<ReassemblyKey>,
    /// The parts, in sequence order.
    pub parts: Vec<F>,
}

impl<F: Fragment> Message<F> {
    /// The joined text, or `None` if any part is binary.
    ///
    /// Parts in the same alphabet are joined before decoding, so a
    /// character a sender split across parts is still decoded whole.
    pub fn text(&self) -> Option<String> {
        let payloads = || self.parts.iter().map(|p| &p.user_data().payload);
        let mut joined: Vec<u8> = Vec::new();
        let first = payloads().next()?;
        let same_alphabet = payloads().all(|p| p.alphabet() == first.alphabet());
        if !same_alphabet {
            return payloads().map(Payload::text).collect();
        }
        for p in payloads() {
            joined.extend_from_slice(p.as_slice());
        }
        match first {
            Payload::Gsm7(_) => Some(gsm7::decode(&joined)),
            Payload::Ucs2(_) => Some(ucs2::decode(&joined)),
            Payload::Binary(_) => None,
        }
    }

    /// The joined payload octets (or septets), for binary messages.
    pub fn data(&self) -> Vec<u8> {
        self.parts
            .iter()
            .flat_map(|p| p.user_data().payload.as_slice().iter().copied())
            .collect()
    }
}

/// An incomplete set dropped by [`Reassembler::expire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete<F> {
    /// Which message.
    pub key: ReassemblyKey,
    /// When its first part arrived.
    pub first_seen: Instant,
    /// The parts that did arrive, with their sequence numbers, in order.
    pub parts: Vec<(u8, F)>,
}

impl<F> Incomplete<F> {
    /// Sequence numbers that never arrived.
    pub fn missing(&self) -> Vec<u8> {
        (1..=self.key.total)
            .filter(|s| !self.parts.iter().any(|(have, _)| have == s))
            .collect()
    }
}

/// What [`Reassembler::push`] did with a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push<F> {
    /// The message is whole.
    Complete(Message<F>),
    /// Held; more parts are needed.
    Pending {
        /// Which message.
        key: ReassemblyKey,
        /// Parts held so far.
        received: usize,
    },
    /// An identical copy of a part already held; dropped.
    Duplicate,
}

struct PendingSet<F> {
    first_seen: Instant,
    /// Index = sequence − 1.
    slots: Vec<Option<F>>,
}

/// Collects concatenated parts into whole messages.
pub struct Reassembler<F = Deliver> {
    timeout: Duration,
    pending: HashMap<ReassemblyKey, PendingSet<F>>,
}

impl<F: Fragment> Reassembler<F> {
    /// A reassembler that gives up on a set `timeout` after its first part.
    pub fn new(timeout: Duration) -> Self {
        Reassembler {
            timeout,
            pending: HashMap::new(),
        }
    }

    /// Number of incomplete sets held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds a part received at `now`.
    ///
    /// A PDU without a (valid) concatenation element is complete by itself.
    /// A part whose sequence number is already held is a
    /// [`Push::Duplicate`] if its user data is identical and
    /// [`Error::ConflictingPart`] otherwise; the part held first is kept.
    pub fn push(&mut self, part: F, now: Instant) -> Result<Push<F>, Error> {
        let Some(Concatenation {
            reference,
            total,
            sequence,
        }) = part
            .user_data()
            .header
            .as_ref()
            .and_then(|h| h.concatenation())
        else {
            return Ok(Push::Complete(Message {
                key: None,
                parts: vec![part],
            }));
        };
        let key = ReassemblyKey {
            peer: part.peer().clone(),
            reference,
            total,
        };
        // `concatenation()` only returns 1 <= sequence <= total.
        let index = usize::from(sequence).saturating_sub(1);
        let set = match self.pending.entry(key.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(PendingSet {
                first_seen: now,
                slots: (0..total).map(|_| None).collect(),
            }),
        };
        let Some(slot) = set.slots.get_mut(index) else {
            return Err(Error::ConflictingPart { sequence });
        };
        if let Some(held) = slot {
            return if held.user_data() == part.user_data() {
                Ok(Push::Duplicate)
            } else {
                Err(Error::ConflictingPart { sequence })
            };
        }
        *slot = Some(part);
        let received = set.slots.iter().filter(|s| s.is_some()).count();
        if received < usize::from(total) {
            return Ok(Push::Pending { key, received });
        }
        let parts = self
            .pending
            .remove(&key)
            .map(|set| set.slots.into_iter().flatten().collect())
            .unwrap_or_default();
        Ok(Push::Complete(Message {
            key: Some(key),
            parts,
        }))
    }

    /// Drops every set whose first part arrived `timeout` or longer before
    /// `now`, and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Incomplete<F>> {
        let timeout = self.timeout;
        let expired: Vec<ReassemblyKey> = self
            .pending
            .iter()
            .filter(|(_, set)| now.saturating_duration_since(set.first_seen) >= timeout)
            .map(|(key, _)| key.clone())
            .collect();
        let mut out: Vec<Incomplete<F>> = expired
            .into_iter()
            .filter_map(|key| {
                let set = self.pending.remove(&key)?;
                let parts = (1..=key.total)
                    .zip(set.slots)
                    .filter_map(|(sequence, slot)| slot.map(|p| (sequence, p)))
                    .collect();
                Some(Incomplete {
                    key,
                    first_seen: set.first_seen,
                    parts,
                })
            })
            .collect();
        out.sort_by_key(|i| i.first_seen);
        out
    }
}
