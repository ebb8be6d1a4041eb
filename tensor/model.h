/* tensor/model.h: a llama-family model (config + weights for one layer range [a, b)).
 * Owns the mmapped weight files and any widened copies; the loader (tensor/model.c)
 * fills it, the forward pass (tensor/forward.c) only reads it. Knows nothing of actors.
 * Matrices are Hugging Face row-major [out, in]: y = x . W^T (+ b). */
#ifndef EXO_TENSOR_MODEL_H
#define EXO_TENSOR_MODEL_H

#include <stddef.h>
#include <stdint.h>

enum exo_dtype {
  EXO_DTYPE_F32 = 0,
  EXO_DTYPE_F16 = 1,
  EXO_DTYPE_BF16 = 2,
  EXO_DTYPE_Q8_0 = 3, /* ggml blocks of 32: f16 scale + 32 int8 (34 bytes) */
  EXO_DTYPE_Q4_0 = 4, /* ggml blocks of 32: f16 scale + 16 bytes of nibbles (18 bytes) */
};

enum exo_rope_scaling {
  EXO_ROPE_SCALING_NONE = 0, /* "default" */
  EXO_ROPE_SCALING_LLAMA3 = 1,
  EXO_ROPE_SCALING_LINEAR = 2,
};

#define EXO_MAX_EOS_IDS 8

struct exo_model_config {
  char architecture[64]; /* "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM" */
  int vocab_size;
  int hidden_size;
  int intermediate_size;
  int n_layers;
  int n_heads;
  int n_kv_heads;
  int head_dim;          /* explicit in config.json or hidden_size / n_heads */
  int max_position_embeddings;
  float rms_norm_eps;
  float rope_theta;
  enum exo_rope_scaling rope_scaling;
  float rope_factor;              /* llama3, linear */
  float rope_low_freq_factor;     /* llama3 */
  float rope_high_freq_factor;    /* llama3 */
  int rope_original_max_position; /* llama3: original_max_position_embeddings */
  int tie_word_embeddings;
  int attention_bias;    /* q/k/v projections carry biases (Qwen2) */
  int bos_token_id;      /* -1 when absent */
  int n_eos_ids;
  int eos_token_ids[EXO_MAX_EOS_IDS];
  enum exo_dtype dtype;  /* stored dtype of the weights */
  int o_proj_bias;       /* o_proj carries a bias too (Llama with attention_bias: true) */
};

/* A weight as the matrix kernels see it. Matrices keep their stored dtype (F32, F16,
 * BF16, Q8_0, Q4_0: tensor/matmul.h multiplies them directly); vectors (norms, biases)
 * are always F32. Rows are contiguous, exo_dtype_row_bytes(dtype, cols) bytes each,
 * and may be unaligned (half data straight from a mapping). */
struct exo_weight {
  const void *data;
  enum exo_dtype dtype;
  int64_t rows; /* out features (1 for a vector) */
  int64_t cols; /* in features */
};

struct exo_layer_weights {
  struct exo_weight attn_norm;         /* (hidden) */
  struct exo_weight wq;                /* (n_heads * head_dim, hidden) */
  struct exo_weight wk;                /* (n_kv_heads * head_dim, hidden) */
  struct exo_weight wv;                /* (n_kv_heads * head_dim, hidden) */
  struct exo_weight bq, bk, bv;        /* data NULL unless attention_bias */
  struct exo_weight wo;                /* (hidden, n_heads * head_dim) */
  struct exo_weight ffn_norm;          /* (hidden) */
  struct exo_weight w_gate;            /* (intermediate, hidden) */
  struct exo_weight w_up;              /* (intermediate, hidden) */
  struct exo_weight w_down;            /* (hidden, intermediate) */
  struct exo_weight bo;                /* (hidden); data NULL unless cfg.o_proj_bias (Llama attention_bias) */
};

struct exo_model_files; /* private to the loader: mappings and owned buffers */

struct exo_model {
  struct exo_model_config cfg;
  int layer_begin;                   /* a: first layer this shard runs */
  int layer_end;                     /* b: one past the last */
  struct exo_weight embed;           /* (vocab, hidden); data NULL unless a == 0 */
  struct exo_weight final_norm;      /* (hidden); data NULL unless b == n_layers */
  struct exo_weight lm_head;         /* (vocab, hidden); embed's data when tied; NULL unless b == n_layers */
  struct exo_layer_weights *layers;  /* layers[i - a] for i in [a, b) */
  struct exo_model_files *files;
};

/* Reads config.json in dir (both the transformers 5 layout and the older one).
 * Returns 0, or a negative errno-style code with a message naming file and field in err. */
int exo_model_config_load(const char *dir, struct exo_model_config *cfg, char *err, size_t errlen);

/* Loads layers [layer_begin, layer_end) of the model in dir (layer_end == -1 means all).
 * dir may also be a GGUF file (tensor/gguf.h): then config and weights come from it.
 * Touches only those tensors plus embeddings (a == 0) and final norm / LM head (b == L).
 * On success *out is the caller's; free it with exo_model_free. */
int exo_model_load(const char *dir, int layer_begin, int layer_end, struct exo_model **out,
                   char *err, size_t errlen);

void exo_model_free(struct exo_model *model); /* accepts NULL */

#endif
