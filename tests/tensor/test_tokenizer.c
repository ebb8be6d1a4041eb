/* tests/tensor/test_tokenizer.c: the C tokenizer against the Hugging Face reference cases
 * (tests/fixtures/tokenizer/, the two *_cases.json files: ids, decode, skip-special decode), streaming
 * decode (never half a character, same text as one-shot decode), load errors by name and
 * position, and a seeded fuzz loop. Reads fixtures only; writes nothing. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>

#include "tensor/tokenizer.h"
#include "tensor/utf8.h"
#include "tests/test.h"

static char fixture_dir[1024];

static const char *fixture(const char *name)
{
  static char path[1200];
  snprintf(path, sizeof(path), "%s/tokenizer/%s", fixture_dir, name);
  return path;
}

static struct exo_tokenizer *load_fixture(const char *name)
{
  struct exo_tokenizer *tok = NULL;
  char err[512] = "";
  int rc = exo_tokenizer_load(fixture(name), &tok, err, sizeof(err));
  if (rc)
    fprintf(stderr, "load %s: %d %s\n", name, rc, err);
  return tok;
}

static json_t *load_json(const char *name)
{
  json_error_t e;
  json_t *j = json_load_file(fixture(name), 0, &e);
  if (!j)
    fprintf(stderr, "%s:%d:%d: %s\n", name, e.line, e.column, e.text);
  return j;
}

/* hex string -> bytes; caller frees */
static char *unhex(const char *hex, size_t *n)
{
  size_t len = strlen(hex) / 2;
  char *out = malloc(len + 1);
  for (size_t i = 0; i < len; i++) {
    unsigned v;
    sscanf(hex + 2 * i, "%2x", &v);
    out[i] = (char)v;
  }
  out[len] = 0;
  *n = len;
  return out;
}

