"""A stand-in for qrexec-client-vm in the VM tests: plays dom0's side of the
whonix services, steered by a JSON control file named by STANDIN_CONTROL.

Control keys (all optional):
  status_code / status_json / status_raw   answer to whonix.RoutingStatus
  mode: "echo" (reply = the body), "edit" (body + b" [edited]"), "none",
        "reply_text" (reply = control["reply_text"]), "edit_pid" (body +
        b" [edited by PID]": each call's edit differs)
  exit: exit code after the exchange (default 0)
  stop_reading_after: read only this many body bytes, then reply/exit
  cut_reply_at: send this many reply bytes, then die by SIGKILL
  append_to: a path to append b"local change" to before replying (the user
        changing the original while it is open)
  rendezvous: [dir, count]: mark this call in dir, then wait (30 s at most,
        else exit 99) until `count` calls are in flight at once
  hang: after reading `stop_reading_after` bytes (and sending
        `cut_reply_at` reply bytes, if given, without dying), touch
        `ready_file` and sleep until killed
  ignore_sigterm: ignore SIGTERM (only SIGKILL ends it)
  flood: after the body, reply forever (64 KiB writes of b"x") - a hostile
        disposable that never stops sending
  trickle: [bytes, seconds]: after the body, reply forever, this many bytes
        every this many seconds
  pid_file: write this process's pid there when the exchange starts
  status_wait_for / reply_wait_for: a path; before answering
        whonix.RoutingStatus / before replying, wait (30 s at most) until it
        exists (e.g. until another user swapped a folder)
  before_reply: an argv run (and waited for) just before replying, e.g. to
        remove the original's directory or make it read-only while open
Every call appends one JSON line to STANDIN_LOG: argv, the header (hex), the
body's length and sha256.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

HEADER_SIZE = 256


def read_exact(fd, n):
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def wait_for(path):
    deadline = time.monotonic() + 30
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def log(entry):
    with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def main():
    with open(os.environ["STANDIN_CONTROL"], encoding="utf-8") as fh:
        control = json.load(fh)
    if control.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    argv = sys.argv[1:]
    service = argv[1] if len(argv) > 1 else ""
    if service.startswith("whonix.RoutingStatus"):
        wait_for(control.get("status_wait_for"))
        log({"argv": argv})
        if "status_raw" in control:
            os.write(1, control["status_raw"].encode())
        elif "status_json" in control:
            os.write(1, json.dumps(control["status_json"]).encode())
        return control.get("status_code", 0)

    if "pid_file" in control:
        with open(control["pid_file"], "w") as fh:
            fh.write(str(os.getpid()))
    header = read_exact(0, HEADER_SIZE)
    digest = hashlib.sha256()
    body_len = 0
    limit = control.get("stop_reading_after")
    body = bytearray() if control.get("mode", "echo") in ("echo", "edit", "edit_pid") else None
    while limit is None or body_len < limit:
        want = 65536 if limit is None else min(65536, limit - body_len)
        chunk = os.read(0, want)
        if not chunk:
            break
        digest.update(chunk)
        body_len += len(chunk)
        if body is not None:
            body += chunk
    log(
        {
            "argv": argv,
            "header": header.hex(),
            "body_len": body_len,
            "body_sha256": digest.hexdigest(),
            "env_target": os.environ.get("QREXEC_REMOTE_DOMAIN"),
        }
    )
    if "rendezvous" in control:
        where, count = control["rendezvous"]
        with open(os.path.join(where, str(os.getpid())), "w"):
            pass
        deadline = time.monotonic() + 30
        while len(os.listdir(where)) < count:
            if time.monotonic() > deadline:
                return 99
            time.sleep(0.01)
    wait_for(control.get("reply_wait_for"))
    if "before_reply" in control:
        subprocess.run(control["before_reply"], check=True)
    if "append_to" in control:
        with open(control["append_to"], "ab") as fh:
            fh.write(b"local change")
    if control.get("flood") or control.get("trickle"):
        size, pause = control.get("trickle") or (65536, 0)
        chunk = b"x" * size
        try:
            while True:
                os.write(1, chunk)
                time.sleep(pause)
        except BrokenPipeError:
            return 141  # the caller hung up: what qrexec-client-vm does too
    mode = control.get("mode", "echo")
    if mode == "echo":
        reply = bytes(body)
    elif mode == "edit":
        reply = bytes(body) + b" [edited]"
    elif mode == "edit_pid":
        reply = bytes(body) + f" [edited by {os.getpid()}]".encode()
    elif mode == "reply_text":
        reply = control["reply_text"].encode()
    else:
        reply = b""
    cut = control.get("cut_reply_at")
    if control.get("hang"):
        if cut is not None:
            os.write(1, reply[:cut])
        with open(control["ready_file"], "w") as fh:
            fh.write(str(os.getpid()))
        while True:
            time.sleep(3600)
    if cut is not None:
        os.write(1, reply[:cut])
        os.kill(os.getpid(), signal.SIGKILL)
    view = os.write  # the whole reply
    data = memoryview(reply)
    while data:
        data = data[view(1, data):]
    return control.get("exit", 0)


if __name__ == "__main__":
    sys.exit(main())
