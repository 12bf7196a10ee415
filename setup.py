"""whonix-open: open files in Tor-routed (or offline) Whonix disposables on Qubes OS.

One source tree, three installable parts that share the small `whonix_open` core:
  whonix_open.dom0  - the qrexec broker that runs in dom0
  whonix_open.vm    - the `whonix-open` helper that runs in qubes
  whonix_open.sim   - the simulated Qubes used by the tests and the demo only
"""

from setuptools import setup

setup(
    name="whonix-open",
    version="0.1.0",
    description="Open files in netvm-enforced Whonix disposables on Qubes OS",
    license="GPL-2.0-or-later",
    python_requires=">=3.11",
    packages=["whonix_open", "whonix_open.dom0", "whonix_open.dom0.admin",
              "whonix_open.dom0.admin.checks", "whonix_open.vm", "whonix_open.sim"],
    package_dir={
        "whonix_open": "common",
        "whonix_open.dom0": "dom0",
        "whonix_open.vm": "vm",
        "whonix_open.sim": "sim",
    },
    # qubesadmin and qrexec are Qubes system packages (not on PyPI): imported lazily.
    # The VM helper's own runtime dependency (the dom0 RPM does not use this list).
    install_requires=["pyxdg"],
    extras_require={
        "test": ["pytest", "pytest-mock", "hypothesis", "ruff", "pyxdg", "psutil"],
    },
    entry_points={
        "console_scripts": [
            "whonix-open = whonix_open.vm.cli:main",
            "whonix-open-admin = whonix_open.dom0.admin.main:main",
            "whonix-open-app = whonix_open.dom0.launch:main",
            "whonix-open-link = whonix_open.vm.handlers:link_main",
            "whonix-open-choose = whonix_open.vm.handlers:choose_main",
        ],
        # The simulated Qubes offers itself to dom0/choose_backend.py connect();
        # install-dom0 ships neither the package nor this entry point.
        "whonix_open.backends": [
            "sim = whonix_open.sim.backend:SimBackend.from_env",
        ],
    },
)
