/* tests/runtime/test_loop.c: loop threads: FIFO hand-off from several producer threads,
 * asynchronous stop with its completion, the per-turn budget, stop of a never-started
 * loop, and unrun items dropped (not leaked) at free; a killed loop without a death
 * handler is DEAD (stop completes at once, items dropped at free), with one it turns
 * again on a fresh thread and event_base. Suite concurrency (runs under TSan). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "runtime/loop.h"
#include "tests/test.h"

#define PRODUCERS 3
#define PER_PRODUCER 5000

struct seq_item {
  struct exo_loop_item item;
  int producer, seq;
};

struct fifo_state {
  int next[PRODUCERS]; /* loop thread only */
  int errors;          /* loop thread only */
  atomic_int done_calls;
  atomic_bool done_on_loop;
  struct exo_loop *loop;
};

static struct fifo_state fifo;

static void seq_run(struct exo_loop *loop, struct exo_loop_item *item)
{
  struct seq_item *s = (struct seq_item *)item;
  if (!exo_loop_is_current(loop) || fifo.next[s->producer] != s->seq)
    fifo.errors++;
  fifo.next[s->producer] = s->seq + 1;
  free(s);
}

static void seq_drop(struct exo_loop_item *item)
{
  free(item);
}

static void *producer(void *arg)
{
  int p = (int)(intptr_t)arg;
  for (int i = 0; i < PER_PRODUCER; i++) {
    struct seq_item *s = malloc(sizeof *s);
    s->item.run = seq_run;
    s->item.drop = seq_drop;
    s->producer = p;
    s->seq = i;
    if (exo_loop_enqueue(fifo.loop, &s->item) != 0)
      free(s);
  }
  return NULL;
}

static void fifo_done(struct exo_loop *loop, void *arg)
{
  (void)arg;
  atomic_store(&fifo.done_on_loop, exo_loop_is_current(loop));
  atomic_fetch_add(&fifo.done_calls, 1);
}

static void test_fifo_many_producers(void)
{
  CHECK_INT_EQ(exo_loop_new("fifo", &fifo.loop), 0);
  CHECK_INT_EQ(exo_loop_start(fifo.loop), 0);
  CHECK_INT_EQ(exo_loop_start(fifo.loop), -EALREADY);
  pthread_t th[PRODUCERS];
  for (int p = 0; p < PRODUCERS; p++)
    pthread_create(&th[p], NULL, producer, (void *)(intptr_t)p);
  for (int p = 0; p < PRODUCERS; p++)
    pthread_join(th[p], NULL);
  CHECK_INT_EQ(exo_loop_stop(fifo.loop, fifo_done, NULL), 0);
  CHECK_INT_EQ(exo_loop_stop(fifo.loop, fifo_done, NULL), -EALREADY);
  CHECK_INT_EQ(exo_loop_join(fifo.loop), 0);
  /* Everything enqueued before stop ran, in order per producer, then the completion. */
  for (int p = 0; p < PRODUCERS; p++)
    CHECK_INT_EQ(fifo.next[p], PER_PRODUCER);
  CHECK_INT_EQ(fifo.errors, 0);
  CHECK_INT_EQ(atomic_load(&fifo.done_calls), 1);
  CHECK(atomic_load(&fifo.done_on_loop));
  struct seq_item *late = malloc(sizeof *late);
  late->item.run = seq_run;
  late->item.drop = seq_drop;
  CHECK_INT_EQ(exo_loop_enqueue(fifo.loop, &late->item), -ESHUTDOWN);
  free(late);
  uint64_t local = 0, fd = exo_loop_wakeups(fifo.loop, &local);
  CHECK(fd >= 1);
  fprintf(stderr, "  eventfd wake-ups %llu for %d items\n", (unsigned long long)fd,
          PRODUCERS * PER_PRODUCER);
  exo_loop_free(fifo.loop);
}

/* An item that re-posts itself: the budget must let a timer fire in between. */
struct spin {
  atomic_int posts;
  atomic_bool timer_fired;
  atomic_int fired_after;
};

static void spin_run(struct exo_loop *loop, void *arg)
{
  struct spin *s = arg;
  int n = atomic_fetch_add(&s->posts, 1);
  if (!atomic_load(&s->timer_fired) && n < 2000000)
    exo_loop_post(loop, spin_run, s);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
  (void)fd;
  (void)what;
  struct spin *s = arg;
  atomic_store(&s->fired_after, atomic_load(&s->posts));
  atomic_store(&s->timer_fired, true);
}

static struct event *spin_ev;

static void arm_timer2(struct exo_loop *loop, void *arg)
{
  spin_ev = evtimer_new(exo_loop_base(loop), timer_cb, arg);
  struct timeval tv = {0, 5000};
  evtimer_add(spin_ev, &tv);
  exo_loop_post(loop, spin_run, arg);
}

