/* tests/runtime/test_supervisor.c: the intensity window alone, then supervision of real
 * actors on two loops: one_for_one restarts only the failed actor, one_for_all restarts
 * every actor, rest_for_one those spawned after it; escalation past the intensity calls
 * the node's callback; a failing init fails exo_node_start with its message; and the
 * default escalation ends the process with EXO_EXIT_ESCALATED and a clear message
 * (checked on a child process: `test_supervisor escalate`). Loops that die (base loop
 * broken, thread exited) restart their actors on a fresh thread under the same strategy
 * and intensity; a handler stuck past the watchdog is reported by name and escalates.
 * Suite concurrency. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/loop.h"
#include "runtime/node.h"
#include "runtime/supervisor.h"
#include "tests/test.h"

#define MSG_FAIL (EXO_MSG_APP_BASE + 1)
#define MSG_HELLO_APP (EXO_MSG_APP_BASE + 2)
#define MSG_STALL (EXO_MSG_APP_BASE + 3)

static void test_intensity_window(void)
{
  struct exo_supervisor *sup;
  struct exo_supervision_config c = {.strategy = EXO_SUPERVISION_ONE_FOR_ONE, .intensity = 2, .period_ms = 100};
  CHECK_INT_EQ(exo_supervisor_new(&c, &sup), 0);
  uint32_t n;
  CHECK_INT_EQ(exo_supervisor_failure(sup, 1000, &n), EXO_SUPERVISOR_RESTART);
  CHECK_INT_EQ(exo_supervisor_failure(sup, 1010, &n), EXO_SUPERVISOR_RESTART);
  CHECK_INT_EQ(n, 2);
  /* 1000 left the window at 1100: room for one more, not two. */
  CHECK_INT_EQ(exo_supervisor_failure(sup, 1100, &n), EXO_SUPERVISOR_RESTART);
  CHECK_INT_EQ(exo_supervisor_failure(sup, 1105, &n), EXO_SUPERVISOR_ESCALATE);
  CHECK_INT_EQ(exo_supervisor_failure(sup, 99999, &n), EXO_SUPERVISOR_ESCALATE); /* sticky */
  exo_supervisor_free(sup);

  c.intensity = 0;
  CHECK_INT_EQ(exo_supervisor_new(&c, &sup), 0);
  CHECK_INT_EQ(exo_supervisor_failure(sup, 5, NULL), EXO_SUPERVISOR_ESCALATE);
  exo_supervisor_free(sup);
  c.intensity = 5000;
  CHECK_INT_EQ(exo_supervisor_new(&c, &sup), -EINVAL);
  exo_supervisor_free(NULL);
}

/* ---- actors that count their incarnations ---- */

#define N_ACTORS 3
static const char *names[N_ACTORS] = {"a", "b", "c"};
static atomic_int inits[N_ACTORS], stops[N_ACTORS], hellos[N_ACTORS], ticks[N_ACTORS],
    escalations;
static char escalation_reason[512];
static atomic_int fail_init_of = -1;

static int who(struct exo_actor *self)
{
  for (int i = 0; i < N_ACTORS; i++)
    if (strcmp(exo_actor_name(self), names[i]) == 0)
      return i;
  return 0;
}

static int w_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                  const struct exo_actor_config *opts, char *err, size_t errlen)
{
  (void)state, (void)cfg, (void)opts;
  int i = who(self);
  if (atomic_load(&fail_init_of) == i) {
    snprintf(err, errlen, "actor %s: refusing to start", names[i]);
    return -EINVAL;
  }
  atomic_fetch_add(&inits[i], 1);
  return exo_actor_timer_start(self, 1, 5, true); /* lives on the loop's event_base */
}

static int w_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  if (msg->env.type == MSG_HELLO_APP)
    atomic_fetch_add(&hellos[who(self)], 1);
  if (msg->env.type == MSG_STALL)
    usleep(400 * 1000); /* a handler that blocks: what the watchdog is for */
  return msg->env.type == MSG_FAIL ? -EIO : 0;
}

static int w_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)state, (void)id;
  atomic_fetch_add(&ticks[who(self)], 1);
  return 0;
}

static void w_stop(struct exo_actor *self, void *state)
{
  (void)state;
  atomic_fetch_add(&stops[who(self)], 1);
}

