#!/usr/bin/python3
"""APDU round trips per second through pyscard: the SELECT + READ BINARY loop of scripts/bench.

Usage: apdu_rate.py READER N   (prints "pyscard <round trips per second>")
"""
import sys
import time

from smartcard.System import readers


def main():
    name, n = sys.argv[1], int(sys.argv[2])
    reader = next(r for r in readers() if str(r) == name)
    conn = reader.createConnection()
    conn.connect()
    select = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0xE2]
    read = [0x00, 0xB0, 0x00, 0x00, 0x0A]
    start = time.perf_counter()
    for _ in range(n):
        _, sw1, _ = conn.transmit(select)
        assert sw1 == 0x90
        data, sw1, _ = conn.transmit(read)
        assert sw1 == 0x90 and len(data) == 10
    elapsed = time.perf_counter() - start
    conn.disconnect()
    print(f"pyscard {2 * n / elapsed:.0f}")


if __name__ == "__main__":
    main()
