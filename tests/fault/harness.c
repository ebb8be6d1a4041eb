/* tests/fault/harness.c: `fault-harness SCENARIO.yaml [--seed N] [--report FILE]
 * [--bench [N]] [--duration D] [--keep]`. Starts a local cluster (actors/local_cluster.h),
 * records every request's fault-free tokens, runs the client load again (one exo_client
 * per stream, each on its own thread) while a timeline kills, freezes, restarts, cuts and
 * degrades nodes, then checks invariants: no request lost or altered, failures only with a
 * clear error, no crash or sanitizer report in any node log, no KV cache left behind.
 * Mode: loopback + transport hooks (runtime/fault.h through each node's @PATH file); it
 * never creates network namespaces. Must not fault the origin the clients submit through
 * (its death takes their connections with it: docs/FAULTS.md). Exit: 0 every invariant
 * held, 1 one failed, 2 the scenario or the setup is wrong. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "actors/client.h"
#include "actors/local_cluster.h"
#include "tensor/model.h"
#include "tests/fault/scenario.h"

#define MAX_NODES 17 /* ids 1..16 */
#define MAX_FAULTS 1024

static double now_real(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void nap_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static uint64_t splitmix(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static int rand_in(uint64_t *x, int lo, int hi) /* [lo, hi] */
{
  return lo + (int)(splitmix(x) % (uint64_t)(hi - lo + 1));
}

struct req {
  int32_t *prompt;
  size_t n_prompt;
  struct exo_sample_params sp;
  uint32_t max_tokens;
  int32_t *ref; /* fault-free ids */
  size_t n_ref;
};

struct tok_rec {
  double t;      /* realtime */
  uint32_t mask; /* bit per stage node id */
};

struct fault_rec {
  enum exo_scn_action action;
  uint32_t node, node_b;
  double t;
  int line;
  int late; /* fired after the load had ended */
};

struct harness {
  struct exo_scenario *s;
  struct exo_local_cluster *c;
  struct req *reqs;
  uint64_t seed;
  int phase; /* 0 reference, 1 faults */
  pthread_mutex_t mu;
  struct tok_rec *toks; /* fault phase tokens, in arrival order */
  size_t n_toks, cap_toks;
  atomic_long tokens;
  atomic_int next_req;
  atomic_int stop;
  atomic_int streams_left;
  /* outcomes (mu) */
  long sent, completed, identical, altered, failed, lost, resumed, max_attempts;
  char notes[8][600];
  int n_notes;
  /* node state, kept by the timeline thread */
  uint32_t killed;  /* bit per node id: killed by us, not restarted */
  uint32_t stopped; /* bit per node id */
  bool cut[MAX_NODES][MAX_NODES];
  char spec[MAX_NODES][EXO_SCN_SPEC_MAX]; /* transport rule effects per sending node */
  char crashes[4][512];
  int n_crashes;
  struct fault_rec faults[MAX_FAULTS];
  int n_faults;
};

static void note(struct harness *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct harness *h, const char *fmt, ...)
{
  if (h->n_notes >= 8)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->notes[h->n_notes++], sizeof h->notes[0], fmt, ap);
  va_end(ap);
}

/* ---- node control ---- */

static int node_index(const struct harness *h, uint32_t id)
{
  for (int i = 0; i < exo_local_cluster_size(h->c); i++)
    if (exo_local_cluster_node_id(h->c, i) == id)
      return i;
  return -1;
}

/* Reaps children that exited; one we did not kill is a crash. */
static void reap(struct harness *h)
{
  char err[512];
  while (exo_local_cluster_check(h->c, err, sizeof err) == -ECHILD) {
    unsigned id = 0;
    if (sscanf(err, "node %u", &id) == 1 && id < MAX_NODES && (h->killed & (1u << id)))
      continue;
    if (h->n_crashes < 4)
      snprintf(h->crashes[h->n_crashes], sizeof h->crashes[0], "%s", err);
    h->n_crashes++;
  }
}

/* Writes node id's fault file: seed, its cuts (drop=1 first: the first matching rule
 * applies), then its transport rule on every other node's link. Written to a temp file and
 * renamed over, so the node never reads half a spec. */
static int write_faults(struct harness *h, uint32_t id)
{
  int i = node_index(h, id), n = exo_local_cluster_size(h->c);
  char path[PATH_MAX], tmp[PATH_MAX + 8];
  exo_local_cluster_fault_file(h->c, i, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return -errno;
  fprintf(f, "seed=%" PRIu64 "\n", h->seed + id);
  for (int j = 0; j < n; j++) {
    uint32_t peer = exo_local_cluster_node_id(h->c, j);
    if (peer != id && h->cut[id][peer])
      fprintf(f, "to=%u,drop=1\n", peer);
  }
  for (int j = 0; h->spec[id][0] && j < n; j++) {
    uint32_t peer = exo_local_cluster_node_id(h->c, j);
    if (peer != id)
      fprintf(f, "to=%u,%s\n", peer, h->spec[id]);
  }
  if (fclose(f) || rename(tmp, path))
    return -errno;
  return 0;
}

static void set_cut(struct harness *h, uint32_t a, uint32_t b, bool on)
{
  h->cut[a][b] = h->cut[b][a] = on;
  write_faults(h, a);
  write_faults(h, b);
}

static int apply_event(struct harness *h, const struct exo_scn_event *e, int late)
{
  int i = node_index(h, e->node), n = exo_local_cluster_size(h->c), rc = 0;
  pid_t pid = i >= 0 ? exo_local_cluster_pid(h->c, i) : 0;
  char err[256];
  double t = now_real();
  switch (e->action) {
  case EXO_SCN_KILL:
    h->killed |= 1u << e->node;
    if (pid > 0)
      kill(pid, SIGKILL);
    h->stopped &= ~(1u << e->node);
    break;
  case EXO_SCN_STOP:
    if (pid > 0)
      kill(pid, SIGSTOP);
    h->stopped |= 1u << e->node;
    break;
  case EXO_SCN_CONT:
    if (pid > 0)
      kill(pid, SIGCONT);
    h->stopped &= ~(1u << e->node);
    break;
  case EXO_SCN_RESTART:
    h->killed |= 1u << e->node; /* the kill inside restart is ours */
    rc = exo_local_cluster_restart(h->c, i, err, sizeof err);
    h->killed &= ~(1u << e->node);
    h->stopped &= ~(1u << e->node);
    if (rc)
      fprintf(stderr, "fault-harness: restart node %u: %s\n", e->node, err);
    break;
  case EXO_SCN_FAULTS:
    for (int j = 0; j < n; j++) {
      uint32_t id = exo_local_cluster_node_id(h->c, j);
      if (e->node && id != e->node)
        continue;
      snprintf(h->spec[id], sizeof h->spec[id], "%s", e->spec);
      write_faults(h, id);
    }
    break;
  case EXO_SCN_CUT:
    set_cut(h, e->node, e->node_b, true);
    break;
  case EXO_SCN_HEAL:
    set_cut(h, e->node, e->node_b, false);
    break;
  case EXO_SCN_PARTITION:
    for (int j = 0; j < n; j++) {
      uint32_t id = exo_local_cluster_node_id(h->c, j);
      if (id != e->node)
        h->cut[id][e->node] = h->cut[e->node][id] = true;
    }
    for (int j = 0; j < n; j++)
      write_faults(h, exo_local_cluster_node_id(h->c, j));
    break;
  case EXO_SCN_HEAL_ALL:
    for (uint32_t a = 1; a < MAX_NODES; a++)
      for (uint32_t b = 1; b < MAX_NODES; b++)
        if (!e->node || a == e->node || b == e->node)
          h->cut[a][b] = false;
    for (int j = 0; j < n; j++)
      write_faults(h, exo_local_cluster_node_id(h->c, j));
    break;
  }
  if (h->n_faults < MAX_FAULTS)
    h->faults[h->n_faults++] = (struct fault_rec){e->action, e->node, e->node_b, t, e->line, late};
  return rc;
}

/* ---- client streams ---- */

struct stream {
  struct harness *h;
  int idx;
  pthread_t th;
  int started;
};

static void on_event(void *arg, const struct exo_req_event *e)
{
  struct harness *h = arg;
  if (!(e->flags & EXO_REQ_EV_TOKEN) || h->phase != 1)
    return;
  struct tok_rec r = {now_real(), 0};
  for (uint32_t j = 0; j < e->n_stages; j++)
    if (e->stages[j].node < 32)
      r.mask |= 1u << e->stages[j].node;
  atomic_fetch_add(&h->tokens, 1);
  pthread_mutex_lock(&h->mu);
  if (h->n_toks == h->cap_toks) {
    size_t cap = h->cap_toks ? h->cap_toks * 2 : 4096;
    struct tok_rec *nt = realloc(h->toks, cap * sizeof *nt);
    if (nt) {
      h->toks = nt;
      h->cap_toks = cap;
    }
  }
  if (h->n_toks < h->cap_toks)
    h->toks[h->n_toks++] = r;
  pthread_mutex_unlock(&h->mu);
}

static void *stream_main(void *arg)
{
  struct stream *st = arg;
  struct harness *h = st->h;
  struct exo_client *cl = NULL;
  char err[512];
  uint32_t origin = 0;
  int oi = node_index(h, h->s->origin);
  if (exo_client_new(NULL, &cl, err, sizeof err)) {
    fprintf(stderr, "fault-harness: stream %d: %s\n", st->idx, err);
    goto out;
  }
  for (int tries = 0; exo_client_connect(cl, exo_local_cluster_addr(h->c, oi), 200, &origin, err,
                                         sizeof err);
       tries++)
    if (tries > 50) {
      fprintf(stderr, "fault-harness: stream %d: connect: %s\n", st->idx, err);
      goto out;
    }
  for (;;) {
    if (atomic_load(&h->stop))
      break;
    int k = atomic_fetch_add(&h->next_req, 1);
    if (k >= h->s->requests) {
      if (!h->s->loop || h->phase == 0)
        break;
      k %= h->s->requests;
    }
    struct req *r = &h->reqs[k];
    struct exo_req_submit sub = {.sp = r->sp, .max_tokens = r->max_tokens,
                                 .flags = EXO_REQ_F_STATS, .prompt = r->prompt,
                                 .n_prompt = r->n_prompt};
    struct exo_client_result res = {0};
    err[0] = '\0';
    int rc = exo_client_generate(cl, origin, &sub, on_event, h, h->s->timeout_ms, &res, err,
                                 sizeof err);
    pthread_mutex_lock(&h->mu);
    h->sent++;
    if (h->phase == 0) {
      if (rc == 0) {
        r->ref = res.ids;
        r->n_ref = res.n_ids;
        res.ids = NULL;
        h->completed++;
      } else {
        h->failed++;
        note(h, "reference request %d: %s", k, err);
      }
    } else if (rc == 0) {
      h->completed++;
      if (res.attempts > 1)
        h->resumed++;
      if ((long)res.attempts > h->max_attempts)
        h->max_attempts = res.attempts;
      size_t diff = 0;
      while (diff < res.n_ids && diff < r->n_ref && res.ids[diff] == r->ref[diff])
        diff++;
      if (diff == res.n_ids && res.n_ids == r->n_ref) {
        h->identical++;
      } else {
        h->altered++;
        note(h, "ALTERED request %d (temperature %.2f seed %" PRIu64 ", attempts %u): %zu ids, "
                "fault-free %zu; first difference at index %zu: got %d, want %d",
             k, r->sp.temperature, r->sp.seed, res.attempts, res.n_ids, r->n_ref, diff,
             diff < res.n_ids ? res.ids[diff] : -1, diff < r->n_ref ? r->ref[diff] : -1);
      }
    } else if (rc == -ETIMEDOUT || !err[0]) {
      h->lost++;
      note(h, "LOST request %d: no final event within %d ms (%s)", k, h->s->timeout_ms,
           err[0] ? err : "no error text");
    } else {
      h->failed++;
      note(h, "failed request %d: %s", k, err);
    }
    pthread_mutex_unlock(&h->mu);
    exo_client_result_fini(&res);
  }
out:
  exo_client_free(cl);
  atomic_fetch_sub(&h->streams_left, 1);
  return NULL;
}

/* Runs the load; in the fault phase the calling thread drives the timeline meanwhile.
 * Returns 0, or -1 when streams could not start. */
static int run_phase(struct harness *h, int phase, struct exo_scenario *s)
{
  h->phase = phase;
  atomic_store(&h->next_req, 0);
  atomic_store(&h->stop, 0);
  atomic_store(&h->tokens, 0);
  int k = s->concurrency;
  struct stream *st = calloc((size_t)k, sizeof *st);
  if (!st)
    return -1;
  atomic_store(&h->streams_left, k);
  double t0 = now_real(), last = t0;
  for (int i = 0; i < k; i++) {
    st[i] = (struct stream){.h = h, .idx = i};
    if (pthread_create(&st[i].th, NULL, stream_main, &st[i]) == 0)
      st[i].started = 1;
    else
      atomic_fetch_sub(&h->streams_left, 1);
  }
  int next = 0;
  double done_at = 0;
  while (atomic_load(&h->streams_left) > 0) {
    nap_ms(5);
    if (phase != 1)
      continue;
    reap(h);
    while (next < s->n_ev) {
      const struct exo_scn_event *e = &s->ev[next];
      double now = now_real();
      bool due = e->trigger == EXO_SCN_AT_MS      ? (now - t0) * 1e3 >= e->at
                 : e->trigger == EXO_SCN_AFTER_MS ? (now - last) * 1e3 >= e->at
                                                  : (double)atomic_load(&h->tokens) >= e->at;
      if (!due)
        break;
      apply_event(h, e, 0);
      last = now_real();
      next++;
    }
    /* a looping load ends 2 s after the last event: time to measure its recovery */
    if (s->loop && next == s->n_ev) {
      if (!done_at)
        done_at = now_real();
      else if (now_real() - done_at > 2.0)
        atomic_store(&h->stop, 1);
    }
  }
  for (int i = 0; i < k; i++)
    if (st[i].started)
      pthread_join(st[i].th, NULL);
  free(st);
  /* events the load did not live to see still run: the end state must be checked */
  for (; phase == 1 && next < s->n_ev; next++)
    apply_event(h, &s->ev[next], 1);
  return 0;
}

/* ---- analysis ---- */

/* "2026-11-23T12:34:56.789Z ..." -> unix seconds; 0 when the line has no stamp. */
static double log_time(const char *line)
{
  struct tm tm = {0};
  int ms = 0;
  if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
             &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (double)timegm(&tm) + ms / 1e3;
}

/* The first line after t (minus slack) in a log of any node but skip that contains text;
 * its time (0: none) and, through silent, a "silent for N ms" value. */
static double first_log_after(struct harness *h, uint32_t skip, const char *text, double t,
                              double until, int *silent)
{
  double best = 0;
  for (int i = 0; i < exo_local_cluster_size(h->c); i++) {
    uint32_t id = exo_local_cluster_node_id(h->c, i);
    if (id == skip)
      continue;
    char path[PATH_MAX], line[1024];
    snprintf(path, sizeof path, "%s/node%u.log", exo_local_cluster_dir(h->c), id);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    while (fgets(line, sizeof line, f)) {
      if (!strstr(line, text))
        continue;
      double lt = log_time(line);
      /* log stamps are whole ms: allow one */
      if (lt < t - 0.001 || lt > until || (best && lt >= best))
        continue;
      best = lt;
      const char *p = strstr(line, "silent for ");
      if (silent)
        *silent = p ? atoi(p + 11) : -1;
    }
    fclose(f);
  }
  return best;
}

/* After exo_local_cluster_free: the dir is kept (EXO_KEEP_CLUSTER_DIR), node ids 1..n. */
static int scan_sanitizers(const char *dir, int n, FILE *rep)
{
  static const char *const pats[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                                     "runtime error:", "WARNING: ThreadSanitizer",
                                     "AddressSanitizer:DEADLYSIGNAL"};
  int found = 0;
  for (int i = 1; i <= n; i++) {
    char path[PATH_MAX + 32], line[1024];
    snprintf(path, sizeof path, "%s/node%d.log", dir, i);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    while (fgets(line, sizeof line, f))
      for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++)
        if (strstr(line, pats[p])) {
          if (found++ < 5)
            fprintf(rep, "  sanitizer: node %d: %s", i, line);
          break;
        }
    fclose(f);
  }
  return found;
}

/* exo_shard_kv_caches from node i's api /metrics; -1 when it cannot be read. */
static long kv_caches(struct harness *h, int i)
{
  int port = exo_local_cluster_api_port(h->c, i);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || !port) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  long v = -1;
  static const char q[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      send(fd, q, sizeof q - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof q - 1)) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while (buf && len < cap && (r = recv(fd, buf + len, cap - len, 0)) > 0)
      len += (size_t)r;
    if (buf) {
      buf[len] = '\0';
      const char *p = strstr(buf, "\nexo_shard_kv_caches ");
      if (p)
        v = strtol(p + 21, NULL, 10);
      free(buf);
    }
  }
  close(fd);
  return v;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
  if (!n)
    return NAN;
  int k = (int)ceil(p * n) - 1;
  return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* ---- setup ---- */

