/* tests/api/test_api_admission.c: admission control and the KV budget through real node
 * processes and HTTP (one node, the tiny-llama fixture).
 *  - origin max_active 2, max_queued 3: five concurrent streams all complete, each equal
 *    to its run alone; the sixth gets 429 with a Retry-After; the queued three complete
 *    in the order they were queued.
 *  - admission adaptive: with the map not yet live (nothing prefills), long prompts wait
 *    behind the prefill budget while short and fitting ones pass them (the origin's
 *    gauges and admitted_past_queued counter on /metrics); then all run to their solo text.
 * The KV budget, queue_timeout_ms and max_connections: test_api_limits.c. */
#include <errno.h>
#include <limits.h>
#include <strings.h>

#include "tests/api/admission_util.h" /* local_cluster.h, stream_client.h, test.h */

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
  for (int i = 0; i < 5; i++)
    check_stream_like_alone(&conn[i], together[i], sizeof together[i], alone[i]);
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

static void test_adaptive(void)
{
  int port = 0;
  /* the map goes live 3 s after start: until then no request prefills, so the prompt
   * tokens the active set has left to prefill only grow, and admission is decided by the
   * rule alone (docs/CONFIG.md "Admission") */
  struct exo_local_cluster *c =
      start("max_active: 6, admission: adaptive, prefill_budget: 100, short_prompt: 8", NULL,
            3000, &port);
  if (!c)
    return;
  /* in arrival order, with the prompt tokens pending before each:
   *   L1 80: nothing pending -> admitted                         pending 80
   *   L2 80: 80 + 80 > 100 -> waits                               
   *   M1 16: 80 + 16 <= 100 -> admitted past L2                   pending 96
   *   S1  8: 96 + 8 > 100, but short (<= 8) -> admitted past L2   pending 104
   *   M2 16: 104 + 16 > 100 -> waits
   *   S2  8: short -> admitted past L2 and M2
   * fixed mode would admit all six; adaptive without the short rule, two; without the
   * budget rule, three. */
  static const int len[6] = {80, 80, 16, 8, 16, 8}, max_new[6] = {20, 24, 16, 12, 18, 10};
  static char alone[6][8192], together[6][8192];
  static char body[6][4096];
  CHECK_INT_EQ(sc_epoch(port), 0);
  CHECK_INT_EQ(metric(port, "exo_origin_admitted_total"), 0);
  struct sc_conn conn[6];
  for (int i = 0; i < 6; i++) {
    ids_body(body[i], sizeof body[i], 11 * i + 3, len[i], max_new[i], true);
    CHECK_INT_EQ(sc_start(&conn[i], port, "/v1/completions", body[i]), 0);
    CHECK_INT_EQ(sc_wait_head(&conn[i], 10), 0); /* ACKed: the origin saw it, in order */
    CHECK_INT_EQ(sc_status(&conn[i]), 200);
  }
  /* the gauges are published at the end of the origin's handler, just after the ACK */
  long active = -1, queued = -1;
  for (int t = 0; t < 100; t++) {
    active = metric(port, "exo_origin_active_requests");
    queued = metric(port, "exo_origin_queued_requests");
    if (active + queued == 6)
      break;
    usleep(20000);
  }
  fprintf(stderr, "# before the map: %ld active, %ld queued, %ld admitted past a queued one\n",
          active, queued, metric(port, "exo_origin_admitted_past_queued_total"));
  CHECK_INT_EQ(active, 4);
  CHECK_INT_EQ(queued, 2);
  CHECK_INT_EQ(metric(port, "exo_origin_admitted_total"), 4);
  CHECK_INT_EQ(metric(port, "exo_origin_admitted_past_queued_total"), 3);
  long epoch = sc_epoch(port);
  if (epoch != 0)
    fprintf(stderr, "# the map went live before the check: too slow a machine\n");
  CHECK_INT_EQ(epoch, 0);
  /* the map goes live, prefills drain, and the two that waited run */
  CHECK_INT_EQ(sc_run(conn, 6, 40), 6);
  for (int i = 0; i < 6; i++)
    CHECK_INT_EQ(sc_one(port, body[i], alone[i], sizeof alone[i], NULL, 0), 200);
  for (int i = 0; i < 6; i++) {
    check_stream_like_alone(&conn[i], together[i], sizeof together[i], alone[i]);
    CHECK(together[i][0] != 0);
    sc_close(&conn[i]);
  }
  CHECK_INT_EQ(metric(port, "exo_origin_admitted_total"), 12);
  CHECK_INT_EQ(metric(port, "exo_origin_queued_requests"), 0);
  CHECK_INT_EQ(metric(port, "exo_origin_active_requests"), 0);
  char err[256];
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
  exo_local_cluster_free(c);
}

int main(void)
{
  sc_raise_nofile();
  EXO_RUN(test_admission);
  EXO_RUN(test_adaptive);
  return exo_test_result();
}
