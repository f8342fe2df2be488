/*
 * wdmd_shim.c - an LD_PRELOAD library that lets the real wdmd (sanlock's
 * watchdog multiplexing daemon, Debian's sanlock 3.8.5) run with no watchdog
 * device and without touching the system, and lets its clients find it.
 *
 * It owns three redirections and one fake device, all under one test
 * directory named by WDMD_SHIM_DIR (unset: the library does nothing):
 *
 *   /run/wdmd/..., /var/run/wdmd/...  ->  DIR/run/...      (socket, pid file)
 *   shm_open("/NAME"), shm_unlink     ->  DIR/shm/NAME     (the "/wdmd" marker)
 *   /leased-wdmd-shim/watchdog        ->  DIR/watchdog     a regular file that answers
 *                                      the watchdog ioctls like a device (give
 *                                      wdmd this short path with -w: wdmd 3.8.5
 *                                      cuts its -w argument at 63 characters)
 *   /dev/watchdog*                     refused (ENOENT), so a shimmed wdmd can
 *                                      never fall back to the host's device
 *   syslog()                          ->  DIR/syslog.log   (no /dev/log here: glibc
 *                                      would write to /dev/console)
 *
 * Every process that talks to that wdmd (sanlock, the leased daemon) runs
 * under the same library and environment, so its connect() to
 * /run/wdmd/wdmd.sock lands on DIR/run/wdmd.sock.
 *
 * The fake device behaves like the kernel's watchdog_dev: open starts the
 * timer, WDIOC_KEEPALIVE, WDIOC_SETTIMEOUT and any write ping it, a write
 * containing 'V' arms the magic close, and a close without it leaves the
 * timer running.  The library keeps no timer itself: it writes one line per
 * event to DIR/watchdog.log (O_APPEND, one write() per line, so lines from
 * several processes never interleave):
 *
 *   <CLOCK_MONOTONIC seconds.nanoseconds> <pid> <event> [<value>]
 *
 *   open                      the device was opened (the timer starts)
 *   gettimeout <s>            WDIOC_GETTIMEOUT answered <s>
 *   settimeout <s>            WDIOC_SETTIMEOUT set <s> (and pinged)
 *   keepalive                 WDIOC_KEEPALIVE
 *   write <n>                 a write of <n> bytes without 'V' (a ping)
 *   magic <n>                 a write of <n> bytes with 'V' (a ping that arms the magic close)
 *   disable / enable          WDIOC_SETOPTIONS WDIOS_DISABLECARD / ENABLECARD
 *   close clean | unclean     close() after / without the magic
 *
 * A process that dies with the device open (SIGKILL) leaves no close line:
 * the kernel would treat that as an unclean close, and so does the model in
 * leased/torture/wdmd.py, which turns the log into "when would the host have
 * been reset".
 *
 * WDMD_SHIM_TIMEOUT (default 60) is the timeout the fake device
 * reports before anyone sets one, per process.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/watchdog.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define MAX_WATCHDOG_FDS 4096
#define VIRTUAL_DEVICE "/leased-wdmd-shim/watchdog"

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_open_2)(const char *, int);
static int (*real_open64_2)(const char *, int);
static int (*real_stat)(const char *restrict, struct stat *restrict);
static int (*real_lstat)(const char *restrict, struct stat *restrict);
static int (*real_stat64)(const char *restrict, struct stat64 *restrict);
static int (*real_lstat64)(const char *restrict, struct stat64 *restrict);
static int (*real_access)(const char *, int);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_unlink)(const char *);
static int (*real_chmod)(const char *, mode_t);
static int (*real_chown)(const char *, uid_t, gid_t);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_ioctl)(int, unsigned long, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_close)(int);

static int active;                 /* WDMD_SHIM_DIR is set */
static char shim_dir[PATH_MAX];
static char device_path[PATH_MAX];
static char log_path[PATH_MAX];
static char shm_dir[PATH_MAX];
static char syslog_path[PATH_MAX];
static int device_timeout = 60;
/* 0: not the fake device; 1: open, no magic; 2: open, magic written last */
static unsigned char watchdog_fds[MAX_WATCHDOG_FDS];

#define LOOKUP(name) real_##name = dlsym(RTLD_NEXT, #name)

