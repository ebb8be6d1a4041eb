/* tests/actors/test_pipeline.c: pipelined generation across real `exo-actors run` node
 * processes on loopback. Per fixture, four node processes start once (discovery by static
 * peers, health, partitioner, origin, shard each); every partition of the layers over 1..4
 * of them (forced through the coordinator with SET_PARTITION, no restart) must give the
 * fixture's greedy ids and the in-process single-node ids, whichever node's origin takes
 * the request; seeded sampling at temperature 0.8 must give the same ids on 1 and 3 nodes
 * as in-process; a node with no model anywhere serves models/demo. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/local_cluster.h"
#include "actors/client.h"
#include "tensor/forward.h"
#include "tensor/model.h"
#include "tensor/sample.h"
#include "tests/test.h"

#define N_NODES 4
#define FIRST_ID 11u

static struct exo_local_cluster *cluster;
static struct exo_client *client;
static uint32_t node_ids[N_NODES];

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

static void stop_cluster(void)
{
  exo_client_free(client);
  exo_local_cluster_free(cluster);
  client = NULL;
  cluster = NULL;
}

/* n nodes serving model (NULL: none configured), connected to by the client. */
static int start_cluster_wire(const char *model, int n, const char *wire_dtype);
static int start_cluster(const char *model, int n)
{
  return start_cluster_wire(model, n, NULL);
}

static int start_cluster_wire(const char *model, int n, const char *wire_dtype)
{
  char err[512], exe[PATH_MAX];
  const char *build = getenv("EXO_BUILD_ROOT");
  if (!build)
    return -1;
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", build);
  if (exo_client_new(NULL, &client, err, sizeof err)) {
    fprintf(stderr, "client: %s\n", err);
    return -1;
  }
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = n, .first_id = FIRST_ID,
                                     .model = model, .strategy = "even",
                                     .wire_dtype = wire_dtype, .log_level = "info",
                                     /* this test proves partitions, not failure detection
                                      * (tests/actors/test_cluster.c and tests/fault do):
                                      * under sanitizers on a loaded CI host a node can be
                                      * starved past the default 350-450 ms, and the map change
                                      * that follows re-issues a request */
                                     .health_options = "interval_ms: 400, max_silence_ms: 3000"};
  if (exo_local_cluster_start(&o, &cluster, err, sizeof err)) {
    fprintf(stderr, "cluster: %s\n", err);
    return -1;
  }
  double t0 = now_s();
  for (int i = 0; i < n; i++) {
    while (exo_client_connect(client, exo_local_cluster_addr(cluster, i), 100, &node_ids[i], err,
                              sizeof err)) {
      if (exo_local_cluster_check(cluster, err, sizeof err) || now_s() - t0 > 20) {
        fprintf(stderr, "cluster: %s\n", err);
        return -1;
      }
    }
  }
  fprintf(stderr, "# %d nodes up in %.0f ms\n", n, (now_s() - t0) * 1e3);
  return 0;
}

/* Makes parts[k] layers on nodes 0..k-1 live (the others get no range). */
static int map_parts(const int *parts, int k, char *err, size_t errlen)
{
  struct exo_gen_range r[N_NODES];
  uint32_t a = 0;
  for (int i = 0; i < k; i++) {
    r[i] = (struct exo_gen_range){node_ids[i], exo_actor_id(EXO_SHARD_ACTOR_NAME), a,
                                  a + (uint32_t)parts[i]};
    a += (uint32_t)parts[i];
  }
  return exo_client_set_partition(client, node_ids[0], r, (size_t)k, 20000, NULL, err, errlen);
}

static int generate(int via, const struct fixture *f, const struct exo_sample_params *sp,
                    size_t n, struct exo_client_result *res, char *err, size_t errlen)
{
  struct exo_req_submit req = {.sp = *sp, .max_tokens = (uint32_t)n, .flags = EXO_REQ_F_STATS,
                               .prompt = f->prompt, .n_prompt = f->n_prompt};
  return exo_client_generate(client, node_ids[via], &req, NULL, NULL, 20000, res, err, errlen);
}

static int n_partitions_checked;

