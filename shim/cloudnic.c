/*
 * cloudnic — the CNI executable.
 *
 * A thin shim in front of cloudnic-agent: it reads the network configuration from
 * stdin and the CNI_* environment, opens CNI_NETNS, and forwards all of it (the netns
 * descriptor as SCM_RIGHTS) over a Unix socket in one length-prefixed frame. It relays
 * the agent's stdout/stderr bytes and exit code. The wire format is docs/wire.md.
 *
 * It answers VERSION itself, and prints a CNI error object itself when CNI_COMMAND is
 * wrong (code 4), stdin is too large (code 5) or the agent cannot give a complete answer
 * (code 11 for ADD/DEL/CHECK/GC, 50 for STATUS). Only JSON goes to stdout; diagnostics
 * go to stderr. libc only.
 *
 * The agent's socket: the config's top-level "agentSocket", else CLOUDNIC_AGENT_SOCKET,
 * else /run/cloudnic/agent.sock. Timeouts: CLOUDNIC_CONNECT_TIMEOUT_MS (default 2000),
 * CLOUDNIC_TIMEOUT_MS (default 90000).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define STDIN_MAX (16UL << 20)
#define RESPONSE_MAX (16UL << 20)
#define MAX_TIMEOUT_MS 86400000L
#define DEFAULT_SOCKET "/run/cloudnic/agent.sock"
#define DEFAULT_CONNECT_MS 2000L
#define DEFAULT_TOTAL_MS 90000L
#define DEFAULT_CNI_VERSION "1.1.0"
#define SUPPORTED_VERSIONS "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"
#define SHIM_VERSION "1"
#define MAX_VERSION_LEN 16

extern char **environ;

struct buf {
	unsigned char *p;
	size_t len, cap;
};

/* Everything the process owns lives here, so every exit path can release it. */
static struct {
	const char *command;
	char cni_version[MAX_VERSION_LEN + 1];
	const char *socket_path;
	char config_socket[108]; /* the config's "agentSocket" (sizeof sun_path) */
	char request_id[17];
	struct buf in;       /* stdin */
	struct buf head;     /* request frame up to and including stdin_len */
	unsigned char *body; /* response body */
	int sock;
	int netns_fd;
} g = { .sock = -1, .netns_fd = -1 };

static void release(void)
{
	free(g.in.p);
	free(g.head.p);
	free(g.body);
	g.in.p = g.head.p = g.body = NULL;
	if (g.sock >= 0)
		close(g.sock);
	if (g.netns_fd >= 0)
		close(g.netns_fd);
	g.sock = g.netns_fd = -1;
}

/* ---- output -------------------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				(void)poll(&pfd, 1, 100);
				continue;
			}
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t need;
	uint32_t cp;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		need = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	if (cp >= 0xd800 && cp <= 0xdfff)
		return 0;
	return need;
}

/*
 * JSON-escape s into out (NUL-terminated, truncated to fit). Control bytes become
 * \u00XX, invalid UTF-8 becomes U+FFFD, so the result always parses.
 */
static void json_escape(char *out, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), o = 0;
	for (size_t i = 0; i < n && o + 7 < cap;) {
		unsigned char c = p[i];
		char esc = 0;
		switch (c) {
		case '"': esc = '"'; break;
		case '\\': esc = '\\'; break;
		case '\n': esc = 'n'; break;
		case '\r': esc = 'r'; break;
		case '\t': esc = 't'; break;
		default: break;
		}
		if (esc) {
			out[o++] = '\\';
			out[o++] = esc;
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(out + o, "\\u00", 4);
			out[o + 4] = hex[c >> 4];
			out[o + 5] = hex[c & 15];
			o += 6;
			i++;
		} else if (c < 0x80) {
			out[o++] = (char)c;
			i++;
		} else {
			size_t l = utf8_len(p + i, n - i);
			if (l == 0) {
				memcpy(out + o, "\\ufffd", 6);
				o += 6;
				i++;
			} else {
				memcpy(out + o, p + i, l);
				o += l;
				i += l;
			}
		}
	}
	out[o] = '\0';
}

