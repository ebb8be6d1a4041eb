/* tensor/gguf.h: GGUF (v2/v3, little-endian) files: an mmap-based reader that validates
 * everything at open (header, every metadata entry, every tensor info, offsets and
 * sizes against the file) with errors naming the field, and a streaming writer.
 * Tensor data is never read at open; only F32, F16, BF16, Q8_0 and Q4_0 tensors are
 * accepted. Knows nothing of models: the llama mapping lives in model.c / convert.c.
 * GGUF dims are ne[0] = innermost (columns): a [rows, cols] matrix is ne = {cols, rows}. */
#ifndef EXO_TENSOR_GGUF_H
#define EXO_TENSOR_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/model.h"

#define EXO_GGUF_MAX_DIMS 4
#define EXO_GGUF_DEFAULT_ALIGNMENT 32

enum exo_gguf_vtype {
  EXO_GGUF_UINT8 = 0, EXO_GGUF_INT8 = 1, EXO_GGUF_UINT16 = 2, EXO_GGUF_INT16 = 3,
  EXO_GGUF_UINT32 = 4, EXO_GGUF_INT32 = 5, EXO_GGUF_FLOAT32 = 6, EXO_GGUF_BOOL = 7,
  EXO_GGUF_STRING = 8, EXO_GGUF_ARRAY = 9, EXO_GGUF_UINT64 = 10, EXO_GGUF_INT64 = 11,
  EXO_GGUF_FLOAT64 = 12,
};

/* ggml type ids of the accepted tensor types */
#define EXO_GGML_F32 0
#define EXO_GGML_F16 1
#define EXO_GGML_Q4_0 2
#define EXO_GGML_Q8_0 8
#define EXO_GGML_BF16 30

struct exo_gguf_tensor {
  const char *name;      /* owned by the file object, NUL-terminated */
  int n_dims;            /* 1..4 */
  int64_t ne[EXO_GGUF_MAX_DIMS]; /* ne[0] innermost; unused dims 1 */
  enum exo_dtype dtype;
  uint64_t offset;       /* relative to the data region */
  size_t nbytes;
  const void *data;      /* inside the read-only mapping */
};

struct exo_gguf;

/* Maps path and validates it. Errors (in err, naming the file and field): -ENOENT etc.
 * from open, -EINVAL malformed or lying, -ENOTSUP a tensor type we do not take. */
int exo_gguf_open(const char *path, struct exo_gguf **out, char *err, size_t errlen);
void exo_gguf_close(struct exo_gguf *g); /* NULL ok */

uint32_t exo_gguf_version(const struct exo_gguf *g);
size_t exo_gguf_tensor_count(const struct exo_gguf *g);
const struct exo_gguf_tensor *exo_gguf_tensor_at(const struct exo_gguf *g, size_t i);
const struct exo_gguf_tensor *exo_gguf_find(const struct exo_gguf *g, const char *name);
/* Hints the kernel to read t's pages soon. */
void exo_gguf_willneed(const struct exo_gguf *g, const struct exo_gguf_tensor *t);

/* Metadata. Each getter returns 0, -ENOENT (absent) or -EINVAL (present with another
 * type; err says which). Integers of any integer type convert if they fit. */
int exo_gguf_get_int(const struct exo_gguf *g, const char *key, int64_t *v, char *err,
                     size_t errlen);
int exo_gguf_get_float(const struct exo_gguf *g, const char *key, double *v, char *err,
                       size_t errlen); /* FLOAT32 or FLOAT64 */
int exo_gguf_get_bool(const struct exo_gguf *g, const char *key, int *v, char *err,
                      size_t errlen);
/* String value (not NUL-terminated in the file: *len bytes at *s, inside the mapping). */
int exo_gguf_get_str(const struct exo_gguf *g, const char *key, const char **s, size_t *len,
                     char *err, size_t errlen);
/* Array: its element type and length. */
int exo_gguf_get_arr(const struct exo_gguf *g, const char *key, enum exo_gguf_vtype *type,
                     uint64_t *n, char *err, size_t errlen);
/* Element i of an array of strings / of integers (any integer type). Index checked. */
int exo_gguf_arr_str(const struct exo_gguf *g, const char *key, uint64_t i, const char **s,
                     size_t *len);
int exo_gguf_arr_int(const struct exo_gguf *g, const char *key, uint64_t i, int64_t *v);

/* ---- writer -------------------------------------------------------------------------- */

struct exo_gguf_writer;

int exo_gguf_writer_new(struct exo_gguf_writer **out); /* 0 or -ENOMEM */
void exo_gguf_writer_free(struct exo_gguf_writer *w);  /* NULL ok; closes an open file */

/* Metadata, in the order added (keys must be unique: -EEXIST). Strings are copied. */
int exo_gguf_writer_add_str(struct exo_gguf_writer *w, const char *key, const char *v);
int exo_gguf_writer_add_u32(struct exo_gguf_writer *w, const char *key, uint32_t v);
int exo_gguf_writer_add_f32(struct exo_gguf_writer *w, const char *key, float v);
int exo_gguf_writer_add_bool(struct exo_gguf_writer *w, const char *key, int v);
int exo_gguf_writer_add_arr_str(struct exo_gguf_writer *w, const char *key,
                                const char *const *v, uint64_t n);
int exo_gguf_writer_add_arr_i32(struct exo_gguf_writer *w, const char *key, const int32_t *v,
                                uint64_t n);
/* Declares a tensor (data follows later, in declaration order). ne as in the file. */
int exo_gguf_writer_add_tensor(struct exo_gguf_writer *w, const char *name, int n_dims,
                               const int64_t *ne, enum exo_dtype dtype);
/* Writes header, metadata and tensor infos to path; then call write_data once per
 * declared tensor, in order, with exactly its bytes; then finish. err names the file. */
int exo_gguf_writer_begin(struct exo_gguf_writer *w, const char *path, char *err,
                          size_t errlen);
int exo_gguf_writer_write_data(struct exo_gguf_writer *w, const void *data, size_t nbytes,
                               char *err, size_t errlen);
int exo_gguf_writer_finish(struct exo_gguf_writer *w, char *err, size_t errlen);

/* ---- tokenizer (tensor/gguf_tokenizer.c) -------------------------------------------- */

struct exo_tokenizer;

/* The tokenizer.json equivalent of g's tokenizer.ggml.* metadata (model "gpt2": tokens,
 * token_type, merges, bos/eos ids, add_bos_token; pre-tokenizer names "gpt2", "default",
 * "llama-bpe"). *json is NUL-terminated, caller frees. -EINVAL/-ENOTSUP name the key. */
int exo_gguf_tokenizer_json(const struct exo_gguf *g, char **json, char *err, size_t errlen);
/* Opens path and loads its tokenizer (tensor/tokenizer.h) from the metadata. */
int exo_tokenizer_load_gguf(const char *path, struct exo_tokenizer **out, char *err,
                            size_t errlen);
/* Adds tokenizer.ggml.* keys describing tokenizer_json_path (byte-level BPE with a
 * pre-tokenizer GGUF names; anything else is refused by name). */
int exo_gguf_writer_add_tokenizer(struct exo_gguf_writer *w, const char *tokenizer_json_path,
                                  char *err, size_t errlen);

/* ggml type id of a dtype, and bytes of a tensor of n_elems values of dtype (0 if a
 * block format does not divide it). */
uint32_t exo_gguf_ggml_type(enum exo_dtype dt);

#endif