static int ids_equal(const int32_t *ids, size_t n, const json_t *want)
{
  if (!json_is_array(want) || json_array_size(want) != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (json_integer_value(json_array_get(want, i)) != ids[i])
      return 0;
  return 1;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
  fprintf(stderr, "  %s:", what);
  for (size_t i = 0; i < n; i++)
    fprintf(stderr, " %d", (int)ids[i]);
  fprintf(stderr, "\n");
}

/* Every case: ids, decode and skip-special decode exact; returns cases checked. */
static int run_cases(const char *tok_name, const char *cases_name, int with_add_special)
{
  struct exo_tokenizer *tok = load_fixture(tok_name);
  json_t *root = load_json(cases_name), *c;
  size_t i;
  int checked = 0;
  CHECK(tok != NULL);
  CHECK(root != NULL);
  if (!tok || !root)
    goto out;
  json_array_foreach(json_object_get(root, "cases"), i, c) {
    size_t in_n, dec_n;
    char *in = unhex(json_string_value(json_object_get(c, "input_utf8_hex")), &in_n);
    char *want_dec = unhex(json_string_value(json_object_get(c, "decode_utf8_hex")), &dec_n);
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = exo_tokenizer_encode(tok, in, in_n, 0, &ids, &n);
    CHECK_INT_EQ(rc, 0);
    if (!ids_equal(ids, n, json_object_get(c, "ids"))) {
      fprintf(stderr, "%s case %zu: ids differ for \"%s\"\n", cases_name, i, in);
      print_ids("got", ids, n);
      CHECK(0);
    }
    char *text = NULL;
    size_t tlen = 0;
    CHECK_INT_EQ(exo_tokenizer_decode(tok, ids, n, 0, &text, &tlen), 0);
    CHECK(text && tlen == dec_n && memcmp(text, want_dec, dec_n) == 0);
    free(text);
    const json_t *skip = json_object_get(c, "decode_skip_special");
    CHECK_INT_EQ(exo_tokenizer_decode(tok, ids, n, 1, &text, &tlen), 0);
    CHECK(text && tlen == json_string_length(skip) &&
          memcmp(text, json_string_value(skip), tlen) == 0);
    free(text);
    free(ids);
    if (with_add_special) {
      CHECK_INT_EQ(exo_tokenizer_encode(tok, in, in_n, 1, &ids, &n), 0);
      if (!ids_equal(ids, n, json_object_get(c, "ids_add_special_tokens"))) {
        fprintf(stderr, "%s case %zu: add_special ids differ\n", cases_name, i);
        CHECK(0);
      }
      free(ids);
    }
    free(in);
    free(want_dec);
    checked++;
  }
out:
  json_decref(root);
  exo_tokenizer_free(tok);
  return checked;
}

static void test_cases_gpt2_bytelevel(void)
{
  CHECK_INT_EQ(run_cases("tokenizer.json", "tokenizer_cases.json", 0), 40);
}

static void test_cases_llama3_split(void)
{
  CHECK_INT_EQ(run_cases("tokenizer_llama3_split.json", "tokenizer_llama3_split_cases.json", 1),
               40);
}

static void test_lookup_api(void)
{
  struct exo_tokenizer *a = load_fixture("tokenizer.json");
  struct exo_tokenizer *b = load_fixture("tokenizer_llama3_split.json");
  CHECK(a && b);
  if (!a || !b)
    goto out;
  CHECK_INT_EQ(exo_tokenizer_vocab_size(a), 512);
  CHECK_INT_EQ(exo_tokenizer_token_id(a, "<|begin_of_text|>"), 508);
  CHECK_INT_EQ(exo_tokenizer_token_id(a, "<|im_end|>"), 511);
  CHECK_INT_EQ(exo_tokenizer_token_id(a, "<|begin_of_tex|>"), -1);
  CHECK_INT_EQ(exo_tokenizer_token_id(a, "\xc4\xa0"), 220); /* "Ġ" is the space byte */
  CHECK(exo_tokenizer_token_str(a, 509) && strcmp(exo_tokenizer_token_str(a, 509),
                                                  "<|end_of_text|>") == 0);
  CHECK(exo_tokenizer_token_str(a, 512) == NULL);
  CHECK(exo_tokenizer_token_str(a, -1) == NULL);
  CHECK_INT_EQ(exo_tokenizer_is_special(a, 510), 1);
  CHECK_INT_EQ(exo_tokenizer_is_special(a, 220), 0);
  CHECK_INT_EQ(exo_tokenizer_is_special(a, 99999), 0);
  CHECK_INT_EQ(exo_tokenizer_bos_id(a), -1);
  CHECK_INT_EQ(exo_tokenizer_bos_id(b), 508);
  /* the README's example: special tokens are matched even without add_special */
  int32_t *ids = NULL;
  size_t n = 0;
  CHECK_INT_EQ(exo_tokenizer_encode(a, "text<|end_of_text|>", 19, 0, &ids, &n), 0);
  int32_t want[] = {83, 479, 83, 509};
  CHECK(n == 4 && memcmp(ids, want, sizeof(want)) == 0);
  free(ids);
  /* empty text with add_special is just the template */
  CHECK_INT_EQ(exo_tokenizer_encode(b, "", 0, 1, &ids, &n), 0);
  CHECK(n == 1 && ids[0] == 508);
  free(ids);
out:
  exo_tokenizer_free(a);
  exo_tokenizer_free(b);
}

/* Streams ids one at a time; every chunk must be whole characters; returns the text. */
static char *stream_all(const struct exo_tokenizer *tok, const int32_t *ids, size_t n,
                        int skip, size_t *len)
{
  struct exo_token_stream *s = NULL;
  size_t cap = exo_token_stream_max_chunk(tok), tot = 0, got;
  char *chunk = malloc(cap), *all = malloc(n * cap + cap + 1);
  CHECK_INT_EQ(exo_token_stream_new(tok, skip, &s), 0);
  for (size_t i = 0; i < n && s; i++) {
    CHECK_INT_EQ(exo_token_stream_push(s, ids[i], chunk, cap, &got), 0);
    CHECK(exo_utf8_valid(chunk, got));
    memcpy(all + tot, chunk, got);
    tot += got;
  }
  if (s) {
    CHECK_INT_EQ(exo_token_stream_flush(s, chunk, cap, &got), 0);
    CHECK(exo_utf8_valid(chunk, got));
    memcpy(all + tot, chunk, got);
    tot += got;
  }
  exo_token_stream_free(s);
  free(chunk);
  all[tot] = 0;
  *len = tot;
  return all;
}

static void stream_cases(const char *tok_name, const char *cases_name)
{
  struct exo_tokenizer *tok = load_fixture(tok_name);
  json_t *root = load_json(cases_name), *c;
  size_t i;
  CHECK(tok && root);
  if (!tok || !root)
    goto out;
  json_array_foreach(json_object_get(root, "cases"), i, c) {
    json_t *jids = json_object_get(c, "ids");
    size_t n = json_array_size(jids);
    int32_t *ids = malloc((n + 1) * sizeof(*ids));
    for (size_t k = 0; k < n; k++)
      ids[k] = (int32_t)json_integer_value(json_array_get(jids, k));
    for (int skip = 0; skip <= 1; skip++) {
      char *full = NULL, *streamed;
      size_t flen = 0, slen = 0;
      CHECK_INT_EQ(exo_tokenizer_decode(tok, ids, n, skip, &full, &flen), 0);
      streamed = stream_all(tok, ids, n, skip, &slen);
      if (!(full && slen == flen && memcmp(full, streamed, flen) == 0)) {
        fprintf(stderr, "%s case %zu skip %d: streamed text differs\n", cases_name, i, skip);
        CHECK(0);
      }
      free(full);
      free(streamed);
    }
    free(ids);
  }
out:
  json_decref(root);
  exo_tokenizer_free(tok);
}

static void test_stream_all_cases(void)
{
  stream_cases("tokenizer.json", "tokenizer_cases.json");
  stream_cases("tokenizer_llama3_split.json", "tokenizer_llama3_split_cases.json");
}

/* Byte b's vocab id, through GPT-2's byte-to-unicode map, recomputed here on purpose. */
static int32_t byte_id(const struct exo_tokenizer *tok, uint8_t b)
{
  int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  uint32_t cp = b;
  if (!keep) {
    cp = 256;
    for (int x = 0; x < b; x++)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174))
        cp++;
  }
  char s[5] = {0};
  exo_utf8_encode(cp, s);
  return exo_tokenizer_token_id(tok, s);
}

