/* bench/bench_load.c: HTTP load on a loopback cluster (issue 7). Starts K `exo-actors run`
 * nodes (actors/local_cluster.h, an api actor each), drives node 1's POST /v1/completions
 * with N concurrent SSE streams from one libevent thread, and prints per row aggregate
 * decode tokens/s, p50/p99 inter-token latency (event arrival at the client) and median
 * time to first token, then the ratios. Benchmark only; --quick is the smoke test
 * (exit 1 when a stream lost tokens or a number is not finite). Must not touch the nodes'
 * internals: everything it knows comes over HTTP. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "actors/local_cluster.h"
#include "bench/bench_common.h"

#define LOAD_MAX_STREAMS 64
#define LOAD_MAX_LIST 8
#define LOAD_PROMPT 8 /* ids per short prompt */

struct load_opts {
  int nodes[LOAD_MAX_LIST], n_nodes;
  int streams[LOAD_MAX_LIST], n_streams;
  int tokens;        /* max_tokens of every stream */
  int long_prompt;   /* 0: no long-prompt run */
  int long_streams;  /* streams running when the long prompt arrives */
  int long_after;    /* tokens each has received before it arrives */
  int prefill_chunk; /* shard-worker option (0: its default) */
  int batch;         /* shard-worker option (0: its default) */
  int timeout_s;     /* per row */
  bool quick;
  const char *model;
  const char *origin_options;
  const char *shard_options; /* appended to the shard-worker's options ("threads: 2") */
  const char *log_level;     /* the nodes' (warn when NULL) */
  char exe[PATH_MAX];
};

struct load_run;

/* One streaming request: its connection, its HTTP/chunked/SSE parse state, its timings. */
struct load_stream {
  struct load_run *run;
  struct bufferevent *bev;
  bool is_long, ended, failed, done_marker, head_ok, chunked;
  int n_tok, usage_tokens;
  char finish[16];
  char err[200];
  double t_send, *arr; /* arr[max_tokens]: arrival times of the token events */
  int cap;
  char *body; /* de-chunked SSE bytes not yet parsed */
  size_t body_len, body_cap;
  long chunk_left; /* bytes of the current chunk still to read; -1: at a size line */
};

struct load_run {
  struct event_base *base;
  int port;
  const char *model_id;
  int tokens;
  struct load_stream s[LOAD_MAX_STREAMS + 1]; /* the last one: the long prompt */
  int n, n_open;
  int long_prompt, long_after;
  bool long_started;
  double t_long_sent;
};

static void stream_end(struct load_stream *st, const char *why)
{
  if (st->ended)
    return;
  st->ended = true;
  if (why && !st->err[0]) {
    st->failed = true;
    snprintf(st->err, sizeof st->err, "%s", why);
  }
  if (st->bev) {
    bufferevent_free(st->bev); /* closes: a stream that did not end is cancelled at the origin */
    st->bev = NULL;
  }
  struct load_run *run = st->run;
  if (!st->is_long && run->long_started && !run->s[run->n].ended) {
    /* the row's streams are over: the long prompt's connection closes (a CANCEL) */
    bool all = true;
    for (int i = 0; i < run->n && all; i++)
      all = run->s[i].ended;
    if (all)
      stream_end(&run->s[run->n], NULL);
  }
  if (--run->n_open == 0)
    event_base_loopbreak(run->base);
}

static void launch_long(struct load_run *run);

/* One SSE event's data (NUL-terminated). Timed when parsed: events that came in one read
 * (a tiny model outruns the client's wake-ups) still get distinct, ordered times. */
static void on_sse(struct load_stream *st, const char *data)
{
  double t = exo_bench_now();
  if (!strcmp(data, "[DONE]")) {
    st->done_marker = true;
    return;
  }
  json_error_t je;
  json_t *j = json_loads(data, 0, &je);
  if (!j) {
    snprintf(st->err, sizeof st->err, "bad SSE JSON: %.120s", data);
    st->failed = true;
    return;
  }
  json_t *e = json_object_get(j, "error"), *ch = json_object_get(j, "choices");
  json_t *u = json_object_get(j, "usage");
  if (e) {
    snprintf(st->err, sizeof st->err, "error event: %.150s", data);
    st->failed = true;
  } else if (json_is_array(ch) && json_array_size(ch) == 0 && json_is_object(u)) {
    st->usage_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
  } else if (json_is_array(ch) && json_array_size(ch) == 1) {
    json_t *c0 = json_array_get(ch, 0), *fr = json_object_get(c0, "finish_reason");
    if (json_is_string(fr))
      snprintf(st->finish, sizeof st->finish, "%s", json_string_value(fr));
    else if (json_is_object(json_object_get(c0, "logprobs")) && st->n_tok < st->cap)
      st->arr[st->n_tok++] = t; /* a token's event (text the api held back comes without) */
    struct load_run *run = st->run;
    if (!st->is_long && run->long_prompt && !run->long_started) {
      bool all = true;
      for (int i = 0; i < run->n && all; i++)
        all = run->s[i].ended || run->s[i].n_tok >= run->long_after;
      if (all)
        launch_long(run);
    }
  }
  json_decref(j);
}

