/* bench/bench_common.h: what the benchmark programs share: clocks, medians, a streaming
 * read-bandwidth probe (the roofline's numerator), the TinyLlama-1.1B-shaped random model
 * they all decode, and re-storing its f32 matrices in another format. Benchmarks only:
 * never linked into the node or the tests. */
#ifndef EXO_BENCH_COMMON_H
#define EXO_BENCH_COMMON_H

#include <stddef.h>

#include "tensor/dtype.h"
#include "tensor/model.h"

#define EXO_BENCH_TINYLLAMA_DIR "/tmp/exo-bench-tinyllama-f32"

double exo_bench_now(void);     /* CLOCK_MONOTONIC seconds */
double exo_bench_cpu_now(void); /* this thread's CPU seconds */
/* Median of v[n] (sorts v; the mean of the middle two when n is even). 0 when n is 0. */
double exo_bench_median(double *v, size_t n);
/* One thread's streaming read bandwidth over buf[n] floats in GB/s: the best of 3 passes
 * as one stream and 3 as four streams a quarter apart (n a multiple of 64). */
double exo_bench_read_gbs(const float *buf, size_t n);
/* The same over the threads of pool (tensor/pool.h; NULL: one thread): chunks of 1 MiB
 * claimed by all threads at once (one stream, or four within each chunk), best of 6
 * passes, in GB/s. */
struct exo_pool;
double exo_bench_read_gbs_pool(struct exo_pool *pool, const float *buf, size_t n);
/* Writes the random TinyLlama-shaped f32 model (22 layers, hidden 2048, vocab 32000) into
 * dir unless dir/model.safetensors exists. 0, or -errno with err filled. */
int exo_bench_tinyllama(const char *dir, char *err, size_t errlen);
/* Layer l's k-th matrix (0..6: q, k, v, o, gate, up, down). */
struct exo_weight *exo_bench_slot(struct exo_model *m, int l, int k);
/* Re-stores f32 matrix w in dt in new 64-byte-aligned memory (F32 copied too, so every
 * format reads the same kind of memory); *owned (caller frees) is that memory. 0 or -1. */
int exo_bench_convert(struct exo_weight *w, enum exo_dtype dt, void **owned);

#endif
