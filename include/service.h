/*
 * service.h - telling a service manager (systemd, Type=notify) how the
 * daemon is doing, through sd_notify().  Without NOTIFY_SOCKET in the
 * environment, or in a build without libsystemd, these do nothing: the
 * daemon runs the same under a shell, mount(8) or a test.
 */
#ifndef ARTIFACTFS_SERVICE_H
#define ARTIFACTFS_SERVICE_H

#include <stdbool.h>

/*
 * READY=1 with a STATUS= line naming whom it serves, the store and the mount
 * point.  Call once the mount is served, where -o ready_fd is written.
 */
void service_notify_ready(const char *whom, const char *store, const char *mountpoint);

/* STOPPING=1: the loop has ended and the mount is about to go away. */
void service_notify_stopping(void);

/* RELOADING=1 when a reload starts (SIGHUP), READY=1 again once it is done. */
void service_notify_reloading(bool done);

#endif
