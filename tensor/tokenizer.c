/* tensor/tokenizer.c: byte-level BPE as the Hugging Face `tokenizers` library runs a
 * tokenizer.json: added-token split on raw text -> pre-tokenizers (ByteLevel, Split,
 * Digits, Sequence) -> BPE by merge rank -> post-processor template; decode maps ids to
 * bytes and repairs UTF-8 lossily. Anything it cannot reproduce exactly is refused at
 * load, by name; it never guesses. Immutable after load (shareable across threads).
 * Invariants: every id < n_ids has dec bytes (possibly empty) unless it is a hole;
 * every merge's parts and result are vocab ids; regexes run only on valid UTF-8. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "common/err.h"
#include "tensor/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/utf8.h"

#define EXO_TOK_MAX_ID (1 << 22)   /* real vocabs are <= 256k; bounds hostile files */
#define EXO_TOK_MAX_PRETOK 16      /* flattened pre-tokenizer stages */
#define EXO_TOK_MAX_DEPTH 8        /* nested Sequence depth */
#define EXO_TOK_MAX_TEMPLATE 16    /* ids before/after $A */

static const char exo_gpt2_pattern[] =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- string -> id hash map (open addressing, power-of-two capacity) ---- */
struct strmap_slot {
  const char *s; /* borrowed from the tokenizer's id strings; NULL = empty */
  uint32_t len;
  uint32_t hash;
  int32_t id;
};
struct strmap {
  struct strmap_slot *slots;
  size_t cap, n;
};

static uint32_t hash_bytes(const char *s, size_t n)
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (uint8_t)s[i]) * 16777619u;
  return h;
}

static int strmap_init(struct strmap *m, size_t expect)
{
  size_t cap = 16;
  while (cap < expect * 2)
    cap <<= 1;
  m->slots = calloc(cap, sizeof(*m->slots));
  if (!m->slots)
    return -ENOMEM;
  m->cap = cap;
  m->n = 0;
  return 0;
}

static int32_t strmap_get(const struct strmap *m, const char *s, size_t n)
{
  if (!m->cap)
    return -1;
  uint32_t h = hash_bytes(s, n);
  for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    const struct strmap_slot *sl = &m->slots[i];
    if (!sl->s)
      return -1;
    if (sl->hash == h && sl->len == n && memcmp(sl->s, s, n) == 0)
      return sl->id;
  }
}

/* Returns the existing id if s is present (and does not insert), else -1 after insert.
 * The table is sized at init for everything it will hold, so it never grows. */
static int32_t strmap_put(struct strmap *m, const char *s, size_t n, int32_t id)
{
  uint32_t h = hash_bytes(s, n);
  for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    struct strmap_slot *sl = &m->slots[i];
    if (!sl->s) {
      sl->s = s;
      sl->len = (uint32_t)n;
      sl->hash = h;
      sl->id = id;
      m->n++;
      return -1;
    }
    if (sl->hash == h && sl->len == n && memcmp(sl->s, s, n) == 0)
      return sl->id;
  }
}

/* ---- (left id, right id) -> (rank, merged id) ---- */
struct pairmap_slot {
  uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
  int32_t rank;
  int32_t id;
};
struct pairmap {
  struct pairmap_slot *slots;
  size_t cap;
};

static uint64_t pair_key(int32_t a, int32_t b)
{
  return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static size_t pair_hash(uint64_t k)
{
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return (size_t)k;
}

static const struct pairmap_slot *pairmap_get(const struct pairmap *m, int32_t a, int32_t b)
{
  if (!m->cap)
    return NULL;
  uint64_t k = pair_key(a, b);
  for (size_t i = pair_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->slots[i].key)
      return NULL;
    if (m->slots[i].key == k)
      return &m->slots[i];
  }
}

/* A repeated pair keeps the later rank, as HF's HashMap collect does. */
static void pairmap_put(struct pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
  uint64_t k = pair_key(a, b);
  for (size_t i = pair_hash(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    struct pairmap_slot *sl = &m->slots[i];
    if (!sl->key || sl->key == k) {
      sl->key = k;
      sl->rank = rank;
      sl->id = id;
      return;
    }
  }
}

/* ---- the tokenizer ---- */
enum pretok_kind { PRETOK_BYTELEVEL, PRETOK_SPLIT };
enum split_behavior {
  SPLIT_REMOVED,
  SPLIT_ISOLATED,
  SPLIT_MERGED_PREV,
  SPLIT_MERGED_NEXT,
  SPLIT_CONTIGUOUS,
};

struct pretok {
  enum pretok_kind kind;
  int add_prefix_space; /* ByteLevel */
  int use_regex;        /* ByteLevel: split with the GPT-2 regex first */
  pcre2_code *re;       /* Split (and Digits); ByteLevel borrows tok->gpt2_re */
  enum split_behavior behavior;
  int invert;
};

struct added_token {
  int32_t id;
  char *content;
  size_t len;
  int lstrip, rstrip, normalized, special;
};

#define ID_ADDED 1u
#define ID_SPECIAL 2u
#define ID_PRESENT 4u

struct exo_tokenizer {
  int32_t n_ids;        /* highest id + 1 */
  char **id_str;        /* (n_ids) vocab string or added content; NULL for holes */
  uint8_t *id_flags;    /* (n_ids) ID_* */
  size_t *dec_off;      /* (n_ids) decoded bytes of each id in dec_buf */
  uint32_t *dec_len;    /* (n_ids) */
  char *dec_buf;
  size_t max_dec_len;   /* longest decoded token, bytes */

  struct strmap vocab;  /* model vocab only */
  struct pairmap merges;
  int ignore_merges, byte_fallback, fuse_unk;
  int32_t unk_id;                 /* -1: none */
  int32_t byte_ids[256];          /* "<0xNN>" ids for byte_fallback, -1 if missing */

  struct added_token *added;
  size_t n_added;
  int32_t *added_by_byte[256];    /* indexes into added, longest first, -1 ended */

  struct pretok pre[EXO_TOK_MAX_PRETOK];
  size_t n_pre;
  pcre2_code *gpt2_re;

  int32_t tmpl_pre[EXO_TOK_MAX_TEMPLATE], tmpl_post[EXO_TOK_MAX_TEMPLATE];
  size_t n_tmpl_pre, n_tmpl_post;
  int has_template;

  int dec_byte_fallback; /* decoder has ByteFallback */

  char byte_str[256][3]; /* GPT-2 bytes_to_unicode as UTF-8 */
  uint8_t byte_str_len[256];
  int16_t cp_to_byte[324]; /* inverse for code points < 324, -1 if none */
};

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68
 * bytes take code points 256.. in byte order, so every byte has a visible character. */
static void build_byte_tables(struct exo_tokenizer *t)
{
  int next = 256;
  for (int i = 0; i < 324; i++)
    t->cp_to_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    uint32_t cp = keep ? (uint32_t)b : (uint32_t)next++;
    t->byte_str_len[b] = (uint8_t)exo_utf8_encode(cp, t->byte_str[b]);
    t->cp_to_byte[cp] = (int16_t)b;
  }
}

static const char *json_type_name(const json_t *v)
{
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "object";
  case JSON_ARRAY: return "array";
  case JSON_STRING: return "string";
  case JSON_INTEGER: return "integer";
  case JSON_REAL: return "real";
  case JSON_TRUE: return "true";
  case JSON_FALSE: return "false";
  case JSON_NULL: return "null";
  }
  return "?";
}

struct loadctx {
  struct exo_tokenizer *t;
  const char *origin;
  char *err;
  size_t errlen;
};

#define LERR(c, ...)                                     \
  do {                                                   \
    char m_[384];                                        \
    snprintf(m_, sizeof(m_), __VA_ARGS__);               \
    exo_errf((c)->err, (c)->errlen, "%s: %s", (c)->origin, m_); \
  } while (0)

/* Optional boolean field: absent or null gives def. */
static int get_bool(struct loadctx *c, const json_t *obj, const char *where, const char *key,
                    int def, int *out)
{
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v)) {
    LERR(c, "%s.%s must be a boolean (got %s)", where, key, json_type_name(v));
    return -EINVAL;
  }
  *out = json_is_true(v);
  return 0;
}

