/* tests/runtime/test_fault.c: transport fault hooks (runtime/fault.h) between two nodes
 * of one process over inproc: each fault with a fixed seed has the effect it claims
 * (drop 0.5 within a binomial bound and reproducible, duplicates caught by the link
 * window, corrupted frames rejected and counted, delay and jitter on timers without
 * blocking the sender, reorder, bandwidth pacing, type/to selectors, fail= restarting an
 * actor), the spec's errors (also through the config, with line and column), switching
 * faults of a running node through an @PATH file, and EXO_FAULTS; a dead loop 0 drops
 * the frames it held and its fresh thread carries the transport again. Suite integration. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/config.h"
#include "runtime/fault.h"
#include "runtime/loop.h"
#include "runtime/node.h"
#include "tests/test.h"

#define T_DATA (EXO_MSG_APP_BASE + 44) /* 300 */
#define T_OTHER (EXO_MSG_APP_BASE + 45)
#define MAX_SEQ 4096

static atomic_int got, dups, inversions;
static atomic_uchar seen[MAX_SEQ];
static atomic_int last_seq;
static _Atomic uint64_t arrive_us[MAX_SEQ];

static uint64_t mono_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int sink_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self, (void)state;
  uint32_t v;
  if (msg->env.payload_len < sizeof v)
    return 0;
  memcpy(&v, msg->payload, sizeof v);
  if (v >= MAX_SEQ)
    return 0;
  if (atomic_exchange(&seen[v], 1))
    atomic_fetch_add(&dups, 1);
  if ((int)v < atomic_load(&last_seq))
    atomic_fetch_add(&inversions, 1);
  atomic_store(&last_seq, (int)v);
  atomic_store(&arrive_us[v], mono_us());
  atomic_fetch_add(&got, 1);
  return 0;
}

static const struct exo_actor_kind sink_kind = {.name = "sink", .message = sink_message};

static void reset(void)
{
  atomic_store(&got, 0);
  atomic_store(&dups, 0);
  atomic_store(&inversions, 0);
  atomic_store(&last_seq, -1);
  for (int i = 0; i < MAX_SEQ; i++) {
    atomic_store(&seen[i], 0);
    atomic_store(&arrive_us[i], 0);
  }
}

struct pair {
  struct exo_node *a, *b; /* a (node 1) sends, b (node 2) runs "sink" */
};

