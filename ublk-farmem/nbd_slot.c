/* nbd_slot.c — connection slots: each owns `workers` worker threads with
 * their own backend queue and buffers, created once at server start so a
 * new connection costs no allocation and no thread start. */
#include "nbd_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define PAGE 4096u

struct nbd_slot *nbd_slot_claim(struct nbd_server *srv)
{
	struct nbd_slot *found = NULL;

	pthread_mutex_lock(&srv->lock);
	for (int i = 0; i < srv->p.max_conns && !found; i++) {
		if (!srv->slots[i].in_use) {
			found = &srv->slots[i];
			found->in_use = 1;
		}
	}
	pthread_mutex_unlock(&srv->lock);
	return found;
}

void nbd_slot_release(struct nbd_slot *slot)
{
	pthread_mutex_lock(&slot->srv->lock);
	slot->in_use = 0;
	pthread_mutex_unlock(&slot->srv->lock);
}

/* Idle until the slot gets a connection, serve it, repeat. */
static void *worker_main(void *arg)
{
	struct nbd_worker *w = arg;
	struct nbd_slot *slot = w->slot;
	unsigned seen = 0;

	for (;;) {
		pthread_mutex_lock(&slot->lock);
		while (slot->gen == seen && !slot->quit)
			pthread_cond_wait(&slot->wake, &slot->lock);
		if (slot->quit) {
			pthread_mutex_unlock(&slot->lock);
			return NULL;
		}
		seen = slot->gen;
		pthread_mutex_unlock(&slot->lock);

		nbd_worker_serve(w);

		pthread_mutex_lock(&slot->lock);
		if (--slot->active == 0)
			pthread_cond_signal(&slot->done);
		pthread_mutex_unlock(&slot->lock);
	}
}

static int worker_init(struct nbd_slot *slot, struct nbd_worker *w, int queue)
{
	size_t bufsz = slot->srv->p.max_block + 2 * PAGE;
	int rc;

	w->slot = slot;
	w->queue = queue;
	if (posix_memalign((void **)&w->buf, PAGE, bufsz) ||
	    posix_memalign((void **)&w->page, PAGE, PAGE)) {
		log_err("nbd: worker buffers (%zu bytes) for queue %d: out of memory",
			bufsz, queue);
		return -ENOMEM;
	}
	rc = pthread_create(&w->thread, &slot->srv->thread_attr, worker_main, w);
	if (rc) {
		log_err("nbd: queue %d: cannot start worker thread: %s", queue,
			strerror(rc));
		return -rc;
	}
	return 0;
}

static void slot_stop(struct nbd_slot *slot, int nstarted)
{
	pthread_mutex_lock(&slot->lock);
	slot->quit = 1;
	pthread_cond_broadcast(&slot->wake);
	pthread_mutex_unlock(&slot->lock);
	for (int i = 0; i < nstarted; i++)
		pthread_join(slot->workers[i].thread, NULL);
	for (int i = 0; i < slot->srv->p.workers; i++) {
		free(slot->workers[i].buf);
		free(slot->workers[i].page);
	}
	free(slot->workers);
	slot->workers = NULL;
	pthread_mutex_destroy(&slot->lock);
	pthread_mutex_destroy(&slot->send_lock);
	pthread_mutex_destroy(&slot->read_lock);
	pthread_cond_destroy(&slot->wake);
	pthread_cond_destroy(&slot->done);
}

static int slot_init(struct nbd_server *srv, struct nbd_slot *slot, int index)
{
	int n = srv->p.workers, rc = 0, started = 0;

	slot->srv = srv;
	slot->index = index;
	slot->fd = -1;
	pthread_mutex_init(&slot->lock, NULL);
	pthread_mutex_init(&slot->send_lock, NULL);
	pthread_mutex_init(&slot->read_lock, NULL);
	pthread_cond_init(&slot->wake, NULL);
	pthread_cond_init(&slot->done, NULL);
	slot->workers = calloc((size_t)n, sizeof(*slot->workers));
	if (!slot->workers)
		rc = -ENOMEM;
	for (int i = 0; i < n && rc == 0; i++) {
		rc = worker_init(slot, &slot->workers[i], index * n + i);
		started += rc == 0;
	}
	if (rc < 0 && slot->workers)
		slot_stop(slot, started);
	return rc;
}

int nbd_slots_create(struct nbd_server *srv)
{
	int rc = 0;

	srv->slots = calloc((size_t)srv->p.max_conns, sizeof(*srv->slots));
	if (!srv->slots)
		return -ENOMEM;
	for (int i = 0; i < srv->p.max_conns; i++) {
		rc = slot_init(srv, &srv->slots[i], i);
		if (rc < 0) {
			for (int j = 0; j < i; j++)
				slot_stop(&srv->slots[j], srv->p.workers);
			free(srv->slots);
			srv->slots = NULL;
			return rc;
		}
	}
	return 0;
}

void nbd_slots_destroy(struct nbd_server *srv)
{
	if (!srv->slots)
		return;
	for (int i = 0; i < srv->p.max_conns; i++)
		slot_stop(&srv->slots[i], srv->p.workers);
	free(srv->slots);
	srv->slots = NULL;
}
