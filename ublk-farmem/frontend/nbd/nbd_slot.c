/* nbd_slot.c — connection slots: each owns `workers` worker fibers with
 * their own backend queue and buffers, created once at server start so a
 * new connection costs no allocation. */
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

static int worker_init(struct nbd_slot *slot, struct nbd_worker *w, int queue)
{
	size_t bufsz = slot->srv->p.max_block + 2 * PAGE;

	w->slot = slot;
	w->queue = queue;
	if (posix_memalign((void **)&w->buf, PAGE, bufsz) ||
	    posix_memalign((void **)&w->page, PAGE, PAGE)) {
		log_err("nbd: worker buffers (%zu bytes) for queue %d: out of memory",
			bufsz, queue);
		return -ENOMEM;
	}
	return 0;
}

static void slot_fini(struct nbd_slot *slot)
{
	for (int i = 0; slot->workers && i < slot->srv->p.workers; i++) {
		free(slot->workers[i].buf);
		free(slot->workers[i].page);
	}
	free(slot->workers);
	slot->workers = NULL;
	free(slot->pend);
	free(slot->pend_w);
	free(slot->rbuf);
	slot->pend = NULL;
	slot->pend_w = NULL;
	slot->rbuf = NULL;
	fm_loop_destroy(slot->loop);
	slot->loop = NULL;
	fm_mutex_destroy(&slot->send_lock);
	fm_mutex_destroy(&slot->read_lock);
}

static int slot_init(struct nbd_server *srv, struct nbd_slot *slot, int index)
{
	struct fm_loop_params lp = {
		.fibers = (unsigned)(srv->p.workers + srv->be.extra_fibers),
	};
	int n = srv->p.workers, rc;

	slot->srv = srv;
	slot->index = index;
	slot->io = NULL;
	/* Only the slot's worker fibers take these. */
	fm_mutex_init_one_loop(&slot->send_lock);
	fm_mutex_init_one_loop(&slot->read_lock);
	rc = fm_loop_create(&lp, &slot->loop);
	if (rc < 0)
		log_err("nbd: slot %d: %d worker fibers: %s", index, n, strerror(-rc));
	slot->workers = calloc((size_t)n, sizeof(*slot->workers));
	slot->pend = calloc(2 * (size_t)n, sizeof(*slot->pend));
	slot->pend_w = calloc((size_t)n, sizeof(*slot->pend_w));
	slot->rbuf = malloc(NBD_READ_AHEAD);
	if (rc == 0 && (!slot->workers || !slot->pend || !slot->pend_w || !slot->rbuf))
		rc = -ENOMEM;
	for (int i = 0; i < n && rc == 0; i++)
		rc = worker_init(slot, &slot->workers[i], index * n + i);
	if (rc < 0)
		slot_fini(slot);
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
				slot_fini(&srv->slots[j]);
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
		slot_fini(&srv->slots[i]);
	free(srv->slots);
	srv->slots = NULL;
}