static int body_append(struct load_stream *st, const char *p, size_t n)
{
  if (st->body_len + n + 1 > st->body_cap) {
    size_t cap = (st->body_len + n + 1) * 2;
    char *q = realloc(st->body, cap);
    if (!q)
      return -ENOMEM;
    st->body = q;
    st->body_cap = cap;
  }
  memcpy(st->body + st->body_len, p, n);
  st->body_len += n;
  st->body[st->body_len] = '\0';
  return 0;
}

/* Parses every complete event in body; keeps the rest. */
static void parse_events(struct load_stream *st)
{
  size_t at = 0;
  if (!st->body)
    return;
  for (;;) {
    char *end = strstr(st->body + at, "\n\n");
    if (!end)
      break;
    *end = '\0';
    const char *ev = st->body + at;
    if (!strncmp(ev, "data: ", 6))
      on_sse(st, ev + 6);
    at = (size_t)(end - st->body) + 2;
  }
  memmove(st->body, st->body + at, st->body_len - at + 1);
  st->body_len -= at;
}

static void on_read(struct bufferevent *bev, void *arg)
{
  struct load_stream *st = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  if (st->ended)
    return;
  if (!st->head_ok) {
    struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (p.pos < 0)
      return;
    char head[1024];
    size_t hl = (size_t)p.pos + 4 < sizeof head ? (size_t)p.pos + 4 : sizeof head - 1;
    evbuffer_copyout(in, head, hl);
    head[hl] = '\0';
    evbuffer_drain(in, (size_t)p.pos + 4);
    if (strncmp(head, "HTTP/1.1 200", 12)) {
      char *rest = (char *)evbuffer_pullup(in, -1);
      snprintf(st->err, sizeof st->err, "%.*s %.120s", (int)strcspn(head, "\r"), head,
               rest ? rest : "");
      stream_end(st, st->err);
      return;
    }
    st->head_ok = true;
    st->chunked = strcasestr(head, "transfer-encoding: chunked") != NULL;
    st->chunk_left = -1;
  }
  for (;;) {
    if (!st->chunked) { /* not what the api sends for a stream, but parse it anyway */
      size_t n = evbuffer_get_length(in);
      char *p = (char *)evbuffer_pullup(in, -1);
      if (n && body_append(st, p, n))
        return stream_end(st, "out of memory");
      evbuffer_drain(in, n);
      break;
    }
    if (st->chunk_left < 0) {
      size_t n;
      char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
      if (!line)
        break;
      char *e;
      long sz = strtol(line, &e, 16);
      free(line);
      if (e == line || sz < 0)
        return stream_end(st, "bad chunk size line");
      if (sz == 0) {
        parse_events(st);
        return stream_end(st, NULL);
      }
      st->chunk_left = sz + 2; /* and its CRLF */
    }
    size_t have = evbuffer_get_length(in);
    if (have == 0)
      break;
    size_t take = have < (size_t)st->chunk_left ? have : (size_t)st->chunk_left;
    char *p = (char *)evbuffer_pullup(in, (ssize_t)take);
    /* the chunk's trailing CRLF is not SSE data */
    size_t data = (size_t)st->chunk_left - 2 >= take ? take
                  : (size_t)st->chunk_left > 2      ? (size_t)st->chunk_left - 2
                                                    : 0;
    if (data && body_append(st, p, data))
      return stream_end(st, "out of memory");
    evbuffer_drain(in, take);
    st->chunk_left -= (long)take;
    if (st->chunk_left == 0)
      st->chunk_left = -1;
  }
  parse_events(st);
}

static void on_bev_event(struct bufferevent *bev, short what, void *arg)
{
  struct load_stream *st = arg;
  if (what & BEV_EVENT_CONNECTED) {
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return;
  }
  if (what & BEV_EVENT_EOF) {
    on_read(bev, arg); /* what is buffered */
    if (!st->ended)
      stream_end(st, st->head_ok ? NULL : "connection closed before the response");
    return;
  }
  if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
    stream_end(st, what & BEV_EVENT_TIMEOUT ? "timed out" : strerror(EVUTIL_SOCKET_ERROR()));
}

