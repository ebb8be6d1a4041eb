/* bench/bench_cluster.c: pipelined decode across real node processes on loopback, side by
 * side in one run: a TinyLlama-1.1B-shaped model (random f32 weights, the file
 * bench_tensor writes) decoded on 1 node and on 3 nodes, the orchestration overhead per
 * hop (step time minus compute, over the hops of a step) next to raw nanomsg tcp one-way
 * time for the same 8 KiB payload (half a blocking ping-pong round trip), and the per-step
 * overhead on tiny-llama, where orchestration dominates. Rounds alternate the configurations
 * and the raw measurement (every cluster stays up), so each ratio pairs figures taken under
 * the same background load; medians of the per-round ratios. A benchmark, not a test. */
#include <errno.h>
#include <limits.h>
#include <nanomsg/nn.h>
#include <nanomsg/pair.h>
#include <pthread.h>
#include <stdbool.h>
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

/* Median one-way time (half the round trip) of size-byte messages, in us; with gap_ms,
 * both sides sit idle that long before each timed round trip, as a pipeline stage waits
 * for the others' compute (idle vCPUs halt and cores clock down, and waking costs more). */
static double raw_tcp_one_way_us(size_t size, int n, int gap_ms)
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
    if (gap_ms && i >= 20)
      nanosleep(&(struct timespec){gap_ms / 1000, (long)(gap_ms % 1000) * 1000000}, NULL);
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

/* ---- generations through K local node processes -------------------------------- */

struct run {
  double step_us, compute_us, hop_us, in_us; /* medians over decode steps (after the first 2) */
  int n_stages;
  size_t n_ids;
};

/* A cluster kept running for every round, so rounds compare configurations under the
 * same background load instead of one configuration early and another late. */
struct bench_cluster {
  struct exo_local_cluster *c;
  struct exo_client *cl;
  uint32_t n1;
};

static int bc_start(struct bench_cluster *b, const char *exe, const char *model, int k,
                    uint32_t first_id, const char *ranges, int loop0, char *err, size_t errlen)
{
  /* A node copies a misaligned model into huge pages at load (tensor/model.c): the four
   * clusters' ~9 GB of fresh memory took over 30 s to fault in on this guest's 2 vCPUs. */
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = k, .first_id = first_id,
                                     .model = model, .ranges = ranges, .shard_on_loop0 = loop0,
                                     .origin_options = "map_wait_ms: 180000"};
  memset(b, 0, sizeof *b);
  int rc = exo_local_cluster_start(&o, &b->c, err, errlen);
  if (!rc)
    rc = exo_client_new(NULL, &b->cl, err, errlen);
  for (double t0 = exo_bench_now(); !rc;) {
    if (exo_client_connect(b->cl, exo_local_cluster_addr(b->c, 0), 100, &b->n1, err, errlen) == 0)
      break;
    if ((rc = exo_local_cluster_check(b->c, err, errlen)) || exo_bench_now() - t0 > 30)
      rc = rc ? rc : -ETIMEDOUT;
  }
  return rc;
}

static void bc_free(struct bench_cluster *b)
{
  exo_client_free(b->cl);
  exo_local_cluster_free(b->c);
}

