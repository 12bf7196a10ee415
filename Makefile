# whonix-open — developer and install targets.
#   make demo   a real open, end to end, against the simulated Qubes
#   make test   the whole suite (what .ci/run runs)
#   make docs   rewrite the generated blocks of README.md and docs/*.md from the code
#   make install-dom0 / make install-vm DESTDIR=...   see docs/INSTALL.md

PYTHON      ?= python3
VENV        ?= .venv
VPY         := $(VENV)/bin/python
DESTDIR     ?=
VERSION     := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' common/__init__.py)
PREFIX      ?= /usr
# Installs go to the system Python's own package directory (Debian: dist-packages).
SYS_PYTHON  ?= /usr/bin/python3
PY_SITELIB  ?= $(shell $(SYS_PYTHON) -c 'import sysconfig as s; n = "deb_system" if "deb_system" in s.get_scheme_names() else "posix_prefix"; print(s.get_path("purelib", n, vars={"base": "$(PREFIX)"}))' 2>/dev/null)

.PHONY: all venv system-deps test test-fast demo lint bench clean install-dom0 install-vm install-vm-desktop \
	dist rpm deb release-venvs test-releases

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

# The real pdf converter (QubesOS/qubes-app-linux-pdf-converter: the qubes.PdfConvert
# server the simulated disposable runs, and the stock client the tests and the
# benchmark compare with), unmodified, with its dependencies from PyPI (Pillow,
# click, tqdm, python-magic). Its server also needs poppler-utils, graphicsmagick
# and libmagic1 (.ci/install-system-deps). tests/vm/test_convert_e2e.py fails then.
$(VENV)/.converter: $(VENV)/.installed
	@if ls $(UPSTREAM)/qubespdfconverter-*.whl >/dev/null 2>&1; then \
		$(VPY) -m pip install -q $(UPSTREAM)/qubespdfconverter-*.whl && touch $@; \
	else \
		echo "WARNING: $(UPSTREAM)/qubespdfconverter-*.whl missing: the convert tests will fail"; \
	fi

venv: $(VENV)/.installed $(VENV)/.upstream $(VENV)/.converter

# --- the release matrix (tests/real and tests/realqubesd once per release) ---
# One venv per Qubes release, with that release's dom0 Python and its unmodified
# qubesadmin, qrexec and qubesd (`qubes`) from $(UPSTREAM)/<release>/ (dev: the
# development line at the top of $(UPSTREAM)), else built from the upstream
# repositories at the release's tag/commit. Missing either way: the target FAILS.
# qubesd's own PyPI dependencies come from PyPI (pyasyncore on Python >= 3.12).
RELEASES      ?= r4.2 r4.3 dev
PY311         ?= $(firstword $(wildcard /root/.pyenv/versions/3.11*/bin/python3.11) $(shell command -v python3.11))
PY313         ?= $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13))
RELEASE_PY_r4.2 := $(PY311)
RELEASE_PY_r4.3 := $(PY313)
RELEASE_PY_dev  := $(PY313)
RELEASE_WHEELS_r4.2 := $(UPSTREAM)/r4.2
RELEASE_WHEELS_r4.3 := $(UPSTREAM)/r4.3
RELEASE_WHEELS_dev  := $(UPSTREAM)
# the same packages from source: tag (releases) or commit (dev line)
RELEASE_REFS_r4.2 := v4.2.18 v4.2.25 v4.2.39
RELEASE_REFS_r4.3 := v4.3.34 v4.3.12 v4.3.50
RELEASE_REFS_dev  := $(QUBESADMIN_COMMIT) $(QREXEC_COMMIT) 1ad5f9b84dc1eae76d1b885d009f3e84f5503740
QUBESD_DEPS   := lxml docutils jinja2 pyyaml pyinotify 'pyasyncore; python_version >= "3.12"'

