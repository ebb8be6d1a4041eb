/* tests/runtime/test_lanes.c: receive lanes (runtime/node.c): a node whose loop 1 hosts an
 * actor drains the transport from loop 1 as well as loop 0. Checks that frames to a loop-1
 * actor and to a loop-0 actor each arrive exactly once and in send order, always handled on
 * their own actor's loop; that loop 0 keeps handling frames while the loop-1 actor is busy
 * (heartbeats never wait behind compute); and that link windows still drop duplicates and
 * replays of frames addressed to a loop-1 actor. Suite concurrency (also under TSan). */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>

#include "runtime/link.h"
#include "runtime/loop.h"
#include "runtime/node.h"
#include "tests/runtime/node_test_util.h"
#include "tests/test.h"

#define MSG_SEQ (EXO_MSG_APP_BASE + 1)   /* payload: u32 counter, in send order */
#define MSG_BLOCK (EXO_MSG_APP_BASE + 2) /* the loop-1 actor sleeps BLOCK_MS: a long step */
#define N_FRAMES 300
#define BLOCK_MS 400

struct sink {
  struct exo_node *node;
  uint32_t loop;
  atomic_int got, disorder, wrong_loop;
  atomic_uint_fast64_t last_ns; /* when the last MSG_SEQ was handled */
  uint32_t next;                /* (its loop) the counter expected next */
};

static struct sink sinks[2]; /* [0]: "ctl" on loop 0, [1]: "work" on loop 1 */

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int sink_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  struct sink *s = &sinks[exo_actor_addr(self).actor == exo_actor_id("work")];
  if (!exo_loop_is_current(exo_node_loop(s->node, s->loop)))
    atomic_fetch_add(&s->wrong_loop, 1);
  if (msg->env.type == MSG_BLOCK) {
    usleep(BLOCK_MS * 1000);
    return 0;
  }
  if (msg->env.type != MSG_SEQ || msg->env.payload_len != 4)
    return 0;
  uint32_t v;
  memcpy(&v, msg->payload, 4);
  if (v != s->next)
    atomic_fetch_add(&s->disorder, 1);
  s->next = v + 1;
  atomic_store(&s->last_ns, now_ns());
  atomic_fetch_add(&s->got, 1);
  return 0;
}

static const struct exo_actor_kind sink_kind = {.name = "sink", .message = sink_message};


static int make_node(uint32_t id, uint32_t loops, char *addr, size_t addrlen,
                     struct exo_node **out)
{
  char err[256];
  snprintf(addr, addrlen, "ipc:///tmp/exo-test-lanes-%d-%u.ipc", (int)getpid(), id);
  unlink(addr + 6);
  struct exo_node_opts o = {.node_id = id, .listen = addr, .loops = loops,
                            .supervision = {.intensity = 0, .period_ms = 1000}};
  int rc = exo_node_new_opts(&o, out, err, sizeof err);
  if (rc < 0)
    fprintf(stderr, "node %u: %s\n", id, err);
  return rc;
}

