/* tests/actors/test_pipeline.c: pipelined generation across real `exo-actors run` node
 * processes on loopback. Four node processes start once; every partition of each
 * fixture's layers over 1..4 of them (re-published by MAP, no restart) must give the
 * fixture's greedy ids and the in-process single-node ids; seeded sampling at
 * temperature 0.8 must give the same ids on 1 and 3 nodes as in-process. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/local_cluster.h"
#include "actors/origin.h"
#include "tensor/forward.h"
#include "tensor/model.h"
#include "tensor/sample.h"
#include "tests/test.h"

#define N_NODES 4
#define FIRST_ID 11u
#define ORIGIN_ID 100u

static struct exo_local_cluster *cluster;
static struct exo_origin *origin;

struct fixture {
  char dir[PATH_MAX];
  int32_t prompt[64], want[64];
  size_t n_prompt, n_want;
  int n_layers;
};

static int read_ids(json_t *arr, int32_t *out, size_t cap, size_t *n)
{
  if (!json_is_array(arr) || json_array_size(arr) > cap || json_array_size(arr) == 0)
    return -1;
  for (size_t i = 0; i < json_array_size(arr); i++)
    out[i] = (int32_t)json_integer_value(json_array_get(arr, i));
  *n = json_array_size(arr);
  return 0;
}

static int load_fixture(const char *name, struct fixture *f)
{
  const char *root = getenv("EXO_FIXTURES");
  if (!root)
    return -1;
  snprintf(f->dir, sizeof f->dir, "%s/%s", root, name);
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/reference.json", f->dir);
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j)
    return -1;
  json_t *g = json_object_get(j, "greedy");
  int rc = read_ids(json_object_get(g, "prompt_ids"), f->prompt, 64, &f->n_prompt) ||
           read_ids(json_object_get(g, "new_ids"), f->want, 64, &f->n_want);
  json_decref(j);
  struct exo_model_config mc;
  char err[256];
  if (rc || exo_model_config_load(f->dir, &mc, err, sizeof err))
    return -1;
  f->n_layers = mc.n_layers;
  return 0;
}

/* Single node, in process: the same loop as `exo-actors generate`. */
static int local_generate(const struct fixture *f, const struct exo_sample_params *sp, size_t n,
                          int32_t *out)
{
  char err[256];
  struct exo_model *m = NULL;
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  struct exo_sampler *smp = NULL;
  int32_t hist[256];
  float *logits = NULL;
  int rc = exo_model_load(f->dir, 0, -1, &m, err, sizeof err);
  if (rc)
    return rc;
  if ((rc = exo_forward_kv_new(m, 0, 256, &kv)) ||
      (rc = exo_forward_scratch_new(m, 64, 256, &s, err, sizeof err)) ||
      (rc = exo_sampler_new(m->cfg.vocab_size, &smp)) ||
      !(logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size)))
    goto out;
  memcpy(hist, f->prompt, f->n_prompt * sizeof *hist);
  size_t nh = f->n_prompt;
  int pos = 0, len = (int)nh;
  for (size_t k = 0; k < n; k++) {
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = len, .start_pos = pos};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = hist + pos,
                                  .logits_last_only = 1};
    if ((rc = exo_forward(m, &b, logits, s, err, sizeof err)) ||
        (rc = exo_sampler_sample(smp, sp, logits, hist, nh, f->n_prompt, 0, (int64_t)nh,
                                 &out[k])))
      goto out;
    hist[nh++] = out[k];
    pos += len;
    len = 1;
  }
out:
  free(logits);
  exo_sampler_free(smp);
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  exo_model_free(m);
  return rc;
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int start_cluster(void)
{
  char err[512], exe[PATH_MAX], listen[64];
  const char *build = getenv("EXO_BUILD_ROOT");
  if (!build)
    return -1;
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", build);
  int port;
  if (exo_local_cluster_pick_port(&port))
    return -1;
  snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
  if (exo_origin_new(ORIGIN_ID, listen, &origin, err, sizeof err)) {
    fprintf(stderr, "origin: %s\n", err);
    return -1;
  }
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = N_NODES, .first_id = FIRST_ID};
  if (exo_local_cluster_start(&o, &cluster, err, sizeof err)) {
    fprintf(stderr, "cluster: %s\n", err);
    return -1;
  }
  for (int i = 0; i < N_NODES; i++)
    if (exo_origin_add_peer(origin, exo_local_cluster_addr(cluster, i)))
      return -1;
  double t0 = now_s();
  for (;;) {
    if (exo_local_cluster_check(cluster, err, sizeof err)) {
      fprintf(stderr, "cluster: %s\n", err);
      return -1;
    }
    int ready = 0;
    for (int i = 0; i < N_NODES; i++)
      ready += exo_origin_has_peer(origin, exo_local_cluster_node_id(cluster, i));
    if (ready == N_NODES)
      break;
    if (now_s() - t0 > 20) {
      fprintf(stderr, "cluster: nodes not reachable within 20 s\n");
      return -1;
    }
    struct timespec nap = {0, 5000000};
    nanosleep(&nap, NULL);
  }
  fprintf(stderr, "# %d nodes up in %.0f ms\n", N_NODES, (now_s() - t0) * 1e3);
  return 0;
}

