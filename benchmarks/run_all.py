"""make bench: every benchmark, one after the other (figures only, no asserts).

Run on a quiet machine: the ratios compare against baselines measured in the
same run, but two cores shared with other work still make them noisy."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in ("dom0_broker.py", "admin_setup.py", "vm_cli.py", "admin_calls.py", "convert.py"):
    print(f"\n### {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
