/* actors/cmd_generate.c: `exo-actors generate`, single-node text generation: load the
 * whole model, prefill the prompt, decode with the KV cache, sample, stream.
 * Owns argument parsing, the generation loop and its timing line; the numerics are
 * tensor/forward.h and tensor/sample.h. Must never put anything but generated output
 * on stdout (scripts read it); messages and timing go to stderr. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actors/commands.h"
#include "actors/default_model.h"
#include "actors/kinds.h"
#include "actors/local_cluster.h"
#include "runtime/config.h"
#include "tensor/forward.h"
#include "tensor/model.h"
#include "tensor/sample.h"
#include "tensor/tokenizer.h"

#define EXO_GEN_DEFAULT_MAX_TOKENS 64
#define EXO_GEN_MAX_PROMPT_IDS 1000000

static void exo_generate_usage(FILE *out)
{
  fprintf(out,
          "usage: exo-actors generate [--model DIR] (--prompt TEXT | --prompt-ids N,N,...)\n"
          "         [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
          "         [--repetition-penalty R] [--seed S] [--ids] [--threads N]\n"
          "         [--nodes K] [--partition a:b,b:c,...] [--config FILE] [--stats]\n"
          "Generates on this node alone. Text streams to stdout as tokens arrive; with --ids\n"
          "stdout is the generated ids, space-separated, on one line. Timing goes to stderr.\n"
          "Defaults: --model models/demo (next to the source tree or binary), --max-tokens %d,\n"
          "--temperature 0 (greedy), --top-p 1, --top-k 0, --min-p 0, --seed 0.\n"
          "--nodes K / --partition: start K `exo-actors run` node processes on loopback, split\n"
          "the layers (evenly, or the given ranges), generate across them, stop them; --stats\n"
          "prints per step the compute per node, transfer per hop and orchestration overhead.\n"
          "--config FILE: generate through the running cluster of the node FILE configures\n"
          "(`exo-actors run FILE` elsewhere): connects to its listen address, its origin\n"
          "routes the request through the cluster's live partition map.\n",
          EXO_GEN_DEFAULT_MAX_TOKENS);
}

static int exo_gen_bad(const char *flag, const char *what, const char *got)
{
  fprintf(stderr, "exo-actors generate: %s: expected %s, got '%s'\n", flag, what, got);
  return -EINVAL;
}

static int exo_gen_int(const char *flag, const char *s, long lo, long hi, const char *what,
                       int *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return exo_gen_bad(flag, what, s);
  *out = (int)v;
  return 0;
}

static int exo_gen_float(const char *flag, const char *s, double lo, double hi, int lo_open,
                         const char *what, float *out)
{
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
    return exo_gen_bad(flag, what, s);
  *out = (float)v;
  return 0;
}

/* "508,51,258" -> ids; every item a decimal id in [0, INT32_MAX]. */
static int exo_gen_parse_ids(const char *s, int32_t **ids, size_t *n)
{
  size_t cap = 1;
  for (const char *p = s; *p; p++)
    cap += *p == ',';
  if (cap > EXO_GEN_MAX_PROMPT_IDS)
    return exo_gen_bad("--prompt-ids", "at most 1000000 ids", "(too many)");
  int32_t *v = malloc(cap * sizeof *v);
  if (!v)
    return -ENOMEM;
  size_t k = 0;
  const char *p = s;
  for (;;) {
    char *end;
    errno = 0;
    if (*p < '0' || *p > '9') {
      free(v);
      return exo_gen_bad("--prompt-ids", "comma-separated non-negative integers", s);
    }
    long long x = strtoll(p, &end, 10);
    if (errno || x > INT32_MAX || (*end && *end != ',')) {
      free(v);
      return exo_gen_bad("--prompt-ids", "comma-separated non-negative integers", s);
    }
    v[k++] = (int32_t)x;
    if (!*end)
      break;
    p = end + 1;
  }
  *ids = v;
  *n = k;
  return 0;
}