/* Starts stream st: n_prompt ids from prompt, max_tokens, greedy or seeded. Asks for
 * logprobs (0 alternatives) so that every token is an event of its own even when the
 * api holds its text back (a partial UTF-8 character): events are counted, not text. */
static int stream_start(struct load_run *run, struct load_stream *st, const int *prompt,
                        int n_prompt, int max_tokens, int seed)
{
  size_t cap = 256 + (size_t)n_prompt * 8;
  char *body = malloc(cap), head[512];
  if (!body)
    return -ENOMEM;
  size_t n = (size_t)snprintf(body, cap, "{\"model\":\"%s\",\"prompt\":[", run->model_id);
  for (int i = 0; i < n_prompt; i++)
    n += (size_t)snprintf(body + n, cap - n, "%s%d", i ? "," : "", prompt[i]);
  if (seed < 0) /* greedy */
    n += (size_t)snprintf(body + n, cap - n, "],\"max_tokens\":%d,\"temperature\":0,", max_tokens);
  else
    n += (size_t)snprintf(body + n, cap - n, "],\"max_tokens\":%d,\"temperature\":0.8,"
                          "\"seed\":%d,", max_tokens, seed);
  n += (size_t)snprintf(body + n, cap - n,
                        "\"logprobs\":0,\"stream\":true,"
                        "\"stream_options\":{\"include_usage\":true}}");
  int hl = snprintf(head, sizeof head,
                    "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", n);
  memset(st, 0, sizeof *st);
  st->run = run;
  st->cap = max_tokens;
  st->chunk_left = -1;
  st->arr = calloc((size_t)max_tokens, sizeof *st->arr);
  st->bev = bufferevent_socket_new(run->base, -1, BEV_OPT_CLOSE_ON_FREE);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)run->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  run->n_open++;
  if (!st->arr || !st->bev) {
    free(body);
    stream_end(st, "out of memory");
    return -ENOMEM;
  }
  bufferevent_setcb(st->bev, on_read, NULL, on_bev_event, st);
  bufferevent_enable(st->bev, EV_READ | EV_WRITE);
  /* written before the connect completes: libevent sends it once connected */
  bufferevent_write(st->bev, head, (size_t)hl);
  bufferevent_write(st->bev, body, n);
  free(body);
  st->t_send = exo_bench_now();
  if (bufferevent_socket_connect(st->bev, (struct sockaddr *)&a, sizeof a)) {
    stream_end(st, "connect failed");
    return -ECONNREFUSED;
  }
  return 0;
}

static void short_prompt(int i, int *p)
{
  for (int j = 0; j < LOAD_PROMPT; j++)
    p[j] = 10 + (i * 37 + j * 11) % 480; /* ids every fixture's vocabulary has */
}

static void launch_long(struct load_run *run)
{
  int *p = malloc((size_t)run->long_prompt * sizeof *p);
  run->long_started = true;
  if (!p)
    return;
  for (int j = 0; j < run->long_prompt; j++)
    p[j] = 10 + (j * 7) % 480;
  struct load_stream *st = &run->s[run->n];
  stream_start(run, st, p, run->long_prompt, 1, -1);
  st->is_long = true;
  run->t_long_sent = st->t_send;
  free(p);
}

static void end_all(struct load_run *run, const char *why)
{
  for (int i = 0; i <= run->n; i++)
    if (run->s[i].run && !run->s[i].ended)
      stream_end(&run->s[i], why);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
  (void)fd, (void)what;
  end_all(arg, "row timed out");
}

/* SIGINT / SIGTERM: finish the row at once and skip the rest, so that main still frees
 * the cluster (its children and its temp dir). A benchmark's only process-wide state. */
static volatile sig_atomic_t load_stop;

static void on_stop_signal_raw(int sig)
{
  (void)sig;
  load_stop = 1;
}

static void on_stop_signal(evutil_socket_t fd, short what, void *arg)
{
  (void)fd, (void)what;
  load_stop = 1;
  end_all(arg, "interrupted");
}

/* ---- statistics ------------------------------------------------------------------- */

struct load_row {
  int nodes, streams, tokens;
  bool with_long;
  double agg_tps, itl_p50, itl_p99, ttft_med; /* tok/s, seconds */
  double steady_tps; /* tok/s while every stream was decoding; NAN: they never all were */
  double client_cpu;                          /* fraction of the row's wall time */
  double long_ttft;                           /* -1: cancelled before its first token */
  int bad;                                    /* streams short of tokens or failed */
};

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[n]. */
static double pct(const double *v, size_t n, double q)
{
  if (!n)
    return NAN;
  size_t k = (size_t)ceil(q * (double)n);
  return v[k ? k - 1 : 0];
}

