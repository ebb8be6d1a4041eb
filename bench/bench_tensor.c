/* bench/bench_tensor.c: tensor-engine throughput at TinyLlama-1.1B shapes (f32), next to
 * this machine's limits measured in the same run: streaming read bandwidth (decode
 * roofline) and a large sgemm (prefill ceiling); plus peak RSS of a process that loads
 * only layers [0, 11). Not a test: run by hand, results in docs/BENCHMARKS.md.
 * Writes the random model once (tensor/model_writer.h) and reuses it on later runs. */
#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_common.h"
#include "tensor/forward.h"
#include "tensor/model.h"

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- memory read bandwidth ---------------------------------------------------- */

typedef float exo_v16 __attribute__((vector_size(64)));

struct bw_arg {
  const float *p;
  size_t n; /* floats, a multiple of 64 */
  float sum;
};

/* 4 independent 64-byte accumulators keep enough loads in flight to saturate memory. */
__attribute__((target("avx512f"))) static void *bw_read_avx512(void *varg)
{
  struct bw_arg *a = varg;
  exo_v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  const exo_v16 *v = (const exo_v16 *)a->p;
  for (size_t i = 0; i < a->n / 16; i += 4) {
    s0 += v[i];
    s1 += v[i + 1];
    s2 += v[i + 2];
    s3 += v[i + 3];
  }
  exo_v16 s = s0 + s1 + s2 + s3;
  float t = 0;
  for (int i = 0; i < 16; i++)
    t += s[i];
  a->sum = t;
  return NULL;
}

/* GB/s of reading buf[n] with n_threads threads, best of reps. */
static double bandwidth(const float *buf, size_t n, int n_threads, int reps)
{
  double best = 0.0;
  for (int r = 0; r < reps; r++) {
    pthread_t th[8];
    struct bw_arg args[8];
    const size_t per = n / n_threads / 64 * 64;
    double t0 = now();
    for (int i = 0; i < n_threads; i++) {
      args[i] = (struct bw_arg){.p = buf + per * i, .n = per};
      pthread_create(&th[i], NULL, bw_read_avx512, &args[i]);
    }
    for (int i = 0; i < n_threads; i++)
      pthread_join(th[i], NULL);
    double gbs = (double)per * n_threads * sizeof(float) / (now() - t0) / 1e9;
    if (gbs > best)
      best = gbs;
  }
  return best;
}

/* ---- sgemm peak --------------------------------------------------------------- */

static double sgemm_gflops(int n, int reps)
{
  float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float)),
        *c = malloc((size_t)n * n * sizeof(float));
  if (!a || !b || !c)
    exit(1);
  for (size_t i = 0; i < (size_t)n * n; i++) {
    a[i] = (float)(i % 7) * 0.1f;
    b[i] = (float)(i % 5) * 0.1f;
  }
  double best = 0.0;
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    /* Same shape class as a projection: X[n,k] . W[m,k]^T. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double g = 2.0 * n * n * n / (now() - t0) / 1e9;
    if (g > best)
      best = g;
  }
  free(a);
  free(b);
  free(c);
  return best;
}

/* ---- the model ---------------------------------------------------------------- */

static int64_t layer_matrix_params(const struct exo_model_config *c)
{
  const int64_t h = c->hidden_size, qd = (int64_t)c->n_heads * c->head_dim,
                kvd = (int64_t)c->n_kv_heads * c->head_dim, ff = c->intermediate_size;
  return h * qd * 2 + h * kvd * 2 + 3 * h * ff;
}

struct run_stats {
  double prefill_tps, prefill_gflops, decode_tps, decode_best_tps;
};

static int cmp_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Prefill of prompt_len tokens (best of 2, each on a fresh cache), then decode_steps
 * single-token steps timed one by one; decode rate from the median step (the machine is
 * shared: a median ignores the steps another process stole). */