__attribute__((constructor)) static void shim_init(void)
{
	LOOKUP(open);
	LOOKUP(open64);
	LOOKUP(openat);
	LOOKUP(openat64);
	real_open_2 = dlsym(RTLD_NEXT, "__open_2");
	real_open64_2 = dlsym(RTLD_NEXT, "__open64_2");
	LOOKUP(stat);
	LOOKUP(lstat);
	LOOKUP(stat64);
	LOOKUP(lstat64);
	LOOKUP(access);
	LOOKUP(mkdir);
	LOOKUP(unlink);
	LOOKUP(chmod);
	LOOKUP(chown);
	LOOKUP(bind);
	LOOKUP(connect);
	LOOKUP(ioctl);
	LOOKUP(write);
	LOOKUP(close);

	const char *dir = getenv("WDMD_SHIM_DIR");
	if (!dir || !*dir || strlen(dir) > PATH_MAX - 64)
		return;
	snprintf(shim_dir, sizeof(shim_dir), "%s", dir);
	snprintf(device_path, sizeof(device_path), "%s/watchdog", dir);
	snprintf(log_path, sizeof(log_path), "%s/watchdog.log", dir);
	snprintf(shm_dir, sizeof(shm_dir), "%s/shm", dir);
	snprintf(syslog_path, sizeof(syslog_path), "%s/syslog.log", dir);
	const char *timeout = getenv("WDMD_SHIM_TIMEOUT");
	if (timeout && atoi(timeout) > 0)
		device_timeout = atoi(timeout);
	active = 1;

	/* Say so: the driver starts wdmd only once a probe process has left this mark,
	 * since a preload that silently failed would let wdmd take a real /dev/watchdog. */
	char loaded[PATH_MAX + 16];
	snprintf(loaded, sizeof(loaded), "%s/shim-loaded", dir);
	int fd = real_open(loaded, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0)
		real_close(fd);
}

/* ---------------------------------------------------------------- paths */