/* Why a request was re-issued: the nodes' lines about suspicion, maps and re-issues. */
static void print_node_logs(int n)
{
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX], line[512];
    snprintf(path, sizeof path, "%s/node%u.log", exo_local_cluster_dir(cluster), node_ids[i]);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    while (fgets(line, sizeof line, f))
      if (strstr(line, "suspect") || strstr(line, "re-issu") || strstr(line, "re-propos") ||
          strstr(line, "answers again") || strstr(line, "no READY") ||
          strstr(line, "failed the request") || strstr(line, "idle for") ||
          strstr(line, "is live") || strstr(line, "proposing"))
        fprintf(stderr, "node%u.log: %s", node_ids[i], line);
    fclose(f);
  }
}

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
    int rc = map_parts(parts, k, err, sizeof err);
    if (rc)
      fprintf(stderr, "map %s: %s\n", desc, err);
    CHECK_INT_EQ(rc, 0);
    struct exo_sample_params sp;
    exo_sample_params_default(&sp);
    struct exo_client_result res;
    int via = n_partitions_checked % N_NODES; /* any node's origin takes requests */
    rc = generate(via, f, &sp, f->n_want, &res, err, sizeof err);
    if (rc)
      fprintf(stderr, "generate %s via node %u: %s\n", desc, node_ids[via], err);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(res.n_ids, f->n_want);
    int same = res.n_ids == f->n_want;
    for (size_t i = 0; same && i < res.n_ids; i++)
      same = res.ids[i] == f->want[i] && res.ids[i] == local[i];
    if (!same)
      fprintf(stderr, "%s on %d nodes (%s): ids differ\n", f->dir, k, desc);
    CHECK(same);
    if (!rc && res.n_ids) {
      CHECK_INT_EQ(res.events[res.n_ids - 1].n_stages, k);
      /* no more than one re-issue on a healthy cluster: the coordinator's duplicate
       * proposal is fixed (actors/partitioner.c), but one re-issue was still seen once
       * with three other cluster tests running beside this one (cause not pinned down:
       * the logs below say when it happens); ids must match either way */
      CHECK(res.attempts >= 1 && res.attempts <= 2);
      if (res.attempts != 1)
        print_node_logs(N_NODES);
    }
    exo_client_result_fini(&res);
    n_partitions_checked++;
    return;
  }
  for (int p = 1; p <= left - (k - 1 - idx); p++) {
    parts[idx] = p;
    check_compositions(f, local, k, parts, idx + 1, left - p);
  }
}

static void greedy_model(const char *name, int expect_partitions)
{
  struct fixture f;
  CHECK(load_fixture(name, &f) == 0);
  if (f.n_layers < 1)
    return;
  int32_t local[64];
  struct exo_sample_params sp;
  exo_sample_params_default(&sp);
  CHECK_INT_EQ(local_generate(&f, &sp, f.n_want, local), 0);
  for (size_t i = 0; i < f.n_want; i++)
    CHECK_INT_EQ(local[i], f.want[i]);
  if (start_cluster(f.dir, N_NODES)) {
    CHECK(!"cluster started");
    stop_cluster();
    return;
  }
  int before = n_partitions_checked;
  int parts[N_NODES];
  for (int k = 1; k <= N_NODES && k <= f.n_layers; k++)
    check_compositions(&f, local, k, parts, 0, f.n_layers);
  CHECK_INT_EQ(n_partitions_checked - before, expect_partitions);
  char err[512] = "";
  CHECK_INT_EQ(exo_local_cluster_check(cluster, err, sizeof err), 0);
}

static void greedy_tiny_llama(void)
{
  greedy_model("tiny-llama", 1 + 3 + 3 + 1); /* compositions of 4 into 1..4 parts */
  if (!cluster)
    return;
  /* seeded sampling on the same cluster: 1 and 3 nodes equal the in-process run */
  struct fixture f;
  CHECK(load_fixture("tiny-llama", &f) == 0);
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
    CHECK_INT_EQ(map_parts(parts[t], ks[t], err, sizeof err), 0);
    struct exo_client_result res;
    int rc = generate(t, &f, &sp, n, &res, err, sizeof err);
    if (rc)
      fprintf(stderr, "seeded on %d nodes: %s\n", ks[t], err);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(res.n_ids, n);
    for (size_t i = 0; i < res.n_ids && i < n; i++)
      CHECK_INT_EQ(res.ids[i], local[i]);
    exo_client_result_fini(&res);
  }
  stop_cluster();
}

