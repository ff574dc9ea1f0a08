/* log_async.c — log lines through a ring and one writer thread (see
 * log.h for why a swap device's daemon needs it).
 *
 * Callers copy a whole line into the ring under a mutex held only for
 * the copy; the writer takes what is there under the same mutex and
 * writes it with the mutex released, so a write(2) that waits (on a
 * swap-in, a slow pipe, a full disk) delays only the writer.  The ring
 * is allocated at start: logging never allocates.
 */
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WRITE_CHUNK 4096

static struct {
	pthread_mutex_t lock;
	pthread_cond_t more;       /* writer: lines arrived, or stop */
	pthread_cond_t drained;    /* stop: the ring is empty */
	char *ring;
	size_t cap, head, len;     /* bytes [head, head+len) mod cap */
	uint64_t dropped, dropped_reported;
	int running, stopping, writing;
	pthread_t thread;
} la = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void ring_put(const char *line, size_t n)
{
	size_t tail = (la.head + la.len) % la.cap, first = la.cap - tail;

	if (first > n)
		first = n;
	memcpy(la.ring + tail, line, first);
	memcpy(la.ring, line + first, n - first);
	la.len += n;
}

static size_t ring_take(char *out, size_t max)
{
	size_t n = la.len < max ? la.len : max, first = la.cap - la.head;

	if (first > n)
		first = n;
	memcpy(out, la.ring + la.head, first);
	memcpy(out + first, la.ring, n - first);
	la.head = (la.head + n) % la.cap;
	la.len -= n;
	return n;
}

/* The sink: never waits for the writer, only for the ring's mutex. */
static void async_sink(const char *line, size_t n)
{
	pthread_mutex_lock(&la.lock);
	if (la.cap - la.len >= n) {
		ring_put(line, n);
		pthread_cond_signal(&la.more);
	} else {
		la.dropped++;
	}
	pthread_mutex_unlock(&la.lock);
}

static void write_all(const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(STDERR_FILENO, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;    /* nowhere to log to: nothing better to do */
		p += w;
		n -= (size_t)w;
	}
}

static void *writer_main(void *arg)
{
	static char chunk[WRITE_CHUNK];
	char note[96];

	(void)arg;
	pthread_mutex_lock(&la.lock);
	for (;;) {
		size_t n;
		uint64_t lost;

		while (!la.len && !la.stopping)
			pthread_cond_wait(&la.more, &la.lock);
		if (!la.len) {
			pthread_cond_broadcast(&la.drained);
			break;
		}
		n = ring_take(chunk, sizeof(chunk));
		lost = la.dropped - la.dropped_reported;
		la.dropped_reported = la.dropped;
		la.writing = 1;
		pthread_mutex_unlock(&la.lock);
		write_all(chunk, n);
		if (lost) {
			int k = snprintf(note, sizeof(note),
					 "log: %llu lines dropped (log writer behind)\n",
					 (unsigned long long)lost);
			write_all(note, (size_t)k);
		}
		pthread_mutex_lock(&la.lock);
		la.writing = 0;
		if (!la.len)
			pthread_cond_broadcast(&la.drained);
	}
	pthread_mutex_unlock(&la.lock);
	return NULL;
}

int log_async_start(size_t ring_bytes)
{
	char *ring;
	int rc;

	if (la.running)
		return 0;
	if (ring_bytes < 2 * WRITE_CHUNK)
		ring_bytes = 2 * WRITE_CHUNK;
	ring = malloc(ring_bytes);
	if (!ring)
		return -ENOMEM;
	memset(ring, 0, ring_bytes);   /* resident now, not at the first line */
	pthread_cond_init(&la.more, NULL);
	fm_cond_init_mono(&la.drained);
	la.ring = ring;
	la.cap = ring_bytes;
	la.head = la.len = 0;
	la.stopping = 0;
	rc = pthread_create(&la.thread, NULL, writer_main, NULL);
	if (rc) {
		free(ring);
		la.ring = NULL;
		return -rc;
	}
	la.running = 1;
	log_set_sink(async_sink);
	return 0;
}

void log_async_stop(unsigned wait_ms)
{
	struct timespec until;
	int stuck;

	if (!la.running)
		return;
	until = fm_mono_abstime_in_ms(wait_ms);
	pthread_mutex_lock(&la.lock);
	la.stopping = 1;
	pthread_cond_signal(&la.more);
	while ((la.len || la.writing) &&
	       pthread_cond_timedwait(&la.drained, &la.lock, &until) == 0)
		;
	stuck = la.len || la.writing;
	pthread_mutex_unlock(&la.lock);
	log_set_sink(NULL);
	if (stuck)
		return;   /* the writer waits in write(2): leave it, lose the rest */
	pthread_join(la.thread, NULL);
	la.running = 0;
	free(la.ring);
	la.ring = NULL;
}

uint64_t log_async_dropped(void)
{
	uint64_t n;

	pthread_mutex_lock(&la.lock);
	n = la.dropped;
	pthread_mutex_unlock(&la.lock);
	return n;
}