/* Print a CNI error object on stdout and a diagnostic on stderr, release, exit 1. */
static _Noreturn void fail(int code, const char *msg, const char *details)
{
	char emsg[3072], edet[6144], out[9600], diag[1400];
	json_escape(emsg, sizeof emsg, msg);
	json_escape(edet, sizeof edet, details);
	int n = snprintf(out, sizeof out, "{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"%s\",\"details\":\"%s\"}\n",
			 g.cni_version, code, emsg, edet);
	if (n > 0)
		(void)write_all(1, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
	n = snprintf(diag, sizeof diag, "cloudnic[%s]: %.500s: %.800s\n",
		     g.request_id[0] ? g.request_id : "-", msg, details);
	if (n > 0)
		(void)write_all(2, diag, (size_t)n < sizeof diag ? (size_t)n : sizeof diag - 1);
	release();
	exit(1);
}

/* The error code for "the agent could not answer": 50 for STATUS, 11 otherwise. */
static int agent_code(void)
{
	return g.command && strcmp(g.command, "STATUS") == 0 ? 50 : 11;
}

/* Fail because of the agent: details name the socket path and the errno text. */
static _Noreturn void agent_fail(const char *msg, const char *step, int err)
{
	char details[768];
	snprintf(details, sizeof details, "socket \"%.300s\": %s: %s", g.socket_path, step, strerror(err));
	fail(agent_code(), msg, details);
}

static _Noreturn void out_of_memory(void)
{
	fail(g.command ? agent_code() : 5, "cloudnic: out of memory", strerror(ENOMEM));
}

/* ---- buffers ------------------------------------------------------------------- */

static void buf_reserve(struct buf *b, size_t extra)
{
	if (b->cap - b->len >= extra)
		return;
	if (extra > SIZE_MAX / 2 - b->len)
		out_of_memory();
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < extra)
		cap *= 2;
	unsigned char *p = realloc(b->p, cap);
	if (!p)
		out_of_memory();
	b->p = p;
	b->cap = cap;
}

static void buf_add(struct buf *b, const void *data, size_t n)
{
	buf_reserve(b, n);
	if (n)
		memcpy(b->p + b->len, data, n);
	b->len += n;
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void buf_u32(struct buf *b, uint32_t v)
{
	unsigned char p[4];
	put_u32(p, v);
	buf_add(b, p, 4);
}

/* ---- input --------------------------------------------------------------------- */

/* Read all of stdin; returns 1 when it is over STDIN_MAX (g.in then holds STDIN_MAX + 1). */
static int read_stdin(void)
{
	for (;;) {
		if (g.in.len > STDIN_MAX)
			return 1;
		buf_reserve(&g.in, 65536);
		size_t room = g.in.cap - g.in.len;
		if (room > STDIN_MAX + 1 - g.in.len)
			room = STDIN_MAX + 1 - g.in.len;
		ssize_t n = read(0, g.in.p + g.in.len, room);
		if (n == 0)
			return 0;
		if (n > 0) {
			g.in.len += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct pollfd pfd = { .fd = 0, .events = POLLIN };
			(void)poll(&pfd, 1, 100);
			continue;
		}
		if (errno == EBADF) /* no stdin at all: an empty configuration */
			return 0;
		char details[256];
		snprintf(details, sizeof details, "stdin: read: %s", strerror(errno));
		fail(5, "cannot read the network configuration from stdin", details);
	}
}

static size_t skip_ws(const unsigned char *s, size_t i, size_t n)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

/* Index just past the closing quote of the string opening at s[i], or 0 if unterminated. */
static size_t skip_string(const unsigned char *s, size_t i, size_t n)
{
	for (i++; i < n; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			return i + 1;
	}
	return 0;
}

/* The string value at s[j] if it is a plain string (no escapes) of 1..cap-1 bytes, else "". */
static void plain_string(const unsigned char *s, size_t j, size_t n, char *out, size_t cap)
{
	out[0] = '\0';
	if (j >= n || s[j] != '"')
		return;
	size_t vend = skip_string(s, j, n), vlen = vend ? vend - j - 2 : 0;
	if (vlen == 0 || vlen >= cap)
		return;
	for (size_t k = 0; k < vlen; k++)
		if (s[j + 1 + k] < 0x20 || s[j + 1 + k] == '\\' || s[j + 1 + k] >= 0x7f)
			return;
	memcpy(out, s + j + 1, vlen);
	out[vlen] = '\0';
}

static int version_ok(const char *v)
{
	if (v[0] < '0' || v[0] > '9')
		return 0;
	for (; *v; v++)
		if ((*v < '0' || *v > '9') && *v != '.')
			return 0;
	return 1;
}

/*
 * Find the top-level "cniVersion" and "agentSocket" of the configuration. Only keys of
 * the outermost object count, and only when the object is closed; "cniVersion" must be
 * a short string of digits and dots, "agentSocket" an absolute path without escapes.
 * Anything else leaves the defaults. Never reads past n.
 */
static void scan_config(const unsigned char *s, size_t n)
{
	static const char vkey[] = "\"cniVersion\"", skey[] = "\"agentSocket\"";
	char version[MAX_VERSION_LEN + 1] = "", sock[sizeof g.config_socket] = "";
	size_t i = skip_ws(s, 0, n);
	if (i >= n || s[i] != '{')
		return;
	int depth = 1, want_key = 1;
	for (i++; i < n;) {
		unsigned char c = s[i];
		if (c == '"') {
			size_t end = skip_string(s, i, n);
			if (end == 0)
				return;
			if (depth == 1 && want_key) {
				int is_v = end - i == sizeof vkey - 1 && memcmp(s + i, vkey, end - i) == 0;
				int is_s = end - i == sizeof skey - 1 && memcmp(s + i, skey, end - i) == 0;
				size_t j = skip_ws(s, end, n);
				if ((is_v || is_s) && j < n && s[j] == ':') {
					j = skip_ws(s, j + 1, n);
					if (is_v) {
						plain_string(s, j, n, version, sizeof version);
						if (!version_ok(version))
							version[0] = '\0';
					} else {
						plain_string(s, j, n, sock, sizeof sock);
						if (sock[0] != '/')
							sock[0] = '\0';
					}
				}
			}
			if (depth == 1)
				want_key = 0;
			i = end;
			continue;
		}
		if (c == '{' || c == '[') {
			if (depth >= INT_MAX - 1)
				return;
			depth++;
		} else if (c == '}' || c == ']') {
			if (--depth == 0) {
				if (version[0])
					memcpy(g.cni_version, version, sizeof version);
				if (sock[0])
					memcpy(g.config_socket, sock, sizeof sock);
				return;
			}
		} else if (c == ',' && depth == 1) {
			want_key = 1;
		}
		i++;
	}
}

static long env_ms(const char *name, long dflt)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return dflt;
	long ms = 0;
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '9' || ms > MAX_TIMEOUT_MS) {
			ms = -1;
			break;
		}
		ms = ms * 10 + (*p - '0');
	}
	if (ms < 1 || ms > MAX_TIMEOUT_MS) {
		char msg[400];
		snprintf(msg, sizeof msg, "%s=\"%.100s\" is not a valid timeout", name, v);
		fail(4, msg, "set it to a whole number of milliseconds from 1 to 86400000, or unset it");
	}
	return ms;
}

