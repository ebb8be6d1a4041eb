/* bench/bench_cluster.c: pipelined decode across real node processes on loopback, side by
 * side in one run: a TinyLlama-1.1B-shaped model (random f32 weights, the file
 * bench_tensor writes) decoded on 1 node and on 3 nodes, the orchestration overhead per
 * hop (step time minus compute, over the hops of a step) next to raw nanomsg tcp one-way
 * time for the same 8 KiB payload (half a blocking ping-pong round trip), and the per-step
 * overhead on tiny-llama, where orchestration dominates. Medians; a benchmark, not a test. */
#include <errno.h>
#include <limits.h>
#include <nanomsg/nn.h>
#include <nanomsg/pair.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_common.h"
#include "actors/client.h"
#include "actors/local_cluster.h"

/* ---- raw nanomsg tcp ping-pong -------------------------------------------------- */

struct echo {
  int sock;
  int n;
};

static void *echo_thread(void *arg)
{
  struct echo *e = arg;
  for (int i = 0; i < e->n; i++) {
    void *buf = NULL;
    int n = nn_recv(e->sock, &buf, NN_MSG, 0);
    if (n < 0)
      break;
    if (nn_send(e->sock, &buf, NN_MSG, 0) < 0) {
      nn_freemsg(buf);
      break;
    }
  }
  return NULL;
}

/* Median one-way time (half the round trip) of size-byte messages, in us. */
static double raw_tcp_one_way_us(size_t size, int n)
{
  char addr[64];
  int port;
  if (exo_local_cluster_pick_port(&port))
    return -1;
  snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", port);
  int a = nn_socket(AF_SP, NN_PAIR), b = nn_socket(AF_SP, NN_PAIR);
  if (a < 0 || b < 0 || nn_bind(a, addr) < 0 || nn_connect(b, addr) < 0)
    return -1;
  struct echo e = {b, n + 20};
  pthread_t th;
  pthread_create(&th, NULL, echo_thread, &e);
  char *msg = calloc(1, size);
  double *rt = calloc((size_t)n, sizeof *rt);
  for (int i = 0; i < n + 20; i++) {
    double t0 = exo_bench_now();
    void *buf = NULL;
    if (nn_send(a, msg, size, 0) < 0 || nn_recv(a, &buf, NN_MSG, 0) < 0)
      break;
    nn_freemsg(buf);
    if (i >= 20) /* warm-up: connection set-up, first allocations */
      rt[i - 20] = (exo_bench_now() - t0) * 1e6;
  }
  pthread_join(th, NULL);
  double med = exo_bench_median(rt, (size_t)n) / 2;
  free(rt);
  free(msg);
  nn_close(a);
  nn_close(b);
  return med;
}

/* ---- a generation through K local node processes -------------------------------- */

struct run {
  double step_us, compute_us, hop_us; /* medians over decode steps (after the first 2) */
  int n_stages;
  size_t n_ids;
};

static int cluster_run(const char *exe, const char *model, int k, const char *ranges,
                       uint32_t steps, int loop0, struct run *out, char *err, size_t errlen)
{
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = k, .first_id = 1, .model = model,
                                     .ranges = ranges, .shard_on_loop0 = loop0};
  struct exo_local_cluster *c = NULL;
  struct exo_client *cl = NULL;
  struct exo_client_result res = {0};
  int rc = exo_local_cluster_start(&o, &c, err, errlen);
  if (!rc)
    rc = exo_client_new(NULL, &cl, err, errlen);
  uint32_t n1 = 0;
  for (double t0 = exo_bench_now(); !rc;) {
    if (exo_client_connect(cl, exo_local_cluster_addr(c, 0), 100, &n1, err, errlen) == 0)
      break;
    if ((rc = exo_local_cluster_check(c, err, errlen)) || exo_bench_now() - t0 > 30)
      rc = rc ? rc : -ETIMEDOUT;
  }
  int32_t prompt[8] = {1, 45, 49, 31, 26, 93, 292, 72}; /* inside every vocabulary here */
  struct exo_req_submit req = {.max_tokens = steps, .flags = EXO_REQ_F_STATS, .prompt = prompt,
                               .n_prompt = 8};
  exo_sample_params_default(&req.sp);
  if (!rc)
    rc = exo_client_generate(cl, n1, &req, NULL, NULL, 3600000, &res, err, errlen);
  if (!rc) {
    size_t n = res.n_ids > 2 ? res.n_ids - 2 : 0;
    double *st = calloc(n + 1, sizeof *st), *cp = calloc(n + 1, sizeof *cp),
           *hp = calloc(n + 1, sizeof *hp);
    for (size_t i = 0; i < n; i++) {
      const struct exo_req_event *e = &res.events[i + 2];
      double compute = 0;
      for (uint32_t j = 0; j < e->n_stages; j++)
        compute += e->stages[j].compute_ns / 1e3;
      st[i] = e->step_ns / 1e3;
      cp[i] = compute;
      /* hops of a decode step: one into each stage (the first's is the last's TOKEN) */
      hp[i] = (st[i] - compute) / (e->n_stages ? e->n_stages : 1);
    }
    out->n_stages = n ? (int)res.events[2].n_stages : 0;
    out->step_us = exo_bench_median(st, n);
    out->compute_us = exo_bench_median(cp, n);
    out->hop_us = exo_bench_median(hp, n);
    out->n_ids = res.n_ids;
    free(st);
    free(cp);
    free(hp);
  }
  exo_client_result_fini(&res);
  exo_client_free(cl);
  exo_local_cluster_free(c);
  return rc;
}

