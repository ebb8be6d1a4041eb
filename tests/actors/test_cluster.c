/* tests/actors/test_cluster.c: the control plane with real node processes on loopback.
 * Discovery: three nodes with no peer list find each other by UDP broadcast and serve
 * within 2 s; a node of another cluster name is ignored; a duplicate node id is refused.
 * Health: a node frozen with SIGSTOP mid-generation is suspected within 500 ms, the map
 * moves to the survivors and the generation in flight completes with the fault-free ids;
 * after SIGCONT the node rejoins and the map spans it again. */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "actors/client.h"
#include "actors/local_cluster.h"
#include "runtime/auth.h"
#include "tests/test.h"

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void exe_path(char *out, size_t cap)
{
  const char *build = getenv("EXO_BUILD_ROOT");
  snprintf(out, cap, "%s/actors/exo-actors", build ? build : ".");
}

static int free_udp_port(void)
{
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
  socklen_t sl = sizeof sa;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
    port = ntohs(sa.sin_port);
  if (fd >= 0)
    close(fd);
  return port;
}

/* The fixture's prompt and greedy continuation. */
static int load_greedy(const char *name, char *dir, size_t dircap, int32_t *prompt, size_t *np,
                       int32_t *want, size_t *nw)
{
  snprintf(dir, dircap, "%s/%s", getenv("EXO_FIXTURES"), name);
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/reference.json", dir);
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j)
    return -1;
  json_t *g = json_object_get(j, "greedy");
  json_t *a = json_object_get(g, "prompt_ids"), *b = json_object_get(g, "new_ids");
  *np = json_array_size(a);
  *nw = json_array_size(b);
  if (*np == 0 || *np > 64 || *nw == 0 || *nw > 64) {
    json_decref(j);
    return -1;
  }
  for (size_t i = 0; i < *np; i++)
    prompt[i] = (int32_t)json_integer_value(json_array_get(a, i));
  for (size_t i = 0; i < *nw; i++)
    want[i] = (int32_t)json_integer_value(json_array_get(b, i));
  json_decref(j);
  return 0;
}

/* Does the node's log (index i) contain text? */
static int log_has(const struct exo_local_cluster *c, int i, const char *text, char *line,
                   size_t cap)
{
  char path[256];
  snprintf(path, sizeof path, "%s/node%u.log", exo_local_cluster_dir(c),
           exo_local_cluster_node_id(c, i));
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  int found = 0;
  while (!found && fgets(line, (int)cap, f))
    found = strstr(line, text) != NULL;
  fclose(f);
  return found;
}

