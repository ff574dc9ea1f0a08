/* sdnotify.h — tell systemd about service state without libsystemd.
 *
 * With Type=notify, systemd starts the unit's dependents only once the
 * daemon says READY=1 (for the memserver: once it listens, so a client
 * started after it can connect at once).  Outside systemd NOTIFY_SOCKET
 * is unset and these calls do nothing.
 */
#ifndef FARMEM_SDNOTIFY_H
#define FARMEM_SDNOTIFY_H

/* Sends one state string ("READY=1", "STOPPING=1", "STATUS=...") to
 * $NOTIFY_SOCKET.  Returns 1 if sent, 0 if not running under a notify
 * socket, -errno on failure (the caller may ignore it: systemd then times
 * the start out, which is the right outcome for a daemon that cannot
 * report). */
int sd_notify_state(const char *state);

#endif
