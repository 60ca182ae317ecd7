"""Another process that revokes sessions: ``python -m bench.revoker URL PREFIX PAUSE SID...``.

For each session id it prints ``<time.time() just before the write> <sid>`` and then blacklists it
with the real ``Blacklist.revoke`` (one MULTI/EXEC), pausing ``PAUSE`` seconds (randomised +-50%)
between revocations.
"""

from __future__ import annotations

import random
import sys
import time

from sessionmon.core.blacklist import KIND_SESSION, Blacklist, RevokeRequest, connect


def main(argv: list[str]) -> None:
    url, prefix, pause, *sids = argv
    bl = Blacklist(connect(url), prefix=prefix)
    bl.ping()
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go"
    for sid in sids:
        time.sleep(float(pause) * random.uniform(0.5, 1.5))
        start = time.time()
        bl.revoke([RevokeRequest(KIND_SESSION, sid, start + 600)], reason="bench", actor="bench")
        print(f"{start:.6f} {sid}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