static int pair_new(struct pair *p, const char *a_faults)
{
  static int n;
  char la[64], lb[64], err[256];
  snprintf(la, sizeof la, "inproc://h2-fault-a-%d-%d", (int)getpid(), n);
  snprintf(lb, sizeof lb, "inproc://h2-fault-b-%d-%d", (int)getpid(), n++);
  struct exo_node_opts oa = {.node_id = 1, .listen = la, .loops = 1, .faults = a_faults,
                             .supervision = {.intensity = 100, .period_ms = 1000}};
  struct exo_node_opts ob = {.node_id = 2, .listen = lb, .loops = 1, .peer_max_frames = 8192,
                             .supervision = {.intensity = 100, .period_ms = 1000}};
  p->a = p->b = NULL;
  reset();
  if (exo_node_new_opts(&oa, &p->a, err, sizeof err) < 0 ||
      exo_node_new_opts(&ob, &p->b, err, sizeof err) < 0 ||
      exo_node_spawn(p->b, "sink", &sink_kind, 0, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_add_peer(p->a, lb) < 0 || exo_node_start(p->a, err, sizeof err) < 0 ||
      exo_node_start(p->b, err, sizeof err) < 0) {
    fprintf(stderr, "pair: %s\n", err);
    return -1;
  }
  for (int i = 0; i < 3000; i++) {
    if (exo_node_has_peer(p->a, 2) && exo_node_has_peer(p->b, 1))
      return 0;
    usleep(1000);
  }
  return -1;
}

static void pair_free(struct pair *p)
{
  exo_node_free(p->a);
  exo_node_free(p->b);
}

static bool wait_until(bool (*cond)(void *), void *arg, int ms)
{
  for (int i = 0; i < ms; i++) {
    if (cond(arg))
      return true;
    usleep(1000);
  }
  return cond(arg);
}

struct accounted {
  struct exo_node *a;
  int sent;
};

/* Every frame sent is either delivered or accounted for by a's fault counters. */
static bool all_accounted(void *arg)
{
  struct accounted *x = arg;
  struct exo_fault_stats fs;
  exo_node_fault_stats(x->a, &fs);
  return atomic_load(&got) + (int)fs.dropped >= x->sent;
}

/* Sends seqs [from, from + n) of type, pausing after each 100. */
static void send_seqs(struct pair *p, uint16_t type, int from, int n, size_t size)
{
  struct exo_addr dst = {2, exo_actor_id("sink")};
  static uint8_t buf[8192];
  for (int i = from; i < from + n; i++) {
    uint32_t v = (uint32_t)i;
    memcpy(buf, &v, sizeof v);
    int rc;
    while ((rc = exo_node_send(p->a, dst, type, buf, size)) == -EAGAIN)
      usleep(200);
    CHECK_INT_EQ(rc, 0);
    if ((i - from) % 100 == 99)
      usleep(2000); /* keep well under the socket buffer and the sender's budget */
  }
}

static void test_spec_errors(void)
{
  char err[256];
  CHECK_INT_EQ(exo_faults_check("seed=7; to=2,drop=0.1,delay=20,jitter=5; type=300,dup=0.05; "
                                "fail=sampler@0.5; reorder=0.2,corrupt=0.001,bw=10M",
                                err, sizeof err), 0);
  CHECK_INT_EQ(exo_faults_check(NULL, err, sizeof err), 0);
  CHECK_INT_EQ(exo_faults_check(" ; ", err, sizeof err), 0);
  CHECK_INT_EQ(exo_faults_check("drop=1.5", err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "faults: item 1 (drop=1.5): drop must be a probability in [0, 1]");
  CHECK_INT_EQ(exo_faults_check("seed=1; bogus=1", err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "item 2 (bogus=1): unknown key 'bogus'");
  CHECK_INT_EQ(exo_faults_check("to=2", err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "needs at least one effect");
  CHECK_INT_EQ(exo_faults_check("bw=0", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("bw=5X", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("to=0,drop=1", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("type=70000,drop=1", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("fail=", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("fail=a@2", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("seed=x", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("delay=-5", err, sizeof err), -EINVAL);
  CHECK_INT_EQ(exo_faults_check("drop", err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "'drop' is not key=value");
  CHECK_INT_EQ(exo_faults_check("@", err, sizeof err), -EINVAL);
  /* through the config: the place of the faults: value */
  const char *yaml = "cluster: t\nnode:\n  id: 1\nfaults: \"drop=0.1; dup=3\"\n";
  struct exo_config *cfg = NULL;
  CHECK(exo_config_parse(yaml, strlen(yaml), "f.yaml", NULL, &cfg, err, sizeof err) < 0);
  CHECK_STR_CONTAINS(err, "f.yaml:4:9:");
  CHECK_STR_CONTAINS(err, "item 2 (dup=3): dup must be a probability");
  exo_config_free(cfg);
  cfg = NULL;
  yaml = "cluster: t\nnode:\n  id: 1\nfaults: \"seed=3; drop=0.1\"\n";
  CHECK_INT_EQ(exo_config_parse(yaml, strlen(yaml), "f.yaml", NULL, &cfg, err, sizeof err), 0);
  if (cfg)
    CHECK(cfg->faults && strcmp(cfg->faults, "seed=3; drop=0.1") == 0);
  exo_config_free(cfg);
}

/* drop=0.5 over 2000 frames: Binomial(2000, 0.5) has sd 22.4; +-5 sd is [888, 1112]. The
 * same seed drops exactly the same frames again. */
static void drop_run(unsigned char *pattern, int *received)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "seed=42; drop=0.5"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 2000, 16);
    struct accounted x = {p.a, 2000};
    CHECK(wait_until(all_accounted, &x, 5000));
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK_INT_EQ(atomic_load(&got) + (int)fs.dropped, 2000);
    CHECK_INT_EQ(atomic_load(&dups), 0);
  }
  *received = atomic_load(&got);
  for (int i = 0; i < 2000; i++)
    pattern[i] = atomic_load(&seen[i]);
  pair_free(&p);
}

static void test_drop_binomial_and_reproducible(void)
{
  static unsigned char p1[2000], p2[2000];
  int r1 = 0, r2 = 0;
  drop_run(p1, &r1);
  drop_run(p2, &r2);
  CHECK(r1 >= 888 && r1 <= 1112);
  CHECK_INT_EQ(r1, r2);
  CHECK(memcmp(p1, p2, sizeof p1) == 0);
}

static void test_duplicates_never_delivered(void)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "seed=5; dup=1"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 300, 16);
    struct exo_node_stats st;
    for (int i = 0; i < 3000; i++) {
      exo_node_stats(p.b, &st);
      if (atomic_load(&got) >= 300 && st.frames_replayed >= 300)
        break;
      usleep(1000);
    }
    usleep(20000);
    exo_node_stats(p.b, &st);
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK_INT_EQ(atomic_load(&got), 300);
    CHECK_INT_EQ(atomic_load(&dups), 0);
    CHECK_INT_EQ(fs.duplicated, 300);
    CHECK_INT_EQ(st.frames_replayed, 300);
  }
  pair_free(&p);
}

static void test_corrupt_rejected_and_counted(void)
{
  struct pair p;
  char err[256];
  CHECK_INT_EQ(pair_new(&p, "seed=9; type=300,corrupt=1"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 200, 40);
    struct exo_node_stats st;
    for (int i = 0; i < 3000; i++) {
      exo_node_stats(p.b, &st);
      if (st.frames_malformed >= 200)
        break;
      usleep(1000);
    }
    CHECK_INT_EQ(st.frames_malformed, 200);
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK_INT_EQ(fs.corrupted, 200);
    send_seqs(&p, T_OTHER, 200, 10, 40); /* another type: untouched */
    CHECK_INT_EQ(exo_node_set_faults(p.a, NULL, err, sizeof err), 0); /* off */
    send_seqs(&p, T_DATA, 210, 10, 40);
    for (int i = 0; i < 3000 && atomic_load(&got) < 20; i++)
      usleep(1000);
    usleep(20000);
    CHECK_INT_EQ(atomic_load(&got), 20); /* never one of the corrupted 200 */
    for (int i = 0; i < 200; i++)
      CHECK(!atomic_load(&seen[i]));
  }
  pair_free(&p);
}

/* delay 60 +- 20 ms: every frame arrives >= 40 ms after it was sent, the sends themselves
 * return at once (timers, not sleeps), and jitter reorders some. */
static void test_delay_jitter_on_timers(void)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "seed=3; delay=60,jitter=20"), 0);
  if (p.a && p.b) {
    static uint64_t sent_us[200];
    struct exo_addr dst = {2, exo_actor_id("sink")};
    uint64_t t0 = mono_us();
    for (uint32_t i = 0; i < 200; i++) {
      sent_us[i] = mono_us();
      CHECK_INT_EQ(exo_node_send(p.a, dst, T_DATA, &i, sizeof i), 0);
    }
    uint64_t send_time = mono_us() - t0;
    CHECK(send_time < 30000);
    for (int i = 0; i < 3000 && atomic_load(&got) < 200; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 200);
    uint64_t min_lat = UINT64_MAX;
    for (int i = 0; i < 200; i++) {
      uint64_t a = atomic_load(&arrive_us[i]);
      if (a && a - sent_us[i] < min_lat)
        min_lat = a - sent_us[i];
    }
    CHECK(min_lat >= 40000);
    CHECK(atomic_load(&inversions) > 0);
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK(fs.delayed >= 190); /* jitter may round one to zero */
  }
  pair_free(&p);
}

static void test_reorder_delivers_each_once(void)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "seed=11; reorder=0.3"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 400, 16);
    for (int i = 0; i < 3000 && atomic_load(&got) < 400; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 400);
    CHECK_INT_EQ(atomic_load(&dups), 0);
    CHECK(atomic_load(&inversions) > 20);
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK(fs.reordered > 60 && fs.reordered < 180); /* ~0.3 of the 400 that found the slot free */
  }
  pair_free(&p);
}

