/* tests/runtime/test_actor.c: actors inside one node: ping-pong between two loops (the
 * local wfcqueue path), bounded mailboxes (-ENOBUFS, counted), timers, exo_actor_exit
 * (stop runs once, later messages dropped and counted), addresses and routing errors.
 * Suite concurrency (also runs under TSan). */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "runtime/loop.h"
#include "runtime/node.h"
#include "tests/test.h"

#define MSG_PING (EXO_MSG_APP_BASE + 1)
#define MSG_PONG (EXO_MSG_APP_BASE + 2)
#define ROUNDS 2000

static atomic_int rounds_done;
static atomic_int bad_payloads;

struct ping_state {
  uint32_t n;
};

static int ping_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                     const struct exo_actor_config *opts, char *err, size_t errlen)
{
  (void)state, (void)cfg, (void)opts, (void)err, (void)errlen;
  uint32_t zero = 0;
  return exo_actor_send_to(self, "pong", MSG_PING, &zero, sizeof zero);
}

static int ping_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct ping_state *s = state;
  uint32_t v;
  if (msg->env.type != MSG_PONG || msg->env.payload_len != sizeof v)
    return -EPROTO;
  memcpy(&v, msg->payload, sizeof v);
  if (v != s->n)
    atomic_fetch_add(&bad_payloads, 1);
  s->n++;
  atomic_store(&rounds_done, (int)s->n);
  if (s->n == ROUNDS)
    return 0;
  return exo_actor_send(self, msg->env.src, MSG_PING, &s->n, sizeof s->n);
}

static int pong_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  if (msg->env.type != MSG_PING)
    return -EPROTO;
  return exo_actor_send(self, msg->env.src, MSG_PONG, msg->payload, msg->env.payload_len);
}

static const struct exo_actor_kind ping_kind = {
    .name = "ping", .state_size = sizeof(struct ping_state), .init = ping_init,
    .message = ping_message};
static const struct exo_actor_kind pong_kind = {.name = "pong", .message = pong_message};

static bool wait_for(atomic_int *v, int target, int ms)
{
  for (int i = 0; i < ms && atomic_load(v) < target; i++)
    usleep(1000);
  return atomic_load(v) >= target;
}

static void test_pingpong_two_loops(void)
{
  struct exo_node_opts o = {.node_id = 7, .loops = 2,
                            .supervision = {.intensity = 0, .period_ms = 1000}};
  struct exo_node *node;
  char err[256];
  CHECK_INT_EQ(exo_node_new_opts(&o, &node, err, sizeof err), 0);
  CHECK_INT_EQ(exo_node_spawn(node, "ping", &ping_kind, 0, NULL, NULL, err, sizeof err), 0);
  CHECK_INT_EQ(exo_node_spawn(node, "pong", &pong_kind, 1, NULL, NULL, err, sizeof err), 0);
  CHECK_INT_EQ(exo_node_spawn(node, "pong", &pong_kind, 1, NULL, NULL, err, sizeof err),
               -EEXIST);
  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
  CHECK(wait_for(&rounds_done, ROUNDS, 5000));
  CHECK_INT_EQ(atomic_load(&bad_payloads), 0);
  CHECK_INT_EQ(exo_node_stop(node, NULL, NULL), 0);
  CHECK_INT_EQ(exo_node_join(node), 0);
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.local_sent, 2 * ROUNDS);
  CHECK_INT_EQ(st.delivered, 2 * ROUNDS);
  CHECK_INT_EQ(st.handler_failures, 0);
  uint64_t same = 0, fd = exo_loop_wakeups(exo_node_loop(node, 1), &same);
  fprintf(stderr, "  loop1 wake-ups: eventfd %llu, same-thread %llu\n", (unsigned long long)fd,
          (unsigned long long)same);
  exo_node_free(node);
}

/* ---- mailbox bound, timers, exit ---- */

static atomic_int counted, stops, timer_fires;

static int count_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  atomic_fetch_add(&counted, 1);
  if (msg->env.type == MSG_PING + 10)
    exo_actor_exit(self);
  return 0;
}

static int count_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)state;
  if (id != 42)
    return -EINVAL;
  if (atomic_fetch_add(&timer_fires, 1) + 1 == 5)
    return exo_actor_timer_stop(self, 42);
  return 0;
}

static int count_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                      const struct exo_actor_config *opts, char *err, size_t errlen)
{
  (void)state, (void)cfg, (void)opts, (void)err, (void)errlen;
  return exo_actor_timer_start(self, 42, 1, true);
}

static void count_stop(struct exo_actor *self, void *state)
{
  (void)self, (void)state;
  atomic_fetch_add(&stops, 1);
}

static const struct exo_actor_kind count_kind = {
    .name = "count", .init = count_init, .message = count_message, .timer = count_timer,
    .stop = count_stop};

