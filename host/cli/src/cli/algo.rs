//! `simlab algo`: the AuC-side computation, for checking a card or another implementation.

use super::Output;
use clap::{Args, ValueEnum};
use simlab_applet::algo::{Algorithm, milenage};
use simlab_card::auc;
use simlab_card::error::{Error, Result};
use simlab_card::hex;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AlgoName {
    Comp128v1,
    Comp128v2,
    Comp128v3,
    Xor2g,
    Milenage,
    Xor3g,
}

impl AlgoName {
    fn algorithm(self) -> Algorithm {
        match self {
            AlgoName::Comp128v1 => Algorithm::Comp128v1,
            AlgoName::Comp128v2 => Algorithm::Comp128v2,
            AlgoName::Comp128v3 => Algorithm::Comp128v3,
            AlgoName::Xor2g => Algorithm::Xor2g,
            AlgoName::Milenage => Algorithm::Milenage,
            AlgoName::Xor3g => Algorithm::Xor3g,
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "\
2G algorithms print SRES and Kc. milenage and xor3g print the whole AKA vector (MAC-A, MAC-S,
RES, CK, IK, AK, AK*, AUTN) and the GSM view of it through c2/c3 (SRES, Kc).

Example (TS 35.208 test set 1):
  simlab algo milenage --ki 465b5ce8b199b49faa5f0a2ee238a6bc \\
    --rand 23553cbe9637a89d218ae64dae47bf35 --op cdc202d5123e20f62b6d676ac72cb318 \\
    --sqn ff9bb4d0b607 --amf b9b9")]
pub struct AlgoArgs {
    /// The algorithm.
    #[arg(value_enum)]
    algorithm: AlgoName,
    /// Ki (2G) or K (3G): 32 hex digits.
    #[arg(long, value_name = "HEX")]
    ki: String,
    /// The challenge RAND: 32 hex digits.
    #[arg(long, value_name = "HEX")]
    rand: String,
    /// Milenage operator key OP (OPc is derived from it): 32 hex digits.
    #[arg(long, value_name = "HEX", conflicts_with = "opc")]
    op: Option<String>,
    /// Milenage OPc: 32 hex digits.
    #[arg(long, value_name = "HEX")]
    opc: Option<String>,
    /// Sequence number for AUTN (3G only): 12 hex digits.
    #[arg(long, value_name = "HEX", default_value = "000000000000")]
    sqn: String,
    /// Authentication management field (3G only): 4 hex digits.
    #[arg(long, value_name = "HEX", default_value = "8000")]
    amf: String,
}

pub fn run(out: &Output, args: &AlgoArgs) -> Result<i32> {
    let alg = args.algorithm.algorithm();
    let ki = hex::decode_secret_fixed::<16>("--ki", &args.ki)?;
    let rand = hex::decode_fixed::<16>("--rand", &args.rand)?;
    let op = args
        .op
        .as_deref()
        .map(|s| hex::decode_secret_fixed::<16>("--op", s))
        .transpose()?;
    let opc = args
        .opc
        .as_deref()
        .map(|s| hex::decode_secret_fixed::<16>("--opc", s))
        .transpose()?;
    let opc = match (alg, op, opc) {
        (Algorithm::Milenage, Some(op), None) => Some(milenage::opc(&ki, &op)),
        (Algorithm::Milenage, None, Some(opc)) => Some(opc),
        (Algorithm::Milenage, None, None) => {
            return Err(Error::arg(
                "--op/--opc",
                "milenage needs the operator key: give --op or --opc",
            ));
        }
        (_, None, None) => None,
        (_, _, _) => {
            return Err(Error::arg(
                if args.op.is_some() { "--op" } else { "--opc" },
                format!("{} does not use an operator key", alg.name()),
            ));
        }
    };
    let sqn = hex::decode_fixed::<6>("--sqn", &args.sqn)?;
    let amf = hex::decode_fixed::<2>("--amf", &args.amf)?;

    if !alg.is_3g() {
        let v =
            auc::gsm(alg, &ki, None, &rand).ok_or_else(|| Error::arg("--ki", "cannot compute"))?;
        let mut json = v.to_json();
        json["algorithm"] = alg.name().into();
        let text = format!(
            "SRES  {}\nKc    {}\n",
            hex::encode(&v.sres),
            hex::encode(&v.kc)
        );
        out.result(&text, &json)?;
        return Ok(0);
    }
    let v = auc::umts(alg, &ki, opc.as_ref(), &rand, &sqn, &amf)
        .ok_or_else(|| Error::arg("--opc", "cannot compute without OPc"))?;
    let mut json = v.to_json();
    json["algorithm"] = alg.name().into();
    let mut text = String::new();
    let mut line = |k: &str, v: &str| text.push_str(&format!("{k:<8}{v}\n"));
    if let Some(opc) = &v.opc {
        line("OPc", &hex::encode(opc));
    }
    line("SQN", &hex::encode(&v.sqn));
    line("AMF", &hex::encode(&v.amf));
    line("MAC-A", &hex::encode(&v.aka.mac_a));
    line("MAC-S", &hex::encode(&v.aka.mac_s));
    line("RES", &hex::encode(v.aka.res()));
    line("CK", &hex::encode(&v.aka.ck));
    line("IK", &hex::encode(&v.aka.ik));
    line("AK", &hex::encode(&v.aka.ak));
    line("AK*", &hex::encode(&v.aka.ak_star));
    line("AUTN", &hex::encode(&v.autn));
    line("SRES", &hex::encode(&v.gsm.sres));
    line("Kc", &hex::encode(&v.gsm.kc));
    out.result(&text, &json)?;
    Ok(0)
}
