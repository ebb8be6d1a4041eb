/* tensor/gguf_tokenizer.c: byte-level BPE tokenizers between tokenizer.json and GGUF's
 * tokenizer.ggml.* metadata, in both directions, so a GGUF file alone can generate.
 * Reading builds the tokenizer.json that HF would hold and hands it to tokenizer.c, so
 * there is one tokenizer implementation. Only what maps exactly is accepted:
 * model "gpt2" and pre-tokenizers "gpt2"/"default" (GPT-2 ByteLevel regex) and
 * "llama-bpe" (Llama-3 Split regex); anything else is refused by name. */
#include "common/err.h"
#include "tensor/gguf.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tokenizer.h"

#define EXO_LLAMA3_REGEX                                                                   \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

enum { EXO_TT_NORMAL = 1, EXO_TT_UNKNOWN = 2, EXO_TT_CONTROL = 3, EXO_TT_USER = 4,
       EXO_TT_UNUSED = 5, EXO_TT_BYTE = 6 };

static json_t *exo_byte_level(int add_prefix_space, int use_regex)
{
  return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                   add_prefix_space, "trim_offsets", 1, "use_regex", use_regex);
}

int exo_gguf_tokenizer_json(const struct exo_gguf *g, char **json, char *err, size_t errlen)
{
  const char *s;
  size_t len;
  enum exo_gguf_vtype at;
  uint64_t n_tok, n_merges = 0, n_types;
  json_t *root = NULL, *vocab = NULL, *added = NULL, *merges = NULL;
  int rc = -EINVAL;
  *json = NULL;
  if (exo_gguf_get_str(g, "tokenizer.ggml.model", &s, &len, err, errlen)) {
    exo_errf(err, errlen, "GGUF metadata 'tokenizer.ggml.model' is missing or not a string");
    return -EINVAL;
  }
  if (len != 4 || memcmp(s, "gpt2", 4)) {
    exo_errf(err, errlen, "GGUF tokenizer.ggml.model '%.*s' is not supported (gpt2: "
             "byte-level BPE)", (int)(len < 40 ? len : 40), s);
    return -ENOTSUP;
  }
  char pre[48] = "default";
  if (exo_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len, NULL, 0) == 0)
    snprintf(pre, sizeof pre, "%.*s", (int)(len < 47 ? len : 47), s);
  json_t *pretok;
  int ignore_merges = 0;
  if (!strcmp(pre, "gpt2") || !strcmp(pre, "default")) {
    pretok = exo_byte_level(0, 1);
  } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) {
    pretok = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                       "pretokenizers", "type", "Split", "pattern", "Regex", EXO_LLAMA3_REGEX,
                       "behavior", "Isolated", "invert", 0, exo_byte_level(0, 0));
    ignore_merges = 1;
  } else {
    exo_errf(err, errlen, "GGUF tokenizer.ggml.pre '%s' is not supported (gpt2, default, "
             "llama-bpe)", pre);
    return -ENOTSUP;
  }
  if (exo_gguf_get_arr(g, "tokenizer.ggml.tokens", &at, &n_tok, err, errlen) ||
      at != EXO_GGUF_STRING || n_tok == 0 || n_tok > (1u << 22)) {
    exo_errf(err, errlen, "GGUF metadata 'tokenizer.ggml.tokens' must be a non-empty array "
             "of at most 2^22 strings");
    json_decref(pretok);
    return -EINVAL;
  }
  if (exo_gguf_get_arr(g, "tokenizer.ggml.token_type", &at, &n_types, NULL, 0) == 0 &&
      n_types != n_tok) {
    exo_errf(err, errlen, "GGUF metadata 'tokenizer.ggml.token_type' has %llu entries, "
             "tokens has %llu", (unsigned long long)n_types, (unsigned long long)n_tok);
    json_decref(pretok);
    return -EINVAL;
  }
  if (exo_gguf_get_arr(g, "tokenizer.ggml.merges", &at, &n_merges, NULL, 0) == 0 &&
      at != EXO_GGUF_STRING) {
    exo_errf(err, errlen, "GGUF metadata 'tokenizer.ggml.merges' must be an array of strings");
    json_decref(pretok);
    return -EINVAL;
  }
  vocab = json_object();
  added = json_array();
  merges = json_array();
  root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o}", "version", "1.0", "truncation",
                   "padding", "added_tokens", added, "normalizer", "pre_tokenizer", pretok);
  if (!vocab || !added || !merges || !root) {
    rc = -ENOMEM;
    goto fail;
  }
  for (uint64_t i = 0; i < n_tok; i++) {
    int64_t type = EXO_TT_NORMAL;
    char *tok;
    exo_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s, &len);
    if (n_types)
      exo_gguf_arr_int(g, "tokenizer.ggml.token_type", i, &type);
    if (!(tok = strndup(s, len))) {
      rc = -ENOMEM;
      goto fail;
    }
    if (strlen(tok) != len) {
      exo_errf(err, errlen, "GGUF tokenizer.ggml.tokens[%llu] contains a NUL byte",
               (unsigned long long)i);
      free(tok);
      goto fail;
    }
    int bad = 0;
    if (type == EXO_TT_CONTROL || type == EXO_TT_USER) {
      bad = json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
                                                   (json_int_t)i, "content", tok, "single_word",
                                                   0, "lstrip", 0, "rstrip", 0, "normalized",
                                                   type == EXO_TT_USER, "special",
                                                   type == EXO_TT_CONTROL));
    } else if (type == EXO_TT_NORMAL || type == EXO_TT_UNUSED) {
      if (json_object_get(vocab, tok)) {
        exo_errf(err, errlen, "GGUF tokenizer.ggml.tokens[%llu] '%.40s' repeats an earlier "
                 "token", (unsigned long long)i, tok);
        free(tok);
        goto fail;
      }
      bad = json_object_set_new(vocab, tok, json_integer((json_int_t)i));
    } else {
      exo_errf(err, errlen, "GGUF tokenizer.ggml.token_type[%llu] is %lld (supported: 1 "
               "normal, 3 control, 4 user-defined, 5 unused)", (unsigned long long)i,
               (long long)type);
      free(tok);
      goto fail;
    }
    free(tok);
    if (bad) {
      rc = -ENOMEM;
      goto fail;
    }
  }
  for (uint64_t i = 0; i < n_merges; i++) {
    exo_gguf_arr_str(g, "tokenizer.ggml.merges", i, &s, &len);
    if (json_array_append_new(merges, json_stringn(s, len))) {
      exo_errf(err, errlen, "GGUF tokenizer.ggml.merges[%llu] is not valid UTF-8",
               (unsigned long long)i);
      goto fail;
    }
  }
  int add_bos = 0;
  int64_t bos = -1;
  exo_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, NULL, 0);
  exo_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &bos, NULL, 0);
  json_t *post;
  if (add_bos && bos >= 0 && (uint64_t)bos < n_tok) {
    exo_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)bos, &s, &len);
    char *b = strndup(s, len);
    post = b ? json_pack("{s:s, s:[o, {s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[I], "
                         "s:[s]}}}]}", "type", "Sequence", "processors",
                         exo_byte_level(1, 1), "type", "TemplateProcessing", "single",
                         "SpecialToken", "id", b, "type_id", 0, "Sequence", "id", "A",
                         "type_id", 0, "special_tokens", b, "id", b, "ids", (json_int_t)bos,
                         "tokens", b)
             : NULL;
    free(b);
  } else {
    post = exo_byte_level(1, 1);
  }
  json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                            "dropout", "unk_token", "continuing_subword_prefix",
                            "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                            "ignore_merges", ignore_merges, "vocab", vocab, "merges", merges);
  vocab = merges = NULL;
  if (!post || !model || json_object_set_new(root, "post_processor", post) ||
      json_object_set_new(root, "decoder", exo_byte_level(1, 1)) ||
      json_object_set_new(root, "model", model)) {
    rc = -ENOMEM;
    goto fail;
  }
  if (!(*json = json_dumps(root, JSON_COMPACT))) {
    rc = -ENOMEM;
    goto fail;
  }
  rc = 0;
