/* runtime/fault.c: transport fault injection (spec and order of effects in fault.h).
 * Must not block a loop: frames that wait do so on loop 0 timers; the mutex guards only
 * decisions (microseconds). Must not leak a held frame: every one is on loop 0's list
 * (dropped at detach), in a link's reorder slot (dropped at free) or in a queued item
 * (dropped by the loop's drop function).
 *
 * Threads: senders call exo_fault_send from any loop (or the main thread); spec, links
 * and RNG streams are under mu. The held list, the poll timer and the file state are
 * loop 0's alone. Reproducibility: each destination node has its own RNG stream seeded
 * from (seed, node id), so its decisions depend only on the order of its own frames. */
#include "runtime/fault.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <nanomsg/nn.h>

#include "common/err.h"
#include "runtime/log.h"
#include "runtime/node_private.h"

#define FILE_MAX (64u << 10) /* bytes of an @PATH spec file */

struct fault_rule {
  bool has_to, has_type;
  uint32_t to;
  uint16_t type;
  double drop, dup, reorder, corrupt;
  uint32_t delay_ms, jitter_ms;
  uint64_t bw; /* bytes/s, 0: no cap */
};

struct fault_fail {
  char name[EXO_CONFIG_MAX_NAME + 1];
  double p;
};

struct fault_spec {
  uint64_t seed;
  struct fault_rule rules[EXO_FAULT_MAX_RULES];
  size_t n_rules;
  struct fault_fail fails[EXO_FAULT_MAX_RULES];
  size_t n_fails;
};

struct fault_link {
  uint32_t dst;  /* node id; 0: slot free */
  uint64_t rng;
  uint64_t next_free_us; /* bw bucket: when the link is free again */
  void *held;            /* reorder slot: a frame waiting for the next one */
  size_t held_len;
  int held_sock;
};

/* A frame (or a reorder flush) waiting for its time on loop 0. */
struct held_frame {
  struct exo_loop_item item;
  struct exo_faults *f;
  struct event *ev;
  struct held_frame *prev, *next;
  uint64_t due_us; /* monotonic */
  int sock;
  void *frame;   /* NULL: flush the reorder slot of link dst */
  size_t len;
  uint32_t dst;
};

struct exo_faults {
  struct exo_node *node;
  pthread_mutex_t mu;
  struct fault_spec spec;                         /* (mu) */
  struct fault_link links[EXO_FAULT_MAX_LINKS + 1]; /* (mu) last one: shared overflow */
  uint64_t fail_rng;                              /* (mu) */
  char *path;                                     /* (mu) @PATH being watched, or NULL */
  struct stat path_stat;                          /* (mu) as read by exo_node_set_faults */
  bool path_exists;                               /* (mu) */
  atomic_bool on;                                 /* any rule or fail= in force */
  /* loop 0 */
  struct event *poll_ev;
  bool have_stat, detached;
  struct stat last;
  struct held_frame *held;
  /* stats */
  _Atomic uint64_t dropped, duplicated, corrupted, delayed, reordered, paced, handler_failures,
      held_dropped, reloads;
};

/* ---- RNG: splitmix64 to seed, xorshift64* per stream ---- */

