# Portcullis: the one description of where every installed file goes.
# debian/rules, packaging/rpm/portcullis.spec and packaging/arch/PKGBUILD all
# call `make install-client` / `make install-server` with their own PREFIX
# and DESTDIR, so a source install and every package lay files out alike.
#
#   make                      release binaries (tests/build-release.sh) and
#                             generated man pages and completions
#   make install              both halves under PREFIX (default /usr/local)
#   make install-client       portcullis, its man pages, completions
#   make install-server       portcullisd, portcullis-preflight, initramfs hooks,
#                             man pages, config
#   make uninstall            removes what install put there; keeps
#                             /etc/portcullis (your config and host key)
#   make deb                  the two Debian packages in target/deb/
#   make rpm                  the RPMs in target/rpm/ (rpmbuild)
#
# Paths the initramfs generators read are fixed by the generators, not by
# PREFIX: initramfs-tools reads /usr/share/initramfs-tools, dracut
# /usr/lib/dracut/modules.d, mkinitcpio /usr/lib/initcpio.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
SYSCONFDIR ?= /etc
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
INITRAMFS_TOOLS_DIR ?= /usr/share/initramfs-tools
DRACUT_MODULES_DIR ?= /usr/lib/dracut/modules.d
INITCPIO_DIR ?= /usr/lib/initcpio
# The hooks' shared shell library: every generator's hook sources it from
# this fixed path and copies it to the same path in the image.
PORTCULLIS_LIB_DIR ?= /usr/lib/portcullis
DESTDIR ?=

# Built binaries (tests/build-release.sh writes them here) and generated docs.
DIST ?= target/dist
GEN ?= target/gen
DEB_OUTDIR ?= target/deb
RPM_OUTDIR ?= target/rpm
CARGO ?= cargo

INSTALL ?= install
D := $(DESTDIR)

.PHONY: all dist docs install install-client install-server uninstall \
	uninstall-client uninstall-server deb rpm clean-gen

all: dist docs

dist: $(DIST)/portcullis $(DIST)/portcullisd $(DIST)/portcullisd-initramfs $(DIST)/portcullis-preflight

# Built only when missing: packages are made from an existing release build.
$(DIST)/portcullis $(DIST)/portcullisd $(DIST)/portcullisd-initramfs $(DIST)/portcullis-preflight:
	tests/build-release.sh

docs: $(GEN)/.stamp

# Any source file may hold a clap definition (or move): depend on them all.
$(GEN)/.stamp: examples/gen-docs.rs docs/config.md examples/portcullisd.toml Cargo.toml \
		$(wildcard src/*.rs src/*/*.rs src/*/*/*.rs)
	rm -rf $(GEN)
	$(CARGO) run --quiet --locked --example gen-docs -- $(GEN)
	# The default config: the annotated example with every setting
	# commented out, so a copy of it starts from the built-in defaults.
	{ echo '# Default portcullisd configuration: copy to /etc/portcullis/portcullisd.toml'; \
	  echo '# and uncomment what you change. Every value shown is the default, except'; \
	  echo '# the [[volume]] example.'; \
	  echo '# Reference: portcullisd.toml(5).'; echo; \
	  sed -e 's/^\([^#]\)/#\1/' examples/portcullisd.toml; } >$(GEN)/portcullisd.toml
	touch $@

install: install-client install-server