static void make_request_id(void)
{
	unsigned char r[8];
	size_t got = 0;
	while (got < sizeof r) {
		ssize_t n = getrandom(r + got, sizeof r - got, 0);
		if (n > 0) {
			got += (size_t)n;
		} else if (n < 0 && errno != EINTR) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
			for (size_t k = got; k < sizeof r; k++, x = x * 6364136223846793005ULL + 1442695040888963407ULL)
				r[k] = (unsigned char)(x >> 56);
			break;
		}
	}
	static const char hex[] = "0123456789abcdef";
	for (size_t k = 0; k < sizeof r; k++) {
		g.request_id[2 * k] = hex[r[k] >> 4];
		g.request_id[2 * k + 1] = hex[r[k] & 15];
	}
	g.request_id[16] = '\0';
}

/* ---- the request frame ----------------------------------------------------------- */

static void add_field(uint32_t *count, const char *k, size_t klen, const char *v, size_t vlen)
{
	if (klen > UINT32_MAX || vlen > UINT32_MAX)
		fail(4, "an environment variable is too large to forward", k);
	buf_u32(&g.head, (uint32_t)klen);
	buf_add(&g.head, k, klen);
	buf_u32(&g.head, (uint32_t)vlen);
	buf_add(&g.head, v, vlen);
	(*count)++;
}

