/* tests/api/test_api_admission.c: admission control and the KV budget through real node
 * processes and HTTP (one node, the tiny-llama fixture).
 *  - origin max_active 2, max_queued 3: five concurrent streams all complete, each equal
 *    to its run alone; the sixth gets 429 with a Retry-After; the queued three complete
 *    in the order they were queued.
 *  - shard kv_budget_kb 200 (one request's cache of ~155 KiB fits, two do not): two
 *    concurrent requests both complete (one waits for the other's cache), and one whose
 *    cache could never fit fails with an error naming the budget and its need. */
#include <errno.h>
#include <limits.h>

#include "actors/local_cluster.h"
#include "tests/api/stream_client.h"
#include "tests/test.h"

/* settle_ms > 0: the map goes live that long after start; returns once the api answers
 * (before the map). Else once a generation is served. */
static struct exo_local_cluster *start(const char *origin_opts, const char *shard_opts,
                                       int settle_ms, int *port)
{
  char exe[PATH_MAX], model[PATH_MAX], err[512] = "";
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", getenv("EXO_BUILD_ROOT"));
  snprintf(model, sizeof model, "%s/tiny-llama", getenv("EXO_FIXTURES"));
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 1, .first_id = 1, .model = model,
                                     .api = 1, .origin_options = origin_opts,
                                     .shard_options = shard_opts, .settle_ms = settle_ms};
  struct exo_local_cluster *c = NULL;
  int rc = exo_local_cluster_start(&o, &c, err, sizeof err);
  if (rc)
    fprintf(stderr, "local cluster: %s\n", err);
  CHECK_INT_EQ(rc, 0);
  if (!c)
    return NULL;
  *port = exo_local_cluster_api_port(c, 0);
  char body[256];
  for (int i = 0; settle_ms && i < 300; i++) {
    if (sc_get(*port, "/healthz", body, sizeof body) == 200)
      return c;
    usleep(20000);
  }
  /* ready: the node answers a generation (map live, shard loaded) */
  for (int i = 0; i < 300; i++) {
    if (sc_one(*port, "{\"model\":\"tiny-llama\",\"prompt\":\"hi\",\"max_tokens\":1,"
                      "\"stream\":true}", NULL, 0, NULL, 0) == 200)
      return c;
    usleep(50000);
  }
  CHECK(!"the node never served a request");
  return c;
}

static void body_for(char *b, size_t cap, int i, int max_tokens)
{
  snprintf(b, cap, "{\"model\":\"tiny-llama\",\"prompt\":\"Once upon a time %d\","
           "\"max_tokens\":%d,\"stream\":true,\"seed\":%d,\"temperature\":0.8}", i,
           max_tokens, 100 + i);
}

