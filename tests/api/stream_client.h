/* tests/api/stream_client.h: a small HTTP/1.1 client for the admission tests: many
 * connections on one thread (poll), each one POST whose response is read whole (chunked
 * SSE or a Content-Length body), then the status, a header and the SSE text pieced
 * together. Test-only helpers (static); must not be used outside tests. */
#ifndef EXO_TESTS_API_STREAM_CLIENT_H
#define EXO_TESTS_API_STREAM_CLIENT_H

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct sc_conn {
  int fd;
  char *buf;
  size_t len, cap;
  bool done;   /* the whole response is in */
  int order;   /* 1 + how many responses completed before this one */
  double t_done;
};

static double sc_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sc_raise_nofile(void)
{
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &r);
  }
}

/* Connects and sends POST path with body; returns 0 or -1. */
static int sc_start(struct sc_conn *c, int port, const char *path, const char *body)
{
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a))
    return -1;
  char head[512];
  int n = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                   path, strlen(body));
  if (write(c->fd, head, (size_t)n) != n ||
      write(c->fd, body, strlen(body)) != (ssize_t)strlen(body))
    return -1;
  return 0;
}

static const char *sc_body_start(const struct sc_conn *c)
{
  const char *e = c->buf ? strstr(c->buf, "\r\n\r\n") : NULL;
  return e ? e + 4 : NULL;
}

static int sc_status(const struct sc_conn *c)
{
  int st = 0;
  if (c->buf && sscanf(c->buf, "HTTP/1.%*d %d", &st) != 1)
    st = 0;
  return st;
}

/* The value of header name (copied into out), or NULL. */
static const char *sc_header(const struct sc_conn *c, const char *name, char *out, size_t cap)
{
  const char *end = sc_body_start(c), *p = c->buf;
  size_t nl = strlen(name);
  while (p && end && p < end) {
    const char *eol = strstr(p, "\r\n");
    if (!eol)
      break;
    if ((size_t)(eol - p) > nl + 1 && !strncasecmp(p, name, nl) && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ')
        v++;
      snprintf(out, cap, "%.*s", (int)(eol - v), v);
      return out;
    }
    p = eol + 2;
  }
  return NULL;
}

/* Whether the whole response is in: a Content-Length body, or the last chunk. */
static bool sc_complete(const struct sc_conn *c)
{
  const char *b = sc_body_start(c);
  if (!b)
    return false;
  char v[32];
  if (sc_header(c, "Content-Length", v, sizeof v))
    return (size_t)(c->buf + c->len - b) >= strtoul(v, NULL, 10);
  return c->len >= 5 && !memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5);
}

/* Reads until every connection is done or timeout_s passed; returns the number done. */
static int sc_run(struct sc_conn *c, int n, double timeout_s)
{
  struct pollfd *p = calloc((size_t)n, sizeof *p);
  int done = 0;
  for (int i = 0; i < n; i++)
    done += c[i].done;
  double end = sc_now() + timeout_s;
  while (p && done < n && sc_now() < end) {
    int m = 0;
    int *who = calloc((size_t)n, sizeof *who);
    for (int i = 0; i < n; i++)
      if (!c[i].done && c[i].fd >= 0) {
        p[m] = (struct pollfd){.fd = c[i].fd, .events = POLLIN};
        who[m++] = i;
      }
    if (poll(p, (nfds_t)m, 100) > 0)
      for (int k = 0; k < m; k++) {
        if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
          continue;
        struct sc_conn *q = &c[who[k]];
        if (q->cap - q->len < 4097) {
          q->cap = q->cap * 2 + 8192;
          q->buf = realloc(q->buf, q->cap);
        }
        ssize_t got = read(q->fd, q->buf + q->len, 4096);
        if (got > 0)
          q->len += (size_t)got;
        q->buf[q->len] = '\0';
        if (got <= 0 || sc_complete(q)) {
          q->done = true;
          q->order = ++done;
          q->t_done = sc_now();
        }
      }
    free(who);
  }
  free(p);
  return done;
}

/* Reads c until its status line and headers are in (a stream's 200 is sent at the origin's
 * ACK: the request is queued or admitted). Returns 0 or -1 on timeout or EOF. */
