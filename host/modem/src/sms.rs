//! Short messages through a modem in PDU mode (TS 27.005): send (one part or many, with status
//! reports), list, read, delete, and watch for incoming messages.
//!
//! The PDUs themselves come from `simlab-sms`; this module moves them over AT and keeps the
//! bookkeeping honest: a part counts as sent only once the modem said `+CMGS: <mr>` and `OK`,
//! and a multipart message that fails part-way says exactly which parts went out.

use super::syntax;
use super::urc::{self, Urc};
use super::{Modem, ModemError};
use simlab_sms::{Decoded, Deliver, EncodedPdu, Pdu, Push, Reassembler, StatusReport};
use std::collections::{HashSet, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One part the modem accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentPart {
    /// 1-based part number.
    pub part: usize,
    /// The message reference the modem assigned (`+CMGS: <mr>`); status reports carry it.
    pub mr: u8,
}

/// A message in the modem's storage.
#[derive(Clone, Debug)]
pub struct Stored {
    pub index: u32,
    /// `<stat>`: 0 received unread, 1 received read, 2 stored unsent, 3 stored sent.
    pub status: u8,
    /// The PDU as the modem showed it (service-centre prefix included).
    pub pdu: String,
    /// The decoded PDU, or why it does not decode.
    pub decoded: Result<Decoded, simlab_sms::Error>,
}

/// `<stat>` in words.
pub fn status_name(stat: u8) -> &'static str {
    match stat {
        0 => "rec_unread",
        1 => "rec_read",
        2 => "sto_unsent",
        3 => "sto_sent",
        _ => "unknown",
    }
}

/// The new-message indication settings tried, best first: `+CMTI` for messages (stored, so
/// nothing is lost if simlab is not there to read it) and `+CDS` for status reports
/// (REFERENCE.md), then what older firmware accepts.
const CNMI_CHOICES: [&str; 5] = [
    "AT+CNMI=2,1,0,1,0",
    "AT+CNMI=2,1,0,2,0",
    "AT+CNMI=1,1,0,1,0",
    "AT+CNMI=1,1,0,2,0",
    "AT+CNMI=2,1,0,0,0",
];

/// How a status report arrived.
#[derive(Clone, Debug)]
pub struct ReportOutcome {
    pub part: SentPart,
    /// `None`: none arrived in time.
    pub report: Option<StatusReport>,
}

/// Something `sms watch` saw.
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// A whole message: one part, or every part of a concatenated one.
    Message {
        parts: Vec<Deliver>,
        text: Option<String>,
        /// Storage indexes the parts were read from (empty for `+CMT` direct delivery).
        indexes: Vec<u32>,
    },
    /// A status report.
    StatusReport(StatusReport),
    /// A concatenated message whose missing parts never came.
    Incomplete {
        parts: Vec<(u8, Deliver)>,
        missing: Vec<u8>,
    },
    /// A PDU that does not decode; kept in storage, so nothing is lost.
    Undecodable { index: Option<u32>, error: String },
}

impl Modem {
    /// Makes the modem ready for SMS: SIM ready (busy retried), PDU mode.
    pub fn prepare_sms(&mut self) -> Result<(), ModemError> {
        self.require_sim_ready()?;
        self.at.command("AT+CMGF=0")?;
        Ok(())
    }

    /// Turns on new-message indications (and status reports when `reports`); returns the
    /// setting the modem accepted.
    pub fn enable_indications(&mut self, reports: bool) -> Result<&'static str, ModemError> {
        let mut last = None;
        for choice in CNMI_CHOICES {
            if reports && choice.ends_with(",0,0") {
                continue;
            }
            match self.at.command(choice) {
                Ok(_) => return Ok(choice),
                Err(
                    e
                    @ (ModemError::Error { .. } | ModemError::Cme { .. } | ModemError::Cms { .. }),
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ModemError::Error {
            command: "AT+CNMI".into(),
        }))
    }

