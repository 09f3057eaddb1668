//! A virtual USB modem on a pty: the AT command set of TS 27.007 / TS 27.005 that SMS tools
//! use, a SIM answered by the simlab card model, and faults on demand.
//!
//! The modem sits on the master side of a real pseudo-terminal; clients (simlab, gammu,
//! minicom) open the slave, usually through a symlink such as `/tmp/modem0`, exactly as they
//! would open `/dev/ttyUSB2`. Like a real modem it
//!
//! * echoes commands until `ATE0`, formats replies as V.250 with `V1`, reports errors as
//!   `ERROR`, `+CME ERROR: <n>` or text according to `AT+CMEE`, and `+CMS ERROR: <n>`;
//! * prompts for PDUs after `AT+CMGS=<n>`, takes hex until Ctrl-Z, cancels on ESC, and checks
//!   `<n>` against the PDU it got (`+CMS ERROR: 304` otherwise);
//! * keeps received messages in a small `SM` store (`+CPMS`, `+CMGL`, `+CMGR`, `+CMGD`) and
//!   announces them as `+CNMI` says (`+CMTI`, `+CMT`, `+CDS`, `+CDSI`);
//! * answers `AT+CSIM` and `AT+CRSM` from the card model, and `AT+CPIN`, `AT+CIMI`,
//!   `AT+CCID` through it;
//! * is quirky per `--profile`: Huawei's `^RSSI`/`^SIMST` chatter and `> ` with a line feed,
//!   Quectel's `RDY`/`+QIND`, a bare `> ` and `+QCCID`, SIMCom's `SMS Ready`, `+ICCID` and
//!   plain `ERROR` until `AT+CMEE=1`.
//!
//! Every accepted SUBMIT is written to the spool (`DIR/sent/NNNNNN.json`) with `to`, `text`,
//! `pdu` and more; messages to the modem's own number (or all, with `--loopback all`) come
//! back as SMS-DELIVER, and a STATUS-REPORT follows when TP-SRR asked for one. JSON files
//! dropped into `DIR/inbox/` (`{"from": "+49…", "text": "…"}` or `{"pdu": "<DELIVER hex>"}`)
//! arrive as incoming messages.
//!
//! Faults ([`Faults::parse`], `--faults a,b=N,…`) make it misbehave the way real modems do: a
//! slow or stuck prompt, `+CMS ERROR: 330`/`500`, SIM busy (`+CME ERROR: 14`) before it
//! becomes ready, URCs in the middle of replies, echo that `ATE0` does not stop, replies
//! written a few bytes at a time, garbage bytes, and vanishing in the middle of a send.
//!
//! Nothing the client sends can make it panic: unknown commands get `ERROR`, bad parameters
//! `+CME ERROR: 50` / `+CMS ERROR: 304`.

use super::VirtualCard;
use super::card::EmulatedCard;
use serde_json::json;
use simlab_card::hex;
use simlab_card::sim::{self, Sim};
use simlab_card::trace::civil_from_days;
use simlab_card::transport::{Link, Transport, TransportError};
use simlab_modem::syntax::{fields, unquote};
use simlab_modem::trace::AtTrace;
use simlab_modem::{CmeError, CmsError};
use simlab_sms::{Address, Deliver, Pdu, Status, StatusReport, SubmitOptions, Timestamp, decode};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Which real modem family to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Plain TS 27.007 / 27.005.
    Generic,
    /// Huawei E3372-style: `^RSSI`, `^SIMST`, `^ICCID`, `\r\n> ` prompt.
    Huawei,
    /// Quectel EC25-style: `RDY`, `+QIND`, `+QCCID`, bare `> ` prompt.
    Quectel,
    /// SIMCom SIM7600-style: `SMS Ready`, `+ICCID`, plain ERROR until `AT+CMEE=1`.
    Simcom,
}

struct Quirks {
    manufacturer: &'static str,
    model: &'static str,
    revision: &'static str,
    imei: &'static str,
    prompt: &'static [u8],
    /// Sent when the first client connects (the modem "booting").
    boot: &'static [&'static str],
    /// Sent when the SIM becomes ready after being busy.
    ready: &'static [&'static str],
    /// Vendor chatter injected by the `urc-mid` fault.
    chatter: &'static [&'static str],
    cmee: u8,
    cscs: &'static str,
    cnmi: [u8; 5],
    /// The result-code prefix of the ICCID command the vendor has.
    iccid: &'static str,
}

impl Profile {
    fn quirks(self) -> Quirks {
        match self {
            Profile::Generic => Quirks {
                manufacturer: "simlab",
                model: "virtual modem",
                revision: env!("CARGO_PKG_VERSION"),
                imei: "353270000000018",
                prompt: b"\r\n> ",
                boot: &[],
                ready: &["+CPIN: READY"],
                chatter: &["+CREG: 1", "+CMTI: \"ME\",0"],
                cmee: 1,
                cscs: "GSM",
                cnmi: [1, 1, 0, 0, 0],
                iccid: "+CCID",
            },
            Profile::Huawei => Quirks {
                manufacturer: "huawei",
                model: "E3372",
                revision: "22.200.15.00.00",
                imei: "867960000000017",
                prompt: b"\r\n> ",
                boot: &["^BOOT:20377681,0,0,0,75", "^SIMST: 1"],
                ready: &["^SIMST: 1", "^SRVST: 2"],
                chatter: &["^RSSI: 17", "^MODE: 5,4", "^HCSQ: \"LTE\",46,38,131,22"],
                cmee: 1,
                cscs: "IRA",
                cnmi: [0, 0, 0, 0, 0],
                iccid: "^ICCID",
            },
            Profile::Quectel => Quirks {
                manufacturer: "Quectel",
                model: "EC25",
                revision: "EC25EFAR06A06M4G",
                imei: "866758000000013",
                prompt: b"> ",
                boot: &[
                    "RDY",
                    "+CFUN: 1",
                    "+CPIN: READY",
                    "+QUSIM: 1",
                    "+QIND: SMS DONE",
                ],
                ready: &["+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"],
                chatter: &["+QIND: \"csq\",20,99", "+CREG: 1", "+QIND: \"act\",\"LTE\""],
                cmee: 1,
                cscs: "GSM",
                cnmi: [2, 1, 0, 0, 0],
                iccid: "+QCCID",
            },
            Profile::Simcom => Quirks {
                manufacturer: "SIMCOM INCORPORATED",
                model: "SIMCOM_SIM7600E-H",
                revision: "LE20B04SIM7600M22",
                imei: "862636000000016",
                prompt: b"\r\n> ",
                boot: &["RDY", "+CPIN: READY", "SMS DONE", "PB DONE"],
                ready: &["+CPIN: READY", "SMS DONE"],
                chatter: &["+CREG: 1", "+CGEV: EPS PDN ACT 1", "+CPSI: LTE,Online"],
                cmee: 0,
                cscs: "IRA",
                cnmi: [2, 1, 0, 0, 0],
                iccid: "+ICCID",
            },
        }
    }
}

/// Which submissions a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nth {
    /// Every one.
    Every,
    /// Only the n-th (1-based) since the modem started.
    Only(u32),
}

impl Nth {
    fn hits(self, n: u32) -> bool {
        match self {
            Nth::Every => true,
            Nth::Only(k) => k == n,
        }
    }
}

/// Misbehaviour on demand. See [`Faults::parse`] for the syntax.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Delay before the `> ` prompt.
    pub slow_prompt: Option<Duration>,
    /// Delay before `+CMGS: <mr>` (the network being slow).
    pub slow_submit: Option<Duration>,
    /// Answer these submissions with `+CMS ERROR: 330` (SMSC unknown).
    pub cms330: Option<Nth>,
    /// Answer these submissions with `+CMS ERROR: 500` (unknown error).
    pub cms500: Option<Nth>,
    /// Answer this many SIM-dependent commands with SIM busy before being ready.
    pub cme14: u32,
    /// Inject URCs between reply lines and before prompts and final result codes.
    pub urc_mid: bool,
    /// Keep echoing whatever `ATE0` says.
    pub echo: bool,
    /// Write everything a few bytes at a time.
    pub split: bool,
    /// Write garbage bytes (NULs, invalid UTF-8, control characters) around replies.
    pub garbage: bool,
    /// Vanish (close the pty and stop) after receiving the PDU of this submission.
    pub vanish: Option<u32>,
    /// Swallow Ctrl-Z on these submissions, staying in the prompt until ESC.
    pub stuck_prompt: Option<Nth>,
    /// TP-Status of status reports (default 00, delivered).
    pub report_status: Option<u8>,
}

/// The fault names [`Faults::parse`] knows, with their argument, for help texts.
pub const FAULTS_HELP: &str = "\
slow-prompt[=MS]    wait MS (default 3000) before the > prompt
slow-submit[=MS]    wait MS (default 3000) before +CMGS: <mr>
cms330[=N]          +CMS ERROR: 330 (SMSC unknown) for every submission, or only the N-th
cms500[=N]          +CMS ERROR: 500 (unknown error), likewise
cme14[=N]           SIM busy (+CME ERROR: 14 / +CMS ERROR: 314) for the first N (default 3)
                    SIM-dependent commands, then ready (with the vendor's ready URCs)
urc-mid             URCs between reply lines, before prompts and final result codes
echo                echo stays on whatever ATE0 says
split               replies written 1-7 bytes at a time
garbage             NULs, invalid UTF-8 and control bytes around replies
vanish=N            close the pty and stop after the PDU of the N-th submission
stuck-prompt[=N]    ignore Ctrl-Z (every submission, or the N-th) until ESC
report-status=HEX   TP-Status of status reports (e.g. 46 = validity period expired)";

/// A `--faults` list that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultError(pub String);

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Faults {
    /// Parses `name[=arg],…` (see [`FAULTS_HELP`]).
    pub fn parse(list: &str) -> Result<Faults, FaultError> {
        let mut f = Faults::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, arg) = match item.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim())),
                None => (item, None),
            };
            let num = |default: Option<u32>| -> Result<u32, FaultError> {
                match arg {
                    Some(a) => a.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        FaultError(format!("{name}: {a:?} is not a positive number"))
                    }),
                    None => default.ok_or_else(|| FaultError(format!("{name} needs =N"))),
                }
            };
            let nth = || -> Result<Nth, FaultError> {
                Ok(match arg {
                    None => Nth::Every,
                    Some(_) => Nth::Only(num(None)?),
                })
            };
            let millis = || num(Some(3000)).map(|ms| Duration::from_millis(u64::from(ms)));
            match name {
                "slow-prompt" => f.slow_prompt = Some(millis()?),
                "slow-submit" => f.slow_submit = Some(millis()?),
                "cms330" => f.cms330 = Some(nth()?),
                "cms500" => f.cms500 = Some(nth()?),
                "cme14" => f.cme14 = num(Some(3))?,
                "urc-mid" => f.urc_mid = true,
                "echo" => f.echo = true,
                "split" => f.split = true,
                "garbage" => f.garbage = true,
                "vanish" => f.vanish = Some(num(None)?),
                "stuck-prompt" => f.stuck_prompt = Some(nth()?),
                "report-status" => {
                    let a = arg.ok_or_else(|| FaultError("report-status needs =HEX".into()))?;
                    f.report_status = Some(u8::from_str_radix(a, 16).map_err(|_| {
                        FaultError(format!("report-status: {a:?} is not a hex octet"))
                    })?);
                }
                other => {
                    return Err(FaultError(format!(
                        "unknown fault {other:?}; known faults:\n{FAULTS_HELP}"
                    )));
                }
            }
        }
        Ok(f)
    }
}

