/* tests/runtime/test_transport.c: nodes in two processes over ipc and tcp (HELLO, round
 * trips, a 4 MiB tensor both ways over tcp arriving intact) and a node fed malformed raw
 * nanomsg frames (dropped, counted, no crash, later frames still delivered); per-link
 * sequence numbers: duplicates and too-old replays dropped and counted, never delivered,
 * frames from a sender without a HELLO dropped, a new session (restart) numbers anew.
 * The test re-executes itself as the second process: `test_transport child ...`.
 * Suite integration. Ports: random high ports, retried on EADDRINUSE. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>

#include "runtime/link.h"
#include "runtime/node.h"
#include "tests/runtime/node_test_util.h"
#include "tests/test.h"

#define MSG_START (EXO_MSG_APP_BASE + 1)
#define MSG_PING (EXO_MSG_APP_BASE + 2)
#define MSG_PONG (EXO_MSG_APP_BASE + 3)
#define MSG_QUIT (EXO_MSG_APP_BASE + 4)
#define MSG_START_BIG (EXO_MSG_APP_BASE + 5)
#define ROUNDS 200
#define BIG_DIM 1024 /* 1024 x 1024 f32 = 4 MiB */

static atomic_int quit_flag;

/* ---- child: node 2 with an echoing "pong" ---- */

static int pong_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)state;
  if (msg->env.type == MSG_QUIT) {
    atomic_store(&quit_flag, 1);
    return 0;
  }
  /* Echo through the zero-copy path, keeping the payload kind (tensor or bytes). */
  void *buf = exo_msg_alloc(msg->env.payload_len);
  if (!buf)
    return -ENOMEM;
  memcpy(buf, msg->payload, msg->env.payload_len);
  struct exo_envelope env = {.type = MSG_PONG, .payload_kind = msg->env.payload_kind,
                             .dst = msg->env.src, .seq = msg->env.seq};
  return exo_actor_send_buf(self, &env, &buf, msg->env.payload_len);
}

static const struct exo_actor_kind pong_kind = {.name = "pong", .message = pong_message};

static int random_port(void)
{
  return 20000 + (int)((unsigned)rand() % 40000u);
}

/* Creates a node listening on a fresh address of scheme ("tcp" or "ipc"). */
static int node_on_fresh_addr(uint32_t id, const char *scheme, struct exo_node **out, char *addr,
                              size_t addrlen)
{
  char err[256];
  for (int attempt = 0; attempt < 20; attempt++) {
    if (strcmp(scheme, "tcp") == 0)
      snprintf(addr, addrlen, "tcp://127.0.0.1:%d", random_port());
    else
      snprintf(addr, addrlen, "ipc:///tmp/exo-test-%d-%u-%d.ipc", (int)getpid(), id, attempt);
    struct exo_node_opts o = {.node_id = id, .listen = addr, .loops = 2,
                              .supervision = {.intensity = 0, .period_ms = 1000}};
    int rc = exo_node_new_opts(&o, out, err, sizeof err);
    if (rc != -EADDRINUSE) {
      if (rc < 0)
        fprintf(stderr, "node %u: %s\n", id, err);
      return rc;
    }
  }
  return -EADDRINUSE;
}

static int child_main(const char *scheme, const char *parent_addr)
{
  srand((unsigned)getpid() ^ (unsigned)time(NULL));
  struct exo_node *node;
  char addr[128], err[256];
  if (node_on_fresh_addr(2, scheme, &node, addr, sizeof addr) < 0)
    return 2;
  if (exo_node_spawn(node, "pong", &pong_kind, 1, NULL, NULL, err, sizeof err) < 0 ||
      exo_node_add_peer(node, parent_addr) < 0 || exo_node_start(node, err, sizeof err) < 0) {
    fprintf(stderr, "child: %s\n", err);
    exo_node_free(node);
    return 3;
  }
  /* Both sides know each other once the parent's HELLO reached us: tell ping to start. */
  bool known = false;
  for (int i = 0; i < 5000 && !(known = exo_node_has_peer(node, 1)); i++)
    usleep(1000);
  struct exo_addr ping;
  exo_addr_parse("1/ping", 2, &ping);
  if (!known || exo_node_send(node, ping, MSG_START, NULL, 0) < 0) {
    exo_node_free(node);
    return 5;
  }
  for (int i = 0; i < 20000 && !atomic_load(&quit_flag); i++)
    usleep(1000);
  int rc = atomic_load(&quit_flag) ? 0 : 4;
  exo_node_free(node);
  if (strncmp(addr, "ipc://", 6) == 0)
    unlink(addr + 6);
  return rc;
}

