/* sd_notify_recv.c — stand in for systemd's notify socket in tests.
 *
 * usage: sd_notify_recv SOCKET_PATH SECONDS
 * Binds a datagram socket at SOCKET_PATH, prints every message received,
 * and exits 0 as soon as one contains the line READY=1; exits 1 when
 * SECONDS pass without it.  Run it, wait for SOCKET_PATH to exist, then
 * start the daemon with NOTIFY_SOCKET=SOCKET_PATH.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int has_ready_line(const char *msg)
{
	for (const char *p = msg; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, "READY=1", 7) == 0 && (p[7] == '\n' || p[7] == '\0'))
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char msg[4097];
	long long deadline;
	int fd;

	if (argc != 3 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "usage: sd_notify_recv SOCKET_PATH SECONDS\n");
		return 2;
	}
	deadline = now_ms() + atol(argv[2]) * 1000LL;
	strcpy(sa.sun_path, argv[1]);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "sd_notify_recv: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	for (;;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		long long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0 || poll(&pf, 1, (int)left) == 0) {
			fprintf(stderr, "sd_notify_recv: no READY=1 within %s s\n", argv[2]);
			return 1;
		}
		n = recv(fd, msg, sizeof(msg) - 1, 0);
		if (n < 0)
			continue;
		msg[n] = '\0';
		printf("%s\n", msg);
		fflush(stdout);
		if (has_ready_line(msg))
			return 0;
	}
}