/* 20 frames of 5000 B at 200 kB/s: the last leaves ~475 ms after the first. */
static void test_bandwidth_cap(void)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "bw=200k"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 20, 5000);
    for (int i = 0; i < 3000 && atomic_load(&got) < 20; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 20);
    uint64_t span = atomic_load(&arrive_us[19]) - atomic_load(&arrive_us[0]);
    CHECK(span >= 400000 && span < 2000000);
  }
  pair_free(&p);
}

static void test_selectors(void)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "type=300,drop=1; to=99,drop=1"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 50, 16);
    send_seqs(&p, T_OTHER, 50, 50, 16);
    for (int i = 0; i < 3000 && atomic_load(&got) < 50; i++)
      usleep(1000);
    usleep(20000);
    CHECK_INT_EQ(atomic_load(&got), 50);
    for (int i = 0; i < 50; i++)
      CHECK(!atomic_load(&seen[i]) && atomic_load(&seen[50 + i]));
  }
  pair_free(&p);
}

static void test_fail_hook_restarts_actor(void)
{
  struct pair p;
  char err[256];
  CHECK_INT_EQ(pair_new(&p, NULL), 0);
  if (p.a && p.b) {
    CHECK_INT_EQ(exo_node_set_faults(p.b, "seed=1; fail=sink@1", err, sizeof err), 0);
    send_seqs(&p, T_DATA, 0, 5, 16);
    struct exo_actor *sink = exo_node_find(p.b, "sink");
    for (int i = 0; i < 3000 && exo_actor_restarts(sink) < 5; i++)
      usleep(1000);
    CHECK_INT_EQ(exo_actor_restarts(sink), 5);
    CHECK_INT_EQ(atomic_load(&got), 0); /* the handler never ran */
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.b, &fs);
    CHECK_INT_EQ(fs.handler_failures, 5);
    CHECK_INT_EQ(exo_node_set_faults(p.b, "", err, sizeof err), 0);
    send_seqs(&p, T_DATA, 5, 5, 16);
    for (int i = 0; i < 3000 && atomic_load(&got) < 5; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 5);
  }
  pair_free(&p);
}

