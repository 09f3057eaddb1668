#!/usr/bin/python3
"""A project's own card test, as it would run in CI: plain pyscard, no simlab API.

Run it inside a bench:  simlab lab run --card fixtures/cards/usim-milenage.toml -- python3 test_card.py
It finds the card through the bench's environment (PCSCLITE_CSOCK_NAME reaches the bench's
pcscd; SIMLAB_READER0 names the reader), selects EF.ICCID and checks it reads back.
"""
import os
import sys

from smartcard.System import readers


def main():
    name = os.environ["SIMLAB_READER0"]
    reader = next((r for r in readers() if str(r) == name), None)
    if reader is None:
        sys.exit(f"reader {name!r} not found; readers: {[str(r) for r in readers()]}")
    conn = reader.createConnection()
    conn.connect()
    # UICC: SELECT EF.ICCID (2FE2) under the MF, no FCP, then READ BINARY of its 10 bytes.
    _, sw1, sw2 = conn.transmit([0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00])
    assert (sw1, sw2) == (0x90, 0x00), f"SELECT MF: {sw1:02X}{sw2:02X}"
    _, sw1, sw2 = conn.transmit([0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0xE2])
    assert (sw1, sw2) == (0x90, 0x00), f"SELECT EF.ICCID: {sw1:02X}{sw2:02X}"
    data, sw1, sw2 = conn.transmit([0x00, 0xB0, 0x00, 0x00, 0x0A])
    assert (sw1, sw2) == (0x90, 0x00), f"READ BINARY: {sw1:02X}{sw2:02X}"
    # The ICCID is BCD with swapped nibbles.
    iccid = "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in data).rstrip("f")
    print(f"ok: {name}: ICCID {iccid}")
    conn.disconnect()


if __name__ == "__main__":
    main()
