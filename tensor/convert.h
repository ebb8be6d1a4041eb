/* tensor/convert.h: rewriting a Hugging Face model directory as one GGUF file or as
 * safetensors of another dtype (exo-actors convert). Streams one tensor at a time:
 * never holds more than one converted tensor in memory. Knows nothing of actors. */
#ifndef EXO_TENSOR_CONVERT_H
#define EXO_TENSOR_CONVERT_H

#include <stddef.h>

#include "tensor/model.h"

struct exo_convert_stats {
  int n_tensors;
  int n_fallback; /* matrices a block dtype could not hold (cols % 32), written as F16 */
  double bytes;   /* tensor data bytes written */
};

/* src_dir (config.json, model.safetensors[.index.json], tokenizer.json) -> out_path, a
 * GGUF v3 file with llama.cpp's tensor names and metadata (architecture "llama" with
 * Q/K rows permuted as llama.cpp does, or "qwen2"), the tokenizer in
 * tokenizer.ggml.* keys, and matrices in dtype (F32, F16, BF16, Q8_0, Q4_0; vectors
 * F32). stats may be NULL. Returns 0 or a negative errno code with err naming the part. */
int exo_convert_to_gguf(const char *src_dir, const char *out_path, enum exo_dtype dtype,
                        struct exo_convert_stats *stats, char *err, size_t errlen);

/* src_dir -> out_dir (created): model.safetensors with every tensor in dtype (F32, F16,
 * BF16), config.json with its dtype field updated, tokenizer and generation files copied. */
int exo_convert_to_safetensors(const char *src_dir, const char *out_dir, enum exo_dtype dtype,
                               struct exo_convert_stats *stats, char *err, size_t errlen);

#endif