static void test_stream_split_emoji(void)
{
  struct exo_tokenizer *tok = load_fixture("tokenizer.json");
  struct exo_token_stream *s = NULL;
  char out[64];
  size_t n;
  const uint8_t grin[4] = {0xF0, 0x9F, 0x98, 0x80}; /* U+1F600 */
  CHECK(tok != NULL);
  if (!tok)
    return;
  CHECK_INT_EQ(exo_token_stream_new(tok, 0, &s), 0);
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, 'a'), out, sizeof(out), &n), 0);
  CHECK(n == 1 && out[0] == 'a');
  for (int k = 0; k < 3; k++) {
    int32_t id = byte_id(tok, grin[k]);
    CHECK(id >= 0);
    CHECK_INT_EQ(exo_token_stream_push(s, id, out, sizeof(out), &n), 0);
    CHECK_INT_EQ(n, 0); /* held back: not a whole character yet */
  }
  /* too small a buffer: refused, nothing lost */
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, grin[3]), out, 3, &n), -ENOSPC);
  CHECK_INT_EQ(n, 4);
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, grin[3]), out, sizeof(out), &n), 0);
  CHECK(n == 4 && memcmp(out, grin, 4) == 0);
  /* an id outside the vocab is an error and leaves the stream as it was */
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, grin[0]), out, sizeof(out), &n), 0);
  CHECK_INT_EQ(exo_token_stream_push(s, 512, out, sizeof(out), &n), -EINVAL);
  CHECK_INT_EQ(exo_token_stream_push(s, -3, out, sizeof(out), &n), -EINVAL);
  /* a held prefix cut off by a non-continuation byte: one U+FFFD, then the byte */
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, 'b'), out, sizeof(out), &n), 0);
  CHECK(n == 4 && memcmp(out, "\xEF\xBF\xBD" "b", 4) == 0);
  /* flush of an unfinished character: U+FFFD, and the stream is reusable */
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, grin[0]), out, sizeof(out), &n), 0);
  CHECK_INT_EQ(exo_token_stream_push(s, byte_id(tok, grin[1]), out, sizeof(out), &n), 0);
  CHECK_INT_EQ(n, 0);
  CHECK_INT_EQ(exo_token_stream_flush(s, out, sizeof(out), &n), 0);
  CHECK(n == 3 && memcmp(out, "\xEF\xBF\xBD", 3) == 0);
  CHECK_INT_EQ(exo_token_stream_flush(s, out, sizeof(out), &n), 0);
  CHECK_INT_EQ(n, 0);
  exo_token_stream_free(s);
  exo_token_stream_free(NULL);

  /* one-shot decode repairs the same way, one U+FFFD per maximal ill-formed subpart */
  int32_t bad[] = {byte_id(tok, 0xFF), byte_id(tok, 'a'), byte_id(tok, 0xE2),
                   byte_id(tok, 0x82), byte_id(tok, 0xED), byte_id(tok, 0xA0),
                   byte_id(tok, 0x80)};
  char *text = NULL;
  size_t len = 0;
  CHECK_INT_EQ(exo_tokenizer_decode(tok, bad, 7, 0, &text, &len), 0);
  /* FF -> R, a, E2 82 (truncated) -> R, ED (A0 not allowed after ED) -> R, A0 -> R, 80 -> R */
  const char want[] = "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD";
  CHECK(text && len == sizeof(want) - 1 && memcmp(text, want, len) == 0);
  free(text);
  size_t slen;
  char *st = stream_all(tok, bad, 7, 0, &slen);
  CHECK(slen == sizeof(want) - 1 && memcmp(st, want, slen) == 0);
  free(st);
  /* decode errors */
  int32_t oob[] = {1, 512};
  CHECK_INT_EQ(exo_tokenizer_decode(tok, oob, 2, 0, &text, &len), -EINVAL);
  CHECK(text == NULL);
  int32_t neg[] = {-1};
  CHECK_INT_EQ(exo_tokenizer_decode(tok, neg, 1, 0, &text, &len), -EINVAL);
  CHECK_INT_EQ(exo_tokenizer_decode(tok, NULL, 0, 0, &text, &len), 0);
  CHECK(text && len == 0 && text[0] == 0);
  free(text);
  exo_tokenizer_free(tok);
}

