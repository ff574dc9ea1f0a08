/* nbd_tls_lib.h — GnuTLS, loaded only when serve is told to use TLS.
 *
 * farmem-blk is also the swap device's daemon, which mlockall()s every
 * page it maps: linked in, GnuTLS and the eight libraries it pulls in
 * (p11-kit, libunistring, nettle, gmp, ...) would pin about 7 MB in every
 * daemon, and run their initialisers there, for a TLS stack only `serve`
 * uses.  So nbd_tls.c calls GnuTLS through this table, filled by
 * dlopen() when TLS is configured; the header is still GnuTLS's own, so
 * every call is type-checked. */
#ifndef FARMEM_NBD_TLS_LIB_H
#define FARMEM_NBD_TLS_LIB_H

#include <gnutls/gnutls.h>
#include <stddef.h>

#define NBD_GNUTLS_FUNCS(X) \
	X(gnutls_bye) \
	X(gnutls_certificate_allocate_credentials) \
	X(gnutls_certificate_free_credentials) \
	X(gnutls_certificate_server_set_request) \
	X(gnutls_certificate_set_known_dh_params) \
	X(gnutls_certificate_set_x509_key_file) \
	X(gnutls_cipher_get) \
	X(gnutls_cipher_get_name) \
	X(gnutls_credentials_set) \
	X(gnutls_deinit) \
	X(gnutls_error_is_fatal) \
	X(gnutls_handshake) \
	X(gnutls_handshake_set_timeout) \
	X(gnutls_init) \
	X(gnutls_priority_deinit) \
	X(gnutls_priority_init) \
	X(gnutls_priority_set) \
	X(gnutls_protocol_get_name) \
	X(gnutls_protocol_get_version) \
	X(gnutls_psk_allocate_server_credentials) \
	X(gnutls_psk_free_server_credentials) \
	X(gnutls_psk_server_get_username) \
	X(gnutls_psk_set_server_credentials_function) \
	X(gnutls_psk_set_server_known_dh_params) \
	X(gnutls_record_recv) \
	X(gnutls_record_send) \
	X(gnutls_session_get_ptr) \
	X(gnutls_session_set_ptr) \
	X(gnutls_strerror) \
	X(gnutls_transport_get_ptr) \
	X(gnutls_transport_set_ptr) \
	X(gnutls_transport_set_pull_function) \
	X(gnutls_transport_set_pull_timeout_function) \
	X(gnutls_transport_set_push_function)

struct nbd_gnutls {
#define NBD_GNUTLS_MEMBER(f) __typeof__(f) *f;
	NBD_GNUTLS_FUNCS(NBD_GNUTLS_MEMBER)
#undef NBD_GNUTLS_MEMBER
	gnutls_alloc_function *malloc_fn;   /* the variable gnutls_malloc */
};

extern struct nbd_gnutls nbd_gnutls;

/* Load libgnutls and fill nbd_gnutls (once; later calls return the first
 * result).  0, or -ENOENT with err saying what is missing. */
int nbd_tls_lib_load(char *err, size_t errlen);

#endif