fail:
  if (rc == -ENOMEM)
    exo_errf(err, errlen, "GGUF tokenizer: out of memory");
  json_decref(vocab);
  json_decref(merges);
  json_decref(root);
  return rc;
}

int exo_tokenizer_load_gguf(const char *path, struct exo_tokenizer **out, char *err,
                            size_t errlen)
{
  struct exo_gguf *g = NULL;
  char *json = NULL;
  *out = NULL;
  int rc = exo_gguf_open(path, &g, err, errlen);
  if (!rc)
    rc = exo_gguf_tokenizer_json(g, &json, err, errlen);
  if (!rc)
    rc = exo_tokenizer_load_buffer(json, strlen(json), path, out, err, errlen);
  free(json);
  exo_gguf_close(g);
  return rc;
}

/* The pre-tokenizer name GGUF uses for tokenizer.json's pre_tokenizer, or NULL. */
static const char *exo_pre_name(json_t *pt)
{
  const char *type = json_string_value(json_object_get(pt, "type"));
  if (type && !strcmp(type, "ByteLevel") && json_is_true(json_object_get(pt, "use_regex")) &&
      !json_is_true(json_object_get(pt, "add_prefix_space")))
    return "gpt2";
  json_t *seq = json_object_get(pt, "pretokenizers");
  if (type && !strcmp(type, "Sequence") && json_array_size(seq) == 2) {
    json_t *sp = json_array_get(seq, 0), *bl = json_array_get(seq, 1);
    const char *re = json_string_value(json_object_get(json_object_get(sp, "pattern"), "Regex"));
    const char *beh = json_string_value(json_object_get(sp, "behavior"));
    if (re && !strcmp(re, EXO_LLAMA3_REGEX) && beh && !strcmp(beh, "Isolated") &&
        !json_is_true(json_object_get(sp, "invert")) &&
        !strcmp(json_string_value(json_object_get(bl, "type")) ?: "", "ByteLevel") &&
        !json_is_true(json_object_get(bl, "use_regex")) &&
        !json_is_true(json_object_get(bl, "add_prefix_space")))
      return "llama-bpe";
  }
  return NULL;
}

