/* actors/origin_table.c: the origin's request table over exo_rcu_table (rules in
 * origin_table.h). Each filed wire id holds one reference on its entry; the table's value
 * free function, which liburcu runs a grace period after the id's removal, drops it. A
 * request re-issued under a new wire id is filed under the new id before the old one is
 * removed, so it never leaves the table between attempts. Must not know what a request is. */
#include "actors/origin_table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime/shared.h"

struct exo_origin_table {
  struct exo_rcu_table *t;
};

static void entry_unref(struct exo_origin_entry *e)
{
  /* acq_rel: the writer's last stores happen before whichever thread releases */
  if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
    e->release(e);
}

static void value_free(void *v)
{
  entry_unref(v);
}

struct exo_origin_table *exo_origin_table_new(size_t buckets)
{
  struct exo_origin_table *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  if (!(t->t = exo_rcu_table_new(buckets, value_free))) {
    free(t);
    return NULL;
  }
  return t;
}

void exo_origin_table_free(struct exo_origin_table *t)
{
  if (!t)
    return;
  exo_rcu_table_free(t->t);
  free(t);
}

void exo_origin_entry_init(struct exo_origin_entry *e, void (*release)(struct exo_origin_entry *))
{
  atomic_init(&e->refs, 1);
  atomic_init(&e->generated, 0);
  atomic_init(&e->attempts, 0);
  atomic_init(&e->phase, EXO_ORIGIN_QUEUED);
  e->release = release;
}

void exo_origin_entry_drop(struct exo_origin_entry *e)
{
  if (e)
    entry_unref(e);
}

int exo_origin_table_put(struct exo_origin_table *t, uint64_t wire, struct exo_origin_entry *e)
{
  atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
  int rc = exo_rcu_table_insert(t->t, wire, e);
  if (rc)
    atomic_fetch_sub_explicit(&e->refs, 1, memory_order_relaxed); /* never visible */
  return rc;
}

int exo_origin_table_del(struct exo_origin_table *t, uint64_t wire)
{
  return exo_rcu_table_remove(t->t, wire);
}

struct exo_origin_entry *exo_origin_table_find(struct exo_origin_table *t, uint64_t wire)
{
  /* the writer alone removes ids and drops its reference, so what it finds outlives the
   * read section */
  exo_shared_read_lock();
  struct exo_origin_entry *e = exo_rcu_table_lookup(t->t, wire);
  exo_shared_read_unlock();
  return e;
}

struct exo_origin_entry *exo_origin_table_lookup(struct exo_origin_table *t, uint64_t wire)
{
  return exo_rcu_table_lookup(t->t, wire);
}

struct each_arg {
  int (*fn)(uint64_t wire, const struct exo_origin_entry *e, void *arg);
  void *arg;
};

static int each(uint64_t key, void *value, void *arg)
{
  struct each_arg *a = arg;
  return a->fn(key, value, a->arg);
}

size_t exo_origin_table_for_each(struct exo_origin_table *t,
                                 int (*fn)(uint64_t wire, const struct exo_origin_entry *e,
                                           void *arg),
                                 void *arg)
{
  struct each_arg a = {fn, arg};
  exo_shared_read_lock();
  size_t n = exo_rcu_table_for_each(t->t, each, &a);
  exo_shared_read_unlock();
  return n;
}

size_t exo_origin_table_count(struct exo_origin_table *t)
{
  return exo_rcu_table_count(t->t);
}

void exo_rate_window_note(struct exo_rate_window *w, uint64_t now_ns)
{
  w->at_ns[w->n++ % EXO_RATE_WINDOW] = now_ns;
}

uint32_t exo_rate_window_retry_s(const struct exo_rate_window *w, uint64_t ahead,
                                 uint64_t per_second_guess, uint64_t now_ns)
{
  uint64_t horizon = 60000000000ull, oldest = now_ns, k = 0;
  uint64_t have = w->n < EXO_RATE_WINDOW ? w->n : EXO_RATE_WINDOW;
  for (uint64_t i = 0; i < have; i++) {
    uint64_t t = w->at_ns[(w->n - 1 - i) % EXO_RATE_WINDOW];
    if (t > now_ns || now_ns - t > horizon)
      break;
    oldest = t;
    k++;
  }
  double s;
  if (k >= 2 && now_ns > oldest) /* k completions in (now - oldest]: rate k / span */
    s = (double)ahead * (double)(now_ns - oldest) / 1e9 / (double)k;
  else
    s = (double)ahead / (double)(per_second_guess ? per_second_guess : 1);
  if (s < 1)
    return 1;
  if (s > 600)
    return 600;
  return (uint32_t)s + ((double)(uint32_t)s < s);
}

void exo_origin_stats_add(_Atomic uint64_t *counter, uint64_t n)
{
  atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

size_t exo_origin_stats_prometheus(const struct exo_origin_stats *st, char *buf, size_t cap)
{
  static const struct {
    const char *name, *help;
    size_t off;
  } counters[] = {
    {"refused", "SUBMITs refused past the admission queue (HTTP 429).",
     offsetof(struct exo_origin_stats, refused)},
    {"completed", "Requests ended by EOS, max_tokens or a cancel.",
     offsetof(struct exo_origin_stats, completed)},
    {"failed", "Requests ended by an error.", offsetof(struct exo_origin_stats, failed)},
    {"reissued", "Re-issues of a request (map change, loss, timeout, full shard).",
     offsetof(struct exo_origin_stats, reissued)},
    {"shard_full_backoffs", "Waits after a shard refused for lack of room (KV budget, slots).",
     offsetof(struct exo_origin_stats, shard_full)},
    {"queue_timeouts", "Requests still queued after queue_timeout_ms.",
     offsetof(struct exo_origin_stats, queue_timeouts)},
    {"admitted", "Requests moved from the queue into an active slot.",
     offsetof(struct exo_origin_stats, admitted)},
    {"admitted_past_queued", "Admissions that passed an earlier queued request (adaptive).",
     offsetof(struct exo_origin_stats, admitted_past)},
  };
  size_t len = 0;
  char tmp[1];
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
    const _Atomic uint64_t *v =
        (const _Atomic uint64_t *)((const char *)st + counters[i].off);
    int n = snprintf(len < cap ? buf + len : tmp, len < cap ? cap - len : sizeof tmp,
                     "# HELP exo_origin_%s_total %s\n# TYPE exo_origin_%s_total counter\n"
                     "exo_origin_%s_total %" PRIu64 "\n",
                     counters[i].name, counters[i].help, counters[i].name, counters[i].name,
                     atomic_load_explicit(v, memory_order_relaxed));
    if (n > 0)
      len += (size_t)n;
  }
  int n = snprintf(len < cap ? buf + len : tmp, len < cap ? cap - len : sizeof tmp,
                   "# HELP exo_origin_active_requests Requests holding an active slot.\n"
                   "# TYPE exo_origin_active_requests gauge\nexo_origin_active_requests %u\n"
                   "# HELP exo_origin_queued_requests Requests waiting for an active slot.\n"
                   "# TYPE exo_origin_queued_requests gauge\nexo_origin_queued_requests %u\n",
                   atomic_load_explicit(&st->active, memory_order_relaxed),
                   atomic_load_explicit(&st->queued, memory_order_relaxed));
  if (n > 0)
    len += (size_t)n;
  if (cap && len >= cap)
    buf[cap - 1] = 0;
  return len;
}
