/* tensor/model_internal.h: private to tensor/model.c and tensor/model_gguf.c: the
 * GGUF side of exo_model_load / exo_model_config_load and the pieces of model.c's
 * ownership record it needs. Not for use outside tensor/. */
#ifndef EXO_TENSOR_MODEL_INTERNAL_H
#define EXO_TENSOR_MODEL_INTERNAL_H

#include <stddef.h>

#include "tensor/gguf.h"
#include "tensor/model.h"

/* 1 if path names a regular file (a GGUF model) rather than a model directory. */
int exo_model_path_is_gguf(const char *path);

/* An ownership record holding g (taken over; closed by exo_model_free). NULL: -ENOMEM. */
struct exo_model_files *exo_model_files_new_gguf(struct exo_gguf *g);
/* Adds buf to what exo_model_free frees. 0 or -ENOMEM (buf not taken). */
int exo_model_files_keep(struct exo_model_files *f, void *buf);
/* A 64-byte-aligned copy of a mapped matrix's n bytes at src, kept by f (NULL: out of
 * memory); the pages wholly inside src's range leave this process's resident set (the
 * page cache keeps them), so a copied weight is resident once, not twice. */
void *exo_model_files_copy_aligned(struct exo_model_files *f, const void *src, size_t n);

int exo_model_config_load_gguf(const char *path, struct exo_model_config *cfg, char *err,
                               size_t errlen);
int exo_model_load_gguf(const char *path, int layer_begin, int layer_end,
                        struct exo_model **out, char *err, size_t errlen);

/* Resolves a requested layer range against n_layers (*end == -1: to the last layer);
 * 0, or -EINVAL with the range and the bound in err. */
int exo_model_check_range(int n_layers, int *begin, int *end, char *err, size_t errlen);

/* The config read from an open GGUF file's metadata (llama.*, qwen2.*, tokenizer.ggml.*). */
int exo_model_config_from_gguf(const struct exo_gguf *g, struct exo_model_config *cfg,
                               char *err, size_t errlen);

#endif
