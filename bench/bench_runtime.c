/* bench/bench_runtime.c: what the runtime costs on top of raw nanomsg. For inproc, ipc and
 * tcp at 64 B and 8 KiB payloads, in one run: round-trip time actor-to-actor (two nodes,
 * one loop each) vs two threads doing blocking nn_send/nn_recv on PUSH/PULL pairs, and
 * throughput with a window of WINDOW requests in flight; plus the local fast path (two
 * actors on two loops of one node: wfcqueue + eventfd) vs raw nanomsg inproc.
 * Method (the machine is shared and noisy): both setups stay up side by side and run in
 * alternating short blocks (raw, ours, ours, raw, ...), so drift hits both alike; each
 * block gives a median; we report the median of block medians and, for the ratio, the
 * median of the per-pair ratios with their interquartile range as the spread.
 * Not a test. Usage: bench_runtime [blocks [rtt_per_block [msgs_per_tput_block]]] */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/tcp.h>

#include "runtime/log.h"
#include "runtime/node.h"

#define MSG_START (EXO_MSG_APP_BASE + 1)
#define MSG_PING (EXO_MSG_APP_BASE + 2)
#define WINDOW 8

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double median_ns_us(uint64_t *ns, int n)
{
  qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
  return (double)ns[n / 2] / 1000.0;
}

static int cmp_dbl(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* q-quantile of v[0..n) (sorts v). */
static double quantile(double *v, int n, double q)
{
  qsort(v, (size_t)n, sizeof *v, cmp_dbl);
  return v[(int)(q * (n - 1) + 0.5)];
}

/* ---- shared bench state: one case at a time ---- */
static struct {
  int iters, total; /* per block: rtt iterations; messages for the window run */
  int blocks;
  size_t size;
  bool window;
  uint64_t *ns;
  uint64_t t_start, t_end;
  sem_t done;
  char payload[8192];
} B;

/* ---- ours ---- */
struct ping_state {
  int sent, recvd;
  uint64_t t0;
  struct exo_addr peer;
};

static int ping_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct ping_state *s = state;
  if (msg->env.type == MSG_START) {
    memcpy(&s->peer, msg->payload, sizeof s->peer);
    s->sent = s->recvd = 0;
    B.t_start = s->t0 = now_ns();
    int first = B.window ? WINDOW : 1;
    for (int i = 0; i < first; i++, s->sent++) {
      int rc = exo_actor_send(self, s->peer, MSG_PING, B.payload, B.size);
      if (rc < 0)
        return rc;
    }
    return 0;
  }
  uint64_t t = now_ns();
  if (!B.window) {
    B.ns[s->recvd] = t - s->t0;
    s->t0 = t;
  }
  s->recvd++;
  int goal = B.window ? B.total : B.iters;
  if (s->recvd == goal) {
    B.t_end = t;
    sem_post(&B.done);
    return 0;
  }
  if (s->sent < goal) {
    s->sent++;
    return exo_actor_send(self, s->peer, MSG_PING, B.payload, B.size);
  }
  return 0;
}

static int pong_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  return exo_actor_send(self, msg->env.src, MSG_PING, msg->payload, msg->env.payload_len);
}

static const struct exo_actor_kind ping_kind = {
    .name = "ping", .state_size = sizeof(struct ping_state), .message = ping_message};
static const struct exo_actor_kind pong_kind = {.name = "pong", .message = pong_message};

static int random_port(void)
{
  return 20000 + (int)((unsigned)rand() % 40000u);
}

static void make_addr(const char *tr, int tag, char *out, size_t n)
{
  if (strcmp(tr, "tcp") == 0)
    snprintf(out, n, "tcp://127.0.0.1:%d", random_port());
  else if (strcmp(tr, "ipc") == 0)
    snprintf(out, n, "ipc:///tmp/exo-bench-%d-%d.ipc", (int)getpid(), tag);
  else
    snprintf(out, n, "inproc://exo-bench-%d", tag);
}