    /// Sends encoded parts in order with `AT+CMGS`. Stops at the first failure: the error is
    /// [`ModemError::PartialSend`] listing the parts that did go out (possibly none) — a part
    /// never counts as sent without the modem's `+CMGS: <mr>`.
    pub fn send_pdus(&mut self, parts: &[EncodedPdu]) -> Result<Vec<SentPart>, ModemError> {
        let mut sent = Vec::with_capacity(parts.len());
        for (i, pdu) in parts.iter().enumerate() {
            let cmd = format!("AT+CMGS={}", pdu.cmgs_length());
            let result = self.at.submit(&cmd, &pdu.to_hex()).and_then(|r| {
                let info = r.info("+CMGS").ok_or_else(|| ModemError::Malformed {
                    command: cmd.clone(),
                    reason: "OK without +CMGS: <mr>".into(),
                })?;
                let mr = syntax::fields(info)
                    .first()
                    .and_then(|f| f.parse::<u8>().ok())
                    .ok_or_else(|| ModemError::Malformed {
                        command: cmd.clone(),
                        reason: format!("+CMGS: {info} is not a message reference"),
                    })?;
                Ok(mr)
            });
            match result {
                Ok(mr) => sent.push(SentPart { part: i + 1, mr }),
                Err(cause) => {
                    return Err(ModemError::PartialSend {
                        sent,
                        total: parts.len(),
                        failed_part: i + 1,
                        cause: Box::new(cause),
                    });
                }
            }
        }
        Ok(sent)
    }

    /// Waits up to `timeout` for the status reports of `parts`, from `+CDS` (direct) or
    /// `+CDSI` (stored: read, then deleted). `urcs` must have been subscribed before sending,
    /// so a report that arrived during the send is not missed.
    pub fn wait_reports(
        &mut self,
        urcs: &mpsc::Receiver<Urc>,
        parts: &[SentPart],
        timeout: Duration,
    ) -> Result<Vec<ReportOutcome>, ModemError> {
        let deadline = Instant::now() + timeout;
        let mut out: Vec<ReportOutcome> = parts
            .iter()
            .map(|p| ReportOutcome {
                part: p.clone(),
                report: None,
            })
            .collect();
        loop {
            for u in urcs.try_iter().collect::<Vec<_>>() {
                let report = match u {
                    Urc::StatusReport { pdu, .. } => decode_report(&pdu),
                    Urc::StatusReportStored { index, .. } => {
                        let stored = self.read(index)?;
                        let _ = self.delete(index);
                        stored.decoded.ok().and_then(|d| match d.pdu {
                            Pdu::StatusReport(s) => Some(s),
                            _ => None,
                        })
                    }
                    _ => None,
                };
                if let Some(report) = report
                    && let Some(slot) = out.iter_mut().find(|o| {
                        o.part.mr == report.message_reference
                            && o.report.as_ref().is_none_or(|r| !r.status.is_final())
                    })
                {
                    slot.report = Some(report);
                }
            }
            let all_final = out
                .iter()
                .all(|o| o.report.as_ref().is_some_and(|r| r.status.is_final()));
            let now = Instant::now();
            if all_final || now >= deadline {
                return Ok(out);
            }
            self.at.poll(deadline - now)?;
        }
    }

    /// `AT+CMGL=<stat>` (4 = all) in PDU mode.
    pub fn list(&mut self, stat: u8) -> Result<Vec<Stored>, ModemError> {
        let cmd = format!("AT+CMGL={stat}");
        let r = self.at.command(&cmd)?;
        let mut out = Vec::new();
        let mut lines = r.lines.iter().peekable();
        while let Some(line) = lines.next() {
            let Some(args) = line
                .get(..6)
                .filter(|p| p.eq_ignore_ascii_case("+CMGL:"))
                .and(line.get(6..))
            else {
                continue;
            };
            let f = syntax::fields(args.trim());
            let (Some(index), Some(status)) = (
                f.first().and_then(|s| s.parse::<u32>().ok()),
                f.get(1).and_then(|s| s.parse::<u8>().ok()),
            ) else {
                return Err(ModemError::Malformed {
                    command: cmd,
                    reason: format!("bad +CMGL header {line:?}"),
                });
            };
            let pdu = match lines.peek() {
                Some(next) if urc::prefix(next).is_none() => {
                    lines.next().cloned().unwrap_or_default()
                }
                _ => String::new(),
            };
            out.push(stored(index, status, pdu));
        }
        Ok(out)
    }

