/* nbd_psk.h — the TLS pre-shared key file of `farmem-blk serve --tls-psk`:
 * one "username:hexkey" line per client, the format psktool writes and
 * nbdkit, libnbd and qemu read.  Parsed once at start, so a bad file is
 * an error naming its line before anything listens. */
#ifndef FARMEM_NBD_PSK_H
#define FARMEM_NBD_PSK_H

#include <stddef.h>
#include <stdint.h>

#define NBD_PSK_USER_MAX   128          /* bytes, as GnuTLS allows */
#define NBD_PSK_KEY_MIN    16           /* bytes: 128 bits at least */
#define NBD_PSK_KEY_MAX    64
#define NBD_PSK_FILE_MAX   (1u << 20)
#define NBD_PSK_ENTRIES_MAX 4096

struct nbd_psk_entry {
	char user[NBD_PSK_USER_MAX + 1];
	uint8_t key[NBD_PSK_KEY_MAX];
	size_t key_len;
};

struct nbd_psk_table {
	struct nbd_psk_entry *e;
	size_t n;
	size_t cap;                     /* entries allocated (all wiped at free) */
};

/* Parse len bytes of text; name is the file's name for messages.  Blank
 * lines and lines starting with '#' are skipped; a user name is 1..128
 * printable bytes without ':'; a key is 16..64 bytes in hex; a name
 * given twice is an error.  0, or -EINVAL (err names the line) or
 * -ENOMEM. */
int nbd_psk_parse(const char *text, size_t len, const char *name,
		  struct nbd_psk_table *t, char *err, size_t errlen);
/* Read and parse path (warns when group or others may read it). */
int nbd_psk_load(const char *path, struct nbd_psk_table *t, char *err, size_t errlen);
const struct nbd_psk_entry *nbd_psk_find(const struct nbd_psk_table *t,
					 const char *user);
/* Wipes the keys and frees the table; t may be empty. */
void nbd_psk_free(struct nbd_psk_table *t);

#endif