/* ---- parent: node 1 with "ping" ---- */

static atomic_int pongs, bad, big_ok;

struct ping_state {
  uint32_t next;
};

static int ping_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  struct ping_state *s = state;
  struct exo_addr peer;
  exo_addr_parse("2/pong", 0, &peer);
  switch (msg->env.type) {
  case MSG_START:
    return exo_actor_send(self, peer, MSG_PING, &s->next, sizeof s->next);
  case MSG_START_BIG: {
    uint32_t shape[2] = {BIG_DIM, BIG_DIM};
    size_t size;
    if (exo_tensor_payload_size(EXO_WIRE_DTYPE_F32, 2, shape, &size) < 0)
      return -EINVAL;
    void *buf = exo_msg_alloc(size), *data;
    if (!buf)
      return -ENOMEM;
    if (exo_tensor_payload_write(buf, size, EXO_WIRE_DTYPE_F32, 2, shape, &data, NULL, 0) < 0) {
      exo_msg_free(buf);
      return -EINVAL;
    }
    float *f = data;
    for (size_t i = 0; i < (size_t)BIG_DIM * BIG_DIM; i++)
      f[i] = (float)i * 0.5f;
    struct exo_envelope env = {.type = MSG_PING, .payload_kind = EXO_PAYLOAD_TENSOR,
                               .dst = peer, .seq = 99};
    return exo_actor_send_buf(self, &env, &buf, size);
  }
  case MSG_QUIT: /* the raw frames of test_malformed_frames_dropped */
    atomic_fetch_add(&pongs, 1);
    return 0;
  case MSG_PONG:
    if (msg->env.payload_kind == EXO_PAYLOAD_TENSOR) {
      struct exo_tensor_view v;
      int ok = exo_tensor_payload_read(msg->payload, msg->env.payload_len, &v, NULL, 0) == 0 &&
               v.ndim == 2 && v.shape[0] == BIG_DIM && v.shape[1] == BIG_DIM &&
               msg->env.seq == 99;
      const float *f = v.data;
      for (size_t i = 0; ok && i < (size_t)BIG_DIM * BIG_DIM; i++)
        ok = f[i] == (float)i * 0.5f;
      atomic_store(&big_ok, ok ? 1 : -1);
      return 0;
    }
    uint32_t v;
    if (msg->env.payload_len != sizeof v)
      return -EPROTO;
    memcpy(&v, msg->payload, sizeof v);
    if (v != s->next)
      atomic_fetch_add(&bad, 1);
    s->next++;
    atomic_fetch_add(&pongs, 1);
    if (s->next < ROUNDS)
      return exo_actor_send(self, msg->env.src, MSG_PING, &s->next, sizeof s->next);
    return 0;
  default:
    return -EPROTO;
  }
}

static const struct exo_actor_kind ping_kind = {
    .name = "ping", .state_size = sizeof(struct ping_state), .message = ping_message};

/* Until *v equals target exactly (node_test_util.h's wait_int waits for >=). */
static bool wait_int_exact(atomic_int *v, int target, int ms)
{
  for (int i = 0; i < ms && atomic_load(v) != target; i++)
    usleep(1000);
  return atomic_load(v) == target;
}

static const char *self_exe;

static void two_processes(const char *scheme, bool big)
{
  atomic_store(&pongs, 0);
  atomic_store(&bad, 0);
  atomic_store(&big_ok, 0);
  struct exo_node *node = NULL;
  char addr[128], err[256];
  CHECK_INT_EQ(node_on_fresh_addr(1, scheme, &node, addr, sizeof addr), 0);
  if (!node)
    return;
  struct exo_actor *ping;
  CHECK_INT_EQ(exo_node_spawn(node, "ping", &ping_kind, 0, NULL, &ping, err, sizeof err), 0);
  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
  pid_t pid = fork();
  if (pid == 0) {
    execl(self_exe, self_exe, "child", scheme, addr, (char *)NULL);
    _exit(127);
  }
  /* The child sends MSG_START to ping once it knows us (see child_main). */
  CHECK(wait_int_exact(&pongs, ROUNDS, 10000));
  CHECK(exo_node_has_peer(node, 2));
  struct exo_addr pa = exo_actor_addr(ping);
  CHECK_INT_EQ(atomic_load(&bad), 0);
  if (big) {
    CHECK_INT_EQ(exo_node_send(node, pa, MSG_START_BIG, NULL, 0), 0);
    CHECK(wait_int_exact(&big_ok, 1, 8000));
  }
  struct exo_addr pong;
  exo_addr_parse("2/pong", 1, &pong);
  CHECK_INT_EQ(exo_node_send(node, pong, MSG_QUIT, NULL, 0), 0);
  int status = 0;
  for (int i = 0; i < 5000; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      break;
    if (i == 4999) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    usleep(1000);
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.frames_malformed, 0);
  CHECK_INT_EQ(st.handler_failures, 0);
  exo_node_free(node);
  if (strncmp(addr, "ipc://", 6) == 0)
    unlink(addr + 6);
}