static int make_requests(struct harness *h, char *err, size_t errlen)
{
  struct exo_model_config mc;
  int rc = exo_model_config_load(h->s->model, &mc, err, errlen);
  if (rc)
    return rc;
  h->reqs = calloc((size_t)h->s->requests, sizeof *h->reqs);
  if (!h->reqs)
    return -ENOMEM;
  uint64_t x = h->seed * 0x2545f4914f6cdd1dull + 17;
  for (int k = 0; k < h->s->requests; k++) {
    struct req *r = &h->reqs[k];
    r->n_prompt = (size_t)rand_in(&x, h->s->prompt_tokens[0], h->s->prompt_tokens[1]);
    r->prompt = calloc(r->n_prompt, sizeof *r->prompt);
    if (!r->prompt)
      return -ENOMEM;
    for (size_t j = 0; j < r->n_prompt; j++)
      r->prompt[j] = rand_in(&x, 1, mc.vocab_size - 1);
    r->max_tokens = (uint32_t)rand_in(&x, h->s->max_tokens[0], h->s->max_tokens[1]);
    if (r->n_prompt + r->max_tokens > (size_t)mc.max_position_embeddings)
      r->max_tokens = (uint32_t)(mc.max_position_embeddings - (int)r->n_prompt);
    exo_sample_params_default(&r->sp);
    if ((double)(splitmix(&x) % 1000) >= h->s->greedy_fraction * 1000) {
      r->sp.temperature = 0.8f;
      r->sp.top_p = 0.9f;
      r->sp.seed = splitmix(&x);
    }
  }
  return 0;
}