static uint64_t reloads_of(struct exo_node *n)
{
  struct exo_fault_stats fs;
  exo_node_fault_stats(n, &fs);
  return fs.reloads;
}

static void write_file(const char *path, const char *text)
{
  char tmp[256];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *fp = fopen(tmp, "w");
  CHECK(fp != NULL);
  if (!fp)
    return;
  fputs(text, fp);
  fclose(fp);
  CHECK_INT_EQ(rename(tmp, path), 0); /* atomic switch, as a harness does it */
}

/* From outside the process: the node polls the @PATH file and applies each change. */
static void test_switch_through_file(void)
{
  char path[128], spec[140], err[256];
  snprintf(path, sizeof path, "/tmp/exo-h2-faults-%d", (int)getpid());
  unlink(path);
  snprintf(spec, sizeof spec, "@%s", path);
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, spec), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 20, 16); /* no file: off */
    for (int i = 0; i < 3000 && atomic_load(&got) < 20; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 20);
    write_file(path, "seed=4\ndrop=1\n");
    for (int i = 0; i < 3000 && reloads_of(p.a) < 1; i++)
      usleep(1000);
    send_seqs(&p, T_DATA, 20, 20, 16);
    usleep(50000);
    CHECK_INT_EQ(atomic_load(&got), 20);
    write_file(path, "drop=1x\n"); /* a bad edit is refused, the faults stay */
    usleep(3 * EXO_FAULT_POLL_MS * 1000);
    CHECK_INT_EQ(reloads_of(p.a), 1);
    unlink(path); /* gone: off */
    for (int i = 0; i < 3000 && reloads_of(p.a) < 2; i++)
      usleep(1000);
    send_seqs(&p, T_DATA, 40, 20, 16);
    for (int i = 0; i < 3000 && atomic_load(&got) < 40; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 40);
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK_INT_EQ(fs.dropped, 20);
  }
  pair_free(&p);
  unlink(path);
  CHECK_INT_EQ(exo_faults_check(spec, err, sizeof err), 0);
}