/* Publishes parts[k] layers on nodes 0..k-1 (the others get no range). */
static int map_parts(const struct fixture *f, const int *parts, int k, char *err, size_t errlen)
{
  struct exo_gen_range r[N_NODES], extra[N_NODES];
  uint32_t a = 0;
  for (int i = 0; i < k; i++) {
    r[i] = (struct exo_gen_range){exo_local_cluster_node_id(cluster, i),
                                  exo_actor_id(EXO_SHARD_ACTOR_NAME), a, a + (uint32_t)parts[i]};
    a += (uint32_t)parts[i];
  }
  for (int i = k; i < N_NODES; i++)
    extra[i - k] = (struct exo_gen_range){exo_local_cluster_node_id(cluster, i),
                                          exo_actor_id(EXO_SHARD_ACTOR_NAME), 0, 0};
  return exo_origin_set_map(origin, f->dir, r, (size_t)k, extra, (size_t)(N_NODES - k), 10000,
                            err, errlen);
}

static int n_partitions_checked;

/* Every composition of L layers into k positive parts. */
static void check_compositions(const struct fixture *f, const int32_t *local, int k, int *parts,
                               int idx, int left)
{
  if (idx == k - 1) {
    parts[idx] = left;
    char err[512] = "", desc[64] = "";
    for (int i = 0, a = 0; i < k; i++) {
      size_t n = strlen(desc);
      snprintf(desc + n, sizeof desc - n, "%s%d:%d", i ? "," : "", a, a + parts[i]);
      a += parts[i];
    }
    int rc = map_parts(f, parts, k, err, sizeof err);
    if (rc)
      fprintf(stderr, "map %s: %s\n", desc, err);
    CHECK_INT_EQ(rc, 0);
    struct exo_sample_params sp;
    exo_sample_params_default(&sp);
    struct exo_origin_result res;
    rc = exo_origin_generate(origin, f->prompt, f->n_prompt, &sp, (uint32_t)f->n_want, 0, NULL,
                             NULL, 10000, &res, err, sizeof err);
    if (rc)
      fprintf(stderr, "generate %s: %s\n", desc, err);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(res.n_ids, f->n_want);
    int same = res.n_ids == f->n_want;
    for (size_t i = 0; same && i < res.n_ids; i++)
      same = res.ids[i] == f->want[i] && res.ids[i] == local[i];
    if (!same)
      fprintf(stderr, "%s on %d nodes (%s): ids differ\n", f->dir, k, desc);
    CHECK(same);
    if (!rc && res.n_ids)
      CHECK_INT_EQ(res.steps[res.n_ids - 1].n_stages, k);
    exo_origin_result_fini(&res);
    n_partitions_checked++;
    return;
  }
  for (int p = 1; p <= left - (k - 1 - idx); p++) {
    parts[idx] = p;
    check_compositions(f, local, k, parts, idx + 1, left - p);
  }
}

static void greedy_model(const char *name, int *expect_partitions)
{
  struct fixture f;
  CHECK(load_fixture(name, &f) == 0);
  if (!cluster || f.n_layers < 1)
    return;
  int32_t local[64];
  struct exo_sample_params sp;
  exo_sample_params_default(&sp);
  CHECK_INT_EQ(local_generate(&f, &sp, f.n_want, local), 0);
  for (size_t i = 0; i < f.n_want; i++)
    CHECK_INT_EQ(local[i], f.want[i]);
  int before = n_partitions_checked;
  int parts[N_NODES];
  for (int k = 1; k <= N_NODES && k <= f.n_layers; k++)
    check_compositions(&f, local, k, parts, 0, f.n_layers);
  CHECK_INT_EQ(n_partitions_checked - before, *expect_partitions);
}

static void greedy_tiny_llama(void)
{
  int n = 1 + 3 + 3 + 1; /* compositions of 4 into 1..4 parts */
  greedy_model("tiny-llama", &n);
}

static void greedy_tiny_qwen2(void)
{
  int n = 1 + 2 + 1; /* compositions of 3 into 1..3 parts */
  greedy_model("tiny-qwen2", &n);
}