.venv-%/.installed: setup.py pyproject.toml
	@test -x "$(RELEASE_PY_$*)" || { echo "ERROR: release $* needs $(RELEASE_PY_$*)" \
		"(its dom0 Python); set PY311/PY313" >&2; exit 1; }
	rm -rf .venv-$*
	$(RELEASE_PY_$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip setuptools
	.venv-$*/bin/python -m pip install -q -e '.[test]' $(QUBESD_DEPS)
	@# the converter too: tests/real's conversions make their documents with it (Pillow)
	.venv-$*/bin/python -m pip install -q $(UPSTREAM)/qubespdfconverter-*.whl
	@set -e; w=$(RELEASE_WHEELS_$*); \
	if ls $$w/qubesadmin-*.whl $$w/qrexec-*.whl $$w/qubes-*.whl >/dev/null 2>&1; then \
		.venv-$*/bin/python -m pip install -q --no-deps $$w/qubesadmin-*.whl \
			$$w/qrexec-*.whl $$w/qubes-*.whl; \
	else \
		set -- $(RELEASE_REFS_$*); \
		.venv-$*/bin/python -m pip install -q --no-deps \
			"qubesadmin @ git+https://github.com/QubesOS/qubes-core-admin-client@$$1" \
			"qrexec @ git+https://github.com/QubesOS/qubes-core-qrexec@$$2" \
			"qubes @ git+https://github.com/QubesOS/qubes-core-admin@$$3" || { \
		echo "ERROR: release $*: no wheels in $$w and upstream not reachable" >&2; exit 1; }; \
	fi
	touch $@

release-venvs: $(foreach r,$(RELEASES),.venv-$(r)/.installed)

# Per release: the real-library tier (tests/real, and the tests that use the real
# qrexec parser or qubesadmin) and the real-qubesd tier (tests/realqubesd). The
# main .venv already runs the real-library tier with the dev line's libraries.
REAL_LIBRARY_TESTS := tests/real tests/admin/test_real_qubesadmin.py \
	tests/admin/test_status_policy.py tests/policy
RELEASE_TESTS_r4.2 := $(REAL_LIBRARY_TESTS) tests/realqubesd
RELEASE_TESTS_r4.3 := $(REAL_LIBRARY_TESTS) tests/realqubesd
RELEASE_TESTS_dev  := tests/realqubesd
test-releases: release-venvs
	@set -e; $(foreach r,$(RELEASES),echo "=== release $(r) ==="; \
		.venv-$(r)/bin/python -m pytest -q -p no:cacheprovider $(RELEASE_TESTS_$(r));)

# Debian packages (Xvfb, the four file managers, desktop-file-utils, shellcheck).
system-deps:
	bash .ci/install-system-deps

test: venv system-deps release-venvs
	$(VPY) -m ruff check .
	$(VPY) -m pytest -q --ignore=tests/realqubesd
	$(MAKE) test-releases

# Everything but the real-GUI tests: quick to iterate with.
test-fast: venv
	$(VPY) -m pytest -q -m 'not gui' --ignore=tests/realqubesd

demo: venv
	$(VPY) demo/run_demo.py

# The generated blocks of the docs (docs/generate.py); `make test` checks them.
.PHONY: docs
docs: venv
	$(VPY) docs/generate.py --write

lint: venv
	$(VPY) -m ruff check .

bench: venv
	$(VPY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-r4.2 .venv-r4.3 .venv-dev build dist *.egg-info .pytest_cache

# --- packages ----------------------------------------------------------------
# make dist: the source tarball the packages are built from (what a release ships).
# Everything but the tests, the benchmarks and the demo; reproducible (sorted,
# fixed owner and mtime). DISTDIR, RPM_TOPDIR and DEB_BUILDDIR let the tests
# build in throwaway directories.
DIST_NAME   := whonix-open-$(VERSION)
DIST_FILES  := common dom0 vm sim desktop packaging policy qubes-rpc rpm_spec debian docs \
	Makefile setup.py pyproject.toml README.md
DISTDIR     ?= $(CURDIR)/dist
RPM_TOPDIR  ?= $(CURDIR)/build/rpm
DEB_BUILDDIR ?= $(CURDIR)/build/deb
dist:
	mkdir -p $(DISTDIR)
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00Z' \
		--exclude=__pycache__ --exclude='*.pyc' --transform 's,^,$(DIST_NAME)/,' \
		-czf $(DISTDIR)/$(DIST_NAME).tar.gz $(DIST_FILES)

# make rpm: the dom0 RPM, rpmbuild -tb straight from that tarball (its spec is
# rpm_spec/whonix-open-dom0.spec; Debian's `rpm` package works too; --nodeps:
# there rpm's database knows no installed packages to check BuildRequires with).
# Build it for the dom0's Python: in Qubes Builder (that release's Fedora), or
# with RPMDEFINES='--define "python3_sitelib /usr/lib/python3.13/site-packages"'.
RPMDEFINES  ?=
rpm: dist
	rpmbuild -tb --nodeps --define "_topdir $(RPM_TOPDIR)" $(RPMDEFINES) \
		$(DISTDIR)/$(DIST_NAME).tar.gz
	@ls $(RPM_TOPDIR)/RPMS/noarch/*.rpm

# make deb: the template package, built from that tarball in DEB_BUILDDIR (the
# .deb lands there, never beside the source tree).
deb: dist
	rm -rf $(DEB_BUILDDIR) && mkdir -p $(DEB_BUILDDIR)
	tar -xzf $(DISTDIR)/$(DIST_NAME).tar.gz -C $(DEB_BUILDDIR)
	cd $(DEB_BUILDDIR)/$(DIST_NAME) && dpkg-buildpackage -us -uc -b
	@ls $(DEB_BUILDDIR)/*.deb

# --- install on Qubes ------------------------------------------------------
# The documented file lists and modes are held by tests/packaging/lists.py;
# the dom0 RPM (rpm_spec/whonix-open-dom0.spec) and the .deb (debian/) call these
# targets, so a change here changes the packages too.

# >>> whonix-open-admin (dom0 command, issue 10): its launcher is installed when it
# exists in the tree; its modules (dom0/admin/...) come with the dom0 package below.
# To add another dom0 command: its launcher in packaging/ added to the wildcard here,
# its name in the RPM spec's marked spot and in lists.py DOM0_COMMANDS.
DOM0_COMMANDS := $(notdir $(wildcard packaging/whonix-open-admin packaging/whonix-open-app))
# <<< whonix-open-admin

# dom0: the broker package (common + dom0, subpackages included; no VM helper, no
# simulation), the qrexec services (qubes-rpc/), the policy, the tmpfiles entry, the
# dom0 commands. The administrator's files (30-user-whonix-open.policy,
# /etc/whonix-open/profiles.toml) are installed once and never overwritten.
# Policy files as Qubes installs its own: 0664 root:qubes (qubes-core-admin's
# rpm_spec), so qubes-policy-editor / the policy Admin API can rewrite them. The
# group is set by the RPM (%attr); a plain `make install-dom0` sets it where the
# group exists (dom0), and leaves it alone in a DESTDIR build root.
DOM0_PY     := $(shell cd dom0 && find . -name '*.py' -not -path '*/__pycache__/*' | sort)
install-dom0:
	install -d $(DESTDIR)$(PY_SITELIB)/whonix_open/dom0
	install -m 0644 common/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/
	for f in $(DOM0_PY); do \
		install -D -m 0644 dom0/$$f $(DESTDIR)$(PY_SITELIB)/whonix_open/dom0/$$f || exit 1; done
	$(SYS_PYTHON) -m compileall -q -d $(PY_SITELIB)/whonix_open $(DESTDIR)$(PY_SITELIB)/whonix_open
	install -d $(DESTDIR)/etc/qubes-rpc $(DESTDIR)/etc/qubes/policy.d $(DESTDIR)/etc/whonix-open
	install -m 0755 qubes-rpc/whonix.OpenInDisposable qubes-rpc/whonix.ViewInDisposable \
		qubes-rpc/whonix.RoutingStatus qubes-rpc/whonix.OpenURLInDisposable \
		qubes-rpc/whonix.StartAppInDisposable qubes-rpc/whonix.ConvertInDisposable \
		$(DESTDIR)/etc/qubes-rpc/
	install -d $(DESTDIR)$(PREFIX)/share/applications
	install -m 0644 desktop/dom0/whonix-open-torbrowser.desktop \
		desktop/dom0/whonix-open-terminal.desktop $(DESTDIR)$(PREFIX)/share/applications/
	install -m 0664 policy/70-whonix-open.policy $(DESTDIR)/etc/qubes/policy.d/
	test -e $(DESTDIR)/etc/qubes/policy.d/30-user-whonix-open.policy || \
		install -m 0664 policy/30-user-whonix-open.policy $(DESTDIR)/etc/qubes/policy.d/
	if [ -z "$(DESTDIR)" ] && getent group qubes >/dev/null; then \
		chgrp qubes /etc/qubes/policy.d/70-whonix-open.policy \
			/etc/qubes/policy.d/30-user-whonix-open.policy; fi
	test -e $(DESTDIR)/etc/whonix-open/profiles.toml || \
		install -m 0644 packaging/profiles.toml.example $(DESTDIR)/etc/whonix-open/profiles.toml
	install -d $(DESTDIR)/usr/lib/tmpfiles.d
	install -m 0644 packaging/tmpfiles-whonix-open.conf $(DESTDIR)/usr/lib/tmpfiles.d/whonix-open.conf
	$(if $(DOM0_COMMANDS),install -d $(DESTDIR)$(PREFIX)/bin)
	$(foreach c,$(DOM0_COMMANDS),install -m 0755 packaging/$(c) $(DESTDIR)$(PREFIX)/bin/$(c);)

# A template (TemplateVM): the helper, its command and the desktop integrations.
install-vm:
	install -d $(DESTDIR)$(PY_SITELIB)/whonix_open/vm $(DESTDIR)$(PREFIX)/bin
	install -m 0644 common/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/
	install -m 0644 vm/*.py $(DESTDIR)$(PY_SITELIB)/whonix_open/vm/
	install -m 0755 packaging/whonix-open packaging/whonix-open-link packaging/whonix-open-choose \
		$(DESTDIR)$(PREFIX)/bin/
	# Bytecode now: a user cannot write __pycache__ here, so without it every
	# run of whonix-open would compile its modules again (~15 ms). COMPILE=no for
	# the .deb: there dh_python3's py3compile does it at install.
	$(if $(filter no,$(COMPILE)),,$(SYS_PYTHON) -m compileall -q -d $(PY_SITELIB)/whonix_open \
		$(DESTDIR)$(PY_SITELIB)/whonix_open)

# The desktop integrations (part of install-vm; on their own for the GUI tests):
# each file where its file manager looks. See docs/INSTALL.md.
DATADIR     ?= $(PREFIX)/share
install-vm: install-vm-desktop
install-vm-desktop:
	install -d $(DESTDIR)$(DATADIR)/applications $(DESTDIR)$(DATADIR)/file-manager/actions \
		$(DESTDIR)$(DATADIR)/nautilus-python/extensions $(DESTDIR)$(DATADIR)/kio/servicemenus \
		$(DESTDIR)$(DATADIR)/kservices5/ServiceMenus $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/xdg/autostart
	install -m 0644 desktop/mime/whonix-open.desktop desktop/mime/whonix-open-view.desktop \
		desktop/links/whonix-open-link.desktop desktop/links/whonix-open-link-confirm.desktop \
		desktop/chooser/whonix-open-choose.desktop $(DESTDIR)$(DATADIR)/applications/
	install -m 0644 desktop/chooser/pcmanfm-qt/whonix-open-choose.desktop \
		$(DESTDIR)$(DATADIR)/file-manager/actions/
	install -m 0644 desktop/chooser/dolphin/kf6/whonix-open-choose.desktop \
		$(DESTDIR)$(DATADIR)/kio/servicemenus/
	install -m 0644 desktop/chooser/dolphin/kf5/whonix-open-choose.desktop \
		$(DESTDIR)$(DATADIR)/kservices5/ServiceMenus/
	install -m 0644 desktop/pcmanfm-qt/whonix-open-open.desktop desktop/pcmanfm-qt/whonix-open-view.desktop \
		desktop/pcmanfm-qt/whonix-open-view-offline.desktop desktop/pcmanfm-qt/whonix-open-convert.desktop \
		$(DESTDIR)$(DATADIR)/file-manager/actions/
	install -m 0644 desktop/nautilus/whonix_open_nautilus.py $(DESTDIR)$(DATADIR)/nautilus-python/extensions/
	install -m 0644 desktop/dolphin/kf6/whonix-open.desktop $(DESTDIR)$(DATADIR)/kio/servicemenus/
	install -m 0644 desktop/dolphin/kf5/whonix-open.desktop $(DESTDIR)$(DATADIR)/kservices5/ServiceMenus/
	install -m 0755 desktop/thunar/whonix-open-thunar-actions $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 desktop/thunar/whonix-open-thunar-actions.desktop $(DESTDIR)/etc/xdg/autostart/

# whonix-open-admin reap, from a systemd timer in dom0 (at boot and every 5 minutes).
# Enable after installing: systemctl enable --now whonix-open-reap.timer
# The preset enables the timer when a package runs `systemctl preset` at install.
SYSTEMD_UNITDIR ?= /usr/lib/systemd/system
SYSTEMD_PRESETDIR ?= /usr/lib/systemd/system-preset
.PHONY: install-dom0-reap-timer
install-dom0: install-dom0-reap-timer
install-dom0-reap-timer:
	install -d $(DESTDIR)$(SYSTEMD_UNITDIR) $(DESTDIR)$(SYSTEMD_PRESETDIR)
	install -m 0644 packaging/whonix-open-reap.service packaging/whonix-open-reap.timer \
		$(DESTDIR)$(SYSTEMD_UNITDIR)/
	install -m 0644 packaging/75-whonix-open.preset $(DESTDIR)$(SYSTEMD_PRESETDIR)/