static void test_budget_lets_timers_run(void)
{
  static struct spin s;
  struct exo_loop *loop;
  CHECK_INT_EQ(exo_loop_new("spin", &loop), 0);
  CHECK_INT_EQ(exo_loop_post(loop, arm_timer2, &s), 0); /* before start: runs first */
  CHECK_INT_EQ(exo_loop_start(loop), 0);
  for (int i = 0; i < 2000 && !atomic_load(&s.timer_fired); i++)
    usleep(1000);
  CHECK(atomic_load(&s.timer_fired));
  CHECK(atomic_load(&s.fired_after) > 0);
  exo_loop_stop(loop, NULL, NULL);
  exo_loop_join(loop);
  event_free(spin_ev);
  exo_loop_free(loop);
}

static int never_done;
static void never_done_cb(struct exo_loop *loop, void *arg)
{
  (void)loop;
  (void)arg;
  never_done++;
}

static void test_never_started_and_drop(void)
{
  struct exo_loop *loop;
  CHECK_INT_EQ(exo_loop_new("idle", &loop), 0);
  CHECK_INT_EQ(exo_loop_join(loop), -EINVAL);
  for (int i = 0; i < 10; i++) {
    struct seq_item *s = malloc(sizeof *s);
    s->item.run = seq_run;
    s->item.drop = seq_drop;
    CHECK_INT_EQ(exo_loop_enqueue(loop, &s->item), 0);
  }
  CHECK_INT_EQ(exo_loop_stop(loop, never_done_cb, NULL), 0);
  CHECK_INT_EQ(never_done, 1); /* synchronous for a loop that never ran */
  CHECK_INT_EQ(exo_loop_start(loop), -EALREADY);
  CHECK_INT_EQ(exo_loop_join(loop), 0);
  exo_loop_free(loop); /* drops the 10 items: ASan proves none leaks */
  exo_loop_free(NULL);
}

static int death_calls, death_why; /* written on the dying thread, read after join */

static int renew_on_death(struct exo_loop *loop, int why, void *arg)
{
  (void)arg;
  death_calls++;
  death_why = why;
  return exo_loop_is_current(loop) ? exo_loop_renew_base(loop) : -EINVAL;
}

static void count_run(struct exo_loop *loop, void *arg)
{
  (void)loop;
  atomic_fetch_add((atomic_int *)arg, 1);
}

static void test_death(void)
{
  static atomic_int ran;
  /* no handler: DEAD */
  struct exo_loop *loop;
  CHECK_INT_EQ(exo_loop_new("dies", &loop), 0);
  CHECK_INT_EQ(exo_loop_start(loop), 0);
  CHECK_INT_EQ(exo_loop_kill(loop, EXO_LOOP_KILL_BREAK), 0);
  for (int i = 0; i < 2000 && !exo_loop_dead(loop); i++)
    usleep(1000);
  CHECK(exo_loop_dead(loop));
  CHECK_INT_EQ(exo_loop_deaths(loop), 1);
  CHECK_INT_EQ(exo_loop_renew_base(loop), -EINVAL); /* not inside a death handler */
  CHECK_INT_EQ(exo_loop_post(loop, count_run, &ran), 0); /* never runs: dropped at free */
  never_done = 0;
  CHECK_INT_EQ(exo_loop_stop(loop, never_done_cb, NULL), 0);
  CHECK_INT_EQ(never_done, 1);
  CHECK_INT_EQ(exo_loop_join(loop), 0);
  exo_loop_free(loop);
  CHECK_INT_EQ(atomic_load(&ran), 0);

  /* with a handler that renews: the same loop turns again, twice over */
  CHECK_INT_EQ(exo_loop_new("phoenix", &loop), 0);
  exo_loop_set_death_handler(loop, renew_on_death, NULL);
  CHECK_INT_EQ(exo_loop_start(loop), 0);
  CHECK_INT_EQ(exo_loop_kill(loop, EXO_LOOP_KILL_EXIT), 0);
  CHECK_INT_EQ(exo_loop_post(loop, count_run, &ran), 0);
  for (int i = 0; i < 2000 && atomic_load(&ran) < 1; i++)
    usleep(1000);
  CHECK_INT_EQ(exo_loop_kill(loop, EXO_LOOP_KILL_BREAK), 0);
  CHECK_INT_EQ(exo_loop_post(loop, count_run, &ran), 0);
  for (int i = 0; i < 2000 && atomic_load(&ran) < 2; i++)
    usleep(1000);
  CHECK_INT_EQ(atomic_load(&ran), 2);
  CHECK_INT_EQ(exo_loop_deaths(loop), 2);
  CHECK(!exo_loop_dead(loop));
  never_done = 0;
  CHECK_INT_EQ(exo_loop_stop(loop, never_done_cb, NULL), 0);
  CHECK_INT_EQ(exo_loop_join(loop), 0);
  CHECK_INT_EQ(never_done, 1);
  CHECK_INT_EQ(death_calls, 2);
  CHECK_INT_EQ(death_why, -ECANCELED);
  exo_loop_free(loop);
}

int main(void)
{
  EXO_RUN(test_fifo_many_producers);
  EXO_RUN(test_budget_lets_timers_run);
  EXO_RUN(test_never_started_and_drop);
  EXO_RUN(test_death);
  return exo_test_result();
}
