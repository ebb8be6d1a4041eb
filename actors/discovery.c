/* actors/discovery.c: actor kind "discovery": tells the LAN (UDP broadcast) and every
 * connected peer (nanomsg ANNOUNCE, for networks without broadcast) who this node is, and
 * turns what it hears into topology entries (actors/cluster.h) and peer connections.
 * Owns the UDP socket and this process's instance nonce. Must not judge liveness (the
 * health actor does) nor decide ranges (the partitioner does).
 * With a cluster key every datagram ends in its tag (runtime/auth.h, discovery domain) and
 * untagged or foreign ones are dropped before parsing; nanomsg ANNOUNCEs ride the keyed
 * transport.
 * Duplicate ids: of two live instances with one id, the younger (fewer announcements)
 * exits with a message; the older reports the twin and ignores it, as third parties do:
 * never merged. */
#include <arpa/inet.h>
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "actors/announce.h"
#include "actors/cluster.h"
#include "actors/control.h"
#include "actors/default_model.h"
#include "common/err.h"
#include "runtime/auth.h"
#include "runtime/log.h"
#include "runtime/loop.h"
#include "runtime/node.h"
#include "runtime/shared.h"

#define DLOG(level, ...) exo_log(level, NULL, "discovery", __VA_ARGS__)

#define EXO_DISCOVERY_EXIT_DUPLICATE 3 /* process exit status: our id is taken */
#define ANNOUNCE_TIMER 1
#define TWIN_LIVE_NS 1500000000ull   /* an entry heard this recently is not "moved" */
#define MAX_REPORTED 32

struct disc_state {
  struct exo_actor *self;
  struct exo_cluster *cluster;
  struct exo_announce me;
  int fd;                 /* UDP, or -1 when broadcast is off */
  struct event *ev;
  struct sockaddr_in bcast;
  uint32_t interval_ms;
  uint64_t heard, ignored, duplicates, unsigned_dropped;
  struct exo_auth *auth; /* the cluster key: datagrams carry its tag; NULL: unkeyed */
  /* senders already reported (cluster/protocol mismatch or twin), so a log line is
   * written once per instance rather than every 200 ms */
  uint64_t reported[MAX_REPORTED];
  unsigned n_reported;
};

static bool report_once(struct disc_state *s, uint64_t instance)
{
  for (unsigned i = 0; i < s->n_reported; i++)
    if (s->reported[i] == instance)
      return false;
  s->reported[s->n_reported++ % MAX_REPORTED] = instance;
  if (s->n_reported > MAX_REPORTED)
    s->n_reported = MAX_REPORTED;
  return true;
}

/* Size suffixes K, M, G, T (powers of 1024) on a decimal integer. */
static int parse_bytes(const char *text, uint64_t *out)
{
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text)
    return -EINVAL;
  unsigned shift = 0;
  switch (*end) {
  case 'K': shift = 10; break;
  case 'M': shift = 20; break;
  case 'G': shift = 30; break;
  case 'T': shift = 40; break;
  case '\0': break;
  default: return -EINVAL;
  }
  if (*end && end[1] && strcmp(end + 1, "iB") && strcmp(end + 1, "B"))
    return -EINVAL;
  if (shift && v > (UINT64_MAX >> shift))
    return -ERANGE;
  *out = (uint64_t)v << shift;
  return 0;
}

static uint64_t mem_available(void)
{
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f)
    return 0;
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
      break;
  fclose(f);
  return (uint64_t)kb * 1024;
}

/* A compute estimate: GFLOP/s of a small sgemm, best of a few (~10 ms in all). */
static double measure_gflops(void)
{
  enum { N = 192 };
  float *a = calloc((size_t)3 * N * N, sizeof *a);
  if (!a)
    return 0;
  for (size_t i = 0; i < (size_t)2 * N * N; i++)
    a[i] = (float)(i % 7) * 0.25f;
  double best = 0;
  for (int rep = 0; rep < 4; rep++) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, a + N * N, N,
                0.0f, a + 2 * N * N, N);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (s > 0 && 2.0 * N * N * N / s / 1e9 > best)
      best = 2.0 * N * N * N / s / 1e9;
  }
  free(a);
  return best;
}