install-client: dist docs
	$(INSTALL) -D -m 0755 $(DIST)/portcullis $(D)$(BINDIR)/portcullis
	$(INSTALL) -d $(D)$(MANDIR)/man1
	$(INSTALL) -m 0644 $(GEN)/man/man1/*.1 $(D)$(MANDIR)/man1/
	$(INSTALL) -D -m 0644 $(GEN)/completions/portcullis.bash $(D)$(BASHCOMPDIR)/portcullis
	$(INSTALL) -D -m 0644 $(GEN)/completions/_portcullis $(D)$(ZSHCOMPDIR)/_portcullis
	$(INSTALL) -D -m 0644 $(GEN)/completions/portcullis.fish $(D)$(FISHCOMPDIR)/portcullis.fish

install-server: dist docs
	$(INSTALL) -D -m 0755 $(DIST)/portcullisd $(D)$(SBINDIR)/portcullisd
	$(INSTALL) -D -m 0755 $(DIST)/portcullis-preflight $(D)$(SBINDIR)/portcullis-preflight
	# The listener the image hooks copy in (listen only; keygen and check
	# stay in portcullisd on the system). Not on PATH: nothing runs it here.
	$(INSTALL) -D -m 0755 $(DIST)/portcullisd-initramfs $(D)$(PORTCULLIS_LIB_DIR)/portcullisd-initramfs
	$(INSTALL) -d $(D)$(MANDIR)/man8
	$(INSTALL) -m 0644 $(GEN)/man/man8/*.8 $(D)$(MANDIR)/man8/
	$(INSTALL) -D -m 0644 $(GEN)/man/man5/portcullisd.toml.5 $(D)$(MANDIR)/man5/portcullisd.toml.5
	$(INSTALL) -D -m 0644 $(GEN)/portcullisd.toml $(D)$(DATADIR)/portcullis/portcullisd.toml
	# /etc/portcullis: the hooks' settings (all commented); a package marks it
	# as a config file. portcullisd.toml is NOT installed: its presence is
	# what enables remote unlock (the hooks then require keys), so an
	# unconfigured install leaves image builds working.
	$(INSTALL) -d -m 0755 $(D)$(SYSCONFDIR)/portcullis
	$(INSTALL) -m 0644 initramfs/common/initramfs.conf $(D)$(SYSCONFDIR)/portcullis/initramfs.conf
	$(INSTALL) -D -m 0644 initramfs/common/portcullis-lib.sh $(D)$(PORTCULLIS_LIB_DIR)/lib.sh
	# The build-time preflight every generator's hook runs on a new image.
	$(INSTALL) -D -m 0644 initramfs/common/preflight-hook.sh $(D)$(PORTCULLIS_LIB_DIR)/preflight-hook.sh
	$(INSTALL) -D -m 0644 initramfs/common/portcullis-net.sh $(D)$(PORTCULLIS_LIB_DIR)/net.sh
	# initramfs-tools
	$(INSTALL) -D -m 0755 initramfs/initramfs-tools/hooks/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/hooks/portcullis
	$(INSTALL) -D -m 0755 initramfs/initramfs-tools/scripts/init-premount/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/scripts/init-premount/portcullis
	$(INSTALL) -D -m 0755 initramfs/initramfs-tools/scripts/init-bottom/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/scripts/init-bottom/portcullis
	$(INSTALL) -D -m 0644 initramfs/initramfs-tools/conf.d/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/conf-hooks.d/portcullis
	# update-initramfs runs post-update hooks from /etc only.
	$(INSTALL) -D -m 0755 initramfs/initramfs-tools/post-update.d/portcullis \
		$(D)$(SYSCONFDIR)/initramfs/post-update.d/portcullis
	# dracut: the module is picked up when its check() passes, i.e. once
	# portcullisd.toml exists. initramfs/dracut/portcullis.conf (forcing the
	# module) is not installed: it would fail every unconfigured build.
	$(INSTALL) -d $(D)$(DRACUT_MODULES_DIR)/95portcullis
	$(INSTALL) -m 0755 initramfs/dracut/95portcullis/*.sh $(D)$(DRACUT_MODULES_DIR)/95portcullis/
	$(INSTALL) -m 0644 initramfs/dracut/95portcullis/*.service $(D)$(DRACUT_MODULES_DIR)/95portcullis/
	# mkinitcpio (sd-portcullis reads its units from /etc/initcpio/portcullis)
	$(INSTALL) -D -m 0644 initramfs/mkinitcpio/install/portcullis $(D)$(INITCPIO_DIR)/install/portcullis
	$(INSTALL) -D -m 0644 initramfs/mkinitcpio/install/sd-portcullis $(D)$(INITCPIO_DIR)/install/sd-portcullis
	$(INSTALL) -D -m 0644 initramfs/mkinitcpio/hooks/portcullis $(D)$(INITCPIO_DIR)/hooks/portcullis
	$(INSTALL) -D -m 0755 initramfs/mkinitcpio/post/portcullis $(D)$(INITCPIO_DIR)/post/portcullis
	$(INSTALL) -D -m 0644 initramfs/dracut/95portcullis/portcullisd.service \
		$(D)$(SYSCONFDIR)/initcpio/portcullis/portcullisd.service
	$(INSTALL) -D -m 0644 initramfs/dracut/95portcullis/portcullis-network-cleanup.service \
		$(D)$(SYSCONFDIR)/initcpio/portcullis/portcullis-network-cleanup.service
	$(INSTALL) -D -m 0755 initramfs/dracut/95portcullis/portcullis-flush-network.sh \
		$(D)$(SYSCONFDIR)/initcpio/portcullis/flush-network

uninstall: uninstall-client uninstall-server

uninstall-client:
	rm -f $(D)$(BINDIR)/portcullis $(D)$(MANDIR)/man1/portcullis.1 $(D)$(MANDIR)/man1/portcullis-*.1 \
		$(D)$(BASHCOMPDIR)/portcullis $(D)$(ZSHCOMPDIR)/_portcullis $(D)$(FISHCOMPDIR)/portcullis.fish

# Keeps /etc/portcullis (config, host key, authorized keys): rebuild the
# images afterwards so they no longer carry the listener.
uninstall-server:
	rm -f $(D)$(SBINDIR)/portcullisd $(D)$(MANDIR)/man8/portcullisd.8 $(D)$(MANDIR)/man8/portcullisd-*.8 \
		$(D)$(SBINDIR)/portcullis-preflight $(D)$(MANDIR)/man8/portcullis-preflight.8 \
		$(D)$(MANDIR)/man5/portcullisd.toml.5 $(D)$(DATADIR)/portcullis/portcullisd.toml \
		$(D)$(INITRAMFS_TOOLS_DIR)/hooks/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/scripts/init-premount/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/scripts/init-bottom/portcullis \
		$(D)$(INITRAMFS_TOOLS_DIR)/conf-hooks.d/portcullis \
		$(D)$(INITCPIO_DIR)/install/portcullis $(D)$(INITCPIO_DIR)/install/sd-portcullis \
		$(D)$(INITCPIO_DIR)/hooks/portcullis $(D)$(PORTCULLIS_LIB_DIR)/lib.sh \
		$(D)$(INITCPIO_DIR)/post/portcullis $(D)$(PORTCULLIS_LIB_DIR)/preflight-hook.sh \
		$(D)$(SYSCONFDIR)/initramfs/post-update.d/portcullis $(D)$(PORTCULLIS_LIB_DIR)/net.sh \
		$(D)$(PORTCULLIS_LIB_DIR)/portcullisd-initramfs
	-rmdir $(D)$(PORTCULLIS_LIB_DIR) 2>/dev/null
	rm -rf $(D)$(DRACUT_MODULES_DIR)/95portcullis $(D)$(SYSCONFDIR)/initcpio/portcullis
	-rmdir $(D)$(DATADIR)/portcullis 2>/dev/null

# Both Debian packages, without touching the parent directory (which
# dpkg-buildpackage writes to): debian/rules directly, debs in DEB_OUTDIR.
deb: dist docs
	mkdir -p $(DEB_OUTDIR)
	DEB_OUTDIR=$(abspath $(DEB_OUTDIR)) $(if $(DEB_VERSION),DEB_VERSION=$(DEB_VERSION)) \
		$(if $(filter 0,$(shell id -u)),,fakeroot) debian/rules binary
	@ls -1 $(DEB_OUTDIR)/*.deb

# On a non-RPM system (Debian) rpm knows no installed package: pass
# RPMBUILD_FLAGS=--nodeps to skip the BuildRequires check.
RPMBUILD_FLAGS ?=
rpm: dist docs
	mkdir -p $(RPM_OUTDIR)
	rpmbuild -bb $(RPMBUILD_FLAGS) --build-in-place --define '_topdir $(abspath $(RPM_OUTDIR))' \
		--define '_rpmdir $(abspath $(RPM_OUTDIR))' packaging/rpm/portcullis.spec

clean-gen:
	rm -rf $(GEN)
