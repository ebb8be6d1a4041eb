/* tests/api/test_api_limits.c: the limits around admission through real node processes
 * and HTTP (one node, the tiny-llama fixture).
 *  - shard kv_budget_kb 200 (one request's cache of ~155 KiB fits, two do not): two
 *    requests issued together both complete with their solo text, the second after
 *    waiting (exo_origin_shard_full_backoffs_total > 0), and one whose cache could never
 *    fit fails with an error naming the budget and its need.
 *  - origin queue_timeout_ms: queued requests end with 503 + Retry-After (a stream, whose
 *    200 went out at its ACK, with an error event); the active one still completes.
 *  - api max_connections: a connection past the limit gets 503 with Retry-After: 1 and
 *    Connection: close; a closed connection frees its place. */
#include <errno.h>
#include <limits.h>
#include <strings.h>

#include "tests/api/admission_util.h" /* local_cluster.h, stream_client.h, test.h */

static void test_kv_budget(void)
{
  int port = 0;
  /* tiny-llama: 4 layers x 2 kv heads x 16 x (K, V) x 4 bytes = 1 KiB per position. The
   * map goes live 3 s after start, so both requests are admitted first and then issued
   * in the same tick: the shard sees the second PROMPT while the first holds its cache */
  struct exo_local_cluster *c = start(NULL, "kv_budget_kb: 200", 3000, &port);
  if (!c)
    return;
  static char alone[2][8192], together[2][8192];
  char body[512];
  struct sc_conn conn[2];
  CHECK_INT_EQ(sc_epoch(port), 0);
  for (int i = 0; i < 2; i++) {
    body_for(body, sizeof body, i, 150);
    CHECK_INT_EQ(sc_start(&conn[i], port, "/v1/completions", body), 0);
    CHECK_INT_EQ(sc_wait_head(&conn[i], 10), 0);
  }
  long epoch = sc_epoch(port);
  if (epoch != 0)
    fprintf(stderr, "# the map went live before both were admitted: too slow a machine\n");
  CHECK_INT_EQ(epoch, 0);
  CHECK_INT_EQ(sc_run(conn, 2, 40), 2);
  long waits = metric(port, "exo_origin_shard_full_backoffs_total");
  fprintf(stderr, "# backoffs for a full shard: %ld\n", waits);
  CHECK(waits > 0);
  for (int i = 0; i < 2; i++) {
    body_for(body, sizeof body, i, 150);
    CHECK_INT_EQ(sc_one(port, body, alone[i], sizeof alone[i], NULL, 0), 200);
  }
  for (int i = 0; i < 2; i++) {
    check_stream_like_alone(&conn[i], together[i], sizeof together[i], alone[i]);
    CHECK(together[i][0] != 0);
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

static void test_queue_timeout(void)
{
  int port = 0;
  /* no map for 3 s: the first request holds the only active slot, the others queue */
  struct exo_local_cluster *c = start("max_active: 1, queue_timeout_ms: 300", NULL, 3000, &port);
  if (!c)
    return;
  static char body[3][4096];
  struct sc_conn conn[3];
  for (int i = 0; i < 3; i++) {
    ids_body(body[i], sizeof body[i], 5 + i, 6, 8, i != 1); /* 1: not a stream */
    CHECK_INT_EQ(sc_start(&conn[i], port, "/v1/completions", body[i]), 0);
    if (i != 1)
      CHECK_INT_EQ(sc_wait_head(&conn[i], 10), 0);
  }
  double t0 = sc_now();
  CHECK_INT_EQ(sc_run(&conn[1], 2, 10), 2); /* both queued ones end */
  fprintf(stderr, "# queued requests ended after %.2f s\n", sc_now() - t0);
  long epoch = sc_epoch(port);
  if (epoch != 0)
    fprintf(stderr, "# the map went live before the timeouts: too slow a machine\n");
  CHECK_INT_EQ(epoch, 0);
  char v[32] = "";
  CHECK_INT_EQ(sc_status(&conn[1]), 503);
  CHECK(sc_header(&conn[1], "Retry-After", v, sizeof v) != NULL);
  CHECK(atoi(v) >= 1);
  CHECK_STR_CONTAINS(conn[1].buf, "queue_timeout");
  CHECK_STR_CONTAINS(conn[1].buf, "queue_timeout_ms");
  fprintf(stderr, "# %s\n", sc_body_start(&conn[1]) ? sc_body_start(&conn[1]) : "");
  /* a stream's 200 went out at its ACK: the timeout arrives as its error event */
  int errors;
  bool done;
  static char text[4096];
  CHECK_INT_EQ(sc_status(&conn[2]), 200);
  sc_sse_text(&conn[2], text, sizeof text, &errors, &done);
  CHECK_INT_EQ(errors, 1);
  CHECK_STR_CONTAINS(conn[2].buf, "queue_timeout_ms");
  CHECK_INT_EQ(metric(port, "exo_origin_queue_timeouts_total"), 2);
  /* the active one was never timed out: it runs once the map is live */
  CHECK_INT_EQ(sc_run(&conn[0], 1, 30), 1);
  CHECK_INT_EQ(sc_status(&conn[0]), 200);
  sc_sse_text(&conn[0], text, sizeof text, &errors, &done);
  CHECK_INT_EQ(errors, 0);
  CHECK(done);
  for (int i = 0; i < 3; i++)
    sc_close(&conn[i]);
  CHECK_INT_EQ(metric(port, "exo_origin_queue_timeouts_total"), 2);
  char err[256];
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
  exo_local_cluster_free(c);
}

/* Sends GET /healthz on c (connected, kept open) and reads the whole response. */
static int get_on(struct sc_conn *c, int port, bool connect_first)
{
  if (connect_first) {
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a))
      return -1;
  }
  static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  c->len = 0;
  c->done = false;
  if (write(c->fd, req, sizeof req - 1) != (ssize_t)sizeof req - 1 || sc_run(c, 1, 10) != 1)
    return -1;
  return sc_status(c);
}