/* Node 2 with "ctl" on loop 0 and "work" on loop 1, started. */
static struct exo_node *receiver(char *addr, size_t addrlen)
{
  struct exo_node *b = NULL;
  char err[256];
  if (make_node(2, 2, addr, addrlen, &b) < 0)
    return NULL;
  memset(sinks, 0, sizeof sinks);
  sinks[0] = (struct sink){.node = b, .loop = 0};
  sinks[1] = (struct sink){.node = b, .loop = 1};
  if (exo_node_spawn(b, "ctl", &sink_kind, 0, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_spawn(b, "work", &sink_kind, 1, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_start(b, err, sizeof err) < 0) {
    fprintf(stderr, "receiver: %s\n", err);
    exo_node_free(b);
    return NULL;
  }
  return b;
}

static void test_order_and_busy_compute_loop(void)
{
  char addr_a[128], addr_b[128], err[256];
  struct exo_node *b = receiver(addr_b, sizeof addr_b), *a = NULL;
  CHECK(b != NULL);
  CHECK_INT_EQ(make_node(1, 1, addr_a, sizeof addr_a, &a), 0);
  if (!a || !b)
    goto out;
  CHECK_INT_EQ(exo_node_add_peer(a, addr_b), 0);
  CHECK_INT_EQ(exo_node_start(a, err, sizeof err), 0);
  for (int i = 0; i < 5000 && !(exo_node_has_peer(a, 2) && exo_node_has_peer(b, 1)); i++)
    usleep(1000);
  CHECK(exo_node_has_peer(a, 2) && exo_node_has_peer(b, 1));
  struct exo_addr ctl = {2, exo_actor_id("ctl")}, work = {2, exo_actor_id("work")};
  /* interleaved, in bursts: both loops drain; each actor must see its own order */
  for (uint32_t i = 0; i < N_FRAMES; i++) {
    CHECK_INT_EQ(exo_node_send(a, work, MSG_SEQ, &i, 4), 0);
    CHECK_INT_EQ(exo_node_send(a, ctl, MSG_SEQ, &i, 4), 0);
    if (i % 50 == 49)
      usleep(2000); /* stays under the flood budget and the mailbox */
  }
  CHECK(wait_int(&sinks[0].got, N_FRAMES, 10000));
  CHECK(wait_int(&sinks[1].got, N_FRAMES, 10000));
  CHECK_INT_EQ(atomic_load(&sinks[0].disorder), 0);
  CHECK_INT_EQ(atomic_load(&sinks[1].disorder), 0);
  /* loop 1 drained some itself: it queued them to its own mailbox without an eventfd
   * write (nothing else here runs on loop 1 to do that; loop 0's hand-offs use the fd) */
  uint64_t local = 0;
  (void)exo_loop_wakeups(exo_node_loop(b, 1), &local);
  CHECK(local > 0);
  /* loop 1 busy for BLOCK_MS: frames to loop 0 are still handled meanwhile */
  CHECK_INT_EQ(exo_node_send(a, work, MSG_BLOCK, NULL, 0), 0);
  usleep(50 * 1000);
  uint64_t t0 = now_ns();
  uint32_t v = N_FRAMES;
  CHECK_INT_EQ(exo_node_send(a, ctl, MSG_SEQ, &v, 4), 0);
  CHECK_INT_EQ(exo_node_send(a, work, MSG_SEQ, &v, 4), 0);
  CHECK(wait_int(&sinks[0].got, N_FRAMES + 1, 5000));
  uint64_t ctl_ms = (atomic_load(&sinks[0].last_ns) - t0) / 1000000u;
  CHECK(ctl_ms < BLOCK_MS / 2); /* not behind the blocked loop 1 */
  CHECK(wait_int(&sinks[1].got, N_FRAMES + 1, 5000));
  CHECK_INT_EQ(atomic_load(&sinks[1].disorder), 0);
  CHECK_INT_EQ(atomic_load(&sinks[0].wrong_loop), 0);
  CHECK_INT_EQ(atomic_load(&sinks[1].wrong_loop), 0);
  struct exo_node_stats st;
  exo_node_stats(b, &st);
  CHECK_INT_EQ(st.frames_replayed, 0);
  CHECK_INT_EQ(st.frames_malformed, 0);
  CHECK_INT_EQ(st.mailbox_full + st.frames_throttled, 0);
out:
  exo_node_free(a);
  exo_node_free(b);
  unlink(addr_a + 6);
  unlink(addr_b + 6);
}


static void test_replays_to_compute_loop_dropped(void)
{
  char addr[128];
  struct exo_node *b = receiver(addr, sizeof addr);
  CHECK(b != NULL);
  if (!b)
    return;
  int raw = nn_socket(AF_SP, NN_PUSH);
  CHECK(raw >= 0 && nn_connect(raw, addr) >= 0);
  int tmo = 2000;
  nn_setsockopt(raw, NN_SOL_SOCKET, NN_SNDTIMEO, &tmo, sizeof tmo);
  uint8_t pl[9 + 64], f[256];
  int n = snprintf((char *)pl + 9, 64, "ipc:///tmp/exo-test-lanes-nobody-%d.ipc", (int)getpid());
  pl[0] = 0;
  for (int i = 0; i < 8; i++)
    pl[1 + i] = (uint8_t)((uint64_t)0x77 >> (8 * i));
  struct exo_envelope hello = {.type = EXO_MSG_HELLO, .src = {7, 0}};
  size_t len = raw_frame(f, sizeof f, &hello, pl, 9 + (size_t)n, 0);
  CHECK(nn_send(raw, f, len, 0) == (int)len);
  /* seqs 1..6 with 3 sent twice and 1 three times: 6 delivered in this order, 3 dropped */
  const uint64_t order[] = {1, 2, 3, 3, 4, 1, 5, 1, 6};
  struct exo_envelope env = {.type = MSG_SEQ, .src = {7, 1}, .dst = {2, exo_actor_id("work")}};
  uint32_t counter = 0;
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    bool fresh = i == 0 || order[i] > order[i - 1];
    uint32_t v = fresh ? counter++ : 999; /* a replay must never be delivered */
    len = raw_frame(f, sizeof f, &env, &v, 4, order[i]);
    CHECK(nn_send(raw, f, len, 0) == (int)len);
  }
  CHECK(wait_int(&sinks[1].got, 6, 5000));
  usleep(50 * 1000); /* anything extra would show up by now */
  struct exo_node_stats st;
  exo_node_stats(b, &st);
  CHECK_INT_EQ(atomic_load(&sinks[1].got), 6);
  CHECK_INT_EQ(atomic_load(&sinks[1].disorder), 0);
  CHECK_INT_EQ(atomic_load(&sinks[1].wrong_loop), 0);
  CHECK_INT_EQ(st.frames_replayed, 3);
  nn_close(raw);
  exo_node_free(b);
  unlink(addr + 6);
}

int main(void)
{
  EXO_RUN(test_order_and_busy_compute_loop);
  EXO_RUN(test_replays_to_compute_loop_dropped);
  return exo_test_result();
}
