#!/bin/sh
# A project's shell check, as it would run in CI: pcsc_scan (pcsc-tools) lists the bench's
# readers through PCSCLITE_CSOCK_NAME, and every reader in SIMLAB_READERS is among them.
#   simlab lab run --card a.toml --card b.toml -- sh pcsc_scan.sh
set -eu
listed="$(pcsc_scan -r)"
echo "$listed"
echo "$SIMLAB_READERS" | tr ';' '\n' | while IFS= read -r reader; do
  [ -z "$reader" ] && continue
  echo "$listed" | grep -qF "$reader" || { echo "missing: $reader" >&2; exit 1; }
done
echo "ok: every card's reader is listed"