static void greedy_tiny_qwen2(void)
{
  greedy_model("tiny-qwen2", 1 + 2 + 1); /* compositions of 3 into 1..3 parts */
  if (!cluster)
    return;
  /* a map that does not cover the model is refused with the reason; the cluster serves on */
  char err[512] = "";
  const int bad[] = {1, 1}; /* ends at layer 2 of 3 */
  int rc = map_parts(bad, 2, err, sizeof err);
  CHECK(rc == -EINVAL);
  CHECK_STR_CONTAINS(err, "ranges end at 2, the model has 3 layers");
  const int ok[] = {3};
  CHECK_INT_EQ(map_parts(ok, 1, err, sizeof err), 0);
  stop_cluster();
}

/* `exo-actors run` with no model in its config serves models/demo: the node processes run
 * from the source root (meson workdir), where models/demo lives. */
static void no_model_serves_demo(void)
{
  if (start_cluster(NULL, 2)) {
    CHECK(!"cluster started");
    stop_cluster();
    return;
  }
  struct fixture f = {.prompt = {1, 2, 3}, .n_prompt = 3};
  struct exo_sample_params sp;
  exo_sample_params_default(&sp);
  struct exo_client_result res;
  char err[512] = "";
  int rc = generate(1, &f, &sp, 5, &res, err, sizeof err);
  if (rc)
    fprintf(stderr, "%s\n", err);
  CHECK_INT_EQ(rc, 0);
  CHECK_INT_EQ(res.n_ids, 5);
  if (!rc && res.n_ids)
    CHECK_INT_EQ(res.events[0].n_stages, 2); /* the even split of 6 layers over 2 nodes */
  exo_client_result_fini(&res);
  stop_cluster();
}

/* Hidden states as f16 on the wire (half the bytes per hop): the fixtures' greedy ids hold
 * on 3 nodes for both models. */
static void f16_wire_keeps_greedy_ids(void)
{
  const char *names[] = {"tiny-llama", "tiny-qwen2"};
  for (int m = 0; m < 2; m++) {
    struct fixture f;
    CHECK(load_fixture(names[m], &f) == 0);
    if (start_cluster_wire(f.dir, 3, "f16")) {
      CHECK(!"cluster started");
      stop_cluster();
      return;
    }
    const int parts_llama[] = {1, 2, 1}, parts_qwen[] = {1, 1, 1};
    char err[512] = "";
    CHECK_INT_EQ(map_parts(m ? parts_qwen : parts_llama, 3, err, sizeof err), 0);
    struct exo_sample_params sp;
    exo_sample_params_default(&sp);
    struct exo_client_result res;
    int rc = generate(1, &f, &sp, f.n_want, &res, err, sizeof err);
    if (rc)
      fprintf(stderr, "f16 wire %s: %s\n", names[m], err);
    CHECK_INT_EQ(rc, 0);
    CHECK_INT_EQ(res.n_ids, f.n_want);
    size_t same = 0;
    while (same < res.n_ids && same < f.n_want && res.ids[same] == f.want[same])
      same++;
    if (same != f.n_want)
      fprintf(stderr, "f16 wire %s: ids differ from token %zu on\n", names[m], same);
    CHECK_INT_EQ(same, f.n_want);
    exo_client_result_fini(&res);
    stop_cluster();
  }
}

int main(void)
{
  double t0 = now_s();
  EXO_RUN(greedy_tiny_llama);
  EXO_RUN(greedy_tiny_qwen2);
  EXO_RUN(no_model_serves_demo);
  EXO_RUN(f16_wire_keeps_greedy_ids);
  fprintf(stderr, "# %d partitions checked in %.1f s\n", n_partitions_checked, now_s() - t0);
  return exo_test_result();
}
