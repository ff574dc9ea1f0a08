/* keyfile.h — a client's key file: its name and its key, as text.
 *
 * Made by `farmem-memserver --client-key NAME`, read by farmem-blk
 * --key-file.  The format is small and strict, so a typo is an error
 * and not a different identity:
 *
 *   # comment lines and blank lines are allowed
 *   name = alice
 *   key = <64 hex digits>
 *
 * Both keys exactly once, nothing else; the name as fm_client_name_check()
 * wants it and never FM_CLUSTER_NAME; at most FM_KEYFILE_MAX bytes.
 */
#ifndef FARMEM_KEYFILE_H
#define FARMEM_KEYFILE_H

#include <stddef.h>

#include "auth.h"

#define FM_KEYFILE_MAX 4096

/* Parse text (len bytes, need not be NUL-terminated).  0, or -EINVAL
 * with why naming the line and what is wrong with it. */
int fm_keyfile_parse(const char *text, size_t len, struct fm_identity *id,
		     char *why, size_t whylen);

/* Read and parse path.  Warns (does not fail) when group or others may
 * read it.  0 or -errno; err names the file. */
int fm_keyfile_load(const char *path, struct fm_identity *id, char *err,
		    size_t errlen);

/* The file's text for id into out (NUL-terminated).  Bytes written, or
 * -ENOSPC when out is too small. */
int fm_keyfile_format(const struct fm_identity *id, char *out, size_t outlen);

#endif
