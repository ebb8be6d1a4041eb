/* tests/api/test_api_streams.c: 256 open streaming connections on one node (the origin's
 * defaults: 32 active + 224 queued; the api allows 320 connections) are all served, each
 * stream's text equal to the same request's run alone, with no error event; the 257th
 * request is answered 429 with a Retry-After. The node's map goes live 4 s after start,
 * so all 256 are held (ACKed, none completed) when the 257th arrives. */
#include <errno.h>
#include <limits.h>

#include "actors/local_cluster.h"
#include "tests/api/stream_client.h"
#include "tests/test.h"

#define N_STREAMS 256
#define N_VARIANTS 8

static void body_for(char *b, size_t cap, int v)
{
  snprintf(b, cap, "{\"model\":\"tiny-llama\",\"prompt\":\"Stream number %d says\","
           "\"max_tokens\":12,\"stream\":true,\"seed\":%d,\"temperature\":0.9}", v, 7 + v);
}

static void test_256_streams(void)
{
  char exe[PATH_MAX], model[PATH_MAX], err[512] = "";
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", getenv("EXO_BUILD_ROOT"));
  snprintf(model, sizeof model, "%s/tiny-llama", getenv("EXO_FIXTURES"));
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 1, .first_id = 1, .model = model,
                                     .api = 1, .api_options = "max_connections: 320",
                                     .settle_ms = 4000};
  struct exo_local_cluster *c = NULL;
  CHECK_INT_EQ(exo_local_cluster_start(&o, &c, err, sizeof err), 0);
  if (!c) {
    fprintf(stderr, "local cluster: %s\n", err);
    return;
  }
  int port = exo_local_cluster_api_port(c, 0);
  char body[512];
  static char big[65536];
  int up = 0;
  for (int i = 0; i < 300 && !up; i++)
    if (!(up = sc_get(port, "/healthz", big, sizeof big) == 200))
      usleep(20000);
  CHECK(up);
  CHECK_INT_EQ(sc_epoch(port), 0);
  static struct sc_conn conn[N_STREAMS + 1];
  double t0 = sc_now();
  int started = 0;
  for (int i = 0; i < N_STREAMS; i++) {
    body_for(body, sizeof body, i % N_VARIANTS);
    started += sc_start(&conn[i], port, "/v1/completions", body) == 0;
  }
  CHECK_INT_EQ(started, N_STREAMS);
  int heads = 0;
  for (int i = 0; i < N_STREAMS; i++) {
    heads += sc_wait_head(&conn[i], 20) == 0 && sc_status(&conn[i]) == 200;
  }
  CHECK_INT_EQ(heads, N_STREAMS); /* every one ACKed: admitted or queued */
  fprintf(stderr, "# %d streams open and ACKed in %.2f s\n", heads, sc_now() - t0);
  body_for(body, sizeof body, 0);
  CHECK_INT_EQ(sc_start(&conn[N_STREAMS], port, "/v1/completions", body), 0);
  CHECK_INT_EQ(sc_run(&conn[N_STREAMS], 1, 20), 1);
  char v[32] = "";
  CHECK_INT_EQ(sc_status(&conn[N_STREAMS]), 429);
  CHECK(sc_header(&conn[N_STREAMS], "Retry-After", v, sizeof v) != NULL);
  CHECK(atoi(v) >= 1);
  fprintf(stderr, "# request 257: %d, Retry-After: %s\n", sc_status(&conn[N_STREAMS]), v);
  long epoch = sc_epoch(port);
  if (epoch != 0)
    fprintf(stderr, "# the map went live before request 257 was refused: too slow a machine\n");
  CHECK_INT_EQ(epoch, 0);
  t0 = sc_now();
  int done = sc_run(conn, N_STREAMS, 40);
  CHECK_INT_EQ(done, N_STREAMS);
  fprintf(stderr, "# %d streams done %.2f s after the 257th\n", done, sc_now() - t0);
  static char alone[N_VARIANTS][4096], text[4096];
  for (int k = 0; k < N_VARIANTS; k++) {
    body_for(body, sizeof body, k);
    CHECK_INT_EQ(sc_one(port, body, alone[k], sizeof alone[k], NULL, 0), 200);
  }
  int same = 0, clean = 0;
  for (int i = 0; i < N_STREAMS; i++) {
    int errors;
    bool saw_done;
    sc_sse_text(&conn[i], text, sizeof text, &errors, &saw_done);
    same += !strcmp(text, alone[i % N_VARIANTS]) && text[0];
    clean += errors == 0 && saw_done;
  }
  fprintf(stderr, "# %d/%d streams equal to their run alone, %d ended cleanly\n", same,
          N_STREAMS, clean);
  CHECK_INT_EQ(same, N_STREAMS);
  CHECK_INT_EQ(clean, N_STREAMS);
  for (int i = 0; i <= N_STREAMS; i++)
    sc_close(&conn[i]);
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
  exo_local_cluster_free(c);
}

int main(void)
{
  sc_raise_nofile();
  EXO_RUN(test_256_streams);
  return exo_test_result();
}
