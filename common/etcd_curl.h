/* etcd_curl.h — libcurl, loaded with dlopen() on first use.
 *
 * Only etcd membership needs HTTP, and farmem-blk's daemon locks every
 * page it maps (it is swap): linking libcurl would pin it and its TLS,
 * HTTP/2, LDAP and Kerberos libraries in every daemon, etcd or not.  So
 * the header gives the types and the library is opened when an etcd
 * client is first made (as nbd_tls_lib.c does for GnuTLS).
 */
#ifndef FARMEM_ETCD_CURL_H
#define FARMEM_ETCD_CURL_H

/* Plain prototypes: the type-checking macros would shadow the pointers. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <stddef.h>

#define ETCD_CURL_FUNCS(X) \
	X(curl_global_init) X(curl_easy_init) X(curl_easy_setopt) \
	X(curl_easy_perform) X(curl_easy_cleanup) X(curl_easy_getinfo) \
	X(curl_easy_strerror) X(curl_easy_reset) X(curl_slist_append) X(curl_slist_free_all)

struct etcd_curl {
#define ETCD_CURL_PTR(f) __typeof__(f) *f;
	ETCD_CURL_FUNCS(ETCD_CURL_PTR)
#undef ETCD_CURL_PTR
};

extern struct etcd_curl etcd_curl;

/* 0 once the library is loaded and initialised, else -ENOENT and err
 * says which library to install. */
int etcd_curl_load(char *err, size_t errlen);

#endif
