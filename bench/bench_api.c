/* bench/bench_api.c: what the HTTP API adds to a generation. Starts a 2-node cluster
 * (actors/local_cluster.h, an api actor per node), then runs the same greedy request
 * alternately through the client library (actors/client.h: nanomsg to node 1's origin, what
 * `exo-actors generate --config` does) and through HTTP + SSE to node 1's api actor (a raw
 * socket, timed at each received event), and prints medians of time to first token and
 * per-token latency side by side. Benchmark only: asserts nothing. */
#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "actors/client.h"
#include "actors/local_cluster.h"

#define MAX_TOKENS 1024

static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n ? (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : 0;
}

/* one run: time of each token's arrival, from the submit */
struct timing {
  double t[MAX_TOKENS];
  int n;
};

static void on_event(void *arg, const struct exo_req_event *e)
{
  struct timing *tm = arg;
  if ((e->flags & EXO_REQ_EV_TOKEN) && tm->n < MAX_TOKENS)
    tm->t[tm->n++] = now_us(); /* the caller subtracts its start */
}

static const int32_t prompt[] = {313, 933, 2686, 289}; /* demo: "The Debian project is" */
#define N_PROMPT (sizeof prompt / sizeof prompt[0])

static int run_client(struct exo_client *cl, uint32_t node, int tokens, struct timing *tm,
                      char *err, size_t errlen)
{
  struct exo_req_submit req = {.max_tokens = (uint32_t)tokens, .prompt = prompt,
                               .n_prompt = N_PROMPT};
  exo_sample_params_default(&req.sp);
  struct exo_client_result res = {0};
  tm->n = 0;
  double t0 = now_us();
  int rc = exo_client_generate(cl, node, &req, on_event, tm, 60000, &res, err, errlen);
  for (int i = 0; i < tm->n; i++)
    tm->t[i] -= t0;
  exo_client_result_fini(&res);
  return rc;
}

/* POST /v1/completions with stream: each `data: {...}` event whose finish_reason is null is
 * one token (no stop strings: the api holds nothing back), timed when its last byte came. */
static int run_http(int port, const char *model_id, int tokens, struct timing *tm, char *err,
                    size_t errlen)
{
  char body[256], head[256];
  int blen = snprintf(body, sizeof body,
                      "{\"model\":\"%s\",\"prompt\":[313,933,2686,289],\"max_tokens\":%d,"
                      "\"temperature\":0,\"stream\":true}", model_id, tokens);
  int hlen = snprintf(head, sizeof head,
                      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", blen);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
    snprintf(err, errlen, "connect 127.0.0.1:%d: %s", port, strerror(errno));
    if (fd >= 0)
      close(fd);
    return -ECONNREFUSED;
  }
  size_t cap = 1 << 20, n = 0, scan = 0;
  char *buf = malloc(cap);
  tm->n = 0;
  double t0 = now_us(); /* connected beforehand, as the client library is */
  char msg[512];
  memcpy(msg, head, (size_t)hlen);
  memcpy(msg + hlen, body, (size_t)blen);
  int rc = send(fd, msg, (size_t)(hlen + blen), MSG_NOSIGNAL) == hlen + blen ? 0 : -EIO;
  while (!rc && buf) {
    ssize_t got = recv(fd, buf + n, cap - n - 1, 0);
    if (got <= 0)
      break;
    double t = now_us() - t0;
    n += (size_t)got;
    buf[n] = '\0';
    for (;;) { /* every complete event not yet seen */
      char *ev = strstr(buf + scan, "data: ");
      char *end = ev ? strstr(ev, "\n\n") : NULL;
      if (!end)
        break;
      *end = '\0';
      if (strstr(ev, "\"finish_reason\":null") && tm->n < MAX_TOKENS)
        tm->t[tm->n++] = t;
      *end = '\n';
      scan = (size_t)(end - buf) + 2;
    }
    if (n + 1 >= cap)
      break;
  }
  if (!buf || !strstr(buf, "data: [DONE]")) {
    snprintf(err, errlen, "HTTP stream did not end with [DONE]: %.200s", buf ? buf : "(oom)");
    rc = rc ? rc : -EPROTO;
  }
  free(buf);
  close(fd);
  return rc;
}

