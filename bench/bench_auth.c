/* bench/bench_auth.c: what the cluster key costs. (1) throughput of exo_auth_mac (keyed
 * BLAKE2b-256, HELLO) and exo_auth_link_tag (XChaCha20-Poly1305, frames) at 4 KiB to
 * 4 MiB; (2) actor-to-actor round trips between two nodes over tcp on loopback, unkeyed
 * vs keyed, at 64 B, 64 KiB and 1 MiB payloads (median of ITERS). Not a test; results
 * and command in docs/SECURITY.md.
 * Usage: bench_auth [iters] */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/auth.h"
#include "runtime/node.h"

#define MSG_PING (EXO_MSG_APP_BASE + 2)

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

static void bench_mac(void)
{
  uint8_t key[EXO_AUTH_KEY_BYTES] = {7};
  struct exo_auth *a;
  if (exo_auth_from_bytes(key, &a) < 0)
    return;
  size_t sizes[] = {4096, 65536, 1u << 20, 4u << 20};
  uint8_t *buf = malloc(4u << 20), mac[EXO_AUTH_MAC_BYTES];
  memset(buf, 0x5a, 4u << 20);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    struct exo_auth_part p = {buf, sizes[i]};
    size_t reps = (64u << 20) / sizes[i];
    uint64_t best = UINT64_MAX;
    for (int r = 0; r < 3; r++) {
      uint64_t t0 = now_ns();
      for (size_t k = 0; k < reps; k++)
        exo_auth_mac(a, EXO_AUTH_DOMAIN_TEST, &p, 1, mac);
      uint64_t t = now_ns() - t0;
      best = t < best ? t : best;
    }
    uint8_t lk[EXO_AUTH_LINK_KEY_BYTES] = {9}, tag[EXO_AUTH_LINK_TAG_BYTES];
    uint64_t lbest = UINT64_MAX;
    for (int r = 0; r < 3; r++) {
      uint64_t t0 = now_ns();
      for (size_t k = 0; k < reps; k++)
        exo_auth_link_tag(lk, k + 1, buf, sizes[i], tag);
      uint64_t t = now_ns() - t0;
      lbest = t < lbest ? t : lbest;
    }
    printf("%8zu B: blake2b mac %8.2f us (%.2f GB/s), link tag %8.2f us (%.2f GB/s)\n",
           sizes[i], best / 1e3 / reps, (double)sizes[i] * reps / best, lbest / 1e3 / reps,
           (double)sizes[i] * reps / lbest);
  }
  free(buf);
  exo_auth_free(a);
}

/* echo actor on node 2 sends every ping back; the main thread times round trips */
static atomic_int got;

static int echo_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  void *buf = exo_msg_alloc(msg->env.payload_len);
  if (!buf)
    return -ENOMEM;
  memcpy(buf, msg->payload, msg->env.payload_len);
  struct exo_envelope env = {.type = MSG_PING,
                             .dst = {msg->env.src.node, exo_actor_id("sink")}};
  return exo_actor_send_buf(self, &env, &buf, msg->env.payload_len);
}

static int sink_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  (void)state;
  (void)msg;
  atomic_fetch_add(&got, 1);
  return 0;
}

static const struct exo_actor_kind echo_kind = {.name = "echo", .message = echo_message};
static const struct exo_actor_kind sink_kind = {.name = "sink", .message = sink_message};

static int rtt(const char *key, size_t len, int iters, double *median_us)
{
  char a1[64], a2[64], err[256];
  int port = 20000 + (int)(now_ns() % 30000);
  snprintf(a1, sizeof a1, "tcp://127.0.0.1:%d", port);
  snprintf(a2, sizeof a2, "tcp://127.0.0.1:%d", port + 1);
  struct exo_node_opts o1 = {.node_id = 1, .listen = a1, .loops = 1, .key_path = key};
  struct exo_node_opts o2 = {.node_id = 2, .listen = a2, .loops = 1, .key_path = key};
  struct exo_node *n1 = NULL, *n2 = NULL;
  int rc = -1;
  uint64_t *t = calloc((size_t)iters, sizeof *t);
  void *payload = calloc(1, len);
  if (!t || !payload || exo_node_new_opts(&o1, &n1, err, sizeof err) < 0 ||
      exo_node_new_opts(&o2, &n2, err, sizeof err) < 0 ||
      exo_node_spawn(n1, "sink", &sink_kind, 0, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_spawn(n2, "echo", &echo_kind, 0, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_start(n1, err, sizeof err) < 0 || exo_node_start(n2, err, sizeof err) < 0 ||
      exo_node_add_peer(n1, a2) < 0) {
    fprintf(stderr, "bench_auth: %s\n", err);
    goto out;
  }
  for (int i = 0; i < 5000 && !(exo_node_has_peer(n1, 2) && exo_node_has_peer(n2, 1)); i++)
    usleep(1000);
  struct exo_addr echo;
  exo_addr_parse("2/echo", 1, &echo);
  for (int i = -10; i < iters; i++) { /* 10 warm-up round trips */
    int before = atomic_load(&got);
    uint64_t t0 = now_ns();
    if (exo_node_send(n1, echo, MSG_PING, payload, len) < 0)
      goto out;
    while (atomic_load(&got) == before)
      ;
    if (i >= 0)
      t[i] = now_ns() - t0;
  }
  qsort(t, (size_t)iters, sizeof *t, cmp_u64);
  *median_us = t[iters / 2] / 1e3;
  rc = 0;
out:
  exo_node_free(n1);
  exo_node_free(n2);
  free(t);
  free(payload);
  return rc;
}

int main(int argc, char **argv)
{
  int iters = argc > 1 ? atoi(argv[1]) : 200;
  if (iters < 1)
    iters = 1;
  bench_mac();
  char dir[] = "/tmp/exo-bench-auth-XXXXXX", key[64], err[256];
  if (!mkdtemp(dir))
    return 1;
  snprintf(key, sizeof key, "%s/k", dir);
  if (exo_auth_keygen(key, false, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  size_t sizes[] = {64, 65536, 1u << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    double plain = 0, keyed = 0;
    if (rtt(NULL, sizes[i], iters, &plain) < 0 || rtt(key, sizes[i], iters, &keyed) < 0)
      break;
    printf("rtt tcp %8zu B: unkeyed %8.1f us, keyed %8.1f us (+%.1f us, median of %d)\n",
           sizes[i], plain, keyed, keyed - plain, iters);
  }
  unlink(key);
  rmdir(dir);
  return 0;
}