static void row_stats(struct load_run *run, struct load_row *row, bool verbose)
{
  size_t n_gap = 0;
  double *gaps = malloc(((size_t)run->n * (size_t)run->tokens + 1) * sizeof *gaps);
  double ttft[LOAD_MAX_STREAMS], first = INFINITY, last = -INFINITY;
  long decode = 0;
  row->bad = 0;
  for (int i = 0; i < run->n; i++) {
    struct load_stream *st = &run->s[i];
    bool ok = !st->failed && st->done_marker && st->n_tok == run->tokens &&
              st->usage_tokens == run->tokens && !strcmp(st->finish, "length");
    if (!ok) {
      row->bad++;
      if (verbose)
        fprintf(stderr, "  stream %d: %d token events, usage %d, finish '%s', [DONE] %s%s%s\n",
                i, st->n_tok, st->usage_tokens, st->finish, st->done_marker ? "yes" : "no",
                st->err[0] ? ": " : "", st->err);
    }
    ttft[i] = st->n_tok ? st->arr[0] - st->t_send : NAN;
    if (st->n_tok) {
      first = fmin(first, st->arr[0]);
      last = fmax(last, st->arr[st->n_tok - 1]);
      decode += st->n_tok - 1;
    }
    for (int k = 1; gaps && k < st->n_tok; k++)
      gaps[n_gap++] = st->arr[k] - st->arr[k - 1];
  }
  if (gaps)
    qsort(gaps, n_gap, sizeof *gaps, cmp_double);
  row->itl_p50 = gaps ? pct(gaps, n_gap, 0.50) : NAN;
  row->itl_p99 = gaps ? pct(gaps, n_gap, 0.99) : NAN;
  row->ttft_med = exo_bench_median(ttft, (size_t)run->n);
  row->agg_tps = last > first ? (double)decode / (last - first) : NAN;
  /* steady state: from the last stream's first token to the first stream's last one */
  double a = -INFINITY, b = INFINITY;
  long in = 0;
  for (int i = 0; i < run->n; i++)
    if (run->s[i].n_tok)
      a = fmax(a, run->s[i].arr[0]), b = fmin(b, run->s[i].arr[run->s[i].n_tok - 1]);
  for (int i = 0; i < run->n; i++)
    for (int k = 1; k < run->s[i].n_tok; k++)
      in += run->s[i].arr[k] > a && run->s[i].arr[k] <= b;
  row->steady_tps = b > a && in >= 2L * run->n ? (double)in / (b - a) : NAN;
  struct load_stream *ls = &run->s[run->n];
  row->long_ttft = ls->n_tok ? ls->arr[0] - ls->t_send : -1;
  free(gaps);
}

/* Runs n streams (and the long prompt when long_prompt > 0) to the end. 0 or -errno. */
static int run_row(const struct load_opts *o, int port, const char *model_id, int nodes, int n,
                   int long_prompt, bool verbose, struct load_row *row)
{
  struct load_run *run = calloc(1, sizeof *run);
  if (!run)
    return -ENOMEM;
  run->base = event_base_new();
  run->port = port;
  run->model_id = model_id;
  run->tokens = o->tokens;
  run->n = n;
  run->long_prompt = long_prompt;
  run->long_after = o->long_after;
  int rc = run->base ? 0 : -ENOMEM;
  double w0 = exo_bench_now(), c0 = exo_bench_cpu_now();
  for (int i = 0; i < n && !rc; i++) {
    int p[LOAD_PROMPT];
    short_prompt(i, p);
    /* half greedy, half seeded sampling */
    rc = stream_start(run, &run->s[i], p, LOAD_PROMPT, o->tokens, i % 2 ? 1000 + i : -1);
  }
  struct timeval tv = {.tv_sec = o->timeout_s};
  struct event *deadline = run->base ? evtimer_new(run->base, on_deadline, run) : NULL;
  struct event *sig[2] = {run->base ? evsignal_new(run->base, SIGINT, on_stop_signal, run) : NULL,
                          run->base ? evsignal_new(run->base, SIGTERM, on_stop_signal, run) : NULL};
  for (int i = 0; i < 2; i++)
    if (sig[i])
      evsignal_add(sig[i], NULL);
  if (!rc && deadline && !evtimer_add(deadline, &tv) && run->n_open > 0 && !load_stop)
    event_base_dispatch(run->base); /* until the last stream ends (or the deadline) */
  for (int i = 0; i < 2; i++)
    if (sig[i])
      event_free(sig[i]); /* the handler outside rows is on_stop_signal_raw again */
  double wall = exo_bench_now() - w0;
  row->nodes = nodes;
  row->streams = n;
  row->tokens = o->tokens;
  row->with_long = long_prompt > 0;
  row->client_cpu = (exo_bench_cpu_now() - c0) / wall;
  row_stats(run, row, verbose);
  if (long_prompt && !run->long_started)
    row->bad++; /* it never arrived mid-stream */
  if (deadline)
    event_free(deadline);
  for (int i = 0; i <= n; i++) {
    if (run->s[i].bev)
      bufferevent_free(run->s[i].bev);
    free(run->s[i].arr);
    free(run->s[i].body);
  }
  if (run->base)
    event_base_free(run->base);
  free(run);
  return rc;
}