/* One generation of `steps` tokens; per-step medians after 2 warm-up steps. */
static int bc_generate(struct bench_cluster *b, uint32_t steps, struct run *out, char *err,
                       size_t errlen)
{
  int32_t prompt[8] = {1, 45, 49, 31, 26, 93, 292, 72}; /* inside every vocabulary here */
  struct exo_req_submit req = {.max_tokens = steps, .flags = EXO_REQ_F_STATS, .prompt = prompt,
                               .n_prompt = 8};
  exo_sample_params_default(&req.sp);
  struct exo_client_result res = {0};
  int rc = exo_client_generate(b->cl, b->n1, &req, NULL, NULL, 3600000, &res, err, errlen);
  if (!rc && res.n_ids < 4) {
    snprintf(err, errlen, "%zu tokens of %u", res.n_ids, steps);
    rc = -EIO;
  }
  if (!rc) {
    size_t n = res.n_ids - 2;
    double *st = calloc(n, sizeof *st), *cp = calloc(n, sizeof *cp), *hp = calloc(n, sizeof *hp),
           *in = calloc(n, sizeof *in);
    for (size_t i = 0; st && cp && hp && in && i < n; i++) {
      const struct exo_req_event *e = &res.events[i + 2];
      double compute = 0, transfer = 0;
      for (uint32_t j = 0; j < e->n_stages; j++) {
        compute += e->stages[j].compute_ns / 1e3;
        transfer += e->stages[j].transfer_in_ns / 1e3;
      }
      st[i] = e->step_ns / 1e3;
      cp[i] = compute;
      /* hops of a decode step: one into each stage (the first's is the last's TOKEN) */
      hp[i] = (st[i] - compute) / (e->n_stages ? e->n_stages : 1);
      in[i] = transfer / (e->n_stages ? e->n_stages : 1);
    }
    out->n_stages = (int)res.events[2].n_stages;
    out->step_us = exo_bench_median(st, n);
    out->compute_us = exo_bench_median(cp, n);
    out->hop_us = exo_bench_median(hp, n);
    out->in_us = exo_bench_median(in, n);
    out->n_ids = res.n_ids;
    free(st);
    free(cp);
    free(hp);
    free(in);
  }
  exo_client_result_fini(&res);
  return rc;
}

static void print_spread(const char *what, double *v, size_t n, const char *unit,
                         const char *goal)
{
  double lo = v[0], hi = v[0];
  for (size_t i = 1; i < n; i++) {
    lo = v[i] < lo ? v[i] : lo;
    hi = v[i] > hi ? v[i] : hi;
  }
  double med = exo_bench_median(v, n);
  printf("  %-52s %9.3f%s (rounds %.3f..%.3f)%s\n", what, med, unit, lo, hi, goal);
}