static void test_admission(void)
{
  int port = 0;
  /* the map goes live 3 s after start: until then nothing completes, so what the origin
   * holds is exactly what was sent (tokens of this model take ~0.1 ms, too fast to race) */
  struct exo_local_cluster *c = start("max_active: 2, max_queued: 3", NULL, 3000, &port);
  if (!c)
    return;
  /* 0 and 1 take the active slots (different lengths, so they end at different times);
   * 2, 3, 4 queue with equal lengths */
  static const int max_new[5] = {120, 200, 20, 20, 20};
  static char alone[5][8192], together[5][8192];
  char body[512];
  CHECK_INT_EQ(sc_epoch(port), 0);
  struct sc_conn conn[6];
  for (int i = 0; i < 5; i++) {
    body_for(body, sizeof body, i, max_new[i]);
    CHECK_INT_EQ(sc_start(&conn[i], port, "/v1/completions", body), 0);
    CHECK_INT_EQ(sc_wait_head(&conn[i], 10), 0); /* ACKed: queued in this order */
    CHECK_INT_EQ(sc_status(&conn[i]), 200);
  }
  body_for(body, sizeof body, 5, 10);
  CHECK_INT_EQ(sc_start(&conn[5], port, "/v1/completions", body), 0);
  CHECK_INT_EQ(sc_run(&conn[5], 1, 20), 1);
  char v[32] = "";
  CHECK_INT_EQ(sc_status(&conn[5]), 429);
  CHECK(sc_header(&conn[5], "Retry-After", v, sizeof v) != NULL);
  CHECK(atoi(v) >= 1);
  CHECK_STR_CONTAINS(conn[5].buf, "too_many_requests");
  CHECK_STR_CONTAINS(conn[5].buf, "max_queued 3");
  fprintf(stderr, "# 6th request: 429, Retry-After: %s\n", v);
  long epoch = sc_epoch(port);
  if (epoch != 0)
    fprintf(stderr, "# the map went live before the 6th was refused: too slow a machine\n");
  CHECK_INT_EQ(epoch, 0);
  CHECK_INT_EQ(sc_run(conn, 5, 40), 5);
  for (int i = 0; i < 5; i++) {
    body_for(body, sizeof body, i, max_new[i]);
    CHECK_INT_EQ(sc_one(port, body, alone[i], sizeof alone[i], NULL, 0), 200);
  }
  for (int i = 0; i < 5; i++) {
    int errors;
    bool done;
    CHECK_INT_EQ(sc_status(&conn[i]), 200);
    sc_sse_text(&conn[i], together[i], sizeof together[i], &errors, &done);
    CHECK_INT_EQ(errors, 0);
    CHECK(done);
    CHECK(!strcmp(together[i], alone[i]));
  }
  fprintf(stderr, "# completion order: %d %d %d %d %d\n", conn[0].order, conn[1].order,
          conn[2].order, conn[3].order, conn[4].order);
  CHECK(conn[2].order < conn[3].order);
  CHECK(conn[3].order < conn[4].order);
  CHECK(conn[0].order < conn[2].order); /* 2 took the first slot to free */
  for (int i = 0; i < 6; i++)
    sc_close(&conn[i]);
  char err[256];
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
  exo_local_cluster_free(c);
}

static void test_kv_budget(void)
{
  int port = 0;
  /* tiny-llama: 4 layers x 2 kv heads x 16 x (K, V) x 4 bytes = 1 KiB per position */
  struct exo_local_cluster *c = start(NULL, "kv_budget_kb: 200", 0, &port);
  if (!c)
    return;
  static char alone[2][8192], together[2][8192];
  char body[512];
  for (int i = 0; i < 2; i++) {
    body_for(body, sizeof body, i, 150);
    CHECK_INT_EQ(sc_one(port, body, alone[i], sizeof alone[i], NULL, 0), 200);
  }
  struct sc_conn conn[2];
  for (int i = 0; i < 2; i++) {
    body_for(body, sizeof body, i, 150);
    CHECK_INT_EQ(sc_start(&conn[i], port, "/v1/completions", body), 0);
  }
  CHECK_INT_EQ(sc_run(conn, 2, 40), 2);
  for (int i = 0; i < 2; i++) {
    int errors;
    bool done;
    CHECK_INT_EQ(sc_status(&conn[i]), 200);
    sc_sse_text(&conn[i], together[i], sizeof together[i], &errors, &done);
    CHECK_INT_EQ(errors, 0);
    CHECK(done);
    CHECK(!strcmp(together[i], alone[i]));
    sc_close(&conn[i]);
  }
  /* ~250 positions: never fits 200 KiB */
  static char raw[16384];
  CHECK_INT_EQ(sc_one(port, "{\"model\":\"tiny-llama\",\"prompt\":\"Once\",\"max_tokens\":245}",
                      NULL, 0, raw, sizeof raw),
               503);
  CHECK_STR_CONTAINS(raw, "kv_budget is 200 KiB");
  CHECK_STR_CONTAINS(raw, "needs 2");
  fprintf(stderr, "# %s\n", strstr(raw, "\r\n\r\n") ? strstr(raw, "\r\n\r\n") + 4 : raw);
  char err[256];
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
  exo_local_cluster_free(c);
}

int main(void)
{
  sc_raise_nofile();
  EXO_RUN(test_admission);
  EXO_RUN(test_kv_budget);
  return exo_test_result();
}