static void test_two_processes_ipc(void)
{
  two_processes("ipc", false);
}

static void test_two_processes_tcp_with_4mib_tensor(void)
{
  two_processes("tcp", true);
}


static int raw_hello(int raw, uint64_t session)
{
  uint8_t pl[9 + 64], f[256];
  int n = snprintf((char *)pl + 9, 64, "ipc:///tmp/exo-test-nobody-%d.ipc", (int)getpid());
  pl[0] = 0; /* no reply wanted */
  for (int i = 0; i < 8; i++)
    pl[1 + i] = (uint8_t)(session >> (8 * i));
  struct exo_envelope env = {.type = EXO_MSG_HELLO, .src = {2, 0}};
  size_t len = raw_frame(f, sizeof f, &env, pl, 9 + (size_t)n, 0);
  return nn_send(raw, f, len, 0) == (int)len ? 0 : -1;
}

static void test_malformed_frames_dropped(void)
{
  atomic_store(&pongs, 0);
  struct exo_node *node = NULL;
  char addr[128], err[256];
  CHECK_INT_EQ(node_on_fresh_addr(5, "ipc", &node, addr, sizeof addr), 0);
  if (!node)
    return;
  struct exo_actor *ping;
  CHECK_INT_EQ(exo_node_spawn(node, "ping", &ping_kind, 1, NULL, &ping, err, sizeof err), 0);
  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
  int raw = nn_socket(AF_SP, NN_PUSH);
  CHECK(raw >= 0 && nn_connect(raw, addr) >= 0);
  int tmo = 2000;
  nn_setsockopt(raw, NN_SOL_SOCKET, NN_SNDTIMEO, &tmo, sizeof tmo);
  uint8_t junk[EXO_ENVELOPE_HEADER_SIZE + 4 + EXO_LINK_TRAILER];
  memset(junk, 0xAB, sizeof junk);
  CHECK(nn_send(raw, junk, 7, 0) == 7);                         /* too short */
  CHECK(nn_send(raw, junk, sizeof junk, 0) == (int)sizeof junk); /* bad magic / trailer */
  uint32_t v = 0;
  struct exo_envelope env = {.type = MSG_QUIT, .src = {2, exo_actor_id("pong")},
                             .dst = exo_actor_addr(ping)};
  /* Well formed, but node 2 sent no HELLO: no link to number it against. */
  CHECK(raw_frame(junk, sizeof junk, &env, &v, sizeof v, 1) == sizeof junk);
  CHECK(nn_send(raw, junk, sizeof junk, 0) == (int)sizeof junk);
  CHECK_INT_EQ(raw_hello(raw, 0x1234), 0);
  /* One payload byte flipped after sealing: bad CRC. */
  CHECK(raw_frame(junk, sizeof junk, &env, &v, sizeof v, 2) == sizeof junk);
  junk[EXO_ENVELOPE_HEADER_SIZE] ^= 1;
  CHECK(nn_send(raw, junk, sizeof junk, 0) == (int)sizeof junk);
  /* A bit of the link seq flipped: the trailer check catches it. */
  CHECK(raw_frame(junk, sizeof junk, &env, &v, sizeof v, 3) == sizeof junk);
  junk[EXO_ENVELOPE_HEADER_SIZE + 4] ^= 0x10;
  CHECK(nn_send(raw, junk, sizeof junk, 0) == (int)sizeof junk);
  /* To an actor that does not exist: misrouted. */
  env.dst.actor = exo_actor_id("nobody");
  CHECK(raw_frame(junk, sizeof junk, &env, &v, sizeof v, 4) == sizeof junk);
  CHECK(nn_send(raw, junk, sizeof junk, 0) == (int)sizeof junk);
  /* Then a good one: still delivered. */
  env.dst = exo_actor_addr(ping);
  CHECK(raw_frame(junk, sizeof junk, &env, &v, sizeof v, 5) == sizeof junk);
  CHECK(nn_send(raw, junk, sizeof junk, 0) == (int)sizeof junk);
  CHECK(wait_int_exact(&pongs, 1, 5000));
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(st.frames_malformed, 4);
  CHECK_INT_EQ(st.frames_misrouted, 2);
  CHECK_INT_EQ(st.remote_received, 8);
  nn_close(raw);
  exo_node_free(node);
  unlink(addr + 6);
}