static const struct exo_actor_kind worker = {
    .name = "worker", .init = w_init, .message = w_message, .timer = w_timer, .stop = w_stop};

static void on_escalate(struct exo_node *node, const char *reason, void *arg)
{
  (void)node, (void)arg;
  snprintf(escalation_reason, sizeof escalation_reason, "%s", reason);
  atomic_fetch_add(&escalations, 1);
}

static struct exo_node *make_node_wd(enum exo_supervision_strategy s, uint32_t intensity,
                                     uint32_t watchdog_ms)
{
  for (int i = 0; i < N_ACTORS; i++) {
    atomic_store(&inits[i], 0);
    atomic_store(&stops[i], 0);
    atomic_store(&hellos[i], 0);
    atomic_store(&ticks[i], 0);
  }
  atomic_store(&escalations, 0);
  escalation_reason[0] = '\0';
  struct exo_node_opts o = {.node_id = 1, .loops = 2,
                            .supervision = {.strategy = s, .intensity = intensity,
                                            .period_ms = 10000, .watchdog_ms = watchdog_ms}};
  struct exo_node *node = NULL;
  char err[256];
  if (exo_node_new_opts(&o, &node, err, sizeof err) < 0)
    return NULL;
  exo_node_set_escalate(node, on_escalate, NULL);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK_INT_EQ(exo_node_spawn(node, names[i], &worker, (uint32_t)i % 2, NULL, NULL, err,
                                sizeof err), 0);
  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
  return node;
}

static struct exo_node *make_node(enum exo_supervision_strategy s, uint32_t intensity)
{
  return make_node_wd(s, intensity, 0);
}

static void fail_actor(struct exo_node *node, const char *name)
{
  struct exo_addr a;
  exo_addr_parse(name, exo_node_id(node), &a);
  CHECK_INT_EQ(exo_node_send(node, a, MSG_FAIL, NULL, 0), 0);
}

static bool wait_for(atomic_int *v, int target)
{
  for (int i = 0; i < 3000 && atomic_load(v) < target; i++)
    usleep(1000);
  return atomic_load(v) >= target;
}

static void send_to(struct exo_node *node, const char *name, uint16_t type)
{
  struct exo_addr a;
  exo_addr_parse(name, exo_node_id(node), &a);
  CHECK_INT_EQ(exo_node_send(node, a, type, NULL, 0), 0);
}

/* Loop 1 (actor b) has its base loop broken: b alone restarts on a fresh thread, its
 * timer ticks again (new event_base), messages queued to it are still delivered. */
static void test_loop_death_one_for_one(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_ONE_FOR_ONE, 3);
  CHECK(node != NULL);
  if (!node)
    return;
  struct exo_loop *l1 = exo_node_loop(node, 1);
  CHECK(wait_for(&ticks[1], 3));
  CHECK_INT_EQ(exo_loop_kill(l1, EXO_LOOP_KILL_BREAK), 0);
  send_to(node, "b", MSG_HELLO_APP); /* queued behind the kill: reaches the new thread */
  CHECK(wait_for(&inits[1], 2));
  CHECK(wait_for(&hellos[1], 1));
  int t = atomic_load(&ticks[1]);
  CHECK(wait_for(&ticks[1], t + 3));
  CHECK_INT_EQ(exo_loop_deaths(l1), 1);
  CHECK(!exo_loop_dead(l1));
  CHECK_INT_EQ(atomic_load(&stops[1]), 1);
  CHECK_INT_EQ(atomic_load(&inits[0]), 1);
  CHECK_INT_EQ(atomic_load(&inits[2]), 1);
  CHECK_INT_EQ(exo_actor_restarts(exo_node_find(node, "b")), 1);
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.loop_deaths, 1);
  CHECK_INT_EQ(st.restarts, 1);
  CHECK_INT_EQ(st.escalations, 0);
  exo_node_free(node);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK_INT_EQ(atomic_load(&stops[i]), atomic_load(&inits[i]));
}

/* Loop 0's thread exits (pthread_exit) under one_for_all: every actor restarts, the
 * dead loop's on the fresh thread and the other loop's on its own. */