/* ---- the model directory ----------------------------------------------------------- */

/* A byte-level BPE tokenizer of V plain ASCII tokens ("t123 "), so every id the random model
 * samples decodes to text at once and is one SSE event (the api sends none for held-back
 * bytes). The benchmark sends ids, never text. */
static int write_tokenizer(const char *path, int V)
{
  FILE *f = fopen(path, "w");
  if (!f)
    return -errno;
  fprintf(f, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[],"
             "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\","
             "\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
             "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\","
             "\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},"
             "\"model\":{\"type\":\"BPE\",\"dropout\":null,"
             "\"unk_token\":null,\"byte_fallback\":false,\"vocab\":{");
  for (int i = 0; i < V; i++)
    fprintf(f, "%s\"t%d\\u0120\":%d", i ? "," : "", i, i); /* U+0120: byte-level space */
  fprintf(f, "},\"merges\":[]}}\n");
  return fclose(f) ? -errno : 0;
}

/* dir: the TinyLlama-shaped f32 model (bench_common) with a context of ctx positions and
 * a tokenizer, its weights a symlink to the shared file. */
static int prepare_tinyllama(const char *dir, int ctx, char *err, size_t errlen)
{
  char src[PATH_MAX + 32], dst[PATH_MAX + 32];
  int rc = exo_bench_tinyllama(EXO_BENCH_TINYLLAMA_DIR, err, errlen);
  if (rc)
    return rc;
  if (mkdir(dir, 0755) && errno != EEXIST) {
    snprintf(err, errlen, "mkdir %.300s: %s", dir, strerror(errno));
    return -errno;
  }
  snprintf(src, sizeof src, "%s/model.safetensors", EXO_BENCH_TINYLLAMA_DIR);
  snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
  unlink(dst);
  if (symlink(src, dst)) {
    snprintf(err, errlen, "symlink %.300s: %s", dst, strerror(errno));
    return -errno;
  }
  snprintf(src, sizeof src, "%s/config.json", EXO_BENCH_TINYLLAMA_DIR);
  json_error_t je;
  json_t *cfg = json_load_file(src, 0, &je);
  if (!cfg) {
    snprintf(err, errlen, "%.300s: %s", src, je.text);
    return -EINVAL;
  }
  /* only the window changes: RoPE has no trained length, and the caches grow on use */
  json_object_set_new(cfg, "max_position_embeddings", json_integer(ctx));
  int V = (int)json_integer_value(json_object_get(cfg, "vocab_size"));
  snprintf(dst, sizeof dst, "%s/config.json", dir);
  rc = json_dump_file(cfg, dst, JSON_INDENT(2)) ? -EIO : 0;
  json_decref(cfg);
  snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
  if (!rc && (rc = write_tokenizer(dst, V)))
    snprintf(err, errlen, "%.300s: %s", dst, strerror(-rc));
  else if (rc)
    snprintf(err, errlen, "%.300s: write failed", dst);
  return rc;
}

/* ---- one cluster ------------------------------------------------------------------- */

/* A 1-token request until the cluster answers it (the map goes live after the HELLOs). */
static int wait_ready(struct exo_local_cluster *c, int port, const char *model_id, char *err,
                      size_t errlen)
{
  struct load_opts one = {.tokens = 1, .timeout_s = 120};
  for (double t0 = exo_bench_now(); exo_bench_now() - t0 < 180 && !load_stop;) {
    struct load_row row;
    if (run_row(&one, port, model_id, 0, 1, 0, false, &row) == 0 && row.bad == 0)
      return 0;
    if (exo_local_cluster_check(c, err, errlen))
      return -ECHILD;
    usleep(300000);
  }
  snprintf(err, errlen, "the cluster did not answer a request within 180 s");
  return -ETIMEDOUT;
}

