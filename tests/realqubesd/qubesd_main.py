"""Runs the REAL, unmodified qubesd (`qubes` package, QubesOS/qubes-core-admin)
with only the hypervisor replaced; executed by a release venv's python.

    python qubesd_main.py create DIR   # a qubes.xml made by the real qubes.Qubes app
    python qubesd_main.py serve DIR    # qubes.tools.qubesd on DIR/qubes.xml

What is ours here, and why it is only the hypervisor boundary:
- hypervisor/ goes first on sys.path: fake `libvirt`, `libvirtaio`, `qubesdb`
  (the C bindings qubesd talks to Xen and QubesDB through);
- bin/ goes first on PATH: `virsh` (qubesvm.shutdown), `runuser` (how a root
  qubesd starts a qube's daemons); the qrexec-daemon/qubesdb-daemon stand-ins
  are named through qubes.config.system_path, upstream's own setting for them;
- locations only: qubes.config.qubes_base_dir / pool_configs / libvirt_uri and
  the Admin API classes' SOCKNAME (all upstream's configuration points; the
  comment on SOCKNAME says "to be overridden") point into DIR instead of
  /var/lib/qubes and /var/run;
- qubesd's own argument parser gets offline_mode=False as its default (what
  `--offline-mode` would set the other way): its probe of /proc/1/root (to
  detect a chroot) is not allowed in a container, and this qubesd is online.
No qmemman: the memory balancer's client module is made unimportable, which
is upstream's own "qmemman not installed" case (qubes.vm.qubesvm
qmemman_present): qubes then start without memory balancing or xenstore. The
harness sets the DVM template's maxmem to 0 once qubesd runs (memory
balancing off for it and its disposables, a setting of the qube's; its
default asks the hypervisor, which the offline app cannot): R4.3 balloons a
preload down through qmemman before pausing it otherwise (qubes/vm/dispvm.py
on_domain_pre_paused).

Scenario (mirrors sim/scenarios/default.toml): dom0; templates
whonix-gateway-18 (whonix-gw), whonix-workstation-18 (whonix-ws), debian-13;
sys-net -> sys-firewall -> sys-whonix (anon-gateway); anon-whonix with
default_dispvm whonix-workstation-18-dvm (template_for_dispvms); personal and
default-dvm on sys-firewall; vault without a netvm. The qubes that run in the
default scenario are started by the harness through the Admin API.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "hypervisor"))
os.environ["PATH"] = f"{HERE / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"

# (name, class, properties, features, tags) in creation order
QUBES: list[tuple[str, str, dict, dict, list]] = [
    ("whonix-gateway-18", "TemplateVM", {},
     {"qrexec": "1", "supported-rpc.qubes.WaitForRunningSystem": "1",
     "whonix-gw": "1", "os-distribution": "whonix", "os-version": "18"}, ["whonix-updatevm"]),
    ("whonix-workstation-18", "TemplateVM", {},
     {"qrexec": "1", "supported-rpc.qubes.WaitForRunningSystem": "1",
     "whonix-ws": "1", "os-distribution": "whonix", "os-version": "18"}, ["whonix-updatevm"]),
    ("debian-13", "TemplateVM", {}, {"qrexec": "1", "supported-rpc.qubes.WaitForRunningSystem": "1",
     "os-distribution": "debian", "os-version": "13"}, []),
    ("sys-net", "AppVM", {"template": "debian-13", "provides_network": True, "netvm": None},
     {}, []),
    ("sys-firewall", "AppVM", {"template": "debian-13", "provides_network": True,
                               "netvm": "sys-net"}, {}, []),
    ("sys-whonix", "AppVM", {"template": "whonix-gateway-18", "provides_network": True,
                             "netvm": "sys-firewall"}, {}, ["anon-gateway"]),
    # Qubes-Whonix points the Whonix qubes' default_dispvm at the Whonix DVM
    ("whonix-workstation-18-dvm", "AppVM", {"template": "whonix-workstation-18",
                                            "template_for_dispvms": True,
                                            "netvm": "sys-whonix",
                                            "default_dispvm": "whonix-workstation-18-dvm"},
     {"appmenus-dispvm": "1"}, ["anon-vm"]),
    ("anon-whonix", "AppVM", {"template": "whonix-workstation-18", "netvm": "sys-whonix",
                              "default_dispvm": "whonix-workstation-18-dvm"}, {}, ["anon-vm"]),
    ("default-dvm", "AppVM", {"template": "debian-13", "template_for_dispvms": True,
                              "netvm": "sys-firewall"}, {"appmenus-dispvm": "1"}, []),
    ("personal", "AppVM", {"template": "debian-13", "netvm": "sys-firewall",
                           "default_dispvm": "default-dvm"}, {}, []),
    ("vault", "AppVM", {"template": "debian-13", "netvm": None,
                        "default_dispvm": "default-dvm"}, {}, []),
]
DVM_NAME = "whonix-workstation-18-dvm"
# set once every qube exists (a template's default_dispvm names its own AppVM)
LATE_PROPERTIES = [("whonix-workstation-18", "default_dispvm", DVM_NAME)]
KERNEL = "6.12.0-stand-in"
RUNNING = ["sys-net", "sys-firewall", "sys-whonix", "anon-whonix", "personal", "vault"]


def configure(base: Path) -> None:
    """Point upstream's configuration at DIR (see the module docstring)."""
    # No memory balancer: its client is not installed here, so qubesvm's own
    # `import qubes.qmemman.client` fails and it runs without (qmemman_present).
    sys.modules["qubes.qmemman.client"] = None  # type: ignore[assignment]
    import qubes.config

    qubes.config.qubes_base_dir = str(base)
    qubes.config.system_path.update(
        qrexec_daemon_path=str(HERE / "bin" / "qrexec-daemon"),
        qubesdb_daemon_path=str(HERE / "bin" / "qubesdb-daemon"),
        qrexec_client_path=str(HERE / "bin" / "qrexec-client"),
        dom0_services_dir=str(base / "qubes-service"),
    )
    qubes.config.defaults["libvirt_uri"] = f"fake://{base / 'hypervisor'}"
    qubes.config.defaults["pool_configs"] = {
        # file-reflink as on dom0's default install; it copies with `cp --sparse`
        # where the file system cannot reflink (qubes/storage/reflink.py)
        "varlibqubes": {"dir_path": str(base), "name": "varlibqubes", "driver": "file-reflink",
                        "setup_check": False},
        "linux-kernel": {"dir_path": str(base / "vm-kernels"), "driver": "linux-kernel",
                         "name": "linux-kernel"},
    }
    (base / "hypervisor").mkdir(exist_ok=True)
    (base / "vm-kernels").mkdir(exist_ok=True)


