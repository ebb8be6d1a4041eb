/* tests/actors/test_concurrent.c: many requests at once through real node processes.
 * 16 requests with different prompts and lengths, greedy and seeded, submitted together
 * (one client thread each) on 1 node and on 3 nodes, each produce exactly the tokens of the
 * same request run alone; the shard-workers batch their decode steps and cut prefills into
 * chunks (prefill_chunk 5 here, so prompts span several chunks interleaved with decodes).
 * A request queued behind long prefills for longer than the shard's idle_ttl_ms and the
 * origin's step_timeout_ms is neither reaped nor re-issued (the shard tells the origin it
 * waits) and gives its tokens alone. Runs in the concurrency suite (TSan build too). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/client.h"
#include "actors/local_cluster.h"
#include "tests/test.h"

#define N_REQ 16
#define MAX_NEW 40

struct req {
  int32_t prompt[64];
  size_t n_prompt;
  struct exo_req_submit sub;
  int32_t alone[MAX_NEW], together[MAX_NEW];
  size_t n_alone, n_together;
  int rc;
  char err[256];
  uint32_t node;
  const char *addr;
};

static void make_requests(struct req *r)
{
  for (int i = 0; i < N_REQ; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].n_prompt = 1 + (size_t)(i * 7 % 23); /* 1..23 tokens: 1 to 5 chunks */
    for (size_t k = 0; k < r[i].n_prompt; k++)
      r[i].prompt[k] = (int32_t)((i * 31 + (int)k * 17 + 3) % 500 + 1);
    exo_sample_params_default(&r[i].sub.sp);
    if (i % 2) { /* every other one seeded, with filters */
      r[i].sub.sp.temperature = 0.9f;
      r[i].sub.sp.top_k = 40;
      r[i].sub.sp.top_p = 0.95f;
      r[i].sub.sp.seed = 1000u + (uint64_t)i;
    }
    r[i].sub.max_tokens = (uint32_t)(8 + i * 2); /* 8..38 */
    r[i].sub.prompt = r[i].prompt;
    r[i].sub.n_prompt = r[i].n_prompt;
  }
}

static int connect_to(struct exo_client *cl, const char *addr, uint32_t *node)
{
  char err[256];
  for (int tries = 0; tries < 200; tries++)
    if (exo_client_connect(cl, addr, 100, node, err, sizeof err) == 0)
      return 0;
  fprintf(stderr, "connect %s: %s\n", addr, err);
  return -1;
}

static void *run_one(void *arg)
{
  struct req *r = arg;
  struct exo_client *cl = NULL;
  struct exo_client_result res = {0};
  uint32_t node = 0;
  r->rc = exo_client_new(NULL, &cl, r->err, sizeof r->err);
  if (!r->rc)
    r->rc = connect_to(cl, r->addr, &node);
  if (!r->rc)
    r->rc = exo_client_generate(cl, node, &r->sub, NULL, NULL, 60000, &res, r->err,
                                sizeof r->err);
  r->n_together = res.n_ids < MAX_NEW ? res.n_ids : MAX_NEW;
  if (r->n_together)
    memcpy(r->together, res.ids, r->n_together * sizeof(int32_t));
  exo_client_result_fini(&res);
  exo_client_free(cl);
  return NULL;
}