static void discovery_three_nodes_no_peer_list(void)
{
  char exe[PATH_MAX], dir[PATH_MAX], err[512] = "", line[512];
  int32_t prompt[64], want[64];
  size_t np, nw;
  exe_path(exe, sizeof exe);
  CHECK(load_greedy("tiny-llama", dir, sizeof dir, prompt, &np, want, &nw) == 0);
  int port = free_udp_port();
  CHECK(port > 0);
  struct exo_local_cluster *c = NULL, *other = NULL, *twin = NULL;
  struct exo_client *cl = NULL;
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 3, .first_id = 1, .model = dir,
                                     .udp_port = port, .log_level = "info"};
  double t0 = now_s();
  CHECK_INT_EQ(exo_local_cluster_start(&o, &c, err, sizeof err), 0);
  CHECK_INT_EQ(exo_client_new(NULL, &cl, err, sizeof err), 0);
  if (!c || !cl)
    goto out;
  /* discovery time counts from the moment the three processes are up (a sanitizer build
   * on a loaded machine takes seconds just to start them) */
  for (int up = 0; up < 3 && now_s() - t0 < 20;) {
    up = 0;
    for (int i = 0; i < 3; i++)
      up += log_has(c, i, "ready node", line, sizeof line);
    struct timespec nap = {0, 5000000};
    nanosleep(&nap, NULL);
  }
  t0 = now_s();
  uint32_t n1 = 0;
  while (exo_client_connect(cl, exo_local_cluster_addr(c, 0), 50, &n1, err, sizeof err) &&
         now_s() - t0 < 10)
    ;
  CHECK_INT_EQ(n1, 1);
  struct exo_req_submit req = {.max_tokens = (uint32_t)nw, .flags = EXO_REQ_F_STATS,
                               .prompt = prompt, .n_prompt = np};
  exo_sample_params_default(&req.sp);
  struct exo_client_result res = {0};
  int rc = exo_client_generate(cl, n1, &req, NULL, NULL, 10000, &res, err, sizeof err);
  double served = now_s() - t0;
  if (rc)
    fprintf(stderr, "generate: %s\n", err);
  CHECK_INT_EQ(rc, 0);
  fprintf(stderr, "# 3 nodes found each other by UDP and served in %.0f ms after start-up\n",
          served * 1e3);
  /* the goal is 2 s (typically 0.3-0.8 s here); the bound leaves room for a loaded CI box */
  CHECK(served < 5.0);
  CHECK_INT_EQ(res.n_ids, nw);
  for (size_t i = 0; i < res.n_ids && i < nw; i++)
    CHECK_INT_EQ(res.ids[i], want[i]);
  if (res.n_ids)
    CHECK_INT_EQ(res.events[0].n_stages, 3); /* all three found: the map spans them */
  exo_client_result_fini(&res);

  /* another cluster on the same port: heard, ignored, logged; the map stays 3 nodes */
  struct exo_local_cluster_opts oo = o;
  oo.n_nodes = 1;
  oo.first_id = 7;
  oo.cluster = "elsewhere";
  CHECK_INT_EQ(exo_local_cluster_start(&oo, &other, err, sizeof err), 0);
  int ignored = 0;
  for (double t = now_s(); !ignored && now_s() - t < 3;) {
    ignored = log_has(c, 0, "ignoring node 7", line, sizeof line);
    struct timespec nap = {0, 20000000};
    nanosleep(&nap, NULL);
  }
  CHECK(ignored);
  CHECK_STR_CONTAINS(line, "cluster 'elsewhere'");
  rc = exo_client_generate(cl, n1, &req, NULL, NULL, 10000, &res, err, sizeof err);
  CHECK_INT_EQ(rc, 0);
  if (!rc && res.n_ids)
    CHECK_INT_EQ(res.events[res.n_ids - 1].n_stages, 3);
  exo_client_result_fini(&res);

  /* a second node 2 at another address: it learns the id is taken and exits */
  struct exo_local_cluster_opts ot = o;
  ot.n_nodes = 1;
  ot.first_id = 2;
  CHECK_INT_EQ(exo_local_cluster_start(&ot, &twin, err, sizeof err), 0);
  int exited = 0;
  for (double t = now_s(); twin && !exited && now_s() - t < 5;) {
    exited = exo_local_cluster_check(twin, err, sizeof err) == -ECHILD;
    struct timespec nap = {0, 20000000};
    nanosleep(&nap, NULL);
  }
  CHECK(exited);
  CHECK_STR_CONTAINS(err, "duplicate node id 2");
  CHECK_STR_CONTAINS(err, "status 3");
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
out:
  exo_client_free(cl);
  exo_local_cluster_free(twin);
  exo_local_cluster_free(other);
  exo_local_cluster_free(c);
}

struct freezer {
  pid_t victim;
  size_t at;
  double stopped_at, resumed_token_at;
  size_t seen;
};

static void freeze_mid_generation(void *arg, const struct exo_req_event *e)
{
  struct freezer *fz = arg;
  if (!(e->flags & EXO_REQ_EV_TOKEN))
    return;
  fz->seen++;
  if (fz->seen == fz->at) {
    kill(fz->victim, SIGSTOP);
    fz->stopped_at = now_s();
  } else if (fz->seen == fz->at + 1) {
    fz->resumed_token_at = now_s();
  }
}

