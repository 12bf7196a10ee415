"""Stand-in for dom0's qrexec-client, as the real dom0 backend runs it:

    qrexec-client -d QUBE -w SECONDS "DEFAULT:QUBESRPC SERVICE+ dom0"

It reaches only a running qube (the real one connects to that qube's
qrexec-daemon socket, which exists only while the qube runs) and never starts
one. Our stdin/stdout become the service's in the simulated disposable, as
SimBackend.run_service does; its exit code is ours. WHONIX_OPEN_SIM_DIR names
the simulated Qubes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from whonix_open.dom0.backend import BackendError
from whonix_open.sim.backend import SimBackend
from whonix_open.sim.state import SIM_DIR_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qrexec-client")
    parser.add_argument("-d", dest="domain", required=True)
    parser.add_argument("-w", dest="timeout", type=int, default=60)
    parser.add_argument("-T", action="store_true")
    parser.add_argument("command")
    args = parser.parse_args(argv)
    user, _, rest = args.command.partition(":")
    words = rest.split(" ")
    if user != "DEFAULT" or len(words) != 3 or words[0] != "QUBESRPC" or words[2] != "dom0":
        print(f"qrexec-client: unsupported command {args.command!r}", file=sys.stderr)
        return 2
    service = words[1].rstrip("+")
    try:
        proc = SimBackend(os.environ[SIM_DIR_ENV]).run_service(
            args.domain, service, stdin=0, stdout=1, connect_timeout=args.timeout)
    except (BackendError, KeyError) as e:
        print(f"qrexec-client: {e}", file=sys.stderr)
        return 1

    def stop(_signum: int, _frame: object) -> None:
        proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    os.close(0)
    os.close(1)
    return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