/* Random faults for ms: one at a time, each undone before the next, the origin never. */
static void make_soak(struct exo_scenario *s, uint64_t seed, int ms)
{
  uint64_t x = seed ^ 0x5eedull;
  double t = 0;
  s->n_ev = 0;
  int victims[16], nv = 0;
  for (int id = 1; id <= s->nodes; id++)
    if ((uint32_t)id != s->origin)
      victims[nv++] = id;
  while (t < ms && s->n_ev + 2 <= EXO_SCN_MAX_EVENTS && nv) {
    struct exo_scn_event *a = &s->ev[s->n_ev], *b = &s->ev[s->n_ev + 1];
    memset(a, 0, 2 * sizeof *a);
    uint32_t v = (uint32_t)victims[rand_in(&x, 0, nv - 1)];
    int gap = rand_in(&x, 800, 2500), hold = rand_in(&x, 500, 2000);
    a->trigger = b->trigger = EXO_SCN_AFTER_MS;
    a->at = gap;
    b->at = hold;
    a->node = b->node = v;
    switch (rand_in(&x, 0, 3)) {
    case 0:
      a->action = EXO_SCN_KILL;
      b->action = EXO_SCN_RESTART;
      break;
    case 1:
      a->action = EXO_SCN_STOP;
      b->action = EXO_SCN_CONT;
      break;
    case 2:
      a->action = EXO_SCN_PARTITION;
      b->action = EXO_SCN_HEAL_ALL;
      break;
    default:
      a->action = b->action = EXO_SCN_FAULTS;
      a->node = b->node = 0;
      snprintf(a->spec, sizeof a->spec, "drop=%.2f,dup=%.2f,reorder=%.2f,corrupt=%.3f,delay=%d,"
               "jitter=%d", rand_in(&x, 0, 10) / 100.0, rand_in(&x, 0, 5) / 100.0,
               rand_in(&x, 0, 5) / 100.0, rand_in(&x, 0, 2) / 1000.0, rand_in(&x, 0, 20),
               rand_in(&x, 0, 20));
      break;
    }
    t += gap + hold;
    s->n_ev += 2;
  }
  s->loop = 1;
}

