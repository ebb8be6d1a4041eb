/* tests/actors/test_concurrent.c: many requests at once through real node processes.
 * 16 requests with different prompts and lengths, greedy and seeded, submitted together
 * (one client thread each) on 1 node and on 3 nodes, each produce exactly the tokens of the
 * same request run alone; the shard-workers batch their decode steps and cut prefills into
 * chunks (prefill_chunk 5 here, so prompts span several chunks interleaved with decodes).
 * Runs in the concurrency suite (TSan build too). */
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
  return exo_test_result();
}
