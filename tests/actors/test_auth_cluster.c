/* tests/actors/test_auth_cluster.c: a keyed cluster end to end: two `exo-actors run`
 * processes with the same `key:` serve the demo model split between them (api actor on
 * each), and a third node without the key (and a fourth with another key) point at node 1.
 * Checks: the outsiders never appear in node 1's topology, see no one themselves, and the
 * keyed cluster's greedy text equals an unkeyed cluster's for the same request (the key
 * changes nothing about generation). Suite integration. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "actors/local_cluster.h"
#include "runtime/auth.h"
#include "tests/test.h"

#define MAXN 4
static int api_port[MAXN], node_port[MAXN];
static pid_t pids[MAXN];
static char dir[256];

static char *http(int port, const char *method, const char *path, const char *body, int *status)
{
  *status = 0;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {20, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
    close(fd);
    return NULL;
  }
  char head[512];
  snprintf(head, sizeof head,
           "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           "Content-Length: %zu\r\n\r\n",
           method, path, body ? strlen(body) : 0);
  send(fd, head, strlen(head), MSG_NOSIGNAL);
  if (body)
    send(fd, body, strlen(body), MSG_NOSIGNAL);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  ssize_t got;
  while (buf && (got = recv(fd, buf + n, cap - n - 1, 0)) > 0)
    if ((n += (size_t)got) + 1 >= cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        buf = NULL;
      }
      buf = nb;
    }
  close(fd);
  if (!buf)
    return NULL;
  buf[n] = '\0';
  sscanf(buf, "HTTP/1.%*d %d", status);
  char *b = strstr(buf, "\r\n\r\n");
  char *out = strdup(b ? b + 4 : "");
  free(buf);
  return out;
}

static json_t *get_json(int port, const char *path, const char *body, int *status)
{
  char *t = http(port, body ? "POST" : "GET", path, body, status);
  json_t *j = t ? json_loads(t, 0, NULL) : NULL;
  free(t);
  return j;
}

static size_t cluster_nodes(int port)
{
  int st;
  json_t *c = get_json(port, "/v1/cluster", NULL, &st);
  size_t n = c ? json_array_size(json_object_get(c, "nodes")) : 0;
  json_decref(c);
  return n;
}

/* Node i (id i + 1) with key (NULL: none), peers: the other keyed node (i < 2) or node 1. */
static int start_node(int i, const char *key, int min_nodes)
{
  const char *root = getenv("EXO_SOURCE_ROOT") ? getenv("EXO_SOURCE_ROOT") : ".";
  const char *build = getenv("EXO_BUILD_ROOT") ? getenv("EXO_BUILD_ROOT") : "build";
  char path[512], exe[512], keyline[300] = "";
  snprintf(path, sizeof path, "%s/node%d.yaml", dir, i + 1);
  if (key)
    snprintf(keyline, sizeof keyline, "key: %s\n", key);
  int peer = i == 0 ? 1 : 0;
  FILE *f = fopen(path, "w");
  if (!f)
    return -errno;
  fprintf(f,
          "cluster: authtest\n%snode:\n  id: %d\n  listen: tcp://127.0.0.1:%d\nloops: 2\n"
          "log: warn\nmodel: \"%s/models/demo\"\npeers: [tcp://127.0.0.1:%d]\nactors:\n"
          "  - {name: discovery, kind: discovery, loop: 0, options: {broadcast: \"off\","
          " interval_ms: 100}}\n"
          "  - {name: health, kind: health, loop: 0}\n"
          "  - {name: partitioner, kind: partitioner, loop: 0, options: {min_nodes: %d,"
          " settle_ms: 0, strategy: even}}\n"
          "  - {name: origin, kind: origin, loop: 0}\n"
          "  - {name: shard, kind: shard-worker, loop: 1}\n"
          "  - {name: api, kind: api, loop: 0, options: {port: %d}}\n",
          keyline, i + 1, node_port[i], root, node_port[peer], min_nodes, api_port[i]);
  fclose(f);
  snprintf(exe, sizeof exe, "%s/actors/exo-actors", build);
  char logp[512];
  snprintf(logp, sizeof logp, "%s/node%d.log", dir, i + 1);
  pid_t p = fork();
  if (p == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!freopen(logp, "w", stderr))
      _exit(126);
    execl(exe, exe, "run", path, (char *)NULL);
    _exit(127);
  }
  pids[i] = p;
  return p > 0 ? 0 : -errno;
}

static void stop_all(void)
{
  for (int i = 0; i < MAXN; i++)
    if (pids[i] > 0) {
      kill(pids[i], SIGTERM);
      waitpid(pids[i], NULL, 0);
      pids[i] = 0;
    }
}

static bool wait_ready(int port, size_t nodes)
{
  for (int t = 0; t < 400; t++) {
    int st;
    json_t *c = get_json(port, "/v1/cluster", NULL, &st);
    bool ok = c && json_array_size(json_object_get(c, "nodes")) == nodes &&
              json_integer_value(json_object_get(c, "epoch")) > 0;
    json_decref(c);
    if (ok)
      return true;
    usleep(50000);
  }
  return false;
}