static const char *get_type(struct loadctx *c, const json_t *obj, const char *where)
{
  json_t *v = json_object_get(obj, "type");
  if (!json_is_string(v)) {
    LERR(c, "%s.type must be a string (got %s)", where, v ? json_type_name(v) : "nothing");
    return NULL;
  }
  return json_string_value(v);
}

static int compile_re(struct loadctx *c, const char *where, const char *pat, size_t len,
                      int literal, pcre2_code **out)
{
  int ecode;
  PCRE2_SIZE eoff;
  /* LITERAL admits no UCP; a literal has no classes for UCP to change anyway */
  uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &ecode, &eoff, NULL);
  if (!re) {
    PCRE2_UCHAR msg[160];
    pcre2_get_error_message(ecode, msg, sizeof(msg));
    LERR(c, "%s: regex error at offset %zu: %s", where, (size_t)eoff, (const char *)msg);
    return -EINVAL;
  }
  /* JIT is an optimisation only: without it (no JIT on this CPU) matching is the same. */
  (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
  *out = re;
  return 0;
}

/* ---- model ---- */
static int set_id_str(struct loadctx *c, const char *what, const char *s, size_t len, int32_t id)
{
  struct exo_tokenizer *t = c->t;
  if (t->id_str[id]) {
    LERR(c, "%s: id %d is used by both '%s' and '%s'", what, (int)id, t->id_str[id], s);
    return -EINVAL;
  }
  t->id_str[id] = malloc(len + 1);
  if (!t->id_str[id])
    return -ENOMEM;
  memcpy(t->id_str[id], s, len);
  t->id_str[id][len] = 0;
  t->id_flags[id] |= ID_PRESENT;
  return 0;
}

static int json_id(struct loadctx *c, const json_t *v, const char *what, const char *name,
                   int32_t *out)
{
  if (!json_is_integer(v)) {
    LERR(c, "%s: id of '%s' must be an integer (got %s)", what, name,
         v ? json_type_name(v) : "nothing");
    return -EINVAL;
  }
  json_int_t id = json_integer_value(v);
  if (id < 0 || id >= EXO_TOK_MAX_ID) {
    LERR(c, "%s: id %lld of '%s' is out of range [0, %d)", what, (long long)id, name,
         EXO_TOK_MAX_ID);
    return -EINVAL;
  }
  *out = (int32_t)id;
  return 0;
}

/* Splits one merges entry into its two parts (pointers into the JSON, not copies). */
static int merge_parts(struct loadctx *c, const json_t *e, size_t i, const char **a,
                       size_t *alen, const char **b, size_t *blen)
{
  if (json_is_string(e)) {
    /* "a b": exactly one space, as HF requires */
    const char *s = json_string_value(e);
    size_t n = json_string_length(e);
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) {
      LERR(c, "model.merges[%zu] '%s' must be two tokens separated by one space", i, s);
      return -EINVAL;
    }
    *a = s;
    *alen = (size_t)(sp - s);
    *b = sp + 1;
    *blen = n - *alen - 1;
    return 0;
  }
  if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
      json_is_string(json_array_get(e, 1))) {
    *a = json_string_value(json_array_get(e, 0));
    *alen = json_string_length(json_array_get(e, 0));
    *b = json_string_value(json_array_get(e, 1));
    *blen = json_string_length(json_array_get(e, 1));
    return 0;
  }
  LERR(c, "model.merges[%zu] must be a string \"a b\" or an array of two strings (got %s)", i,
       json_type_name(e));
  return -EINVAL;
}

static int load_model_fields(struct loadctx *c, const json_t *model)
{
  struct exo_tokenizer *t = c->t;
  json_t *v;
  int rc;

  if (!json_is_object(model)) {
    LERR(c, "model must be an object (got %s)", model ? json_type_name(model) : "nothing");
    return -EINVAL;
  }
  v = json_object_get(model, "type");
  if (v && !json_is_string(v)) {
    LERR(c, "model.type must be a string (got %s)", json_type_name(v));
    return -EINVAL;
  }
  if (v && strcmp(json_string_value(v), "BPE") != 0) {
    LERR(c, "model type '%s' is not supported (only BPE)", json_string_value(v));
    return -EINVAL;
  }
  v = json_object_get(model, "dropout");
  if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0.0)) {
    LERR(c, "model.dropout is not supported (encoding must be deterministic)");
    return -EINVAL;
  }
  const char *nope[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (size_t i = 0; i < 2; i++) {
    v = json_object_get(model, nope[i]);
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0)) {
      LERR(c, "model.%s is not supported", nope[i]);
      return -EINVAL;
    }
  }
  if ((rc = get_bool(c, model, "model", "ignore_merges", 0, &t->ignore_merges)) ||
      (rc = get_bool(c, model, "model", "byte_fallback", 0, &t->byte_fallback)) ||
      (rc = get_bool(c, model, "model", "fuse_unk", 0, &t->fuse_unk)))
    return rc;
  return 0;
}

/* First pass over vocab and added tokens: the id space. */
static int size_ids(struct loadctx *c, const json_t *vocab, const json_t *added)
{
  int32_t max = -1;
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)vocab, key, v) {
    int32_t id;
    int rc = json_id(c, v, "model.vocab", key, &id);
    if (rc)
      return rc;
    if (id > max)
      max = id;
  }
  size_t i;
  json_array_foreach(added, i, v) {
    int32_t id;
    if (!json_is_object(v)) {
      LERR(c, "added_tokens[%zu] must be an object (got %s)", i, json_type_name(v));
      return -EINVAL;
    }
    json_t *content = json_object_get(v, "content");
    int rc = json_id(c, json_object_get(v, "id"), "added_tokens",
                     json_is_string(content) ? json_string_value(content) : "?", &id);
    if (rc)
      return rc;
    if (id > max)
      max = id;
  }
  c->t->n_ids = max + 1;
  return 0;
}

static int load_vocab(struct loadctx *c, const json_t *vocab)
{
  struct exo_tokenizer *t = c->t;
  const char *key;
  json_t *v;
  int rc = strmap_init(&t->vocab, json_object_size(vocab));
  if (rc)
    return rc;
  json_object_foreach((json_t *)vocab, key, v) {
    int32_t id = (int32_t)json_integer_value(v); /* checked by size_ids */
    if ((rc = set_id_str(c, "model.vocab", key, strlen(key), id)))
      return rc;
    strmap_put(&t->vocab, t->id_str[id], strlen(key), id);
  }
  return 0;
}

static int load_merges(struct loadctx *c, const json_t *merges)
{
  struct exo_tokenizer *t = c->t;
  size_t n = json_array_size(merges), cap = 16, i;
  json_t *e;
  char *cat = NULL;
  size_t catcap = 0;
  int rc = 0;

  while (cap < n * 2)
    cap <<= 1;
  t->merges.slots = calloc(cap, sizeof(*t->merges.slots));
  if (!t->merges.slots)
    return -ENOMEM;
  t->merges.cap = cap;
  json_array_foreach(merges, i, e) {
    const char *a, *b;
    size_t alen, blen;
    if ((rc = merge_parts(c, e, i, &a, &alen, &b, &blen)))
      goto out;
    int32_t ia = strmap_get(&t->vocab, a, alen), ib = strmap_get(&t->vocab, b, blen);
    if (ia < 0 || ib < 0) {
      LERR(c, "model.merges[%zu] '%.*s %.*s': token '%.*s' is not in the vocab", i, (int)alen,
           a, (int)blen, b, ia < 0 ? (int)alen : (int)blen, ia < 0 ? a : b);
      rc = -EINVAL;
      goto out;
    }
    if (alen + blen > catcap) {
      char *nc = realloc(cat, alen + blen);
      if (!nc) {
        rc = -ENOMEM;
        goto out;
      }
      cat = nc;
      catcap = alen + blen;
    }
    memcpy(cat, a, alen);
    memcpy(cat + alen, b, blen);
    int32_t im = strmap_get(&t->vocab, cat, alen + blen);
    if (im < 0) {
      LERR(c, "model.merges[%zu] '%.*s %.*s': merged token '%.*s' is not in the vocab", i,
           (int)alen, a, (int)blen, b, (int)(alen + blen), cat);
      rc = -EINVAL;
      goto out;
    }
    pairmap_put(&t->merges, ia, ib, (int32_t)i, im);
  }
out:
  free(cat);
  return rc;
}