static void health_sigstop_moves_map_and_request_survives(void)
{
  char exe[PATH_MAX], dir[PATH_MAX], err[512] = "", line[512];
  int32_t prompt[64], want[64];
  size_t np, nw;
  exe_path(exe, sizeof exe);
  CHECK(load_greedy("tiny-llama", dir, sizeof dir, prompt, &np, want, &nw) == 0);
  struct exo_local_cluster *c = NULL;
  struct exo_client *cl = NULL;
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 3, .first_id = 1, .model = dir,
                                     .min_nodes = 1, .settle_ms = 100};
  CHECK_INT_EQ(exo_local_cluster_start(&o, &c, err, sizeof err), 0);
  CHECK_INT_EQ(exo_client_new(NULL, &cl, err, sizeof err), 0);
  if (!c || !cl)
    goto out;
  uint32_t n1 = 0;
  for (double t0 = now_s(); exo_client_connect(cl, exo_local_cluster_addr(c, 0), 50, &n1, err,
                                               sizeof err) && now_s() - t0 < 10;)
    ;
  /* 160 tokens (greedy stays on the fixture's ids for its 24; the rest are checked against
   * the fault-free run), so the freeze lands well before the end */
  enum { N = 160 };
  int32_t ref[N];
  struct exo_req_submit req = {.max_tokens = N, .flags = EXO_REQ_F_STATS, .prompt = prompt,
                               .n_prompt = np};
  exo_sample_params_default(&req.sp);
  struct exo_client_result res = {0};
  /* fault-free first, and wait until the map spans all three */
  int three = 0;
  for (double t0 = now_s(); !three && now_s() - t0 < 10;) {
    int rc = exo_client_generate(cl, n1, &req, NULL, NULL, 10000, &res, err, sizeof err);
    three = !rc && res.n_ids == N && res.events[N - 1].n_stages == 3;
    if (three)
      memcpy(ref, res.ids, sizeof ref);
    exo_client_result_fini(&res);
  }
  CHECK(three);
  for (size_t i = 0; three && i < nw; i++)
    CHECK_INT_EQ(ref[i], want[i]);
  struct freezer fz = {.victim = exo_local_cluster_pid(c, 1), .at = 5};
  int rc = exo_client_generate(cl, n1, &req, freeze_mid_generation, &fz, 20000, &res, err,
                               sizeof err);
  if (rc)
    fprintf(stderr, "generate with node 2 frozen: %s\n", err);
  CHECK_INT_EQ(rc, 0);
  CHECK_INT_EQ(res.n_ids, N);
  for (size_t i = 0; i < res.n_ids && i < N; i++)
    CHECK_INT_EQ(res.ids[i], ref[i]);
  CHECK(res.attempts >= 2); /* it was re-issued under the new map */
  if (res.n_ids)
    CHECK_INT_EQ(res.events[res.n_ids - 1].n_stages, 2);
  exo_client_result_fini(&res);
  fprintf(stderr, "# frozen at token %zu; next token after %.0f ms\n", fz.at,
          (fz.resumed_token_at - fz.stopped_at) * 1e3);
  /* the coordinator's log: "node 2 suspected: silent for N ms" */
  CHECK(log_has(c, 0, "node 2 suspected: silent for ", line, sizeof line));
  const char *p = strstr(line, "silent for ");
  int silent = p ? atoi(p + 11) : 100000;
  fprintf(stderr, "# %s", line);
  CHECK(silent <= 500);

  kill(exo_local_cluster_pid(c, 1), SIGCONT);
  int back = 0;
  for (double t0 = now_s(); !back && now_s() - t0 < 10;) {
    rc = exo_client_generate(cl, n1, &req, NULL, NULL, 10000, &res, err, sizeof err);
    back = !rc && res.n_ids == N && res.events[N - 1].n_stages == 3;
    for (size_t i = 0; back && i < N; i++)
      back = res.ids[i] == ref[i];
    exo_client_result_fini(&res);
  }
  CHECK(back); /* rejoined: three stages again, same ids */
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
out:
  exo_client_free(cl);
  exo_local_cluster_free(c);
}