static struct exo_node *node_listen(uint32_t id, const char *tr, int tag, char *addr, size_t n)
{
  char err[256];
  for (int attempt = 0; attempt < 20; attempt++) {
    make_addr(tr, tag + attempt * 100, addr, n);
    struct exo_node_opts o = {.node_id = id, .listen = tr ? addr : NULL, .loops = 1,
                              .supervision = {.intensity = 0, .period_ms = 1000}};
    struct exo_node *node;
    int rc = exo_node_new_opts(&o, &node, err, sizeof err);
    if (rc == 0)
      return node;
    if (rc != -EADDRINUSE) {
      fprintf(stderr, "node: %s\n", err);
      exit(1);
    }
  }
  exit(1);
}


/* One block of ours: ping runs it and posts B.done. Returns the block median RTT (us) or
 * the throughput (msgs/s). */
static double ours_block(struct exo_node *start_node, struct exo_addr ping, struct exo_addr pong,
                         bool window)
{
  B.window = window;
  exo_node_send(start_node, ping, MSG_START, &pong, sizeof pong);
  sem_wait(&B.done);
  if (window)
    return (double)B.total / ((double)(B.t_end - B.t_start) / 1e9);
  return median_ns_us(B.ns, B.iters);
}

struct ours_setup {
  struct exo_node *n1, *n2;
  struct exo_actor *ping, *pong;
  char a1[128], a2[128];
  const char *tr;
};

/* tr NULL: one node, two loops (local path). */
static void ours_open(struct ours_setup *o, const char *tr)
{
  char err[256];
  o->tr = tr;
  o->n2 = NULL;
  if (!tr) {
    struct exo_node_opts opt = {.node_id = 1, .loops = 2,
                                .supervision = {.intensity = 0, .period_ms = 1000}};
    exo_node_new_opts(&opt, &o->n1, err, sizeof err);
    exo_node_spawn(o->n1, "ping", &ping_kind, 0, NULL, &o->ping, err, sizeof err);
    exo_node_spawn(o->n1, "pong", &pong_kind, 1, NULL, &o->pong, err, sizeof err);
    exo_node_start(o->n1, err, sizeof err);
    return;
  }
  o->n1 = node_listen(1, tr, 1, o->a1, sizeof o->a1);
  o->n2 = node_listen(2, tr, 2, o->a2, sizeof o->a2);
  exo_node_spawn(o->n1, "ping", &ping_kind, 0, NULL, &o->ping, err, sizeof err);
  exo_node_spawn(o->n2, "pong", &pong_kind, 0, NULL, &o->pong, err, sizeof err);
  exo_node_add_peer(o->n1, o->a2);
  exo_node_start(o->n1, err, sizeof err);
  exo_node_start(o->n2, err, sizeof err);
  while (!exo_node_has_peer(o->n1, 2) || !exo_node_has_peer(o->n2, 1))
    usleep(1000);
}

static void ours_close(struct ours_setup *o)
{
  struct exo_node_stats st;
  exo_node_stats(o->n1, &st);
  if (st.send_failed || st.handler_failures)
    fprintf(stderr, "warning: %llu send failures\n", (unsigned long long)st.send_failed);
  exo_node_free(o->n1);
  exo_node_free(o->n2);
  if (o->tr && strcmp(o->tr, "ipc") == 0) {
    unlink(o->a1 + 6);
    unlink(o->a2 + 6);
  }
}

/* ---- raw nanomsg: a persistent echo thread + blocking main thread ---- */
struct raw_setup {
  int pull1, push1, pull2, push2;
  char a1[128], a2[128];
  const char *tr;
  pthread_t echo;
};

static void *raw_echo_thread(void *arg)
{
  struct raw_setup *r = arg;
  char buf[8192];
  for (;;) {
    int n = nn_recv(r->pull2, buf, sizeof buf, 0);
    if (n <= 0) /* an empty message ends it */
      break;
    if (nn_send(r->push2, buf, (size_t)n, 0) < 0)
      break;
  }
  return NULL;
}