static void concurrent_equals_alone(int n_nodes)
{
  char exe[PATH_MAX], model[PATH_MAX], err[512] = "";
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", getenv("EXO_BUILD_ROOT"));
  snprintf(model, sizeof model, "%s/tiny-llama", getenv("EXO_FIXTURES"));
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = n_nodes, .first_id = 1,
                                     .model = model, .prefill_chunk = 5};
  struct exo_local_cluster *c = NULL;
  struct exo_client *cl = NULL;
  CHECK_INT_EQ(exo_local_cluster_start(&o, &c, err, sizeof err), 0);
  CHECK_INT_EQ(exo_client_new(NULL, &cl, err, sizeof err), 0);
  static struct req reqs[N_REQ];
  make_requests(reqs);
  uint32_t node = 0;
  if (!c || !cl || connect_to(cl, exo_local_cluster_addr(c, 0), &node))
    goto out;
  /* alone: one at a time */
  for (int i = 0; i < N_REQ; i++) {
    struct exo_client_result res = {0};
    int rc = exo_client_generate(cl, node, &reqs[i].sub, NULL, NULL, 60000, &res, err,
                                 sizeof err);
    if (rc)
      fprintf(stderr, "alone %d: %s\n", i, err);
    CHECK_INT_EQ(rc, 0);
    reqs[i].n_alone = res.n_ids < MAX_NEW ? res.n_ids : MAX_NEW;
    if (reqs[i].n_alone)
      memcpy(reqs[i].alone, res.ids, reqs[i].n_alone * sizeof(int32_t));
    CHECK(reqs[i].n_alone >= 1);
    exo_client_result_fini(&res);
  }
  /* together: all 16 at once, entering through every node */
  pthread_t th[N_REQ];
  for (int i = 0; i < N_REQ; i++) {
    reqs[i].addr = exo_local_cluster_addr(c, i % n_nodes);
    pthread_create(&th[i], NULL, run_one, &reqs[i]);
  }
  for (int i = 0; i < N_REQ; i++)
    pthread_join(th[i], NULL);
  int identical = 0;
  for (int i = 0; i < N_REQ; i++) {
    if (reqs[i].rc)
      fprintf(stderr, "together %d: %s\n", i, reqs[i].err);
    CHECK_INT_EQ(reqs[i].rc, 0);
    CHECK_INT_EQ(reqs[i].n_together, reqs[i].n_alone);
    int same = reqs[i].n_together == reqs[i].n_alone &&
               !memcmp(reqs[i].together, reqs[i].alone, reqs[i].n_alone * sizeof(int32_t));
    if (!same)
      fprintf(stderr, "%d nodes: request %d (%s) differs from its run alone\n", n_nodes, i,
              i % 2 ? "seeded" : "greedy");
    identical += same;
  }
  fprintf(stderr, "# %d nodes: %d/%d concurrent requests identical to alone\n", n_nodes,
          identical, N_REQ);
  CHECK_INT_EQ(identical, N_REQ);
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
out:
  exo_client_free(cl);
  exo_local_cluster_free(c);
}

struct long_req {
  int32_t prompt[240];
  struct exo_req_submit sub;
  const char *addr;
  int rc;
  char err[256];
  struct exo_client_result res;
  double seconds;
};