static int load_model(struct loadctx *c, const json_t *model)
{
  struct exo_tokenizer *t = c->t;
  int rc;
  json_t *v;

  if ((rc = load_vocab(c, json_object_get(model, "vocab"))))
    return rc;
  if ((rc = load_merges(c, json_object_get(model, "merges"))))
    return rc;
  t->unk_id = -1;
  v = json_object_get(model, "unk_token");
  if (v && !json_is_null(v)) {
    if (!json_is_string(v)) {
      LERR(c, "model.unk_token must be a string or null (got %s)", json_type_name(v));
      return -EINVAL;
    }
    t->unk_id = strmap_get(&t->vocab, json_string_value(v), json_string_length(v));
    if (t->unk_id < 0) {
      LERR(c, "model.unk_token '%s' is not in the vocab", json_string_value(v));
      return -EINVAL;
    }
  }
  for (int b = 0; b < 256; b++) {
    char name[8];
    snprintf(name, sizeof(name), "<0x%02X>", b);
    t->byte_ids[b] = strmap_get(&t->vocab, name, 6);
  }
  return 0;
}

/* ---- added tokens ---- */
static int load_added(struct loadctx *c, const json_t *arr)
{
  struct exo_tokenizer *t = c->t;
  size_t n = json_array_size(arr), i, count[256] = {0};
  json_t *e;
  int rc;

  if (!n)
    return 0;
  t->added = calloc(n, sizeof(*t->added));
  if (!t->added)
    return -ENOMEM;
  json_array_foreach(arr, i, e) {
    struct added_token *a = &t->added[i];
    json_t *content = json_object_get(e, "content");
    int single_word;
    char where[48];
    if (!json_is_string(content) || json_string_length(content) == 0) {
      LERR(c, "added_tokens[%zu].content must be a non-empty string", i);
      return -EINVAL;
    }
    snprintf(where, sizeof(where), "added_tokens[%zu]", i);
    if ((rc = get_bool(c, e, where, "single_word", 0, &single_word)) ||
        (rc = get_bool(c, e, where, "lstrip", 0, &a->lstrip)) ||
        (rc = get_bool(c, e, where, "rstrip", 0, &a->rstrip)) ||
        (rc = get_bool(c, e, where, "normalized", 0, &a->normalized)) ||
        (rc = get_bool(c, e, where, "special", 0, &a->special)))
      return rc;
    if (single_word) {
      LERR(c, "added_tokens[%zu] '%s': single_word true is not supported", i,
           json_string_value(content));
      return -EINVAL;
    }
    a->id = (int32_t)json_integer_value(json_object_get(e, "id")); /* checked by size_ids */
    a->len = json_string_length(content);
    a->content = malloc(a->len + 1);
    if (!a->content)
      return -ENOMEM;
    memcpy(a->content, json_string_value(content), a->len + 1);
    t->n_added = i + 1;
    /* An added token may repeat a vocab entry's string at the same id; the added
     * content then wins for decode, as HF's id_to_token looks there first. */
    if (t->id_str[a->id] && !(t->id_flags[a->id] & ID_ADDED) &&
        strcmp(t->id_str[a->id], a->content) != 0) {
      LERR(c, "added_tokens[%zu] '%s': id %d is already the vocab token '%s'", i, a->content,
           (int)a->id, t->id_str[a->id]);
      return -EINVAL;
    }
    if (t->id_flags[a->id] & ID_ADDED) {
      LERR(c, "added_tokens[%zu] '%s': id %d is already added token '%s'", i, a->content,
           (int)a->id, t->id_str[a->id]);
      return -EINVAL;
    }
    /* the vocab map borrows id_str, so an identical vocab string is kept as is */
    if (!t->id_str[a->id] && (rc = set_id_str(c, "added_tokens", a->content, a->len, a->id)))
      return rc;
    t->id_flags[a->id] |= ID_ADDED | (a->special ? ID_SPECIAL : 0);
    count[(uint8_t)a->content[0]]++;
  }
  for (int b = 0; b < 256; b++) {
    if (!count[b])
      continue;
    t->added_by_byte[b] = malloc((count[b] + 1) * sizeof(int32_t));
    if (!t->added_by_byte[b])
      return -ENOMEM;
    size_t k = 0;
    for (i = 0; i < n; i++)
      if ((uint8_t)t->added[i].content[0] == b)
        t->added_by_byte[b][k++] = (int32_t)i;
    /* longest first, stable (insertion sort: lists are short) */
    for (size_t x = 1; x < k; x++) {
      int32_t v = t->added_by_byte[b][x];
      size_t y = x;
      for (; y > 0 && t->added[t->added_by_byte[b][y - 1]].len < t->added[v].len; y--)
        t->added_by_byte[b][y] = t->added_by_byte[b][y - 1];
      t->added_by_byte[b][y] = v;
    }
    t->added_by_byte[b][k] = -1;
  }
  return 0;
}

/* ---- pipeline components ---- */
static int load_pretok(struct loadctx *c, const json_t *p, int depth)
{
  struct exo_tokenizer *t = c->t;
  const char *type;
  int rc;

  if (json_is_null(p))
    return 0;
  if (!json_is_object(p)) {
    LERR(c, "pre_tokenizer must be an object or null (got %s)", json_type_name(p));
    return -EINVAL;
  }
  if (!(type = get_type(c, p, "pre_tokenizer")))
    return -EINVAL;
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(p, "pretokenizers"), *e;
    size_t i;
    if (!json_is_array(list)) {
      LERR(c, "pre_tokenizer Sequence.pretokenizers must be an array");
      return -EINVAL;
    }
    if (depth >= EXO_TOK_MAX_DEPTH) {
      LERR(c, "pre_tokenizer Sequences nest deeper than %d", EXO_TOK_MAX_DEPTH);
      return -EINVAL;
    }
    json_array_foreach(list, i, e) {
      if (json_is_null(e)) {
        LERR(c, "pre_tokenizer Sequence.pretokenizers[%zu] is null", i);
        return -EINVAL;
      }
      if ((rc = load_pretok(c, e, depth + 1)))
        return rc;
    }
    return 0;
  }
  if (t->n_pre >= EXO_TOK_MAX_PRETOK) {
    LERR(c, "more than %d pre_tokenizer stages", EXO_TOK_MAX_PRETOK);
    return -EINVAL;
  }
  struct pretok *pt = &t->pre[t->n_pre];
  memset(pt, 0, sizeof(*pt));
  if (strcmp(type, "ByteLevel") == 0) {
    pt->kind = PRETOK_BYTELEVEL;
    if ((rc = get_bool(c, p, "pre_tokenizer ByteLevel", "add_prefix_space", 1,
                       &pt->add_prefix_space)) ||
        (rc = get_bool(c, p, "pre_tokenizer ByteLevel", "use_regex", 1, &pt->use_regex)))
      return rc;
    if (pt->use_regex && !t->gpt2_re &&
        (rc = compile_re(c, "pre_tokenizer ByteLevel", exo_gpt2_pattern,
                         sizeof(exo_gpt2_pattern) - 1, 0, &t->gpt2_re)))
      return rc;
  } else if (strcmp(type, "Split") == 0) {
    json_t *pat = json_object_get(p, "pattern"), *s;
    const char *beh;
    pt->kind = PRETOK_SPLIT;
    if (!json_is_object(pat)) {
      LERR(c, "pre_tokenizer Split.pattern must be an object {\"Regex\"|\"String\": ...}");
      return -EINVAL;
    }
    int literal = 0;
    if ((s = json_object_get(pat, "Regex")) == NULL) {
      s = json_object_get(pat, "String");
      literal = 1;
    }
    if (!json_is_string(s) || json_string_length(s) == 0) {
      LERR(c, "pre_tokenizer Split.pattern needs a non-empty \"Regex\" or \"String\"");
      return -EINVAL;
    }
    if ((rc = compile_re(c, "pre_tokenizer Split.pattern", json_string_value(s),
                         json_string_length(s), literal, &pt->re)))
      return rc;
    t->n_pre++; /* owned from here: freed with the tokenizer even if we fail below */
    if ((rc = get_bool(c, p, "pre_tokenizer Split", "invert", 0, &pt->invert)))
      return rc;
    json_t *b = json_object_get(p, "behavior");
    beh = json_is_string(b) ? json_string_value(b) : "";
    if (strcmp(beh, "Removed") == 0)
      pt->behavior = SPLIT_REMOVED;
    else if (strcmp(beh, "Isolated") == 0)
      pt->behavior = SPLIT_ISOLATED;
    else if (strcmp(beh, "MergedWithPrevious") == 0)
      pt->behavior = SPLIT_MERGED_PREV;
    else if (strcmp(beh, "MergedWithNext") == 0)
      pt->behavior = SPLIT_MERGED_NEXT;
    else if (strcmp(beh, "Contiguous") == 0)
      pt->behavior = SPLIT_CONTIGUOUS;
    else {
      LERR(c, "pre_tokenizer Split.behavior '%s' is not one of Removed, Isolated, "
              "MergedWithPrevious, MergedWithNext, Contiguous", beh);
      return -EINVAL;
    }
    return 0;
  } else if (strcmp(type, "Digits") == 0) {
    int individual;
    if ((rc = get_bool(c, p, "pre_tokenizer Digits", "individual_digits", 0, &individual)))
      return rc;
    pt->kind = PRETOK_SPLIT;
    pt->behavior = SPLIT_ISOLATED;
    /* HF splits on char::is_numeric (Unicode N*): each digit, or each run, alone */
    const char *pat = individual ? "\\p{N}" : "\\p{N}+";
    if ((rc = compile_re(c, "pre_tokenizer Digits", pat, strlen(pat), 0, &pt->re)))
      return rc;
  } else {
    LERR(c, "pre_tokenizer type '%s' is not supported", type);
    return -EINVAL;
  }
  t->n_pre++;
  return 0;
}

