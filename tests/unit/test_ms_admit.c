/* test_fm_admit.c — who may start a handshake: a cap per source address
 * (IPv4 address, IPv6 /64) and in all; refused newcomers take nothing. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "memserver/memserver.h"
#include "tap.h"

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	inet_pton(AF_INET, ip, &s->sin_addr);
	return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin6_family = AF_INET6;
	inet_pton(AF_INET6, ip, &s->sin6_addr);
	return ss;
}

#define SA(x) ((struct sockaddr *)&(x))

static int t_per_source_cap(void)
{
	struct fm_admit a;
	struct sockaddr_storage flood = v4("127.0.0.2", 1000), other = v4("127.0.0.1", 5);

	CHECK(fm_admit_init(&a, 100, 4) == 0);
	for (int i = 0; i < 4; i++) {
		flood = v4("127.0.0.2", (uint16_t)(1000 + i));   /* port does not matter */
		CHECK(fm_admit_take(&a, SA(flood)) == 0);
	}
	CHECK(fm_admit_take(&a, SA(flood)) == -EBUSY);
	CHECK(fm_admit_source_count(&a, SA(flood)) == 4);
	/* Another source is not affected. */
	CHECK(fm_admit_take(&a, SA(other)) == 0);
	CHECK(a.total == 5);
	/* One handshake ends: that source may start one more. */
	fm_admit_put(&a, SA(flood));
	CHECK(fm_admit_take(&a, SA(flood)) == 0);
	fm_admit_fini(&a);
	return 0;
}

static int t_global_cap(void)
{
	struct fm_admit a;
	char ip[32];

	CHECK(fm_admit_init(&a, 8, 2) == 0);
	for (int i = 0; i < 8; i++) {
		struct sockaddr_storage s;

		snprintf(ip, sizeof(ip), "10.0.0.%d", i + 1);
		s = v4(ip, 1);
		CHECK(fm_admit_take(&a, SA(s)) == 0);
	}
	struct sockaddr_storage late = v4("10.0.1.1", 1), first = v4("10.0.0.1", 1);

	CHECK(fm_admit_take(&a, SA(late)) == -EAGAIN);
	CHECK(a.total == 8);
	fm_admit_put(&a, SA(first));
	CHECK(fm_admit_take(&a, SA(late)) == 0);
	fm_admit_fini(&a);
	return 0;
}

/* IPv6 peers count per /64; a v4-mapped address counts as its IPv4. */
static int t_v6_prefix_and_mapped(void)
{
	struct fm_admit a;
	struct sockaddr_storage x = v6("2001:db8:1:2::1"), y = v6("2001:db8:1:2:ffff::9"),
				z = v6("2001:db8:1:3::1"), m = v6("::ffff:192.0.2.7"),
				p = v4("192.0.2.7", 9);

	CHECK(fm_admit_init(&a, 16, 2) == 0);
	CHECK(fm_admit_take(&a, SA(x)) == 0);
	CHECK(fm_admit_take(&a, SA(y)) == 0);
	CHECK(fm_admit_take(&a, SA(x)) == -EBUSY);   /* same /64 */
	CHECK(fm_admit_take(&a, SA(z)) == 0);        /* next /64 */
	CHECK(fm_admit_take(&a, SA(m)) == 0);
	CHECK(fm_admit_take(&a, SA(p)) == 0);
	CHECK(fm_admit_take(&a, SA(p)) == -EBUSY);   /* mapped and plain: one source */
	fm_admit_fini(&a);
	return 0;
}

/* Many sources in and out (colliding probe runs, deletions in the
 * middle): every count stays exact and the table never leaks a slot. */
