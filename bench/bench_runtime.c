/* bench/bench_runtime.c: what the runtime costs on top of raw nanomsg. For inproc, ipc and
 * tcp at 64 B and 8 KiB payloads, in one run: round-trip time actor-to-actor (two nodes,
 * one loop each) vs two threads doing blocking nn_send/nn_recv on PUSH/PULL pairs, and
 * throughput with a window of WINDOW requests in flight; plus the local fast path (two
 * actors on two loops of one node: wfcqueue + eventfd) vs raw nanomsg inproc.
 * Not a test. Usage: bench_runtime [rtt_iters [window_msgs]] */
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

struct result {
  double median_us, p99_us, msgs_per_s;
};

static void summarize(uint64_t *ns, int n, struct result *r)
{
  qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
  r->median_us = (double)ns[n / 2] / 1000.0;
  r->p99_us = (double)ns[(size_t)n * 99 / 100] / 1000.0;
}

/* ---- shared bench state: one case at a time ---- */
static struct {
  int iters, total; /* rtt iterations; messages for the window run */
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

static void run_case(struct exo_node *start_node, struct exo_addr ping, struct exo_addr pong,
                     bool window, struct result *r)
{
  B.window = window;
  exo_node_send(start_node, ping, MSG_START, &pong, sizeof pong);
  sem_wait(&B.done);
  if (window)
    r->msgs_per_s = (double)B.total / ((double)(B.t_end - B.t_start) / 1e9);
  else
    summarize(B.ns, B.iters, r);
}

/* tr NULL: one node, two loops (local path). */
static void ours(const char *tr, struct result *rtt, struct result *tput)
{
  char a1[128], a2[128], err[256];
  struct exo_node *n1, *n2 = NULL;
  struct exo_actor *ping, *pong;
  if (!tr) {
    struct exo_node_opts o = {.node_id = 1, .loops = 2,
                              .supervision = {.intensity = 0, .period_ms = 1000}};
    exo_node_new_opts(&o, &n1, err, sizeof err);
    exo_node_spawn(n1, "ping", &ping_kind, 0, NULL, &ping, err, sizeof err);
    exo_node_spawn(n1, "pong", &pong_kind, 1, NULL, &pong, err, sizeof err);
    exo_node_start(n1, err, sizeof err);
  } else {
    n1 = node_listen(1, tr, 1, a1, sizeof a1);
    n2 = node_listen(2, tr, 2, a2, sizeof a2);
    exo_node_spawn(n1, "ping", &ping_kind, 0, NULL, &ping, err, sizeof err);
    exo_node_spawn(n2, "pong", &pong_kind, 0, NULL, &pong, err, sizeof err);
    exo_node_add_peer(n1, a2);
    exo_node_start(n1, err, sizeof err);
    exo_node_start(n2, err, sizeof err);
    while (!exo_node_has_peer(n1, 2) || !exo_node_has_peer(n2, 1))
      usleep(1000);
  }
  run_case(n1, exo_actor_addr(ping), exo_actor_addr(pong), false, rtt);
  run_case(n1, exo_actor_addr(ping), exo_actor_addr(pong), true, tput);
  struct exo_node_stats st;
  exo_node_stats(n1, &st);
  if (st.send_failed || st.handler_failures)
    fprintf(stderr, "warning: %llu send failures\n", (unsigned long long)st.send_failed);
  exo_node_free(n1);
  exo_node_free(n2);
  if (tr && strcmp(tr, "ipc") == 0) {
    unlink(a1 + 6);
    unlink(a2 + 6);
  }
}

/* ---- raw nanomsg: echo thread + blocking main ---- */
struct raw_echo {
  int pull, push, n;
};

static void *raw_echo_thread(void *arg)
{
  struct raw_echo *e = arg;
  char buf[8192];
  for (int i = 0; i < e->n; i++) {
    int n = nn_recv(e->pull, buf, sizeof buf, 0);
    if (n < 0 || nn_send(e->push, buf, (size_t)n, 0) < 0)
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

static void raw(const char *tr, struct result *rtt, struct result *tput)
{
  char a1[128], a2[128], buf[8192];
  int pull1 = nn_socket(AF_SP, NN_PULL), push1 = nn_socket(AF_SP, NN_PUSH);
  int pull2 = nn_socket(AF_SP, NN_PULL), push2 = nn_socket(AF_SP, NN_PUSH);
  if (raw_bind(pull1, tr, 1, a1, sizeof a1) < 0 || raw_bind(pull2, tr, 2, a2, sizeof a2) < 0)
    exit(1);
  nn_connect(push1, a2);
  nn_connect(push2, a1);
  struct raw_echo e = {pull2, push2, B.iters + B.total};
  pthread_t th;
  pthread_create(&th, NULL, raw_echo_thread, &e);
  uint64_t t0 = now_ns();
  for (int i = 0; i < B.iters; i++) {
    nn_send(push1, B.payload, B.size, 0);
    nn_recv(pull1, buf, sizeof buf, 0);
    uint64_t t = now_ns();
    B.ns[i] = t - t0;
    t0 = t;
  }
  summarize(B.ns, B.iters, rtt);
  t0 = now_ns();
  int sent = 0;
  for (; sent < WINDOW; sent++)
    nn_send(push1, B.payload, B.size, 0);
  for (int got = 0; got < B.total; got++) {
    nn_recv(pull1, buf, sizeof buf, 0);
    if (sent < B.total) {
      nn_send(push1, B.payload, B.size, 0);
      sent++;
    }
  }
  tput->msgs_per_s = (double)B.total / ((double)(now_ns() - t0) / 1e9);
  pthread_join(th, NULL);
  nn_close(pull1);
  nn_close(push1);
  nn_close(pull2);
  nn_close(push2);
  if (strcmp(tr, "ipc") == 0) {
    unlink(a1 + 6);
    unlink(a2 + 6);
  }
}

int main(int argc, char **argv)
{
  B.iters = argc > 1 ? atoi(argv[1]) : 2000;
  B.total = argc > 2 ? atoi(argv[2]) : 20000;
  if (B.iters < 100 || B.total < 100) {
    fprintf(stderr, "usage: bench_runtime [rtt_iters>=100 [window_msgs>=100]]\n");
    return 2;
  }
  srand((unsigned)getpid() ^ (unsigned)time(NULL));
  B.ns = calloc((size_t)B.iters, sizeof *B.ns);
  sem_init(&B.done, 0, 0);
  memset(B.payload, 0x5a, sizeof B.payload);
  printf("round trip (RTT, us; %d iters) and throughput (msgs/s, window %d, %d msgs)\n",
         B.iters, WINDOW, B.total);
  printf("%-8s %6s | %9s %9s %9s %9s %6s | %9s %9s %6s\n", "path", "bytes", "raw med",
         "ours med", "raw p99", "ours p99", "ratio", "raw tput", "ours tput", "ratio");
  const char *trs[] = {"inproc", "ipc", "tcp"};
  const size_t sizes[] = {64, 8192};
  for (int t = 0; t < 3; t++)
    for (int s = 0; s < 2; s++) {
      B.size = sizes[s];
      struct result rr, rt, or_, ot;
      raw(trs[t], &rr, &rt);
      ours(trs[t], &or_, &ot);
      printf("%-8s %6zu | %9.1f %9.1f %9.1f %9.1f %6.2f | %9.0f %9.0f %6.2f\n", trs[t], B.size,
             rr.median_us, or_.median_us, rr.p99_us, or_.p99_us, or_.median_us / rr.median_us,
             rt.msgs_per_s, ot.msgs_per_s, ot.msgs_per_s / rt.msgs_per_s);
      fflush(stdout);
    }
  printf("local fast path (one node, two loops: wfcqueue + eventfd) vs raw nanomsg inproc\n");
  for (int s = 0; s < 2; s++) {
    B.size = sizes[s];
    struct result rr, rt, or_, ot;
    raw("inproc", &rr, &rt);
    ours(NULL, &or_, &ot);
    printf("%-8s %6zu | %9.1f %9.1f %9.1f %9.1f %6.2f | %9.0f %9.0f %6.2f\n", "local", B.size,
           rr.median_us, or_.median_us, rr.p99_us, or_.p99_us, or_.median_us / rr.median_us,
           rt.msgs_per_s, ot.msgs_per_s, ot.msgs_per_s / rt.msgs_per_s);
  }
  sem_destroy(&B.done);
  free(B.ns);
  return 0;
}