/// Which submitted messages come back as SMS-DELIVER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Loopback {
    /// Messages to the modem's own number.
    Own,
    /// Every message, as if each recipient echoed it back.
    All,
    /// None.
    None,
}

/// Everything about a virtual modem besides its SIM.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
    pub faults: Faults,
    pub spool: Option<PathBuf>,
    pub loopback: Loopback,
    /// The modem's own number (the SIM's MSISDN).
    pub own_number: Option<String>,
    /// The service centre in `AT+CSCA` at start (`None`: unset, so sending fails with 330
    /// unless the PDU names one).
    pub smsc: Option<String>,
    /// Message slots in the `SM` store.
    pub storage: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            profile: Profile::Generic,
            faults: Faults::default(),
            spool: None,
            loopback: Loopback::Own,
            own_number: None,
            smsc: Some(DEFAULT_SMSC.into()),
            storage: 30,
        }
    }
}

/// The service centre the virtual network has.
pub const DEFAULT_SMSC: &str = "+491700000000";

/// The SIM of `emulate modem` without `--sim`: a Milenage USIM with PIN1 disabled.
pub const DEFAULT_SIM: &str = r#"
name = "virtual modem SIM"
iccid = "898821100000099001"
imsi = "001010000000099"
msisdn = "+491700000099"
spn = "simlab"
ki = "000102030405060708090a0b0c0d0e0f"
algorithm = "milenage"
opc = "00112233445566778899aabbccddeeff"
pin1 = "1234"
puk1 = "12345678"
adm1 = "88888888"
"#;

// ---------------------------------------------------------------------------------------------
// The pty
// ---------------------------------------------------------------------------------------------

/// The master side of a pseudo-terminal, and the symlink to its slave.
pub struct Pty {
    master: File,
    slave: PathBuf,
    link: Option<PathBuf>,
}

impl Pty {
    /// Opens a pty pair (raw mode, so nothing is echoed or translated by the line discipline),
    /// closes the slave so a client can have it to itself, and points `link` at the slave.
    /// An existing symlink at `link` (left by a crashed run) is replaced; anything else there
    /// is an error.
    pub fn open(link: Option<&Path>) -> io::Result<Pty> {
        let (master, slave) = serialport::TTYPort::pair().map_err(io::Error::from)?;
        let slave_path = serialport::SerialPort::name(&slave)
            .map(PathBuf::from)
            .ok_or_else(|| io::Error::other("the pty has no slave name"))?;
        drop(slave);
        // SAFETY: `into_raw_fd` hands over ownership of a valid, open descriptor.
        let master = unsafe { File::from_raw_fd(master.into_raw_fd()) };
        if let Some(link) = link {
            match std::fs::symlink_metadata(link) {
                Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link)?,
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a symlink", link.display()),
                    ));
                }
                Err(_) => {}
            }
            std::os::unix::fs::symlink(&slave_path, link)?;
        }
        Ok(Pty {
            master,
            slave: slave_path,
            link: link.map(Path::to_path_buf),
        })
    }

    /// The slave device (`/dev/pts/N`).
    pub fn slave(&self) -> &Path {
        &self.slave
    }

    /// Waits up to `timeout` for input. Returns (readable, client connected): with no client
    /// holding the slave open, Linux reports POLLHUP on the master.
    fn wait(&self, timeout: Duration) -> (bool, bool) {
        let mut fds = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut fds, 1, ms) };
        if n <= 0 {
            return (false, self.connected());
        }
        (
            fds.revents & libc::POLLIN != 0,
            fds.revents & libc::POLLHUP == 0,
        )
    }

    fn connected(&self) -> bool {
        let mut fds = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: as in `wait`, with a zero timeout.
        unsafe { libc::poll(&mut fds, 1, 0) };
        fds.revents & libc::POLLHUP == 0
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(link) = &self.link
            && std::fs::read_link(link).is_ok_and(|t| t == self.slave)
        {
            let _ = std::fs::remove_file(link);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The SIM
// ---------------------------------------------------------------------------------------------

/// The card model shared between `AT+CSIM` (raw APDUs) and the modem's own use of the SIM.
#[derive(Clone)]
pub struct SharedCard(pub Arc<Mutex<EmulatedCard>>);

impl SharedCard {
    pub fn new(card: EmulatedCard) -> Self {
        SharedCard(Arc::new(Mutex::new(card)))
    }

    fn process(&self, apdu: &[u8]) -> Vec<u8> {
        let mut card = self.0.lock().unwrap_or_else(|p| p.into_inner());
        card.process(apdu)
    }

    fn sim(&self) -> Option<Sim> {
        Sim::open(Link::new(Box::new(self.clone()))).ok()
    }
}

impl Transport for SharedCard {
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.process(capdu))
    }
    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        let mut card = self.0.lock().unwrap_or_else(|p| p.into_inner());
        card.reset();
        Ok(card.atr())
    }
    fn atr(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).atr()
    }
    fn describe(&self) -> String {
        "the virtual modem's SIM".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// What the modem reports to its operator (stderr in the CLI).
#[derive(Clone, Debug)]
pub enum Event {
    /// A client opened the port.
    Connected,
    /// The client closed it.
    Disconnected,
    /// A command line (verbose).
    Command(String),
    /// A SUBMIT was accepted.
    Submitted {
        mr: u8,
        to: String,
        spool: Option<PathBuf>,
    },
    /// A submission was refused (bad PDU or a fault).
    Refused { reason: String },
    /// A message was delivered to the modem (loopback or inbox).
    Delivered { from: String, index: Option<u32> },
    /// A status report was produced.
    Reported { mr: u8 },
    /// A fault fired.
    Fault(String),
    /// The `vanish` fault: the modem is gone.
    Vanished,
    /// A problem that does not stop the modem (spool not writable, bad inbox file).
    Warning(String),
}

// ---------------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------------

/// Where a modem's submitted messages go when it is attached to a network (the virtual SMSC,
/// [`crate::smsc`]).
pub trait Network: Send {
    /// An accepted SUBMIT (TP-MR `mr`) from this modem.
    fn submitted(&mut self, mr: u8, submit: &simlab_sms::Submit);
    /// What the network delivers to this modem since the last call, in order.
    fn poll(&mut self) -> Vec<NetworkDelivery>;
}

/// A PDU the network hands to a modem (service-centre prefix included), ready to store or
/// announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkDelivery {
    /// An SMS-DELIVER from `from`.
    Deliver { pdu: Vec<u8>, from: String },
    /// An SMS-STATUS-REPORT about this modem's submission `mr`.
    Report { pdu: Vec<u8>, mr: u8 },
}

// ---------------------------------------------------------------------------------------------
// The modem
// ---------------------------------------------------------------------------------------------

/// Something to write, wait for, or do, in order.
enum Out {
    Bytes(Vec<u8>),
    Sleep(Duration),
    Vanish,
}

/// A scheduled unsolicited event.
enum Pending {
    /// A DELIVER (service-centre prefix included) arriving from the network.
    Deliver { pdu: Vec<u8>, from: String },
    /// A STATUS-REPORT (service-centre prefix included).
    Report { pdu: Vec<u8>, mr: u8 },
    /// URC lines.
    Urc(Vec<String>),
}

struct Stored {
    stat: u8,
    /// Service-centre prefix and TPDU.
    pdu: Vec<u8>,
}

/// Where the command-line interpreter is.
enum Mode {
    Command,
    /// After `AT+CMGS=<n>`: collecting hex until Ctrl-Z or ESC.
    Prompt {
        length: usize,
        submission: u32,
    },
}

/// The virtual modem's state. Drive it with [`VirtualModem::serve`].
pub struct VirtualModem {
    quirks: Quirks,
    opts: Options,
    card: SharedCard,
    trace: Option<AtTrace>,
    /// Follows the APDUs of `AT+CSIM` so their secrets stay out of the AT transcript.
    redactor: simlab_card::trace::Redactor,
    /// For each `AT+CSIM` of the line being answered, in order: whether its answer carries
    /// secrets (an AUTHENTICATE's CK and IK, a key file's contents).
    csim_secret_answers: std::collections::VecDeque<bool>,
    // V.250 / 27.007 settings.
    echo: bool,
    cmee: u8,
    cscs: String,
    cnmi: [u8; 5],
    csca: Option<String>,
    creg: u8,
    cmgf: u8,
    // The interpreter.
    mode: Mode,
    line: Vec<u8>,
    last: String,
    // The SIM.
    sim_busy_left: u32,
    pin_required: bool,
    imsi: Option<String>,
    iccid: Option<String>,
    // SMS.
    store: BTreeMap<u32, Stored>,
    next_mr: u8,
    submissions: u32,
    spooled: u64,
    pending: Vec<(Instant, Pending)>,
    booted: bool,
    chatter: usize,
    split: usize,
    /// The network the modem is attached to; `None`: loopback and local status reports.
    network: Option<Box<dyn Network>>,
}

/// How long after a SUBMIT the loopback DELIVER and the status report arrive.
const DELIVER_DELAY: Duration = Duration::from_millis(150);
const REPORT_DELAY: Duration = Duration::from_millis(300);
/// How often the inbox directory is looked at.
const INBOX_PERIOD: Duration = Duration::from_millis(200);
/// The longest command line kept (V.250 requires at least 40 characters; modems allow a few
/// hundred); the longest PDU line: 2 × (12 + 164) hex digits with room to spare.
const MAX_LINE: usize = 1024;
/// TS 23.040: the largest TPDU.
const MAX_TPDU: usize = 164;