/* Loads the fixture tokenizer after edit() changed its JSON; returns rc, err filled. */
static int load_edited(void (*edit)(json_t *root), char *err, size_t errlen)
{
  json_t *root = load_json("tokenizer.json");
  struct exo_tokenizer *tok = NULL;
  if (!root)
    return -999;
  edit(root);
  char *text = json_dumps(root, JSON_COMPACT);
  int rc = exo_tokenizer_load_buffer(text, strlen(text), "edited.json", &tok, err, errlen);
  CHECK((rc == 0) == (tok != NULL));
  exo_tokenizer_free(tok);
  free(text);
  json_decref(root);
  return rc;
}

static void edit_metaspace(json_t *r)
{
  json_object_set_new(r, "pre_tokenizer", json_pack("{s:s,s:s}", "type", "Metaspace",
                                                    "replacement", "\xe2\x96\x81"));
}
static void edit_nfc(json_t *r)
{
  json_object_set_new(r, "normalizer", json_pack("{s:s}", "type", "NFC"));
}
static void edit_bad_merge(json_t *r)
{
  json_array_append_new(json_object_get(json_object_get(r, "model"), "merges"),
                        json_pack("[s,s]", "he", "zzq"));
}
static void edit_merge_no_result(json_t *r)
{
  /* both parts exist but "!!" does not */
  json_array_append_new(json_object_get(json_object_get(r, "model"), "merges"),
                        json_string("! !"));
}
static void edit_vocab_array(json_t *r)
{
  json_object_set_new(json_object_get(r, "model"), "vocab", json_array());
}
static void edit_wordpiece_decoder(json_t *r)
{
  json_object_set_new(r, "decoder", json_pack("{s:s}", "type", "WordPiece"));
}
static void edit_single_word(json_t *r)
{
  json_object_set_new(json_array_get(json_object_get(r, "added_tokens"), 1), "single_word",
                      json_true());
}
static void edit_suffix(json_t *r)
{
  json_object_set_new(json_object_get(r, "model"), "end_of_word_suffix", json_string("</w>"));
}
static void edit_bad_regex(json_t *r)
{
  json_object_set_new(r, "pre_tokenizer",
                      json_pack("{s:s,s:{s:s},s:s,s:b}", "type", "Split", "pattern", "Regex",
                                "(\\p{L}", "behavior", "Isolated", "invert", 0));
}
static void edit_huge_id(json_t *r)
{
  json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "zzz",
                      json_integer(1LL << 40));
}
static void edit_dup_id(json_t *r)
{
  json_object_set_new(json_object_get(json_object_get(r, "model"), "vocab"), "zzz",
                      json_integer(5));
}
static void edit_nothing(json_t *r)
{
  (void)r;
}