static int sc_wait_head(struct sc_conn *c, double timeout_s)
{
  double end = sc_now() + timeout_s;
  while (!sc_body_start(c) && !c->done && sc_now() < end) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0)
      continue;
    if (c->cap - c->len < 4097) {
      c->cap = c->cap * 2 + 8192;
      c->buf = realloc(c->buf, c->cap);
    }
    ssize_t got = read(c->fd, c->buf + c->len, 4096);
    if (got <= 0)
      return -1;
    c->len += (size_t)got;
    c->buf[c->len] = '\0';
  }
  return sc_body_start(c) ? 0 : -1;
}

/* GET path's body into out (a small JSON); returns the status or -1. */
static int sc_get(int port, const char *path, char *out, size_t cap)
{
  struct sc_conn c;
  memset(&c, 0, sizeof c);
  c.fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int st = -1;
  char req[256];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
  if (c.fd >= 0 && !connect(c.fd, (struct sockaddr *)&a, sizeof a) &&
      write(c.fd, req, (size_t)n) == n && sc_run(&c, 1, 10) == 1) {
    st = sc_status(&c);
    snprintf(out, cap, "%s", sc_body_start(&c) ? sc_body_start(&c) : "");
  }
  if (c.fd >= 0)
    close(c.fd);
  free(c.buf);
  return st;
}

/* The live map's epoch from GET /v1/cluster (0: none yet), or -1. */
static long sc_epoch(int port)
{
  char body[65536];
  if (sc_get(port, "/v1/cluster", body, sizeof body) != 200)
    return -1;
  json_t *j = json_loads(body, 0, NULL);
  long e = j ? (long)json_integer_value(json_object_get(j, "epoch")) : -1;
  json_decref(j);
  return e;
}

/* De-chunks a streamed body and concatenates choices[0].text of its data lines into
 * text; *errors counts error events, *saw_done whether [DONE] came. */
static void sc_sse_text(const struct sc_conn *c, char *text, size_t cap, int *errors,
                        bool *saw_done)
{
  size_t tl = 0;
  text[0] = '\0';
  *errors = 0;
  *saw_done = false;
  const char *b = sc_body_start(c), *end = c->buf + c->len;
  char *plain = malloc(c->len + 1);
  size_t pl = 0;
  while (b && b < end) { /* chunk: hex size CRLF data CRLF */
    char *e;
    unsigned long n = strtoul(b, &e, 16);
    if (e == b || !(e = strstr(e, "\r\n")) || n == 0)
      break;
    e += 2;
    if ((size_t)(end - e) < n)
      break;
    memcpy(plain + pl, e, n);
    pl += n;
    b = e + n + 2;
  }
  plain[pl] = '\0';
  for (char *line = strtok(plain, "\n"); line; line = strtok(NULL, "\n")) {
    if (strncmp(line, "data: ", 6))
      continue;
    if (!strcmp(line + 6, "[DONE]")) {
      *saw_done = true;
      continue;
    }
    json_t *j = json_loads(line + 6, 0, NULL);
    if (json_object_get(j, "error"))
      (*errors)++;
    const char *t = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text"));
    if (t && tl + strlen(t) < cap) {
      memcpy(text + tl, t, strlen(t) + 1);
      tl += strlen(t);
    }
    json_decref(j);
  }
  free(plain);
}

static void sc_close(struct sc_conn *c)
{
  if (c->fd >= 0)
    close(c->fd);
  free(c->buf);
  c->buf = NULL;
  c->fd = -1;
}

/* One request alone, to the end: status and (stream) text. */
static int sc_one(int port, const char *body, char *text, size_t cap, char *raw, size_t rawcap)
{
  struct sc_conn c;
  int st = -1;
  if (!sc_start(&c, port, "/v1/completions", body) && sc_run(&c, 1, 30) == 1) {
    st = sc_status(&c);
    int errors;
    bool done;
    if (text)
      sc_sse_text(&c, text, cap, &errors, &done);
    if (raw)
      snprintf(raw, rawcap, "%s", c.buf ? c.buf : "");
  }
  sc_close(&c);
  return st;
}

#endif