/* Greedy text of one request through node 1's api into out; false on failure. */
static bool generate(char *out, size_t cap)
{
  const char *req = "{\"model\":\"demo\",\"prompt\":\"Once upon a time\",\"temperature\":0,"
                    "\"max_tokens\":12}";
  int st;
  json_t *j = get_json(api_port[0], "/v1/completions", req, &st);
  const char *t = json_string_value(
      json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text"));
  bool ok = st == 200 && t && *t;
  if (ok)
    snprintf(out, cap, "%s", t);
  else
    fprintf(stderr, "completion: status %d\n", st);
  json_decref(j);
  return ok;
}

static bool log_contains(int i, const char *needle)
{
  char p[512], buf[1 << 16];
  snprintf(p, sizeof p, "%s/node%d.log", dir, i + 1);
  FILE *f = fopen(p, "r");
  if (!f)
    return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strstr(buf, needle) != NULL;
}

static void test_keyed_cluster(void)
{
  char key[300], other[300], err[256], plain[4096] = "", keyed[4096] = "";
  snprintf(key, sizeof key, "%s/cluster.key", dir);
  snprintf(other, sizeof other, "%s/other.key", dir);
  CHECK_INT_EQ(exo_auth_keygen(key, false, err, sizeof err), 0);
  CHECK_INT_EQ(exo_auth_keygen(other, false, err, sizeof err), 0);
  for (int i = 0; i < MAXN; i++) {
    exo_local_cluster_pick_port(&node_port[i]);
    exo_local_cluster_pick_port(&api_port[i]);
  }
  /* 1. unkeyed reference */
  CHECK_INT_EQ(start_node(0, NULL, 2), 0);
  CHECK_INT_EQ(start_node(1, NULL, 2), 0);
  CHECK(wait_ready(api_port[0], 2));
  CHECK(generate(plain, sizeof plain));
  stop_all();
  CHECK(log_contains(0, "cluster is unauthenticated (no key configured)"));
  /* 2. keyed, with a keyless and a wrong-key node knocking on node 1 */
  for (int i = 0; i < MAXN; i++) {
    exo_local_cluster_pick_port(&node_port[i]);
    exo_local_cluster_pick_port(&api_port[i]);
  }
  CHECK_INT_EQ(start_node(0, key, 2), 0);
  CHECK_INT_EQ(start_node(1, key, 2), 0);
  CHECK_INT_EQ(start_node(2, NULL, 1), 0);
  CHECK_INT_EQ(start_node(3, other, 1), 0);
  CHECK(wait_ready(api_port[0], 2));
  usleep(500 * 1000); /* several HELLO and heartbeat rounds of the outsiders */
  CHECK_INT_EQ(cluster_nodes(api_port[0]), 2);
  CHECK_INT_EQ(cluster_nodes(api_port[1]), 2);
  CHECK(cluster_nodes(api_port[2]) <= 1); /* sees only itself */
  CHECK(cluster_nodes(api_port[3]) <= 1);
  CHECK(generate(keyed, sizeof keyed));
  CHECK(!strcmp(plain, keyed));
  fprintf(stderr, "  unkeyed: \"%s\"\n  keyed:   \"%s\"\n", plain, keyed);
  stop_all();
  CHECK(!log_contains(0, "unauthenticated"));
  CHECK(log_contains(0, "bad MAC") || log_contains(0, "no key?"));
}

/* `exo-actors keygen`: writes a 0600 key, refuses to overwrite, --force replaces. */
static void test_keygen_cli(void)
{
  const char *build = getenv("EXO_BUILD_ROOT") ? getenv("EXO_BUILD_ROOT") : "build";
  char cmd[1024], path[300];
  snprintf(path, sizeof path, "%s/cli.key", dir);
  snprintf(cmd, sizeof cmd, "'%s/actors/exo-actors' keygen '%s' >'%s.out' 2>&1", build, path, path);
  CHECK_INT_EQ(system(cmd), 0);
  struct stat st;
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
  struct exo_auth *a = NULL;
  char err[256];
  CHECK_INT_EQ(exo_auth_load(path, &a, err, sizeof err), 0);
  exo_auth_free(a);
  CHECK(WEXITSTATUS(system(cmd)) == 1); /* exists: refused */
  snprintf(cmd, sizeof cmd, "'%s/actors/exo-actors' keygen --force '%s' >'%s.out' 2>&1", build,
           path, path);
  CHECK_INT_EQ(system(cmd), 0);
  char out[512] = "", op[320];
  snprintf(op, sizeof op, "%s.out", path);
  FILE *f = fopen(op, "r");
  if (f) {
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
  }
  CHECK_STR_CONTAINS(out, "fingerprint");
  CHECK(strstr(out, "exo-actors-key-v1") == NULL); /* never prints the key */
}

int main(void)
{
  snprintf(dir, sizeof dir, "/tmp/exo-auth-cluster-XXXXXX");
  if (!mkdtemp(dir))
    return 1;
  EXO_RUN(test_keygen_cli);
  EXO_RUN(test_keyed_cluster);
  stop_all();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd))
    fprintf(stderr, "could not remove %s\n", dir);
  return exo_test_result();
}