static int run_model(const struct exo_model *m, int prompt_len, int decode_steps,
                     struct run_stats *st)
{
  const struct exo_model_config *c = &m->cfg;
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *s = NULL;
  char err[256];
  const int n_tok = prompt_len + decode_steps + 1;
  int32_t *tok = malloc((size_t)n_tok * sizeof *tok);
  float *logits = malloc((size_t)c->vocab_size * sizeof(float));
  double *steps = malloc((size_t)(decode_steps + 1) * sizeof *steps);
  if (!tok || !logits || !steps || exo_forward_kv_new(m, n_tok, 4096, &kv) ||
      exo_forward_scratch_new(m, prompt_len, n_tok, &s, err, sizeof err))
    return -1;
  for (int i = 0; i < n_tok; i++)
    tok[i] = (int32_t)((i * 7919u + 13u) % (unsigned)c->vocab_size);
  struct exo_forward_seq seq;
  struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = tok, .logits_last_only = 1};
  double tp = 1e30;
  for (int rep = 0; rep < 2; rep++) {
    exo_kv_cache_truncate(kv, 0);
    seq = (struct exo_forward_seq){.kv = kv, .n_tokens = prompt_len, .start_pos = 0};
    b.tokens = tok;
    double t0 = now();
    if (exo_forward(m, &b, logits, s, err, sizeof err)) {
      fprintf(stderr, "forward: %s\n", err);
      return -1;
    }
    if (now() - t0 < tp)
      tp = now() - t0;
  }
  st->prefill_tps = prompt_len / tp;
  /* Matrix FLOPs only (attention at 128 positions is < 1% of them); the LM head runs
   * for the last position only. */
  st->prefill_gflops = 2.0 * ((double)layer_matrix_params(c) * c->n_layers * prompt_len +
                              (double)c->vocab_size * c->hidden_size) / tp / 1e9;
  for (int i = 0; i < decode_steps; i++) {
    seq = (struct exo_forward_seq){.kv = kv, .n_tokens = 1, .start_pos = prompt_len + i};
    b.tokens = tok + prompt_len + i;
    double t0 = now();
    if (exo_forward(m, &b, logits, s, err, sizeof err))
      return -1;
    steps[i] = now() - t0;
  }
  qsort(steps, (size_t)decode_steps, sizeof *steps, cmp_double);
  st->decode_tps = 1.0 / steps[decode_steps / 2];
  st->decode_best_tps = 1.0 / steps[0];
  exo_forward_scratch_free(s);
  exo_kv_cache_free(kv);
  free(steps);
  free(tok);
  free(logits);
  return 0;
}