/* "tcp://0.0.0.0:P" announces an address nobody can dial: the receiver puts the
 * datagram's source in its place. */
static void fix_wildcard(char *addr, size_t cap, const struct sockaddr_in *from)
{
  static const char *const wild[] = {"tcp://0.0.0.0:", "tcp://*:"};
  for (int i = 0; i < 2; i++) {
    size_t w = strlen(wild[i]);
    if (strncmp(addr, wild[i], w) == 0 && from) {
      char ip[INET_ADDRSTRLEN];
      unsigned long port = strtoul(addr + w, NULL, 10);
      inet_ntop(AF_INET, &from->sin_addr, ip, sizeof ip);
      if (port > 0 && port < 65536)
        snprintf(addr, cap, "tcp://%s:%lu", ip, port);
    }
  }
}

static void heard(struct disc_state *s, const void *buf, size_t len,
                  const struct sockaddr_in *from)
{
  struct exo_announce a;
  char err[256];
  if (exo_announce_decode(buf, len, &a, err, sizeof err)) {
    s->ignored++;
    DLOG(EXO_LOG_DEBUG, "bad announcement ignored: %s", err);
    return;
  }
  if (a.instance == s->me.instance)
    return; /* our own broadcast, looped back */
  if (a.protocol != s->me.protocol || strcmp(a.cluster, s->me.cluster)) {
    s->ignored++;
    if (report_once(s, a.instance))
      DLOG(EXO_LOG_INFO, "ignoring node %" PRIu64 " at %s: cluster '%s' protocol %d (ours: '%s' "
           "protocol %d)", a.node_id, a.address, a.cluster, a.protocol, s->me.cluster,
           s->me.protocol);
    return;
  }
  if (a.node_id == 0 || a.node_id > UINT32_MAX) {
    s->ignored++;
    return;
  }
  fix_wildcard(a.address, sizeof a.address, from);
  uint64_t now = exo_gen_now_ns();
  if (a.node_id == s->me.node_id) {
    s->duplicates++;
    /* seq counts announcements: the twin that has announced more is the older one and
     * keeps the id (instance breaks a tie), so the two decide the same thing */
    if (a.seq > s->me.seq || (a.seq == s->me.seq && a.instance > s->me.instance)) {
      DLOG(EXO_LOG_ERROR, "duplicate node id %" PRIu64 ": already used by the node at %s; "
           "this node (%s) started later and exits (give it another id)", a.node_id,
           a.address, s->me.address);
      fflush(NULL);
      _exit(EXO_DISCOVERY_EXIT_DUPLICATE);
    }
    if (report_once(s, a.instance))
      DLOG(EXO_LOG_ERROR, "duplicate node id %" PRIu64 ": the node at %s claims this node's id; "
           "its announcements are ignored", a.node_id, a.address);
    return;
  }
  /* Same id, other instance: a restart (same address) or a move (old one silent) is fine;
   * two live instances at two addresses are twins. */
  struct exo_cluster_node k;
  if (exo_cluster_find_node(s->cluster, (uint32_t)a.node_id, &k) == 0 &&
      k.instance != a.instance && strcmp(k.addr, a.address) && now - k.seen_ns < TWIN_LIVE_NS &&
      k.health == EXO_PEER_ALIVE) {
    s->duplicates++;
    if (report_once(s, a.instance))
      DLOG(EXO_LOG_ERROR, "duplicate node id %" PRIu64 ": %s and %s both claim it; keeping %s",
           a.node_id, k.addr, a.address, k.addr);
    return;
  }
  struct exo_cluster_node cn = {.id = (uint32_t)a.node_id, .mem_bytes = a.memory_bytes,
                                .gflops = a.compute, .instance = a.instance, .seen_ns = now};
  snprintf(cn.addr, sizeof cn.addr, "%s", a.address);
  snprintf(cn.model, sizeof cn.model, "%s", a.model_id);
  int rc = exo_cluster_upsert(s->cluster, &cn);
  if (rc == 1) {
    DLOG(EXO_LOG_INFO, "node %u at %s (%s, %.1f GiB, %.1f GFLOP/s)", cn.id, cn.addr, cn.model,
         (double)cn.mem_bytes / (1u << 30), cn.gflops);
  }
  s->heard++;
  struct exo_node *node = exo_actor_node(s->self);
  if (!exo_node_has_peer(node, cn.id))
    (void)exo_node_add_peer(node, cn.addr);
}

