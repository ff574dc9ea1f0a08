/* nbd_tls_lib.c — dlopen() of GnuTLS for serve's TLS (nbd_tls_lib.h says
 * why it is not linked in). */
#include "nbd_tls_lib.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

/* The soname Debian 12's libgnutls30 (and current Fedora) ship. */
#define GNUTLS_SONAME "libgnutls.so.30"

struct nbd_gnutls nbd_gnutls;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_rc;
static char load_err[256];

static void *sym(void *h, const char *name)
{
	void *p = dlsym(h, name);

	if (!p && !load_rc) {
		snprintf(load_err, sizeof(load_err), "%s has no %s", GNUTLS_SONAME, name);
		load_rc = -ENOENT;
	}
	return p;
}

static void load(void)
{
	void *h = dlopen(GNUTLS_SONAME, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		snprintf(load_err, sizeof(load_err), "cannot load %s (install "
			 "libgnutls30): %s", GNUTLS_SONAME, dlerror());
		load_rc = -ENOENT;
		return;
	}
#define NBD_GNUTLS_LOAD(f) nbd_gnutls.f = (__typeof__(f) *)sym(h, #f);
	NBD_GNUTLS_FUNCS(NBD_GNUTLS_LOAD)
#undef NBD_GNUTLS_LOAD
	nbd_gnutls.malloc_fn = (gnutls_alloc_function *)sym(h, "gnutls_malloc");
	/* The handle stays open: the functions are used until exit. */
}

int nbd_tls_lib_load(char *err, size_t errlen)
{
	pthread_once(&load_once, load);
	if (load_rc < 0 && err)
		snprintf(err, errlen, "%s", load_err);
	return load_rc;
}