static void test_env(void)
{
  setenv("EXO_FAULTS", "drop=7", 1);
  struct exo_node_opts o = {.node_id = 1, .loops = 1};
  struct exo_node *n = NULL;
  char err[256] = "";
  CHECK_INT_EQ(exo_node_new_opts(&o, &n, err, sizeof err), -EINVAL);
  CHECK_STR_CONTAINS(err, "EXO_FAULTS: faults: item 1 (drop=7)");
  setenv("EXO_FAULTS", "seed=2; drop=1", 1);
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "dup=1"), 0); /* the environment wins over opts/config */
  unsetenv("EXO_FAULTS");
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 30, 16);
    usleep(50000);
    CHECK_INT_EQ(atomic_load(&got), 0);
    struct exo_fault_stats fs;
    exo_node_fault_stats(p.a, &fs);
    CHECK_INT_EQ(fs.dropped, 30);
    CHECK_INT_EQ(fs.duplicated, 0);
  }
  pair_free(&p);
}

/* Loop 0 owns the transport and the held frames: when it dies, frames held on its timers
 * are dropped and counted, and the fresh loop 0 receives and sends again. */
static void test_loop0_death_keeps_transport(void)
{
  struct pair p;
  CHECK_INT_EQ(pair_new(&p, "seed=8; delay=300"), 0);
  if (p.a && p.b) {
    send_seqs(&p, T_DATA, 0, 10, 16); /* held on a's loop 0 for 300 ms */
    CHECK_INT_EQ(exo_loop_kill(exo_node_loop(p.a, 0), EXO_LOOP_KILL_EXIT), 0);
    CHECK_INT_EQ(exo_loop_kill(exo_node_loop(p.b, 0), EXO_LOOP_KILL_BREAK), 0);
    struct exo_fault_stats fs;
    for (int i = 0; i < 3000; i++) {
      exo_node_fault_stats(p.a, &fs);
      if (fs.held_dropped >= 10 && exo_loop_deaths(exo_node_loop(p.b, 0)) == 1 &&
          exo_actor_running(exo_node_find(p.b, "sink")))
        break;
      usleep(1000);
    }
    CHECK_INT_EQ(fs.held_dropped, 10);
    CHECK_INT_EQ(exo_actor_restarts(exo_node_find(p.b, "sink")), 1);
    char err[256];
    CHECK_INT_EQ(exo_node_set_faults(p.a, NULL, err, sizeof err), 0);
    send_seqs(&p, T_DATA, 10, 10, 16);
    for (int i = 0; i < 3000 && atomic_load(&got) < 10; i++)
      usleep(1000);
    CHECK_INT_EQ(atomic_load(&got), 10);
    for (int i = 10; i < 20; i++)
      CHECK(atomic_load(&seen[i]));
    struct exo_node_stats st;
    exo_node_stats(p.a, &st);
    CHECK_INT_EQ(st.loop_deaths, 1);
  }
  pair_free(&p);
}

int main(void)
{
  unsetenv("EXO_FAULTS");
  EXO_RUN(test_spec_errors);
  EXO_RUN(test_drop_binomial_and_reproducible);
  EXO_RUN(test_duplicates_never_delivered);
  EXO_RUN(test_corrupt_rejected_and_counted);
  EXO_RUN(test_delay_jitter_on_timers);
  EXO_RUN(test_reorder_delivers_each_once);
  EXO_RUN(test_bandwidth_cap);
  EXO_RUN(test_selectors);
  EXO_RUN(test_fail_hook_restarts_actor);
  EXO_RUN(test_switch_through_file);
  EXO_RUN(test_env);
  EXO_RUN(test_loop0_death_keeps_transport);
  return exo_test_result();
}
