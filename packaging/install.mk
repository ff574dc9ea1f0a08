# install.mk — `make install` / `make uninstall`, included by the Makefile.
#
# Used by packaging/debian/rules and packaging/farmem.spec with DESTDIR.
# Existing config files are never overwritten (an upgrade by hand keeps
# the admin's settings); packages handle that through conffiles instead.

PREFIX ?= /usr
SBINDIR ?= $(PREFIX)/sbin
SYSCONFDIR ?= /etc
PKGLIBDIR ?= $(PREFIX)/lib/farmem
UNITDIR ?= /lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=

INSTALL ?= install
MAN8 := packaging/man/farmem-memserver.8 packaging/man/farmem-blk.8
MAN5 := packaging/man/farmem.conf.5 packaging/man/memserver.conf.5
UNITS_SYSTEMD := packaging/systemd/farmem-memserver.service \
	packaging/systemd/farmem-swap@.service \
	packaging/systemd/farmem-offload.service
CONFS := conf/memserver.conf conf/farmem.conf

.PHONY: install uninstall
install: $(PROGS)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/farmem \
		$(DESTDIR)$(PKGLIBDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0755 $(PROGS) $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 0755 packaging/farmem-swap $(DESTDIR)$(PKGLIBDIR)/
	$(INSTALL) -m 0644 $(UNITS_SYSTEMD) $(DESTDIR)$(UNITDIR)/
	$(INSTALL) -m 0644 $(MAN8) $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 0644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	$(Q)for f in $(CONFS); do \
	  t=$(DESTDIR)$(SYSCONFDIR)/farmem/$$(basename $$f); \
	  if [ -e "$$t" ]; then echo "  KEEP    $$t (exists)"; \
	  else $(INSTALL) -m 0644 $$f "$$t"; fi; done

# Config files stay: they are the admin's.
uninstall:
	rm -f $(addprefix $(DESTDIR)$(SBINDIR)/,farmem-memserver farmem-blk)
	rm -f $(DESTDIR)$(PKGLIBDIR)/farmem-swap
	-rmdir $(DESTDIR)$(PKGLIBDIR)
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,farmem-memserver.service farmem-swap@.service \
		farmem-offload.service)
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man8/,farmem-memserver.8 farmem-blk.8)
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man5/,farmem.conf.5 memserver.conf.5)