static void seeded_sampling_1_vs_3_nodes(void)
{
  struct fixture f;
  CHECK(load_fixture("tiny-llama", &f) == 0);
  if (!cluster)
    return;
  struct exo_sample_params sp;
  exo_sample_params_default(&sp);
  sp.temperature = 0.8f;
  sp.seed = 1234;
  const size_t n = 24;
  int32_t local[64];
  CHECK_INT_EQ(local_generate(&f, &sp, n, local), 0);
  int greedy_differs = 0;
  for (size_t i = 0; i < n && i < f.n_want; i++)
    greedy_differs |= local[i] != f.want[i];
  CHECK(greedy_differs); /* else this would not test the sampler's randomness */
  const int one[] = {4}, three[] = {1, 2, 1};
  const int *parts[] = {one, three};
  const int ks[] = {1, 3};
  for (int t = 0; t < 2; t++) {
    char err[512] = "";
    CHECK_INT_EQ(map_parts(&f, parts[t], ks[t], err, sizeof err), 0);
    struct exo_origin_result res;
    int rc = exo_origin_generate(origin, f.prompt, f.n_prompt, &sp, (uint32_t)n, 0, NULL, NULL,
                                 10000, &res, err, sizeof err);
    if (rc)
      fprintf(stderr, "seeded on %d nodes: %s\n", ks[t], err);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(res.n_ids, n);
    for (size_t i = 0; i < res.n_ids && i < n; i++)
      CHECK_INT_EQ(res.ids[i], local[i]);
    exo_origin_result_fini(&res);
  }
}

static void bad_map_is_refused_with_reason(void)
{
  struct fixture f;
  CHECK(load_fixture("tiny-qwen2", &f) == 0);
  if (!cluster)
    return;
  char err[512] = "";
  const int parts[] = {1, 1}; /* ends at layer 2 of 3 */
  int rc = map_parts(&f, parts, 2, err, sizeof err);
  CHECK(rc == -EINVAL);
  CHECK_STR_CONTAINS(err, "ranges end at layer 2; the model has 3");
  /* the cluster still serves after a refused map */
  const int ok[] = {3};
  CHECK_INT_EQ(map_parts(&f, ok, 1, err, sizeof err), 0);
}

/* `exo-actors run` with no model anywhere (MAP, option, config) serves models/demo: the
 * node processes run from the source root (meson workdir), where models/demo lives. */
static void map_without_model_serves_demo(void)
{
  if (!cluster)
    return;
  char err[512] = "";
  struct exo_gen_range r[2], extra[N_NODES];
  for (int i = 0; i < 2; i++)
    r[i] = (struct exo_gen_range){exo_local_cluster_node_id(cluster, i),
                                  exo_actor_id(EXO_SHARD_ACTOR_NAME), 3u * (uint32_t)i,
                                  3u * (uint32_t)i + 3}; /* the demo model has 6 layers */
  for (int i = 2; i < N_NODES; i++)
    extra[i - 2] = (struct exo_gen_range){exo_local_cluster_node_id(cluster, i),
                                          exo_actor_id(EXO_SHARD_ACTOR_NAME), 0, 0};
  int rc = exo_origin_set_map(origin, NULL, r, 2, extra, N_NODES - 2, 20000, err, sizeof err);
  if (rc)
    fprintf(stderr, "%s\n", err);
  CHECK_INT_EQ(rc, 0);
}

static void cluster_still_alive(void)
{
  char err[512] = "";
  CHECK(cluster != NULL);
  if (cluster) {
    int rc = exo_local_cluster_check(cluster, err, sizeof err);
    if (rc)
      fprintf(stderr, "%s\n", err);
    CHECK_INT_EQ(rc, 0);
  }
}

int main(void)
{
  double t0 = now_s();
  if (start_cluster()) {
    exo_local_cluster_free(cluster);
    exo_origin_free(origin);
    cluster = NULL;
    origin = NULL;
  }
  EXO_RUN(cluster_still_alive);
  EXO_RUN(greedy_tiny_llama);
  EXO_RUN(greedy_tiny_qwen2);
  EXO_RUN(seeded_sampling_1_vs_3_nodes);
  EXO_RUN(bad_map_is_refused_with_reason);
  EXO_RUN(map_without_model_serves_demo);
  EXO_RUN(cluster_still_alive);
  exo_origin_free(origin);
  exo_local_cluster_free(cluster);
  fprintf(stderr, "# %d partitions checked in %.1f s\n", n_partitions_checked, now_s() - t0);
  return exo_test_result();
}
