"""python -m whonix_open.sim init --dir D [--scenario NAME|FILE]
python -m whonix_open.sim show --dir D [--json]
python -m whonix_open.sim scenarios"""

from __future__ import annotations

import argparse
import json
import sys

from whonix_open.sim import scenario as scenarios
from whonix_open.sim.harness import SimQubes
from whonix_open.sim.state import StateError


def _show(sim: SimQubes, as_json: bool) -> None:
    st = sim.snapshot()
    if as_json:
        json.dump(st, sys.stdout, indent=2, sort_keys=True)
        print()
        return
    print(f"simulated Qubes in {sim.dir}")
    for name, q in sorted(st["qubes"].items()):
        extra = [f"template={q['template']}" if q["template"] else "",
                 f"netvm={q['netvm'] or '-'}" if q["klass"] != "AdminVM" else "",
                 "dvm-template" if q["template_for_dispvms"] else "",
                 "auto_cleanup" if q["auto_cleanup"] else ""]
        print(f"  {name:28} {q['klass']:12} {q['power_state']:8} "
              + " ".join(e for e in extra if e))
    active = {k: v for k, v in st["faults"].items()
              if v != scenarios.FAULTS[k][1] and k in scenarios.FAULTS}
    print(f"faults: {json.dumps(active) if active else 'none'}")
    print(f"Admin API calls: {len(st['calls'])}; files received: {len(st['received'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whonix_open.sim",
                                     description="The simulated Qubes of the tests and demo.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="create a fresh simulated Qubes")
    p_init.add_argument("--dir", required=True)
    p_init.add_argument("--scenario", default="default",
                        help="a shipped scenario's name or a TOML/JSON file")
    p_show = sub.add_parser("show", help="print the state")
    p_show.add_argument("--dir", required=True)
    p_show.add_argument("--json", action="store_true")
    sub.add_parser("scenarios", help="list the shipped scenarios")
    args = parser.parse_args(argv)

    try:
        if args.command == "init":
            sim = SimQubes.create(args.dir, args.scenario)
            _show(sim, as_json=False)
        elif args.command == "show":
            _show(SimQubes(args.dir), args.json)
        else:
            names = scenarios.shipped()
            if not names:  # an install without its package data
                raise scenarios.ScenarioError(
                    f"no shipped scenarios in {scenarios.SCENARIO_DIR}: the simulation is "
                    "not completely installed")
            print("\n".join(names))
    except (scenarios.ScenarioError, StateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