static double now_s(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run_long(void *arg)
{
  struct long_req *r = arg;
  struct exo_client *cl = NULL;
  uint32_t node = 0;
  double t0 = now_s();
  r->rc = exo_client_new(NULL, &cl, r->err, sizeof r->err);
  if (!r->rc)
    r->rc = connect_to(cl, r->addr, &node);
  if (!r->rc)
    r->rc = exo_client_generate(cl, node, &r->sub, NULL, NULL, 60000, &r->res, r->err,
                                sizeof r->err);
  r->seconds = now_s() - t0;
  exo_client_free(cl);
  return NULL;
}

/* Long prefills one row per turn, one request per turn, ahead of a short request: it waits
 * several times the shard's idle_ttl_ms and the origin's step_timeout_ms. Before the shard said so
 * (EXO_GEN_TOKEN_WAITING) and spared waiting steps from its idle sweep, such a request
 * was reaped and hung, or re-issued to the back of the queue. ThreadSanitizer slows
 * everything ~5x, and the keepalive's own latency with it: the timeouts scale. */
#if defined(__SANITIZE_THREAD__)
#define TIMEOUT_SCALE 4
#else
#define TIMEOUT_SCALE 1
#endif
static void queued_past_timeouts(void)
{
  enum { N_LONG = 40 };
  char exe[PATH_MAX], model[PATH_MAX], err[512] = "", ttl[64], stall[64];
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", getenv("EXO_BUILD_ROOT"));
  snprintf(model, sizeof model, "%s/tiny-llama", getenv("EXO_FIXTURES"));
  const int step_ms = 200 * TIMEOUT_SCALE; /* the shard's keepalive: every ttl / 2 */
  /* batch 1: one request per turn, so the short one waits for every long one */
  snprintf(ttl, sizeof ttl, "idle_ttl_ms: %d, batch: 1", 100 * TIMEOUT_SCALE);
  snprintf(stall, sizeof stall, "step_timeout_ms: %d", step_ms);
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 1, .first_id = 1, .model = model,
                                     .prefill_chunk = 1,
                                     .shard_options = ttl, .origin_options = stall};
  struct exo_local_cluster *c = NULL;
  struct exo_client *cl = NULL;
  CHECK_INT_EQ(exo_local_cluster_start(&o, &c, err, sizeof err), 0);
  CHECK_INT_EQ(exo_client_new(NULL, &cl, err, sizeof err), 0);
  uint32_t node = 0;
  static struct long_req reqs[N_LONG + 1];
  memset(reqs, 0, sizeof reqs);
  if (!c || !cl || connect_to(cl, exo_local_cluster_addr(c, 0), &node))
    goto out;
  for (int i = 0; i <= N_LONG; i++) {
    struct long_req *r = &reqs[i];
    size_t n = i < N_LONG ? 220 : 3; /* the last one is the short request */
    for (size_t k = 0; k < n; k++)
      r->prompt[k] = (int32_t)((i * 37 + (int)k * 11 + 5) % 500 + 1);
    exo_sample_params_default(&r->sub.sp);
    r->sub.max_tokens = 8;
    r->sub.prompt = r->prompt;
    r->sub.n_prompt = n;
    r->addr = exo_local_cluster_addr(c, 0);
  }
  /* the short request alone first: its reference tokens */
  struct exo_client_result alone = {0};
  CHECK_INT_EQ(exo_client_generate(cl, node, &reqs[N_LONG].sub, NULL, NULL, 60000, &alone, err,
                                   sizeof err), 0);
  pthread_t th[N_LONG + 1];
  for (int i = 0; i <= N_LONG; i++) {
    pthread_create(&th[i], NULL, run_long, &reqs[i]);
    if (i == N_LONG - 1) /* the long ones are queued first */
      nanosleep(&(struct timespec){0, 50000000}, NULL);
  }
  for (int i = 0; i <= N_LONG; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i <= N_LONG; i++) {
    if (reqs[i].rc)
      fprintf(stderr, "request %d: %s\n", i, reqs[i].err);
    CHECK_INT_EQ(reqs[i].rc, 0);
    CHECK_INT_EQ(reqs[i].res.attempts, 1); /* never taken for lost */
  }
  struct long_req *b = &reqs[N_LONG];
  fprintf(stderr, "# short request behind %d long prefills: %.0f ms\n", N_LONG,
          b->seconds * 1e3);
  /* the scenario happened: it waited twice the stall timeout at least */
  CHECK(b->seconds > 2 * step_ms / 1e3);
  CHECK_INT_EQ(b->res.n_ids, alone.n_ids);
  CHECK(b->res.n_ids == alone.n_ids &&
        !memcmp(b->res.ids, alone.ids, alone.n_ids * sizeof(int32_t)));
  exo_client_result_fini(&alone);
  for (int i = 0; i <= N_LONG; i++)
    exo_client_result_fini(&reqs[i].res);
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
out:
  exo_client_free(cl);
  exo_local_cluster_free(c);
}

static void one_node(void)
{
  concurrent_equals_alone(1);
}

static void three_nodes(void)
{
  concurrent_equals_alone(3);
}

int main(void)
{
  EXO_RUN(one_node);
  EXO_RUN(three_nodes);
  EXO_RUN(queued_past_timeouts);
  return exo_test_result();
}