impl VirtualModem {
    /// A modem with `card` as its SIM.
    pub fn new(card: EmulatedCard, opts: Options, trace: Option<AtTrace>) -> Self {
        let quirks = opts.profile.quirks();
        let card = SharedCard::new(card);
        let mut pin_required = false;
        if let Some(mut sim) = card.sim()
            && let Ok(t) = sim.tries()
        {
            pin_required = t.pin1_enabled == Some(true);
        }
        VirtualModem {
            echo: true,
            cmee: quirks.cmee,
            cscs: quirks.cscs.to_string(),
            cnmi: quirks.cnmi,
            csca: opts.smsc.clone(),
            creg: 0,
            cmgf: 0,
            mode: Mode::Command,
            line: Vec::new(),
            last: String::new(),
            sim_busy_left: opts.faults.cme14,
            pin_required,
            imsi: None,
            iccid: None,
            store: BTreeMap::new(),
            next_mr: 0,
            submissions: 0,
            spooled: 0,
            pending: Vec::new(),
            booted: false,
            chatter: 0,
            split: 0,
            network: None,
            quirks,
            opts,
            card,
            trace,
            redactor: Default::default(),
            csim_secret_answers: Default::default(),
        }
    }

    /// Attaches the modem to a network: from now on accepted SUBMITs go to `net` (no loopback,
    /// no local status report) and what `net` delivers arrives as from the air.
    pub fn attach(&mut self, net: Box<dyn Network>) {
        self.network = Some(net);
    }

    /// What the attached network has for this modem, queued as incoming now.
    fn poll_network(&mut self) {
        let Some(net) = self.network.as_mut() else {
            return;
        };
        let now = Instant::now();
        for d in net.poll() {
            let p = match d {
                NetworkDelivery::Deliver { pdu, from } => Pending::Deliver { pdu, from },
                NetworkDelivery::Report { pdu, mr } => Pending::Report { pdu, mr },
            };
            self.pending.push((now, p));
        }
    }

