/* limits.c — the listener bounds' defaults (see memserver.h). */
#include "memserver.h"

void ms_limits_defaults(struct ms_limits *l)
{
	l->handshake_ms = MS_HANDSHAKE_MS_DEFAULT;
	l->idle_ms = 0;
	l->max_handshakes = MS_MAX_HANDSHAKES_DEFAULT;
	l->max_handshakes_per_source = MS_MAX_HANDSHAKES_PER_SOURCE_DEFAULT;
	l->allow_shared_rkey = 0;
}