static void test_loop_thread_exit_one_for_all(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_ONE_FOR_ALL, 3);
  CHECK(node != NULL);
  if (!node)
    return;
  struct exo_loop *l0 = exo_node_loop(node, 0);
  CHECK_INT_EQ(exo_loop_kill(l0, EXO_LOOP_KILL_EXIT), 0);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK(wait_for(&inits[i], 2));
  send_to(node, "a", MSG_HELLO_APP);
  send_to(node, "c", MSG_HELLO_APP);
  CHECK(wait_for(&hellos[0], 1));
  CHECK(wait_for(&hellos[2], 1));
  CHECK_INT_EQ(exo_loop_deaths(l0), 1);
  usleep(20000);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK_INT_EQ(atomic_load(&inits[i]), 2);
  exo_node_free(node);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK_INT_EQ(atomic_load(&stops[i]), 2);
}

/* Deaths count in the same intensity window as handler failures. */
static void test_loop_death_escalates(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_ONE_FOR_ONE, 1);
  CHECK(node != NULL);
  if (!node)
    return;
  struct exo_loop *l1 = exo_node_loop(node, 1);
  fail_actor(node, "a"); /* the one restart the window allows */
  CHECK(wait_for(&inits[0], 2));
  CHECK_INT_EQ(exo_loop_kill(l1, EXO_LOOP_KILL_BREAK), 0);
  CHECK(wait_for(&escalations, 1));
  CHECK_STR_CONTAINS(escalation_reason, "loop n1-l1 died");
  CHECK_STR_CONTAINS(escalation_reason, "intensity 1 per 10000 ms exceeded");
  for (int i = 0; i < 1000 && !exo_loop_dead(l1); i++)
    usleep(1000);
  CHECK(exo_loop_dead(l1));
  CHECK(!exo_actor_running(exo_node_find(node, "b")));
  CHECK_INT_EQ(exo_loop_kill(l1, EXO_LOOP_KILL_BREAK), -ESHUTDOWN);
  exo_node_free(node); /* a dead loop still completes the node's stop */
  CHECK_INT_EQ(atomic_load(&stops[1]), atomic_load(&inits[1]));
}

/* A handler blocked past watchdog_ms: reported with the actor's name, escalated once. */
static void test_watchdog_reports_stuck_handler(void)
{
  struct exo_node *node = make_node_wd(EXO_SUPERVISION_ONE_FOR_ONE, 3, 100);
  CHECK(node != NULL);
  if (!node)
    return;
  send_to(node, "c", MSG_HELLO_APP); /* short handlers never trip it */
  CHECK(wait_for(&hellos[2], 1));
  send_to(node, "b", MSG_STALL);
  CHECK(wait_for(&escalations, 1));
  CHECK_STR_CONTAINS(escalation_reason, "loop n1-l1 stuck: actor b's handler has run for");
  CHECK_STR_CONTAINS(escalation_reason, "(watchdog 100 ms)");
  usleep(500 * 1000); /* the handler returns; no second report for the same stall */
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.loop_stalls, 1);
  CHECK_INT_EQ(atomic_load(&escalations), 1);
  exo_node_free(node);
}

static void test_one_for_one(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_ONE_FOR_ONE, 3);
  CHECK(node != NULL);
  if (!node)
    return;
  fail_actor(node, "b");
  CHECK(wait_for(&inits[1], 2));
  usleep(20000); /* would any other restart show up? */
  CHECK_INT_EQ(atomic_load(&inits[0]), 1);
  CHECK_INT_EQ(atomic_load(&inits[2]), 1);
  CHECK_INT_EQ(atomic_load(&stops[1]), 1);
  CHECK_INT_EQ(exo_actor_restarts(exo_node_find(node, "b")), 1);
  CHECK(exo_actor_running(exo_node_find(node, "b")));
  exo_node_free(node);
  for (int i = 0; i < N_ACTORS; i++) /* every incarnation stopped exactly once */
    CHECK_INT_EQ(atomic_load(&stops[i]), atomic_load(&inits[i]));
  CHECK_INT_EQ(atomic_load(&escalations), 0);
}

static void test_one_for_all(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_ONE_FOR_ALL, 3);
  CHECK(node != NULL);
  if (!node)
    return;
  fail_actor(node, "b");
  for (int i = 0; i < N_ACTORS; i++)
    CHECK(wait_for(&inits[i], 2));
  usleep(20000);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK_INT_EQ(atomic_load(&inits[i]), 2);
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.restarts, 3);
  CHECK_INT_EQ(st.handler_failures, 1);
  exo_node_free(node);
  for (int i = 0; i < N_ACTORS; i++)
    CHECK_INT_EQ(atomic_load(&stops[i]), 2);
}

