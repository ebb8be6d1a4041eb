/* actors/cmd_make_model.c: `exo-actors make-model`, writes a seeded random llama-family
 * model directory (tensor/model_writer.h) for tests and benchmarks at real shapes.
 * Owns only argument parsing and messages; never loads or runs the model. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/commands.h"
#include "tensor/model_writer.h"

static void exo_make_model_usage(FILE *out)
{
  fprintf(out,
          "usage: exo-actors make-model --out DIR --hidden H --intermediate I --layers L\n"
          "         --heads N --kv-heads K [--head-dim D] --vocab V [--dtype f32|f16|bf16]\n"
          "         [--seed S] [--arch llama|qwen2] [--tie] [--shards N] [--rope-theta T]\n"
          "         [--max-pos P]\n"
          "Writes config.json and model.safetensors (or N shards and\n"
          "model.safetensors.index.json) with seeded random weights, tensor by tensor.\n");
}

static int exo_parse_int(const char *opt, const char *s, int *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v > INT_MAX) {
    fprintf(stderr, "make-model: --%s '%s' is not a non-negative integer\n", opt, s);
    return -1;
  }
  *out = (int)v;
  return 0;
}

int exo_cmd_make_model(int argc, char **argv)
{
  static const struct option opts[] = {
    {"out", required_argument, NULL, 'o'},
    {"hidden", required_argument, NULL, 'H'},
    {"intermediate", required_argument, NULL, 'I'},
    {"layers", required_argument, NULL, 'L'},
    {"heads", required_argument, NULL, 'n'},
    {"kv-heads", required_argument, NULL, 'k'},
    {"head-dim", required_argument, NULL, 'd'},
    {"vocab", required_argument, NULL, 'V'},
    {"dtype", required_argument, NULL, 't'},
    {"seed", required_argument, NULL, 's'},
    {"arch", required_argument, NULL, 'a'},
    {"tie", no_argument, NULL, 'T'},
    {"shards", required_argument, NULL, 'S'},
    {"rope-theta", required_argument, NULL, 'r'},
    {"max-pos", required_argument, NULL, 'p'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  struct exo_model_spec spec = {.dtype = EXO_DTYPE_F32, .seed = 1, .n_shards = 1};
  const char *out = NULL;
  char *end;
  int c;
  optind = 1;
  opterr = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    int rc = 0;
    switch (c) {
    case 'o': out = optarg; break;
    case 'H': rc = exo_parse_int("hidden", optarg, &spec.hidden_size); break;
    case 'I': rc = exo_parse_int("intermediate", optarg, &spec.intermediate_size); break;
    case 'L': rc = exo_parse_int("layers", optarg, &spec.n_layers); break;
    case 'n': rc = exo_parse_int("heads", optarg, &spec.n_heads); break;
    case 'k': rc = exo_parse_int("kv-heads", optarg, &spec.n_kv_heads); break;
    case 'd': rc = exo_parse_int("head-dim", optarg, &spec.head_dim); break;
    case 'V': rc = exo_parse_int("vocab", optarg, &spec.vocab_size); break;
    case 'S': rc = exo_parse_int("shards", optarg, &spec.n_shards); break;
    case 'p': rc = exo_parse_int("max-pos", optarg, &spec.max_position_embeddings); break;
    case 'T': spec.tie_word_embeddings = 1; break;
    case 't':
      if (!strcmp(optarg, "f32"))
        spec.dtype = EXO_DTYPE_F32;
      else if (!strcmp(optarg, "f16"))
        spec.dtype = EXO_DTYPE_F16;
      else if (!strcmp(optarg, "bf16"))
        spec.dtype = EXO_DTYPE_BF16;
      else {
        fprintf(stderr, "make-model: --dtype '%s' (expected f32, f16 or bf16)\n", optarg);
        rc = -1;
      }
      break;
    case 'a':
      if (!strcmp(optarg, "llama"))
        spec.arch = EXO_MODEL_ARCH_LLAMA;
      else if (!strcmp(optarg, "qwen2"))
        spec.arch = EXO_MODEL_ARCH_QWEN2;
      else {
        fprintf(stderr, "make-model: --arch '%s' (expected llama or qwen2)\n", optarg);
        rc = -1;
      }
      break;
    case 's':
      errno = 0;
      spec.seed = strtoull(optarg, &end, 0);
      if (errno || end == optarg || *end || optarg[0] == '-') {
        fprintf(stderr, "make-model: --seed '%s' is not an unsigned integer\n", optarg);
        rc = -1;
      }
      break;
    case 'r':
      errno = 0;
      spec.rope_theta = strtod(optarg, &end);
      if (errno || end == optarg || *end || !(spec.rope_theta > 0)) {
        fprintf(stderr, "make-model: --rope-theta '%s' is not a positive number\n", optarg);
        rc = -1;
      }
      break;
    case 'h': exo_make_model_usage(stdout); return 0;
    default: exo_make_model_usage(stderr); return 2;
    }
    if (rc < 0)
      return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "make-model: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  const char *missing = !out ? "--out" : !spec.hidden_size ? "--hidden"
                        : !spec.intermediate_size ? "--intermediate"
                        : !spec.n_layers ? "--layers" : !spec.n_heads ? "--heads"
                        : !spec.n_kv_heads ? "--kv-heads" : !spec.vocab_size ? "--vocab" : NULL;
  if (missing) {
    fprintf(stderr, "make-model: %s is required\n", missing);
    exo_make_model_usage(stderr);
    return 2;
  }
  struct exo_model_write_stats st;
  char err[512] = "";
  if (exo_model_write_random(out, &spec, &st, err, sizeof err) < 0) {
    fprintf(stderr, "make-model: %s\n", err);
    return 1;
  }
  printf("make-model: wrote %s: %" PRIu64 " tensors, %" PRIu64 " parameters, %" PRIu64
         " bytes in %d file(s)\n", out, st.n_tensors, st.n_params, st.bytes, st.n_files);
  return 0;
}