/* The host's 1-minute load average: other jobs on these 2 vCPUs move every figure. */
static double loadavg(void)
{
  double l = NAN;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f && fscanf(f, "%lf", &l) != 1)
    l = NAN;
  if (f)
    fclose(f);
  return l;
}

static void print_row(const struct load_row *r, double single)
{
  printf("%5d %7d%s %6d %10.2f %8.2fx %9.2f %9.1f %9.1f %9.1f %7.0f%% %5.1f%s\n", r->nodes,
         r->streams, r->with_long ? "+L" : "  ", r->tokens, r->agg_tps, r->agg_tps / single,
         r->steady_tps,
         r->itl_p50 * 1e3, r->itl_p99 * 1e3, r->ttft_med * 1e3, r->client_cpu * 100, loadavg(),
         r->bad ? "  (streams short of tokens!)" : "");
  fflush(stdout);
}

static const char *verdict(bool met)
{
  return met ? "met" : "MISSED";
}

static int parse_list(const char *s, int *out, int max, int lo, int hi)
{
  int n = 0;
  for (const char *p = s; *p;) {
    char *e;
    long v = strtol(p, &e, 10);
    if (e == p || v < lo || v > hi || n == max || (*e && *e != ','))
      return -EINVAL;
    out[n++] = (int)v;
    p = *e ? e + 1 : e;
  }
  return n ? n : -EINVAL;
}

static void usage(void)
{
  fprintf(stderr,
          "usage: bench_load [--quick] [--nodes 1,3] [--streams 1,4,8,16] [--tokens 2..1024]\n"
          "                  [--long-prompt 0|16..4096] [--long-streams N] [--long-after N]\n"
          "                  [--model DIR] [--prefill-chunk N] [--batch N]\n"
          "                  [--origin-options 'k: v, ...'] [--shard-options 'threads: 2']\n"
          "                  [--log-level info] [--timeout S] [--exe exo-actors]\n");
}