static double exo_gen_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int exo_gen_is_eos(const struct exo_model_config *c, int32_t id)
{
  for (int i = 0; i < c->n_eos_ids; i++)
    if (c->eos_token_ids[i] == id)
      return 1;
  return 0;
}

/* Prints ids as they arrive from the node processes (on the origin's loop thread, while
 * the main thread waits). */
struct exo_gen_printer {
  int ids_only;
  struct exo_token_stream *stream;
  char *chunk;
  size_t chunk_cap;
  int n;
};

static void exo_gen_print_token(void *arg, int32_t id)
{
  struct exo_gen_printer *p = arg;
  if (p->ids_only) {
    printf(p->n++ ? " %" PRId32 : "%" PRId32, id);
  } else {
    size_t n = 0;
    if (exo_token_stream_push(p->stream, id, p->chunk, p->chunk_cap, &n) == 0 && n)
      fwrite(p->chunk, 1, n, stdout);
  }
  fflush(stdout);
}

int exo_cmd_generate(int argc, char **argv)
{
  static const struct option opts[] = {
    {"model", required_argument, NULL, 'm'},
    {"prompt", required_argument, NULL, 'p'},
    {"prompt-ids", required_argument, NULL, 'P'},
    {"max-tokens", required_argument, NULL, 'n'},
    {"temperature", required_argument, NULL, 't'},
    {"top-p", required_argument, NULL, 'u'},
    {"top-k", required_argument, NULL, 'k'},
    {"min-p", required_argument, NULL, 'M'},
    {"repetition-penalty", required_argument, NULL, 'r'},
    {"seed", required_argument, NULL, 's'},
    {"ids", no_argument, NULL, 'i'},
    {"threads", required_argument, NULL, 'T'},
    {"nodes", required_argument, NULL, 'K'},
    {"partition", required_argument, NULL, 'A'},
    {"stats", no_argument, NULL, 'S'},
    {"config", required_argument, NULL, 'C'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *model_dir = NULL, *prompt = NULL, *prompt_ids = NULL;
  int max_tokens = EXO_GEN_DEFAULT_MAX_TOKENS, threads = 0, ids_only = 0;
  int gen_nodes = 0, gen_stats = 0;
  const char *gen_partition = NULL, *gen_config = NULL;
  struct exo_sample_params sp;
  exo_sample_params_default(&sp);

  opterr = 0;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
    int rc = 0;
    switch (c) {
    case 'm': model_dir = optarg; break;
    case 'p': prompt = optarg; break;
    case 'P': prompt_ids = optarg; break;
    case 'n':
      rc = exo_gen_int("--max-tokens", optarg, 1, 1000000, "a positive integer", &max_tokens);
      break;
    case 't':
      rc = exo_gen_float("--temperature", optarg, 0.0, 1e6, 0, "a number >= 0",
                         &sp.temperature);
      break;
    case 'u':
      rc = exo_gen_float("--top-p", optarg, 0.0, 1.0, 1, "a number in (0, 1]", &sp.top_p);
      break;
    case 'k':
      rc = exo_gen_int("--top-k", optarg, 0, INT_MAX, "a non-negative integer", &sp.top_k);
      break;
    case 'M':
      rc = exo_gen_float("--min-p", optarg, 0.0, 1.0, 0, "a number in [0, 1]", &sp.min_p);
      break;
    case 'r':
      rc = exo_gen_float("--repetition-penalty", optarg, 0.0, 1e6, 1, "a number > 0",
                         &sp.repetition_penalty);
      break;
    case 's': {
      char *end;
      errno = 0;
      unsigned long long v = strtoull(optarg, &end, 10);
      if (errno || end == optarg || *end || optarg[0] == '-')
        rc = exo_gen_bad("--seed", "a non-negative integer below 2^64", optarg);
      sp.seed = v;
      break;
    }
    case 'i': ids_only = 1; break;
    case 'K': /* --nodes/--partition/--stats: actors/local_cluster.c (helper p) */
      rc = exo_gen_int("--nodes", optarg, 1, EXO_LOCAL_CLUSTER_MAX, "1..16", &gen_nodes);
      break;
    case 'A': gen_partition = optarg; break;
    case 'C': gen_config = optarg; break;
    case 'S': gen_stats = 1; break;
    case 'T':
      rc = exo_gen_int("--threads", optarg, 1, 1024, "a positive integer", &threads);
      break;
    case 'h': exo_generate_usage(stdout); return 0;
    case ':':
      fprintf(stderr, "exo-actors generate: %s: missing value\n", argv[optind - 1]);
      return 2;
    default:
      fprintf(stderr, "exo-actors generate: unknown option '%s'\n", argv[optind - 1]);
      exo_generate_usage(stderr);
      return 2;
    }
    if (rc)
      return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "exo-actors generate: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  if (!!prompt == !!prompt_ids) {
    fprintf(stderr, "exo-actors generate: give exactly one of --prompt TEXT or --prompt-ids "
                    "N,N,...\n");
    return 2;
  }
  struct exo_config *node_cfg = NULL;
  char connect[256] = "";
  if (gen_config) {
    char cerr[512];
    if (gen_nodes || gen_partition) {
      fprintf(stderr, "exo-actors generate: --config drives a running cluster; it does not go "
                      "with --nodes or --partition\n");
      return 2;
    }
    if (exo_config_load(gen_config, exo_kind_names, &node_cfg, cerr, sizeof cerr)) {
      fprintf(stderr, "exo-actors generate: --config: %s\n", cerr);
      return 2;
    }
    if (!node_cfg->listen || strncmp(node_cfg->listen, "tcp://", 6)) {
      fprintf(stderr, "exo-actors generate: --config %s: the node has no tcp `listen` address "
                      "to reach it at\n", gen_config);
      exo_config_free(node_cfg);
      return 2;
    }
    /* a node listening on every interface is reached over loopback from here */
    const char *host = node_cfg->listen + 6;
    if (!strncmp(host, "0.0.0.0:", 8) || !strncmp(host, "*:", 2))
      snprintf(connect, sizeof connect, "tcp://127.0.0.1%s", strchr(host, ':'));
    else
      snprintf(connect, sizeof connect, "%s", node_cfg->listen);
    if (!model_dir)
      model_dir = node_cfg->model;
  }
  char default_dir[PATH_MAX];
  if (!model_dir) {
    if (exo_default_model_dir(default_dir, sizeof default_dir)) {
      fprintf(stderr, "exo-actors generate: no --model given and no models/demo found (in the "
                      "working directory or next to the binary); pass --model DIR\n");
      exo_config_free(node_cfg);
      return 2;
    }
    model_dir = default_dir;
  }

  int status = 1;
  char err[512] = "";
  struct exo_model *m = NULL;
  struct exo_tokenizer *tok = NULL;
  struct exo_token_stream *stream = NULL;
  struct exo_kv_cache *kv = NULL;
  struct exo_forward_scratch *scratch = NULL;
  struct exo_sampler *sampler = NULL;
  int32_t *hist = NULL;
  float *logits = NULL;
  char *chunk = NULL;
  size_t n_prompt = 0, chunk_cap = 0;

  if (prompt_ids) {
    int32_t *ids;
    if (exo_gen_parse_ids(prompt_ids, &ids, &n_prompt))
      return 2;
    hist = ids;
  }
  if (threads)
    openblas_set_num_threads(threads);
  const bool on_cluster = gen_nodes || gen_partition || gen_config;
  struct exo_model_config mcfg;
  int rc = on_cluster ? exo_model_config_load(model_dir, &mcfg, err, sizeof err)
                      : exo_model_load(model_dir, 0, -1, &m, err, sizeof err);
  if (rc) {
    fprintf(stderr, "exo-actors generate: cannot load model: %s\n", err);
    goto out;
  }
  if (m)
    mcfg = m->cfg;
  if (prompt || !ids_only) {
    if ((rc = exo_model_tokenizer_load(model_dir, &tok, err, sizeof err))) {
      fprintf(stderr, "exo-actors generate: cannot load tokenizer: %s%s\n", err,
              rc == -ENOENT && !prompt ? " (pass --ids to print token ids without one)" : "");
      goto out;
    }
    if (exo_token_stream_new(tok, 1, &stream))
      goto oom;
    chunk_cap = exo_token_stream_max_chunk(tok);
    if (!(chunk = malloc(chunk_cap)))
      goto oom;
  }
  if (prompt) {
    int32_t *ids;
    if ((rc = exo_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n_prompt))) {
      fprintf(stderr, "exo-actors generate: --prompt: %s\n",
              rc == -EILSEQ ? "not valid UTF-8" : "cannot encode");
      goto out;
    }
    hist = ids;
  }
  const struct exo_model_config *cfg = &mcfg;
  if (n_prompt == 0) {
    fprintf(stderr, "exo-actors generate: the prompt is empty (no tokens)\n");
    goto out;
  }
  for (size_t i = 0; i < n_prompt; i++)
    if (hist[i] >= cfg->vocab_size) {
      fprintf(stderr, "exo-actors generate: prompt id %" PRId32 " (item %zu) outside the "
                      "vocabulary [0, %d)\n", hist[i], i + 1, cfg->vocab_size);
      goto out;
    }
  const int max_pos = cfg->max_position_embeddings > 0 ? cfg->max_position_embeddings : 4096;
  if ((long)n_prompt >= max_pos) {
    fprintf(stderr, "exo-actors generate: the prompt has %zu tokens; the model's context is "
                    "%d positions\n", n_prompt, max_pos);
    goto out;
  }
  if (prompt && !ids_only) { /* the reader sees the continuation after its prompt; stdout */
    fputs(prompt, stderr);   /* keeps only generated text, so pipes and tests get just that */
    fflush(stderr);
  }
  if (on_cluster) {
    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[el > 0 ? el : 0] = '\0';
    struct exo_gen_printer pr = {ids_only, stream, chunk, chunk_cap, 0};
    struct exo_cluster_gen_opts co = {.exe = exe, .model_dir = model_dir, .n_nodes = gen_nodes,
                                      .partition = gen_partition, .stats = gen_stats,
                                      .connect = gen_config ? connect : NULL,
                                      .key_path = node_cfg ? node_cfg->key_path : NULL,
                                      .on_token = exo_gen_print_token, .arg = &pr};
    int32_t *out_ids = NULL;
    size_t n_out = 0;
    double tc = exo_gen_now();
    rc = exo_cluster_generate(&co, hist, n_prompt, &sp, (uint32_t)max_tokens, &out_ids, &n_out,
                              err, sizeof err);
    free(out_ids);
    if (rc) {
      fprintf(stderr, "\nexo-actors generate: %s\n", err);
      goto out;
    }
    size_t n = 0;
    if (!ids_only && exo_token_stream_flush(stream, chunk, chunk_cap, &n) == 0 && n)
      fwrite(chunk, 1, n, stdout);
    printf("\n");
    fflush(stdout);
    int n_procs = gen_nodes;
    if (gen_partition) { /* one range per node process */
      n_procs = 1;
      for (const char *c = gen_partition; *c; c++)
        n_procs += *c == ',';
    }
    if (gen_config)
      fprintf(stderr, "generated %zu tokens through the cluster of %s in %.1f ms\n", n_out,
              connect, (exo_gen_now() - tc) * 1e3);
    else
      fprintf(stderr, "generated %zu tokens on %d node processes in %.1f ms (incl. start-up)\n",
              n_out, n_procs, (exo_gen_now() - tc) * 1e3);
    status = 0;
    goto out;
  }
  int32_t *grown = realloc(hist, (n_prompt + (size_t)max_tokens) * sizeof *hist);
  if (!grown)
    goto oom;
  hist = grown;
  if (exo_forward_kv_new(m, (int)n_prompt + 1, max_pos, &kv) ||
      exo_sampler_new(cfg->vocab_size, &sampler) ||
      !(logits = malloc((size_t)cfg->vocab_size * sizeof *logits)))
    goto oom;
  if ((rc = exo_forward_scratch_new(m, (int)n_prompt, (int)n_prompt + max_tokens, &scratch, err,
                                    sizeof err))) {
    fprintf(stderr, "exo-actors generate: %s\n", err);
    goto out;
  }

  /* Prefill the prompt, then one token per step; request id 0, positions absolute. */
  double t0 = exo_gen_now(), t_prefill = 0.0;
  size_t n_hist = n_prompt;
  int n_new = 0, in_pos = 0, in_len = (int)n_prompt, stopped_ctx = 0;
  while (n_new < max_tokens) {
    if (in_pos + in_len > max_pos) {
      stopped_ctx = 1;
      break;
    }
    struct exo_forward_seq seq = {.kv = kv, .n_tokens = in_len, .start_pos = in_pos};
    struct exo_forward_batch b = {.n_seqs = 1, .seqs = &seq, .tokens = hist + in_pos,
                                  .logits_last_only = 1};
    if ((rc = exo_forward(m, &b, logits, scratch, err, sizeof err))) {
      fprintf(stderr, "exo-actors generate: forward: %s\n", err);
      goto out;
    }
    if (n_new == 0)
      t_prefill = exo_gen_now() - t0;
    int32_t id;
    if ((rc = exo_sampler_sample(sampler, &sp, logits, hist, n_hist, n_prompt, 0,
                                 (int64_t)n_hist, &id))) {
      fprintf(stderr, "exo-actors generate: sampling failed (%d)\n", rc);
      goto out;
    }
    hist[n_hist++] = id;
    n_new++;
    if (ids_only) {
      printf(n_new == 1 ? "%" PRId32 : " %" PRId32, id);
      fflush(stdout);
    } else {
      size_t n = 0;
      if (exo_token_stream_push(stream, id, chunk, chunk_cap, &n) == 0 && n) {
        fwrite(chunk, 1, n, stdout);
        fflush(stdout);
      }
    }
    if (exo_gen_is_eos(cfg, id))
      break;
    in_pos += in_len;
    in_len = 1;
  }
  const double t_total = exo_gen_now() - t0;
  if (ids_only) {
    printf("\n");
  } else {
    size_t n = 0;
    if (exo_token_stream_flush(stream, chunk, chunk_cap, &n) == 0 && n)
      fwrite(chunk, 1, n, stdout);
    printf("\n");
  }
  fflush(stdout);
  const double t_decode = t_total - t_prefill;
  fprintf(stderr,
          "prefill: %zu tokens in %.1f ms (%.1f tok/s); decode: %d tokens in %.1f ms "
          "(%.1f tok/s)%s\n",
          n_prompt, t_prefill * 1e3, t_prefill > 0 ? n_prompt / t_prefill : 0.0, n_new - 1,
          t_decode * 1e3, n_new > 1 && t_decode > 0 ? (n_new - 1) / t_decode : 0.0,
          stopped_ctx ? "; stopped: context full" : "");
  status = 0;
  goto out;
oom:
  fprintf(stderr, "exo-actors generate: out of memory\n");
out:
  free(chunk);
  free(logits);
  free(hist);
  exo_sampler_free(sampler);
  exo_forward_scratch_free(scratch);
  exo_kv_cache_free(kv);
  exo_token_stream_free(stream);
  exo_tokenizer_free(tok);
  exo_model_free(m);
  exo_config_free(node_cfg); /* after the last use of model_dir, which may point into it */
  return status;
}