static int has_prefix(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/*
 * The path the call should really use: PATH itself, or its redirection
 * written into BUF.  A path too long for BUF becomes one that cannot exist.
 */
static const char *redirect(const char *path, char *buf, size_t size)
{
	static const char *const run_dirs[] = {"/run/wdmd", "/var/run/wdmd"};
	if (!active || !path)
		return path;
	for (size_t i = 0; i < sizeof(run_dirs) / sizeof(run_dirs[0]); i++) {
		if (has_prefix(path, run_dirs[i])) {
			int n = snprintf(buf, size, "%s/run%s", shim_dir, path + strlen(run_dirs[i]));
			return (n > 0 && (size_t)n < size) ? buf : "/nonexistent/leased-wdmd-shim/too-long";
		}
	}
	if (strcmp(path, VIRTUAL_DEVICE) == 0)
		return device_path;
	if (strncmp(path, "/dev/watchdog", 13) == 0)
		return "/nonexistent/leased-wdmd-shim/no-real-watchdog";
	return path;
}

static int is_device(const char *path)
{
	return active && path && (strcmp(path, VIRTUAL_DEVICE) == 0 || strcmp(path, device_path) == 0);
}

/* ---------------------------------------------------------------- log */

static void log_event(const char *event, long value, int with_value)
{
	struct timespec ts;
	char line[128];
	int n, fd;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (with_value)
		n = snprintf(line, sizeof(line), "%lld.%09ld %d %s %ld\n", (long long)ts.tv_sec, ts.tv_nsec,
			     (int)getpid(), event, value);
	else
		n = snprintf(line, sizeof(line), "%lld.%09ld %d %s\n", (long long)ts.tv_sec, ts.tv_nsec,
			     (int)getpid(), event);
	fd = real_open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (real_write(fd, line, (size_t)n) < 0) {
		/* nothing to do: the log is the only channel */
	}
	real_close(fd);
}

static int track_device(int fd)
{
	if (fd >= 0 && fd < MAX_WATCHDOG_FDS) {
		watchdog_fds[fd] = 1;
		log_event("open", 0, 0);
	}
	return fd;
}

static int is_watchdog_fd(int fd)
{
	return active && fd >= 0 && fd < MAX_WATCHDOG_FDS && watchdog_fds[fd];
}

/* ---------------------------------------------------------------- open */

static int needs_mode(int flags)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

static int open_common(int (*real)(const char *, int, ...), const char *path, int flags, mode_t mode)
{
	char buf[PATH_MAX];
	int fd = real(redirect(path, buf, sizeof(buf)), flags, mode);
	return is_device(path) ? track_device(fd) : fd;
}

#define MODE_ARG(flags, mode)                  \
	do {                                   \
		if (needs_mode(flags)) {       \
			va_list ap;            \
			va_start(ap, flags);   \
			mode = va_arg(ap, int); \
			va_end(ap);            \
		}                              \
	} while (0)

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	MODE_ARG(flags, mode);
	return open_common(real_open, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	MODE_ARG(flags, mode);
	return open_common(real_open64, path, flags, mode);
}

int __open_2(const char *path, int flags)
{
	return open_common(real_open, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
	return open_common(real_open64, path, flags, 0);
}

static int openat_common(int (*real)(int, const char *, int, ...), int dirfd, const char *path, int flags,
			 mode_t mode)
{
	char buf[PATH_MAX];
	int fd = real(dirfd, redirect(path, buf, sizeof(buf)), flags, mode);
	return is_device(path) ? track_device(fd) : fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	MODE_ARG(flags, mode);
	return openat_common(real_openat, dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	MODE_ARG(flags, mode);
	return openat_common(real_openat64, dirfd, path, flags, mode);
}

/* ---------------------------------------------------------------- paths, plain */

int stat(const char *restrict path, struct stat *restrict st)
{
	char buf[PATH_MAX];
	return real_stat(redirect(path, buf, sizeof(buf)), st);
}

int lstat(const char *restrict path, struct stat *restrict st)
{
	char buf[PATH_MAX];
	return real_lstat(redirect(path, buf, sizeof(buf)), st);
}

int stat64(const char *restrict path, struct stat64 *restrict st)
{
	char buf[PATH_MAX];
	return real_stat64(redirect(path, buf, sizeof(buf)), st);
}

int lstat64(const char *restrict path, struct stat64 *restrict st)
{
	char buf[PATH_MAX];
	return real_lstat64(redirect(path, buf, sizeof(buf)), st);
}

int access(const char *path, int how)
{
	char buf[PATH_MAX];
	return real_access(redirect(path, buf, sizeof(buf)), how);
}

int mkdir(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	return real_mkdir(redirect(path, buf, sizeof(buf)), mode);
}

int unlink(const char *path)
{
	char buf[PATH_MAX];
	return real_unlink(redirect(path, buf, sizeof(buf)));
}

int chmod(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	return real_chmod(redirect(path, buf, sizeof(buf)), mode);
}

int chown(const char *path, uid_t uid, gid_t gid)
{
	char buf[PATH_MAX];
	return real_chown(redirect(path, buf, sizeof(buf)), uid, gid);
}

/* ---------------------------------------------------------------- shm */

static int shm_path(const char *name, char *buf, size_t size)
{
	int n;

	while (*name == '/')
		name++;
	if (!*name || strchr(name, '/')) {
		errno = EINVAL;
		return -1;
	}
	if (real_mkdir(shm_dir, 0755) < 0 && errno != EEXIST)
		return -1;
	n = snprintf(buf, size, "%s/%s", shm_dir, name);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int shm_open(const char *name, int flags, mode_t mode)
{
	char buf[PATH_MAX];
	if (!active) {
		int (*real)(const char *, int, mode_t) = dlsym(RTLD_NEXT, "shm_open");
		return real(name, flags, mode);
	}
	if (shm_path(name, buf, sizeof(buf)) < 0)
		return -1;
	return real_open(buf, flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

int shm_unlink(const char *name)
{
	char buf[PATH_MAX];
	if (!active) {
		int (*real)(const char *) = dlsym(RTLD_NEXT, "shm_unlink");
		return real(name);
	}
	if (shm_path(name, buf, sizeof(buf)) < 0)
		return -1;
	return real_unlink(buf);
}

/* ---------------------------------------------------------------- sockets */

/* Rewrite an AF_UNIX address under /run/wdmd; 0: use it as given, 1: use OUT, -1: errno set. */
static int redirect_sockaddr(const struct sockaddr *addr, socklen_t len, struct sockaddr_un *out,
			     socklen_t *out_len)
{
	char path[sizeof(out->sun_path) + 1];
	char buf[PATH_MAX];
	const char *target;
	size_t n;

	if (!active || !addr || len <= offsetof(struct sockaddr_un, sun_path) || addr->sa_family != AF_UNIX)
		return 0;
	n = len - offsetof(struct sockaddr_un, sun_path);
	if (n > sizeof(out->sun_path))
		n = sizeof(out->sun_path);
	memcpy(path, ((const struct sockaddr_un *)addr)->sun_path, n);
	path[n] = '\0';
	if (path[0] == '\0') /* abstract namespace */
		return 0;
	target = redirect(path, buf, sizeof(buf));
	if (target == path)
		return 0;
	if (strlen(target) >= sizeof(out->sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memset(out, 0, sizeof(*out));
	out->sun_family = AF_UNIX;
	strcpy(out->sun_path, target);
	*out_len = (socklen_t)sizeof(*out);
	return 1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct sockaddr_un un;
	socklen_t un_len;
	int rv = redirect_sockaddr(addr, len, &un, &un_len);
	if (rv < 0)
		return -1;
	return rv ? real_bind(fd, (struct sockaddr *)&un, un_len) : real_bind(fd, addr, len);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	struct sockaddr_un un;
	socklen_t un_len;
	int rv = redirect_sockaddr(addr, len, &un, &un_len);
	if (rv < 0)
		return -1;
	return rv ? real_connect(fd, (struct sockaddr *)&un, un_len) : real_connect(fd, addr, len);
}

/* ---------------------------------------------------------------- the device */

static int device_ioctl(int fd, unsigned long request, void *arg)
{
	int *value = arg;

	switch (request) {
	case WDIOC_GETSUPPORT: {
		struct watchdog_info info;
		memset(&info, 0, sizeof(info));
		info.options = WDIOF_SETTIMEOUT | WDIOF_KEEPALIVEPING | WDIOF_MAGICCLOSE;
		snprintf((char *)info.identity, sizeof(info.identity), "leased wdmd shim");
		memcpy(arg, &info, sizeof(info));
		return 0;
	}
	case WDIOC_GETSTATUS:
	case WDIOC_GETBOOTSTATUS:
		*value = 0;
		return 0;
	case WDIOC_GETTIMEOUT:
		*value = device_timeout;
		log_event("gettimeout", device_timeout, 1);
		return 0;
	case WDIOC_SETTIMEOUT:
		if (*value < 1 || *value > 65535) {
			errno = EINVAL;
			return -1;
		}
		device_timeout = *value;
		log_event("settimeout", device_timeout, 1);
		return 0;
	case WDIOC_KEEPALIVE:
		log_event("keepalive", 0, 0);
		return 0;
	case WDIOC_SETOPTIONS:
		if (*value & WDIOS_DISABLECARD)
			log_event("disable", 0, 0);
		if (*value & WDIOS_ENABLECARD)
			log_event("enable", 0, 0);
		return 0;
	default:
		(void)fd;
		errno = ENOTTY;
		return -1;
	}
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (is_watchdog_fd(fd))
		return device_ioctl(fd, request, arg);
	return real_ioctl(fd, request, arg);
}

ssize_t write(int fd, const void *data, size_t size)
{
	if (is_watchdog_fd(fd) && size > 0) {
		int magic = memchr(data, 'V', size) != NULL;
		watchdog_fds[fd] = magic ? 2 : 1;
		log_event(magic ? "magic" : "write", (long)size, 1);
		return (ssize_t)size;
	}
	return real_write(fd, data, size);
}

int close(int fd)
{
	if (is_watchdog_fd(fd)) {
		log_event(watchdog_fds[fd] == 2 ? "close clean" : "close unclean", 0, 0);
		watchdog_fds[fd] = 0;
	}
	return real_close(fd);
}

/* ---------------------------------------------------------------- syslog */

static void append_syslog(int priority, const char *format, va_list ap)
{
	char line[1024];
	int n, m, fd;

	n = snprintf(line, sizeof(line), "%d <%d> ", (int)getpid(), priority);
	m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, format, ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (line[n - 1] != '\n')
		line[n++] = '\n';
	fd = real_open(syslog_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	if (real_write(fd, line, (size_t)n) < 0) {
		/* nowhere else to report it */
	}
	real_close(fd);
}

static void forward_syslog(int priority, const char *format, va_list ap)
{
	void (*real)(int, const char *, va_list) = dlsym(RTLD_NEXT, "vsyslog");
	real(priority, format, ap);
}

void vsyslog(int priority, const char *format, va_list ap)
{
	if (active)
		append_syslog(priority, format, ap);
	else
		forward_syslog(priority, format, ap);
}

void __vsyslog_chk(int priority, int flag, const char *format, va_list ap)
{
	(void)flag;
	vsyslog(priority, format, ap);
}

void syslog(int priority, const char *format, ...)
{
	va_list ap;
	va_start(ap, format);
	vsyslog(priority, format, ap);
	va_end(ap);
}

void __syslog_chk(int priority, int flag, const char *format, ...)
{
	va_list ap;
	(void)flag;
	va_start(ap, format);
	vsyslog(priority, format, ap);
	va_end(ap);
}