def create(base: Path) -> None:
    configure(base)
    import qubes

    app = qubes.Qubes.create_empty_store(str(base / "qubes.xml"), offline_mode=True)
    kernel = base / "vm-kernels" / KERNEL  # what the linux-kernel pool hands a qube
    kernel.mkdir(parents=True, exist_ok=True)
    for f in ("vmlinuz", "initramfs", "modules.img"):
        (kernel / f).touch()
    app.default_kernel = KERNEL
    loop = asyncio.new_event_loop()
    for name, klass, props, features, tags in QUBES:
        template = props.pop("template", None)
        kwargs = {"name": name, "label": "red"}
        if template:
            kwargs["template"] = template
        vm = app.add_new_vm(klass, **kwargs)
        for key, value in props.items():
            setattr(vm, key, app.domains[value] if key in ("netvm", "default_dispvm")
                    and value else value)
        for key, value in features.items():
            vm.features[key] = value
        for tag in tags:
            vm.tags.add(tag)
        loop.run_until_complete(vm.create_on_disk())
    for name, key, value in LATE_PROPERTIES:
        setattr(app.domains[name], key, app.domains[value])
    app.default_netvm = app.domains["sys-firewall"]
    app.default_template = app.domains["debian-13"]
    app.default_dispvm = app.domains["default-dvm"]
    app.updatevm = app.domains["sys-firewall"]
    app.clockvm = app.domains["sys-net"]
    app.save()
    loop.close()


def serve(base: Path) -> None:
    configure(base)
    import qubes.api.admin
    import qubes.api.internal
    import qubes.api.misc
    import qubes.tools.qubesd

    qubes.api.admin.QubesAdminAPI.SOCKNAME = str(base / "qubesd.sock")
    qubes.api.internal.QubesInternalAPI.SOCKNAME = str(base / "qubesd.internal.sock")
    qubes.api.misc.QubesMiscAPI.SOCKNAME = str(base / "qubesd.misc.sock")
    qubes.tools.qubesd.parser.set_defaults(offline_mode=False)
    qubes.tools.qubesd.main(["--qubesxml", str(base / "qubes.xml")])


if __name__ == "__main__":
    command, directory = sys.argv[1], Path(sys.argv[2]).resolve()
    {"create": create, "serve": serve}[command](directory)