static void test_load_errors(void)
{
  char err[512];
  struct exo_tokenizer *tok = (struct exo_tokenizer *)1;

  const char bad_json[] = "{\n  \"model\": {\"vocab\": {\"a\": 0,}}\n}";
  CHECK_INT_EQ(exo_tokenizer_load_buffer(bad_json, sizeof(bad_json) - 1, "t.json", &tok, err,
                                         sizeof(err)), -EINVAL);
  CHECK(tok == NULL);
  CHECK_STR_CONTAINS(err, "t.json:2:");
  CHECK_STR_CONTAINS(err, "JSON syntax error");

  CHECK_INT_EQ(exo_tokenizer_load("/nonexistent/tokenizer.json", &tok, err, sizeof(err)),
               -ENOENT);
  CHECK_STR_CONTAINS(err, "/nonexistent/tokenizer.json");

  CHECK_INT_EQ(load_edited(edit_nothing, err, sizeof(err)), 0);
  CHECK_INT_EQ(load_edited(edit_metaspace, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "edited.json: pre_tokenizer type 'Metaspace' is not supported");
  CHECK_INT_EQ(load_edited(edit_nfc, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "normalizer type 'NFC' is not supported");
  CHECK_INT_EQ(load_edited(edit_bad_merge, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "model.merges[252] 'he zzq': token 'zzq' is not in the vocab");
  CHECK_INT_EQ(load_edited(edit_merge_no_result, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "merged token '!!' is not in the vocab");
  CHECK_INT_EQ(load_edited(edit_vocab_array, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "model.vocab must be an object (got array)");
  CHECK_INT_EQ(load_edited(edit_wordpiece_decoder, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "decoder type 'WordPiece' is not supported");
  CHECK_INT_EQ(load_edited(edit_single_word, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "single_word true is not supported");
  CHECK_INT_EQ(load_edited(edit_suffix, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "model.end_of_word_suffix is not supported");
  CHECK_INT_EQ(load_edited(edit_bad_regex, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "pre_tokenizer Split.pattern: regex error at offset");
  CHECK_INT_EQ(load_edited(edit_huge_id, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "out of range");
  CHECK_INT_EQ(load_edited(edit_dup_id, err, sizeof(err)), -EINVAL);
  CHECK_STR_CONTAINS(err, "id 5 is used by both");

  /* truncated files of every length: an error, never a crash or a leak */
  json_t *root = load_json("tokenizer.json");
  char *full = json_dumps(root, JSON_COMPACT);
  size_t flen = strlen(full);
  for (size_t cut = 0; cut < flen; cut += 97) {
    CHECK(exo_tokenizer_load_buffer(full, cut, NULL, &tok, err, sizeof(err)) != 0);
    CHECK(tok == NULL);
  }
  free(full);
  json_decref(root);
  exo_tokenizer_free(NULL);
}

/* A hand-made tokenizer over raw characters (no ByteLevel pre-tokenizer), to pin down
 * the pipeline pieces the fixtures do not reach. Expected ids follow HF's rules. */
static struct exo_tokenizer *mini(const char *pre, const char *model_extra, const char *added,
                                  const char *post, const char *decoder)
{
  char json[4096], err[512] = "";
  struct exo_tokenizer *tok = NULL;
  snprintf(json, sizeof(json),
           "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"normalizer\":null,"
           "\"added_tokens\":[%s],\"pre_tokenizer\":%s,\"post_processor\":%s,\"decoder\":%s,"
           "\"model\":{\"type\":\"BPE\",%s\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,"
           "\"bc\":4,\"abc\":5,\"-\":6,\"1\":7,\"2\":8,\"<X>\":9,\"<unk>\":10,\"<0x7A>\":11,"
           "\"--\":12,\"a-\":13,\"-b\":14,\"-c\":15,\"b-\":16,\" \":17,\"12\":18},"
           "\"merges\":[\"b c\",\"a bc\",\"- -\",\"a -\",\"- b\",\"- c\",\"b -\",\"1 2\"]}}",
           added ? added : "", pre ? pre : "null", post ? post : "null",
           decoder ? decoder : "{\"type\":\"ByteLevel\"}", model_extra ? model_extra : "");
  int rc = exo_tokenizer_load_buffer(json, strlen(json), "mini", &tok, err, sizeof(err));
  if (rc)
    fprintf(stderr, "mini: %d %s\n", rc, err);
  return tok;
}

/* encode text with tok (freed here) and compare with want[0..n) */
static void expect_ids(struct exo_tokenizer *tok, const char *text, int add_special,
                       const int32_t *want, size_t n_want)
{
  int32_t *ids = NULL;
  size_t n = 0;
  CHECK(tok != NULL);
  if (!tok)
    return;
  CHECK_INT_EQ(exo_tokenizer_encode(tok, text, strlen(text), add_special, &ids, &n), 0);
  if (n != n_want || (n && memcmp(ids, want, n * sizeof(*ids)) != 0)) {
    fprintf(stderr, "  \"%s\":\n", text);
    print_ids("got ", ids, n);
    print_ids("want", want, n_want);
    CHECK(0);
  }
  free(ids);
}

#define EXPECT(tok, text, spec, ...)                                             \
  do {                                                                           \
    const int32_t w_[] = {__VA_ARGS__};                                          \
    struct exo_tokenizer *t_ = (tok);                                            \
    expect_ids(t_, text, spec, w_, sizeof(w_) / sizeof(w_[0]));                  \
    exo_tokenizer_free(t_);                                                      \
  } while (0)

#define SPLIT(beh, inv)                                                                    \
  "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"" beh "\",\"invert\":" \
  inv "}"

static void test_pipeline_pieces(void)
{
  /* merges by rank: "b c" first, then "a bc"; ignore_merges takes a whole-word hit */
  EXPECT(mini(NULL, NULL, NULL, NULL, NULL), "abc", 0, 5);
  EXPECT(mini(NULL, NULL, NULL, NULL, NULL), "abab", 0, 0, 1, 0, 1);
  EXPECT(mini(NULL, "\"ignore_merges\":true,", NULL, NULL, NULL), "ab", 0, 3);
  EXPECT(mini(NULL, "\"ignore_merges\":false,", NULL, NULL, NULL), "ab", 0, 0, 1);
  /* Split behaviours on "a-b--c" (matches: the dashes) */
  EXPECT(mini(SPLIT("Removed", "false"), NULL, NULL, NULL, NULL), "a-b--c", 0, 0, 1, 2);
  EXPECT(mini(SPLIT("Isolated", "false"), NULL, NULL, NULL, NULL), "a-b--c", 0, 0, 6, 1, 6, 6,
         2);
  EXPECT(mini(SPLIT("MergedWithPrevious", "false"), NULL, NULL, NULL, NULL), "a-b--c", 0, 13,
         16, 6, 2);
  EXPECT(mini(SPLIT("MergedWithNext", "false"), NULL, NULL, NULL, NULL), "a-b--c", 0, 0, 14, 6,
         15);
  EXPECT(mini(SPLIT("Contiguous", "false"), NULL, NULL, NULL, NULL), "a-b--c", 0, 0, 6, 1, 12,
         2);
  EXPECT(mini(SPLIT("Removed", "true"), NULL, NULL, NULL, NULL), "a-b--c", 0, 6, 6, 6);
  /* without a split, "a-b--c" is one word: "- -" (rank 2) beats "a -" (rank 3), which
   * beats "b -" (rank 6), so b is left alone: a-, b, --, c */
  EXPECT(mini(NULL, NULL, NULL, NULL, NULL), "a-b--c", 0, 13, 1, 12, 2);
  /* Digits */
  EXPECT(mini("{\"type\":\"Digits\",\"individual_digits\":true}", NULL, NULL, NULL, NULL),
         "a12", 0, 0, 7, 8);
  EXPECT(mini("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
              "\"individual_digits\":false}]}", NULL, NULL, NULL, NULL), "1a12", 0, 7, 0, 18);
  /* unknown characters: dropped without unk, unk (fused or not), byte fallback */
  EXPECT(mini(NULL, NULL, NULL, NULL, NULL), "aqqb", 0, 0, 1);
  EXPECT(mini(NULL, "\"unk_token\":\"<unk>\",", NULL, NULL, NULL), "aqqb", 0, 0, 10, 10, 1);
  EXPECT(mini(NULL, "\"unk_token\":\"<unk>\",\"fuse_unk\":true,", NULL, NULL, NULL), "aqqb",
         0, 0, 10, 1);
  EXPECT(mini(NULL, "\"unk_token\":\"<unk>\",\"byte_fallback\":true,", NULL, NULL, NULL), "azq",
         0, 0, 11, 10);
  /* added tokens: lstrip/rstrip swallow the spaces around them */
  const char *x_plain = "{\"id\":9,\"content\":\"<X>\",\"special\":true}";
  const char *x_strip =
    "{\"id\":9,\"content\":\"<X>\",\"special\":true,\"lstrip\":true,\"rstrip\":true}";
  EXPECT(mini(NULL, NULL, x_plain, NULL, NULL), "a <X> b", 0, 0, 17, 9, 17, 1);
  EXPECT(mini(NULL, NULL, x_strip, NULL, NULL), "a <X> b", 0, 0, 9, 1);
  EXPECT(mini(NULL, NULL, x_strip, NULL, NULL), "a  <X><X>  b", 0, 0, 9, 9, 1);
  /* template with a token on both sides of $A */
  const char *tmpl =
    "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},{\"type\":"
    "\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<X>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"<X>\","
    "\"type_id\":0}}],\"special_tokens\":{\"<X>\":{\"id\":\"<X>\",\"ids\":[9],"
    "\"tokens\":[\"<X>\"]}}}]}";
  EXPECT(mini(NULL, NULL, x_plain, tmpl, NULL), "ab", 1, 9, 0, 1, 9);
  EXPECT(mini(NULL, NULL, x_plain, tmpl, NULL), "ab", 0, 0, 1);

  /* ByteFallback decoder turns <0x7A> back into 'z'; plain ByteLevel keeps the text */
  struct exo_tokenizer *tok =
    mini(NULL, "\"byte_fallback\":true,", x_plain, NULL,
         "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":"
         "\"ByteLevel\"}]}");
  int32_t ids[] = {0, 11, 9, 17};
  char *text = NULL;
  size_t len = 0;
  CHECK(tok != NULL);
  if (tok) {
    CHECK_INT_EQ(exo_tokenizer_decode(tok, ids, 4, 0, &text, &len), 0);
    CHECK(text && strcmp(text, "az<X> ") == 0);
    free(text);
    CHECK_INT_EQ(exo_tokenizer_decode(tok, ids, 4, 1, &text, &len), 0);
    CHECK(text && strcmp(text, "az ") == 0);
    free(text);
  }
  exo_tokenizer_free(tok);
}

static void edit_prefix_space(json_t *r)
{
  json_object_set_new(json_object_get(r, "pre_tokenizer"), "add_prefix_space", json_true());
}

static void test_add_prefix_space(void)
{
  json_t *root = load_json("tokenizer.json");
  struct exo_tokenizer *plain = load_fixture("tokenizer.json"), *pfx = NULL;
  char err[256];
  CHECK(root && plain);
  if (!root || !plain)
    goto out;
  edit_prefix_space(root);
  char *text = json_dumps(root, JSON_COMPACT);
  CHECK_INT_EQ(exo_tokenizer_load_buffer(text, strlen(text), NULL, &pfx, err, sizeof(err)), 0);
  free(text);
  if (!pfx)
    goto out;
  int32_t *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  /* "hello" with a prefix space is " hello" without; " x" gets no second space */
  CHECK_INT_EQ(exo_tokenizer_encode(pfx, "hello", 5, 0, &a, &na), 0);
  CHECK_INT_EQ(exo_tokenizer_encode(plain, " hello", 6, 0, &b, &nb), 0);
  CHECK(na == nb && na > 0 && memcmp(a, b, na * sizeof(*a)) == 0);
  free(a);
  free(b);
  CHECK_INT_EQ(exo_tokenizer_encode(pfx, " x", 2, 0, &a, &na), 0);
  CHECK_INT_EQ(exo_tokenizer_encode(plain, " x", 2, 0, &b, &nb), 0);
  CHECK(na == nb && memcmp(a, b, na * sizeof(*a)) == 0);
  free(a);
  free(b);
out:
  exo_tokenizer_free(plain);
  exo_tokenizer_free(pfx);
  json_decref(root);
}

static uint64_t rng_state;
static uint32_t rng(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

/* Random text: bytes, ASCII words, spaces, multi-byte characters and token fragments. */
static size_t random_text(char *buf, size_t cap, int valid_only)
{
  static const char *frags[] = {"<|im_start|>", "<|end_of_text|>", "<|begin_of_tex", " ",
                                "  ", "\n", "\r\n", "\t", "'s", "'LL", "123456", "the",
                                "\xc2\xa0", "\xe2\x80\x8b", "e\xcc\x81",
                                "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", /* thumbs up, skin tone */
                                "\xe4\xb8\xad\xe6\x96\x87", "!?", "x"};
  size_t n = 0, parts = rng() % 12;
  for (size_t p = 0; p < parts; p++) {
    uint32_t kind = rng() % 4;
    char tmp[8];
    const char *s = tmp;
    size_t len;
    if (kind == 0 && !valid_only) {
      tmp[0] = (char)rng();
      len = 1;
    } else if (kind <= 1) {
      uint32_t cp;
      do
        cp = rng() % 0x110000;
      while (cp >= 0xD800 && cp <= 0xDFFF);
      if (rng() % 2)
        cp %= 0x800;
      len = exo_utf8_encode(cp, tmp);
    } else {
      s = frags[rng() % (sizeof(frags) / sizeof(frags[0]))];
      len = strlen(s);
    }
    if (n + len > cap)
      break;
    memcpy(buf + n, s, len);
    n += len;
  }
  return n;
}

static void fuzz_one(const char *tok_name, int iters)
{
  struct exo_tokenizer *tok = load_fixture(tok_name);
  char buf[256];
  int mismatches = 0, rejected = 0;
  CHECK(tok != NULL);
  if (!tok)
    return;
  rng_state = 0x9E3779B97F4A7C15ULL;
  for (int it = 0; it < iters; it++) {
    size_t n = random_text(buf, sizeof(buf), it % 2);
    int valid = exo_utf8_valid(buf, n);
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = exo_tokenizer_encode(tok, buf, n, it % 3 == 0, &ids, &nid);
    if (!valid) {
      CHECK_INT_EQ(rc, -EILSEQ);
      CHECK(ids == NULL);
      rejected++;
      continue;
    }
    CHECK_INT_EQ(rc, 0);
    char *text = NULL;
    size_t tlen = 0;
    /* keep specials matched in the text, leave out the template's BOS */
    size_t off = (it % 3 == 0) && exo_tokenizer_bos_id(tok) >= 0 ? 1 : 0;
    CHECK_INT_EQ(exo_tokenizer_decode(tok, ids + off, nid - off, 0, &text, &tlen), 0);
    if (!text || tlen != n || memcmp(text, buf, n) != 0)
      mismatches++;
    free(text);
    free(ids);
  }
  CHECK_INT_EQ(mismatches, 0);
  CHECK(rejected > 0); /* the generator did produce invalid UTF-8 */
  exo_tokenizer_free(tok);
}

/* Long runs (one regex match, one BPE word of 64 Ki symbols) encode and round-trip. */
static void test_long_runs(void)
{
  struct exo_tokenizer *tok = load_fixture("tokenizer_llama3_split.json");
  const size_t n = 64 * 1024;
  const char fills[] = {' ', 'a', '7', '\n', '<', '\xc3'};
  char *buf = malloc(n);
  CHECK(tok != NULL);
  for (size_t k = 0; tok && k < sizeof(fills); k++) {
    if (fills[k] == '\xc3')
      for (size_t i = 0; i < n; i += 2)
        memcpy(buf + i, "\xc3\xa9", 2); /* e-acute */
    else
      memset(buf, fills[k], n);
    int32_t *ids = NULL;
    size_t nid = 0, tlen = 0;
    char *text = NULL;
    CHECK_INT_EQ(exo_tokenizer_encode(tok, buf, n, 0, &ids, &nid), 0);
    CHECK(nid > 0 && nid <= n);
    CHECK_INT_EQ(exo_tokenizer_decode(tok, ids, nid, 0, &text, &tlen), 0);
    CHECK(text && tlen == n && memcmp(text, buf, n) == 0);
    free(text);
    free(ids);
  }
  free(buf);
  exo_tokenizer_free(tok);
}

static void test_fuzz_roundtrip(void)
{
  fuzz_one("tokenizer.json", 3000);
  fuzz_one("tokenizer_llama3_split.json", 3000);
}

int main(void)
{
  const char *fx = getenv("EXO_FIXTURES");
  snprintf(fixture_dir, sizeof(fixture_dir), "%s", fx ? fx : "tests/fixtures");
  EXO_RUN(test_cases_gpt2_bytelevel);
  EXO_RUN(test_cases_llama3_split);
  EXO_RUN(test_lookup_api);
  EXO_RUN(test_stream_all_cases);
  EXO_RUN(test_stream_split_emoji);
  EXO_RUN(test_load_errors);
  EXO_RUN(test_pipeline_pieces);
  EXO_RUN(test_add_prefix_space);
  EXO_RUN(test_long_runs);
  EXO_RUN(test_fuzz_roundtrip);
  return exo_test_result();
}
