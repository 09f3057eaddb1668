//! The PC's pages, rendered on the server: no script, no asset from elsewhere, readable on a
//! small screen. Every value from a person or a database goes through [`esc`].
//!
//! The waiting page needs no script either: it refreshes itself to `…/wait`, which the server
//! holds open (an async task, no thread) until the phone answered or 25 s passed, and then
//! redirects back — the browser keeps showing the correlator the whole time.

use super::TxState;
use super::store::Tx;
use crate::otp::format_amount;

/// The style sheet, served at `/style.css` (the content security policy allows nothing else).
pub const STYLE: &str = "\
body{font-family:system-ui,sans-serif;max-width:40rem;margin:1rem auto;padding:0 1rem;line-height:1.4}
h1{font-size:1.4rem}label{display:block;margin:.6rem 0 .2rem}
input,textarea,select{width:100%;box-sizing:border-box;font:inherit;padding:.3rem}
button{font:inherit;padding:.4rem 1rem;margin:.6rem .4rem 0 0}
.code{font-size:2.2rem;letter-spacing:.2rem;font-family:monospace}
.error{color:#a00}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #ddd}
pre{white-space:pre-wrap;background:#f4f4f4;padding:.5rem}
";

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{head}\
         <title>{} — simlab sign</title><link rel=\"stylesheet\" href=\"/style.css\"></head>\
         <body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Log in",
        "",
        &format!(
            "<h1>Log in</h1>{error}\
             <form method=\"post\" action=\"/login\">\
             <label for=\"user\">User id</label><input id=\"user\" name=\"user\" autocomplete=\"username\" required>\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\" id=\"login\">Log in</button></form>"
        ),
    )
}

fn header(user: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/logout\" style=\"float:right\">{}\
         <button type=\"submit\">Log out</button></form><p>Logged in as <strong id=\"who\">{}</strong> · <a href=\"/\">Home</a></p>",
        csrf_field(csrf),
        esc(user)
    )
}

pub fn home(user: &str, csrf: &str, txs: &[Tx], error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let mut rows = String::new();
    for t in txs {
        rows.push_str(&format!(
            "<tr><td><a href=\"/transactions/{id}\">{summary}</a></td><td>{amount}</td><td>{state}</td></tr>",
            id = crate::bytes::hex(&t.id),
            summary = esc(&t.summary),
            amount = esc(&format_amount(t.amount, &t.currency)),
            state = t.state.as_str(),
        ));
    }
    let list = if rows.is_empty() {
        String::from("<p>No transactions yet.</p>")
    } else {
        format!("<table><tr><th>What</th><th>Amount</th><th>State</th></tr>{rows}</table>")
    };
    page(
        "Prepare a transaction",
        "",
        &format!(
            "{header}<h1>Prepare a transaction</h1>{error}\
             <form method=\"post\" action=\"/transactions\">{csrf}\
             <label for=\"amount\">Amount</label><input id=\"amount\" name=\"amount\" inputmode=\"decimal\" placeholder=\"42.50\" required>\
             <label for=\"currency\">Currency</label><input id=\"currency\" name=\"currency\" value=\"EUR\" maxlength=\"3\" required>\
             <label for=\"summary\">Summary (shown on the phone, at most 160 characters)</label><input id=\"summary\" name=\"summary\" maxlength=\"160\" required>\
             <label for=\"content\">Full details</label><textarea id=\"content\" name=\"content\" rows=\"5\"></textarea>\
             <button type=\"submit\" id=\"prepare\">Prepare</button></form>\
             <h2>Your transactions</h2>{list}",
            header = header(user, csrf),
            csrf = csrf_field(csrf),
        ),
    )
}

/// The transaction page; `wait` adds the self-refresh to the long poll.
pub fn transaction(user: &str, csrf: &str, t: &Tx, error: Option<&str>) -> String {
    let id = crate::bytes::hex(&t.id);
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    let details = format!(
        "<p>Amount: <strong id=\"amount\">{}</strong></p><p>Summary: <span id=\"summary\">{}</span></p>{}",
        esc(&format_amount(t.amount, &t.currency)),
        esc(&t.summary),
        if t.content.is_empty() {
            String::new()
        } else {
            format!("<pre id=\"content\">{}</pre>", esc(&t.content))
        }
    );
    let state = format!(
        "<p>State: <strong id=\"state\">{}</strong>{}</p>",
        t.state.as_str(),
        t.cause
            .as_deref()
            .map(|c| format!(" — <span id=\"cause\">{}</span>", esc(c)))
            .unwrap_or_default()
    );
    let (head, actions) = match t.state {
        TxState::Prepared => (
            String::new(),
            format!(
                "<form method=\"post\" action=\"/transactions/{id}/approve\">{c}\
                 <button type=\"submit\" id=\"approve\">Approve and sign on my phone</button></form>\
                 <form method=\"post\" action=\"/transactions/{id}/abort\">{c}\
                 <button type=\"submit\" id=\"abort\">Abort</button></form>",
                c = csrf_field(csrf)
            ),
        ),
        TxState::AwaitingSignature => (
            format!("<meta http-equiv=\"refresh\" content=\"1; url=/transactions/{id}/wait\">"),
            format!(
                "<p>Your phone got a request. Check that it shows this code, then enter your PIN there:</p>\
                 <p class=\"code\" id=\"correlator\">{}</p>\
                 <form method=\"post\" action=\"/transactions/{id}/abort\">{}\
                 <button type=\"submit\" id=\"abort\">Abort</button></form>",
                esc(t.correlator.as_deref().unwrap_or("")),
                csrf_field(csrf)
            ),
        ),
        _ => (
            String::new(),
            t.correlator
                .as_deref()
                .map(|c| format!("<p>Code: <span id=\"correlator\">{}</span></p>", esc(c)))
                .unwrap_or_default(),
        ),
    };
    page(
        "Transaction",
        &head,
        &format!(
            "{}<h1>Transaction</h1>{error}{details}{state}{actions}",
            header(user, csrf)
        ),
    )
}

/// A refusal for a person (4xx with a page, not JSON).
pub fn error(title: &str, detail: &str) -> String {
    page(
        title,
        "",
        &format!(
            "<h1>{}</h1><p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
            esc(title),
            esc(detail)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        let p = login(Some("<b>"));
        assert!(p.contains("&lt;b&gt;") && !p.contains("<b>"));
    }
}