static void test_rest_for_one(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_REST_FOR_ONE, 3);
  CHECK(node != NULL);
  if (!node)
    return;
  fail_actor(node, "b");
  CHECK(wait_for(&inits[1], 2));
  CHECK(wait_for(&inits[2], 2));
  usleep(20000);
  CHECK_INT_EQ(atomic_load(&inits[0]), 1);
  exo_node_free(node);
}

static void test_escalation_past_intensity(void)
{
  struct exo_node *node = make_node(EXO_SUPERVISION_ONE_FOR_ONE, 2);
  CHECK(node != NULL);
  if (!node)
    return;
  fail_actor(node, "a");
  CHECK(wait_for(&inits[0], 2));
  fail_actor(node, "c");
  CHECK(wait_for(&inits[2], 2));
  CHECK_INT_EQ(atomic_load(&escalations), 0);
  fail_actor(node, "a"); /* third failure within the period: past intensity 2 */
  CHECK(wait_for(&escalations, 1));
  CHECK_STR_CONTAINS(escalation_reason, "actor a failed");
  CHECK_STR_CONTAINS(escalation_reason, "intensity 2 per 10000 ms exceeded");
  CHECK(!exo_actor_running(exo_node_find(node, "a")));
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.escalations, 1);
  exo_node_free(node);
}

static void test_init_failure_fails_start(void)
{
  atomic_store(&fail_init_of, 2);
  struct exo_node_opts o = {.node_id = 1, .loops = 1,
                            .supervision = {.intensity = 1, .period_ms = 1000}};
  struct exo_node *node;
  char err[256] = "";
  CHECK_INT_EQ(exo_node_new_opts(&o, &node, err, sizeof err), 0);
  for (int i = 0; i < N_ACTORS; i++)
    exo_node_spawn(node, names[i], &worker, 0, NULL, NULL, err, sizeof err);
  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "actor c (kind worker): init failed: actor c: refusing to start");
  exo_node_free(node); /* a and b were initialised: their stop runs here */
  atomic_store(&fail_init_of, -1);
}

static int escalate_child(void)
{
  struct exo_node_opts o = {.node_id = 4, .loops = 1,
                            .supervision = {.intensity = 0, .period_ms = 1000}};
  struct exo_node *node;
  char err[256];
  if (exo_node_new_opts(&o, &node, err, sizeof err) < 0 ||
      exo_node_spawn(node, "a", &worker, 0, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_start(node, err, sizeof err) < 0)
    return 2;
  fail_actor(node, "a");
  sleep(5); /* the default escalation exits the process before this ends */
  exo_node_free(node);
  return 0;
}

static void test_default_escalation_exits_process(void)
{
  int pipefd[2];
  CHECK_INT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    execl("/proc/self/exe", "test_supervisor", "escalate", (char *)NULL);
    _exit(127);
  }
  close(pipefd[1]);
  char out[2048] = "";
  size_t got = 0;
  ssize_t n;
  while (got < sizeof out - 1 && (n = read(pipefd[0], out + got, sizeof out - 1 - got)) > 0)
    got += (size_t)n;
  out[got] = '\0';
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK_INT_EQ(WEXITSTATUS(status), EXO_EXIT_ESCALATED);
  CHECK_STR_CONTAINS(out, "exo-actors: node 4: actor a failed (message: Input/output error)");
  CHECK_STR_CONTAINS(out, "escalating: node exits");
}

int main(int argc, char **argv)
{
  if (argc == 2 && strcmp(argv[1], "escalate") == 0)
    return escalate_child();
  EXO_RUN(test_intensity_window);
  EXO_RUN(test_one_for_one);
  EXO_RUN(test_one_for_all);
  EXO_RUN(test_rest_for_one);
  EXO_RUN(test_escalation_past_intensity);
  EXO_RUN(test_init_failure_fails_start);
  EXO_RUN(test_default_escalation_exits_process);
  EXO_RUN(test_loop_death_one_for_one);
  EXO_RUN(test_loop_thread_exit_one_for_all);
  EXO_RUN(test_loop_death_escalates);
  EXO_RUN(test_watchdog_reports_stuck_handler);
  return exo_test_result();
}