static int load_template(struct loadctx *c, const json_t *p)
{
  struct exo_tokenizer *t = c->t;
  json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens");
  json_t *e;
  size_t i;
  int seen_a = 0;

  if (t->has_template) {
    LERR(c, "post_processor: more than one TemplateProcessing is not supported");
    return -EINVAL;
  }
  if (!json_is_array(single)) {
    LERR(c, "post_processor TemplateProcessing.single must be an array");
    return -EINVAL;
  }
  json_array_foreach(single, i, e) {
    json_t *seq = json_object_get(e, "Sequence"), *sp = json_object_get(e, "SpecialToken");
    if (json_is_object(seq)) {
      json_t *id = json_object_get(seq, "id");
      if (!json_is_string(id) || strcmp(json_string_value(id), "A") != 0 || seen_a) {
        LERR(c, "post_processor TemplateProcessing.single[%zu]: only one $A sequence is "
                "supported", i);
        return -EINVAL;
      }
      seen_a = 1;
    } else if (json_is_object(sp)) {
      json_t *name = json_object_get(sp, "id");
      json_t *st = json_is_string(name) ? json_object_get(specials, json_string_value(name)) : NULL;
      json_t *ids = st ? json_object_get(st, "ids") : NULL, *idv;
      size_t k;
      if (!json_is_array(ids)) {
        LERR(c, "post_processor TemplateProcessing.single[%zu]: special token '%s' has no ids "
                "in special_tokens", i, json_is_string(name) ? json_string_value(name) : "?");
        return -EINVAL;
      }
      json_array_foreach(ids, k, idv) {
        int32_t id;
        int rc = json_id(c, idv, "post_processor special_tokens", json_string_value(name), &id);
        if (rc)
          return rc;
        if (id >= t->n_ids || !t->id_str[id]) {
          LERR(c, "post_processor special token '%s' id %d is not in the vocab",
               json_string_value(name), (int)id);
          return -EINVAL;
        }
        int32_t *arr = seen_a ? t->tmpl_post : t->tmpl_pre;
        size_t *na = seen_a ? &t->n_tmpl_post : &t->n_tmpl_pre;
        if (*na >= EXO_TOK_MAX_TEMPLATE) {
          LERR(c, "post_processor template has more than %d special ids on one side",
               EXO_TOK_MAX_TEMPLATE);
          return -EINVAL;
        }
        arr[(*na)++] = id;
      }
    } else {
      LERR(c, "post_processor TemplateProcessing.single[%zu] must hold Sequence or "
              "SpecialToken", i);
      return -EINVAL;
    }
  }
  if (!seen_a) {
    LERR(c, "post_processor TemplateProcessing.single has no $A sequence");
    return -EINVAL;
  }
  t->has_template = 1;
  return 0;
}

static int load_post(struct loadctx *c, const json_t *p, int depth)
{
  const char *type;
  int rc;
  if (json_is_null(p))
    return 0;
  if (!json_is_object(p)) {
    LERR(c, "post_processor must be an object or null (got %s)", json_type_name(p));
    return -EINVAL;
  }
  if (!(type = get_type(c, p, "post_processor")))
    return -EINVAL;
  if (strcmp(type, "ByteLevel") == 0)
    return 0; /* only trims offsets, which we do not produce */
  if (strcmp(type, "TemplateProcessing") == 0)
    return load_template(c, p);
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(p, "processors"), *e;
    size_t i;
    if (!json_is_array(list) || depth >= EXO_TOK_MAX_DEPTH) {
      LERR(c, "post_processor Sequence.processors must be an array (nested < %d)",
           EXO_TOK_MAX_DEPTH);
      return -EINVAL;
    }
    json_array_foreach(list, i, e) {
      if ((rc = load_post(c, e, depth + 1)))
        return rc;
    }
    return 0;
  }
  LERR(c, "post_processor type '%s' is not supported", type);
  return -EINVAL;
}

static int load_decoder(struct loadctx *c, const json_t *d, int depth, int *has_bytelevel)
{
  const char *type;
  int rc;
  if (json_is_null(d)) {
    LERR(c, "decoder is null: not supported (a ByteLevel decoder is required)");
    return -EINVAL;
  }
  if (!json_is_object(d)) {
    LERR(c, "decoder must be an object (got %s)", json_type_name(d));
    return -EINVAL;
  }
  if (!(type = get_type(c, d, "decoder")))
    return -EINVAL;
  if (strcmp(type, "ByteLevel") == 0) {
    *has_bytelevel = 1;
    return 0;
  }
  if (strcmp(type, "ByteFallback") == 0) {
    c->t->dec_byte_fallback = 1;
    return 0;
  }
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(d, "decoders"), *e;
    size_t i;
    if (!json_is_array(list) || depth >= EXO_TOK_MAX_DEPTH) {
      LERR(c, "decoder Sequence.decoders must be an array (nested < %d)", EXO_TOK_MAX_DEPTH);
      return -EINVAL;
    }
    json_array_foreach(list, i, e) {
      if ((rc = load_decoder(c, e, depth + 1, has_bytelevel)))
        return rc;
    }
    return 0;
  }
  LERR(c, "decoder type '%s' is not supported", type);
  return -EINVAL;
}

/* Precomputes each id's decoded bytes: added tokens give their content verbatim; model
 * tokens map back through bytes_to_unicode (a token with a character outside the map
 * keeps its own UTF-8, as HF's ByteLevel decoder does); "<0xNN>" under ByteFallback is
 * that byte. */
