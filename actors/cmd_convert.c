/* actors/cmd_convert.c: `exo-actors convert SRC_DIR --to gguf|safetensors --dtype D -o OUT`,
 * rewrites a Hugging Face model directory as one GGUF file (f32, f16, bf16, q8_0, q4_0)
 * or as safetensors of another dtype (f32, f16, bf16) through tensor/convert.h.
 * Owns only argument parsing and messages. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "actors/commands.h"
#include "tensor/convert.h"
#include "tensor/dtype.h"

static void exo_convert_usage(FILE *out)
{
  fprintf(out,
          "usage: exo-actors convert SRC_DIR --to gguf|safetensors --dtype D -o OUT\n"
          "  gguf: D is f32, f16, bf16, q8_0 or q4_0; OUT is a file (tokenizer included)\n"
          "  safetensors: D is f32, f16 or bf16; OUT is a directory\n"
          "Block formats keep norms in f32 and matrices whose width is not a multiple of\n"
          "32 in f16 (reported).\n");
}

int exo_cmd_convert(int argc, char **argv)
{
  static const struct option opts[] = {
    {"to", required_argument, NULL, 't'},
    {"dtype", required_argument, NULL, 'd'},
    {"out", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  static const struct {
    const char *name;
    enum exo_dtype dt;
  } dts[] = {{"f32", EXO_DTYPE_F32}, {"f16", EXO_DTYPE_F16}, {"bf16", EXO_DTYPE_BF16},
             {"q8_0", EXO_DTYPE_Q8_0}, {"q4_0", EXO_DTYPE_Q4_0}};
  const char *to = NULL, *dtype = NULL, *out = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
    switch (c) {
    case 't': to = optarg; break;
    case 'd': dtype = optarg; break;
    case 'o': out = optarg; break;
    case 'h': exo_convert_usage(stdout); return 0;
    default: exo_convert_usage(stderr); return 2;
    }
  }
  if (optind != argc - 1 || !to || !dtype || !out) {
    exo_convert_usage(stderr);
    return 2;
  }
  int gguf = !strcmp(to, "gguf");
  if (!gguf && strcmp(to, "safetensors")) {
    fprintf(stderr, "convert: --to '%s' (expected gguf or safetensors)\n", to);
    return 2;
  }
  int found = -1;
  for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++)
    if (!strcmp(dtype, dts[i].name))
      found = (int)i;
  if (found < 0 || (!gguf && dts[found].dt > EXO_DTYPE_BF16)) {
    fprintf(stderr, "convert: --dtype '%s' (expected %s)\n", dtype,
            gguf ? "f32, f16, bf16, q8_0 or q4_0" : "f32, f16 or bf16");
    return 2;
  }
  char err[512];
  struct exo_convert_stats st;
  int rc = gguf ? exo_convert_to_gguf(argv[optind], out, dts[found].dt, &st, err, sizeof err)
                : exo_convert_to_safetensors(argv[optind], out, dts[found].dt, &st, err,
                                             sizeof err);
  if (rc) {
    fprintf(stderr, "convert: %s\n", err);
    return 1;
  }
  printf("wrote %s: %d tensors, %.1f MB of weights as %s", out, st.n_tensors, st.bytes / 1e6,
         exo_dtype_name(dts[found].dt));
  if (st.n_fallback)
    printf(" (%d matrices as F16: width not a multiple of 32)", st.n_fallback);
  printf("\n");
  return 0;
}