static int t_churn(void)
{
	struct fm_admit a;
	char ip[32];

	CHECK(fm_admit_init(&a, 64, 3) == 0);
	for (int round = 0; round < 50; round++) {
		for (int i = 0; i < 64; i++) {
			struct sockaddr_storage s;

			snprintf(ip, sizeof(ip), "10.%d.%d.1", round % 7, i % 21);
			s = v4(ip, 1);
			if (fm_admit_source_count(&a, SA(s)) < 3)
				CHECK(fm_admit_take(&a, SA(s)) == 0);
			else
				CHECK(fm_admit_take(&a, SA(s)) == -EBUSY);
		}
		for (int i = 63; i >= 0; i -= 2) {
			struct sockaddr_storage s;

			snprintf(ip, sizeof(ip), "10.%d.%d.1", round % 7, i % 21);
			s = v4(ip, 1);
			fm_admit_put(&a, SA(s));
		}
		/* Give everything back. */
		for (int i = 0; i < 64 * 3 && a.total; i++) {
			struct sockaddr_storage s;

			snprintf(ip, sizeof(ip), "10.%d.%d.1", round % 7, i % 21);
			s = v4(ip, 1);
			while (fm_admit_source_count(&a, SA(s)))
				fm_admit_put(&a, SA(s));
		}
		CHECK(a.total == 0);
		for (unsigned i = 0; i < a.nslots; i++) {
			struct sockaddr_storage s;

			snprintf(ip, sizeof(ip), "10.%d.%u.1", round % 7, i % 21);
			s = v4(ip, 1);
			CHECK(fm_admit_source_count(&a, SA(s)) == 0);
		}
	}
	fm_admit_fini(&a);
	return 0;
}

static int t_bad_limits(void)
{
	struct fm_admit a;

	CHECK(fm_admit_init(&a, 0, 1) == -EINVAL);
	CHECK(fm_admit_init(&a, 1, 0) == -EINVAL);
	return 0;
}

/* The keys behind the caps: defaults, range, the cross-key rule, and
 * messages naming the flag, the key and the value. */
static int t_settings(void)
{
	struct ms_settings s;
	struct ms_resolved r;
	struct fm_secret secret;
	char err[CFG_ERR_LEN] = "";

	ms_settings_defaults(&s);
	CHECK(s.handshake_ms == 10000 && s.idle_ms == 0);
	CHECK(s.max_handshakes == 256 && s.max_handshakes_per_source == 32);
	CHECK(s.allow_shared_rkey == 0);
	CHECK(ms_settings_set(&s, "memserver:handshake-timeout", "50ms",
			      "--handshake-timeout", err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "--handshake-timeout") && strstr(err, "50ms"));
	CHECK(ms_settings_set(&s, "memserver:allow-shared-rkey", "yes",
			      "--allow-shared-rkey", err, sizeof(err)) == 0);
	CHECK(s.allow_shared_rkey == 1);
	CHECK(ms_settings_set(&s, "memserver:listen", "tcp://127.0.0.1:1", "--listen",
			      err, sizeof(err)) == 0);
	CHECK(ms_settings_set(&s, "memserver:size", "64M", "--size", err, sizeof(err)) == 0);
	CHECK(ms_settings_set(&s, "memserver:max-handshakes", "8", "--max-handshakes",
			      err, sizeof(err)) == 0);
	CHECK(ms_settings_set(&s, "memserver:max-handshakes-per-source", "9",
			      "--max-handshakes-per-source", err, sizeof(err)) == 0);
	CHECK(ms_settings_complete(&s, &r, &secret, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "--max-handshakes-per-source") && strstr(err, "'9'") &&
	      strstr(err, "above max-handshakes (8)"));
	return 0;
}

static const struct tap_case cases[] = {
	{ "settings: defaults, ranges, per-source at most the total", t_settings },
	{ "one source: refused past its cap, others unaffected", t_per_source_cap },
	{ "all sources: refused past the global cap", t_global_cap },
	{ "IPv6 counted per /64, v4-mapped as IPv4", t_v6_prefix_and_mapped },
	{ "churn: counts exact, table clean after", t_churn },
	{ "zero caps are refused", t_bad_limits },
};

TAP_MAIN(cases)
