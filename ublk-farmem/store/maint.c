/* maint.c — the background thread: server liveness, repair, moving
 * copies servers asked back (evacuate.c), cleaning.
 *
 * One thread does all three so cleaner and repair never act on the same
 * segment at once; both work only on sealed (immutable) segments.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "internal.h"

#define MAINT_PERIOD_MS   200
#define RECONNECT_MS      1000
#define MAX_STEPS_PER_RUN 64   /* stay responsive to stop requests */

/* Servers never reached get a connect attempt now and then (the
 * transport reconnects on its own only after a first success); connected
 * ones are asked whether they are up, which also lifts a mark-down made
 * after a request error once the transport has reconnected. */
static void servers_check(struct store *s)
{
	for (int i = 0; i < s->nservers; i++) {
		struct store_server *v = &s->srv[i];
		int up;

		if (!srv_conn(v)) {
			if (fm_mono_ns() < v->retry_ns)
				continue;
			v->retry_ns = fm_mono_ns() + RECONNECT_MS * 1000000ull;
			if (server_connect(s, i) == 0)
				log_info("server %s: connected", v->addr);
			continue;
		}
		up = fm_conn_is_up(srv_conn(v)) ? 1 : 0;
		if (__atomic_exchange_n(&v->up, up, __ATOMIC_ACQ_REL) != up)
			log_info("server %s: %s", v->addr, up ? "back up" : "down");
		if (!up)
			__atomic_store_n(&v->need_sweep, 1, __ATOMIC_RELEASE);
		else if (__atomic_exchange_n(&v->need_sweep, 0, __ATOMIC_ACQ_REL) &&
			 sweep_server(s, i) < 0)
			__atomic_store_n(&v->need_sweep, 1, __ATOMIC_RELEASE);
	}
}

/* store_close() is waiting: leave the rest for the next daemon. */
static int stopping(struct store *s)
{
	int stop;

	pthread_mutex_lock(&s->maint_lock);
	stop = s->maint_stop;
	pthread_mutex_unlock(&s->maint_lock);
	return stop;
}

int store_maintain(struct store *s)
{
	int done = 0, n;

	pthread_mutex_lock(&s->maint_run);
	servers_check(s);
	repair_seal_degraded(s);
	for (int i = 0; i < MAX_STEPS_PER_RUN && !stopping(s) && (n = repair_run(s)) > 0; i++)
		done += n;
	if (done) {
		struct store_stats st;

		store_get_stats(s, &st);
		log_info("store: re-replicated %d segment(s); %llu still short of %d copies",
			 done, (unsigned long long)st.degraded_segments, s->replicas);
	}
	/* Copies a server asked back (NOTICE): before cleaning, which would
	 * only add to what has to move. */
	for (int i = 0; i < MAX_STEPS_PER_RUN && !stopping(s) && (n = evacuate_run(s)) > 0; i++)
		done += n;
	for (int i = 0; i < MAX_STEPS_PER_RUN && !stopping(s) && (n = cleaner_run(s)) > 0; i++)
		done += n;
	pthread_mutex_unlock(&s->maint_run);
	return done;
}

static void *maint_main(void *arg)
{
	struct store *s = arg;

	for (;;) {
		struct timespec ts;
		int stop;

		pthread_mutex_lock(&s->maint_lock);
		if (!s->maint_kick && !s->maint_stop) {
			ts = fm_mono_abstime_in_ms(MAINT_PERIOD_MS);
			pthread_cond_timedwait(&s->maint_cv, &s->maint_lock, &ts);
		}
		s->maint_kick = 0;
		stop = s->maint_stop;
		pthread_mutex_unlock(&s->maint_lock);
		if (stop)
			break;
		/* More work left: go round again at once. */
		if (store_maintain(s) > 0)
			maint_kick(s);
	}
	return NULL;
}

int maint_start(struct store *s)
{
	int rc;

	s->maint_stop = 0;
	rc = pthread_create(&s->maint, NULL, maint_main, s);
	if (rc)
		return -rc;
	s->maint_running = 1;
	return 0;
}

void maint_stop(struct store *s)
{
	if (!s->maint_running)
		return;
	pthread_mutex_lock(&s->maint_lock);
	s->maint_stop = 1;
	pthread_cond_signal(&s->maint_cv);
	pthread_mutex_unlock(&s->maint_lock);
	pthread_join(s->maint, NULL);
	s->maint_running = 0;
}
