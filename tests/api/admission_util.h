/* tests/api/admission_util.h: helpers shared by the admission tests (test_api_admission.c,
 * test_api_limits.c): start one tiny-llama node with api, origin and shard options, read a
 * metric off /metrics, build completion bodies. Test-only (static): must not be used
 * outside tests. */
#ifndef EXO_TESTS_API_ADMISSION_UTIL_H
#define EXO_TESTS_API_ADMISSION_UTIL_H

#include <limits.h>

#include "actors/local_cluster.h"
#include "tests/api/stream_client.h"
#include "tests/test.h"

/* A stream that ended well: status 200, no error event, [DONE], and its text (into
 * text[cap]) what the same request gave alone. */
static void check_stream_like_alone(const struct sc_conn *c, char *text, size_t cap,
                                    const char *alone)
{
  int errors;
  bool done;
  CHECK_INT_EQ(sc_status(c), 200);
  sc_sse_text(c, text, cap, &errors, &done);
  CHECK_INT_EQ(errors, 0);
  CHECK(done);
  CHECK(!strcmp(text, alone));
}

/* settle_ms > 0: the map goes live that long after start; returns once the api answers
 * (before the map). Else once a generation is served. */
static struct exo_local_cluster *start_api(const char *origin_opts, const char *shard_opts,
                                           const char *api_opts, int settle_ms, int *port)
{
  char exe[PATH_MAX], model[PATH_MAX], err[512] = "";
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", getenv("EXO_BUILD_ROOT"));
  snprintf(model, sizeof model, "%s/tiny-llama", getenv("EXO_FIXTURES"));
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 1, .first_id = 1, .model = model,
                                     .api = 1, .origin_options = origin_opts,
                                     .api_options = api_opts,
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

static struct exo_local_cluster *start(const char *origin_opts, const char *shard_opts,
                                       int settle_ms, int *port)
{
  return start_api(origin_opts, shard_opts, NULL, settle_ms, port);
}

/* The value of metric name (a line "name value") on /metrics, or -1. */
static long metric(int port, const char *name)
{
  static char text[65536];
  if (sc_get(port, "/metrics", text, sizeof text) != 200)
    return -1;
  size_t nl = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, name, nl) && p[nl] == ' ')
      return strtol(p + nl + 1, NULL, 10);
  return -1;
}

/* A completion request for the given prompt ids: n ids, first + k for k < n. */
static void ids_body(char *b, size_t cap, int first, int n, int max_tokens, bool stream)
{
  size_t at = (size_t)snprintf(b, cap, "{\"model\":\"tiny-llama\",\"prompt\":[");
  for (int k = 0; k < n && at < cap; k++)
    at += (size_t)snprintf(b + at, cap - at, "%s%d", k ? "," : "", (first + 7 * k) % 500 + 2);
  if (at < cap)
    snprintf(b + at, cap - at, "],\"max_tokens\":%d,\"stream\":%s,\"seed\":%d,"
             "\"temperature\":0.7}", max_tokens, stream ? "true" : "false", first);
}

static void body_for(char *b, size_t cap, int i, int max_tokens)
{
  snprintf(b, cap, "{\"model\":\"tiny-llama\",\"prompt\":\"Once upon a time %d\","
           "\"max_tokens\":%d,\"stream\":true,\"seed\":%d,\"temperature\":0.8}", i,
           max_tokens, 100 + i);
}

#endif