    /// `AT+CMGR=<index>`.
    pub fn read(&mut self, index: u32) -> Result<Stored, ModemError> {
        let cmd = format!("AT+CMGR={index}");
        let r = self.at.command(&cmd)?;
        let header = r.info("+CMGR").ok_or_else(|| ModemError::Malformed {
            command: cmd.clone(),
            reason: "no +CMGR: line (empty slot?)".into(),
        })?;
        let status = syntax::fields(header)
            .first()
            .and_then(|s| s.parse::<u8>().ok())
            .unwrap_or(u8::MAX);
        let pdu = r
            .lines
            .iter()
            .find(|l| urc::prefix(l).is_none())
            .cloned()
            .unwrap_or_default();
        Ok(stored(index, status, pdu))
    }

    /// `AT+CMGD=<index>`.
    pub fn delete(&mut self, index: u32) -> Result<(), ModemError> {
        self.at.command(&format!("AT+CMGD={index}")).map(|_| ())
    }

    /// Deletes every message: `AT+CMGD=1,4` where the modem knows the flag, otherwise one by
    /// one from a listing. Returns how many were deleted one by one (`None` for the flag).
    pub fn delete_all(&mut self) -> Result<Option<usize>, ModemError> {
        match self.at.command("AT+CMGD=1,4") {
            Ok(_) => return Ok(None),
            Err(ModemError::Error { .. } | ModemError::Cms { .. } | ModemError::Cme { .. }) => {}
            Err(e) => return Err(e),
        }
        let all = self.list(4)?;
        for m in &all {
            self.delete(m.index)?;
        }
        Ok(Some(all.len()))
    }

