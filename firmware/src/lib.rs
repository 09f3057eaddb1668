//! simlab-firmware: the simlab card model — SIM/USIM and the secure-token applet — on a
//! microcontroller, reached by the host's `simlab --serial …` exactly like any other card.
//!
//! This crate is the board-independent core. A board crate (`firmware/boards/*`) supplies the
//! hardware through standard traits and calls [`Firmware::run`]:
//!
//! | need | trait | module |
//! |---|---|---|
//! | the APDU link (UART, USB-CDC) | `embedded_io::Read + Write` | [`link`]: framed APDUs, CRCs, resynchronisation |
//! | persistent card state | `embedded_storage::nor_flash::NorFlash` | [`store`]: A/B slots, safe against power cuts |
//! | the token's seed | `rand_core::TryCryptoRng` (a TRNG) | [`Firmware::new`] |
//! | user presence before SIGN | `embedded_hal::digital::InputPin` + `OutputPin` (LED) | [`presence`] |
//! | showing what SIGN REQUEST signs | [`Console`] (or [`NoConsole`]) | [`presence`] |
//! | button timing | `embedded_hal::delay::DelayNs` | |
//! | benchmarks (optional) | [`Counter`] | |
//!
//! `#![no_std]`, no allocator, no panics on any input from the link; everything here also
//! builds and is tested on the host ([`testkit`] has a flash that loses power on cue).
#![no_std]
#![forbid(unsafe_code)]
// Nothing the link delivers may stop the firmware: no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod crc;
mod firmware;
pub mod link;
pub mod presence;
pub mod store;
pub mod testkit;

pub use firmware::{
    BoardConfig, BootError, Console, Counter, DEFAULT_PRESENCE_TIMEOUT_MS, Firmware, Lifecycle,
    NoConsole, NoCounter, Parts, WAIT_INTERVAL_MS,
};
