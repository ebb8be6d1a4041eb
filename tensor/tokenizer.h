/* tensor/tokenizer.h: byte-level BPE tokenizer read from a Hugging Face tokenizer.json,
 * with one-shot and streaming decode. Owns the vocab, merges, added tokens and compiled
 * pre-tokenizer regexes; immutable after load, so one tokenizer may be shared by threads
 * (a token stream is per-request state and is not). Knows nothing of actors.
 * What is supported and what is refused at load: docs/TOKENIZER.md. */
#ifndef EXO_TENSOR_TOKENIZER_H
#define EXO_TENSOR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

struct exo_tokenizer;
struct exo_token_stream;

/* Loads tokenizer.json. Unsupported components are refused by name, malformed JSON
 * reports line:column. Returns 0, -ENOENT/-EIO (file), -EINVAL (content), -ENOMEM.
 * On success *out is the caller's to exo_tokenizer_free. */
int exo_tokenizer_load(const char *tokenizer_json_path, struct exo_tokenizer **out,
                       char *err, size_t errlen);
/* Same from a buffer in memory; origin names it in error messages (may be NULL). */
int exo_tokenizer_load_buffer(const char *json, size_t len, const char *origin,
                              struct exo_tokenizer **out, char *err, size_t errlen);
void exo_tokenizer_free(struct exo_tokenizer *tok); /* NULL ok */

/* Encodes len bytes of UTF-8 text (NUL not required; embedded NULs are text).
 * Added tokens are matched in the raw text even when add_special is 0; add_special
 * applies the post-processor template (e.g. prepends BOS).
 * *ids (caller frees with free(); NULL when *n_ids is 0 is possible) and *n_ids.
 * Returns 0, -EILSEQ if text is not valid UTF-8 (nothing is guessed), -ENOMEM. */
int exo_tokenizer_encode(const struct exo_tokenizer *tok, const char *text, size_t len,
                         int add_special, int32_t **ids, size_t *n_ids);

/* Decodes ids to UTF-8 text; invalid byte sequences become U+FFFD (one per maximal
 * ill-formed subpart, like Rust's String::from_utf8_lossy that HF uses).
 * skip_special drops added tokens marked special. *text is NUL-terminated, *len excludes
 * the NUL; caller frees *text. Returns 0, -EINVAL (an id outside the vocab), -ENOMEM. */
int exo_tokenizer_decode(const struct exo_tokenizer *tok, const int32_t *ids, size_t n,
                         int skip_special, char **text, size_t *len);

/* Number of ids (highest id + 1, added tokens included). */
int exo_tokenizer_vocab_size(const struct exo_tokenizer *tok);
/* Id of a token by its vocab string or added-token content, -1 if none. */
int32_t exo_tokenizer_token_id(const struct exo_tokenizer *tok, const char *token);
/* Vocab string (byte-level form, e.g. "Ġthe") or added-token content; NULL if out of
 * range or a hole. Owned by tok. */
const char *exo_tokenizer_token_str(const struct exo_tokenizer *tok, int32_t id);
/* 1 if id is an added token marked special, else 0. */
int exo_tokenizer_is_special(const struct exo_tokenizer *tok, int32_t id);
/* First special token of the post-processor's single template (BOS), or -1. */
int32_t exo_tokenizer_bos_id(const struct exo_tokenizer *tok);

/* Streaming decode: push ids one at a time, get back only complete UTF-8 (never half a
 * character); an incomplete tail (at most 3 bytes) is held until a later id completes
 * it or flush ends it. The concatenation of all chunks plus the flush equals
 * exo_tokenizer_decode of the same ids. tok must outlive the stream. */
int exo_token_stream_new(const struct exo_tokenizer *tok, int skip_special,
                         struct exo_token_stream **out); /* 0 or -ENOMEM */
void exo_token_stream_free(struct exo_token_stream *s); /* NULL ok */
/* Writes the newly complete text to out[0..*n) (not NUL-terminated).
 * Returns 0; -EINVAL for an id outside the vocab (stream unchanged); -ENOSPC when cap is
 * too small: the stream is unchanged and *n is the capacity needed.
 * cap >= exo_token_stream_max_chunk(tok) never fails with -ENOSPC. */
int exo_token_stream_push(struct exo_token_stream *s, int32_t id, char *out, size_t cap,
                          size_t *n);
/* Ends the stream: a held incomplete tail becomes U+FFFD. Same returns as push;
 * the stream is then empty and may be reused. */
int exo_token_stream_flush(struct exo_token_stream *s, char *out, size_t cap, size_t *n);
/* An output capacity that suffices for any single push or flush. */
size_t exo_token_stream_max_chunk(const struct exo_tokenizer *tok);

#endif
