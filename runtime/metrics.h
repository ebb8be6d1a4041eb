/* runtime/metrics.h: named counters, gauges and fixed-bucket histograms in a registry
 * that renders the Prometheus text format (the future /metrics body). Updates are
 * lock-free atomics safe from any thread; registration and rendering take the registry's
 * mutex (registration happens at startup, rendering on the HTTP actor's loop). Must not
 * know what is measured. Metric objects live until exo_metrics_free. */
#ifndef EXO_RUNTIME_METRICS_H
#define EXO_RUNTIME_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define EXO_METRICS_MAX_BUCKETS 32

struct exo_metrics;
struct exo_counter;
struct exo_gauge;
struct exo_histogram;

struct exo_metrics *exo_metrics_new(void);    /* NULL on allocation failure */
void exo_metrics_free(struct exo_metrics *m); /* NULL ok; no update may race it */

/* Registration: name matches [a-zA-Z_:][a-zA-Z0-9_:]*, help is one line. Registering a
 * name again with the same type returns the existing metric. NULL on a bad name, a name
 * taken by another type, bad bounds (histogram: 1..EXO_METRICS_MAX_BUCKETS strictly
 * increasing finite upper bounds; +Inf is implicit) or allocation failure. */
struct exo_counter *exo_metrics_counter(struct exo_metrics *m, const char *name, const char *help);
struct exo_gauge *exo_metrics_gauge(struct exo_metrics *m, const char *name, const char *help);
struct exo_histogram *exo_metrics_histogram(struct exo_metrics *m, const char *name,
                                            const char *help, const double *bounds,
                                            size_t n_bounds);

void exo_counter_add(struct exo_counter *c, uint64_t n);
uint64_t exo_counter_get(const struct exo_counter *c);
void exo_gauge_set(struct exo_gauge *g, int64_t v);
void exo_gauge_add(struct exo_gauge *g, int64_t delta);
int64_t exo_gauge_get(const struct exo_gauge *g);
void exo_histogram_observe(struct exo_histogram *h, double v);

/* Renders every metric (registration order) as Prometheus text exposition format 0.0.4.
 * *out is NUL-terminated, caller frees. Returns 0 or -ENOMEM. */
int exo_metrics_render(struct exo_metrics *m, char **out, size_t *len);

#endif