/* Repeated kills of the non-origin nodes, each restarted before the next. */
static void make_bench(struct exo_scenario *s, int kills)
{
  s->n_ev = 0;
  for (int k = 0; k < kills && s->n_ev + 2 <= EXO_SCN_MAX_EVENTS; k++) {
    uint32_t v = (uint32_t)(1 + k % s->nodes);
    if (v == s->origin)
      v = (uint32_t)(1 + (k + 1) % s->nodes);
    s->ev[s->n_ev++] = (struct exo_scn_event){.trigger = EXO_SCN_AFTER_MS, .at = 1500,
                                              .action = EXO_SCN_KILL, .node = v};
    s->ev[s->n_ev++] = (struct exo_scn_event){.trigger = EXO_SCN_AFTER_MS, .at = 1500,
                                              .action = EXO_SCN_RESTART, .node = v};
  }
  s->loop = 1;
}

/* Waits until a request spans want nodes with its fault-free ids. */
/* stop_on_exit: give up as soon as a node has exited (start-up, where no node is killed). */
static int wait_stages(struct harness *h, int want, int timeout_ms, double *took,
                       int stop_on_exit)
{
  struct exo_client *cl = NULL;
  char err[512];
  uint32_t origin = 0;
  double t0 = now_real();
  int ok = 0;
  if (exo_client_new(NULL, &cl, err, sizeof err))
    return 0;
  int oi = node_index(h, h->s->origin);
  while (!ok && (now_real() - t0) * 1e3 < timeout_ms) {
    if (stop_on_exit) {
      reap(h);
      if (h->n_crashes)
        break; /* a node that exited will not serve (the caller reports it) */
    }
    if (!origin && exo_client_connect(cl, exo_local_cluster_addr(h->c, oi), 200, &origin, err,
                                      sizeof err))
      continue;
    struct req *r = &h->reqs[0];
    struct exo_req_submit sub = {.sp = r->sp, .max_tokens = r->max_tokens,
                                 .flags = EXO_REQ_F_STATS, .prompt = r->prompt,
                                 .n_prompt = r->n_prompt};
    struct exo_client_result res = {0};
    if (exo_client_generate(cl, origin, &sub, NULL, NULL, 10000, &res, err, sizeof err) == 0 &&
        res.n_ids) {
      ok = (int)res.events[res.n_ids - 1].n_stages == want;
      if (ok && r->ref)
        ok = res.n_ids == r->n_ref && !memcmp(res.ids, r->ref, r->n_ref * sizeof *r->ref);
    }
    exo_client_result_fini(&res);
    if (!ok)
      nap_ms(100);
  }
  exo_client_free(cl);
  *took = now_real() - t0;
  return ok;
}

