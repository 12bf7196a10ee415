"""Benchmarks of the VM helper (issue 3, part 4). Prints figures; asserts nothing.

(a) throughput of a 512 MiB open through the real CLI and a cat-like stand-in
    qrexec-client-vm (the "disposable" echoes the stream, so the CLI also
    receives 512 MiB back and saves it as the edit, replacing the 512 MiB
    original), as a ratio to a plain `cat FILE | cat > OUT` pipe of the same
    file in the same run, where OUT is an existing 512 MiB file that `>`
    truncates: both read 512 MiB and write 512 MiB over 512 MiB (target >= 0.8);
(b) the CLI's peak RSS for a 16 MiB and a 512 MiB open, measured as
    ru_maxrss of a fresh child (target <= 40 MiB, and flat);
(c) `whonix-open --help` wall time as a ratio to
    `python -c 'import argparse, subprocess'` (median of N runs; target <= 1.5);
(d) `whonix-open URL`, the whole run (link checked, the stand-in called, the
    result reported), as the same ratio (target <= 1.5).

Every Python process here runs with bytecode caching on (into the scratch
directory, PYTHONPYCACHEPREFIX; `make install-vm` compiles the installed
modules), after one untimed warm-up run: a PYTHONDONTWRITEBYTECODE=1 in the
caller's environment would otherwise add a compile of every module to each run.

    .venv/bin/python benchmarks/vm_cli.py [--size-mib 512] [--runs 3] [--help-runs 21]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for tests.helpers
from tests.helpers import DOM0_STATUS_WHONIX as STATUS

# A "disposable" that sends back exactly what it got (header included): the
# cat-like transport. RoutingStatus gets a fixed Whonix answer.
STAND_IN = """#!/bin/sh
case "$2" in
  whonix.RoutingStatus*) cat "$STATUS_FILE"; exit 0 ;;
  whonix.OpenURLInDisposable*) cat >/dev/null; exit 0 ;;
esac
exec cat
"""

# Runs one command as its only child and prints that child's peak RSS (KiB).
RSS_PROBE = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL,"
    " stderr=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def scratch_dir() -> str:
    """tmpfs when there is one: the figures are about the CLI, not the disk."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        free = shutil.disk_usage(shm).free
        if free > 3 * (600 << 20):
            return shm
    return tempfile.gettempdir()


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)


def setup(work: Path) -> dict[str, str]:
    bin_dir = work / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "qrexec-client-vm"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    status = work / "status.json"
    status.write_text(json.dumps(STATUS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "XDG_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        STATUS_FILE=str(status),
        XDG_CONFIG_HOME=str(work / "config"),
        XDG_CONFIG_DIRS=str(work / "etc-xdg"),
        XDG_DATA_HOME=str(work / "data"),
        PYTHONPYCACHEPREFIX=str(work / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cli_argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("whonix-open")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "whonix_open.vm.cli", *args]


def timed(argv: list[str], env: dict[str, str], **kw) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, **kw)
    return time.perf_counter() - start


def throughput(work: Path, env: dict[str, str], size: int, runs: int) -> tuple[float, float]:
    src = work / "big.bin"
    make_file(src, size)
    out = work / "cat.out"
    # The CLI replaces a 512 MiB original, which frees its old data (on tmpfs
    # ~80 ms per 512 MiB); the pipe pays the same by truncating an existing
    # 512 MiB OUT, not by writing a new file after an untimed unlink.
    shutil.copyfile(src, out)
    cli = cli_argv("--no-notify", "--quiet", str(src))
    subprocess.run(cli, env=env, check=True, stderr=subprocess.DEVNULL)  # warm-up
    cat_times, cli_times = [], []
    for _ in range(runs):  # interleaved, so load changes hit both alike
        # Same data both ways: file -> pipe -> cat -> pipe -> over 512 MiB.
        cat_times.append(
            timed(["sh", "-c", 'cat "$1" | cat > "$2"', "sh", str(src), str(out)], env)
        )
        cli_times.append(timed(cli, env, stderr=subprocess.DEVNULL))
    out.unlink()
    src.unlink()
    return size / statistics.median(cat_times), size / statistics.median(cli_times)


def peak_rss_kib(work: Path, env: dict[str, str], size: int) -> int:
    src = work / f"rss-{size >> 20}.bin"
    make_file(src, size)
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, *cli_argv("--no-notify", "--quiet", str(src))],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    src.unlink()
    return int(done.stdout.strip())


def help_ratio(env: dict[str, str], runs: int,
               args: tuple[str, ...] = ("--help",)) -> tuple[float, float]:
    base = [sys.executable, "-c", "import argparse, subprocess"]
    helper = cli_argv(*args)
    base_t, help_t = [], []
    for argv in (base, helper):  # warm-up: bytecode written, files cached
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    for _ in range(runs):  # interleaved, so load changes hit both alike
        base_t.append(timed(base, env, stdout=subprocess.DEVNULL))
        help_t.append(timed(helper, env, stdout=subprocess.DEVNULL))
    return statistics.median(base_t), statistics.median(help_t)


def verdict(ok: bool) -> str:
    return "ok" if ok else "TARGET MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--small-mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--help-runs", type=int, default=21)
    args = parser.parse_args()
    size, small = args.size_mib << 20, args.small_mib << 20
    base = scratch_dir()
    print(f"whonix-open VM CLI benchmark ({os.cpu_count()} CPUs, files in {base})")
    with tempfile.TemporaryDirectory(dir=base, prefix="whonix-open-bench-") as tmp:
        work = Path(tmp)
        env = setup(work)

        cat_bps, cli_bps = throughput(work, env, size, args.runs)
        ratio = cli_bps / cat_bps
        print(
            f"(a) {args.size_mib} MiB open, median of {args.runs}: "
            f"CLI {cli_bps / 2**20:.0f} MiB/s, "
            f"cat pipe {cat_bps / 2**20:.0f} MiB/s, ratio {ratio:.2f} "
            f"(target >= 0.8: {verdict(ratio >= 0.8)})"
        )

        rss_small = peak_rss_kib(work, env, small) / 1024
        rss_big = peak_rss_kib(work, env, size) / 1024
        flat = rss_big - rss_small <= 4
        print(
            f"(b) peak RSS: {rss_small:.1f} MiB for {args.small_mib} MiB, "
            f"{rss_big:.1f} MiB for {args.size_mib} MiB "
            f"(target <= 40 MiB: {verdict(max(rss_small, rss_big) <= 40)}; "
            f"flat within 4 MiB: {verdict(flat)})"
        )

        base_s, help_s = help_ratio(env, args.help_runs)
        ratio = help_s / base_s
        print(
            f"(c) --help median of {args.help_runs}: {help_s * 1000:.1f} ms vs "
            f"'import argparse, subprocess' {base_s * 1000:.1f} ms, ratio {ratio:.2f} "
            f"(target <= 1.5: {verdict(ratio <= 1.5)})"
        )
        base_s, url_s = help_ratio(env, args.help_runs,
                                   ("--no-notify", "--quiet", "https://www.whonix.org/wiki/Qubes"))
        ratio = url_s / base_s
        print(
            f"(d) whonix-open URL median of {args.help_runs}: {url_s * 1000:.1f} ms vs "
            f"'import argparse, subprocess' {base_s * 1000:.1f} ms, ratio {ratio:.2f} "
            f"(target <= 1.5: {verdict(ratio <= 1.5)})"
        )
    print("(RSS is the whole CLI process, interpreter included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
