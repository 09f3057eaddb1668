//! The phone-number prefix router: which servers to ask about a subscriber, from the number
//! alone. Seed 001's visited MeC server finds a roaming subscriber's home server with it
//! (its "intelligent search" over the partner table); seed 003 finds the peer operator of a
//! number the same way.
//!
//! A number is E.164 (`+` and 4 to 15 digits). Routes are filed under a country code (1 to 3
//! digits) and, inside it, local prefixes (the digits after the country code). The country
//! code is decided first — the longest one in the table that the number starts with — and
//! only that country's routes are candidates, the longest matching local prefix first, then
//! routes that serve the whole country (no local prefix). Real country codes are prefix-free,
//! so "longest" only matters for tables with made-up codes; it keeps the answer unique.
//!
//! Each look-up is at most three hash probes for the country and one per digit of the rest,
//! whatever the table's size: 1 000 partners with 10 000 prefixes cost what ten do.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// The longest E.164 number: 15 digits after `+`.
pub const MAX_DIGITS: usize = 15;
/// The shortest number accepted: shorter ones are service codes, not subscribers.
pub const MIN_DIGITS: usize = 4;

/// Why a number, country code or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not `+` followed by 4 to 15 digits.
    #[error("{0:?} is not an E.164 number (+ and {MIN_DIGITS} to {MAX_DIGITS} digits)")]
    BadNumber(String),
    /// A country code must be 1 to 3 digits, not starting with 0.
    #[error("{0:?} is not a country code (1 to 3 digits, not starting with 0)")]
    BadCountryCode(String),
    /// A local prefix must be 1 to 14 digits.
    #[error("{0:?} is not a local prefix (1 to 14 digits)")]
    BadPrefix(String),
}

/// The digits of an E.164 number, without the `+`.
pub fn digits(number: &str) -> Result<&str, RouteError> {
    let bad = || RouteError::BadNumber(number.to_string());
    let d = number.strip_prefix('+').ok_or_else(bad)?;
    if !(MIN_DIGITS..=MAX_DIGITS).contains(&d.len()) || !d.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(d)
}

/// Checks a country code as the partner table stores it (`47`, not `+47`).
pub fn check_country_code(cc: &str) -> Result<(), RouteError> {
    if (1..=3).contains(&cc.len()) && cc.bytes().all(|b| b.is_ascii_digit()) && !cc.starts_with('0')
    {
        Ok(())
    } else {
        Err(RouteError::BadCountryCode(cc.to_string()))
    }
}

/// Checks a local prefix (the digits after the country code).
pub fn check_prefix(prefix: &str) -> Result<(), RouteError> {
    if (1..MAX_DIGITS).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(RouteError::BadPrefix(prefix.to_string()))
    }
}

/// One answer of [`PrefixRouter::lookup`]: a route and what matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a, K> {
    pub key: &'a K,
    pub country_code: &'a str,
    /// The local prefix that matched; empty for a route serving the whole country.
    pub prefix: &'a str,
}

#[derive(Debug, Clone)]
struct Country<K> {
    /// Local prefix → the routes filed under it, in the order added.
    by_prefix: HashMap<String, Vec<K>>,
    longest: usize,
    /// Routes with no local prefix: the whole country.
    whole: Vec<K>,
}

impl<K> Default for Country<K> {
    fn default() -> Self {
        Country {
            by_prefix: HashMap::new(),
            longest: 0,
            whole: Vec::new(),
        }
    }
}

/// A table of routes by country code and local prefix. `K` names a route (a partner's name).
#[derive(Clone)]
pub struct PrefixRouter<K> {
    countries: HashMap<String, Country<K>>,
}

impl<K> Default for PrefixRouter<K> {
    fn default() -> Self {
        PrefixRouter {
            countries: HashMap::new(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for PrefixRouter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixRouter")
            .field("countries", &self.countries.len())
            .finish()
    }
}

impl<K: Clone + Eq + Hash> PrefixRouter<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Files `key` under `country_code` for each of `prefixes`, or for the whole country when
    /// `prefixes` is empty. Adding the same route twice changes nothing.
    pub fn add(
        &mut self,
        key: K,
        country_code: &str,
        prefixes: &[String],
    ) -> Result<(), RouteError> {
        check_country_code(country_code)?;
        for p in prefixes {
            check_prefix(p)?;
        }
        let country = self.countries.entry(country_code.to_string()).or_default();
        if prefixes.is_empty() {
            if !country.whole.contains(&key) {
                country.whole.push(key);
            }
            return Ok(());
        }
        for p in prefixes {
            let keys = country.by_prefix.entry(p.clone()).or_default();
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
            country.longest = country.longest.max(p.len());
        }
        Ok(())
    }

    /// The routes to try for `number`, best first: its country's longest matching local prefix
    /// first, each route once (at its longest match), then the whole-country routes. Empty
    /// when nothing matches.
    pub fn lookup(&self, number: &str) -> Result<Vec<Route<'_, K>>, RouteError> {
        let d = digits(number)?;
        let mut out: Vec<Route<'_, K>> = Vec::new();
        let Some((cc, country)) = (1..=3.min(d.len()))
            .rev()
            .find_map(|n| self.countries.get_key_value(&d[..n]))
        else {
            return Ok(out);
        };
        let local = &d[cc.len()..];
        for n in (1..=country.longest.min(local.len())).rev() {
            if let Some((prefix, keys)) = country.by_prefix.get_key_value(&local[..n]) {
                for key in keys {
                    if !out.iter().any(|r| r.key == key) {
                        out.push(Route {
                            key,
                            country_code: cc,
                            prefix,
                        });
                    }
                }
            }
        }
        for key in &country.whole {
            if !out.iter().any(|r| r.key == key) {
                out.push(Route {
                    key,
                    country_code: cc,
                    prefix: "",
                });
            }
        }
        Ok(out)
    }