static int raw_bind(int s, const char *tr, int tag, char *addr, size_t n)
{
  for (int attempt = 0; attempt < 20; attempt++) {
    make_addr(tr, 50 + tag + attempt * 100, addr, n);
    if (nn_bind(s, addr) >= 0)
      return 0;
  }
  return -1;
}

static void raw_open(struct raw_setup *r, const char *tr)
{
  r->tr = tr;
  r->pull1 = nn_socket(AF_SP, NN_PULL);
  r->push1 = nn_socket(AF_SP, NN_PUSH);
  r->pull2 = nn_socket(AF_SP, NN_PULL);
  r->push2 = nn_socket(AF_SP, NN_PUSH);
  int nodelay = 1; /* as the runtime's sockets */
  nn_setsockopt(r->push1, NN_TCP, NN_TCP_NODELAY, &nodelay, sizeof nodelay);
  nn_setsockopt(r->push2, NN_TCP, NN_TCP_NODELAY, &nodelay, sizeof nodelay);
  if (raw_bind(r->pull1, tr, 1, r->a1, sizeof r->a1) < 0 ||
      raw_bind(r->pull2, tr, 2, r->a2, sizeof r->a2) < 0)
    exit(1);
  nn_connect(r->push1, r->a2);
  nn_connect(r->push2, r->a1);
  pthread_create(&r->echo, NULL, raw_echo_thread, r);
}

static double raw_block(struct raw_setup *r, bool window)
{
  char buf[8192];
  if (!window) {
    uint64_t t0 = now_ns();
    for (int i = 0; i < B.iters; i++) {
      nn_send(r->push1, B.payload, B.size, 0);
      nn_recv(r->pull1, buf, sizeof buf, 0);
      uint64_t t = now_ns();
      B.ns[i] = t - t0;
      t0 = t;
    }
    return median_ns_us(B.ns, B.iters);
  }
  uint64_t t0 = now_ns();
  int sent = 0;
  for (; sent < WINDOW; sent++)
    nn_send(r->push1, B.payload, B.size, 0);
  for (int got = 0; got < B.total; got++) {
    nn_recv(r->pull1, buf, sizeof buf, 0);
    if (sent < B.total) {
      nn_send(r->push1, B.payload, B.size, 0);
      sent++;
    }
  }
  return (double)B.total / ((double)(now_ns() - t0) / 1e9);
}

static void raw_close(struct raw_setup *r)
{
  nn_send(r->push1, "", 0, 0);
  pthread_join(r->echo, NULL);
  nn_close(r->pull1);
  nn_close(r->push1);
  nn_close(r->pull2);
  nn_close(r->push2);
  if (strcmp(r->tr, "ipc") == 0) {
    unlink(r->a1 + 6);
    unlink(r->a2 + 6);
  }
}

