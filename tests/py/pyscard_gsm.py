#!/usr/bin/python3
"""An independent PC/SC client (pyscard, Debian's python3-pyscard) against a SIM.

Runs the classic TS 51.011 sequence by hand, T=0 style, and prints what it saw as JSON:
SELECT MF / DF_GSM / EF_IMSI with GET RESPONSE, READ BINARY of the IMSI, RUN GSM ALGORITHM
and its GET RESPONSE. Used by tests/tests/pcsc.rs as a second opinion on the virtual card.

Usage: pyscard_gsm.py READER RAND_HEX
"""
import json
import sys

from smartcard.System import readers


def main():
    name, rand = sys.argv[1], bytes.fromhex(sys.argv[2])
    reader = next(r for r in readers() if str(r) == name)
    conn = reader.createConnection()
    conn.connect()
    log = []

    def tx(apdu):
        data, sw1, sw2 = conn.transmit(list(apdu))
        log.append({"c": bytes(apdu).hex(), "r": bytes(data).hex(), "sw": f"{sw1:02x}{sw2:02x}"})
        return bytes(data), sw1, sw2

    out = {"atr": bytes(conn.getATR()).hex()}
    for fid in (0x3F00, 0x7F20, 0x6F07):
        _, sw1, sw2 = tx([0xA0, 0xA4, 0x00, 0x00, 0x02, fid >> 8, fid & 0xFF])
        assert sw1 == 0x9F, f"SELECT {fid:04X}: {sw1:02X}{sw2:02X}"
        info, sw1, _ = tx([0xA0, 0xC0, 0x00, 0x00, sw2])
        assert sw1 == 0x90
    size = (info[2] << 8) | info[3]
    imsi, sw1, sw2 = tx([0xA0, 0xB0, 0x00, 0x00, size])
    out["imsi_ef"] = imsi.hex()
    out["read_sw"] = f"{sw1:02x}{sw2:02x}"
    tx([0xA0, 0xA4, 0x00, 0x00, 0x02, 0x7F, 0x20])
    _, sw1, sw2 = tx([0xA0, 0x88, 0x00, 0x00, 0x10] + list(rand))
    out["run_gsm_sw"] = f"{sw1:02x}{sw2:02x}"
    resp, sw1, sw2 = tx([0xA0, 0xC0, 0x00, 0x00, sw2])
    out["sres"], out["kc"] = resp[:4].hex(), resp[4:12].hex()
    out["get_response_sw"] = f"{sw1:02x}{sw2:02x}"
    out["log"] = log
    conn.disconnect()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
