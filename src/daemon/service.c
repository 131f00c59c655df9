/*
 * service.c - sd_notify() readiness for Type=notify units.
 *
 * A failure to notify is a warning, not an error: the mount is served
 * either way, and systemd's own start timeout reports a unit that never
 * said READY=1.
 */
#include <string.h>

#include "log.h"
#include "service.h"

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>

/* sd_notify*() return 0 without NOTIFY_SOCKET: nobody asked, nothing to say. */
static void warn_if_failed(int ret, const char *what)
{
	if (ret < 0)
		log_warning("cannot tell the service manager %s: %s", what, strerror(-ret));
}

void service_notify_ready(const char *whom, const char *store, const char *mountpoint)
{
	warn_if_failed(sd_notifyf(0, "READY=1\nSTATUS=serving %s of %s on %s", whom, store,
				  mountpoint),
		       "the mount is ready");
}

void service_notify_stopping(void)
{
	warn_if_failed(sd_notify(0, "STOPPING=1\nSTATUS=unmounting"), "the daemon is stopping");
}

void service_notify_reloading(bool done)
{
	warn_if_failed(sd_notify(0, done ? "READY=1\nSTATUS=reloaded" : "RELOADING=1"),
		       done ? "the reload is done" : "the daemon is reloading");
}

#else

void service_notify_ready(const char *whom, const char *store, const char *mountpoint)
{
}

void service_notify_stopping(void)
{
}

void service_notify_reloading(bool done)
{
}

#endif
