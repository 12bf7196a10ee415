# whonix-open — developer and install targets.
#   make demo   a real open, end to end, against the simulated Qubes
#   make test   the whole suite (what .ci/run runs)
#   make install-dom0 / make install-vm DESTDIR=...   see README "Install on Qubes"

PYTHON      ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
DESTDIR     ?=
PREFIX      ?= /usr
# Installs go to the system Python's own package directory (Debian: dist-packages).
SYS_PYTHON  ?= /usr/bin/python3
PY_SITELIB  ?= $(shell $(SYS_PYTHON) -c 'import sysconfig as s; n = "deb_system" if "deb_system" in s.get_scheme_names() else "posix_prefix"; print(s.get_path("purelib", n, vars={"base": "$(PREFIX)"}))' 2>/dev/null)

.PHONY: all venv system-deps test test-fast demo lint bench clean install-dom0 install-vm install-vm-desktop

all: test

# The venv holds the PyPI packages; the project is installed editable into it.
$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

# The real Qubes libraries for tests/real (not on PyPI, installed --no-deps):
# the unmodified wheels in $(UPSTREAM) when present, else built from the
# upstream repositories at the same commits. If neither works, the venv is
# still made (make demo needs neither) and tests/real fails naming them.
UPSTREAM          ?= ../shared/upstream
QUBESADMIN_COMMIT := 02bc30aa69894f09629255c347ee807d4b7b635a
QREXEC_COMMIT     := b2822df6fc22e52dbaa721a25ba92040f342b8b6
QUBESADMIN_GIT    := git+https://github.com/QubesOS/qubes-core-admin-client@$(QUBESADMIN_COMMIT)
QREXEC_GIT        := git+https://github.com/QubesOS/qubes-core-qrexec@$(QREXEC_COMMIT)

$(VENV)/.upstream: $(VENV)/.installed
	@if ls $(UPSTREAM)/qubesadmin-*.whl $(UPSTREAM)/qrexec-*.whl >/dev/null 2>&1; then \
		$(VPY) -m pip install -q --no-deps $(UPSTREAM)/qubesadmin-*.whl $(UPSTREAM)/qrexec-*.whl \
			&& touch $@; \
	elif $(VPY) -m pip install -q --no-deps "qubesadmin @ $(QUBESADMIN_GIT)" \
			"qrexec @ $(QREXEC_GIT)"; then \
		touch $@; \
	else \
		echo "WARNING: qubesadmin/qrexec not installed (no $(UPSTREAM), upstream not" \
			"reachable): make demo works, tests/real will fail"; \
	fi

venv: $(VENV)/.installed $(VENV)/.upstream

# Debian packages (Xvfb, the four file managers, desktop-file-utils, shellcheck).
system-deps:
	bash .ci/install-system-deps

test: venv system-deps
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q

# Everything but the real-GUI tests: quick to iterate with.
test-fast: venv
	$(VPY) -m pytest -q -m 'not gui'

demo: venv
	$(VPY) demo/run_demo.py

lint: venv
	$(VPY) -m ruff check .

bench: venv
	$(VPY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# --- install on Qubes ------------------------------------------------------
# dom0: the broker package (without the VM helper or the simulation), the three
# qrexec services and the policy. 30-user-whonix-open.policy is installed once
# and never overwritten (it is the administrator's).
install-dom0:
	install -d $(DESTDIR)$(PY_SITELIB)/whonix_open/dom0
	install -m 0644 common/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/
	install -m 0644 dom0/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/dom0/
	$(SYS_PYTHON) -m compileall -q -d $(PY_SITELIB)/whonix_open $(DESTDIR)$(PY_SITELIB)/whonix_open
	install -d $(DESTDIR)/etc/qubes-rpc $(DESTDIR)/etc/qubes/policy.d $(DESTDIR)/etc/whonix-open
	install -m 0755 qubes-rpc/whonix.OpenInDisposable qubes-rpc/whonix.ViewInDisposable \
		qubes-rpc/whonix.RoutingStatus $(DESTDIR)/etc/qubes-rpc/
	install -m 0644 policy/70-whonix-open.policy $(DESTDIR)/etc/qubes/policy.d/
	test -e $(DESTDIR)/etc/qubes/policy.d/30-user-whonix-open.policy || \
		install -m 0644 policy/30-user-whonix-open.policy $(DESTDIR)/etc/qubes/policy.d/
	install -d $(DESTDIR)/usr/lib/tmpfiles.d
	install -m 0644 packaging/tmpfiles-whonix-open.conf $(DESTDIR)/usr/lib/tmpfiles.d/whonix-open.conf

# A template (TemplateVM): the helper, its command and the desktop integrations.
install-vm:
	install -d $(DESTDIR)$(PY_SITELIB)/whonix_open/vm $(DESTDIR)$(PREFIX)/bin
	install -m 0644 common/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/
	install -m 0644 vm/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/vm/
	install -m 0755 packaging/whonix-open $(DESTDIR)$(PREFIX)/bin/whonix-open
	# Bytecode now: a user cannot write __pycache__ here, so without it every
	# run of whonix-open would compile its modules again (~15 ms).
	$(SYS_PYTHON) -m compileall -q -d $(PY_SITELIB)/whonix_open $(DESTDIR)$(PY_SITELIB)/whonix_open

# The desktop integrations (part of install-vm; on their own for the GUI tests):
# each file where its file manager looks. See README, "Desktop integration".
DATADIR     ?= $(PREFIX)/share
install-vm: install-vm-desktop
install-vm-desktop:
	install -d $(DESTDIR)$(DATADIR)/applications $(DESTDIR)$(DATADIR)/file-manager/actions \
		$(DESTDIR)$(DATADIR)/nautilus-python/extensions $(DESTDIR)$(DATADIR)/kio/servicemenus \
		$(DESTDIR)$(DATADIR)/kservices5/ServiceMenus $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/xdg/autostart
	install -m 0644 desktop/mime/whonix-open.desktop desktop/mime/whonix-open-view.desktop \
		$(DESTDIR)$(DATADIR)/applications/
	install -m 0644 desktop/pcmanfm-qt/whonix-open-open.desktop desktop/pcmanfm-qt/whonix-open-view.desktop \
		desktop/pcmanfm-qt/whonix-open-view-offline.desktop $(DESTDIR)$(DATADIR)/file-manager/actions/
	install -m 0644 desktop/nautilus/whonix_open_nautilus.py $(DESTDIR)$(DATADIR)/nautilus-python/extensions/
	install -m 0644 desktop/dolphin/kf6/whonix-open.desktop $(DESTDIR)$(DATADIR)/kio/servicemenus/
	install -m 0644 desktop/dolphin/kf5/whonix-open.desktop $(DESTDIR)$(DATADIR)/kservices5/ServiceMenus/
	install -m 0755 desktop/thunar/whonix-open-thunar-actions $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 desktop/thunar/whonix-open-thunar-actions.desktop $(DESTDIR)/etc/xdg/autostart/