static void build_request(long total_ms)
{
	uint32_t count = 0;
	char netns[32], timeout[24];
	buf_add(&g.head, "CNI1\0\0\0\0\0\0\0\0", 12); /* magic, body_len, nfields */
	for (char **e = environ; *e; e++) {
		const char *eq = strchr(*e, '=');
		if (strncmp(*e, "CNI_", 4) == 0 && eq)
			add_field(&count, *e, (size_t)(eq - *e), eq + 1, strlen(eq + 1));
	}
	add_field(&count, "cloudnic.request_id", 19, g.request_id, 16);
	const char *path = getenv("CNI_NETNS");
	if (path && *path) {
		/* a namespace file is a regular (nsfs) file: never open a FIFO (open blocks
		 * forever), a device (opening some has side effects), a directory or a socket;
		 * those travel as errno:EINVAL and the agent refuses them */
		struct stat st;
		if (stat(path, &st) < 0)
			snprintf(netns, sizeof netns, "errno:%d", errno);
		else if (!S_ISREG(st.st_mode))
			snprintf(netns, sizeof netns, "errno:%d", EINVAL);
		else if ((g.netns_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) >= 0)
			snprintf(netns, sizeof netns, "fd");
		else
			snprintf(netns, sizeof netns, "errno:%d", errno);
		add_field(&count, "cloudnic.netns", 14, netns, strlen(netns));
	}
	snprintf(timeout, sizeof timeout, "%ld", total_ms);
	add_field(&count, "cloudnic.timeout_ms", 19, timeout, strlen(timeout));
	add_field(&count, "cloudnic.shim_version", 21, SHIM_VERSION, 1);
	buf_u32(&g.head, (uint32_t)g.in.len);
	size_t body = g.head.len - 8 + g.in.len;
	if (body > UINT32_MAX)
		fail(4, "the CNI environment and configuration are too large to forward", "body over 4 GiB");
	put_u32(g.head.p + 4, (uint32_t)body);
	put_u32(g.head.p + 8, count);
}

/* ---- talking to the agent ------------------------------------------------------- */

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void connect_agent(long connect_deadline)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(g.socket_path) >= sizeof sa.sun_path)
		agent_fail("cannot connect to the cloudnic agent: socket path too long", "connect", ENAMETOOLONG);
	strcpy(sa.sun_path, g.socket_path);
	g.sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (g.sock < 0)
		agent_fail("cannot create a socket to reach the cloudnic agent", "socket", errno);
	int pause_ms = 1;
	for (;;) {
		if (connect(g.sock, (struct sockaddr *)&sa, sizeof sa) == 0)
			return;
		int err = errno;
		long left = connect_deadline - now_ms();
		if (err == EINTR)
			continue;
		if (err == EAGAIN) { /* listen backlog full: retry until the deadline */
			if (left <= 0)
				agent_fail("timed out connecting to the cloudnic agent (is it overloaded or stuck?)",
					   "connect", ETIMEDOUT);
			(void)poll(NULL, 0, (int)(pause_ms < left ? pause_ms : left));
			pause_ms = pause_ms < 25 ? pause_ms * 2 : 50;
			continue;
		}
		if (err == EINPROGRESS) {
			struct pollfd pfd = { .fd = g.sock, .events = POLLOUT };
			int r = left > 0 ? poll(&pfd, 1, (int)left) : 0;
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				agent_fail("timed out connecting to the cloudnic agent (is it overloaded or stuck?)",
					   "connect", ETIMEDOUT);
			socklen_t len = sizeof err;
			if (getsockopt(g.sock, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
				return;
		}
		agent_fail("cannot connect to the cloudnic agent (is cloudnic-agent running?)", "connect", err);
	}
}

/* Wait for events on the socket until the total deadline; returns revents. */
static short wait_sock(short events, long deadline, long total_ms, const char *step)
{
	for (;;) {
		long left = deadline - now_ms();
		struct pollfd pfd = { .fd = g.sock, .events = events };
		int r = left > 0 ? poll(&pfd, 1, (int)left) : 0;
		if (r > 0)
			return pfd.revents;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			agent_fail("cannot wait for the cloudnic agent", "poll", errno);
		char msg[160];
		snprintf(msg, sizeof msg, "no complete answer from the cloudnic agent within %ld ms", total_ms);
		agent_fail(msg, step, ETIMEDOUT);
	}
}

/* Send the frame (netns fd on the first sendmsg). Returns 0 when all was sent, 1 when
 * the agent closed or answered early (its answer may still be readable). */
static int send_request(long deadline, long total_ms)
{
	size_t total = g.head.len + g.in.len, sent = 0;
	int fd_pending = g.netns_fd >= 0;
	while (sent < total) {
		struct iovec iov[2];
		int niov = 0;
		if (sent < g.head.len)
			iov[niov++] = (struct iovec){ g.head.p + sent, g.head.len - sent };
		size_t in_off = sent > g.head.len ? sent - g.head.len : 0;
		if (g.in.len > in_off)
			iov[niov++] = (struct iovec){ g.in.p + in_off, g.in.len - in_off };
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} control;
		struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
		if (fd_pending) {
			memset(&control, 0, sizeof control);
			m.msg_control = control.buf;
			m.msg_controllen = sizeof control.buf;
			struct cmsghdr *c = CMSG_FIRSTHDR(&m);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &g.netns_fd, sizeof(int));
		}
		ssize_t n = sendmsg(g.sock, &m, MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			fd_pending = 0;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			short ev = wait_sock(POLLOUT | POLLIN, deadline, total_ms, "send");
			if (!(ev & POLLOUT) && (ev & (POLLIN | POLLHUP | POLLERR)))
				return 1;
			continue;
		}
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			return 1;
		agent_fail("cannot send the request to the cloudnic agent", "sendmsg", n < 0 ? errno : EIO);
	}
	return 0;
}

