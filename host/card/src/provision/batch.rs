//! Batches: many cards, several readers, one worker thread per reader.
//!
//! Each worker takes the next pending row when a card is in its reader, provisions it, records
//! the result in the report (rewritten atomically after every card, so a crash loses nothing)
//! and, with `--wait`, waits for the card to be swapped. A card whose ICCID the report already
//! lists as done is left alone; a re-run picks up exactly the rows not yet done.

use super::{Options, Target, driver::Driver, plan, provision, render_plan};
use crate::error::{Error, Result};
use crate::sim::{self, Sim};
use crate::transport::pcsc::{self, PcscOptions, PcscTransport};
use crate::transport::{Link, TransportError};
use serde_json::{Value, json};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a batch runs.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Reader names (already resolved).
    pub readers: Vec<String>,
    pub dry_run: bool,
    pub report: Option<PathBuf>,
    pub options: Options,
    /// How long a worker waits for the next card (and for a finished card to be removed);
    /// zero: provision the cards present now and stop.
    pub wait: Duration,
    /// Overrides ATR-based detection.
    pub card_type: Option<Driver>,
}

/// The outcome of a batch.
#[derive(Debug)]
pub struct Summary {
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub cards: Vec<Value>,
}

/// The report file: one entry per row attempted, keyed by ICCID.
struct Report {
    path: Option<PathBuf>,
    entries: Vec<Value>,
}