static int build_decode_table(struct exo_tokenizer *t)
{
  size_t total = 0;
  if (t->n_ids <= 0 || t->n_ids > EXO_TOK_MAX_ID)
    return -EINVAL; /* checked at load; restated so allocation sizes are plainly bounded */
  for (int32_t id = 0; id < t->n_ids; id++)
    if (t->id_str[id])
      total += strlen(t->id_str[id]);
  t->dec_off = calloc((size_t)t->n_ids, sizeof(*t->dec_off));
  t->dec_len = calloc((size_t)t->n_ids, sizeof(*t->dec_len));
  t->dec_buf = malloc(total + 1);
  if (!t->dec_off || !t->dec_len || !t->dec_buf)
    return -ENOMEM;
  size_t pos = 0;
  for (int32_t id = 0; id < t->n_ids; id++) {
    const char *s = t->id_str[id];
    t->dec_off[id] = pos;
    if (!s)
      continue;
    size_t n = strlen(s), start = pos;
    int byte = -1;
    if (!(t->id_flags[id] & ID_ADDED) && t->dec_byte_fallback && n == 6 &&
        memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
      char hex[3] = {s[3], s[4], 0}, *end;
      long v = strtol(hex, &end, 16);
      if (*end == 0 && end == hex + 2)
        byte = (int)v;
    }
    if (byte >= 0) {
      t->dec_buf[pos++] = (char)byte;
    } else if (t->id_flags[id] & ID_ADDED) {
      memcpy(t->dec_buf + pos, s, n);
      pos += n;
    } else {
      const uint8_t *p = (const uint8_t *)s;
      size_t i = 0;
      int ok = 1;
      while (i < n) {
        uint32_t cp;
        size_t len;
        if (exo_utf8_decode(p + i, n - i, &cp, &len) != EXO_UTF8_OK || cp >= 324 ||
            t->cp_to_byte[cp] < 0) {
          ok = 0;
          break;
        }
        t->dec_buf[pos++] = (char)t->cp_to_byte[cp];
        i += len;
      }
      if (!ok) {
        pos = start;
        memcpy(t->dec_buf + pos, s, n);
        pos += n;
      }
    }
    t->dec_len[id] = (uint32_t)(pos - start);
    if (pos - start > t->max_dec_len)
      t->max_dec_len = pos - start;
  }
  return 0;
}

void exo_tokenizer_free(struct exo_tokenizer *t)
{
  if (!t)
    return;
  if (t->id_str)
    for (int32_t i = 0; i < t->n_ids; i++)
      free(t->id_str[i]);
  free(t->id_str);
  free(t->id_flags);
  free(t->dec_off);
  free(t->dec_len);
  free(t->dec_buf);
  free(t->vocab.slots);
  free(t->merges.slots);
  for (size_t i = 0; i < t->n_added; i++)
    free(t->added[i].content);
  free(t->added);
  for (int b = 0; b < 256; b++)
    free(t->added_by_byte[b]);
  for (size_t i = 0; i < t->n_pre; i++)
    pcre2_code_free(t->pre[i].re);
  pcre2_code_free(t->gpt2_re);
  free(t);
}

static int check_null_or_absent(struct loadctx *c, const json_t *root, const char *key)
{
  json_t *v = json_object_get(root, key);
  if (v && !json_is_null(v)) {
    LERR(c, "%s is set: not supported (must be null)", key);
    return -EINVAL;
  }
  return 0;
}

int exo_tokenizer_load_buffer(const char *json, size_t len, const char *origin,
                              struct exo_tokenizer **out, char *err, size_t errlen)
{
  struct loadctx c = {NULL, origin ? origin : "tokenizer.json", err, errlen};
  json_error_t jerr;
  json_t *root = NULL, *model, *vocab, *merges, *added, *v;
  int rc = -EINVAL, has_bytelevel = 0;

  *out = NULL;
  root = json_loadb(json, len, 0, &jerr);
  if (!root) {
    exo_errf(err, errlen, "%s:%d:%d: JSON syntax error: %s", c.origin, jerr.line, jerr.column,
           jerr.text);
    return -EINVAL;
  }
  if (!(c.t = calloc(1, sizeof(*c.t)))) {
    rc = -ENOMEM;
    goto fail;
  }
  build_byte_tables(c.t);
  if (!json_is_object(root)) {
    LERR(&c, "top level must be an object (got %s)", json_type_name(root));
    goto fail;
  }
  if ((rc = check_null_or_absent(&c, root, "truncation")) ||
      (rc = check_null_or_absent(&c, root, "padding")))
    goto fail;
  rc = -EINVAL;
  v = json_object_get(root, "normalizer");
  if (v && !json_is_null(v)) {
    const char *type = json_is_object(v) ? get_type(&c, v, "normalizer") : NULL;
    if (type)
      LERR(&c, "normalizer type '%s' is not supported", type);
    else if (!json_is_object(v))
      LERR(&c, "normalizer must be an object or null (got %s)", json_type_name(v));
    goto fail;
  }
  model = json_object_get(root, "model");
  if ((rc = load_model_fields(&c, model)))
    goto fail;
  rc = -EINVAL;
  vocab = json_object_get(model, "vocab");
  merges = json_object_get(model, "merges");
  added = json_object_get(root, "added_tokens");
  if (!json_is_object(vocab)) {
    LERR(&c, "model.vocab must be an object (got %s)", vocab ? json_type_name(vocab) : "nothing");
    goto fail;
  }
  if (!json_is_array(merges)) {
    LERR(&c, "model.merges must be an array (got %s)", merges ? json_type_name(merges) : "nothing");
    goto fail;
  }
  if (added && !json_is_array(added) && !json_is_null(added)) {
    LERR(&c, "added_tokens must be an array (got %s)", json_type_name(added));
    goto fail;
  }
  if ((rc = size_ids(&c, vocab, added)))
    goto fail;
  if (c.t->n_ids == 0) {
    LERR(&c, "model.vocab is empty");
    rc = -EINVAL;
    goto fail;
  }
  c.t->id_str = calloc((size_t)c.t->n_ids, sizeof(char *));
  c.t->id_flags = calloc((size_t)c.t->n_ids, 1);
  if (!c.t->id_str || !c.t->id_flags) {
    rc = -ENOMEM;
    goto fail;
  }
  if ((rc = load_model(&c, model)) || (rc = load_added(&c, added)))
    goto fail;
  v = json_object_get(root, "pre_tokenizer");
  if (v && (rc = load_pretok(&c, v, 0)))
    goto fail;
  v = json_object_get(root, "post_processor");
  if (v && (rc = load_post(&c, v, 0)))
    goto fail;
  if ((rc = load_decoder(&c, json_object_get(root, "decoder") ? json_object_get(root, "decoder")
                                                              : json_null(),
                         0, &has_bytelevel)))
    goto fail;
  if (!has_bytelevel) {
    LERR(&c, "decoder has no ByteLevel step: not supported");
    rc = -EINVAL;
    goto fail;
  }
  if ((rc = build_decode_table(c.t)))
    goto fail;
  json_decref(root);
  *out = c.t;
  return 0;
fail:
  if (rc == -ENOMEM)
    exo_errf(err, errlen, "%s: out of memory", c.origin);
  exo_tokenizer_free(c.t);
  json_decref(root);
  return rc;
}

int exo_tokenizer_load(const char *path, struct exo_tokenizer **out, char *err, size_t errlen)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long size;
  int rc;

  *out = NULL;
  if (!f) {
    rc = -errno;
    exo_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return rc;
  }
  if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    exo_errf(err, errlen, "%s: cannot size: %s", path, strerror(errno));
    rc = -EIO;
    goto fail;
  }
  if (!(buf = malloc((size_t)size + 1))) {
    exo_errf(err, errlen, "%s: out of memory (%ld bytes)", path, size);
    rc = -ENOMEM;
    goto fail;
  }
  if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
    exo_errf(err, errlen, "%s: short read", path);
    rc = -EIO;
    goto fail;
  }
  rc = exo_tokenizer_load_buffer(buf, (size_t)size, path, out, err, errlen);
fail:
  free(buf);
  fclose(f);
  return rc;
}

/* ---- encode ---- */
struct idvec {
  int32_t *v;
  size_t n, cap;
};

static int idvec_push(struct idvec *iv, int32_t id)
{
  if (iv->n == iv->cap) {
    size_t nc = iv->cap ? iv->cap * 2 : 64;
    int32_t *nv = realloc(iv->v, nc * sizeof(*nv));
    if (!nv)
      return -ENOMEM;
    iv->v = nv;
    iv->cap = nc;
  }
  iv->v[iv->n++] = id;
  return 0;
}