/* Link numbering from node 2's side: each seq is delivered once whatever the order
 * inside the window; repeats and frames older than the window are dropped and counted;
 * a HELLO with a new session (node 2 restarted) starts the numbering over. */
static void test_link_sequence_numbers(void)
{
  atomic_store(&pongs, 0);
  struct exo_node *node = NULL;
  char addr[128], err[256];
  CHECK_INT_EQ(node_on_fresh_addr(6, "ipc", &node, addr, sizeof addr), 0);
  if (!node)
    return;
  struct exo_actor *ping;
  CHECK_INT_EQ(exo_node_spawn(node, "ping", &ping_kind, 0, NULL, &ping, err, sizeof err), 0);
  CHECK_INT_EQ(exo_node_start(node, err, sizeof err), 0);
  int raw = nn_socket(AF_SP, NN_PUSH);
  CHECK(raw >= 0 && nn_connect(raw, addr) >= 0);
  int tmo = 2000;
  nn_setsockopt(raw, NN_SOL_SOCKET, NN_SNDTIMEO, &tmo, sizeof tmo);
  CHECK_INT_EQ(raw_hello(raw, 77), 0);
  uint8_t f[EXO_ENVELOPE_HEADER_SIZE + EXO_LINK_TRAILER];
  struct exo_envelope env = {.type = MSG_QUIT, .src = {2, exo_actor_id("pong")},
                             .dst = exo_actor_addr(ping)};
  /* 1..5 out of order, 3 twice, 2 thrice: 5 delivered, 3 duplicates */
  const uint64_t order[] = {2, 1, 3, 3, 5, 4, 2, 2};
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    size_t n = raw_frame(f, sizeof f, &env, NULL, 0, order[i]);
    CHECK(nn_send(raw, f, n, 0) == (int)n);
  }
  CHECK(wait_int_exact(&pongs, 5, 5000));
  /* far ahead, then one that has left the window */
  size_t n = raw_frame(f, sizeof f, &env, NULL, 0, 5000);
  CHECK(nn_send(raw, f, n, 0) == (int)n);
  n = raw_frame(f, sizeof f, &env, NULL, 0, 5000 - EXO_LINK_WINDOW);
  CHECK(nn_send(raw, f, n, 0) == (int)n);
  n = raw_frame(f, sizeof f, &env, NULL, 0, 5000 - EXO_LINK_WINDOW + 1); /* just inside */
  CHECK(nn_send(raw, f, n, 0) == (int)n);
  CHECK(wait_int_exact(&pongs, 7, 5000));
  /* same session again: no reset, 1 is still a replay; a new session: 1 is fresh */
  CHECK_INT_EQ(raw_hello(raw, 77), 0);
  n = raw_frame(f, sizeof f, &env, NULL, 0, 1);
  CHECK(nn_send(raw, f, n, 0) == (int)n);
  CHECK_INT_EQ(raw_hello(raw, 78), 0);
  CHECK(nn_send(raw, f, n, 0) == (int)n);
  CHECK(wait_int_exact(&pongs, 8, 5000));
  usleep(50 * 1000); /* anything extra would show up by now */
  struct exo_node_stats st;
  exo_node_stats(node, &st);
  CHECK_INT_EQ(atomic_load(&pongs), 8);
  CHECK_INT_EQ(st.frames_replayed, 5); /* 3, 2, 2, too old, replayed 1 */
  CHECK_INT_EQ(st.frames_malformed, 0);
  nn_close(raw);
  exo_node_free(node);
  unlink(addr + 6);
}

int main(int argc, char **argv)
{
  if (argc == 4 && strcmp(argv[1], "child") == 0)
    return child_main(argv[2], argv[3]);
  self_exe = "/proc/self/exe";
  static char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    self_exe = exe;
  }
  srand((unsigned)getpid() ^ (unsigned)time(NULL));
  EXO_RUN(test_malformed_frames_dropped);
  EXO_RUN(test_link_sequence_numbers);
  EXO_RUN(test_two_processes_ipc);
  EXO_RUN(test_two_processes_tcp_with_4mib_tensor);
  return exo_test_result();
}