int main(int argc, char **argv)
{
  struct load_opts o = {.nodes = {1, 3}, .n_nodes = 2, .streams = {1, 4, 8, 16}, .n_streams = 4,
                        .tokens = 16, .long_prompt = 2048, .long_streams = 8, .long_after = 3,
                        .timeout_s = 600};
  bool set_nodes = false, set_streams = false, set_tokens = false, set_long = false;
  bool set_ls = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int rc = 0;
    if (!strcmp(a, "--quick")) {
      o.quick = true;
      continue;
    }
    if (!v) {
      usage();
      return 2;
    }
    i++;
    if (!strcmp(a, "--nodes"))
      rc = o.n_nodes = parse_list(v, o.nodes, LOAD_MAX_LIST, 1, 8), set_nodes = true;
    else if (!strcmp(a, "--streams"))
      rc = o.n_streams = parse_list(v, o.streams, LOAD_MAX_LIST, 1, LOAD_MAX_STREAMS),
      set_streams = true;
    else if (!strcmp(a, "--tokens"))
      rc = parse_list(v, &o.tokens, 1, 2, 1024), set_tokens = true;
    else if (!strcmp(a, "--long-prompt"))
      rc = parse_list(v, &o.long_prompt, 1, 0, 4096), set_long = true;
    else if (!strcmp(a, "--long-streams"))
      rc = parse_list(v, &o.long_streams, 1, 1, LOAD_MAX_STREAMS), set_ls = true;
    else if (!strcmp(a, "--long-after"))
      rc = parse_list(v, &o.long_after, 1, 1, 1023);
    else if (!strcmp(a, "--prefill-chunk"))
      rc = parse_list(v, &o.prefill_chunk, 1, 1, 1 << 20);
    else if (!strcmp(a, "--batch"))
      rc = parse_list(v, &o.batch, 1, 1, 64);
    else if (!strcmp(a, "--timeout"))
      rc = parse_list(v, &o.timeout_s, 1, 5, 3600);
    else if (!strcmp(a, "--model"))
      o.model = v;
    else if (!strcmp(a, "--origin-options"))
      o.origin_options = v;
    else if (!strcmp(a, "--shard-options"))
      o.shard_options = v;
    else if (!strcmp(a, "--log-level"))
      o.log_level = v;
    else if (!strcmp(a, "--exe"))
      snprintf(o.exe, sizeof o.exe, "%s", v);
    else
      rc = -EINVAL;
    if (rc < 0) {
      fprintf(stderr, "bench_load: bad %s '%s'\n", a, v);
      usage();
      return 2;
    }
  }
  char fixture[PATH_MAX];
  if (o.quick) { /* the smoke test: the tiny fixture, seconds */
    const char *fx = getenv("EXO_FIXTURES");
    snprintf(fixture, sizeof fixture, "%s/tiny-llama", fx ? fx : "tests/fixtures");
    if (!o.model)
      o.model = fixture;
    if (!set_nodes)
      o.nodes[0] = 1, o.nodes[1] = 2, o.n_nodes = 2;
    if (!set_streams)
      o.streams[0] = 1, o.streams[1] = 4, o.n_streams = 2;
    if (!set_tokens)
      o.tokens = 8;
    if (!set_long)
      o.long_prompt = 64;
    if (!set_ls)
      o.long_streams = 4;
    o.long_after = o.long_after < o.tokens ? o.long_after : 1;
  }
  if (o.long_after >= o.tokens) {
    fprintf(stderr, "bench_load: --long-after must be below --tokens\n");
    return 2;
  }
  if (!o.exe[0]) { /* the exo-actors of this build: ../actors/exo-actors from bench/ */
    char self[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0)
      return 1;
    self[l] = '\0';
    snprintf(o.exe, sizeof o.exe, "%s/../actors/exo-actors", dirname(self));
  }
  char err[512], model_dir[PATH_MAX], model_id[256], mcopy[PATH_MAX];
  if (o.model) {
    snprintf(model_dir, sizeof model_dir, "%s", o.model);
  } else {
    snprintf(model_dir, sizeof model_dir, "/tmp/exo-load-tinyllama");
    int ctx = o.long_prompt + 2 > 2048 ? 4096 : 2048;
    if (prepare_tinyllama(model_dir, ctx, err, sizeof err)) {
      fprintf(stderr, "bench_load: %s\n", err);
      return 1;
    }
  }
  /* a batched step of this host may take seconds: re-issue only what made no progress in
   * 20 s (a stuck request shows as an ITL of 20 s or more); admission wide enough for
   * every stream and the long prompt at once */
  if (!o.origin_options)
    o.origin_options = "step_timeout_ms: 20000, max_active: 64, max_queued: 64, "
                       "admission: fixed";
  if (!o.model) { /* weights in the page cache before the first row, not during it */
    char w[PATH_MAX + 32];
    snprintf(w, sizeof w, "%.4000s/model.safetensors", model_dir);
    FILE *f = fopen(w, "rb");
    static char buf[1 << 20];
    while (f && fread(buf, 1, sizeof buf, f) == sizeof buf)
      ;
    if (f)
      fclose(f);
  }
  snprintf(mcopy, sizeof mcopy, "%s", model_dir);
  snprintf(model_id, sizeof model_id, "%s", basename(mcopy));

  printf("bench_load: model %s, streams of %d tokens (prompts of %d ids, half greedy, half "
         "seeded), client: one libevent thread\n", model_dir, o.tokens, LOAD_PROMPT);
  printf("agg tok/s = decode tokens (all but each stream's first) / (last token - first "
         "token of the row); ITL = gaps between a stream's token events at the client\n");
  printf("steady tok/s = token events while every stream of the row was decoding, over that "
         "time (nan: never all at once, or under 2 per stream)\n");
  printf("%5s %9s %6s %10s %9s %9s %9s %9s %9s %8s %5s\n", "nodes", "streams", "tokens",
         "agg tok/s", "x single", "steady", "ITL p50", "ITL p99", "TTFT med", "client", "load");
  printf("%5s %9s %6s %10s %9s %9s %9s %9s %9s %8s %5s\n", "", "", "", "", "", "tok/s", "ms",
         "ms", "ms", "cpu", "avg1");
  fflush(stdout);

  struct sigaction sa = {.sa_handler = on_stop_signal_raw};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int failed = 0;
  struct load_row rows[LOAD_MAX_LIST][LOAD_MAX_LIST + 1];
  double single[LOAD_MAX_LIST];
  memset(rows, 0, sizeof rows);
  for (int ni = 0; ni < o.n_nodes && !load_stop; ni++) {
    struct exo_local_cluster *c = NULL;
    struct exo_local_cluster_opts co = {.exe = o.exe, .n_nodes = o.nodes[ni], .first_id = 1,
                                        .model = model_dir, .api = 1,
                                        .prefill_chunk = o.prefill_chunk, .batch = o.batch,
                                        .origin_options = o.origin_options,
                                        .shard_options = o.shard_options,
                                        .log_level = o.log_level};
    int rc = exo_local_cluster_start(&co, &c, err, sizeof err);
    int port = rc ? 0 : exo_local_cluster_api_port(c, 0);
    if (rc || (rc = wait_ready(c, port, model_id, err, sizeof err))) {
      fprintf(stderr, "bench_load: %d nodes: %s\n", o.nodes[ni], err);
      exo_local_cluster_free(c);
      failed++;
      continue;
    }
    single[ni] = NAN;
    for (int si = 0; si < o.n_streams && !load_stop; si++) {
      struct load_row *r = &rows[ni][si];
      if ((rc = run_row(&o, port, model_id, o.nodes[ni], o.streams[si], 0, true, r)))
        fprintf(stderr, "bench_load: row failed: %s\n", strerror(-rc));
      if (o.streams[si] == 1)
        single[ni] = r->agg_tps;
      print_row(r, single[ni]);
      failed += r->bad || rc;
    }
    /* the long prompt: on the first cluster only (a prefill of minutes on this host) */
    struct load_row *lr = &rows[ni][o.n_streams];
    if (ni == 0 && o.long_prompt > 0 && !load_stop) {
      if ((rc = run_row(&o, port, model_id, o.nodes[ni], o.long_streams, o.long_prompt, true, lr)))
        fprintf(stderr, "bench_load: long-prompt row failed: %s\n", strerror(-rc));
      print_row(lr, single[ni]);
      failed += lr->bad || rc;
    }
    if (exo_local_cluster_check(c, err, sizeof err)) {
      fprintf(stderr, "bench_load: %s\n", err);
      failed++;
    }
    exo_local_cluster_free(c);
  }
  if (load_stop) {
    fprintf(stderr, "bench_load: interrupted\n");
    return 1;
  }

  /* the goals, from the rows above */
  printf("\ngoals (issue 7), per cluster size:\n");
  int non_finite = 0;
  for (int ni = 0; ni < o.n_nodes; ni++) {
    const struct load_row *r1 = NULL, *r8 = NULL, *r16 = NULL, *lr = &rows[ni][o.n_streams];
    const struct load_row *rl = NULL; /* the row with long_streams streams, no long prompt */
    for (int si = 0; si < o.n_streams; si++) {
      const struct load_row *r = &rows[ni][si];
      r1 = r->streams == 1 ? r : r1;
      r8 = r->streams == 8 ? r : r8;
      r16 = r->streams == 16 ? r : r16;
      rl = r->streams == o.long_streams ? r : rl;
      if (r->streams && !(isfinite(r->agg_tps) && isfinite(r->itl_p50) &&
                          isfinite(r->itl_p99) && isfinite(r->ttft_med)))
        non_finite++;
    }
    printf("  %d node%s:\n", o.nodes[ni], o.nodes[ni] > 1 ? "s" : "");
    if (r1 && r8)
      printf("    agg tok/s at 8 vs 1: %.2fx (goal >= 5x: %s); steady at 8 vs 1: %.2fx\n",
             r8->agg_tps / r1->agg_tps, verdict(r8->agg_tps >= 5 * r1->agg_tps),
             r8->steady_tps / r1->agg_tps);
    if (r1 && r16)
      printf("    agg tok/s at 16 vs 1: %.2fx (goal >= 8x: %s); steady at 16 vs 1: %.2fx\n",
             r16->agg_tps / r1->agg_tps, verdict(r16->agg_tps >= 8 * r1->agg_tps),
             r16->steady_tps / r1->agg_tps);
    if (r1 && r8)
      printf("    ITL p99 at 8 vs single-request step (ITL p50 at 1) %.1f ms: %.2fx "
             "(goal <= 2.5x: %s)\n", r1->itl_p50 * 1e3, r8->itl_p99 / r1->itl_p50,
             verdict(r8->itl_p99 <= 2.5 * r1->itl_p50));
    if (lr->streams && rl) {
      if (!(isfinite(lr->itl_p99) && isfinite(rl->itl_p99)))
        non_finite++;
      printf("    ITL p99 of %d streams with a %d-token prompt arriving after %d tokens: "
             "%.1f ms vs %.1f ms without: %.2fx (goal <= 2x: %s); the long prompt's first "
             "token %s", o.long_streams, o.long_prompt, o.long_after, lr->itl_p99 * 1e3,
             rl->itl_p99 * 1e3, lr->itl_p99 / rl->itl_p99,
             verdict(lr->itl_p99 <= 2 * rl->itl_p99),
             lr->long_ttft >= 0 ? "came after " : "had not come when the streams ended "
                                                  "(cancelled)\n");
      if (lr->long_ttft >= 0)
        printf("%.1f s\n", lr->long_ttft);
    }
  }
  if (non_finite)
    printf("%d rows have numbers that are not finite\n", non_finite);
  printf("%s\n", failed || non_finite ? "FAILED: see above" : "all streams got all their tokens");
  return failed || non_finite ? 1 : 0;
}