/* Pieces of text during pre-tokenization: spans over an owned byte arena. */
struct span {
  size_t off, len;
};
struct pieces {
  char *buf;
  size_t len, cap;
  struct span *v;
  size_t n, vcap;
};

static int pieces_reserve(struct pieces *p, size_t more)
{
  if (p->len + more > p->cap) {
    size_t nc = p->cap ? p->cap : 256;
    while (nc < p->len + more)
      nc *= 2;
    char *nb = realloc(p->buf, nc);
    if (!nb)
      return -ENOMEM;
    p->buf = nb;
    p->cap = nc;
  }
  return 0;
}

/* Starts a new piece at the arena's end; bytes are appended with pieces_append. */
static int pieces_open(struct pieces *p)
{
  if (p->n == p->vcap) {
    size_t nc = p->vcap ? p->vcap * 2 : 32;
    struct span *nv = realloc(p->v, nc * sizeof(*nv));
    if (!nv)
      return -ENOMEM;
    p->v = nv;
    p->vcap = nc;
  }
  p->v[p->n].off = p->len;
  p->v[p->n].len = 0;
  p->n++;
  return 0;
}

static int pieces_append(struct pieces *p, const char *s, size_t n)
{
  int rc = pieces_reserve(p, n);
  if (rc)
    return rc;
  memcpy(p->buf + p->len, s, n);
  p->len += n;
  p->v[p->n - 1].len += n;
  return 0;
}

static int pieces_add(struct pieces *p, const char *s, size_t n)
{
  if (n == 0)
    return 0; /* HF drops empty splits */
  int rc = pieces_open(p);
  return rc ? rc : pieces_append(p, s, n);
}

static void pieces_clear(struct pieces *p)
{
  p->len = 0;
  p->n = 0;
}

static void pieces_fini(struct pieces *p)
{
  free(p->buf);
  free(p->v);
}

struct mspan {
  size_t s, e;
  int match;
};

struct enc_ctx {
  const struct exo_tokenizer *t;
  pcre2_match_data *md;
  struct pieces a, b;
  struct mspan *ms;
  size_t ms_cap;
  /* BPE scratch, per symbol */
  int32_t *sym_id, *sym_prev, *sym_next;
  size_t sym_cap;
  struct heap_item {
    int32_t rank, pos, id;
  } *heap;
  size_t heap_n, heap_cap;
  char *tmp;
  size_t tmp_cap;
};

static int ms_push(struct enc_ctx *c, size_t *n, size_t s, size_t e, int match)
{
  if (*n == c->ms_cap) {
    size_t nc = c->ms_cap ? c->ms_cap * 2 : 64;
    struct mspan *nv = realloc(c->ms, nc * sizeof(*nv));
    if (!nv)
      return -ENOMEM;
    c->ms = nv;
    c->ms_cap = nc;
  }
  c->ms[*n].s = s;
  c->ms[*n].e = e;
  c->ms[*n].match = match;
  (*n)++;
  return 0;
}

/* HF's Pattern::find_matches for a regex: match and non-match spans covering s. */
static int regex_spans(struct enc_ctx *c, const pcre2_code *re, const char *s, size_t n,
                       size_t *count)
{
  size_t prev = 0, offs = 0;
  int rc;
  *count = 0;
  while (offs <= n) {
    int r = pcre2_match(re, (PCRE2_SPTR)s, n, offs, PCRE2_NO_UTF_CHECK, c->md, NULL);
    if (r == PCRE2_ERROR_NOMATCH)
      break;
    if (r < 0)
      return -EINVAL; /* match/depth limit: refuse rather than tokenize differently */
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    size_t ms = ov[0], me = ov[1];
    if (prev != ms && (rc = ms_push(c, count, prev, ms, 0)))
      return rc;
    if ((rc = ms_push(c, count, ms, me, 1)))
      return rc;
    prev = me;
    if (me == ms) { /* empty match: step one character so the search moves on */
      if (ms >= n)
        break;
      offs = ms + 1;
      while (offs < n && ((uint8_t)s[offs] & 0xC0) == 0x80)
        offs++;
    } else {
      offs = me;
    }
  }
  if (prev != n && (rc = ms_push(c, count, prev, n, 0)))
    return rc;
  return 0;
}

static int split_stage(struct enc_ctx *c, const struct pretok *pt, const struct pieces *in,
                       struct pieces *out)
{
  int rc;
  for (size_t i = 0; i < in->n; i++) {
    const char *s = in->buf + in->v[i].off;
    size_t n = in->v[i].len, cnt, k, o = 0;
    if ((rc = regex_spans(c, pt->re, s, n, &cnt)))
      return rc;
    struct mspan *m = c->ms;
    if (pt->invert)
      for (k = 0; k < cnt; k++)
        m[k].match = !m[k].match;
    /* fold into m[0..o) as HF's SplitDelimiterBehavior does, then emit non-empty */
    int prev_match = 0;
    switch (pt->behavior) {
    case SPLIT_REMOVED:
      for (k = 0; k < cnt; k++)
        if (!m[k].match)
          m[o++] = m[k];
      break;
    case SPLIT_ISOLATED:
      o = cnt;
      break;
    case SPLIT_MERGED_PREV:
      for (k = 0; k < cnt; k++) {
        if (m[k].match && !prev_match && o > 0)
          m[o - 1].e = m[k].e;
        else
          m[o++] = m[k];
        prev_match = m[k].match;
      }
      break;
    case SPLIT_MERGED_NEXT:
      /* walk backwards: a match joins the span after it unless that one was a match */
      for (k = cnt; k-- > 0;) {
        struct mspan cur = m[k];
        if (cur.match && !prev_match && o > 0)
          m[cnt - o].s = cur.s;
        else {
          o++;
          m[cnt - o] = cur;
        }
        prev_match = cur.match;
      }
      memmove(m, m + cnt - o, o * sizeof(*m));
      break;
    case SPLIT_CONTIGUOUS:
      for (k = 0; k < cnt; k++) {
        if (o > 0 && m[k].match == prev_match)
          m[o - 1].e = m[k].e;
        else
          m[o++] = m[k];
        prev_match = m[k].match;
      }
      break;
    }
    for (k = 0; k < o; k++)
      if ((rc = pieces_add(out, s + m[k].s, m[k].e - m[k].s)))
        return rc;
  }
  return 0;
}

static int bytelevel_map(struct enc_ctx *c, struct pieces *out, const char *s, size_t n)
{
  const struct exo_tokenizer *t = c->t;
  int rc;
  if (n == 0)
    return 0;
  if ((rc = pieces_open(out)) || (rc = pieces_reserve(out, n * 2)))
    return rc;
  for (size_t i = 0; i < n; i++) {
    uint8_t b = (uint8_t)s[i];
    if ((rc = pieces_append(out, t->byte_str[b], t->byte_str_len[b])))
      return rc;
  }
  return 0;
}

static int bytelevel_stage(struct enc_ctx *c, const struct pretok *pt, const struct pieces *in,
                           struct pieces *out)
{
  int rc;
  for (size_t i = 0; i < in->n; i++) {
    const char *s = in->buf + in->v[i].off;
    size_t n = in->v[i].len;
    if (pt->add_prefix_space && (n == 0 || s[0] != ' ')) {
      if (n + 1 > c->tmp_cap) {
        char *nt = realloc(c->tmp, n + 1);
        if (!nt)
          return -ENOMEM;
        c->tmp = nt;
        c->tmp_cap = n + 1;
      }
      c->tmp[0] = ' ';
      memcpy(c->tmp + 1, s, n);
      s = c->tmp;
      n++;
    }
    if (!pt->use_regex) {
      if ((rc = bytelevel_map(c, out, s, n)))
        return rc;
      continue;
    }
    size_t cnt;
    if ((rc = regex_spans(c, c->t->gpt2_re, s, n, &cnt)))
      return rc;
    for (size_t k = 0; k < cnt; k++)
      if ((rc = bytelevel_map(c, out, s + c->ms[k].s, c->ms[k].e - c->ms[k].s)))
        return rc;
  }
  return 0;
}