static double median(const double *v, int n)
{
  double t[16];
  memcpy(t, v, (size_t)n * sizeof *t);
  qsort(t, (size_t)n, sizeof *t, cmp_double);
  return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* The same model with every matrix copied into anonymous memory on 2 MiB pages. */
static void *anon_copy(const struct exo_weight *w)
{
  const size_t n = (size_t)w->rows * w->cols * sizeof(float), huge = (size_t)2 << 20;
  const size_t al = (n + huge - 1) & ~(huge - 1);
  void *p = aligned_alloc(huge, al);
  if (!p)
    return NULL;
  madvise(p, al, MADV_HUGEPAGE);
  memcpy(p, w->data, n);
  return p;
}

static struct exo_model *anon_model(const struct exo_model *m, void ***bufs, int *n_bufs)
{
  struct exo_model *a = malloc(sizeof *a);
  const int L = m->layer_end - m->layer_begin;
  struct exo_layer_weights *layers = malloc((size_t)L * sizeof *layers);
  void **b = calloc((size_t)(7 * L + 1), sizeof *b);
  if (!a || !layers || !b)
    return NULL;
  *a = *m;
  memcpy(layers, m->layers, (size_t)L * sizeof *layers);
  a->layers = layers;
  int k = 0;
  for (int l = 0; l < L; l++) {
    struct exo_weight *w[7] = {&layers[l].wq, &layers[l].wk, &layers[l].wv, &layers[l].wo,
                               &layers[l].w_gate, &layers[l].w_up, &layers[l].w_down};
    for (int i = 0; i < 7; i++) {
      if (!(b[k] = anon_copy(w[i])))
        return NULL;
      w[i]->data = b[k++];
    }
  }
  if (!(b[k] = anon_copy(&a->lm_head)))
    return NULL;
  a->lm_head.data = b[k++];
  *bufs = b;
  *n_bufs = k;
  return a;
}

/* Child process: loads [0, 11), runs a short prefill so every weight page is touched,
 * exits; the parent reads its peak RSS. */
static long peak_rss_kib_of_range(const char *dir, int a, int b)
{
  pid_t pid = fork();
  if (pid == 0) {
    struct exo_model *m = NULL;
    char err[512];
    if (exo_model_load(dir, a, b, &m, err, sizeof err)) {
      fprintf(stderr, "rss child: %s\n", err);
      _exit(1);
    }
    struct exo_kv_cache *kv = NULL;
    struct exo_forward_scratch *s = NULL;
    int32_t tok[4] = {1, 2, 3, 4};
    float *out = malloc((size_t)4 * m->cfg.hidden_size * sizeof(float));
    if (!out || exo_forward_kv_new(m, 4, 4, &kv) ||
        exo_forward_scratch_new(m, 4, 4, &s, err, sizeof err))
      _exit(1);
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = 4, .start_pos = 0};
    struct exo_forward_batch bt = {.n_seqs = 1, .seqs = &seq, .tokens = tok};
    _exit(exo_forward(m, &bt, out, s, err, sizeof err) ? 1 : 0);
  }
  int status;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status))
    return -1;
  struct rusage ru;
  getrusage(RUSAGE_CHILDREN, &ru);
  return ru.ru_maxrss;
}