impl Report {
    fn load(path: Option<&Path>) -> Result<Self> {
        let entries = match path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Io {
                    context: format!("reading report {}", p.display()),
                    source,
                })?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    Error::arg(
                        "--report",
                        format!("{}: not a simlab report: {e}", p.display()),
                    )
                })?;
                v["cards"].as_array().cloned().ok_or_else(|| {
                    Error::arg(
                        "--report",
                        format!("{}: not a simlab report (no \"cards\")", p.display()),
                    )
                })?
            }
            _ => Vec::new(),
        };
        Ok(Report {
            path: path.map(Path::to_path_buf),
            entries,
        })
    }

    fn done(&self) -> HashSet<String> {
        self.entries
            .iter()
            .filter(|e| e["status"] == "done")
            .filter_map(|e| e["iccid"].as_str().map(String::from))
            .collect()
    }

    /// Records an entry (replacing an earlier attempt of the same row) and rewrites the file.
    fn record(&mut self, entry: Value) -> Result<()> {
        self.entries.retain(|e| e["iccid"] != entry["iccid"]);
        self.entries.push(entry);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string_pretty(&json!({ "version": 1, "cards": self.entries }))
            .unwrap_or_default();
        let tmp = path.with_extension("tmp");
        let io = |source| Error::Io {
            context: format!("writing report {}", path.display()),
            source,
        };
        std::fs::write(&tmp, text + "\n").map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Shared between workers.
struct Shared {
    queue: Mutex<VecDeque<Target>>,
    report: Mutex<Report>,
    done: Mutex<HashSet<String>>,
    total: usize,
    log: Mutex<()>,
}

impl Shared {
    fn say(&self, reader: &str, line: &str) {
        let _guard = self.log.lock();
        let report = self.report.lock().map(|r| {
            let done = r.entries.iter().filter(|e| e["status"] == "done").count();
            let failed = r.entries.iter().filter(|e| e["status"] == "failed").count();
            (done, failed)
        });
        let (done, failed) = report.unwrap_or((0, 0));
        eprintln!(
            "[{done}/{} done, {failed} failed] {reader}: {line}",
            self.total
        );
    }
}

/// Runs a batch over `targets`. Rows the report already lists as done are skipped.
pub fn run(targets: Vec<Target>, opts: &BatchOptions) -> Result<Summary> {
    let report = Report::load(opts.report.as_deref())?;
    let done = report.done();
    let total = targets.len();
    let pending: VecDeque<Target> = targets
        .into_iter()
        .filter(|t| !done.contains(&t.key()))
        .collect();
    if opts.readers.is_empty() {
        return Err(Error::Transport(TransportError::NoReaders));
    }
    let shared = Shared {
        queue: Mutex::new(pending),
        report: Mutex::new(report),
        done: Mutex::new(done),
        total,
        log: Mutex::new(()),
    };
    let results: Vec<Vec<Value>> = std::thread::scope(|scope| {
        let handles: Vec<_> = opts
            .readers
            .iter()
            .map(|reader| {
                let shared = &shared;
                scope.spawn(move || worker(reader, shared, opts))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let cards: Vec<Value> = results.into_iter().flatten().collect();
    let pending = shared.queue.lock().map(|q| q.len()).unwrap_or(0);
    let done = cards.iter().filter(|c| c["status"] == "done").count();
    let failed = cards.iter().filter(|c| c["status"] == "failed").count();
    Ok(Summary {
        done,
        failed,
        pending,
        cards,
    })
}

/// One reader's loop. Returns the entries it produced (also in the report).
fn worker(reader: &str, shared: &Shared, opts: &BatchOptions) -> Vec<Value> {
    let mut produced = Vec::new();
    let mut first = true;
    loop {
        if shared.queue.lock().map(|q| q.is_empty()).unwrap_or(true) {
            break;
        }
        let wait = if first || !opts.wait.is_zero() {
            Some(opts.wait)
        } else {
            None
        };
        first = false;
        let transport = match PcscTransport::connect(
            reader,
            &PcscOptions {
                exclusive: true,
                wait,
            },
        ) {
            Ok(t) => t,
            Err(TransportError::NoCard { .. } | TransportError::Timeout { .. }) => {
                shared.say(reader, "no card: done with this reader");
                break;
            }
            Err(e) => {
                shared.say(reader, &format!("cannot use the reader: {e}"));
                break;
            }
        };
        let entry = one_card(reader, transport, shared, opts);
        if let Some(entry) = entry {
            produced.push(entry);
        }
        if opts.wait.is_zero() || opts.dry_run {
            break;
        }
        if !wait_for_removal(reader, opts.wait) {
            shared.say(reader, "card not removed in time: done with this reader");
            break;
        }
    }
    produced
}

/// Provisions (or plans) one card; `None` when nothing was attempted.
fn one_card(
    reader: &str,
    transport: PcscTransport,
    shared: &Shared,
    opts: &BatchOptions,
) -> Option<Value> {
    let atr = crate::transport::Transport::atr(&transport);
    let driver = match opts.card_type.or_else(|| Driver::detect(&atr)) {
        Some(d) => d,
        None => {
            shared.say(
                reader,
                &format!(
                    "unknown card (ATR {}): left alone; --card-type names it",
                    crate::hex::encode(&atr)
                ),
            );
            return None;
        }
    };
    let mut sim = match Sim::open(Link::new(Box::new(transport))) {
        Ok(s) => s,
        Err(e) => {
            shared.say(reader, &format!("cannot talk to the card: {e}"));
            return None;
        }
    };
    // A card already provisioned by this batch is not written again.
    if let Ok(sim::FileContent::Transparent(bytes)) = sim.read_file(sim::Location::Mf(&[0x2FE2]))
        && let Ok(iccid) = simlab_applet::encoding::decode_iccid(&bytes)
        && shared
            .done
            .lock()
            .map(|d| d.contains(iccid.as_str()))
            .unwrap_or(false)
    {
        shared.say(
            reader,
            &format!("card {} is already provisioned: left alone", iccid.as_str()),
        );
        return None;
    }
    let target = shared.queue.lock().ok()?.pop_front()?;
    let label = target.label();
    let mut entry = match plan(&mut sim, driver, &target) {
        Err(e) => {
            json!({ "status": "failed", "iccid": target.key(), "line": target.line, "error": e.to_string() })
        }
        Ok(p) if opts.dry_run => {
            shared.say(
                reader,
                &format!(
                    "{label}: plan (dry run, nothing written):\n{}",
                    render_plan(&p, opts.options)
                ),
            );
            // A dry run consumes nothing: the row stays pending.
            if let Ok(mut q) = shared.queue.lock() {
                q.push_front(target);
            }
            return None;
        }
        Ok(p) => {
            shared.say(
                reader,
                &format!("{label}: provisioning a {}", driver.name()),
            );
            let started = Instant::now();
            let mut progress = |step: &str| shared.say(reader, &format!("{label}: {step}"));
            match provision(&mut sim, &p, &target, opts.options, &mut progress) {
                Ok(r) => {
                    let mut j = r.json;
                    j["seconds"] = json!(started.elapsed().as_secs_f64());
                    j
                }
                Err(e) => json!({
                    "status": "failed",
                    "iccid": target.key(),
                    "line": target.line,
                    "card_type": driver.name(),
                    "written": [],
                    "error": e.to_string(),
                }),
            }
        }
    };
    entry["reader"] = json!(reader);
    entry["atr"] = json!(crate::hex::encode(&atr));
    let ok = entry["status"] == "done";
    shared.say(
        reader,
        &format!(
            "{label}: {}",
            if ok {
                "done".to_string()
            } else {
                format!("FAILED: {}", entry["error"].as_str().unwrap_or("?"))
            }
        ),
    );
    if ok && let Ok(mut d) = shared.done.lock() {
        d.insert(target.key());
    }
    if let Ok(mut r) = shared.report.lock()
        && let Err(e) = r.record(entry.clone())
    {
        eprintln!("simlab: warning: {e}");
    }
    Some(entry)
}

/// Waits until the reader is empty again.
fn wait_for_removal(reader: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match pcsc::list_readers() {
            Ok(list) if list.iter().any(|r| r.name == reader && !r.card_present) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Resolves `--readers all|LIST` against the readers pcscd has.
pub fn resolve_readers(spec: &str) -> Result<Vec<String>> {
    let names: Vec<String> = pcsc::list_readers()?.into_iter().map(|r| r.name).collect();
    if spec == "all" {
        return Ok(names);
    }
    spec.split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            pcsc::select_reader(s, &names)
                .map(|i| names[i].clone())
                .map_err(Error::from)
        })
        .collect()
}
