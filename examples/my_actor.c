/* examples/my_actor.c: write your own actor, in one file you can copy. A `counter` actor
 * counts ADD messages, reports its total every `report_ms` (an option), and a `feeder`
 * actor on another loop sends it work. Run: my_actor   (exits after three reports)
 * Protocol of counter: ADD{u32 amount} -> total += amount; nothing sent back. */
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>

#include "runtime/node.h"

/* 1. Pick message types at or above EXO_MSG_APP_BASE (below it is the runtime's). */
#define MSG_ADD (EXO_MSG_APP_BASE + 1)
#define TIMER_REPORT 1

static sem_t reports_done; /* lets main() know when to stop; not part of the pattern */

/* 2. Per-actor state: the runtime allocates state_size zeroed bytes for each actor and
 *    passes them to every handler. Never use globals for state: a restart zeroes this. */
struct counter {
  uint64_t total;
  uint32_t reports;
};

/* 3. init: read options, arm timers. Runs before the loops start (or on the loop after a
 *    restart). Return a negative errno and fill err for a person if the options are bad. */
static int counter_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                        const struct exo_actor_config *opts, char *err, size_t errlen)
{
  (void)state;
  uint64_t report_ms = 100;
  if (cfg && opts) { /* from a YAML config: validated with file:line:col errors */
    int rc = exo_config_option_u64(cfg, opts, "report_ms", 100, 1, 60000, &report_ms, err, errlen);
    if (rc < 0)
      return rc;
  }
  return exo_actor_timer_start(self, TIMER_REPORT, (uint32_t)report_ms, true);
}

/* 4. message: one call per message, on this actor's loop thread. Never block here (no
 *    sleep, no blocking I/O): the loop is shared with other actors. Returning a negative
 *    errno reports a failure: the supervisor restarts the actor (or gives up). */
static int counter_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  struct counter *c = state;
  uint32_t amount;
  if (msg->env.type != MSG_ADD || msg->env.payload_len != sizeof amount)
    return -EPROTO; /* check every length before trusting a payload */
  memcpy(&amount, msg->payload, sizeof amount); /* payload is valid only during this call */
  c->total += amount;
  return 0;
}

/* 5. timer: called for timers armed with exo_actor_timer_start. */
static int counter_timer(struct exo_actor *self, void *state, uint32_t id)
{
  struct counter *c = state;
  if (id != TIMER_REPORT)
    return 0;
  printf("%s: total %llu\n", exo_actor_name(self), (unsigned long long)c->total);
  if (++c->reports == 3) {
    exo_actor_exit(self); /* not freed here: the runtime stops it after we return */
    sem_post(&reports_done);
  }
  return 0;
}

/* 6. stop: release what init took (timers are cancelled for you). */
static void counter_stop(struct exo_actor *self, void *state)
{
  struct counter *c = state;
  printf("%s: stopping with total %llu\n", exo_actor_name(self), (unsigned long long)c->total);
}

/* 7. The kind: a name (what configs say in `kind:`) and the handler table. */
static const struct exo_actor_kind counter_kind = {
    .name = "counter", .state_size = sizeof(struct counter), .init = counter_init,
    .message = counter_message, .timer = counter_timer, .stop = counter_stop};

/* A second kind that feeds the counter: sends ADD{1} every millisecond. Sending needs
 * only an address: "counter" (this node) or "NODE/counter" (another node); the runtime
 * picks the in-process queue or the network. */
static int feeder_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                       const struct exo_actor_config *opts, char *err, size_t errlen)
{
  (void)state, (void)cfg, (void)opts, (void)err, (void)errlen;
  return exo_actor_timer_start(self, 1, 1, true);
}

static int feeder_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)state, (void)id;
  uint32_t one = 1;
  int rc = exo_actor_send_to(self, "counter", MSG_ADD, &one, sizeof one);
  return rc == -ENOBUFS ? 0 : rc; /* a full mailbox is back-pressure, not a failure */
}

static int feeder_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self, (void)state, (void)msg;
  return 0;
}

static const struct exo_actor_kind feeder_kind = {
    .name = "feeder", .init = feeder_init, .message = feeder_message, .timer = feeder_timer};

int main(void)
{
  /* 8. Wiring by hand; `exo_node_new(config, kinds, ...)` does the same from YAML. */
  struct exo_node_opts o = {.node_id = 1, .loops = 2,
                            .supervision = {EXO_SUPERVISION_ONE_FOR_ONE, 3, 5000}};
  struct exo_node *node;
  char err[256];
  sem_init(&reports_done, 0, 0);
  if (exo_node_new_opts(&o, &node, err, sizeof err) < 0 ||
      exo_node_spawn(node, "counter", &counter_kind, 0, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_spawn(node, "feeder", &feeder_kind, 1, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_start(node, err, sizeof err) < 0) {
    fprintf(stderr, "my_actor: %s\n", err);
    return 1;
  }
  sem_wait(&reports_done);
  exo_node_free(node); /* stops every actor on its loop, joins the loops */
  sem_destroy(&reports_done);
  return 0;
}