    /// Watches for incoming messages until `handler` returns false or the stop flag is set
    /// (then [`ModemError::Interrupted`]). Parts of concatenated messages are reassembled;
    /// sets still incomplete after `reassembly` are handed over as
    /// [`WatchEvent::Incomplete`]. Messages read from storage are deleted unless `keep`;
    /// undecodable ones are always kept.
    pub fn watch(
        &mut self,
        keep: bool,
        reassembly: Duration,
        handler: &mut dyn FnMut(WatchEvent) -> bool,
    ) -> Result<(), ModemError> {
        let urcs = self.at.subscribe();
        let mut reassembler: Reassembler<Deliver> = Reassembler::new(reassembly);
        // Storage index of each held part, so the set is deleted once it is whole.
        let mut held: Vec<(Deliver, u32)> = Vec::new();
        // (index, PDU) already handled: a message found in the backlog may also have its
        // +CMTI queued, and must not be printed twice.
        let mut seen: HashSet<(u32, String)> = HashSet::new();
        // Messages that arrived before anyone watched, or while the indications were being
        // set up: their +CMTI went to nobody.
        let mut queue: VecDeque<Item> = self.list(0)?.into_iter().map(Item::Stored).collect();
        loop {
            queue.extend(urcs.try_iter().map(Item::Urc));
            while let Some(item) = queue.pop_front() {
                let (decoded, index) = match item {
                    Item::Stored(s) => {
                        if seen.len() > SEEN_MAX {
                            seen.clear();
                        }
                        if !seen.insert((s.index, s.pdu.trim().to_ascii_uppercase())) {
                            continue;
                        }
                        (s.decoded.map_err(|e| e.to_string()), Some(s.index))
                    }
                    Item::Urc(
                        Urc::MessageStored { index, .. } | Urc::StatusReportStored { index, .. },
                    ) => {
                        match self.read(index) {
                            Ok(s) => queue.push_front(Item::Stored(s)),
                            // Already handled from the backlog and deleted, or deleted by
                            // someone else: nothing to show.
                            Err(
                                ModemError::Cms { .. }
                                | ModemError::Cme { .. }
                                | ModemError::Error { .. }
                                | ModemError::Malformed { .. },
                            ) => {}
                            Err(e) => return Err(e),
                        }
                        continue;
                    }
                    Item::Urc(Urc::Message { pdu, .. } | Urc::StatusReport { pdu, .. }) => {
                        (decode_hex(&pdu), None)
                    }
                    Item::Urc(_) => continue,
                };
                let event = match decoded {
                    Err(error) => Some(WatchEvent::Undecodable { index, error }),
                    Ok(d) => match d.pdu {
                        Pdu::StatusReport(s) => {
                            if let (Some(i), false) = (index, keep) {
                                self.delete(i)?;
                            }
                            Some(WatchEvent::StatusReport(s))
                        }
                        Pdu::Deliver(m) => {
                            if let Some(i) = index {
                                held.push((m.clone(), i));
                            }
                            match reassembler.push(m, Instant::now()) {
                                Ok(Push::Complete(msg)) => {
                                    let indexes = take_indexes(&mut held, &msg.parts);
                                    if !keep {
                                        for i in &indexes {
                                            self.delete(*i)?;
                                        }
                                    }
                                    Some(WatchEvent::Message {
                                        text: msg.text(),
                                        parts: msg.parts,
                                        indexes,
                                    })
                                }
                                Ok(Push::Pending { .. }) => None,
                                Ok(Push::Duplicate) => {
                                    // Already held: drop the copy from storage.
                                    if let (Some(i), false) = (index, keep) {
                                        held.retain(|(_, j)| *j != i);
                                        self.delete(i)?;
                                    }
                                    None
                                }
                                Err(e) => Some(WatchEvent::Undecodable {
                                    index,
                                    error: e.to_string(),
                                }),
                            }
                        }
                        Pdu::Submit(_) => Some(WatchEvent::Undecodable {
                            index,
                            error: "a SUBMIT where a DELIVER was expected".into(),
                        }),
                    },
                };
                if let Some(event) = event
                    && !handler(event)
                {
                    return Ok(());
                }
            }
            for inc in reassembler.expire(Instant::now()) {
                let missing = inc.missing();
                let parts: Vec<(u8, Deliver)> = inc.parts;
                let delivers: Vec<Deliver> = parts.iter().map(|(_, d)| d.clone()).collect();
                let _ = take_indexes(&mut held, &delivers);
                if !handler(WatchEvent::Incomplete { parts, missing }) {
                    return Ok(());
                }
            }
            self.at.poll(Duration::from_millis(500))?;
        }
    }
}

/// What `watch` works through: messages read from storage, and URCs.
enum Item {
    Stored(Stored),
    Urc(Urc),
}

/// How many handled (index, PDU) pairs `watch` remembers.
const SEEN_MAX: usize = 10_000;

/// Removes the held entries for `parts` and returns their storage indexes.
fn take_indexes(held: &mut Vec<(Deliver, u32)>, parts: &[Deliver]) -> Vec<u32> {
    let mut indexes = Vec::new();
    for p in parts {
        if let Some(pos) = held.iter().position(|(d, _)| d == p) {
            indexes.push(held.remove(pos).1);
        }
    }
    indexes
}

fn stored(index: u32, status: u8, pdu: String) -> Stored {
    let decoded = simlab_sms::decode_hex(pdu.trim(), true);
    Stored {
        index,
        status,
        pdu,
        decoded,
    }
}

fn decode_hex(pdu: &str) -> Result<Decoded, String> {
    simlab_sms::decode_hex(pdu.trim(), true).map_err(|e| e.to_string())
}

fn decode_report(pdu: &str) -> Option<StatusReport> {
    match simlab_sms::decode_hex(pdu.trim(), true).ok()?.pdu {
        Pdu::StatusReport(s) => Some(s),
        _ => None,
    }
}