/* The BOS id a TemplateProcessing (alone or in a Sequence) puts first, or -1. */
static long long exo_template_bos(json_t *pp)
{
  const char *type = json_string_value(json_object_get(pp, "type"));
  if (!type)
    return -1;
  if (!strcmp(type, "Sequence")) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(pp, "processors"), i, e) {
      long long b = exo_template_bos(e);
      if (b >= 0)
        return b;
    }
    return -1;
  }
  if (strcmp(type, "TemplateProcessing"))
    return -1;
  json_t *first = json_array_get(json_object_get(pp, "single"), 0);
  const char *name = json_string_value(json_object_get(json_object_get(first, "SpecialToken"), "id"));
  json_t *st = name ? json_object_get(json_object_get(pp, "special_tokens"), name) : NULL;
  json_t *ids = json_object_get(st, "ids");
  return json_array_size(ids) == 1 ? json_integer_value(json_array_get(ids, 0)) : -1;
}

int exo_gguf_writer_add_tokenizer(struct exo_gguf_writer *w, const char *tokenizer_json_path,
                                  char *err, size_t errlen)
{
  json_error_t jerr;
  json_t *root = json_load_file(tokenizer_json_path, 0, &jerr);
  const char **tokens = NULL, **mstr = NULL;
  char **mown = NULL;
  int32_t *types = NULL;
  size_t n = 0, n_merges = 0;
  int rc = -EINVAL;
  if (!root) {
    exo_errf(err, errlen, "%s:%d:%d: %s", tokenizer_json_path, jerr.line, jerr.column,
             jerr.text);
    return -EINVAL;
  }
  json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
  json_t *added = json_object_get(root, "added_tokens"), *merges = json_object_get(model, "merges");
  const char *pre = exo_pre_name(json_object_get(root, "pre_tokenizer"));
  const char *mt = json_string_value(json_object_get(model, "type"));
  if (!mt || strcmp(mt, "BPE") || !json_is_object(vocab) || !json_is_null(json_object_get(root, "normalizer")) ||
      json_is_true(json_object_get(model, "byte_fallback"))) {
    exo_errf(err, errlen, "%s: only byte-level BPE without normalizer or byte_fallback "
             "converts to GGUF", tokenizer_json_path);
    goto out;
  }
  if (!pre) {
    exo_errf(err, errlen, "%s: pre_tokenizer is none GGUF names (gpt2: ByteLevel with the "
             "GPT-2 regex; llama-bpe: the Llama-3 Split + ByteLevel)", tokenizer_json_path);
    goto out;
  }
  const char *k;
  json_t *v;
  size_t i;
  json_object_foreach(vocab, k, v) if (json_is_integer(v) && json_integer_value(v) >= 0 &&
                                       (size_t)json_integer_value(v) >= n) n =
      (size_t)json_integer_value(v) + 1;
  json_array_foreach(added, i, v) {
    json_int_t id = json_integer_value(json_object_get(v, "id"));
    if (id >= 0 && (size_t)id >= n)
      n = (size_t)id + 1;
  }
  if (n == 0 || n > (1u << 22)) {
    exo_errf(err, errlen, "%s: vocab of %zu ids", tokenizer_json_path, n);
    goto out;
  }
  tokens = calloc(n, sizeof *tokens);
  types = calloc(n, sizeof *types);
  if (!tokens || !types) {
    rc = -ENOMEM;
    goto out;
  }
  json_object_foreach(vocab, k, v) {
    tokens[json_integer_value(v)] = k;
    types[json_integer_value(v)] = EXO_TT_NORMAL;
  }
  json_array_foreach(added, i, v) {
    json_int_t id = json_integer_value(json_object_get(v, "id"));
    const char *content = json_string_value(json_object_get(v, "content"));
    if (id < 0 || !content) {
      exo_errf(err, errlen, "%s: added_tokens[%zu] lacks id or content", tokenizer_json_path, i);
      goto out;
    }
    tokens[id] = content;
    types[id] = json_is_true(json_object_get(v, "special")) ? EXO_TT_CONTROL : EXO_TT_USER;
  }
  for (size_t j = 0; j < n; j++)
    if (!tokens[j]) {
      exo_errf(err, errlen, "%s: id %zu has no token (GGUF needs dense ids)",
               tokenizer_json_path, j);
      goto out;
    }
  n_merges = json_array_size(merges);
  mstr = calloc(n_merges + 1, sizeof *mstr);
  mown = calloc(n_merges + 1, sizeof *mown);
  if (!mstr || !mown) {
    rc = -ENOMEM;
    goto out;
  }
  json_array_foreach(merges, i, v) {
    if (json_is_string(v)) {
      mstr[i] = json_string_value(v);
    } else if (json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
               json_is_string(json_array_get(v, 1))) {
      const char *a = json_string_value(json_array_get(v, 0)),
                 *b = json_string_value(json_array_get(v, 1));
      if (!(mown[i] = malloc(strlen(a) + strlen(b) + 2))) {
        rc = -ENOMEM;
        goto out;
      }
      sprintf(mown[i], "%s %s", a, b);
      mstr[i] = mown[i];
    } else {
      exo_errf(err, errlen, "%s: model.merges[%zu] is neither \"a b\" nor [a, b]",
               tokenizer_json_path, i);
      goto out;
    }
  }
  long long bos = exo_template_bos(json_object_get(root, "post_processor"));
  if ((rc = exo_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2")) ||
      (rc = exo_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre)) ||
      (rc = exo_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, n)) ||
      (rc = exo_gguf_writer_add_arr_i32(w, "tokenizer.ggml.token_type", types, n)) ||
      (rc = exo_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", mstr, n_merges)) ||
      (rc = exo_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", bos >= 0)) ||
      (bos >= 0 && (rc = exo_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos))))
    exo_errf(err, errlen, "%s: cannot add tokenizer metadata (%s)", tokenizer_json_path,
             strerror(-rc));
out:
  for (size_t j = 0; mown && j < n_merges; j++)
    free(mown[j]);
  free(mown);
  free(mstr);
  free(tokens);
  free(types);
  json_decref(root);
  return rc;
}