int main(int argc, char **argv)
{
  int runs = 15, tokens = 64;
  const char *model = "models/demo";
  char exe[PATH_MAX] = "";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--runs") && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
      tokens = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--model") && i + 1 < argc)
      model = argv[++i];
    else if (!strcmp(argv[i], "--exe") && i + 1 < argc)
      snprintf(exe, sizeof exe, "%s", argv[++i]);
    else {
      fprintf(stderr, "usage: bench_api [--runs 3..200] [--tokens 2..%d] [--model DIR] "
                      "[--exe exo-actors]\n", MAX_TOKENS);
      return 2;
    }
  }
  if (runs < 3 || runs > 200 || tokens < 2 || tokens > MAX_TOKENS) {
    fprintf(stderr, "bench_api: --runs 3..200, --tokens 2..%d\n", MAX_TOKENS);
    return 2;
  }
  if (!exe[0]) { /* the exo-actors of this build: ../actors/exo-actors from bench/ */
    char self[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0)
      return 1;
    self[l] = '\0';
    snprintf(exe, sizeof exe, "%s/../actors/exo-actors", dirname(self));
  }
  char model_id[256], mcopy[PATH_MAX];
  snprintf(mcopy, sizeof mcopy, "%s", model);
  snprintf(model_id, sizeof model_id, "%s", basename(mcopy));

  char err[512];
  int api_port = 0, rc, bad = 0;
  struct exo_local_cluster *c = NULL;
  struct exo_client *cl = NULL;
  struct timing *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
  double *ttft_c = calloc((size_t)runs, sizeof(double)), *ttft_h = calloc((size_t)runs, sizeof(double));
  double *tok_c = calloc((size_t)runs, sizeof(double)), *tok_h = calloc((size_t)runs, sizeof(double));
  snprintf(err, sizeof err, "out of memory");
  if (!a || !b || !ttft_c || !ttft_h || !tok_c || !tok_h)
    goto fail;
  struct exo_local_cluster_opts o = {.exe = exe, .n_nodes = 2, .first_id = 1, .model = model,
                                     .api = 1};
  uint32_t n1 = 0;
  if ((rc = exo_local_cluster_start(&o, &c, err, sizeof err)) ||
      (rc = exo_client_new(NULL, &cl, err, sizeof err)))
    goto fail;
  api_port = exo_local_cluster_api_port(c, 0);
  for (double t0 = now_us();;) {
    if (exo_client_connect(cl, exo_local_cluster_addr(c, 0), 100, &n1, err, sizeof err) == 0)
      break;
    if ((rc = exo_local_cluster_check(c, err, sizeof err)))
      goto fail;
    if (now_us() - t0 > 30e6) {
      rc = -ETIMEDOUT;
      goto fail;
    }
  }
  /* warm-up until both paths answer (the partition map goes live after the HELLOs) */
  for (int w = 0, ok = 0; ok < 2; w++) {
    ok = run_client(cl, n1, tokens, a, err, sizeof err) == 0 &&
                 run_http(api_port, model_id, tokens, b, err, sizeof err) == 0
             ? ok + 1
             : 0;
    if (w > 300) {
      rc = -ETIMEDOUT;
      goto fail;
    }
    if (!ok)
      usleep(100000);
  }
  for (int r = 0; r < runs; r++) { /* alternating, so drift hits both alike */
    if ((rc = run_client(cl, n1, tokens, a, err, sizeof err)) ||
        (rc = run_http(api_port, model_id, tokens, b, err, sizeof err)))
      goto fail;
    if (a->n != tokens || b->n != tokens)
      bad++;
    ttft_c[r] = a->t[0];
    ttft_h[r] = b->t[0];
    tok_c[r] = (a->t[a->n - 1] - a->t[0]) / (a->n - 1);
    tok_h[r] = (b->t[b->n - 1] - b->t[0]) / (b->n - 1);
  }
  /* run r's two requests ran back to back: their difference, not the difference of the
   * two medians, is what HTTP adds (drift between runs cancels) */
  double *d_ttft = calloc((size_t)runs, sizeof(double)), *d_tok = calloc((size_t)runs, sizeof(double));
  for (int r = 0; d_ttft && d_tok && r < runs; r++)
    d_ttft[r] = ttft_h[r] - ttft_c[r], d_tok[r] = tok_h[r] - tok_c[r];
  double dt = d_ttft && d_tok ? median(d_ttft, runs) : 0, dp = d_ttft && d_tok ? median(d_tok, runs) : 0;
  /* median() sorted them: the quartiles say how far noise reaches */
  double q[4] = {0};
  if (d_ttft && d_tok)
    q[0] = d_ttft[runs / 4], q[1] = d_ttft[3 * runs / 4], q[2] = d_tok[runs / 4],
    q[3] = d_tok[3 * runs / 4];
  free(d_ttft), free(d_tok);
  double mc = median(ttft_c, runs), mh = median(ttft_h, runs);
  double pc = median(tok_c, runs), ph = median(tok_h, runs);
  printf("bench_api: 2 nodes, model %s, prompt %zu ids, %d greedy tokens, %d runs each "
         "(alternating), medians\n", model, N_PROMPT, tokens, runs);
  printf("%-22s %13s %13s %18s %8s\n", "", "client lib", "HTTP+SSE", "HTTP adds (paired)", "goal");
  printf("%-22s %11.1fus %11.1fus %16.1fus %6s %s\n", "time to first token", mc, mh, dt,
         "1000us", dt <= 1000 ? "met" : "MISSED");
  printf("%-22s %11.1fus %11.1fus %16.1fus %6s %s\n", "per-token latency", pc, ph, dp,
         "50us", dp <= 50 ? "met" : "MISSED");
  printf("paired differences, quartiles: first token %.1f..%.1fus, per token %.1f..%.1fus\n",
         q[0], q[1], q[2], q[3]);
  if (bad)
    printf("note: %d runs returned fewer than %d tokens\n", bad, tokens);
  rc = 0;
  goto out;
fail:
  fprintf(stderr, "bench_api: %s\n", err);
  rc = 1;
out:
  free(a), free(b), free(ttft_c), free(ttft_h), free(tok_c), free(tok_h);
  exo_client_free(cl);
  exo_local_cluster_free(c);
  return rc;
}