static void test_max_connections(void)
{
  int port = 0;
  struct exo_local_cluster *c = start_api(NULL, NULL, "max_connections: 2", 3000, &port);
  if (!c)
    return;
  /* start() used short-lived connections: wait until the api forgot them */
  struct sc_conn k[3];
  int st = -1;
  for (int t = 0; t < 100; t++) {
    st = get_on(&k[0], port, true);
    if (st == 200 && (st = get_on(&k[1], port, true)) == 200)
      break;
    sc_close(&k[0]);
    sc_close(&k[1]);
    usleep(50000);
  }
  CHECK_INT_EQ(st, 200);
  CHECK_INT_EQ(get_on(&k[0], port, false), 200); /* kept alive, still tracked */
  CHECK_INT_EQ(get_on(&k[2], port, true), 503);
  char v[32] = "";
  CHECK(sc_header(&k[2], "Retry-After", v, sizeof v) != NULL);
  CHECK(!strcmp(v, "1"));
  CHECK(sc_header(&k[2], "Connection", v, sizeof v) != NULL);
  CHECK(!strcasecmp(v, "close"));
  CHECK_STR_CONTAINS(k[2].buf, "too_many_connections");
  CHECK_STR_CONTAINS(k[2].buf, "maximum of 2 open connections");
  sc_close(&k[2]);
  /* a closed connection frees its place */
  sc_close(&k[1]);
  st = -1;
  for (int t = 0; t < 100 && st != 200; t++) {
    st = get_on(&k[2], port, true);
    sc_close(&k[2]);
    if (st != 200)
      usleep(50000);
  }
  CHECK_INT_EQ(st, 200);
  sc_close(&k[0]);
  for (int t = 0; t < 100 && (st = (int)metric(port, "exo_api_rejected_connections_total")) < 0;
       t++)
    usleep(50000);
  CHECK(st >= 1);
  char err[256];
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
  exo_local_cluster_free(c);
}

int main(void)
{
  sc_raise_nofile();
  EXO_RUN(test_kv_budget);
  EXO_RUN(test_queue_timeout);
  EXO_RUN(test_max_connections);
  return exo_test_result();
}