static bool is_loss(enum exo_scn_action a)
{
  return a == EXO_SCN_KILL || a == EXO_SCN_STOP || a == EXO_SCN_PARTITION;
}

static void usage(void)
{
  fprintf(stderr, "usage: fault-harness SCENARIO.yaml [--seed N] [--report FILE] "
                  "[--bench [KILLS]] [--duration 10m|90s|N_MS] [--keep]\n");
}

static int parse_duration(const char *s, int *ms)
{
  char *end;
  double v = strtod(s, &end);
  if (end == s || v <= 0)
    return -EINVAL;
  double mul = !*end ? 1 : !strcmp(end, "ms") ? 1 : !strcmp(end, "s") ? 1e3
               : !strcmp(end, "m") ? 60e3 : !strcmp(end, "h") ? 3600e3 : -1;
  if (mul < 0 || v * mul > 24 * 3600e3)
    return -EINVAL;
  *ms = (int)(v * mul);
  return 0;
}

int main(int argc, char **argv)
{
  const char *path = NULL, *report = NULL;
  uint64_t seed = 1;
  int bench = 0, duration_ms = 0, keep = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
      char *end;
      seed = strtoull(argv[++i], &end, 10);
      if (*end) {
        fprintf(stderr, "fault-harness: --seed: expected an integer, got '%s'\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--report") && i + 1 < argc) {
      report = argv[++i];
    } else if (!strcmp(argv[i], "--bench")) {
      bench = 20;
      if (i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9')
        bench = atoi(argv[++i]);
      if (bench < 1 || bench > EXO_SCN_MAX_EVENTS / 2) {
        fprintf(stderr, "fault-harness: --bench: expected 1..%d kills\n",
                EXO_SCN_MAX_EVENTS / 2);
        return 2;
      }
    } else if (!strcmp(argv[i], "--duration") && i + 1 < argc) {
      if (parse_duration(argv[++i], &duration_ms)) {
        fprintf(stderr, "fault-harness: --duration: expected e.g. 10m, 90s or 5000ms, got "
                        "'%s'\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--keep")) {
      keep = 1;
    } else if (argv[i][0] != '-' && !path) {
      path = argv[i];
    } else {
      usage();
      return 2;
    }
  }
  if (!path) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  static struct exo_scenario s;
  char err[1024];
  if (exo_scenario_load(path, &s, err, sizeof err)) {
    fprintf(stderr, "fault-harness: %s\n", err);
    return 2;
  }
  if (duration_ms && !s.soak_ms) {
    fprintf(stderr, "fault-harness: --duration: %s is not a soak scenario (no soak_ms)\n", path);
    return 2;
  }
  if (s.soak_ms)
    make_soak(&s, seed, duration_ms ? duration_ms : s.soak_ms);
  if (bench)
    make_bench(&s, bench);

  static struct harness h;
  h.s = &s;
  h.seed = seed;
  pthread_mutex_init(&h.mu, NULL);
  if (make_requests(&h, err, sizeof err)) {
    fprintf(stderr, "fault-harness: %s\n", err);
    return 2;
  }
  char exe[PATH_MAX];
  const char *build = getenv("EXO_BUILD_ROOT");
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", build ? build : ".");
  /* the harness removes the dir itself, after scanning the logs the nodes' exit left */
  setenv("EXO_KEEP_CLUSTER_DIR", "1", 1);
  char origin_opts[300];
  snprintf(origin_opts, sizeof origin_opts, "%s", s.origin_options);
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = s.nodes, .first_id = 1,
                                     .model = s.model, .log_level = "info", .min_nodes = 1,
                                     .settle_ms = 100, .batch = s.batch, .api = 1,
                                     .fault_files = 1,
                                     .origin_options = origin_opts[0] ? origin_opts : NULL,
                                     .partitioner_options = s.partitioner_options[0]
                                                                ? s.partitioner_options
                                                                : NULL};
  if (exo_local_cluster_start(&o, &h.c, err, sizeof err)) {
    fprintf(stderr, "fault-harness: %s\n", err);
    return 2;
  }
  double took;
  if (!wait_stages(&h, s.nodes, 60000, &took, 1)) {
    reap(&h);
    fprintf(stderr,
            "fault-harness: the cluster did not serve on %d nodes (%.1f s)%s%s (logs: %s)\n",
            s.nodes, took, h.n_crashes ? ": " : "", h.n_crashes ? h.crashes[0] : "",
            exo_local_cluster_dir(h.c));
    exo_local_cluster_free(h.c);
    return 2;
  }
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", exo_local_cluster_dir(h.c));
  char *rep_buf = NULL;
  size_t rep_len = 0;
  FILE *rep = open_memstream(&rep_buf, &rep_len);
  if (!rep) {
    exo_local_cluster_free(h.c);
    return 2;
  }
  int ok = 1;
  fprintf(rep, "fault-harness: %s (%s), seed %" PRIu64 "%s\n", s.name, path, seed,
          bench ? ", bench" : "");
  fprintf(rep, "  mode: loopback + transport hooks (runtime/fault.h via each node's faults "
               "file; no network namespaces)\n");
  fprintf(rep, "  cluster: %d nodes, model %s, clients submit through node %u\n", s.nodes,
          s.model, s.origin);
  fprintf(rep, "  cluster served on all %d nodes after %.0f ms\n", s.nodes, took * 1e3);

  /* phase 0: the fault-free tokens */
  run_phase(&h, 0, &s);
  if (h.failed) {
    fprintf(stderr, "fault-harness: the fault-free run failed: %s\n", h.notes[0]);
    exo_local_cluster_free(h.c);
    fclose(rep);
    free(rep_buf);
    return 2;
  }
  long ref_tokens = 0;
  for (int k = 0; k < s.requests; k++)
    ref_tokens += (long)h.reqs[k].n_ref;
  fprintf(rep, "  load: %d requests (%d streams%s), %ld fault-free tokens recorded\n",
          s.requests, s.concurrency, s.loop ? ", repeated until the timeline ends" : "",
          ref_tokens);
  h.sent = h.completed = h.failed = 0;
  h.n_notes = 0;

  /* phase 1: the same load under the timeline */
  double t_load = now_real();
  run_phase(&h, 1, &s);
  double load_s = now_real() - t_load;
  reap(&h);
  /* end state: every node thawed and reachable, faults off */
  for (uint32_t id = 1; id <= (uint32_t)s.nodes; id++)
    if (h.stopped & (1u << id)) {
      struct exo_scn_event e = {.action = EXO_SCN_CONT, .node = id};
      apply_event(&h, &e, 1);
    }
  memset(h.cut, 0, sizeof h.cut);
  memset(h.spec, 0, sizeof h.spec);
  for (int i = 0; i < s.nodes; i++)
    write_faults(&h, exo_local_cluster_node_id(h.c, i));

  fprintf(rep, "requests: sent %ld, completed %ld, identical %ld, altered %ld, "
               "failed-with-clear-error %ld, lost %ld (resumed after a re-issue: %ld, most "
               "attempts %ld; %.1f s, %ld tokens)\n",
          h.sent, h.completed, h.identical, h.altered, h.failed, h.lost, h.resumed,
          h.max_attempts, load_s, (long)atomic_load(&h.tokens));
  for (int i = 0; i < h.n_notes; i++)
    fprintf(rep, "  %s\n", h.notes[i]);
  if (h.lost || h.altered || h.failed > s.max_failed || h.completed + h.failed + h.lost != h.sent)
    ok = 0;

  /* per fault: detection (a survivor's log: "node V suspected"), map (the origin's
   * "map epoch ... is live"), recovery (the first token after the fault that no longer
   * passed through V), rejoin (after a restart or thaw: the first token through V again) */
  double det[MAX_FAULTS], rec[MAX_FAULTS];
  int n_det = 0, n_rec = 0;
  fprintf(rep, "faults:\n");
  for (int f = 0; f < h.n_faults; f++) {
    struct fault_rec *fr = &h.faults[f];
    double t = fr->t, until = f + 1 < h.n_faults ? h.faults[f + 1].t : 1e18;
    fprintf(rep, "  +%7.0f ms %-9s node %u", (t - t_load) * 1e3,
            exo_scn_action_name(fr->action), fr->node);
    if (fr->node_b)
      fprintf(rep, "-%u", fr->node_b);
    if (fr->late)
      fprintf(rep, " (after the load)");
    uint32_t bit = fr->node < 32 ? 1u << fr->node : 0;
    if (is_loss(fr->action) && !fr->late) {
      char pat[64];
      int silent = -1;
      snprintf(pat, sizeof pat, "node %u suspected: silent for ", fr->node);
      double td = first_log_after(&h, fr->node, pat, t, until + 5, &silent);
      if (td) {
        det[n_det++] = (td - t) * 1e3;
        fprintf(rep, ": detected %.0f ms (silent for %d ms)", (td - t) * 1e3, silent);
      } else {
        fprintf(rep, ": not detected");
      }
      double tm = first_log_after(&h, fr->node, "is live (", t, until + 5, NULL);
      if (tm)
        fprintf(rep, ", map %.0f ms", (tm - t) * 1e3);
      double tr = 0;
      pthread_mutex_lock(&h.mu);
      for (size_t k = 0; k < h.n_toks; k++)
        if (h.toks[k].t > t && h.toks[k].mask && !(h.toks[k].mask & bit)) {
          tr = h.toks[k].t;
          break;
        }
      pthread_mutex_unlock(&h.mu);
      if (tr && tr < until + 5) {
        rec[n_rec++] = (tr - t) * 1e3;
        fprintf(rep, ", recovery %.0f ms", (tr - t) * 1e3);
      } else {
        fprintf(rep, ", no token after it");
      }
    } else if ((fr->action == EXO_SCN_RESTART || fr->action == EXO_SCN_CONT ||
                fr->action == EXO_SCN_HEAL_ALL) && fr->node && !fr->late) {
      double tj = 0;
      pthread_mutex_lock(&h.mu);
      for (size_t k = 0; k < h.n_toks; k++)
        if (h.toks[k].t > t && (h.toks[k].mask & bit)) {
          tj = h.toks[k].t;
          break;
        }
      pthread_mutex_unlock(&h.mu);
      if (tj)
        fprintf(rep, ": serving again after %.0f ms", (tj - t) * 1e3);
    }
    fprintf(rep, "\n");
  }
  if (n_det || n_rec) {
    qsort(det, (size_t)n_det, sizeof *det, cmp_double);
    qsort(rec, (size_t)n_rec, sizeof *rec, cmp_double);
    fprintf(rep, "timing over %d node losses: detection p50 %.0f ms p99 %.0f ms max %.0f ms "
                 "(%d detected); recovery p50 %.0f ms p99 %.0f ms max %.0f ms (%d measured)\n",
            h.n_faults ? n_det : 0, pct(det, n_det, 0.5), pct(det, n_det, 0.99),
            n_det ? det[n_det - 1] : NAN, n_det, pct(rec, n_rec, 0.5), pct(rec, n_rec, 0.99),
            n_rec ? rec[n_rec - 1] : NAN, n_rec);
  }

  /* the end state */
  if (s.final_stages) {
    int back = wait_stages(&h, s.final_stages, 20000, &took, 0);
    fprintf(rep, "final: a request spans %d nodes again with its fault-free ids: %s (%.0f ms)\n",
            s.final_stages, back ? "yes" : "NO", took * 1e3);
    if (!back)
      ok = 0;
  }
  /* leaked KV caches: every live node's shard must hold none once the load is over. A
   * cache whose CANCELs were all lost (both the origin's and the last stage's, under drop
   * faults) is freed by the shard's idle sweep: idle_ttl_ms (30 s by default) plus one
   * sweep (1 s), so that is how long a node may take, and the report says how long. */
  int leaked = 0;
  const double drain_s = 30 + 1 + 2;
  for (int i = 0; i < s.nodes; i++) {
    uint32_t id = exo_local_cluster_node_id(h.c, i);
    if (!exo_local_cluster_pid(h.c, i) || (h.killed & (1u << id)))
      continue;
    long v = -1, first = -1;
    const double t0 = now_real();
    while (now_real() - t0 < drain_s) {
      v = kv_caches(&h, i);
      if (first < 0)
        first = v;
      if (v == 0)
        break;
      nap_ms(100);
    }
    if (v != 0) {
      leaked++;
      fprintf(rep, "  KV caches: node %u holds %ld %.0f s after the load%s\n", id, v, drain_s,
              v < 0 ? " (metrics unreadable)" : "");
    } else if (first > 0) {
      const double took = now_real() - t0; /* > 1 s: all CANCELs lost, the sweep freed it */
      fprintf(rep, "  KV caches: node %u held %ld right after the load, none after %.1f s%s\n",
              id, first, took, took > 1 ? " (its idle sweep)" : "");
    }
  }
  fprintf(rep, "KV caches left: %s\n", leaked ? "YES" : "none");
  if (leaked)
    ok = 0;
  reap(&h);
  exo_local_cluster_free(h.c); /* SIGTERM: the nodes' exit-time leak checks land in the logs */
  h.c = NULL;
  int sans = scan_sanitizers(dir, s.nodes, rep);
  fprintf(rep, "crashes: %d, sanitizer reports: %d\n", h.n_crashes, sans);
  for (int i = 0; i < h.n_crashes && i < 4; i++)
    fprintf(rep, "  crash: %s\n", h.crashes[i]);
  if (h.n_crashes || sans)
    ok = 0;
  fprintf(rep, "result: %s\n", ok ? "PASS" : "FAIL");
  fclose(rep);
  fputs(rep_buf, stdout);
  if (report) {
    FILE *f = fopen(report, "w");
    if (!f || fputs(rep_buf, f) < 0 || fclose(f))
      fprintf(stderr, "fault-harness: --report %s: %s\n", report, strerror(errno));
  }
  free(rep_buf);
  if (!keep && ok) {
    char p[PATH_MAX + 32];
    for (int i = 0; i < s.nodes; i++) {
      static const char *const ext[] = {"yaml", "log", "faults", "faults.tmp", "yaml.node-id"};
      for (size_t e = 0; e < sizeof ext / sizeof ext[0]; e++) {
        snprintf(p, sizeof p, "%s/node%d.%s", dir, i + 1, ext[e]);
        unlink(p);
      }
    }
    if (rmdir(dir) && !keep)
      fprintf(stderr, "fault-harness: %s left behind: %s\n", dir, strerror(errno));
  } else {
    fprintf(stderr, "fault-harness: node logs kept in %s\n", dir);
  }
  for (int k = 0; k < s.requests; k++) {
    free(h.reqs[k].prompt);
    free(h.reqs[k].ref);
  }
  free(h.reqs);
  free(h.toks);
  return ok ? 0 : 1;
}