/* One row: raw over raw_tr vs ours over ours_tr (NULL: local path), alternating blocks. */
static void row(const char *label, const char *raw_tr, const char *ours_tr)
{
  struct raw_setup r;
  struct ours_setup o;
  raw_open(&r, raw_tr);
  ours_open(&o, ours_tr);
  struct exo_addr ping = exo_actor_addr(o.ping), pong = exo_actor_addr(o.pong);
  int nb = B.blocks;
  double *rm = calloc((size_t)nb, sizeof *rm), *om = calloc((size_t)nb, sizeof *om);
  double *ratio = calloc((size_t)nb, sizeof *ratio), *rt = calloc((size_t)nb, sizeof *rt);
  double *ot = calloc((size_t)nb, sizeof *ot), *tratio = calloc((size_t)nb, sizeof *tratio);
  (void)raw_block(&r, false); /* warm both: connections, caches, allocator */
  (void)ours_block(o.n1, ping, pong, false);
  for (int b = 0; b < nb; b++) {
    if (b % 2 == 0) {
      rm[b] = raw_block(&r, false);
      om[b] = ours_block(o.n1, ping, pong, false);
    } else {
      om[b] = ours_block(o.n1, ping, pong, false);
      rm[b] = raw_block(&r, false);
    }
    ratio[b] = om[b] / rm[b];
  }
  for (int b = 0; b < nb; b++) {
    if (b % 2 == 0) {
      rt[b] = raw_block(&r, true);
      ot[b] = ours_block(o.n1, ping, pong, true);
    } else {
      ot[b] = ours_block(o.n1, ping, pong, true);
      rt[b] = raw_block(&r, true);
    }
    tratio[b] = ot[b] / rt[b];
  }
  ours_close(&o);
  raw_close(&r);
  double r_med = quantile(rm, nb, 0.5), o_med = quantile(om, nb, 0.5);
  double q1 = quantile(ratio, nb, 0.25), q2 = quantile(ratio, nb, 0.5),
         q3 = quantile(ratio, nb, 0.75);
  double rt_med = quantile(rt, nb, 0.5), ot_med = quantile(ot, nb, 0.5);
  double t1 = quantile(tratio, nb, 0.25), t2 = quantile(tratio, nb, 0.5),
         t3 = quantile(tratio, nb, 0.75);
  printf("%-8s %6zu | %8.1f %8.1f  %5.2f [%4.2f-%4.2f] | %8.0f %8.0f  %5.2f [%4.2f-%4.2f]\n",
         label, B.size, r_med, o_med, q2, q1, q3, rt_med, ot_med, t2, t1, t3);
  fflush(stdout);
  free(rm);
  free(om);
  free(ratio);
  free(rt);
  free(ot);
  free(tratio);
}

int main(int argc, char **argv)
{
  B.blocks = argc > 1 ? atoi(argv[1]) : 20;
  B.iters = argc > 2 ? atoi(argv[2]) : 200;
  B.total = argc > 3 ? atoi(argv[3]) : 2000;
  if (B.blocks < 4 || B.iters < 20 || B.total < 100) {
    fprintf(stderr, "usage: bench_runtime [blocks>=4 [rtt_per_block>=20 "
                    "[msgs_per_tput_block>=100]]]\n");
    return 2;
  }
  srand((unsigned)getpid() ^ (unsigned)time(NULL));
  exo_log_set_level(EXO_LOG_ERROR); /* no "unauthenticated" line per node */
  const char *only = getenv("BENCH_ONLY"); /* e.g. "tcp" or "local": profile one path */
  B.ns = calloc((size_t)B.iters, sizeof *B.ns);
  sem_init(&B.done, 0, 0);
  memset(B.payload, 0x5a, sizeof B.payload);
  printf("%d alternating block pairs; RTT: %d round trips per block (us, median of block "
         "medians);\nthroughput: %d msgs per block, window %d (msgs/s, median of blocks); "
         "ratio = ours/raw,\nmedian of per-pair ratios [interquartile range]\n",
         B.blocks, B.iters, B.total, WINDOW);
  printf("%-8s %6s | %8s %8s  %-17s | %8s %8s  %s\n", "path", "bytes", "raw RTT", "ours RTT",
         "ratio [IQR]", "raw tput", "our tput", "ratio [IQR]");
  const char *trs[] = {"inproc", "ipc", "tcp"};
  const size_t sizes[] = {64, 8192};
  for (int t = 0; t < 3; t++)
    for (int s = 0; s < 2; s++) {
      B.size = sizes[s];
      if (!only || !strcmp(only, trs[t]))
        row(trs[t], trs[t], trs[t]);
    }
  printf("local fast path (one node, two loops: wfcqueue + eventfd) vs raw nanomsg inproc\n");
  for (int s = 0; s < 2; s++) {
    B.size = sizes[s];
    if (!only || !strcmp(only, "local"))
      row("local", "inproc", NULL);
  }
  sem_destroy(&B.done);
  free(B.ns);
  return 0;
}