int main(int argc, char **argv)
{
  const char *dir = EXO_BENCH_TINYLLAMA_DIR;
  int steps = 10, rounds = 5, tiny_steps = 60;
  bool tiny_only = false; /* --tiny-only: the tiny-llama clusters and hot raw, for quick A/Bs */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tiny-only"))
      tiny_only = true;
    else
      steps = 0;
  }
  if (steps < 4 || steps > 1000 || rounds < 1 || rounds > 100) {
    fprintf(stderr, "usage: bench_cluster [--dir DIR] [--steps 4..1000] [--rounds 1..100] [--tiny-only]\n"
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
  enum { ONE, THREE, TINY, TINY0, N_CFG };
  static const char *const names[N_CFG] = {"1 node (1 stage)", "3 nodes (3 stages)",
                                           "tiny-llama, 3 nodes", "  same, shard on loop 0"};
  struct bench_cluster bc[N_CFG];
  memset(bc, 0, sizeof bc);
  if ((!tiny_only && bc_start(&bc[ONE], exe, dir, 1, 1, "1=0:22", 0, err, sizeof err)) ||
      (!tiny_only &&
       bc_start(&bc[THREE], exe, dir, 3, 11, "11=0:8,12=8:15,13=15:22", 0, err, sizeof err)) ||
      bc_start(&bc[TINY], exe, "tests/fixtures/tiny-llama", 3, 21, "21=0:1,22=1:3,23=3:4", 0,
               err, sizeof err) ||
      bc_start(&bc[TINY0], exe, "tests/fixtures/tiny-llama", 3, 31, "31=0:1,32=1:3,33=3:4", 1,
               err, sizeof err)) {
    fprintf(stderr, "cluster: %s\n", err);
    for (int i = 0; i < N_CFG; i++)
      bc_free(&bc[i]);
    return 1;
  }
  printf("TinyLlama-1.1B dims (f32, %s): %d decode steps per generation; tiny-llama: %d;\n"
         "%d rounds, each [raw ping-pong, then one generation per configuration], all "
         "clusters up throughout; figures per round are medians after 2 warm-up steps\n",
         dir, steps, tiny_steps, rounds);
  printf("%-6s %-26s %10s %11s %10s %13s %13s\n", "round", "", "step ms", "compute ms", "tok/s",
         "overhead/hop", "transfer/hop");
  fflush(stdout);
  double *tok_ratio = calloc((size_t)rounds, sizeof(double)),
         *hop_big = calloc((size_t)rounds, sizeof(double)),
         *hop_tiny = calloc((size_t)rounds, sizeof(double)),
         *hop_tiny0 = calloc((size_t)rounds, sizeof(double)),
         *raws = calloc((size_t)rounds, sizeof(double)),
         *raws_gap = calloc((size_t)rounds, sizeof(double)),
         *hop_big_gap = calloc((size_t)rounds, sizeof(double)),
         *tiny_step = calloc((size_t)rounds, sizeof(double));
  int rc = 0;
  for (int r = 0; r < rounds && !rc; r++) {
    raws[r] = raw_tcp_one_way_us(2048 * sizeof(float), 500, 0);
    struct run run[N_CFG];
    memset(run, 0, sizeof run);
    for (int i = tiny_only ? TINY : 0; i < N_CFG && !rc; i++) {
      uint32_t n = (uint32_t)(i == TINY || i == TINY0 ? tiny_steps : steps);
      if ((rc = bc_generate(&bc[i], n, &run[i], err, sizeof err)))
        fprintf(stderr, "%s: %s\n", names[i], err);
      else
        printf("%-6d %-26s %10.3f %11.3f %10.2f %10.1f us %10.1f us\n", r + 1, names[i],
               run[i].step_us / 1e3, run[i].compute_us / 1e3, 1e6 / run[i].step_us,
               run[i].hop_us, run[i].in_us);
    }
    if (rc)
      break;
    if (tiny_only) {
      printf("%-6d raw nanomsg tcp one-way, 8 KiB (half a ping-pong RTT): %.1f us\n", r + 1,
             raws[r]);
      hop_tiny[r] = run[TINY].hop_us / raws[r];
      hop_tiny0[r] = run[TINY0].hop_us / raws[r];
      tiny_step[r] = run[TINY].hop_us * run[TINY].n_stages;
      continue;
    }
    /* the 3-node stages idle about two thirds of a step between their hops */
    int gap_ms = (int)(run[THREE].step_us * 2 / 3 / 1e3);
    raws_gap[r] = raw_tcp_one_way_us(2048 * sizeof(float), 8, gap_ms);
    printf("%-6d raw nanomsg tcp one-way, 8 KiB (half a ping-pong RTT): %.1f us; after %d ms "
           "idle: %.1f us\n", r + 1, raws[r], gap_ms, raws_gap[r]);
    fflush(stdout);
    tok_ratio[r] = run[ONE].step_us / run[THREE].step_us;
    hop_big[r] = run[THREE].hop_us / raws[r];
    hop_big_gap[r] = run[THREE].hop_us / raws_gap[r];
    hop_tiny[r] = run[TINY].hop_us / raws[r];
    hop_tiny0[r] = run[TINY0].hop_us / raws[r];
    tiny_step[r] = run[TINY].hop_us * run[TINY].n_stages;
  }
  if (!rc) {
    printf("medians over %d rounds of per-round figures:\n", rounds);
    print_spread("raw nanomsg tcp one-way, 8 KiB", raws, (size_t)rounds, " us", "");
    if (!tiny_only) {
      print_spread("3-node tok/s / 1-node tok/s", tok_ratio, (size_t)rounds, "",
                   "  goal >= 0.97");
      print_spread("overhead per hop / raw one-way, TinyLlama dims", hop_big, (size_t)rounds,
                   "x", "  goal <= 1.3x");
      print_spread("raw one-way after the stages' idle time", raws_gap, (size_t)rounds, " us",
                   "");
      print_spread("  TinyLlama-dims overhead per hop / that", hop_big_gap, (size_t)rounds, "x",
                   "");
    }
    print_spread("overhead per hop / raw one-way, tiny-llama", hop_tiny, (size_t)rounds, "x",
                 "  goal <= 1.3x");
    print_spread("  same, shard on loop 0", hop_tiny0, (size_t)rounds, "x", "");
    print_spread("tiny-llama per-step overhead, 3 nodes", tiny_step, (size_t)rounds, " us",
                 "  goal < 500 us");
  }

  free(tok_ratio);
  free(hop_big);
  free(hop_tiny);
  free(hop_tiny0);
  free(raws);
  free(raws_gap);
  free(hop_big_gap);
  free(tiny_step);
  for (int i = 0; i < N_CFG; i++)
    bc_free(&bc[i]);
  return rc ? 1 : 0;
}
