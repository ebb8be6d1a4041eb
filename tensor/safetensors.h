/* tensor/safetensors.h: a read-only, mmap-based reader of one .safetensors file.
 * Open validates the whole header (length, JSON, dtypes, shapes vs byte sizes, offsets
 * inside the data region and not overlapping) but never reads tensor data: pages are
 * faulted in only when a caller touches them. Knows nothing of models or configs.
 * Layout: u64 LE header length N, N bytes of JSON, then the data region. */
#ifndef EXO_TENSOR_SAFETENSORS_H
#define EXO_TENSOR_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define EXO_ST_MAX_DIMS 8
#define EXO_ST_MAX_HEADER (100u << 20) /* bytes; larger headers are refused */

enum exo_st_dtype {
  EXO_ST_BOOL, EXO_ST_U8, EXO_ST_I8, EXO_ST_F8_E4M3, EXO_ST_F8_E5M2,
  EXO_ST_I16, EXO_ST_U16, EXO_ST_F16, EXO_ST_BF16,
  EXO_ST_I32, EXO_ST_U32, EXO_ST_F32,
  EXO_ST_I64, EXO_ST_U64, EXO_ST_F64,
};

struct exo_st_tensor {
  const char *name;             /* owned by the file object */
  enum exo_st_dtype dtype;
  int n_dims;                   /* 0 for a scalar */
  int64_t shape[EXO_ST_MAX_DIMS];
  int64_t n_elems;              /* product of shape (1 for a scalar) */
  uint64_t begin, end;          /* byte offsets into the data region */
  const void *data;             /* begin inside the read-only mapping; never write */
  size_t nbytes;                /* end - begin */
};

struct exo_safetensors;

/* Maps path read-only and validates its header. On success *out is the caller's
 * (close with exo_safetensors_close). Errors name the file (and tensor): -ENOENT,
 * -EINVAL (malformed), -ENOMEM, ... */
int exo_safetensors_open(const char *path, struct exo_safetensors **out, char *err,
                         size_t errlen);

/* Tensor by name, or NULL. The pointer lives as long as st. O(log n). */
const struct exo_st_tensor *exo_safetensors_find(const struct exo_safetensors *st,
                                                 const char *name);

size_t exo_safetensors_count(const struct exo_safetensors *st);
/* i-th tensor in name order. */
const struct exo_st_tensor *exo_safetensors_at(const struct exo_safetensors *st, size_t i);

/* The file's base name as used in error messages ("model.safetensors"). */
const char *exo_safetensors_name(const struct exo_safetensors *st);

/* Value of a string entry of "__metadata__", or NULL. */
const char *exo_safetensors_metadata(const struct exo_safetensors *st, const char *key);

/* Hints the kernel to read t's pages soon (madvise WILLNEED on just that range). */
void exo_safetensors_willneed(const struct exo_safetensors *st, const struct exo_st_tensor *t);

void exo_safetensors_close(struct exo_safetensors *st); /* accepts NULL */

/* Bytes per element, and the safetensors spelling ("F32", "BF16", ...). */
size_t exo_st_dtype_size(enum exo_st_dtype dt);
const char *exo_st_dtype_name(enum exo_st_dtype dt);

#endif
