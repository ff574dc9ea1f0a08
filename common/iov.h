/* iov.h — stepping over what a short sendmsg took from an iovec array. */
#ifndef FARMEM_IOV_H
#define FARMEM_IOV_H

#include <stddef.h>
#include <sys/uio.h>

/* Drop the first bytes of the n entries of iov (bytes no more than they
 * hold): whole entries leave the front, a partly sent one is trimmed.
 * Returns the entries left, moved to the front of iov. */
int fm_iov_consume(struct iovec *iov, int n, size_t bytes);

#endif
