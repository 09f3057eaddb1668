//! `simlab readers`: what pcscd sees.

use super::Output;
use serde_json::json;
use simlab_card::error::Result;
use simlab_card::hex;
use simlab_card::transport::pcsc;

pub fn run(out: &Output) -> Result<i32> {
    let readers = pcsc::list_readers()?;
    let mut text = String::new();
    if readers.is_empty() {
        text.push_str("no readers\n");
    }
    for (i, r) in readers.iter().enumerate() {
        let state = match (&r.card_present, &r.atr) {
            (true, Some(atr)) => format!("card, ATR {}", hex::encode(atr)),
            (true, None) => "card".to_string(),
            (false, _) => "empty".to_string(),
        };
        text.push_str(&format!("[{i}] {}  ({state})\n", r.name));
    }
    let json = json!(
        readers
            .iter()
            .enumerate()
            .map(|(i, r)| json!({
                "index": i,
                "name": r.name,
                "card_present": r.card_present,
                "atr": r.atr.as_ref().map(|a| hex::encode(a)),
            }))
            .collect::<Vec<_>>()
    );
    out.result(&text, &json)?;
    Ok(0)
}