/* ---- BPE over one pre-tokenized word ---- */
static int heap_less(const struct heap_item *x, const struct heap_item *y)
{
  return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static int heap_push(struct enc_ctx *c, struct heap_item it)
{
  if (c->heap_n == c->heap_cap) {
    size_t nc = c->heap_cap ? c->heap_cap * 2 : 64;
    struct heap_item *nh = realloc(c->heap, nc * sizeof(*nh));
    if (!nh)
      return -ENOMEM;
    c->heap = nh;
    c->heap_cap = nc;
  }
  size_t i = c->heap_n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(&it, &c->heap[p]))
      break;
    c->heap[i] = c->heap[p];
    i = p;
  }
  c->heap[i] = it;
  return 0;
}

static struct heap_item heap_pop(struct enc_ctx *c)
{
  struct heap_item top = c->heap[0], last = c->heap[--c->heap_n];
  size_t i = 0, n = c->heap_n;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const struct heap_item *best = &last;
    if (l < n && heap_less(&c->heap[l], best)) {
      m = l;
      best = &c->heap[l];
    }
    if (r < n && heap_less(&c->heap[r], best))
      m = r;
    if (m == i)
      break;
    c->heap[i] = c->heap[m];
    i = m;
  }
  if (n)
    c->heap[i] = last;
  return top;
}

static int push_pair(struct enc_ctx *c, int32_t pos)
{
  if (pos < 0)
    return 0;
  int32_t nx = c->sym_next[pos];
  if (nx < 0)
    return 0;
  const struct pairmap_slot *m = pairmap_get(&c->t->merges, c->sym_id[pos], c->sym_id[nx]);
  if (!m)
    return 0;
  struct heap_item it = {m->rank, pos, m->id};
  return heap_push(c, it);
}

static int sym_reserve(struct enc_ctx *c, size_t n)
{
  if (n <= c->sym_cap)
    return 0;
  size_t nc = c->sym_cap ? c->sym_cap : 64;
  while (nc < n)
    nc *= 2;
  int32_t *a = realloc(c->sym_id, nc * sizeof(int32_t));
  if (!a)
    return -ENOMEM;
  c->sym_id = a;
  if (!(a = realloc(c->sym_prev, nc * sizeof(int32_t))))
    return -ENOMEM;
  c->sym_prev = a;
  if (!(a = realloc(c->sym_next, nc * sizeof(int32_t))))
    return -ENOMEM;
  c->sym_next = a;
  c->sym_cap = nc;
  return 0;
}

/* Symbols are the word's characters (or byte-fallback/unk stand-ins); pairs merge
 * lowest rank first, leftmost on ties, with stale heap entries skipped. O(n log n). */
static int bpe_word(struct enc_ctx *c, const char *w, size_t n, struct idvec *out)
{
  const struct exo_tokenizer *t = c->t;
  int rc;
  int32_t nsym = 0, whole;

  if (t->ignore_merges && (whole = strmap_get(&t->vocab, w, n)) >= 0)
    return idvec_push(out, whole);
  /* at most one symbol per byte, byte fallback included */
  if ((rc = sym_reserve(c, n)))
    return rc;
  int prev_unk = 0;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t len;
    if (exo_utf8_decode((const uint8_t *)w + i, n - i, &cp, &len) != EXO_UTF8_OK)
      len = 1; /* cannot happen: input validated; be safe rather than loop */
    int32_t id = strmap_get(&t->vocab, w + i, len);
    if (id >= 0) {
      c->sym_id[nsym++] = id;
      prev_unk = 0;
    } else {
      int done = 0;
      if (t->byte_fallback) {
        size_t k;
        for (k = 0; k < len && t->byte_ids[(uint8_t)w[i + k]] >= 0; k++)
          ;
        if (k == len) {
          for (k = 0; k < len; k++)
            c->sym_id[nsym++] = t->byte_ids[(uint8_t)w[i + k]];
          done = 1;
          prev_unk = 0;
        }
      }
      if (!done && t->unk_id >= 0) {
        if (!(t->fuse_unk && prev_unk))
          c->sym_id[nsym++] = t->unk_id;
        prev_unk = 1;
      }
      /* no fallback and no unk: HF drops the character; so do we */
    }
    i += len;
  }
  for (int32_t i = 0; i < nsym; i++) {
    c->sym_prev[i] = i - 1;
    c->sym_next[i] = i + 1 < nsym ? i + 1 : -1;
  }
  c->heap_n = 0;
  for (int32_t i = 0; i + 1 < nsym; i++)
    if ((rc = push_pair(c, i)))
      return rc;
  while (c->heap_n) {
    struct heap_item it = heap_pop(c);
    int32_t nx = c->sym_next[it.pos];
    /* stale unless the pair now at pos still merges into the same token (HF's test) */
    if (c->sym_id[it.pos] < 0 || nx < 0)
      continue;
    const struct pairmap_slot *cur = pairmap_get(&t->merges, c->sym_id[it.pos], c->sym_id[nx]);
    if (!cur || cur->id != it.id)
      continue;
    c->sym_id[it.pos] = it.id;
    c->sym_id[nx] = -1; /* dead: no live pair can name it */
    c->sym_next[it.pos] = c->sym_next[nx];
    if (c->sym_next[nx] >= 0)
      c->sym_prev[c->sym_next[nx]] = it.pos;
    if ((rc = push_pair(c, c->sym_prev[it.pos])) || (rc = push_pair(c, it.pos)))
      return rc;
  }
  for (int32_t i = nsym ? 0 : -1; i >= 0; i = c->sym_next[i])
    if ((rc = idvec_push(out, c->sym_id[i])))
      return rc;
  return 0;
}

static int encode_text(struct enc_ctx *c, const char *s, size_t n, struct idvec *out)
{
  const struct exo_tokenizer *t = c->t;
  struct pieces *in = &c->a, *nxt = &c->b, *sw;
  int rc;
  pieces_clear(in);
  if ((rc = pieces_add(in, s, n)))
    return rc;
  for (size_t i = 0; i < t->n_pre; i++) {
    pieces_clear(nxt);
    rc = t->pre[i].kind == PRETOK_SPLIT ? split_stage(c, &t->pre[i], in, nxt)
                                        : bytelevel_stage(c, &t->pre[i], in, nxt);
    if (rc)
      return rc;
    sw = in;
    in = nxt;
    nxt = sw;
  }
  for (size_t i = 0; i < in->n; i++)
    if ((rc = bpe_word(c, in->buf + in->v[i].off, in->v[i].len, out)))
      return rc;
  return 0;
}