static void test_mailbox_timer_exit(void)
{
  struct exo_node_opts o = {.node_id = 3, .loops = 1, .mailbox_capacity = 4,
                            .supervision = {.intensity = 0, .period_ms = 1000}};
  struct exo_node *node;
  char err[256];
  CHECK_INT_EQ(exo_node_new_opts(&o, &node, err, sizeof err), 0);
  struct exo_actor *a;
  CHECK_INT_EQ(exo_node_spawn(node, "count", &count_kind, 0, NULL, &a, err, sizeof err), 0);
  struct exo_addr to = exo_actor_addr(a);
  /* The loop is not running: the mailbox fills up and the fifth send is refused. */
  for (int i = 0; i < 4; i++)
    CHECK_INT_EQ(exo_node_send(node, to, MSG_PING, "x", 1), 0);
  CHECK_INT_EQ(exo_node_send(node, to, MSG_PING, "x", 1), -ENOBUFS);
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.mailbox_full, 1);
  struct exo_addr nowhere;
  CHECK_INT_EQ(exo_addr_parse("nobody", 3, &nowhere), 0);
  CHECK_INT_EQ(exo_node_send(node, nowhere, MSG_PING, "x", 1), -ENOENT);
  CHECK_INT_EQ(exo_addr_parse("9/count", 3, &nowhere), 0);
  CHECK_INT_EQ(exo_node_send(node, nowhere, MSG_PING, "x", 1), -EHOSTUNREACH);

  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
  CHECK(wait_for(&counted, 4, 3000));
  CHECK(wait_for(&timer_fires, 5, 3000));
  usleep(20000);
  CHECK_INT_EQ(atomic_load(&timer_fires), 5); /* stopped from its own callback */
  CHECK_INT_EQ(exo_node_send(node, to, MSG_PING + 10, "x", 1), 0); /* asks it to exit */
  CHECK(wait_for(&stops, 1, 3000));
  CHECK(!exo_actor_running(a));
  CHECK_INT_EQ(exo_node_send(node, to, MSG_PING, "x", 1), 0); /* accepted, then dropped */
  for (int i = 0; i < 3000; i++) {
    exo_node_stats(node, &st);
    if (st.dropped_dead >= 1)
      break;
    usleep(1000);
  }
  CHECK_INT_EQ(st.dropped_dead, 1);
  CHECK_INT_EQ(atomic_load(&counted), 5);
  exo_node_free(node); /* stop is not called twice for a DEAD actor */
  CHECK_INT_EQ(atomic_load(&stops), 1);
}

static void test_addr_parse(void)
{
  struct exo_addr a;
  CHECK_INT_EQ(exo_addr_parse("12/sampler", 1, &a), 0);
  CHECK_INT_EQ(a.node, 12);
  CHECK_INT_EQ(a.actor, exo_actor_id("sampler"));
  CHECK_INT_EQ(exo_addr_parse("sampler", 5, &a), 0);
  CHECK_INT_EQ(a.node, 5);
  CHECK_INT_EQ(exo_addr_parse("/x", 1, &a), -EINVAL);
  CHECK_INT_EQ(exo_addr_parse("1x/x", 1, &a), -EINVAL);
  CHECK_INT_EQ(exo_addr_parse("1/", 1, &a), -EINVAL);
  CHECK_INT_EQ(exo_addr_parse("99999999999/x", 1, &a), -EINVAL);
  CHECK_INT_EQ(exo_addr_parse("1/a/b", 1, &a), -EINVAL);
  CHECK_INT_EQ(exo_addr_parse("", 1, &a), -EINVAL);
}

static void test_node_from_config(void)
{
  static const char yaml[] = "cluster: t\nnode:\n  id: 9\nloops: 2\nactors:\n"
                             "  - {name: ping, kind: ping, loop: 0}\n"
                             "  - {name: pong, kind: pong, loop: 1}\n"
                             "supervision: {strategy: one_for_all, intensity: 2, period_ms: 100}\n";
  const char *kind_names[] = {"ping", "pong", NULL};
  const struct exo_actor_kind *kinds[] = {&ping_kind, &pong_kind, NULL};
  struct exo_config *cfg = NULL;
  char err[256] = "";
  CHECK_INT_EQ(exo_config_parse(yaml, sizeof yaml - 1, "t.yaml", kind_names, &cfg, err,
                                sizeof err), 0);
  if (!cfg) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  struct exo_node *node = NULL;
  const struct exo_actor_kind *only_ping[] = {&ping_kind, NULL};
  CHECK_INT_EQ(exo_node_new(cfg, only_ping, &node, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "t.yaml:7:");
  CHECK_STR_CONTAINS(err, "unknown kind \"pong\"");
  atomic_store(&rounds_done, 0);
  CHECK_INT_EQ(exo_node_new(cfg, kinds, &node, err, sizeof err), 0);
  if (node) {
    CHECK_INT_EQ(exo_node_id(node), 9);
    CHECK_INT_EQ(exo_node_loop_count(node), 2);
    CHECK(exo_node_find(node, "pong") != NULL);
    CHECK(exo_node_find(node, "nope") == NULL);
    CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
    CHECK(wait_for(&rounds_done, ROUNDS, 5000));
    exo_node_free(node);
  }
  exo_config_free(cfg);
}

int main(void)
{
  EXO_RUN(test_pingpong_two_loops);
  EXO_RUN(test_mailbox_timer_exit);
  EXO_RUN(test_addr_parse);
  EXO_RUN(test_node_from_config);
  return exo_test_result();
}
