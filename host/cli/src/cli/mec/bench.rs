//! `simlab mec bench` (hidden; `scripts/bench-roaming` prints its table).
//!
//! - Home-server look-ups per second on a partner table of `--partners` partners with
//!   `--prefixes` local prefixes over 50 countries, beside the obvious peer measured in the same
//!   run: a linear scan of the partner list (country code, then each partner's prefixes), which
//!   must give the same answers.
//! - Authenticated payments per second end to end on loopback: three MeC servers, a CP and an
//!   FI over mutual TLS on threads of this process, the phone's token the simlab card model;
//!   each payment is the whole walk (checkout twice, redirect, contract, PIN, SIGN, result,
//!   FI, step 21, receipt). Authentications (no FI, no step 21) are timed beside it.

use super::super::Output;
use super::super::demo_roaming::{World, order};
use serde_json::json;
use simlab_card::error::{Error, Result};
use simlab_services::roaming::RequestType;
use simlab_services::roaming::shop::shop;
use simlab_services::router::PrefixRouter;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Partners in the table.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    partners: usize,
    /// Local prefixes over all partners.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    prefixes: usize,
    /// Look-ups to time.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    lookups: usize,
    /// Payments (and authentications) to time end to end; 0 skips them.
    #[arg(long, value_name = "N", default_value_t = 50)]
    payments: usize,
}

/// A small deterministic generator: the same table every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.next() % 10) as u8))
            .collect()
    }
}

struct Row {
    name: String,
    cc: String,
    prefixes: Vec<String>,
}

/// The peer: every partner looked at, for every number.
fn linear<'a>(rows: &'a [Row], number: &str) -> Vec<&'a str> {
    let d = &number[1..];
    let Some(cc) = rows
        .iter()
        .map(|r| r.cc.as_str())
        .filter(|cc| d.starts_with(cc))
        .max_by_key(|cc| cc.len())
    else {
        return Vec::new();
    };
    let local = &d[cc.len()..];
    let mut hits: Vec<(usize, usize, &str)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.cc == cc)
        .filter_map(|(i, r)| {
            if r.prefixes.is_empty() {
                return Some((0, i, r.name.as_str()));
            }
            r.prefixes
                .iter()
                .filter(|p| local.starts_with(p.as_str()))
                .map(|p| p.len())
                .max()
                .map(|l| (l, i, r.name.as_str()))
        })
        .collect();
    hits.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    hits.into_iter().map(|h| h.2).collect()
}

pub fn run(out: &Output, a: &BenchArgs) -> Result<i32> {
    if a.partners == 0 || a.lookups == 0 {
        return Err(Error::arg(
            "--partners",
            "--partners and --lookups must be above 0",
        ));
    }
    let mut rng = Lcg(0x5eed_0001);
    let countries: Vec<String> = (0..50)
        .map(|i| {
            if i < 40 {
                (20 + i).to_string()
            } else {
                (350 + i).to_string()
            }
        })
        .collect();
    let per = a.prefixes / a.partners;
    let mut extra = a.prefixes % a.partners;
    // Distinct prefixes within each country (2 to 5 digits), so the table has exactly
    // --prefixes of them.
    let mut taken: std::collections::HashSet<(String, String)> = Default::default();
    let rows: Vec<Row> = (0..a.partners)
        .map(|i| {
            let n = per + usize::from(extra > 0);
            extra = extra.saturating_sub(1);
            let cc = countries[i % countries.len()].clone();
            let mut prefixes = Vec::with_capacity(n);
            while prefixes.len() < n {
                let len = 2 + (rng.next() % 4) as usize;
                let p = rng.digits(len);
                if taken.insert((cc.clone(), p.clone())) {
                    prefixes.push(p);
                }
            }
            Row {
                name: format!("p{i}"),
                cc,
                prefixes,
            }
        })
        .collect();
    let mut router = PrefixRouter::new();
    for r in &rows {
        router
            .add(r.name.clone(), &r.cc, &r.prefixes)
            .map_err(|e| Error::arg("--prefixes", e.to_string()))?;
    }
    let numbers: Vec<String> = (0..10_000)
        .map(|i| {
            let cc = if i % 10 == 9 {
                "1"
            } else {
                &countries[(rng.next() as usize) % countries.len()]
            };
            format!("+{cc}{}", rng.digits(9))
        })
        .collect();
    // Same answers first, on every number of the set.
    let mut matched = 0usize;
    for n in &numbers {
        let fast: Vec<&str> = router
            .lookup(n)
            .map_err(|e| Error::arg("--lookups", e.to_string()))?
            .iter()
            .map(|r| r.key.as_str())
            .collect();
        let slow = linear(&rows, n);
        if fast != slow {
            return Err(Error::Mismatch {
                what: format!("{n}: router {fast:?}, linear scan {slow:?}"),
            });
        }
        matched += usize::from(!fast.is_empty());
    }
    let started = Instant::now();
    let mut found = 0usize;
    for i in 0..a.lookups {
        let n = &numbers[i % numbers.len()];
        found += router.lookup(n).map(|r| r.len()).unwrap_or(0);
    }
    let router_rate = a.lookups as f64 / started.elapsed().as_secs_f64();
    let linear_n = (a.lookups / 100).max(1_000);
    let started = Instant::now();
    for i in 0..linear_n {
        found += linear(&rows, &numbers[i % numbers.len()]).len();
    }
    let linear_rate = linear_n as f64 / started.elapsed().as_secs_f64();

    let (mut pay_rate, mut auth_rate) = (None, None);
    if a.payments > 0 {
        let mut w = World::start()?;
        let (cp, trust, pin) = (w.cp_front.clone(), w.trust.clone(), w.pin);
        let mut quiet = |_: &str| {};
        for (kind, rate) in [
            (RequestType::Payment, &mut pay_rate),
            (RequestType::Authentication, &mut auth_rate),
        ] {
            let amount = if kind == RequestType::Payment { 500 } else { 0 };
            let started = Instant::now();
            for _ in 0..a.payments {
                let o = shop(
                    &cp,
                    &trust,
                    &mut w.token,
                    &pin,
                    &order(kind, amount, "bench"),
                    &mut quiet,
                )?;
                let ok = match kind {
                    RequestType::Payment => o.cp["status"] == "paid",
                    _ => o.cp["status"] == "success",
                };
                if !ok {
                    return Err(Error::Mismatch {
                        what: format!("a {kind} did not succeed: {}", o.cp),
                    });
                }
            }
            *rate = Some(a.payments as f64 / started.elapsed().as_secs_f64());
        }
    }
    out.result(
        &format!(
            "look-ups/s {router_rate:.0} (linear scan {linear_rate:.0}); payments/s {}; authentications/s {}\n",
            pay_rate.map_or("-".into(), |r| format!("{r:.1}")),
            auth_rate.map_or("-".into(), |r| format!("{r:.1}")),
        ),
        &json!({
            "partners": a.partners,
            "prefixes": router.prefix_count(),
            "numbers_matched": matched,
            "routes_found": found,
            "lookups_per_second": router_rate,
            "linear_lookups_per_second": linear_rate,
            "payments": a.payments,
            "payments_per_second": pay_rate,
            "authentications_per_second": auth_rate,
        }),
    )?;
    Ok(0)
}