static void recv_exact(unsigned char *dst, size_t len, long deadline, long total_ms, int partial)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(g.sock, dst + got, len - got, 0);
		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			(void)wait_sock(POLLIN, deadline, total_ms, "recv");
			continue;
		}
		int err = n == 0 ? ECONNRESET : errno;
		agent_fail(partial ? "the cloudnic agent closed the connection before reading the whole request"
				   : "the cloudnic agent closed the connection without a complete answer",
			   "recv", err);
	}
}

static _Noreturn void relay_response(long deadline, long total_ms, int partial)
{
	unsigned char head[8];
	recv_exact(head, sizeof head, deadline, total_ms, partial);
	uint32_t body_len = get_u32(head + 4);
	if (memcmp(head, "CNR1", 4) != 0)
		agent_fail("malformed answer from the cloudnic agent: bad magic (is something else listening?)",
			   "decode", EPROTO);
	if (body_len < 12 || body_len > RESPONSE_MAX)
		agent_fail("malformed answer from the cloudnic agent: bad body length", "decode", EPROTO);
	g.body = malloc(body_len);
	if (!g.body)
		out_of_memory();
	recv_exact(g.body, body_len, deadline, total_ms, 0);
	uint32_t code = get_u32(g.body), out_len = get_u32(g.body + 4);
	if (out_len > body_len - 12 || get_u32(g.body + 8 + out_len) != body_len - 12 - out_len)
		agent_fail("malformed answer from the cloudnic agent: inconsistent lengths", "decode", EPROTO);
	int exit_code = code > 255 ? 255 : (int)code;
	if (write_all(1, g.body + 8, out_len) < 0 && exit_code == 0)
		exit_code = 1;
	(void)write_all(2, g.body + 12 + out_len, body_len - 12 - out_len);
	release();
	exit(exit_code);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	long start = now_ms();
	memcpy(g.cni_version, DEFAULT_CNI_VERSION, sizeof DEFAULT_CNI_VERSION);
	int too_big = read_stdin();
	scan_config(g.in.p, g.in.len);
	/* the config's "agentSocket" wins: it reaches every invocation (podman's cleanup
	 * process, for one, runs DEL with a scrubbed environment); then the environment */
	g.socket_path = g.config_socket[0] ? g.config_socket : getenv("CLOUDNIC_AGENT_SOCKET");
	if (!g.socket_path || !*g.socket_path)
		g.socket_path = DEFAULT_SOCKET;
	if (too_big)
		fail(5, "the network configuration on stdin is larger than 16 MiB",
		     "stdin: refusing to read more than 16777216 bytes; the configuration must be smaller");

	const char *cmd = getenv("CNI_COMMAND");
	static const char *const commands[] = { "ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION" };
	for (size_t i = 0; cmd && i < sizeof commands / sizeof *commands; i++)
		if (strcmp(cmd, commands[i]) == 0)
			g.command = commands[i];
	if (!g.command) {
		char msg[200];
		if (cmd)
			snprintf(msg, sizeof msg, "CNI_COMMAND \"%.64s\" is not a CNI operation", cmd);
		else
			snprintf(msg, sizeof msg, "CNI_COMMAND is not set");
		fail(4, msg, "CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION");
	}
	if (strcmp(g.command, "VERSION") == 0) {
		char out[160];
		int n = snprintf(out, sizeof out, "{\"cniVersion\":\"%s\",\"supportedVersions\":%s}\n",
				 g.cni_version, SUPPORTED_VERSIONS);
		int rc = write_all(1, out, (size_t)n) < 0;
		release();
		return rc;
	}

	long connect_ms = env_ms("CLOUDNIC_CONNECT_TIMEOUT_MS", DEFAULT_CONNECT_MS);
	long total_ms = env_ms("CLOUDNIC_TIMEOUT_MS", DEFAULT_TOTAL_MS);
	long deadline = start + total_ms;
	make_request_id();
	build_request(total_ms);
	connect_agent(start + (connect_ms < total_ms ? connect_ms : total_ms));
	int partial = send_request(deadline, total_ms);
	relay_response(deadline, total_ms, partial);
}