static uint64_t splitmix64(uint64_t x)
{
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t rng_next(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545f4914f6cdd1dull;
}

static double rng_unit(uint64_t *s) /* [0, 1) */
{
  return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static bool rng_chance(uint64_t *s, double p)
{
  return p > 0 && (p >= 1 || rng_unit(s) < p);
}

static uint64_t now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- spec parser ---- */

static int parse_u64(const char *v, uint64_t *out, bool suffix)
{
  char *end;
  errno = 0;
  if (*v < '0' || *v > '9')
    return -EINVAL;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno)
    return -EINVAL;
  uint64_t mul = 1;
  if (suffix && *end) {
    mul = *end == 'k' ? 1000ull : *end == 'M' ? 1000000ull : *end == 'G' ? 1000000000ull : 0;
    if (!mul)
      return -EINVAL;
    end++;
  }
  if (*end || (mul > 1 && x > UINT64_MAX / mul))
    return -EINVAL;
  *out = x * mul;
  return 0;
}

static int parse_prob(const char *v, double *out)
{
  char *end;
  errno = 0;
  double p = strtod(v, &end);
  if (errno || end == v || *end || !(p >= 0.0 && p <= 1.0))
    return -EINVAL;
  *out = p;
  return 0;
}

/* Copies token [s, e) trimmed of spaces into buf (cap). */
static void trim_copy(char *buf, size_t cap, const char *s, const char *e)
{
  while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
    s++;
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
    e--;
  size_t n = (size_t)(e - s) < cap - 1 ? (size_t)(e - s) : cap - 1;
  memcpy(buf, s, n);
  buf[n] = '\0';
}

#define ITEM_ERR(...)                                                                    \
  do {                                                                                   \
    char m_[320];                                                                        \
    snprintf(m_, sizeof m_, __VA_ARGS__);                                                \
    exo_errf(err, errlen, "faults: item %zu (%s): %s", idx, item, m_);                   \
    return -EINVAL;                                                                      \
  } while (0)

static int parse_item(struct fault_spec *sp, const char *item, size_t idx, char *err,
                      size_t errlen)
{
  if (!strncmp(item, "seed=", 5)) {
    if (strchr(item, ',') || parse_u64(item + 5, &sp->seed, false) < 0)
      ITEM_ERR("seed must be one unsigned decimal number");
    return 0;
  }
  if (!strncmp(item, "fail=", 5)) {
    if (sp->n_fails == EXO_FAULT_MAX_RULES)
      ITEM_ERR("more than %u fail= items", EXO_FAULT_MAX_RULES);
    struct fault_fail *fl = &sp->fails[sp->n_fails];
    const char *name = item + 5, *at = strchr(name, '@');
    size_t n = at ? (size_t)(at - name) : strlen(name);
    fl->p = 1.0;
    if (n == 0 || n > EXO_CONFIG_MAX_NAME || memchr(name, ',', n) || memchr(name, '/', n))
      ITEM_ERR("fail= needs an actor name of 1..%u characters", EXO_CONFIG_MAX_NAME);
    if (at && parse_prob(at + 1, &fl->p) < 0)
      ITEM_ERR("the probability after @ must be in [0, 1]");
    memcpy(fl->name, name, n);
    fl->name[n] = '\0';
    sp->n_fails++;
    return 0;
  }
  if (sp->n_rules == EXO_FAULT_MAX_RULES)
    ITEM_ERR("more than %u rules", EXO_FAULT_MAX_RULES);
  struct fault_rule r = {0};
  bool effect = false;
  const char *p = item;
  while (*p) {
    const char *comma = strchr(p, ',');
    const char *e = comma ? comma : p + strlen(p);
    char kv[96];
    trim_copy(kv, sizeof kv, p, e);
    char *eq = strchr(kv, '=');
    if (!eq || eq == kv || !eq[1])
      ITEM_ERR("'%s' is not key=value", kv);
    *eq = '\0';
    const char *k = kv, *v = eq + 1;
    uint64_t u;
    int rc = 0;
    if (!strcmp(k, "to")) {
      rc = parse_u64(v, &u, false);
      if (rc == 0 && (u == 0 || u > UINT32_MAX))
        rc = -EINVAL;
      if (rc < 0)
        ITEM_ERR("to must be a node id in 1..4294967295");
      r.has_to = true;
      r.to = (uint32_t)u;
    } else if (!strcmp(k, "type")) {
      rc = parse_u64(v, &u, false);
      if (rc < 0 || u > UINT16_MAX)
        ITEM_ERR("type must be a message type in 0..65535");
      r.has_type = true;
      r.type = (uint16_t)u;
    } else if (!strcmp(k, "drop") || !strcmp(k, "dup") || !strcmp(k, "reorder") ||
               !strcmp(k, "corrupt")) {
      double *dst = !strcmp(k, "drop") ? &r.drop : !strcmp(k, "dup") ? &r.dup
                    : !strcmp(k, "reorder") ? &r.reorder : &r.corrupt;
      if (parse_prob(v, dst) < 0)
        ITEM_ERR("%s must be a probability in [0, 1] (got '%s')", k, v);
      effect = true;
    } else if (!strcmp(k, "delay") || !strcmp(k, "jitter")) {
      rc = parse_u64(v, &u, false);
      if (rc < 0 || u > 600000)
        ITEM_ERR("%s must be milliseconds in 0..600000 (got '%s')", k, v);
      *(!strcmp(k, "delay") ? &r.delay_ms : &r.jitter_ms) = (uint32_t)u;
      effect = true;
    } else if (!strcmp(k, "bw")) {
      if (parse_u64(v, &r.bw, true) < 0 || r.bw == 0)
        ITEM_ERR("bw must be bytes per second > 0, optionally with k, M or G (got '%s')", v);
      effect = true;
    } else {
      ITEM_ERR("unknown key '%s' (expected seed, fail, to, type, drop, dup, reorder, corrupt, "
               "delay, jitter, bw)", k);
    }
    p = comma ? comma + 1 : e;
  }
  if (!effect)
    ITEM_ERR("a rule needs at least one effect (drop, dup, reorder, corrupt, delay, jitter, bw)");
  sp->rules[sp->n_rules++] = r;
  return 0;
}

static int spec_parse(const char *spec, struct fault_spec *sp, char *err, size_t errlen)
{
  memset(sp, 0, sizeof *sp);
  sp->seed = 1;
  if (!spec)
    return 0;
  size_t idx = 0;
  const char *s = spec;
  while (*s) {
    const char *semi = strchr(s, ';');
    const char *e = semi ? semi : s + strlen(s);
    char item[256];
    if ((size_t)(e - s) >= sizeof item) {
      exo_errf(err, errlen, "faults: item %zu is longer than %zu characters", idx + 1,
               sizeof item - 1);
      return -EINVAL;
    }
    trim_copy(item, sizeof item, s, e);
    if (item[0]) {
      idx++;
      int rc = parse_item(sp, item, idx, err, errlen);
      if (rc < 0)
        return rc;
    }
    s = semi ? semi + 1 : e;
  }
  return 0;
}

int exo_faults_check(const char *spec, char *err, size_t errlen)
{
  if (spec && spec[0] == '@')
    return spec[1] ? 0 : (exo_errf(err, errlen, "faults: '@' needs a file path"), -EINVAL);
  struct fault_spec *sp = malloc(sizeof *sp);
  if (!sp)
    return -ENOMEM;
  int rc = spec_parse(spec, sp, err, errlen);
  free(sp);
  return rc;
}

/* ---- applying ---- */

/* Installs sp (mu held): decisions restart from its seed. */
static void apply_locked(struct exo_faults *f, const struct fault_spec *sp)
{
  f->spec = *sp;
  for (size_t i = 0; i <= EXO_FAULT_MAX_LINKS; i++) {
    struct fault_link *l = &f->links[i];
    l->next_free_us = 0;
    l->rng = l->dst ? splitmix64(sp->seed ^ ((uint64_t)l->dst << 32)) | 1 : 0;
  }
  f->fail_rng = splitmix64(sp->seed ^ 0xfa11ull) | 1;
  atomic_store(&f->on, sp->n_rules > 0 || sp->n_fails > 0);
}

static struct fault_link *link_for(struct exo_faults *f, uint32_t dst)
{
  for (size_t i = 0; i < EXO_FAULT_MAX_LINKS; i++) {
    struct fault_link *l = &f->links[i];
    if (l->dst == dst)
      return l;
    if (l->dst == 0) {
      l->dst = dst;
      l->rng = splitmix64(f->spec.seed ^ ((uint64_t)dst << 32)) | 1;
      return l;
    }
  }
  struct fault_link *l = &f->links[EXO_FAULT_MAX_LINKS];
  if (!l->rng)
    l->rng = splitmix64(f->spec.seed ^ 0x5ea1ull) | 1;
  return l;
}

static const struct fault_rule *rule_for(const struct fault_spec *sp, uint32_t dst, uint16_t type)
{
  for (size_t i = 0; i < sp->n_rules; i++) {
    const struct fault_rule *r = &sp->rules[i];
    if ((!r->has_to || r->to == dst) && (!r->has_type || r->type == type))
      return r;
  }
  return NULL;
}

/* ---- held frames (loop 0) ---- */

static void held_release(struct held_frame *h, bool dropped)
{
  if (h->frame) {
    nn_freemsg(h->frame);
    if (dropped)
      atomic_fetch_add(&h->f->held_dropped, 1);
  }
  free(h);
}

static void held_unlink(struct held_frame *h)
{
  struct exo_faults *f = h->f;
  if (h->prev)
    h->prev->next = h->next;
  else
    f->held = h->next;
  if (h->next)
    h->next->prev = h->prev;
  if (h->ev)
    event_free(h->ev);
  h->ev = NULL;
}

static void flush_slot(struct exo_faults *f, uint32_t dst)
{
  pthread_mutex_lock(&f->mu);
  struct fault_link *l = link_for(f, dst);
  void *frame = l->held;
  int sock = l->held_sock;
  l->held = NULL;
  pthread_mutex_unlock(&f->mu);
  if (frame)
    (void)exo_node_peer_send(f->node, sock, frame);
}

static void held_fire(evutil_socket_t fd, short what, void *arg)
{
  (void)fd, (void)what;
  struct held_frame *h = arg;
  struct exo_faults *f = h->f;
  /* libevent measures timeouts from its cached (and possibly coarse) clock, so a timer
   * can fire a few ms early: a held frame never leaves before its due time. */
  uint64_t now = now_us();
  if (now < h->due_us) {
    uint64_t wait = h->due_us - now;
    struct timeval tv = {.tv_sec = (time_t)(wait / 1000000u),
                         .tv_usec = (suseconds_t)(wait % 1000000u)};
    if (evtimer_add(h->ev, &tv) == 0)
      return;
  }
  held_unlink(h);
  if (h->frame) {
    (void)exo_node_peer_send(f->node, h->sock, h->frame);
    h->frame = NULL;
  } else {
    flush_slot(f, h->dst);
  }
  held_release(h, false);
}

static void held_arm(struct exo_loop *loop, struct exo_loop_item *item)
{
  struct held_frame *h = caa_container_of(item, struct held_frame, item);
  struct exo_faults *f = h->f;
  if (f->detached) { /* the node is stopping: in-flight frames are lost */
    held_release(h, true);
    return;
  }
  uint64_t now = now_us();
  uint64_t wait = h->due_us > now ? h->due_us - now : 0;
  struct timeval tv = {.tv_sec = (time_t)(wait / 1000000u), .tv_usec = (suseconds_t)(wait % 1000000u)};
  h->ev = evtimer_new(exo_loop_base(loop), held_fire, h);
  if (!h->ev || evtimer_add(h->ev, &tv) < 0) {
    if (h->ev)
      event_free(h->ev);
    held_release(h, true);
    return;
  }
  h->prev = NULL;
  h->next = f->held;
  if (f->held)
    f->held->prev = h;
  f->held = h;
}

static void held_drop(struct exo_loop_item *item)
{
  held_release(caa_container_of(item, struct held_frame, item), true);
}

/* Any thread: frame (NULL: a reorder flush of dst) goes out at due_us via loop 0. */
static void hold(struct exo_faults *f, int sock, void *frame, size_t len, uint32_t dst,
                 uint64_t due_us)
{
  struct held_frame *h = calloc(1, sizeof *h);
  if (!h) {
    if (frame) {
      nn_freemsg(frame);
      atomic_fetch_add(&f->held_dropped, 1);
    }
    return;
  }
  h->item.run = held_arm;
  h->item.drop = held_drop;
  h->f = f;
  h->sock = sock;
  h->frame = frame;
  h->len = len;
  h->dst = dst;
  h->due_us = due_us;
  if (exo_loop_enqueue(f->node->loops[0], &h->item) < 0)
    held_release(h, true);
}

/* ---- the send path ---- */

int exo_fault_send(struct exo_node *node, uint32_t dst, int sock, void *frame, size_t len)
{
  struct exo_faults *f = node->faults;
  if (!f || !atomic_load_explicit(&f->on, memory_order_relaxed))
    return exo_node_peer_send(node, sock, frame);
  const uint8_t *fb = frame;
  uint16_t type = (uint16_t)(fb[4] | fb[5] << 8);
  if (type == EXO_MSG_HELLO)
    return exo_node_peer_send(node, sock, frame);
  pthread_mutex_lock(&f->mu);
  const struct fault_rule *r = rule_for(&f->spec, dst, type);
  if (!r) {
    pthread_mutex_unlock(&f->mu);
    return exo_node_peer_send(node, sock, frame);
  }
  struct fault_link *l = link_for(f, dst);
  if (rng_chance(&l->rng, r->drop)) {
    pthread_mutex_unlock(&f->mu);
    atomic_fetch_add(&f->dropped, 1);
    nn_freemsg(frame);
    return 0; /* a lossy network: the sender cannot tell */
  }
  void *copy = NULL;
  if (rng_chance(&l->rng, r->dup)) {
    copy = nn_allocmsg(len, 0);
    if (copy) {
      memcpy(copy, frame, len);
      atomic_fetch_add(&f->duplicated, 1);
    }
  }
  if (rng_chance(&l->rng, r->corrupt)) {
    uint64_t bit = rng_next(&l->rng) % ((uint64_t)len * 8u);
    ((uint8_t *)frame)[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    atomic_fetch_add(&f->corrupted, 1);
  }
  uint64_t now = now_us(), hold_us = 0;
  if (r->bw) {
    uint64_t dep = l->next_free_us > now ? l->next_free_us : now;
    l->next_free_us = dep + (uint64_t)((double)len * 1e6 / (double)r->bw);
    if (dep > now) {
      hold_us = dep - now;
      atomic_fetch_add(&f->paced, 1);
    }
  }
  if (r->delay_ms || r->jitter_ms) {
    int64_t d = (int64_t)r->delay_ms * 1000;
    if (r->jitter_ms)
      d += (int64_t)((rng_unit(&l->rng) * 2.0 - 1.0) * (double)r->jitter_ms * 1000.0);
    if (d > 0) {
      hold_us += (uint64_t)d;
      atomic_fetch_add(&f->delayed, 1);
    }
  }
  bool reorder = hold_us == 0 && !l->held && rng_chance(&l->rng, r->reorder);
  void *prev = NULL; /* a frame this one overtakes: goes right after it */
  int prev_sock = -1;
  if (reorder) {
    l->held = frame;
    l->held_len = len;
    l->held_sock = sock;
    frame = NULL;
    atomic_fetch_add(&f->reordered, 1);
  } else if (l->held && hold_us == 0) {
    prev = l->held;
    prev_sock = l->held_sock;
    l->held = NULL;
  }
  pthread_mutex_unlock(&f->mu);
  int rc = 0;
  if (reorder) {
    hold(f, sock, NULL, 0, dst, now + EXO_FAULT_REORDER_MAX_MS * 1000u);
  } else if (hold_us) {
    hold(f, sock, frame, len, dst, now + hold_us);
  } else {
    rc = exo_node_peer_send(node, sock, frame);
  }
  if (copy) {
    if (hold_us)
      hold(f, sock, copy, len, dst, now + hold_us);
    else
      (void)exo_node_peer_send(node, sock, copy);
  }
  if (prev)
    (void)exo_node_peer_send(node, prev_sock, prev);
  return rc;
}

bool exo_fault_handler_fails(struct exo_node *node, const char *actor)
{
  struct exo_faults *f = node->faults;
  if (!f || !atomic_load_explicit(&f->on, memory_order_relaxed))
    return false;
  bool fail = false;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->spec.n_fails; i++)
    if (!strcmp(f->spec.fails[i].name, actor)) {
      fail = rng_chance(&f->fail_rng, f->spec.fails[i].p);
      break;
    }
  pthread_mutex_unlock(&f->mu);
  if (fail)
    atomic_fetch_add(&f->handler_failures, 1);
  return fail;
}

/* ---- @PATH: the spec from a file, polled on loop 0 ---- */

static int read_spec_file(const char *path, char **out, struct stat *st, char *err, size_t errlen)
{
  *out = NULL;
  FILE *fp = fopen(path, "r");
  if (!fp) {
    int e = errno;
    if (e == ENOENT)
      return -ENOENT;
    exo_errf(err, errlen, "faults: %s: %s", path, strerror(e));
    return -e;
  }
  char *buf = malloc(FILE_MAX + 1);
  size_t n = buf ? fread(buf, 1, FILE_MAX + 1, fp) : 0;
  if (st && fstat(fileno(fp), st) < 0)
    memset(st, 0, sizeof *st);
  fclose(fp);
  if (!buf)
    return -ENOMEM;
  if (n > FILE_MAX) {
    free(buf);
    exo_errf(err, errlen, "faults: %s: longer than %u bytes", path, FILE_MAX);
    return -EINVAL;
  }
  buf[n] = '\0';
  for (size_t i = 0; i < n; i++) /* one spec may span lines */
    if (buf[i] == '\n' || buf[i] == '\r')
      buf[i] = ';';
  *out = buf;
  return 0;
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
  return a->st_ino == b->st_ino && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void poll_tick(evutil_socket_t fd, short what, void *arg)
{
  (void)fd, (void)what;
  struct exo_faults *f = arg;
  pthread_mutex_lock(&f->mu);
  char *path = f->path ? strdup(f->path) : NULL;
  pthread_mutex_unlock(&f->mu);
  if (!path)
    return;
  struct stat st;
  bool exists = stat(path, &st) == 0;
  if (exists == f->have_stat && (!exists || same_stat(&st, &f->last))) {
    free(path);
    return;
  }
  char *spec = NULL, err[256] = "";
  int rc = exists ? read_spec_file(path, &spec, &st, err, sizeof err) : -ENOENT;
  struct fault_spec *sp = malloc(sizeof *sp);
  char nname[16];
  snprintf(nname, sizeof nname, "%u", f->node->id);
  if (sp && rc == -ENOENT) {
    spec_parse(NULL, sp, err, sizeof err); /* gone: faults off */
    rc = 0;
    exists = false;
  } else if (sp && rc == 0) {
    rc = spec_parse(spec, sp, err, sizeof err);
  }
  f->have_stat = exists;
  if (exists)
    f->last = st;
  if (sp && rc == 0) {
    pthread_mutex_lock(&f->mu);
    if (f->path && !strcmp(f->path, path)) /* not replaced meanwhile */
      apply_locked(f, sp);
    pthread_mutex_unlock(&f->mu);
    atomic_fetch_add(&f->reloads, 1);
    exo_log(EXO_LOG_INFO, nname, NULL, "faults from %s: %s", path,
            exists && spec && spec[0] ? spec : "(none: off)");
  } else {
    exo_log(EXO_LOG_ERROR, nname, NULL, "faults file %s not applied, previous faults kept: %s",
            path, err[0] ? err : strerror(-rc));
  }
  free(sp);
  free(spec);
  free(path);
}

static void poll_start(struct exo_loop *loop, void *arg)
{
  struct exo_faults *f = arg;
  pthread_mutex_lock(&f->mu); /* start from the file as exo_node_set_faults read it */
  f->have_stat = f->path_exists;
  f->last = f->path_stat;
  pthread_mutex_unlock(&f->mu);
  if (f->poll_ev || f->detached)
    return;
  f->poll_ev = event_new(exo_loop_base(loop), -1, EV_PERSIST, poll_tick, f);
  struct timeval tv = {.tv_sec = 0, .tv_usec = EXO_FAULT_POLL_MS * 1000};
  if (f->poll_ev && event_add(f->poll_ev, &tv) < 0) {
    event_free(f->poll_ev);
    f->poll_ev = NULL;
  }
}

/* ---- node API ---- */

int exo_faults_new(struct exo_node *node, struct exo_faults **out)
{
  struct exo_faults *f = calloc(1, sizeof *f);
  if (!f)
    return -ENOMEM;
  f->node = node;
  pthread_mutex_init(&f->mu, NULL);
  struct fault_spec *sp = malloc(sizeof *sp);
  if (!sp) {
    pthread_mutex_destroy(&f->mu);
    free(f);
    return -ENOMEM;
  }
  spec_parse(NULL, sp, NULL, 0);
  apply_locked(f, sp);
  free(sp);
  *out = f;
  return 0;
}

int exo_node_set_faults(struct exo_node *node, const char *spec, char *err, size_t errlen)
{
  struct exo_faults *f = node->faults;
  if (!f)
    return -EINVAL;
  char *path = NULL, *text = NULL;
  struct stat st;
  bool have_st = false;
  int rc;
  if (spec && spec[0] == '@') {
    if (!spec[1]) {
      exo_errf(err, errlen, "faults: '@' needs a file path");
      return -EINVAL;
    }
    path = strdup(spec + 1);
    if (!path)
      return -ENOMEM;
    rc = read_spec_file(path, &text, &st, err, errlen);
    if (rc == -ENOENT)
      rc = 0; /* not there yet: off until it is */
    else if (rc == 0)
      have_st = true;
    if (rc < 0) {
      free(path);
      return rc;
    }
    spec = text;
  }
  struct fault_spec *sp = malloc(sizeof *sp);
  rc = sp ? spec_parse(spec, sp, err, errlen) : -ENOMEM;
  if (rc == 0) {
    pthread_mutex_lock(&f->mu);
    apply_locked(f, sp);
    char *old = f->path;
    bool watch = path != NULL;
    f->path = path;
    f->path_exists = have_st;
    if (have_st)
      f->path_stat = st;
    path = old;
    pthread_mutex_unlock(&f->mu);
    /* The poll timer and its file state are loop 0's: hand them over there. Before the
     * node starts the item waits in the queue; a stopping loop refuses (no polling). */
    if (watch)
      (void)exo_loop_post(node->loops[0], poll_start, f);
  }
  free(sp);
  free(text);
  free(path);
  return rc;
}

void exo_node_fault_stats(struct exo_node *node, struct exo_fault_stats *out)
{
  memset(out, 0, sizeof *out);
  struct exo_faults *f = node->faults;
  if (!f)
    return;
  out->dropped = atomic_load(&f->dropped);
  out->duplicated = atomic_load(&f->duplicated);
  out->corrupted = atomic_load(&f->corrupted);
  out->delayed = atomic_load(&f->delayed);
  out->reordered = atomic_load(&f->reordered);
  out->paced = atomic_load(&f->paced);
  out->handler_failures = atomic_load(&f->handler_failures);
  out->held_dropped = atomic_load(&f->held_dropped);
  out->reloads = atomic_load(&f->reloads);
}

void exo_fault_detach(struct exo_node *node)
{
  struct exo_faults *f = node->faults;
  if (!f)
    return;
  f->detached = true;
  while (f->held) {
    struct held_frame *h = f->held;
    held_unlink(h);
    held_release(h, true);
  }
  if (f->poll_ev)
    event_free(f->poll_ev);
  f->poll_ev = NULL;
}

int exo_fault_attach(struct exo_node *node)
{
  struct exo_faults *f = node->faults;
  if (!f)
    return 0;
  f->detached = false;
  pthread_mutex_lock(&f->mu);
  bool watch = f->path != NULL;
  pthread_mutex_unlock(&f->mu);
  if (watch)
    poll_start(node->loops[0], f);
  return 0;
}

void exo_faults_free(struct exo_faults *f)
{
  if (!f)
    return;
  while (f->held) { /* a node whose loop 0 never ran its stop */
    struct held_frame *h = f->held;
    held_unlink(h);
    held_release(h, true);
  }
  if (f->poll_ev)
    event_free(f->poll_ev);
  for (size_t i = 0; i <= EXO_FAULT_MAX_LINKS; i++)
    if (f->links[i].held)
      nn_freemsg(f->links[i].held);
  free(f->path);
  pthread_mutex_destroy(&f->mu);
  free(f);
}
