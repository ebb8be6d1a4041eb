/* runtime/metrics.c: the metrics registry and its Prometheus text renderer (metrics.h).
 * Values are C11 atomics updated with relaxed order: each is an independent statistic,
 * so a render may see a histogram's count and buckets from slightly different moments,
 * which Prometheus tolerates. The histogram sum is a double kept as its bit pattern and
 * updated with a CAS loop. Must not block updaters: only registration/render lock. */
#include "runtime/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct exo_counter {
  _Atomic uint64_t v;
};
struct exo_gauge {
  _Atomic int64_t v;
};
struct exo_histogram {
  size_t n_bounds;
  double bounds[EXO_METRICS_MAX_BUCKETS];
  _Atomic uint64_t buckets[EXO_METRICS_MAX_BUCKETS + 1]; /* last: above every bound */
  _Atomic uint64_t count;
  _Atomic uint64_t sum_bits; /* double */
};

struct metric {
  struct metric *next;
  enum metric_type type;
  char *name, *help;
  union {
    struct exo_counter counter;
    struct exo_gauge gauge;
    struct exo_histogram histogram;
  } u;
};

struct exo_metrics {
  pthread_mutex_t lock;
  struct metric *head, **tail;
};

struct exo_metrics *exo_metrics_new(void)
{
  struct exo_metrics *m = calloc(1, sizeof *m);
  if (!m)
    return NULL;
  if (pthread_mutex_init(&m->lock, NULL) != 0) {
    free(m);
    return NULL;
  }
  m->tail = &m->head;
  return m;
}

void exo_metrics_free(struct exo_metrics *m)
{
  if (!m)
    return;
  for (struct metric *x = m->head, *next; x; x = next) {
    next = x->next;
    free(x->name);
    free(x->help);
    free(x);
  }
  pthread_mutex_destroy(&m->lock);
  free(m);
}

static bool valid_name(const char *s)
{
  if (!s || !*s || (*s >= '0' && *s <= '9'))
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '_' || *s == ':'))
      return false;
  return true;
}

/* Finds or adds a metric; bounds only for histograms. NULL on any refusal. */
static struct metric *lookup_or_add(struct exo_metrics *m, enum metric_type type, const char *name,
                                    const char *help, const double *bounds, size_t n_bounds)
{
  if (!m || !valid_name(name) || (help && strchr(help, '\n')))
    return NULL;
  if (type == METRIC_HISTOGRAM) {
    if (!bounds || n_bounds < 1 || n_bounds > EXO_METRICS_MAX_BUCKETS)
      return NULL;
    for (size_t i = 0; i < n_bounds; i++)
      if (!isfinite(bounds[i]) || (i && !(bounds[i] > bounds[i - 1])))
        return NULL;
  }
  pthread_mutex_lock(&m->lock);
  struct metric *x;
  for (x = m->head; x; x = x->next)
    if (!strcmp(x->name, name))
      break;
  if (x) {
    pthread_mutex_unlock(&m->lock);
    return x->type == type ? x : NULL;
  }
  x = calloc(1, sizeof *x);
  if (!x)
    goto fail;
  x->type = type;
  x->name = strdup(name);
  x->help = strdup(help ? help : "");
  if (!x->name || !x->help)
    goto fail_x;
  if (type == METRIC_HISTOGRAM) {
    x->u.histogram.n_bounds = n_bounds;
    memcpy(x->u.histogram.bounds, bounds, n_bounds * sizeof *bounds);
  }
  *m->tail = x;
  m->tail = &x->next;
  pthread_mutex_unlock(&m->lock);
  return x;

fail_x:
  free(x->name);
  free(x->help);
  free(x);
fail:
  pthread_mutex_unlock(&m->lock);
  return NULL;
}

struct exo_counter *exo_metrics_counter(struct exo_metrics *m, const char *name, const char *help)
{
  struct metric *x = lookup_or_add(m, METRIC_COUNTER, name, help, NULL, 0);
  return x ? &x->u.counter : NULL;
}

struct exo_gauge *exo_metrics_gauge(struct exo_metrics *m, const char *name, const char *help)
{
  struct metric *x = lookup_or_add(m, METRIC_GAUGE, name, help, NULL, 0);
  return x ? &x->u.gauge : NULL;
}