static int is_white(uint32_t cp)
{
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Added tokens of one `normalized` class in s[from, to): leftmost, longest first,
 * like HF's Aho-Corasick LeftmostLongest; other text goes to encode_text or to the
 * next class. lstrip/rstrip swallow adjacent Unicode whitespace into the token. */
static int encode_added(struct enc_ctx *c, const char *s, size_t from, size_t to, int cls,
                        struct idvec *out)
{
  const struct exo_tokenizer *t = c->t;
  size_t start_off = from, i = from;
  int rc;

  while (i < to) {
    const int32_t *cand = t->added_by_byte[(uint8_t)s[i]];
    const struct added_token *hit = NULL;
    for (; cand && *cand >= 0; cand++) {
      const struct added_token *a = &t->added[*cand];
      if (a->normalized == cls && a->len <= to - i && memcmp(s + i, a->content, a->len) == 0) {
        hit = a;
        break;
      }
    }
    if (!hit) {
      i++;
      continue;
    }
    size_t ms = i, me = i + hit->len;
    if (hit->lstrip) {
      while (ms > start_off) {
        size_t p = ms - 1;
        uint32_t cp;
        size_t len;
        while (p > start_off && ((uint8_t)s[p] & 0xC0) == 0x80)
          p--;
        if (exo_utf8_decode((const uint8_t *)s + p, ms - p, &cp, &len) != EXO_UTF8_OK ||
            !is_white(cp))
          break;
        ms = p;
      }
    }
    if (hit->rstrip) {
      uint32_t cp;
      size_t len;
      while (me < to &&
             exo_utf8_decode((const uint8_t *)s + me, to - me, &cp, &len) == EXO_UTF8_OK &&
             is_white(cp))
        me += len;
    }
    if (ms > start_off) {
      rc = cls == 0 ? encode_added(c, s, start_off, ms, 1, out)
                    : encode_text(c, s + start_off, ms - start_off, out);
      if (rc)
        return rc;
    }
    if ((rc = idvec_push(out, hit->id)))
      return rc;
    start_off = i = me;
  }
  if (to > start_off)
    return cls == 0 ? encode_added(c, s, start_off, to, 1, out)
                    : encode_text(c, s + start_off, to - start_off, out);
  return 0;
}

int exo_tokenizer_encode(const struct exo_tokenizer *t, const char *text, size_t len,
                         int add_special, int32_t **ids, size_t *n_ids)
{
  struct enc_ctx c;
  struct idvec out = {0};
  int rc = 0;

  *ids = NULL;
  *n_ids = 0;
  if (len && !exo_utf8_valid(text, len))
    return -EILSEQ;
  memset(&c, 0, sizeof(c));
  c.t = t;
  /* 10 pairs is plenty for the supported patterns' groups; ovector[0..1] is all we read */
  if (!(c.md = pcre2_match_data_create(10, NULL))) {
    rc = -ENOMEM;
    goto out;
  }
  if (add_special)
    for (size_t i = 0; i < t->n_tmpl_pre && !rc; i++)
      rc = idvec_push(&out, t->tmpl_pre[i]);
  if (!rc && len)
    rc = encode_added(&c, text, 0, len, 0, &out);
  if (add_special)
    for (size_t i = 0; i < t->n_tmpl_post && !rc; i++)
      rc = idvec_push(&out, t->tmpl_post[i]);
out:
  pcre2_match_data_free(c.md);
  pieces_fini(&c.a);
  pieces_fini(&c.b);
  free(c.ms);
  free(c.sym_id);
  free(c.sym_prev);
  free(c.sym_next);
  free(c.heap);
  free(c.tmp);
  if (rc) {
    free(out.v);
    return rc;
  }
  *ids = out.v;
  *n_ids = out.n;
  return 0;
}

/* ---- decode ---- */
static const char exo_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Lossy UTF-8 of s[0..n) into out (NULL: count only). Returns bytes written; a valid
 * but incomplete tail is left alone when hold_tail, its length in *held. */
static size_t lossy(const uint8_t *s, size_t n, char *out, int hold_tail, size_t *held)
{
  size_t i = 0, o = 0;
  *held = 0;
  while (i < n) {
    uint32_t cp;
    size_t len;
    enum exo_utf8_status st = exo_utf8_decode(s + i, n - i, &cp, &len);
    if (st == EXO_UTF8_OK) {
      if (out)
        memcpy(out + o, s + i, len);
      o += len;
    } else if (st == EXO_UTF8_TRUNCATED && hold_tail) {
      *held = len;
      break;
    } else {
      if (out)
        memcpy(out + o, exo_replacement, 3);
      o += 3;
    }
    i += len;
  }
  return o;
}

static int id_ok(const struct exo_tokenizer *t, int32_t id)
{
  return id >= 0 && id < t->n_ids && (t->id_flags[id] & ID_PRESENT);
}

int exo_tokenizer_decode(const struct exo_tokenizer *t, const int32_t *ids, size_t n,
                         int skip_special, char **text, size_t *len)
{
  size_t raw_n = 0, held;
  *text = NULL;
  *len = 0;
  for (size_t i = 0; i < n; i++) {
    if (!id_ok(t, ids[i]))
      return -EINVAL;
    if (!(skip_special && (t->id_flags[ids[i]] & ID_SPECIAL)))
      raw_n += t->dec_len[ids[i]];
  }
  uint8_t *raw = malloc(raw_n ? raw_n : 1);
  if (!raw)
    return -ENOMEM;
  size_t p = 0;
  for (size_t i = 0; i < n; i++) {
    if (skip_special && (t->id_flags[ids[i]] & ID_SPECIAL))
      continue;
    memcpy(raw + p, t->dec_buf + t->dec_off[ids[i]], t->dec_len[ids[i]]);
    p += t->dec_len[ids[i]];
  }
  size_t out_n = lossy(raw, raw_n, NULL, 0, &held);
  char *out = malloc(out_n + 1);
  if (!out) {
    free(raw);
    return -ENOMEM;
  }
  lossy(raw, raw_n, out, 0, &held);
  out[out_n] = 0;
  free(raw);
  *text = out;
  *len = out_n;
  return 0;
}

int exo_tokenizer_vocab_size(const struct exo_tokenizer *t)
{
  return t->n_ids;
}

int32_t exo_tokenizer_token_id(const struct exo_tokenizer *t, const char *token)
{
  size_t n = strlen(token);
  for (size_t i = 0; i < t->n_added; i++)
    if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0)
      return t->added[i].id;
  return strmap_get(&t->vocab, token, n);
}

const char *exo_tokenizer_token_str(const struct exo_tokenizer *t, int32_t id)
{
  return id >= 0 && id < t->n_ids ? t->id_str[id] : NULL;
}

int exo_tokenizer_is_special(const struct exo_tokenizer *t, int32_t id)
{
  return id >= 0 && id < t->n_ids && (t->id_flags[id] & ID_SPECIAL) ? 1 : 0;
}

int32_t exo_tokenizer_bos_id(const struct exo_tokenizer *t)
{
  return t->n_tmpl_pre ? t->tmpl_pre[0] : -1;
}

/* ---- streaming decode ---- */
struct exo_token_stream {
  const struct exo_tokenizer *tok;
  int skip_special;
  uint8_t held[4]; /* valid, incomplete UTF-8 prefix: at most 3 bytes */
  size_t n_held;
  uint8_t *scratch; /* held + one token's bytes */
};

size_t exo_token_stream_max_chunk(const struct exo_tokenizer *t)
{
  /* every byte may become a 3-byte U+FFFD */
  return 3 * (t->max_dec_len + 3);
}

int exo_token_stream_new(const struct exo_tokenizer *t, int skip_special,
                         struct exo_token_stream **out)
{
  struct exo_token_stream *s = calloc(1, sizeof(*s));
  *out = NULL;
  if (!s)
    return -ENOMEM;
  if (!(s->scratch = malloc(t->max_dec_len + 4))) {
    free(s);
    return -ENOMEM;
  }
  s->tok = t;
  s->skip_special = skip_special;
  *out = s;
  return 0;
}

void exo_token_stream_free(struct exo_token_stream *s)
{
  if (!s)
    return;
  free(s->scratch);
  free(s);
}

int exo_token_stream_push(struct exo_token_stream *s, int32_t id, char *out, size_t cap,
                          size_t *n)
{
  const struct exo_tokenizer *t = s->tok;
  size_t total, held, need;
  *n = 0;
  if (!id_ok(t, id))
    return -EINVAL;
  if (s->skip_special && (t->id_flags[id] & ID_SPECIAL))
    return 0;
  memcpy(s->scratch, s->held, s->n_held);
  memcpy(s->scratch + s->n_held, t->dec_buf + t->dec_off[id], t->dec_len[id]);
  total = s->n_held + t->dec_len[id];
  need = lossy(s->scratch, total, NULL, 1, &held);
  if (need > cap) {
    *n = need;
    return -ENOSPC;
  }
  lossy(s->scratch, total, out, 1, &held);
  memcpy(s->held, s->scratch + total - held, held);
  s->n_held = held;
  *n = need;
  return 0;
}

int exo_token_stream_flush(struct exo_token_stream *s, char *out, size_t cap, size_t *n)
{
  size_t held;
  size_t need = lossy(s->held, s->n_held, NULL, 0, &held);
  *n = 0;
  if (need > cap) {
    *n = need;
    return -ENOSPC;
  }
  lossy(s->held, s->n_held, out, 0, &held);
  s->n_held = 0;
  *n = need;
  return 0;
}
