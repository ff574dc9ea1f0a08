/* iov.c — see iov.h. */
#include "iov.h"

#include <stdint.h>
#include <string.h>

int fm_iov_consume(struct iovec *iov, int n, size_t bytes)
{
	int k = 0;

	while (k < n && bytes >= iov[k].iov_len)
		bytes -= iov[k++].iov_len;
	if (k < n && bytes) {
		iov[k].iov_base = (uint8_t *)iov[k].iov_base + bytes;
		iov[k].iov_len -= bytes;
	}
	memmove(iov, iov + k, (size_t)(n - k) * sizeof(*iov));
	return n - k;
}
