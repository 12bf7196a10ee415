"""Drive a real file manager under Xvfb the way a person would.

One `GuiSession` = its own Xvfb (display picked with -displayfd), a throwaway
HOME/XDG tree, and a file manager started under `dbus-run-session`. Menu entries
are found by their text with tesseract OCR on a screenshot of the popup window,
then clicked with xdotool: nothing assumes a menu layout. All waiting polls
while the program is still working: a wait fails only when the file manager's
own processes have used no CPU for IDLE_LIMIT seconds (it is done and the thing
is not there), so a loaded machine makes a run slower, never red. No indexer runs
in the session (tracker/localsearch are masked for its D-Bus and autostart):
they made Nautilus show "Loading…" for minutes on a busy machine.

The `whonix-open` on PATH is a recording stand-in (`StandIn`), never the real CLI.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
LABELS = ("Open in Tor disposable", "View in Tor disposable", "View in offline disposable",
          "Convert to trusted PDF (offline disposable)")
# label -> the whonix-open options its entry must pass before the file list
OPTIONS = {
    "Open in Tor disposable": ["--"],
    "View in Tor disposable": ["--view-only", "--"],
    "View in offline disposable": ["--view-only", "--offline", "--"],
    "Convert to trusted PDF (offline disposable)": ["--convert", "--"],
}
# The chooser entry every file manager also shows; it runs whonix-open-choose.
CHOOSER_LABEL = "Open in disposable…"
CHOOSER_ARGV = ["whonix-open-choose", "--", "%F"]
OCR_SCALE = 3
IDLE_LIMIT = 20.0  # seconds without any CPU use by the file manager: it is not coming
HARD_LIMIT = 600.0  # seconds: a file manager busy forever is a failure too
# Desktop indexers a file manager may start over D-Bus or at login. Masked in every
# session: their work on a throwaway home is load the tests do not need.
INDEXER_PATTERNS = ("tracker", "localsearch", "tinysparql")




class StandIn:
    """A `whonix-open` that appends its argv (JSON, one line per run) to a file,
    and a `whonix-open-choose` that does the same with its own name first."""

    def __init__(self, root: Path):
        self.bin = root / "standin-bin"
        self.bin.mkdir(parents=True)
        self.record = root / "whonix-open-calls.jsonl"
        for name, prefix in (("whonix-open", "[]"),
                             ("whonix-open-choose", '["whonix-open-choose"]')):
            script = self.bin / name
            script.write_text(
                f"#!{sys.executable}\n"
                "import json, os, sys\n"
                "with open(os.environ['WHONIX_OPEN_RECORD'], 'a') as f:\n"
                f"    f.write(json.dumps({prefix} + sys.argv[1:]) + '\\n')\n"
            )
            script.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def wait_calls(self, count: int, session: GuiSession | None = None) -> list[list[str]]:
        """The calls once there are *count*; waiting while *session*'s file manager
        works (without a session: the suite's generous deadline)."""
        def enough():
            return (c := self.calls()) and len(c) >= count and c
        if session is None:
            return wait_for(enough, f"{count} whonix-open call(s)")
        return session.wait(enough, f"{count} whonix-open call(s)")


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def center(self) -> tuple[int, int]:
        return self.x + self.w // 2, self.y + self.h // 2


@dataclass
class Line:
    text: str
    words: list[tuple[str, Box]]

    def find(self, phrase: str) -> Box | None:
        """Screen box of *phrase* if its words appear here in a row (case-insensitive)."""
        want = phrase.lower().split()
        got = [w.lower() for w, _ in self.words]
        for i in range(len(got) - len(want) + 1):
            if got[i:i + len(want)] == want:
                boxes = [b for _, b in self.words[i:i + len(want)]]
                x0, y0 = min(b.x for b in boxes), min(b.y for b in boxes)
                x1 = max(b.x + b.w for b in boxes)
                y1 = max(b.y + b.h for b in boxes)
                return Box(x0, y0, x1 - x0, y1 - y0)
        return None


def find_all(lines: Iterable[Line], phrase: str) -> list[Box]:
    return [box for line in lines if (box := line.find(phrase))]


class GuiSession:
    """Xvfb + throwaway home + one file manager at a time."""

    def __init__(self, root: Path, name: str, size: str = "1600x1000"):
        self.root = root
        self.name = name
        self.standin = StandIn(root)
        self.home = root / "home"
        self.shots = 0
        for sub in (".config", ".local/share", ".cache"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        runtime = root / "runtime"
        runtime.mkdir(mode=0o700)
        self.data_dirs = ["/usr/local/share", "/usr/share"]
        self.env = {
            "HOME": str(self.home),
            "USER": os.environ.get("USER", "root"),
            "LOGNAME": os.environ.get("LOGNAME", "root"),
            "PATH": f"{self.standin.bin}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local/share"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_RUNTIME_DIR": str(runtime),
            "XDG_CONFIG_DIRS": "/etc/xdg",
            "WHONIX_OPEN_RECORD": str(self.standin.record),
            "NO_AT_BRIDGE": "1",
            "GTK_A11Y": "none",
            "QT_QPA_PLATFORM": "xcb",
            "GDK_BACKEND": "x11",
            "GSETTINGS_BACKEND": "memory",
        }
        self._mask_indexers()
        self.xvfb = self._start_xvfb(size)
        self.app: subprocess.Popen | None = None
        self.menu_before: set[str] = set()
        self.menu_lines: list[Line] = []
        self.menu_box = Box(0, 0, 0, 0)
        self.app_log = root / "app.log"

    # --- processes -------------------------------------------------------
    def _mask_indexers(self) -> None:
        """Indexer D-Bus services replaced by ones that fail at once (the session
        bus reads $XDG_DATA_HOME/dbus-1/services before the system directories;
        the first file for a name wins), and their autostart entries hidden."""
        services = Path(self.env["XDG_DATA_HOME"]) / "dbus-1/services"
        services.mkdir(parents=True, exist_ok=True)
        for path in Path("/usr/share/dbus-1/services").glob("*.service"):
            if any(p in path.name.lower() for p in INDEXER_PATTERNS):
                name = next((line.split("=", 1)[1].strip() for line in
                             path.read_text().splitlines() if line.startswith("Name=")),
                            path.stem)
                (services / path.name).write_text(
                    f"[D-BUS Service]\nName={name}\nExec=/bin/false\n")
        autostart = Path(self.env["XDG_CONFIG_HOME"]) / "autostart"
        autostart.mkdir(parents=True, exist_ok=True)
        for path in Path("/etc/xdg/autostart").glob("*.desktop"):
            if any(p in path.name.lower() for p in INDEXER_PATTERNS):
                (autostart / path.name).write_text("[Desktop Entry]\nType=Application\n"
                                                   f"Name={path.stem}\nHidden=true\n")

    def processes(self) -> dict[int, tuple[str, int]]:
        """{pid: (command name, CPU ticks incl. reaped children)} of the file
        manager's session (dbus-run-session, its bus and everything they start)."""
        if self.app is None:
            return {}
        found = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2:].split()
            if int(fields[3]) == self.app.pid:  # session id: started under our setsid
                found[int(entry.name)] = (name, sum(int(f) for f in fields[11:15]))
        return found

    def wait(self, predicate: Callable[[], object], what: str, idle: float = IDLE_LIMIT,
             limit: float = HARD_LIMIT, interval: float = 0.3) -> object:
        """Poll *predicate* for as long as the file manager keeps working: fail
        after *idle* seconds in which its processes used no CPU, or after *limit*."""
        start = last_change = time.monotonic()
        last = None
        while True:
            value = predicate()
            if value:
                return value
            now = time.monotonic()
            ticks = sum(t for _, t in self.processes().values())
            if ticks != last:
                last, last_change = ticks, now
            if now - last_change > idle or now - start > limit:
                raise TimeoutError(f"{self.name}: no {what} after {now - start:.0f}s "
                                   f"({now - last_change:.0f}s of them idle)")
            time.sleep(interval)

    def _start_xvfb(self, size: str) -> subprocess.Popen:
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size}x24",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        os.close(write_fd)
        buf = b""
        deadline = time.monotonic() + 30
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                os.close(read_fd)
                _stop(proc)
                raise RuntimeError("Xvfb did not report a display")
            buf += chunk
        os.close(read_fd)
        self.env["DISPLAY"] = f":{int(buf)}"
        return proc

    def set_data_dirs(self, dirs: Sequence[str | Path]) -> None:
        """XDG_DATA_DIRS for what is started next (e.g. a DESTDIR install first)."""
        self.data_dirs = [str(d) for d in dirs]

    def start(self, argv: Sequence[str], extra_env: dict[str, str] | None = None) -> None:
        self.stop_app()
        env = dict(self.env, XDG_DATA_DIRS=":".join(self.data_dirs), **(extra_env or {}))
        with open(self.app_log, "ab") as log:
            self.app = subprocess.Popen(
                ["dbus-run-session", "--", *argv], env=env, cwd=self.root,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def stop_app(self) -> None:
        if self.app is not None:
            _stop(self.app)
            self.app = None

    def close(self) -> None:
        self.stop_app()
        _stop(self.xvfb)

    def __enter__(self) -> GuiSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- X helpers ---------------------------------------------------------
    def x(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                             timeout=30, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.strip()}")
        return out.stdout

    def toplevels(self) -> dict[str, Box]:
        """Viewable top-level windows (menus and popovers are top-levels too)."""
        found = {}
        for line in self.x("xwininfo", "-root", "-children").splitlines():
            m = re.match(r"\s+(0x[0-9a-f]+) .*?\s(\d+)x(\d+)\+(-?\d+)\+(-?\d+)\s", line)
            if not m:
                continue
            wid, w, h, x, y = m.group(1), *map(int, m.groups()[1:])
            if w < 40 or h < 30 or x + w <= 0 or y + h <= 0:
                continue
            info = self.x("xwininfo", "-id", wid, check=False)
            if "IsViewable" in info:
                found[wid] = Box(max(x, 0), max(y, 0), w, h)
        return found

    def main_window(self) -> Box:
        """The largest viewable top-level once one has appeared."""
        def biggest():
            wins = self.toplevels()
            big = [b for b in wins.values() if b.w >= 300 and b.h >= 200]
            return max(big, key=lambda b: b.w * b.h) if big else None
        return self.wait(biggest, f"the {self.name} window")

    def screenshot(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.x("import", "-window", "root", str(dest))
        return dest

    def save_artifact(self, label: str) -> Path:
        """A screenshot kept for people under artifacts/screenshots/ (git-ignored)."""
        self.shots += 1
        return self.screenshot(SCREENSHOTS / f"{self.name}-{label}.png")

    def ocr(self, region: Box) -> list[Line]:
        """Text lines in *region* of the screen, with screen coordinates."""
        shot = self.screenshot(self.root / "ocr-full.png")
        crop = self.root / "ocr-crop.png"
        self.x("convert", str(shot), "-crop", f"{region.w}x{region.h}+{region.x}+{region.y}",
               "+repage", "-resize", f"{OCR_SCALE * 100}%", "-colorspace", "Gray", str(crop))
        tsv = self.x("tesseract", str(crop), "-", "--psm", "11", "tsv", check=False)
        return _parse_tsv(tsv, region)

    def wait_text(self, region_fn: Callable[[], Box], phrases: Sequence[str]) -> list[Line]:
        """OCR until every phrase shows up (while the program works); returns
        the lines of the last OCR."""
        def seen():
            lines = self.ocr(region_fn())
            return lines if all(find_all(lines, p) for p in phrases) else None
        return self.wait(seen, f"{phrases} on screen")

    def click(self, x: int, y: int, button: int = 1, modifiers: Sequence[str] = ()) -> None:
        # two moves: GTK4 only highlights a popover row after real pointer motion
        self.x("xdotool", "mousemove", str(x - 1), str(y), "mousemove", str(x), str(y))
        for key in modifiers:
            self.x("xdotool", "keydown", key)
        self.x("xdotool", "click", str(button))
        for key in modifiers:
            self.x("xdotool", "keyup", key)

    def select(self, blank: tuple[int, int], points: Sequence[tuple[int, int]]) -> None:
        """Select the items at *points*: clear the selection on a blank spot, click, ctrl+click.

        Clicking an already selected name would start an inline rename in Dolphin,
        hence the fresh start every time.
        """
        self.key("Escape")
        self.click(*blank)
        self.click(*points[0])
        for point in points[1:]:
            self.click(*point, modifiers=["ctrl"])

    def key(self, *keys: str) -> None:
        self.x("xdotool", "key", *keys)

    def open_menu(self, at: tuple[int, int], want: Sequence[str] = LABELS,
                  tries: int = 3) -> dict[str, Box]:
        """Right-click at *at*; return the screen boxes of the *want* entries.

        The menu is the popup top-level that appears after the click; a menu that
        does not show the entries in time is closed and opened again.
        """
        before = set(self.toplevels())
        self.menu_before = before
        last_error: Exception | None = None
        for _ in range(tries):
            self.click(*at, button=3)
            try:
                return self.wait(lambda: self._menu_entries(before, want),
                                 "context menu with the entries")
            except TimeoutError as err:
                last_error = err
                self.save_artifact("menu-not-found")
                self.key("Escape")
                self.wait_menu_closed()
        raise AssertionError(f"context menu without {want} after {tries} tries: {last_error}")

    def activate(self, entries: dict[str, Box], label: str) -> None:
        """Hover a menu entry found by open_menu until it lights up, click it, and
        wait for the menu to go away. Waiting for the highlight proves the toolkit
        has taken the pointer motion (a GTK4 popover drops a click that comes first)."""
        x, y = entries[label].center
        menu = self.menu_box
        row = Box(menu.x, max(entries[label].y - 4, 0), menu.w, entries[label].h + 8)
        idle = self.grab(row)

        def hover_lit() -> bool:
            # moved again on every try: a Qt menu now and then drops the first motion
            self.x("xdotool", "mousemove", str(x - 3), str(y), "mousemove", str(x), str(y))
            return self.grab(row) != idle

        try:
            # every try moves the pointer, so the program is never idle here: a cap
            self.wait(hover_lit, f"highlight of {label!r}", limit=120)
        except TimeoutError as err:
            shot = self.save_artifact("not-highlighted")
            raise AssertionError(f"{self.name}: {err} (menu {menu}, row {row}; see {shot})") \
                from err
        self.x("xdotool", "click", "1")
        self.wait_menu_closed()

    def grab(self, region: Box) -> bytes:
        """The pixels of *region* (for change detection)."""
        out = subprocess.run(
            ["import", "-window", "root", "-crop", f"{region.w}x{region.h}+{region.x}+{region.y}",
             "ppm:-"], env=self.env, capture_output=True, timeout=30, check=True)
        return out.stdout

    def _menu_entries(self, before: set[str], want: Sequence[str]) -> dict[str, Box] | None:
        for wid, box in self.toplevels().items():
            if wid in before:
                continue
            # only a menu that stays put and unchanged across the OCR counts: GTK4
            # popovers are mapped first and drawn or moved a moment later
            pixels = self.grab(box)
            lines = self.ocr(box)
            if self.grab(box) != pixels or self.toplevels().get(wid) != box:
                continue
            found = {p: find_all(lines, p) for p in want}
            if all(found.values()):
                self.menu_lines = lines
                self.menu_box = box
                return {p: boxes[0] for p, boxes in found.items()}
        return None

    def wait_menu_closed(self) -> None:
        self.wait(lambda: not (set(self.toplevels()) - self.menu_before), "closing of the menu")


def _parse_tsv(tsv: str, region: Box) -> list[Line]:
    lines: dict[tuple[str, str, str], Line] = {}
    for row in csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE):
        text = (row.get("text") or "").strip()
        if not text or row.get("level") != "5":
            continue
        box = Box(region.x + int(row["left"]) // OCR_SCALE, region.y + int(row["top"]) // OCR_SCALE,
                  int(row["width"]) // OCR_SCALE, int(row["height"]) // OCR_SCALE)
        key = (row["block_num"], row["par_num"], row["line_num"])
        line = lines.setdefault(key, Line("", []))
        line.words.append((text, box))
        line.text = f"{line.text} {text}".strip()
    return list(lines.values())


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """End a process group that this harness started (its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    else:
        # the leader is gone; members of its group (e.g. dbus-daemon) may remain
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def have(*programs: str) -> list[str]:
    """The programs of *programs* that are missing from PATH."""
    return [p for p in programs if shutil.which(p) is None]