static void on_udp(evutil_socket_t fd, short what, void *arg)
{
  (void)what;
  struct disc_state *s = arg;
  /* drain what is there (bounded: a flood cannot hold the loop) */
  for (int i = 0; i < 64; i++) {
    char buf[EXO_ANNOUNCE_MAX + EXO_AUTH_MAC_BYTES + 1];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    if (n < 0)
      return;
    size_t len = (size_t)n;
    if (s->auth && exo_auth_open(s->auth, EXO_AUTH_DOMAIN_DISCOVERY, buf, len, &len)) {
      /* no tag or another key's: not one of ours (logged once per sender address) */
      if (s->unsigned_dropped++ % 1000 == 0) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
        DLOG(EXO_LOG_WARN, "announcement from %s without this cluster's key tag dropped "
             "(%" PRIu64 " so far)", ip, s->unsigned_dropped);
      }
      continue;
    }
    if (len > EXO_ANNOUNCE_MAX) {
      s->ignored++;
      continue;
    }
    heard(s, buf, len, &from);
  }
}

static void announce(struct disc_state *s)
{
  s->me.seq++;
  char buf[EXO_ANNOUNCE_MAX + EXO_AUTH_MAC_BYTES + 1];
  int n = exo_announce_encode(&s->me, buf, EXO_ANNOUNCE_MAX + 1);
  if (n < 0)
    return;
  size_t dlen = (size_t)n;
  if (s->auth && exo_auth_sign(s->auth, EXO_AUTH_DOMAIN_DISCOVERY, buf, (size_t)n, sizeof buf,
                               &dlen))
    return;
  if (s->fd >= 0)
    (void)sendto(s->fd, buf, dlen, MSG_DONTWAIT, (const struct sockaddr *)&s->bcast,
                 sizeof s->bcast);
  struct exo_node *node = exo_actor_node(s->self);
  uint32_t ids[EXO_CLUSTER_MAX_NODES];
  size_t k = exo_node_peer_ids(node, ids, EXO_CLUSTER_MAX_NODES);
  for (size_t i = 0; i < k && i < EXO_CLUSTER_MAX_NODES; i++) {
    struct exo_addr dst = {ids[i], exo_actor_id(EXO_DISCOVERY_ACTOR_NAME)};
    (void)exo_actor_send(s->self, dst, EXO_CTL_MSG_ANNOUNCE, buf, (size_t)n);
  }
  /* ourselves, so the topology always holds this node */
  struct exo_cluster_node cn = {.id = (uint32_t)s->me.node_id, .mem_bytes = s->me.memory_bytes,
                                .gflops = s->me.compute, .instance = s->me.instance,
                                .seen_ns = exo_gen_now_ns()};
  snprintf(cn.addr, sizeof cn.addr, "%s", s->me.address);
  snprintf(cn.model, sizeof cn.model, "%s", s->me.model_id);
  (void)exo_cluster_upsert(s->cluster, &cn);
}

