//! The SMS backend trait services use (simlab_modem::backend) over the AT engine, against the
//! virtual modem on a real pty: what a service sends arrives as the SUBMIT it asked for (TP-VP
//! included), what the network delivers comes back whole, and a confidential body stays out of
//! the AT transcript.

use simlab_hil::VirtualModem;
use simlab_modem::backend::{AtBackend, SendOptions, SmsBackend};
use std::time::{Duration, Instant};

#[test]
fn a_service_sends_and_receives_through_the_at_backend() {
    let modem = VirtualModem::start(&[]);
    let trace_path = simlab_hil::temp_path("backend-at.trace");
    let options = simlab_modem::OpenOptions {
        trace: Some(simlab_modem::trace::AtTrace::create(&trace_path).expect("trace")),
        ..Default::default()
    };
    let mut backend = AtBackend::open(&modem.link, options).expect("open the virtual modem");
    assert!(
        backend.describe().contains("AT on"),
        "{}",
        backend.describe()
    );

    let to = simlab_sms::Address::parse("+491701234567").unwrap();
    let body = "Code 482913 for 150.00 EUR to Shop";
    let receipt = backend
        .send(
            &to,
            body,
            &SendOptions {
                validity: Some(Duration::from_secs(300)),
                confidential: true,
                ..Default::default()
            },
        )
        .expect("send");
    assert_eq!((receipt.parts, receipt.validity_seconds), (1, Some(300)));
    let sent = modem.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], "+491701234567");
    assert_eq!(sent[0]["text"], body);
    assert_eq!(sent[0]["validity_seconds"], 300);

    // The network delivers a reply: `incoming` returns it once, whole.
    modem.inbox(
        "reply",
        &serde_json::json!({"from": "+491700000099", "text": "482913"}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = backend.incoming().expect("incoming");
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].from, "+491700000099");
    assert_eq!(got[0].text.as_deref(), Some("482913"));
    assert!(backend.incoming().expect("incoming").is_empty());

    drop(backend);
    let trace = std::fs::read_to_string(&trace_path).expect("trace");
    assert!(trace.contains("AT+CMGS"), "{trace}");
    assert!(!trace.contains("482913 for"), "{trace}");
    let pdu = sent[0]["pdu"].as_str().unwrap().to_ascii_uppercase();
    assert!(!trace.to_ascii_uppercase().contains(&pdu), "{trace}");
}
