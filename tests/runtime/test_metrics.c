/* tests/runtime/test_metrics.c: metrics registry and Prometheus text rendering, racing
 * updaters (exact totals), and log line formatting and level parsing. */
#include "runtime/log.h"
#include "runtime/metrics.h"
#include "tests/test.h"

#include <pthread.h>
#include <stdlib.h>

static void test_render_exact(void)
{
  struct exo_metrics *m = exo_metrics_new();
  CHECK(m != NULL);
  if (!m)
    return;
  struct exo_counter *c = exo_metrics_counter(m, "exo_frames_total", "Frames sent.");
  struct exo_gauge *g = exo_metrics_gauge(m, "exo_mailbox_depth", "Queued \\ messages.");
  double bounds[] = {0.001, 0.01, 0.1};
  struct exo_histogram *h = exo_metrics_histogram(m, "exo_hop_seconds", "Hop latency.", bounds, 3);
  CHECK(c && g && h);
  if (!c || !g || !h) {
    exo_metrics_free(m);
    return;
  }
  CHECK(exo_metrics_counter(m, "exo_frames_total", "x") == c);
  CHECK(exo_metrics_gauge(m, "exo_frames_total", "x") == NULL);
  CHECK(exo_metrics_counter(m, "9bad", "x") == NULL);
  CHECK(exo_metrics_counter(m, "bad-name", "x") == NULL);
  double bad[] = {1, 1};
  CHECK(exo_metrics_histogram(m, "h2", "x", bad, 2) == NULL);
  exo_counter_add(c, 3);
  exo_counter_add(c, 4);
  exo_gauge_set(g, 10);
  exo_gauge_add(g, -12);
  exo_histogram_observe(h, 0.0005);
  exo_histogram_observe(h, 0.05);
  exo_histogram_observe(h, 0.05);
  exo_histogram_observe(h, 2.0);
  char *text = NULL;
  size_t len = 0;
  CHECK_INT_EQ(exo_metrics_render(m, &text, &len), 0);
  const char *want = "# HELP exo_frames_total Frames sent.\n"
                     "# TYPE exo_frames_total counter\n"
                     "exo_frames_total 7\n"
                     "# HELP exo_mailbox_depth Queued \\\\ messages.\n"
                     "# TYPE exo_mailbox_depth gauge\n"
                     "exo_mailbox_depth -2\n"
                     "# HELP exo_hop_seconds Hop latency.\n"
                     "# TYPE exo_hop_seconds histogram\n"
                     "exo_hop_seconds_bucket{le=\"0.001\"} 1\n"
                     "exo_hop_seconds_bucket{le=\"0.01\"} 1\n"
                     "exo_hop_seconds_bucket{le=\"0.1\"} 3\n"
                     "exo_hop_seconds_bucket{le=\"+Inf\"} 4\n"
                     "exo_hop_seconds_sum 2.1005\n"
                     "exo_hop_seconds_count 4\n";
  CHECK(text && !strcmp(text, want));
  if (text && strcmp(text, want))
    fprintf(stderr, "got:\n%s", text);
  CHECK_INT_EQ(len, strlen(want));
  free(text);
  exo_metrics_free(m);
  exo_metrics_free(NULL);
}

static struct exo_counter *race_counter;
static struct exo_histogram *race_hist;

static void *updater(void *arg)
{
  (void)arg;
  for (int i = 0; i < 50000; i++) {
    exo_counter_add(race_counter, 1);
    exo_histogram_observe(race_hist, (double)(i % 4));
  }
  return NULL;
}

static void test_racing_updates(void)
{
  struct exo_metrics *m = exo_metrics_new();
  double b[] = {1.5};
  race_counter = exo_metrics_counter(m, "n", "n");
  race_hist = exo_metrics_histogram(m, "h", "h", b, 1);
  pthread_t th[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&th[i], NULL, updater, NULL);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  CHECK_INT_EQ(exo_counter_get(race_counter), 150000);
  char *text = NULL;
  CHECK_INT_EQ(exo_metrics_render(m, &text, NULL), 0);
  CHECK_STR_CONTAINS(text, "h_bucket{le=\"1.5\"} 75000\n");
  CHECK_STR_CONTAINS(text, "h_sum 225000\n"); /* 3 * 12500 * (0+1+2+3) */
  CHECK_STR_CONTAINS(text, "h_count 150000\n");
  free(text);
  exo_metrics_free(m);
}

static size_t fmt(char *buf, size_t size, enum exo_log_level lvl, const char *node,
                  const char *actor, const char *f, ...)
{
  va_list ap;
  va_start(ap, f);
  size_t n = exo_log_format(buf, size, 1700000000.25, lvl, node, actor, f, ap);
  va_end(ap);
  return n;
}

static void test_log(void)
{
  char buf[256];
  size_t n = fmt(buf, sizeof buf, EXO_LOG_WARN, "node1", "ping", "lost %d frames", 3);
  CHECK(!strcmp(buf, "2023-11-14T22:13:20.250Z warn  node1/ping: lost 3 frames\n"));
  CHECK_INT_EQ(n, strlen(buf));
  fmt(buf, sizeof buf, EXO_LOG_ERROR, NULL, NULL, "x");
  CHECK_STR_CONTAINS(buf, "error -/-: x\n");
  char small[48];
  n = fmt(small, sizeof small, EXO_LOG_INFO, "n", "a", "%s",
          "a very long message that will not fit");
  CHECK_INT_EQ(n, sizeof small - 1);
  CHECK(small[n - 1] == '\n' && !strncmp(small + n - 4, "...", 3));
  enum exo_log_level l;
  CHECK_INT_EQ(exo_log_level_parse("debug", &l), 0);
  CHECK_INT_EQ(l, EXO_LOG_DEBUG);
  CHECK(exo_log_level_parse("verbose", &l) < 0);
  exo_log_set_level(EXO_LOG_WARN);
  CHECK(exo_log_enabled(EXO_LOG_ERROR) && !exo_log_enabled(EXO_LOG_INFO));
  setenv("EXO_LOG", "debug", 1);
  CHECK_INT_EQ(exo_log_init_from_env(), 0);
  CHECK_INT_EQ(exo_log_get_level(), EXO_LOG_DEBUG);
  setenv("EXO_LOG", "loud", 1);
  CHECK(exo_log_init_from_env() < 0);
  CHECK_INT_EQ(exo_log_get_level(), EXO_LOG_DEBUG);
  exo_log_set_level(EXO_LOG_INFO);
}

int main(void)
{
  EXO_RUN(test_render_exact);
  EXO_RUN(test_racing_updates);
  EXO_RUN(test_log);
  return exo_test_result();
}