/* A keyed cluster on UDP discovery: its datagrams carry the key's tag; a keyless node of
 * the same cluster name on the same port is dropped before parsing and never mapped; a
 * client with the key generates, one without it is not answered. */
static void keyed_discovery_ignores_keyless_nodes(void)
{
  char exe[PATH_MAX], dir[PATH_MAX], err[512] = "", line[512], key[128];
  int32_t prompt[64], want[64];
  size_t np, nw;
  exe_path(exe, sizeof exe);
  CHECK(load_greedy("tiny-llama", dir, sizeof dir, prompt, &np, want, &nw) == 0);
  snprintf(key, sizeof key, "/tmp/exo-test-key-%d", (int)getpid());
  unlink(key);
  CHECK_INT_EQ(exo_auth_keygen(key, false, err, sizeof err), 0);
  int port = free_udp_port();
  struct exo_local_cluster *c = NULL, *outsider = NULL;
  struct exo_client *cl = NULL, *nokey = NULL;
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 2, .first_id = 1, .model = dir,
                                     .udp_port = port, .log_level = "info", .node_key = key};
  CHECK_INT_EQ(exo_local_cluster_start(&o, &c, err, sizeof err), 0);
  struct exo_local_cluster_opts oo = o;
  oo.n_nodes = 1;
  oo.first_id = 3;
  oo.node_key = NULL;
  oo.min_nodes = 1;
  CHECK_INT_EQ(exo_local_cluster_start(&oo, &outsider, err, sizeof err), 0);
  CHECK_INT_EQ(exo_client_new_keyed(NULL, key, &cl, err, sizeof err), 0);
  if (!c || !cl || !outsider)
    goto out;
  uint32_t n1 = 0;
  for (double t0 = now_s(); exo_client_connect(cl, exo_local_cluster_addr(c, 0), 50, &n1, err,
                                               sizeof err) && now_s() - t0 < 10;)
    ;
  struct exo_req_submit req = {.max_tokens = (uint32_t)nw, .flags = EXO_REQ_F_STATS,
                               .prompt = prompt, .n_prompt = np};
  exo_sample_params_default(&req.sp);
  struct exo_client_result res = {0};
  struct timespec settle = {1, 0}; /* the outsider announces meanwhile */
  nanosleep(&settle, NULL);
  int rc = exo_client_generate(cl, n1, &req, NULL, NULL, 10000, &res, err, sizeof err);
  if (rc)
    fprintf(stderr, "keyed generate: %s\n", err);
  CHECK_INT_EQ(rc, 0);
  CHECK_INT_EQ(res.n_ids, nw);
  for (size_t i = 0; i < res.n_ids && i < nw; i++)
    CHECK_INT_EQ(res.ids[i], want[i]);
  if (res.n_ids)
    CHECK_INT_EQ(res.events[res.n_ids - 1].n_stages, 2); /* node 3 is not in the map */
  exo_client_result_fini(&res);
  CHECK(log_has(c, 0, "without this cluster's key tag dropped", line, sizeof line));
  /* a client without the key gets no HELLO back from a keyed node */
  CHECK_INT_EQ(exo_client_new(NULL, &nokey, err, sizeof err), 0);
  uint32_t id = 0;
  CHECK(nokey && exo_client_connect(nokey, exo_local_cluster_addr(c, 0), 1000, &id, err,
                                    sizeof err) == -ETIMEDOUT);
  CHECK_INT_EQ(exo_local_cluster_check(c, err, sizeof err), 0);
out:
  exo_client_free(nokey);
  exo_client_free(cl);
  exo_local_cluster_free(outsider);
  exo_local_cluster_free(c);
  unlink(key);
}

int main(void)
{
  EXO_RUN(discovery_three_nodes_no_peer_list);
  EXO_RUN(health_sigstop_moves_map_and_request_survives);
  EXO_RUN(keyed_discovery_ignores_keyless_nodes);
  return exo_test_result();
}