struct exo_histogram *exo_metrics_histogram(struct exo_metrics *m, const char *name,
                                            const char *help, const double *bounds, size_t n_bounds)
{
  struct metric *x = lookup_or_add(m, METRIC_HISTOGRAM, name, help, bounds, n_bounds);
  return x ? &x->u.histogram : NULL;
}

void exo_counter_add(struct exo_counter *c, uint64_t n)
{
  atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t exo_counter_get(const struct exo_counter *c)
{
  return atomic_load_explicit(&((struct exo_counter *)c)->v, memory_order_relaxed);
}

void exo_gauge_set(struct exo_gauge *g, int64_t v)
{
  atomic_store_explicit(&g->v, v, memory_order_relaxed);
}

void exo_gauge_add(struct exo_gauge *g, int64_t delta)
{
  atomic_fetch_add_explicit(&g->v, delta, memory_order_relaxed);
}

int64_t exo_gauge_get(const struct exo_gauge *g)
{
  return atomic_load_explicit(&((struct exo_gauge *)g)->v, memory_order_relaxed);
}

static double bits_to_double(uint64_t b)
{
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}

static uint64_t double_to_bits(double d)
{
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  return b;
}

void exo_histogram_observe(struct exo_histogram *h, double v)
{
  size_t i = 0;
  while (i < h->n_bounds && !(v <= h->bounds[i]))
    i++;
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old,
                                                double_to_bits(bits_to_double(old) + v),
                                                memory_order_relaxed, memory_order_relaxed))
    ;
}

/* Prometheus float text: the shortest %g form that reads back to the same double (so a
 * bound of 0.1 prints as 0.1), and +Inf/-Inf/NaN spelled Prometheus' way. */
static void put_double(FILE *f, double d)
{
  if (isnan(d))
    fputs("NaN", f);
  else if (isinf(d))
    fputs(d > 0 ? "+Inf" : "-Inf", f);
  else {
    char b[32];
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(b, sizeof b, "%.*g", prec, d);
      if (strtod(b, NULL) == d)
        break;
    }
    fputs(b, f);
  }
}

static void put_help(FILE *f, const struct metric *x, const char *type)
{
  fprintf(f, "# HELP %s ", x->name);
  for (const char *p = x->help; *p; p++) {
    if (*p == '\\')
      fputs("\\\\", f);
    else
      fputc(*p, f);
  }
  fprintf(f, "\n# TYPE %s %s\n", x->name, type);
}

int exo_metrics_render(struct exo_metrics *m, char **out, size_t *len)
{
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  if (!f)
    return -ENOMEM;
  pthread_mutex_lock(&m->lock);
  for (const struct metric *x = m->head; x; x = x->next) {
    switch (x->type) {
    case METRIC_COUNTER:
      put_help(f, x, "counter");
      fprintf(f, "%s %llu\n", x->name, (unsigned long long)exo_counter_get(&x->u.counter));
      break;
    case METRIC_GAUGE:
      put_help(f, x, "gauge");
      fprintf(f, "%s %lld\n", x->name, (long long)exo_gauge_get(&x->u.gauge));
      break;
    case METRIC_HISTOGRAM: {
      const struct exo_histogram *h = &x->u.histogram;
      put_help(f, x, "histogram");
      uint64_t cum = 0;
      for (size_t i = 0; i <= h->n_bounds; i++) {
        cum += atomic_load_explicit(&((struct exo_histogram *)h)->buckets[i], memory_order_relaxed);
        fprintf(f, "%s_bucket{le=\"", x->name);
        put_double(f, i < h->n_bounds ? h->bounds[i] : INFINITY);
        fprintf(f, "\"} %llu\n", (unsigned long long)cum);
      }
      fprintf(f, "%s_sum ", x->name);
      put_double(f, bits_to_double(atomic_load_explicit(&((struct exo_histogram *)h)->sum_bits,
                                                        memory_order_relaxed)));
      /* count = the +Inf bucket, so the two always agree in one render. */
      fprintf(f, "\n%s_count %llu\n", x->name, (unsigned long long)cum);
      break;
    }
    }
  }
  pthread_mutex_unlock(&m->lock);
  if (fclose(f) != 0) {
    free(buf);
    return -ENOMEM;
  }
  *out = buf;
  if (len)
    *len = n;
  return 0;
}