int main(int argc, char **argv)
{
  const char *dir = EXO_BENCH_TINYLLAMA_DIR;
  int decode_steps = 8, prompt_len = 128, rounds = 3, with_anon = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--dir") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--decode-steps") && i + 1 < argc)
      decode_steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--anon"))
      with_anon = 1;
    else
      decode_steps = 0; /* usage below */
  }
  if (decode_steps < 1 || decode_steps > 1000 || rounds < 1 || rounds > 9) {
    fprintf(stderr, "usage: bench_tensor [--dir DIR] [--decode-steps 1..1000] [--rounds 1..9] "
                    "[--anon]\n  --anon also runs a copy of the weights in anonymous 2 MiB "
                    "pages (+4 GB of memory)\n");
    return 2;
  }
  char err[512];
  if (exo_bench_tinyllama(dir, err, sizeof err)) {
    fprintf(stderr, "write: %s\n", err);
    return 1;
  }

  /* Peak RSS of a half-model process, before this process maps anything itself. */
  long rss_kib = peak_rss_kib_of_range(dir, 0, 11);

  struct exo_model *m = NULL;
  double t0 = now();
  if (exo_model_load(dir, 0, -1, &m, err, sizeof err)) {
    fprintf(stderr, "load: %s\n", err);
    return 1;
  }
  const double t_load = now() - t0;
  const struct exo_model_config *c = &m->cfg;
  const double layer_bytes = (double)layer_matrix_params(c) * 4 + 2.0 * c->hidden_size * 4;
  const double token_bytes = layer_bytes * c->n_layers + (double)c->vocab_size * c->hidden_size * 4;
  const double half_bytes = layer_bytes * 11 + (double)c->vocab_size * c->hidden_size * 4;

  /* Machine limits in this same run. */
  const size_t bw_n = (size_t)1 << 28; /* 1 GiB of floats, 32x L3 */
  float *buf = malloc(bw_n * sizeof(float));
  if (!buf)
    return 1;
  for (size_t i = 0; i < bw_n; i++)
    buf[i] = (float)(i & 1023);
  /* Rounds interleave machine limits and model runs, so a burst of load from other
   * processes hits both; each figure is the median over rounds. */
  enum { ROUNDS_MAX = 9 };
  double bw[3][ROUNDS_MAX], peak[3][ROUNDS_MAX];
  struct run_stats rs[2][3][ROUNDS_MAX];
  void **bufs = NULL;
  int n_bufs = 0, n_var = 1;
  struct exo_model *variant[2] = {m, NULL};
  if (with_anon) {
    if (!(variant[1] = anon_model(m, &bufs, &n_bufs))) {
      fprintf(stderr, "out of memory for the anonymous copy\n");
      return 1;
    }
    n_var = 2;
  }
  /* Warm-up: fault every weight page in once, so timings read memory, not disk. */
  struct run_stats warm;
  for (int v = 0; v < n_var; v++)
    run_model(variant[v], 4, 1, &warm);
  for (int r = 0; r < rounds; r++)
    for (int th = 1; th <= 2; th++) {
      bw[th][r] = bandwidth(buf, bw_n, th, 3);
      openblas_set_num_threads(th);
      peak[th][r] = sgemm_gflops(2048, 2);
      for (int v = 0; v < n_var; v++)
        if (run_model(variant[v], prompt_len, decode_steps, &rs[v][th][r])) {
          fprintf(stderr, "run failed\n");
          return 1;
        }
    }
  free(buf);

  printf("model: %s hidden %d, intermediate %d, layers %d, heads %d/%d, vocab %d, f32; "
         "load %.2f s\n", dir, c->hidden_size, c->intermediate_size, c->n_layers, c->n_heads,
         c->n_kv_heads, c->vocab_size, t_load);
  printf("weight bytes read per decoded token: %.2f GB; decode = median step of %d after a "
         "%d-token prefill (best step: fastest of them); every figure the median of %d rounds\n", token_bytes / 1e9,
         decode_steps, prompt_len, rounds);
  printf("| threads | weights | read GB/s | decode roofline tok/s | decode tok/s | %% of roofline | "
         "best step tok/s | sgemm GFLOP/s | prefill tok/s (%d) | prefill GFLOP/s | %% of sgemm |\n",
         prompt_len);
  printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int th = 1; th <= 2; th++)
    for (int v = 0; v < n_var; v++) {
      double d[ROUNDS_MAX], db[ROUNDS_MAX], pt[ROUNDS_MAX], pg[ROUNDS_MAX];
      for (int r = 0; r < rounds; r++) {
        d[r] = rs[v][th][r].decode_tps;
        db[r] = rs[v][th][r].decode_best_tps;
        pt[r] = rs[v][th][r].prefill_tps;
        pg[r] = rs[v][th][r].prefill_gflops;
      }
      const double b = median(bw[th], rounds), pk = median(peak[th], rounds),
                   dec = median(d, rounds), ptps = median(pt, rounds),
                   pgf = median(pg, rounds), roof = b * 1e9 / token_bytes;
      const double best = median(db, rounds);
      printf("| %d | %s | %.1f | %.2f | %.2f | %.0f%% | %.2f | %.0f | %.1f | %.0f | %.0f%% |\n",
             th, v ? "anon 2 MiB copy" : "loader (mmap)", b, roof, dec, 100.0 * dec / roof,
             best, pk, ptps, pgf, 100.0 * pgf / pk);
    }
  printf("peak RSS of a process loading layers [0, 11) (+ embeddings) and running them: "
         "%.2f GB; those weights: %.2f GB (ratio %.2f, goal <= 1.20)\n",
         rss_kib * 1024.0 / 1e9, half_bytes / 1e9, rss_kib * 1024.0 / half_bytes);
  for (int i = 0; i < n_bufs; i++)
    free(bufs[i]);
  free(bufs);
  if (variant[1]) {
    free(variant[1]->layers);
    free(variant[1]);
  }
  exo_model_free(m);
  return 0;
}