    /// Serves the pty until `stop` is set or the `vanish` fault fires; returns whether it
    /// vanished.
    pub fn serve(
        &mut self,
        pty: Pty,
        stop: &AtomicBool,
        events: &mut dyn FnMut(Event),
    ) -> io::Result<bool> {
        let mut pty = pty;
        let mut buf = [0u8; 1024];
        let mut connected = false;
        let mut next_inbox = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let (readable, now_connected) = pty.wait(Duration::from_millis(20));
            if now_connected != connected {
                connected = now_connected;
                events(if connected {
                    Event::Connected
                } else {
                    Event::Disconnected
                });
                if connected && !self.booted {
                    self.booted = true;
                    let boot: Vec<String> =
                        self.quirks.boot.iter().map(|s| s.to_string()).collect();
                    if !boot.is_empty() {
                        self.pending.push((Instant::now(), Pending::Urc(boot)));
                    }
                }
                // A new client starts with an empty command line, as after a modem's DTR
                // toggle; and whatever the old one left typed is gone.
                self.line.clear();
                if matches!(self.mode, Mode::Prompt { .. }) && !connected {
                    self.mode = Mode::Command;
                }
            }
            if !connected {
                // Nobody is there: do not fill the slave's buffer with stale output.
                std::thread::sleep(Duration::from_millis(20));
            }
            if readable {
                match pty.master.read(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        let outs = self.input(&buf[..n], events);
                        if self.execute(&mut pty, outs)? {
                            events(Event::Vanished);
                            return Ok(true);
                        }
                    }
                    // EIO: the client closed the slave between poll and read.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.poll_network();
            let now = Instant::now();
            if now >= next_inbox {
                next_inbox = now + INBOX_PERIOD;
                self.check_inbox(events);
            }
            if connected && matches!(self.mode, Mode::Command) && self.line.is_empty() {
                let outs = self.due(now, events);
                if self.execute(&mut pty, outs)? {
                    events(Event::Vanished);
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Writes, sleeps, or vanishes; returns true on vanish.
    fn execute(&mut self, pty: &mut Pty, outs: Vec<Out>) -> io::Result<bool> {
        for out in outs {
            match out {
                Out::Bytes(b) => {
                    if !pty.connected() {
                        continue;
                    }
                    let result = if self.opts.faults.split {
                        const SIZES: [usize; 6] = [1, 3, 2, 7, 5, 4];
                        let mut rest = &b[..];
                        let mut r = Ok(());
                        while !rest.is_empty() && r.is_ok() {
                            let n = SIZES[self.split % SIZES.len()].min(rest.len());
                            self.split += 1;
                            r = pty.master.write_all(&rest[..n]);
                            rest = &rest[n..];
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        r
                    } else {
                        pty.master.write_all(&b)
                    };
                    match result {
                        Ok(()) => {}
                        // The client went away in the middle: its problem, not the modem's.
                        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
                        Err(e) => return Err(e),
                    }
                }
                Out::Sleep(d) => std::thread::sleep(d),
                Out::Vanish => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Feeds a client's bytes and returns the modem's answer as `serve` would write it, minus
    /// the waits (fault delays are skipped; a vanishing modem answers no further): what the
    /// unit tests and the `modem_commands` fuzz target talk to.
    pub fn answer(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut reply = Vec::new();
        for out in self.input(bytes, &mut |_| {}) {
            match out {
                Out::Bytes(b) => reply.extend(b),
                Out::Sleep(_) => {}
                Out::Vanish => break,
            }
        }
        reply
    }

    // --- input ---------------------------------------------------------------------------

    /// Feeds bytes from the client; returns what to write.
    fn input(&mut self, bytes: &[u8], events: &mut dyn FnMut(Event)) -> Vec<Out> {
        let mut outs = Vec::new();
        let echo = self.echo || self.opts.faults.echo;
        for &b in bytes {
            match self.mode {
                Mode::Prompt { length, submission } => {
                    if echo && b != 0x1A && b != 0x1B {
                        outs.push(Out::Bytes(vec![b]));
                    }
                    match b {
                        0x1B => {
                            self.line.clear();
                            self.mode = Mode::Command;
                            self.note("ESC: prompt cancelled");
                            outs.push(self.final_ok());
                        }
                        0x1A => {
                            let stuck = self
                                .opts
                                .faults
                                .stuck_prompt
                                .is_some_and(|n| n.hits(submission));
                            if stuck {
                                events(Event::Fault(format!(
                                    "stuck-prompt: Ctrl-Z of submission {submission} ignored"
                                )));
                                self.line.clear();
                                continue;
                            }
                            let line = std::mem::take(&mut self.line);
                            self.mode = Mode::Command;
                            outs.extend(self.submit(&line, length, submission, events));
                        }
                        b'\r' | b'\n' | b' ' => {}
                        _ if self.line.len() < MAX_LINE => self.line.push(b),
                        _ => {}
                    }
                }
                Mode::Command => {
                    if echo {
                        outs.push(Out::Bytes(vec![b]));
                    }
                    match b {
                        b'\r' => {
                            let line = std::mem::take(&mut self.line);
                            outs.extend(self.command_line(&line, events));
                        }
                        b'\n' | 0 => {}
                        0x08 | 0x7F => {
                            self.line.pop();
                        }
                        0x1B | 0x1A => self.line.clear(),
                        _ if self.line.len() < MAX_LINE => self.line.push(b),
                        _ => {}
                    }
                }
            }
        }
        outs
    }

    /// One command line (without its CR).
    fn command_line(&mut self, raw: &[u8], events: &mut dyn FnMut(Event)) -> Vec<Out> {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_matches(|c: char| c.is_control() || c == ' ');
        // V.250: characters before "AT" are ignored; "A/" repeats the last line.
        let upper = text.to_ascii_uppercase();
        let line = if upper == "A/" {
            if self.last.is_empty() {
                // Nothing to repeat yet: as a line without "AT", ignored (the fuzz target
                // `modem_commands` found this one slicing an empty line).
                return Vec::new();
            }
            self.last.clone()
        } else {
            match upper.find("AT") {
                Some(i) => text[i..].to_string(),
                None => return Vec::new(),
            }
        };
        self.last = line.clone();
        // The line as logs and transcripts may show it (secrets starred).
        let shown = self.traced_command(&line);
        if let Some(t) = &mut self.trace {
            t.sent(&shown);
        }
        events(Event::Command(shown));
        let mut outs = Vec::new();
        let mut info: Vec<Vec<String>> = Vec::new();
        let body = &line[2..];
        for cmd in split_commands(body) {
            match self.command(&cmd, &mut info, events) {
                Reply::Ok => {}
                Reply::Prompt { length, submission } => {
                    outs.extend(self.write_info(&info));
                    if let Some(d) = self.opts.faults.slow_prompt {
                        events(Event::Fault(format!("slow-prompt: {} ms", d.as_millis())));
                        outs.push(Out::Sleep(d));
                    }
                    if self.opts.faults.urc_mid {
                        outs.push(Out::Bytes(self.chatter_line()));
                    }
                    outs.push(Out::Bytes(self.quirks.prompt.to_vec()));
                    self.trace_out("> ");
                    self.mode = Mode::Prompt { length, submission };
                    return outs;
                }
                Reply::Error(e) => {
                    outs.extend(self.write_info(&info));
                    outs.push(self.final_error(e));
                    return outs;
                }
            }
        }
        outs.extend(self.write_info(&info));
        outs.push(self.final_ok());
        outs
    }

    fn write_info(&mut self, info: &[Vec<String>]) -> Vec<Out> {
        let mut outs = Vec::new();
        for (i, group) in info.iter().enumerate() {
            if i > 0 && self.opts.faults.urc_mid {
                outs.push(Out::Bytes(self.chatter_line()));
            }
            let mut b = Vec::new();
            for line in group {
                self.trace_out(line);
                b.extend_from_slice(b"\r\n");
                b.extend_from_slice(line.as_bytes());
            }
            b.extend_from_slice(b"\r\n");
            outs.push(Out::Bytes(b));
        }
        outs
    }

    fn final_ok(&mut self) -> Out {
        self.final_line("OK")
    }

    fn final_error(&mut self, e: Err) -> Out {
        let line = match e {
            Err::Plain => "ERROR".to_string(),
            Err::Cme(e) => match self.cmee {
                0 => "ERROR".to_string(),
                1 => format!("+CME ERROR: {}", e.0),
                _ => format!("+CME ERROR: {}", e.description()),
            },
            Err::Cms(e) => match self.cmee {
                2 => format!("+CMS ERROR: {}", e.description()),
                _ => format!("+CMS ERROR: {}", e.0),
            },
        };
        self.final_line(&line)
    }

    fn final_line(&mut self, line: &str) -> Out {
        self.trace_out(line);
        let mut b = Vec::new();
        if self.opts.faults.urc_mid {
            b.extend_from_slice(&self.chatter_line());
        }
        if self.opts.faults.garbage {
            b.extend_from_slice(b"\r\n\xfe\xfd\x80garbage\x07\x01\r\n\x00\x00");
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        Out::Bytes(b)
    }

    fn chatter_line(&mut self) -> Vec<u8> {
        let chatter = self.quirks.chatter;
        let line = chatter[self.chatter % chatter.len()];
        self.chatter += 1;
        if let Some(t) = &mut self.trace {
            t.note(&format!("urc-mid: {line}"));
        }
        format!("\r\n{line}\r\n").into_bytes()
    }

    fn trace_out(&mut self, line: &str) {
        if let Some(t) = &mut self.trace {
            match line.strip_prefix("+CSIM: ") {
                Some(answer) => {
                    let hexr = answer.split('"').nth(1).unwrap_or_default();
                    let bytes = hex::decode("csim", hexr).unwrap_or_default();
                    // An answer with no recorded command (cannot happen) is hidden.
                    let secret = self.csim_secret_answers.pop_front().unwrap_or(true);
                    let shown = simlab_card::trace::render_response(&bytes, secret);
                    t.received(&format!("+CSIM: {},\"{shown}\"", hexr.len()));
                }
                None => t.received(line),
            }
        }
    }

    /// A command line as the transcript may show it. Secrets are decided by what a command
    /// carries, as in APDU traces: PINs, PUKs and passwords of `+CPIN`, `+CPWD`, `+CLCK` are
    /// starred; an `+CSIM` APDU goes through the APDU redactor (which follows its SELECTs);
    /// an `+CRSM` write's data is starred unless its file is a standard, public one.
    fn traced_command(&mut self, line: &str) -> String {
        // Rebuilt from the parsed commands, so a secret cannot hide in a basic command's tail.
        self.csim_secret_answers.clear();
        let mut shown = String::from(&line[..2]);
        let mut changed = false;
        for (i, cmd) in split_commands(&line[2..]).iter().enumerate() {
            if i > 0 {
                shown.push(';');
            }
            let cmd = cmd.as_str();
            let upper = cmd.to_ascii_uppercase();
            let name_end = upper.find(['=', '?']).unwrap_or(upper.len());
            let name = &upper[..name_end];
            let args = cmd.get(name_end + 1..).unwrap_or_default();
            let set = upper[name_end..].starts_with('=') && !upper[name_end..].starts_with("=?");
            match name {
                "+CPIN" | "+CPWD" | "+CLCK" if set => {
                    let kept = if name == "+CLCK" {
                        args.split(',').take(2).collect::<Vec<_>>().join(",") + ",\"********\""
                    } else {
                        "\"********\"".to_string()
                    };
                    shown.push_str(&format!("{}={kept}", &cmd[..name_end]));
                    changed = true;
                }
                "+CSIM" if set => {
                    let f = fields(args);
                    let apdu = f
                        .get(1)
                        .and_then(|d| hex::decode("csim", unquote(d)).ok())
                        .unwrap_or_default();
                    let (text, secret_answer) = self.redactor.command_text(&apdu);
                    self.csim_secret_answers.push_back(secret_answer);
                    let len = f.first().copied().unwrap_or_default();
                    shown.push_str(&format!("{}={len},\"{text}\"", &cmd[..name_end]));
                    changed = true;
                }
                "+CRSM" if set => {
                    let f = fields(args);
                    let file = f
                        .get(1)
                        .and_then(|v| v.trim().parse::<u16>().ok())
                        .unwrap_or(0);
                    let [hi, _] = file.to_be_bytes();
                    let public = matches!(hi, 0x2F | 0x6F | 0x4F)
                        && ![0x6F20, 0x6F52, 0x6F08, 0x6F09, 0x4F20, 0x4F52].contains(&file);
                    if f.len() > 5 && !public {
                        let mut kept: Vec<String> = f.iter().map(|v| v.to_string()).collect();
                        kept[5] = "\"**\"".into();
                        shown.push_str(&format!("{}={}", &cmd[..name_end], kept.join(",")));
                        changed = true;
                    } else {
                        shown.push_str(cmd);
                    }
                }
                _ => shown.push_str(cmd),
            }
        }
        if changed { shown } else { line.to_string() }
    }

    fn note(&mut self, what: &str) {
        if let Some(t) = &mut self.trace {
            t.note(what);
        }
    }

    // --- commands --------------------------------------------------------------------------

    /// One command of a line (`+CSQ`, `E0`, `^SYSINFO`, …).
    fn command(
        &mut self,
        cmd: &str,
        info: &mut Vec<Vec<String>>,
        events: &mut dyn FnMut(Event),
    ) -> Reply {
        let upper = cmd.to_ascii_uppercase();
        // Split into name and what follows: "=…", "?", "=?" or nothing.
        let name_end = upper.find(['=', '?']).unwrap_or(upper.len());
        let name = &upper[..name_end];
        let rest = &cmd[name_end..];
        let (kind, args) = if rest == "?" {
            (Kind::Read, "")
        } else if rest == "=?" {
            (Kind::Test, "")
        } else if let Some(a) = rest.strip_prefix('=') {
            (Kind::Set, a)
        } else if rest.is_empty() {
            (Kind::Exec, "")
        } else {
            return Reply::Error(Err::Plain);
        };
        let mut one = |line: String| info.push(vec![line]);
        let q = self.quirks.manufacturer;
        match (name, kind) {
            ("", Kind::Exec) => Reply::Ok,
            // Basic commands.
            ("E0", _) | ("E", _) => {
                self.echo = false;
                Reply::Ok
            }
            ("E1", _) => {
                self.echo = true;
                Reply::Ok
            }
            (
                "V1" | "V" | "Q0" | "Q" | "&F" | "&F0" | "&W" | "&C1" | "&D2" | "X4" | "L0" | "M0"
                | "&K0" | "&K3",
                _,
            ) => Reply::Ok,
            ("Z" | "Z0", _) => {
                self.echo = true;
                self.cmee = self.quirks.cmee;
                self.cnmi = self.quirks.cnmi;
                self.cmgf = 0;
                Reply::Ok
            }
            ("I" | "I0", _) => {
                info.push(vec![
                    format!("Manufacturer: {q}"),
                    format!("Model: {}", self.quirks.model),
                    format!("Revision: {}", self.quirks.revision),
                    format!("IMEI: {}", self.quirks.imei),
                    "+GCAP: +CGSM,+DS,+ES".into(),
                ]);
                Reply::Ok
            }
            _ if name.starts_with('S') && name[1..].chars().all(|c| c.is_ascii_digit()) => {
                if kind == Kind::Read {
                    one(format!(
                        "{:03}",
                        if name == "S3" {
                            13
                        } else if name == "S4" {
                            10
                        } else {
                            0
                        }
                    ));
                }
                Reply::Ok
            }
            // Identity.
            ("+CGMI" | "+GMI", Kind::Exec) => {
                one(q.into());
                Reply::Ok
            }
            ("+CGMM" | "+GMM", Kind::Exec) => {
                one(self.quirks.model.into());
                Reply::Ok
            }
            ("+CGMR" | "+GMR", Kind::Exec) => {
                one(self.quirks.revision.into());
                Reply::Ok
            }
            ("+CGSN" | "+GSN", Kind::Exec) => {
                one(self.quirks.imei.into());
                Reply::Ok
            }
            ("+GCAP", Kind::Exec) => {
                one("+GCAP: +CGSM,+DS,+ES".into());
                Reply::Ok
            }
            ("+CMEE", Kind::Set) => match args.trim().parse::<u8>() {
                Ok(n @ 0..=2) => {
                    self.cmee = n;
                    Reply::Ok
                }
                _ => Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS)),
            },
            ("+CMEE", Kind::Read) => {
                one(format!("+CMEE: {}", self.cmee));
                Reply::Ok
            }
            ("+CMEE", Kind::Test) => {
                one("+CMEE: (0-2)".into());
                Reply::Ok
            }
            ("+CFUN", Kind::Read) => {
                one("+CFUN: 1".into());
                Reply::Ok
            }
            ("+CFUN", Kind::Set) => Reply::Ok,
            ("+CFUN", Kind::Test) => {
                one("+CFUN: (0,1,4),(0-1)".into());
                Reply::Ok
            }
            ("+CSCS", Kind::Read) => {
                one(format!("+CSCS: \"{}\"", self.cscs));
                Reply::Ok
            }
            ("+CSCS", Kind::Test) => {
                one("+CSCS: (\"GSM\",\"IRA\",\"UCS2\")".into());
                Reply::Ok
            }
            ("+CSCS", Kind::Set) => {
                let cs = unquote(args).to_ascii_uppercase();
                if ["GSM", "IRA", "UCS2"].contains(&cs.as_str()) {
                    self.cscs = cs;
                    Reply::Ok
                } else {
                    Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS))
                }
            }
            // Network.
            ("+CSQ", Kind::Exec) => {
                one("+CSQ: 20,99".into());
                Reply::Ok
            }
            ("+CSQ", Kind::Test) => {
                one("+CSQ: (0-31,99),(0-7,99)".into());
                Reply::Ok
            }
            ("+CREG" | "+CGREG" | "+CEREG", Kind::Read) => {
                one(format!("{name}: {},1", self.creg));
                Reply::Ok
            }
            ("+CREG" | "+CGREG" | "+CEREG", Kind::Set) => match args.trim().parse::<u8>() {
                Ok(n @ 0..=2) => {
                    if name == "+CREG" {
                        self.creg = n;
                    }
                    Reply::Ok
                }
                _ => Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS)),
            },
            ("+CREG" | "+CGREG" | "+CEREG", Kind::Test) => {
                one(format!("{name}: (0-2)"));
                Reply::Ok
            }
            ("+COPS", Kind::Read) => {
                one("+COPS: 0,0,\"simlab\",7".into());
                Reply::Ok
            }
            ("+COPS", Kind::Set) => Reply::Ok,
            ("+COPS", Kind::Test) => {
                one("+COPS: (2,\"simlab\",\"simlab\",\"00101\",7),,(0-4),(0-2)".into());
                Reply::Ok
            }
            ("^SYSINFO", Kind::Exec) if self.opts.profile == Profile::Huawei => {
                one("^SYSINFO: 2,3,0,9,1,,6".into());
                Reply::Ok
            }
            ("^CURC" | "^PORTSEL", Kind::Set) if self.opts.profile == Profile::Huawei => Reply::Ok,
            ("^PORTSEL", Kind::Read) if self.opts.profile == Profile::Huawei => {
                one("^PORTSEL: 1".into());
                Reply::Ok
            }
            ("+QINISTAT", Kind::Exec) if self.opts.profile == Profile::Quectel => {
                one(format!(
                    "+QINISTAT: {}",
                    if self.sim_busy_left > 0 { 0 } else { 7 }
                ));
                Reply::Ok
            }
            // SIM.
            ("+CPIN", Kind::Read) => {
                if let Some(e) = self.sim_busy(false, events) {
                    return Reply::Error(e);
                }
                let state = match self.sim_state() {
                    SimState::Ready => "READY",
                    SimState::Pin => "SIM PIN",
                    SimState::Puk => "SIM PUK",
                };
                one(format!("+CPIN: {state}"));
                Reply::Ok
            }
            ("+CPIN", Kind::Test) => Reply::Ok,
            ("+CPIN", Kind::Set) => self.enter_pin(args),
            ("+CIMI", Kind::Exec) => self.with_sim(
                false,
                events,
                |m| {
                    m.identity();
                    m.imsi.clone().map(|i| vec![i])
                },
                info,
            ),
            ("+CCID" | "+ICCID" | "^ICCID" | "+QCCID", Kind::Exec | Kind::Read) => {
                let prefix = self.quirks.iccid;
                self.with_sim(
                    false,
                    events,
                    |m| {
                        m.identity();
                        m.iccid.clone().map(|i| vec![format!("{prefix}: {i}")])
                    },
                    info,
                )
            }
            ("+CNUM", Kind::Exec) => {
                let own = self.opts.own_number.clone();
                self.with_sim(
                    false,
                    events,
                    |_| {
                        Some(own.map_or_else(Vec::new, |n| {
                            vec![format!("+CNUM: \"\",\"{n}\",{}", toa(&n))]
                        }))
                    },
                    info,
                )
            }
            ("+CSIM", Kind::Set) => self.csim(args, info, events),
            ("+CSIM", Kind::Test) => Reply::Ok,
            ("+CRSM", Kind::Set) => self.crsm(args, info, events),
            // SMS set-up.
            ("+CMGF", Kind::Read) => {
                one(format!("+CMGF: {}", self.cmgf));
                Reply::Ok
            }
            ("+CMGF", Kind::Test) => {
                one("+CMGF: (0)".into());
                Reply::Ok
            }
            ("+CMGF", Kind::Set) => match args.trim() {
                "0" => {
                    self.cmgf = 0;
                    Reply::Ok
                }
                // PDU mode only, as many data-card modems.
                "1" => Reply::Error(Err::Cms(CmsError::NOT_SUPPORTED)),
                _ => Reply::Error(Err::Cms(CmsError::NOT_ALLOWED)),
            },
            ("+CSMS", Kind::Read) => {
                one("+CSMS: 0,1,1,1".into());
                Reply::Ok
            }
            ("+CSMS", Kind::Set) => {
                one("+CSMS: 1,1,1".into());
                Reply::Ok
            }
            ("+CSMS", Kind::Test) => {
                one("+CSMS: (0,1)".into());
                Reply::Ok
            }
            ("+CNMI", Kind::Read) => {
                let c = self.cnmi;
                one(format!(
                    "+CNMI: {},{},{},{},{}",
                    c[0], c[1], c[2], c[3], c[4]
                ));
                Reply::Ok
            }
            ("+CNMI", Kind::Test) => {
                one("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)".into());
                Reply::Ok
            }
            ("+CNMI", Kind::Set) => {
                let f = fields(args);
                let max = [2u8, 3, 3, 2, 1];
                let mut c = self.cnmi;
                for (i, v) in f.iter().enumerate().take(5) {
                    if v.is_empty() {
                        continue;
                    }
                    match v.parse::<u8>() {
                        Ok(n) if n <= max[i] => c[i] = n,
                        _ => return Reply::Error(Err::Cms(CmsError::NOT_ALLOWED)),
                    }
                }
                self.cnmi = c;
                Reply::Ok
            }
            ("+CSCA", Kind::Read) => {
                if let Some(e) = self.sim_busy(false, events) {
                    return Reply::Error(e);
                }
                let (n, t) = match &self.csca {
                    Some(n) => (self.in_charset(n), toa(n)),
                    None => (String::new(), 129),
                };
                one(format!("+CSCA: \"{n}\",{t}"));
                Reply::Ok
            }
            ("+CSCA", Kind::Set) => {
                let f = fields(args);
                let n = f
                    .first()
                    .map(|s| unquote(s).to_string())
                    .unwrap_or_default();
                let n = simlab_modem::syntax::decode_ucs2_hex(&n);
                if n.is_empty() {
                    self.csca = None;
                    return Reply::Ok;
                }
                match Address::parse(&n) {
                    Ok(_) => {
                        self.csca = Some(n);
                        Reply::Ok
                    }
                    Err(_) => Reply::Error(Err::Cms(CmsError::INVALID_PDU)),
                }
            }
            ("+CPMS", Kind::Test) => {
                one("+CPMS: (\"SM\"),(\"SM\"),(\"SM\")".into());
                Reply::Ok
            }
            ("+CPMS", Kind::Read) => {
                if let Some(e) = self.sim_busy(true, events) {
                    return Reply::Error(e);
                }
                let (u, t) = (self.store.len(), self.opts.storage);
                one(format!(
                    "+CPMS: \"SM\",{u},{t},\"SM\",{u},{t},\"SM\",{u},{t}"
                ));
                Reply::Ok
            }
            ("+CPMS", Kind::Set) => {
                if let Some(e) = self.sim_busy(true, events) {
                    return Reply::Error(e);
                }
                if fields(args).iter().any(|m| {
                    !["SM", "MT", "ME"].contains(&unquote(m).to_ascii_uppercase().as_str())
                }) {
                    return Reply::Error(Err::Cms(CmsError::NOT_ALLOWED));
                }
                let (u, t) = (self.store.len(), self.opts.storage);
                one(format!("+CPMS: {u},{t},{u},{t},{u},{t}"));
                Reply::Ok
            }
            // SMS.
            ("+CMGS", Kind::Set) => {
                if let Some(e) = self.sim_busy(true, events) {
                    return Reply::Error(e);
                }
                if self.pin_required {
                    return Reply::Error(Err::Cms(CmsError::SIM_PIN_REQUIRED));
                }
                match args.trim().parse::<usize>() {
                    Ok(n @ 1..=MAX_TPDU) => {
                        self.submissions += 1;
                        Reply::Prompt {
                            length: n,
                            submission: self.submissions,
                        }
                    }
                    _ => Reply::Error(Err::Cms(CmsError::INVALID_PDU)),
                }
            }
            ("+CMGS", Kind::Test) => Reply::Ok,
            ("+CMGL", Kind::Set | Kind::Exec) => {
                if let Some(e) = self.sim_busy(true, events) {
                    return Reply::Error(e);
                }
                let stat = if kind == Kind::Exec {
                    Some(0)
                } else {
                    args.trim().parse::<u8>().ok().filter(|s| *s <= 4)
                };
                let Some(stat) = stat else {
                    return Reply::Error(Err::Cms(CmsError::NOT_ALLOWED));
                };
                for (i, m) in self.store.iter_mut() {
                    if stat == 4 || m.stat == stat {
                        let tpdu = tpdu_len(&m.pdu);
                        info.push(vec![
                            format!("+CMGL: {i},{},,{tpdu}", m.stat),
                            hex::encode(&m.pdu).to_ascii_uppercase(),
                        ]);
                        if m.stat == 0 {
                            m.stat = 1;
                        }
                    }
                }
                Reply::Ok
            }
            ("+CMGL", Kind::Test) => {
                one("+CMGL: (0-4)".into());
                Reply::Ok
            }
            ("+CMGR", Kind::Set) => {
                if let Some(e) = self.sim_busy(true, events) {
                    return Reply::Error(e);
                }
                let Ok(i) = args.trim().parse::<u32>() else {
                    return Reply::Error(Err::Cms(CmsError::INVALID_INDEX));
                };
                let Some(m) = self.store.get_mut(&i) else {
                    return Reply::Error(Err::Cms(CmsError::INVALID_INDEX));
                };
                info.push(vec![
                    format!("+CMGR: {},,{}", m.stat, tpdu_len(&m.pdu)),
                    hex::encode(&m.pdu).to_ascii_uppercase(),
                ]);
                if m.stat == 0 {
                    m.stat = 1;
                }
                Reply::Ok
            }
            ("+CMGD", Kind::Set) => {
                if let Some(e) = self.sim_busy(true, events) {
                    return Reply::Error(e);
                }
                let f = fields(args);
                let index = f.first().and_then(|s| s.parse::<u32>().ok());
                let flag = f.get(1).map_or(Some(0), |s| s.parse::<u8>().ok());
                match (index, flag) {
                    (Some(i), Some(0)) => {
                        self.store.remove(&i);
                        Reply::Ok
                    }
                    (_, Some(flag @ 1..=4)) => {
                        self.store.retain(|_, m| match flag {
                            1 => m.stat != 1,
                            2 => !matches!(m.stat, 1 | 3),
                            3 => !matches!(m.stat, 1..=3),
                            _ => false,
                        });
                        Reply::Ok
                    }
                    _ => Reply::Error(Err::Cms(CmsError::INVALID_INDEX)),
                }
            }
            ("+CMGD", Kind::Test) => {
                let used: Vec<String> = self.store.keys().map(u32::to_string).collect();
                one(format!("+CMGD: ({}),(0-4)", used.join(",")));
                Reply::Ok
            }
            ("+CNMA", _) => Reply::Ok,
            _ => Reply::Error(Err::Plain),
        }
    }

    /// With `fault cme14`, answers SIM-dependent commands "busy" until the count runs out,
    /// then announces readiness.
    fn sim_busy(&mut self, sms: bool, events: &mut dyn FnMut(Event)) -> Option<Err> {
        if self.sim_busy_left == 0 {
            return None;
        }
        self.sim_busy_left -= 1;
        events(Event::Fault(format!(
            "cme14: SIM busy ({} more)",
            self.sim_busy_left
        )));
        if self.sim_busy_left == 0 {
            let ready: Vec<String> = self.quirks.ready.iter().map(|s| s.to_string()).collect();
            self.pending.push((
                Instant::now() + Duration::from_millis(50),
                Pending::Urc(ready),
            ));
        }
        Some(if sms {
            Err::Cms(CmsError::SIM_BUSY)
        } else {
            Err::Cme(CmeError::SIM_BUSY)
        })
    }

    fn with_sim(
        &mut self,
        sms: bool,
        events: &mut dyn FnMut(Event),
        f: impl FnOnce(&mut Self) -> Option<Vec<String>>,
        info: &mut Vec<Vec<String>>,
    ) -> Reply {
        if let Some(e) = self.sim_busy(sms, events) {
            return Reply::Error(e);
        }
        if self.pin_required {
            return Reply::Error(Err::Cme(CmeError::SIM_PIN_REQUIRED));
        }
        match f(self) {
            Some(lines) => {
                info.extend(lines.into_iter().map(|l| vec![l]));
                Reply::Ok
            }
            None => Reply::Error(Err::Cme(CmeError::SIM_FAILURE)),
        }
    }

    /// Reads IMSI and ICCID from the card once (the modem caches them, as firmware does).
    fn identity(&mut self) {
        if self.imsi.is_some() && self.iccid.is_some() {
            return;
        }
        let Some(mut s) = self.card.sim() else { return };
        let read = |s: &mut Sim, name: &str| -> Option<Vec<u8>> {
            let file = sim::find_file(name)?;
            match s.read_file(file.location).ok()? {
                sim::FileContent::Transparent(b) => Some(b),
                sim::FileContent::Records(_) => None,
            }
        };
        if self.imsi.is_none() {
            self.imsi = read(&mut s, "IMSI")
                .and_then(|b| simlab_applet::encoding::decode_imsi(&b).ok())
                .map(|d| d.as_str().to_string());
        }
        if self.iccid.is_none() {
            self.iccid = read(&mut s, "ICCID")
                .and_then(|b| simlab_applet::encoding::decode_iccid(&b).ok())
                .map(|d| d.as_str().to_string());
        }
    }

    fn sim_state(&mut self) -> SimState {
        if !self.pin_required {
            return SimState::Ready;
        }
        match self.card.sim().and_then(|mut s| s.tries().ok()) {
            Some(t) if t.pin1 == Some(0) => SimState::Puk,
            _ => SimState::Pin,
        }
    }

    fn enter_pin(&mut self, args: &str) -> Reply {
        let f = fields(args);
        if f.len() != 1 {
            // PUK entry (`"<puk>","<new pin>"`) is not emulated.
            return Reply::Error(Err::Cme(CmeError::NOT_SUPPORTED));
        }
        let Some(pin) = simlab_applet::chv::pad_pin(unquote(f[0])) else {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PASSWORD));
        };
        if !self.pin_required {
            return Reply::Error(Err::Cme(CmeError::NOT_ALLOWED));
        }
        let Some(mut s) = self.card.sim() else {
            return Reply::Error(Err::Cme(CmeError::SIM_FAILURE));
        };
        self.note("AT+CPIN: VERIFY PIN1 (value not traced)");
        match s.verify(sim::Code::Pin1, Some(&pin)) {
            Ok(sim::VerifyOutcome::Verified | sim::VerifyOutcome::NotEnabled) => {
                self.pin_required = false;
                let ready: Vec<String> = self.quirks.ready.iter().map(|s| s.to_string()).collect();
                self.pending.push((
                    Instant::now() + Duration::from_millis(50),
                    Pending::Urc(ready),
                ));
                Reply::Ok
            }
            Ok(sim::VerifyOutcome::Blocked) => Reply::Error(Err::Cme(CmeError::SIM_PUK_REQUIRED)),
            Ok(sim::VerifyOutcome::Wrong {
                tries_left: Some(0),
            }) => Reply::Error(Err::Cme(CmeError::SIM_PUK_REQUIRED)),
            Ok(_) => Reply::Error(Err::Cme(CmeError::INCORRECT_PASSWORD)),
            Err(_) => Reply::Error(Err::Cme(CmeError::SIM_FAILURE)),
        }
    }

    /// `AT+CSIM=<length>,"<command>"` (TS 27.007 8.17): the APDU goes to the card as is.
    fn csim(
        &mut self,
        args: &str,
        info: &mut Vec<Vec<String>>,
        events: &mut dyn FnMut(Event),
    ) -> Reply {
        if let Some(e) = self.sim_busy(false, events) {
            return Reply::Error(e);
        }
        let f = fields(args);
        let (Some(len), Some(data)) = (f.first().and_then(|l| l.parse::<usize>().ok()), f.get(1))
        else {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
        };
        let data = unquote(data);
        let Ok(apdu) = hex::decode("csim", data) else {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
        };
        if len != data.len() || apdu.len() < 4 {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
        }
        let response = self.card.process(&apdu);
        let hexr = hex::encode(&response).to_ascii_uppercase();
        info.push(vec![format!("+CSIM: {},\"{hexr}\"", hexr.len())]);
        Reply::Ok
    }

    /// `AT+CRSM=<command>,<fileid>[,<P1>,<P2>,<P3>[,<data>[,<pathid>]]]` (TS 27.007 8.18):
    /// the modem selects the file (by path, or where the standard puts it) and runs the
    /// command in the TS 51.011 dialect.
    fn crsm(
        &mut self,
        args: &str,
        info: &mut Vec<Vec<String>>,
        events: &mut dyn FnMut(Event),
    ) -> Reply {
        if let Some(e) = self.sim_busy(false, events) {
            return Reply::Error(e);
        }
        let f = fields(args);
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u32>().ok());
        let (Some(command), Some(fid)) = (num(0), num(1)) else {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
        };
        let (p1, p2, p3) = (
            num(2).unwrap_or(0),
            num(3).unwrap_or(0),
            num(4).unwrap_or(0),
        );
        let data = f
            .get(5)
            .map(|d| unquote(d))
            .filter(|d| !d.is_empty())
            .map(|d| hex::decode("crsm", d));
        let data = match data {
            Some(Ok(d)) => d,
            Some(Err(_)) => return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS)),
            None => Vec::new(),
        };
        let path: Vec<u16> = match f.get(6).map(|p| unquote(p)) {
            Some(p) if !p.is_empty() => match hex::decode("path", p) {
                Ok(b) if b.len() % 2 == 0 => b
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect(),
                _ => return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS)),
            },
            _ => default_path(fid as u16),
        };
        let (Ok(p1), Ok(p2), Ok(p3), Ok(ins)) = (
            u8::try_from(p1),
            u8::try_from(p2),
            u8::try_from(p3),
            u8::try_from(command),
        ) else {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
        };
        if ![0xB0, 0xB2, 0xC0, 0xD6, 0xDC, 0xF2].contains(&ins) {
            return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
        }
        // Select the path, then the file; a failing SELECT's status word is the answer.
        let mut last = Vec::new();
        for id in path.iter().copied().chain(std::iter::once(fid as u16)) {
            if ins == 0xF2 {
                break;
            }
            let r = self
                .card
                .process(&[0xA0, 0xA4, 0x00, 0x00, 0x02, (id >> 8) as u8, id as u8]);
            if !matches!(r.as_slice(), [0x9F, _] | [0x90, 0x00]) {
                return self.crsm_reply(&r, info);
            }
            last = r;
        }
        let apdu: Vec<u8> = match ins {
            0xC0 => {
                let n = if p3 == 0 {
                    last.get(1).copied().unwrap_or(0)
                } else {
                    p3
                };
                vec![0xA0, 0xC0, 0x00, 0x00, n]
            }
            0xD6 | 0xDC => {
                let Ok(lc) = u8::try_from(data.len()) else {
                    return Reply::Error(Err::Cme(CmeError::INCORRECT_PARAMETERS));
                };
                let mut a = vec![0xA0, ins, p1, p2, lc];
                a.extend_from_slice(&data);
                a
            }
            _ => vec![0xA0, ins, p1, p2, p3],
        };
        let r = self.card.process(&apdu);
        self.crsm_reply(&r, info)
    }

    fn crsm_reply(&mut self, r: &[u8], info: &mut Vec<Vec<String>>) -> Reply {
        let Some(split) = r.len().checked_sub(2) else {
            return Reply::Error(Err::Cme(CmeError::SIM_FAILURE));
        };
        let (body, sw) = r.split_at(split);
        let mut line = format!("+CRSM: {},{}", sw[0], sw[1]);
        if !body.is_empty() {
            line.push_str(&format!(",\"{}\"", hex::encode(body).to_ascii_uppercase()));
        }
        info.push(vec![line]);
        Reply::Ok
    }

    fn in_charset(&self, s: &str) -> String {
        if self.cscs == "UCS2" {
            s.encode_utf16().map(|u| format!("{u:04X}")).collect()
        } else {
            s.to_string()
        }
    }

    // --- sending -------------------------------------------------------------------------

    /// The PDU after the prompt (hex, without Ctrl-Z).
    fn submit(
        &mut self,
        hexline: &[u8],
        length: usize,
        submission: u32,
        events: &mut dyn FnMut(Event),
    ) -> Vec<Out> {
        let mut outs = Vec::new();
        let text = String::from_utf8_lossy(hexline).to_string();
        if let Some(t) = &mut self.trace {
            t.sent(&format!(
                "(PDU of {} octets, written to the spool, not traced) ^Z",
                text.len() / 2
            ));
        }
        let faults = self.opts.faults.clone();
        if faults.vanish == Some(submission) {
            events(Event::Fault(format!(
                "vanish: gone after the PDU of submission {submission}"
            )));
            outs.push(Out::Vanish);
            return outs;
        }
        let refuse =
            |m: &mut Self, code: CmsError, reason: String, events: &mut dyn FnMut(Event)| {
                events(Event::Refused { reason });
                vec![m.final_error(Err::Cms(code))]
            };
        let bytes = match hex::decode("pdu", &text) {
            Ok(b) => b,
            Err(_) => return refuse(self, CmsError::INVALID_PDU, "PDU is not hex".into(), events),
        };
        let decoded = match decode(&bytes, true) {
            Ok(d) => d,
            Err(e) => {
                return refuse(
                    self,
                    CmsError::INVALID_PDU,
                    format!("PDU does not decode: {e}"),
                    events,
                );
            }
        };
        if decoded.tpdu_len != length {
            return refuse(
                self,
                CmsError::INVALID_PDU,
                format!(
                    "AT+CMGS={length} but the TPDU has {} octets",
                    decoded.tpdu_len
                ),
                events,
            );
        }
        let Pdu::Submit(submit) = decoded.pdu else {
            return refuse(
                self,
                CmsError::INVALID_PDU,
                "not an SMS-SUBMIT".into(),
                events,
            );
        };
        for (fault, code) in [
            (faults.cms330, CmsError::SMSC_UNKNOWN),
            (faults.cms500, CmsError::UNKNOWN),
        ] {
            if fault.is_some_and(|n| n.hits(submission)) {
                events(Event::Fault(format!(
                    "cms{}: submission {submission} refused",
                    code.0
                )));
                return refuse(self, code, format!("fault cms{}", code.0), events);
            }
        }
        let smsc = decoded
            .sca
            .as_ref()
            .map(Address::to_string)
            .or_else(|| self.csca.clone());
        let Some(smsc) = smsc else {
            return refuse(
                self,
                CmsError::SMSC_UNKNOWN,
                "no service centre (AT+CSCA unset, none in the PDU)".into(),
                events,
            );
        };
        if let Some(d) = faults.slow_submit {
            events(Event::Fault(format!("slow-submit: {} ms", d.as_millis())));
            outs.push(Out::Sleep(d));
        }
        let mr = self.next_mr;
        self.next_mr = self.next_mr.wrapping_add(1);
        let to = submit.destination.to_string();
        let spool = self.spool(&submit, &bytes, mr, events);
        events(Event::Submitted {
            mr,
            to: to.clone(),
            spool,
        });
        if let Some(net) = self.network.as_mut() {
            // The network routes it and produces the status report.
            net.submitted(mr, &submit);
            if self.opts.faults.urc_mid {
                outs.push(Out::Bytes(self.chatter_line()));
            }
            outs.extend(self.write_info(&[vec![format!("+CMGS: {mr}")]]));
            outs.push(self.final_ok());
            return outs;
        }
        let now = Instant::now();
        let sc = Address::parse(&smsc).ok();
        let back = match self.opts.loopback {
            Loopback::All => true,
            Loopback::Own => self
                .opts
                .own_number
                .as_deref()
                .and_then(|n| Address::parse(n).ok())
                .is_some_and(|own| own == submit.destination),
            Loopback::None => false,
        };
        if back {
            let mut d = Deliver::new(
                submit.destination.clone(),
                now_timestamp(),
                submit.user_data.clone(),
            );
            d.dcs = submit.dcs;
            d.protocol_identifier = submit.protocol_identifier;
            match d.encode(sc.as_ref()) {
                Ok(p) => self.pending.push((
                    now + DELIVER_DELAY,
                    Pending::Deliver {
                        pdu: p.as_bytes().to_vec(),
                        from: to.clone(),
                    },
                )),
                Err(e) => events(Event::Warning(format!("loopback DELIVER: {e}"))),
            }
        }
        if submit.status_report_request {
            let report = report_now(&submit, mr, faults.report_status.unwrap_or(0));
            match report.encode(sc.as_ref()) {
                Ok(p) => self.pending.push((
                    now + REPORT_DELAY,
                    Pending::Report {
                        pdu: p.as_bytes().to_vec(),
                        mr,
                    },
                )),
                Err(e) => events(Event::Warning(format!("status report: {e}"))),
            }
        }
        if self.opts.faults.urc_mid {
            // A URC right after the echo of the PDU, before the result.
            outs.push(Out::Bytes(self.chatter_line()));
        }
        outs.extend(self.write_info(&[vec![format!("+CMGS: {mr}")]]));
        outs.push(self.final_ok());
        outs
    }

    /// Writes the spool entry for an accepted SUBMIT; returns its path.
    fn spool(
        &mut self,
        submit: &simlab_sms::Submit,
        pdu: &[u8],
        mr: u8,
        events: &mut dyn FnMut(Event),
    ) -> Option<PathBuf> {
        let dir = self.opts.spool.as_ref()?.join("sent");
        self.spooled += 1;
        let concat = submit
            .user_data
            .header
            .as_ref()
            .and_then(|h| h.concatenation())
            .map(|c| {
                json!({
                    "reference": c.reference.value(),
                    "total": c.total,
                    "sequence": c.sequence,
                })
            });
        let entry = json!({
            "seq": self.spooled,
            "time": rfc3339_now(),
            "to": submit.destination.to_string(),
            "text": submit.text(),
            "pdu": hex::encode(pdu),
            "tpdu_length": tpdu_len(pdu),
            "mr": mr,
            "srr": submit.status_report_request,
            "validity_seconds": submit.validity_period.as_ref().and_then(|v| v.duration()).map(|d| d.as_secs()),
            "dcs": format!("{:02x}", submit.dcs.octet()),
            "alphabet": submit.dcs.alphabet().as_str(),
            "concat": concat,
            "udh": submit.user_data.header.as_ref().and_then(|h| h.to_bytes().ok()).map(|b| hex::encode(&b)),
        });
        let path = dir.join(format!("{:06}.json", self.spooled));
        let write = || -> io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{:06}.tmp", self.spooled));
            std::fs::write(&tmp, format!("{entry:#}\n"))?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => Some(path),
            Err(e) => {
                events(Event::Warning(format!("spool {}: {e}", dir.display())));
                None
            }
        }
    }

    // --- receiving -------------------------------------------------------------------------

    /// URCs and deliveries that are due.
    fn due(&mut self, now: Instant, events: &mut dyn FnMut(Event)) -> Vec<Out> {
        let mut outs = Vec::new();
        let mut later = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (at, p) in pending {
            if at > now {
                later.push((at, p));
                continue;
            }
            match p {
                Pending::Urc(lines) => {
                    let mut b = Vec::new();
                    for l in lines {
                        self.trace_out(&l);
                        b.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
                    }
                    outs.push(Out::Bytes(b));
                }
                Pending::Deliver { pdu, from } => {
                    let (index, urc) = self.deliver(pdu, self.cnmi[1]);
                    events(Event::Delivered { from, index });
                    outs.extend(urc.map(|u| self.urc_bytes(u)));
                }
                Pending::Report { pdu, mr } => {
                    events(Event::Reported { mr });
                    let urc = match self.cnmi[3] {
                        1 => Some(vec![
                            format!("+CDS: {}", tpdu_len(&pdu)),
                            hex::encode(&pdu).to_ascii_uppercase(),
                        ]),
                        2 => self
                            .store_message(pdu, 0)
                            .map(|i| vec![format!("+CDSI: \"SM\",{i}")]),
                        _ => None,
                    };
                    outs.extend(urc.map(|u| self.urc_bytes(u)));
                }
            }
        }
        self.pending.extend(later);
        outs
    }

    fn urc_bytes(&mut self, lines: Vec<String>) -> Out {
        let mut b = Vec::new();
        for l in &lines {
            self.trace_out(l);
        }
        b.extend_from_slice(format!("\r\n{}\r\n", lines.join("\r\n")).as_bytes());
        Out::Bytes(b)
    }

    /// Stores or forwards an incoming DELIVER as `<mt>` says; returns the index and the URC.
    fn deliver(&mut self, pdu: Vec<u8>, mt: u8) -> (Option<u32>, Option<Vec<String>>) {
        match mt {
            2 => (
                None,
                Some(vec![
                    format!("+CMT: ,{}", tpdu_len(&pdu)),
                    hex::encode(&pdu).to_ascii_uppercase(),
                ]),
            ),
            0 => (self.store_message(pdu, 0), None),
            _ => match self.store_message(pdu, 0) {
                Some(i) => (Some(i), Some(vec![format!("+CMTI: \"SM\",{i}")])),
                None => (None, None),
            },
        }
    }

    fn store_message(&mut self, pdu: Vec<u8>, stat: u8) -> Option<u32> {
        if self.store.len() >= self.opts.storage {
            self.note("storage full: message dropped");
            return None;
        }
        let index = (1..).find(|i| !self.store.contains_key(i))?;
        self.store.insert(index, Stored { stat, pdu });
        Some(index)
    }

    /// Messages dropped into `SPOOL/inbox/` become incoming messages.
    fn check_inbox(&mut self, events: &mut dyn FnMut(Event)) {
        let Some(dir) = self.opts.spool.as_ref().map(|s| s.join("inbox")) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            match self.inbox_pdus(&path) {
                Ok((from, pdus)) => {
                    for pdu in pdus {
                        self.pending.push((
                            Instant::now(),
                            Pending::Deliver {
                                pdu,
                                from: from.clone(),
                            },
                        ));
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    events(Event::Warning(format!("inbox {}: {e}", path.display())));
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                }
            }
        }
    }

    /// The DELIVER PDUs an inbox file stands for.
    fn inbox_pdus(&self, path: &Path) -> Result<(String, Vec<Vec<u8>>), String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if let Some(pdu) = v["pdu"].as_str() {
            let bytes = hex::decode("pdu", pdu).map_err(|e| e.to_string())?;
            // Stored as given: a malformed PDU is a legitimate test of the reader.
            return Ok(("(raw PDU)".into(), vec![bytes]));
        }
        let from = v["from"]
            .as_str()
            .ok_or("needs \"from\" and \"text\", or \"pdu\"")?;
        let text = v["text"].as_str().ok_or("needs \"text\"")?;
        let originator = Address::parse(from).map_err(|e| e.to_string())?;
        let mut options = SubmitOptions::default();
        if let Some(r) = v["reference"].as_u64() {
            options.concat_reference = simlab_sms::ConcatReference::Bits8(r as u8);
        }
        let parts =
            simlab_sms::encode_text(&originator, text, &options).map_err(|e| e.to_string())?;
        let sc = self.csca.as_deref().and_then(|s| Address::parse(s).ok());
        let mut order: Vec<usize> = (0..parts.len()).collect();
        if v["reverse"].as_bool() == Some(true) {
            order.reverse();
        }
        let mut pdus = Vec::new();
        for i in order {
            let submit = match decode(parts[i].as_bytes(), true).map(|d| d.pdu) {
                Ok(Pdu::Submit(s)) => s,
                _ => return Err("internal: re-decoding a SUBMIT failed".into()),
            };
            let mut d = Deliver::new(originator.clone(), now_timestamp(), submit.user_data);
            d.dcs = submit.dcs;
            let p = d.encode(sc.as_ref()).map_err(|e| e.to_string())?;
            pdus.push(p.as_bytes().to_vec());
        }
        Ok((from.to_string(), pdus))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Read,
    Set,
    Test,
}