int main(int argc, char **argv)
{
  const char *dir = EXO_BENCH_TINYLLAMA_DIR;
  int steps = 10;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else
      steps = 0;
  }
  if (steps < 4 || steps > 1000) {
    fprintf(stderr, "usage: bench_cluster [--dir DIR] [--steps 4..1000]\n"
                    "  run from the source root (tests/fixtures/tiny-llama is used too)\n");
    return 2;
  }
  char exe[PATH_MAX], err[512];
  ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[el > 0 ? el : 0] = '\0';
  char *slash = strrchr(exe, '/');
  if (!slash)
    return 1;
  snprintf(slash, sizeof exe - (size_t)(slash - exe), "/../actors/exo-actors");
  if (exo_bench_tinyllama(dir, err, sizeof err)) {
    fprintf(stderr, "write: %s\n", err);
    return 1;
  }
  /* One BLAS thread in every node: idle OpenBLAS workers spin, and three processes' spinning
   * workers on two cores would tax whichever node computes (measured: 2.4x slower steps). */
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  double raw = raw_tcp_one_way_us(2048 * sizeof(float), 2000);
  struct run one = {0}, three = {0}, tiny = {0}, tiny0 = {0};
  printf("TinyLlama-1.1B dims (f32, %s), %d decode steps per run, medians after 2 warm-up "
         "steps\n", dir, steps);
  fflush(stdout);
  if (cluster_run(exe, dir, 1, "1=0:22", (uint32_t)steps, 0, &one, err, sizeof err)) {
    fprintf(stderr, "1 node: %s\n", err);
    return 1;
  }
  if (cluster_run(exe, dir, 3, "1=0:8,2=8:15,3=15:22", (uint32_t)steps, 0, &three, err,
                  sizeof err)) {
    fprintf(stderr, "3 nodes: %s\n", err);
    return 1;
  }
  double raw2 = raw_tcp_one_way_us(2048 * sizeof(float), 2000);
  if (cluster_run(exe, "tests/fixtures/tiny-llama", 3, "1=0:1,2=1:3,3=3:4", 200, 0, &tiny, err,
                  sizeof err) ||
      cluster_run(exe, "tests/fixtures/tiny-llama", 3, "1=0:1,2=1:3,3=3:4", 200, 1, &tiny0, err,
                  sizeof err)) {
    fprintf(stderr, "tiny-llama 3 nodes: %s\n", err);
    return 1;
  }
  double raw_med = (raw + raw2) / 2;
  printf("%-28s %12s %12s %12s %14s\n", "", "step ms", "compute ms", "tok/s", "overhead/hop");
  printf("%-28s %12.2f %12.2f %12.3f %11.1f us\n", "1 node (1 stage)", one.step_us / 1e3,
         one.compute_us / 1e3, 1e6 / one.step_us, one.hop_us);
  printf("%-28s %12.2f %12.2f %12.3f %11.1f us\n", "3 nodes (3 stages)", three.step_us / 1e3,
         three.compute_us / 1e3, 1e6 / three.step_us, three.hop_us);
  printf("%-28s %12.3f %12.3f %12.1f %11.1f us\n", "tiny-llama, 3 nodes", tiny.step_us / 1e3,
         tiny.compute_us / 1e3, 1e6 / tiny.step_us, tiny.hop_us);
  printf("%-28s %12.3f %12.3f %12.1f %11.1f us\n", "  same, shard on loop 0", tiny0.step_us / 1e3,
         tiny0.compute_us / 1e3, 1e6 / tiny0.step_us, tiny0.hop_us);
  printf("raw nanomsg tcp one-way, 8 KiB (half a ping-pong RTT): %.1f us (before %.1f, after "
         "%.1f)\n", raw_med, raw, raw2);
  printf("ratios: 3-node tok/s / 1-node tok/s = %.3f (goal >= 0.97)\n",
         one.step_us / three.step_us);
  printf("        overhead per hop / raw one-way: TinyLlama dims %.2fx, tiny-llama %.2fx, "
         "shard on loop 0 %.2fx (goal <= 1.3x)\n", three.hop_us / raw_med, tiny.hop_us / raw_med,
         tiny0.hop_us / raw_med);
  printf("        tiny-llama per-step overhead, 3 nodes: %.1f us (goal < 500 us)\n",
         tiny.hop_us * tiny.n_stages);
  return 0;
}
