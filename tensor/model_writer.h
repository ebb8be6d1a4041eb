/* tensor/model_writer.h: writes a seeded random llama-family model directory
 * (config.json + model.safetensors, or N shards + model.safetensors.index.json) that
 * exo_model_load reads back. For tests and benchmarks at real model shapes: it streams
 * tensor by tensor to disk and never holds a whole model (or a whole tensor) in memory.
 * Values depend only on (seed, tensor name), never on dtype or sharding. */
#ifndef EXO_TENSOR_MODEL_WRITER_H
#define EXO_TENSOR_MODEL_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/model.h"

enum exo_model_arch {
  EXO_MODEL_ARCH_LLAMA = 0, /* LlamaForCausalLM, no biases */
  EXO_MODEL_ARCH_QWEN2 = 1, /* Qwen2ForCausalLM, q/k/v biases */
};

struct exo_model_spec {
  enum exo_model_arch arch;
  int vocab_size;
  int hidden_size;
  int intermediate_size;
  int n_layers;
  int n_heads;
  int n_kv_heads;
  int head_dim;                /* 0: hidden_size / n_heads */
  int max_position_embeddings; /* 0: 2048 */
  double rope_theta;           /* 0: 10000 */
  double rms_norm_eps;         /* 0: 1e-5 */
  int tie_word_embeddings;
  enum exo_dtype dtype;
  uint64_t seed;
  int n_shards;                /* 0 or 1: one model.safetensors; N: N shards + index */
};

struct exo_model_write_stats {
  uint64_t n_tensors;
  uint64_t n_params;
  uint64_t bytes;              /* tensor data bytes over all files */
  int n_files;
};

/* Writes the model into dir (created if missing; existing files of the same names are
 * replaced). stats may be NULL. Returns 0 or a negative errno code with err naming the
 * option or file. */
int exo_model_write_random(const char *dir, const struct exo_model_spec *spec,
                           struct exo_model_write_stats *stats, char *err, size_t errlen);

#endif