static int disc_init(struct exo_actor *self, void *state, const struct exo_config *cfg,
                     const struct exo_actor_config *opts, char *err, size_t errlen)
{
  struct disc_state *s = state;
  s->self = self;
  s->fd = -1;
  struct exo_node *node = exo_actor_node(self);
  if (!(s->cluster = exo_cluster_of_actor(self, err, errlen)))
    return -ENOMEM;
  uint64_t port = 52415, interval = 200;
  const char *bcast = "255.255.255.255", *mem = NULL;
  if (cfg && opts) {
    static const char *const allowed[] = {"port", "broadcast", "interval_ms", "memory", NULL};
    int rc = exo_config_check_options(cfg, opts, allowed, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "port", port, 1, 65535, &port, err, errlen);
    if (!rc)
      rc = exo_config_option_u64(cfg, opts, "interval_ms", interval, 10, 60000, &interval, err,
                                 errlen);
    if (!rc)
      rc = exo_config_option_str(cfg, opts, "broadcast", bcast, &bcast, err, errlen);
    if (!rc)
      rc = exo_config_option_str(cfg, opts, "memory", NULL, &mem, err, errlen);
    if (rc)
      return rc;
  }
  s->interval_ms = (uint32_t)interval;
  s->me.protocol = EXO_ANNOUNCE_PROTOCOL;
  snprintf(s->me.cluster, sizeof s->me.cluster, "%s", cfg && cfg->cluster ? cfg->cluster : "");
  s->me.node_id = exo_node_id(node);
  if (cfg && cfg->listen)
    snprintf(s->me.address, sizeof s->me.address, "%s", cfg->listen);
  if (!s->me.address[0]) {
    exo_errf(err, errlen, "discovery needs the node's `listen` address to announce");
    return -EINVAL;
  }
  if (sodium_init() < 0)
    return -EIO;
  if (cfg && cfg->key_path) {
    char kerr[256];
    int krc = exo_auth_load(cfg->key_path, &s->auth, kerr, sizeof kerr);
    if (krc) {
      exo_errf(err, errlen, "discovery: %s", kerr);
      return krc;
    }
  }
  while (s->me.instance == 0)
    randombytes_buf(&s->me.instance, sizeof s->me.instance);
  s->me.memory_bytes = mem_available();
  if (mem && parse_bytes(mem, &s->me.memory_bytes))
    return exo_config_option_fail(cfg, opts, "memory", err, errlen,
                                  "expected bytes like 8GiB or 1073741824, got '%s'", mem);
  s->me.compute = measure_gflops();
  exo_model_id(cfg ? cfg->model : NULL, s->me.model_id, sizeof s->me.model_id);
  if (strcmp(bcast, "off") != 0) {
    memset(&s->bcast, 0, sizeof s->bcast);
    s->bcast.sin_family = AF_INET;
    s->bcast.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bcast, &s->bcast.sin_addr) != 1) /* only a configured one can */
      return exo_config_option_fail(cfg, opts, "broadcast", err, errlen,
                                    "expected an IPv4 address or 'off', got '%s'", bcast);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_ANY)};
    /* several nodes of one host share the port: every one of them gets each broadcast */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&any, sizeof any)) {
      int e = errno;
      if (fd >= 0)
        close(fd);
      exo_errf(err, errlen, "UDP port %u: %s", (unsigned)port, strerror(e));
      return -e;
    }
    s->fd = fd;
    s->ev = event_new(exo_loop_base(exo_actor_loop(self)), fd, EV_READ | EV_PERSIST, on_udp, s);
    if (!s->ev || event_add(s->ev, NULL)) {
      exo_errf(err, errlen, "cannot watch the UDP socket");
      return -ENOMEM;
    }
  }
  announce(s);
  return exo_actor_timer_start(self, ANNOUNCE_TIMER, s->interval_ms, true);
}

static int disc_timer(struct exo_actor *self, void *state, uint32_t id)
{
  (void)self;
  if (id == ANNOUNCE_TIMER)
    announce(state);
  return 0;
}

static int disc_message(struct exo_actor *self, void *state, const struct exo_msg *msg)
{
  (void)self;
  if (msg->env.type == EXO_CTL_MSG_ANNOUNCE)
    heard(state, msg->payload, msg->env.payload_len, NULL);
  return 0;
}

static void disc_stop(struct exo_actor *self, void *state)
{
  (void)self;
  struct disc_state *s = state;
  if (s->ev)
    event_free(s->ev);
  if (s->fd >= 0)
    close(s->fd);
  exo_auth_free(s->auth);
  s->auth = NULL;
  s->ev = NULL;
  s->fd = -1;
}

const struct exo_actor_kind exo_discovery_kind = {
  .name = "discovery",
  .state_size = sizeof(struct disc_state),
  .init = disc_init,
  .message = disc_message,
  .timer = disc_timer,
  .stop = disc_stop,
};