enum Reply {
    Ok,
    Prompt { length: usize, submission: u32 },
    Error(Err),
}

#[derive(Clone, Copy)]
enum Err {
    Plain,
    Cme(CmeError),
    Cms(CmsError),
}

enum SimState {
    Ready,
    Pin,
    Puk,
}

/// Splits what follows "AT" into commands: extended ones (`+CMGF=0`) end at `;`, basic ones
/// (`E0`, `&F`, `S0=0`) are a letter (or `&` and a letter) and digits.
fn split_commands(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let first = rest.chars().next().unwrap_or(' ');
        if matches!(first, '+' | '^' | '$' | '%' | '*') {
            let end = rest.find(';').unwrap_or(rest.len());
            out.push(rest[..end].trim().to_string());
            rest = rest.get(end + 1..).unwrap_or("").trim_start();
        } else if first == ';' || first == ' ' {
            rest = &rest[1..];
        } else {
            let mut end = first.len_utf8();
            if first == '&' {
                end += rest[end..].chars().next().map_or(0, char::len_utf8);
            }
            if first.eq_ignore_ascii_case(&'S') {
                // S-registers: S3=13, S3?
                end += rest[end..]
                    .find(|c: char| !(c.is_ascii_digit() || c == '=' || c == '?'))
                    .unwrap_or(rest.len() - end);
            } else {
                end += rest[end..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len() - end);
            }
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// Where TS 51.011 puts a file, for `AT+CRSM` without a path.
fn default_path(fid: u16) -> Vec<u16> {
    match fid {
        0x3F00 => vec![],
        0x2FE2 | 0x2F00 | 0x2F05 | 0x7F10 | 0x7F20 => vec![0x3F00],
        0x6F3A..=0x6F4F => vec![0x3F00, 0x7F10],
        _ => vec![0x3F00, 0x7F20],
    }
}

/// TPDU octets of a PDU with its service-centre prefix.
fn tpdu_len(pdu: &[u8]) -> usize {
    let sca = pdu.first().map_or(0, |&n| usize::from(n) + 1);
    pdu.len().saturating_sub(sca)
}

/// 145 for international numbers, 129 otherwise (TS 24.008 type of address).
fn toa(number: &str) -> u8 {
    if number.starts_with('+') { 145 } else { 129 }
}

fn now_civil() -> (i64, u32, u32, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    (y, m, d, secs % 86_400)
}

/// The current UTC time as a TP-SCTS.
/// The STATUS-REPORT a service centre sends for `submit` (TP-MR `mr`) with TP-ST `status`
/// (0: delivered), received and discharged now: the virtual modem's own and the virtual
/// network's.
pub(crate) fn report_now(submit: &simlab_sms::Submit, mr: u8, status: u8) -> StatusReport {
    let ts = now_timestamp();
    StatusReport {
        more_messages_to_send: false,
        loop_prevention: false,
        about_command: false,
        message_reference: mr,
        recipient: submit.destination.clone(),
        service_centre_timestamp: ts,
        discharge_time: ts,
        status: Status::from_octet(status),
        protocol_identifier: None,
        dcs: None,
        user_data: None,
    }
}

pub(crate) fn now_timestamp() -> Timestamp {
    let (y, m, d, s) = now_civil();
    Timestamp::new(
        (y.rem_euclid(100)) as u8,
        m as u8,
        d as u8,
        (s / 3600) as u8,
        (s / 60 % 60) as u8,
        (s % 60) as u8,
        0,
    )
    .unwrap_or_else(|_| Timestamp::new(0, 1, 1, 0, 0, 0, 0).expect("a constant valid timestamp"))
}

fn rfc3339_now() -> String {
    let (y, m, d, s) = now_civil();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists() {
        let f = Faults::parse("slow-prompt=500, cms500=2,cme14,urc-mid,echo,split,garbage,vanish=3,stuck-prompt,report-status=46").unwrap();
        assert_eq!(f.slow_prompt, Some(Duration::from_millis(500)));
        assert_eq!(f.cms500, Some(Nth::Only(2)));
        assert_eq!(f.cme14, 3);
        assert!(f.urc_mid && f.echo && f.split && f.garbage);
        assert_eq!(f.vanish, Some(3));
        assert_eq!(f.stuck_prompt, Some(Nth::Every));
        assert_eq!(f.report_status, Some(0x46));
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        for bad in ["nope", "vanish", "cms330=0", "cme14=x", "report-status=zz"] {
            assert!(Faults::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_split_like_v250() {
        assert_eq!(split_commands("E0V1"), ["E0", "V1"]);
        assert_eq!(
            split_commands("+CMGF=0;+CNMI=2,1,0,0,0"),
            ["+CMGF=0", "+CNMI=2,1,0,0,0"]
        );
        assert_eq!(split_commands("&FE0"), ["&F", "E0"]);
        assert_eq!(split_commands("S0=0E0"), ["S0=0", "E0"]);
        assert_eq!(split_commands(""), Vec::<String>::new());
        assert_eq!(split_commands("ÿ"), ["ÿ"]);
    }

    fn modem(opts: Options) -> VirtualModem {
        let profile =
            simlab_card::profile::Profile::parse(Path::new("default"), DEFAULT_SIM).unwrap();
        let card = EmulatedCard::new(profile.build_card_seeded([0; 32]), None, None).unwrap();
        VirtualModem::new(card, opts, None)
    }

    fn talk(m: &mut VirtualModem, input: &[u8]) -> String {
        String::from_utf8_lossy(&m.answer(input)).into_owned()
    }

    #[test]
    fn never_panics_on_any_command_line() {
        let mut m = modem(Options::default());
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 24) as usize;
            let mut line = b"AT".to_vec();
            for i in 0..len {
                let alphabet = b"+^CMGSLRDIPN=?,\"0123456789;AEZ\x1a\x1b\r";
                line.push(alphabet[((seed >> (i % 24)) as usize + i) % alphabet.len()]);
            }
            line.push(b'\r');
            let _ = talk(&mut m, &line);
        }
    }

    #[test]
    fn a_slash_repeats_the_last_line_and_before_any_is_ignored() {
        let mut m = modem(Options::default());
        // Echoed (ATE1 is the default), and no answer.
        assert_eq!(talk(&mut m, b"A/\r"), "A/\r");
        let first = talk(&mut m, b"ATE0\rAT+CGMI\r");
        assert!(first.contains("simlab"), "{first}");
        assert_eq!(talk(&mut m, b"a/\r"), "\r\nsimlab\r\n\r\nOK\r\n");
    }

    #[test]
    fn csim_and_crsm_reach_the_card() {
        let mut m = modem(Options::default());
        let out = talk(&mut m, b"ATE0\rAT+CRSM=176,12258,0,0,10\r");
        assert!(
            out.contains("+CRSM: 144,0,\"988812010000900910F3\""),
            "{out}"
        );
        let out = talk(&mut m, b"AT+CSIM=14,\"A0A40000023F00\"\r");
        assert!(out.contains("+CSIM: 4,\"9F"), "{out}");
        let out = talk(&mut m, b"AT+CIMI\r");
        assert!(out.contains("\r\n001010000000099\r\n\r\nOK"), "{out}");
    }

    /// The AT transcript keeps PINs, ADM, keys and authentication answers out, whichever AT
    /// command carries them (issue 11's leak through `+CSIM`).
    #[test]
    fn at_trace_has_no_secrets() {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let mut m = modem(Options::default());
        m.trace = Some(AtTrace::to_writer(Box::new(buf.clone())));
        let ki = "465B5CE8B199B49FAA5F0A2EE238A6BC";
        talk(&mut m, b"ATE0+CPIN=\"4711\"\r");
        talk(&mut m, b"AT+CLCK=\"SC\",0,\"8642\"\r");
        talk(&mut m, b"AT+CSIM=26,\"A020000A083837363534333231\"\r");
        talk(&mut m, b"AT+CSIM=14,\"A0A40000027F20\"\r");
        talk(&mut m, b"AT+CSIM=14,\"A0A400000200FF\"\r");
        let write = format!("AT+CSIM=42,\"A0D6000010{ki}\"\r");
        talk(&mut m, write.as_bytes());
        let crsm = format!("AT+CRSM=214,255,0,0,16,\"{ki}\",\"3F007F20\"\r");
        talk(&mut m, crsm.as_bytes());
        let out = talk(
            &mut m,
            b"AT+CSIM=42,\"A08800001000112233445566778899AABBCCDDEEFF\";+CSIM=10,\"A0C000000C\"\r",
        );
        let answer = out.split('"').nth(3).unwrap_or_default().to_string();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(answer.len() > 4, "{out}");
        let sres_kc = &answer[..answer.len() - 4];
        for secret in ["4711", "8642", "3837363534333231", ki, sres_kc] {
            assert!(!text.contains(secret), "{secret} leaked:\n{text}");
        }
        assert!(text.contains("A0 A4 00 00 02 7F 20"), "{text}");
    }

    /// A network that keeps what it was given and delivers what the test queued.
    struct Recorder {
        submitted: Arc<Mutex<Vec<(u8, simlab_sms::Submit)>>>,
        deliveries: Arc<Mutex<Vec<NetworkDelivery>>>,
    }

    impl Network for Recorder {
        fn submitted(&mut self, mr: u8, submit: &simlab_sms::Submit) {
            self.submitted.lock().unwrap().push((mr, submit.clone()));
        }
        fn poll(&mut self) -> Vec<NetworkDelivery> {
            std::mem::take(&mut *self.deliveries.lock().unwrap())
        }
    }

    #[test]
    fn an_attached_modem_hands_submits_to_the_network_and_announces_its_deliveries() {
        let mut m = modem(Options {
            loopback: Loopback::All,
            ..Options::default()
        });
        let submitted = Arc::new(Mutex::new(Vec::new()));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        m.attach(Box::new(Recorder {
            submitted: submitted.clone(),
            deliveries: deliveries.clone(),
        }));
        let to = Address::parse("+491710000001").unwrap();
        let options = SubmitOptions {
            status_report_request: true,
            ..SubmitOptions::default()
        };
        let pdu = simlab_sms::encode_text(&to, "hello", &options)
            .unwrap()
            .remove(0);
        let out = talk(
            &mut m,
            format!("ATE0\rAT+CMGF=0\rAT+CMGS={}\r", pdu.cmgs_length()).as_bytes(),
        );
        assert!(out.contains('>'), "{out}");
        let out = talk(&mut m, format!("{}\x1a", pdu.to_hex()).as_bytes());
        assert!(out.contains("+CMGS: 0"), "{out}");
        {
            let s = submitted.lock().unwrap();
            assert_eq!(s.len(), 1);
            assert_eq!((s[0].0, &s[0].1.destination), (0, &to));
            assert!(s[0].1.status_report_request);
        }
        // Neither loopback nor a local report: the network does both.
        assert!(m.pending.is_empty());
        let from = Address::parse("+491710000002").unwrap();
        let d = Deliver::new(from, now_timestamp(), simlab_sms::UserData::from_text("hi"));
        let sc = Address::parse(DEFAULT_SMSC).unwrap();
        deliveries.lock().unwrap().push(NetworkDelivery::Deliver {
            pdu: d.encode(Some(&sc)).unwrap().as_bytes().to_vec(),
            from: "+491710000002".into(),
        });
        m.poll_network();
        let outs = m.due(Instant::now(), &mut |_| {});
        let text: Vec<u8> = outs
            .into_iter()
            .flat_map(|o| match o {
                Out::Bytes(b) => b,
                _ => Vec::new(),
            })
            .collect();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("+CMTI: \"SM\",1"), "{text}");
    }
}
