//! The link's and the store's checksums: the card model's own, so the firmware, the host and
//! the card state can never disagree on them.

pub use simlab_applet::checksum::{Crc32, crc8, crc32};