    /// How many local prefixes are filed, over all countries (for the benchmark's table).
    pub fn prefix_count(&self) -> usize {
        self.countries.values().map(|c| c.by_prefix.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&'static str, &str, &[&str])]) -> PrefixRouter<&'static str> {
        let mut r = PrefixRouter::new();
        for (key, cc, prefixes) in rows {
            let p: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
            r.add(*key, cc, &p).unwrap();
        }
        r
    }

    fn keys(r: &PrefixRouter<&'static str>, number: &str) -> Vec<&'static str> {
        r.lookup(number).unwrap().iter().map(|x| *x.key).collect()
    }

    #[test]
    fn country_code_first_then_longest_prefix() {
        let r = table(&[
            ("telenor", "47", &["9", "4"]),
            ("telia-se", "46", &["7"]),
            ("ice", "47", &["91"]),
            ("mvno", "47", &[]),
            ("att", "1", &["212"]),
        ]);
        assert_eq!(keys(&r, "+4791234567"), ["ice", "telenor", "mvno"]);
        assert_eq!(keys(&r, "+4741234567"), ["telenor", "mvno"]);
        assert_eq!(keys(&r, "+4751234567"), ["mvno"]);
        assert_eq!(keys(&r, "+46701234567"), ["telia-se"]);
        assert!(keys(&r, "+46801234567").is_empty());
        assert!(keys(&r, "+4412345678").is_empty());
        assert_eq!(keys(&r, "+12125550100"), ["att"]);
        let route = &r.lookup("+4791234567").unwrap()[1];
        assert_eq!((route.country_code, route.prefix), ("47", "9"));
    }

    #[test]
    fn the_longest_country_code_decides_the_country() {
        // Made-up overlapping codes: 35 and 358. A 358 number is never routed to 35's table.
        let r = table(&[("a", "35", &["8"]), ("b", "358", &["4"])]);
        assert_eq!(keys(&r, "+358401234"), ["b"]);
        assert!(keys(&r, "+358501234").is_empty());
        assert_eq!(keys(&r, "+35801234"), Vec::<&str>::new());
        assert_eq!(keys(&r, "+35912345"), Vec::<&str>::new());
    }

    #[test]
    fn a_route_appears_once_at_its_longest_match() {
        let r = table(&[("a", "47", &["9", "91", "912"]), ("b", "47", &["91"])]);
        let got = r.lookup("+4791234567").unwrap();
        let got: Vec<_> = got.iter().map(|x| (*x.key, x.prefix)).collect();
        assert_eq!(got, [("a", "912"), ("b", "91")]);
        let mut twice = r.clone();
        twice.add("a", "47", &["9".into()]).unwrap();
        assert_eq!(twice.prefix_count(), 3);
        assert_eq!(keys(&twice, "+4791234567"), ["a", "b"]);
    }

    #[test]
    fn refusals() {
        let mut r: PrefixRouter<u32> = PrefixRouter::new();
        for bad in ["", "0", "047", "1234", "4a"] {
            assert_eq!(
                r.add(1, bad, &[]),
                Err(RouteError::BadCountryCode(bad.into()))
            );
        }
        for bad in ["", "9x", "123456789012345"] {
            assert_eq!(
                r.add(1, "47", &[bad.into()]),
                Err(RouteError::BadPrefix(bad.into()))
            );
        }
        for bad in [
            "",
            "4791234567",
            "+",
            "+479",
            "+47 91234567",
            "+4791234567890123",
            "++4791234567",
        ] {
            assert_eq!(r.lookup(bad), Err(RouteError::BadNumber(bad.into())));
        }
        assert!(r.lookup("+4791").unwrap().is_empty());
        assert!(r.lookup("+479123456789012").unwrap().is_empty());
    }
}
