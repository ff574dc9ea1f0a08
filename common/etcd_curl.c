/* etcd_curl.c — dlopen() of libcurl for the etcd client (etcd_curl.h
 * says why it is not linked in). */
#include "etcd_curl.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

/* Debian's libcurl4 (OpenSSL), then libcurl3-gnutls: the same API. */
static const char *const sonames[] = { "libcurl.so.4", "libcurl-gnutls.so.4" };

struct etcd_curl etcd_curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_rc;
static char load_err[256];

static void *sym(void *h, const char *soname, const char *name)
{
	void *p = dlsym(h, name);

	if (!p && !load_rc) {
		snprintf(load_err, sizeof(load_err), "%s has no %s", soname, name);
		load_rc = -ENOENT;
	}
	return p;
}

static void load(void)
{
	const char *soname = NULL;
	void *h = NULL;

	for (size_t i = 0; !h && i < sizeof(sonames) / sizeof(sonames[0]); i++) {
		soname = sonames[i];
		h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	}
	if (!h) {
		snprintf(load_err, sizeof(load_err), "cannot load libcurl for etcd "
			 "(install libcurl4): %s", dlerror());
		load_rc = -ENOENT;
		return;
	}
#define ETCD_CURL_LOAD(f) etcd_curl.f = (__typeof__(f) *)sym(h, soname, #f);
	ETCD_CURL_FUNCS(ETCD_CURL_LOAD)
#undef ETCD_CURL_LOAD
	/* curl_global_init is not thread-safe: once, here, under the once. */
	if (!load_rc && etcd_curl.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(load_err, sizeof(load_err), "curl_global_init failed");
		load_rc = -EIO;
	}
	/* The handle stays open: the functions are used until exit. */
}

int etcd_curl_load(char *err, size_t errlen)
{
	pthread_once(&load_once, load);
	if (load_rc < 0 && err)
		snprintf(err, errlen, "%s", load_err);
	return load_rc;
}
