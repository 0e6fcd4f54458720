// Loading a tokenizer from a Hugging Face tokenizer.json (model type BPE) and,
// optionally, tokenizer_config.json.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tokenizer/tok_internal.h"

#define MAX_JSON_BYTES ((size_t)1 << 30)
#define HF_BYTELEVEL_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct hf_ctx {
    const char *path;     // tokenizer.json, for messages
    const char *cfg_path; // tokenizer_config.json
    kiln_tokenizer *tok;
    bool byte_level;
    const char *bad_bool; // the first flag present with another type than true/false
} hf_ctx;

static bool json_id(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= INT32_MAX) || floor(d) != d) return false;
    *out = (int64_t)d;
    return true;
}

static const char *json_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// A flag: true/false, or dflt when absent or null. Any other value is noted
// in c->bad_bool (the load fails naming it) rather than read as the default.
static bool json_bool(hf_ctx *c, const cJSON *obj, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (v && !cJSON_IsBool(v) && !cJSON_IsNull(v) && !c->bad_bool) c->bad_bool = key;
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

// A Split/Replace pattern: {"String": s} or {"Regex": r}.
static const char *pattern_of(const cJSON *node, bool *is_regex) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(node, "pattern");
    const char *s;
    if ((s = json_str(p, "String"))) {
        *is_regex = false;
        return s;
    }
    if ((s = json_str(p, "Regex"))) {
        *is_regex = true;
        return s;
    }
    return NULL;
}

static kiln_status add_normalizer(hf_ctx *c, const cJSON *n, int depth) {
    if (!n || cJSON_IsNull(n)) return KILN_OK;
    const char *type = json_str(n, "type");
    if (!type || depth > 8) return kiln_fail(KILN_ERR_FORMAT, "%s: normalizer without a type", c->path);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *it;
        cJSON_ArrayForEach(it, list) {
            kiln_status s = add_normalizer(c, it, depth + 1);
            if (s != KILN_OK) return s;
        }
        return KILN_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        bool is_regex;
        const char *pat = pattern_of(n, &is_regex), *content = json_str(n, "content");
        if (!pat || !content) return kiln_fail(KILN_ERR_FORMAT, "%s: Replace normalizer without pattern/content", c->path);
        if (is_regex) return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: regex Replace normalizer is not supported", c->path);
        return tok_pipeline_add_replace(&c->tok->pipe, pat, strlen(pat), content, strlen(content));
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *pre = json_str(n, "prepend");
        if (!pre) return kiln_fail(KILN_ERR_FORMAT, "%s: Prepend normalizer without prepend", c->path);
        if (strcmp(pre, "\xE2\x96\x81") == 0) c->tok->strip_leading_space = true;
        return tok_pipeline_add_prepend(&c->tok->pipe, pre, strlen(pre));
    }
    // NFC leaves already-composed text unchanged; Unicode normalisation tables
    // are out of scope, so it is accepted as a no-op.
    if (strcmp(type, "NFC") == 0) return KILN_OK;
    return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported", c->path, type);
}

static kiln_status split_behavior(const char *path, const char *name, tok_split_behavior *out) {
    static const struct {
        const char *name;
        tok_split_behavior b;
    } table[] = {{"Isolated", TOK_SPLIT_ISOLATED},
                 {"Removed", TOK_SPLIT_REMOVED},
                 {"MergedWithPrevious", TOK_SPLIT_MERGED_WITH_PREVIOUS},
                 {"MergedWithNext", TOK_SPLIT_MERGED_WITH_NEXT},
                 {"Contiguous", TOK_SPLIT_CONTIGUOUS}};
    for (size_t i = 0; name && i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(name, table[i].name) == 0) {
            *out = table[i].b;
            return KILN_OK;
        }
    }
    return kiln_fail(KILN_ERR_FORMAT, "%s: unknown Split behavior \"%s\"", path, name ? name : "(none)");
}

static kiln_status add_pre_tokenizer(hf_ctx *c, const cJSON *n, int depth) {
    if (!n || cJSON_IsNull(n)) return KILN_OK;
    const char *type = json_str(n, "type");
    tok_pipeline *p = &c->tok->pipe;
    if (!type || depth > 8) return kiln_fail(KILN_ERR_FORMAT, "%s: pre_tokenizer without a type", c->path);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers"), *it;
        cJSON_ArrayForEach(it, list) {
            kiln_status s = add_pre_tokenizer(c, it, depth + 1);
            if (s != KILN_OK) return s;
        }
        return KILN_OK;
    }
    if (strcmp(type, "Split") == 0) {
        bool is_regex;
        const char *pat = pattern_of(n, &is_regex);
        if (!pat) return kiln_fail(KILN_ERR_FORMAT, "%s: Split pre-tokenizer without a pattern", c->path);
        tok_split_behavior b = 0; // set by split_behavior on success; gcc -O2 cannot tell
        kiln_status s = split_behavior(c->path, json_str(n, "behavior"), &b);
        if (s != KILN_OK) return s;
        bool invert = json_bool(c, n, "invert", false);
        if (is_regex) return tok_pipeline_add_split(p, c->path, pat, strlen(pat), b, invert);
        // A literal pattern: quote it for PCRE2 with \Q...\E, splitting any \E.
        size_t len = strlen(pat);
        char *quoted = malloc(len * 6 + 8);
        if (!quoted) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        size_t w = 0;
        for (size_t i = 0; i < len; i++) {
            if (pat[i] == '\\') {
                memcpy(quoted + w, "\\\\", 2);
                w += 2;
            } else if (strchr("^$.[]|()?*+{}", pat[i])) {
                quoted[w++] = '\\';
                quoted[w++] = pat[i];
            } else {
                quoted[w++] = pat[i];
            }
        }
        s = tok_pipeline_add_split(p, c->path, quoted, w, b, invert);
        free(quoted);
        return s;
    }
    if (strcmp(type, "Digits") == 0) {
        const char *re = json_bool(c, n, "individual_digits", false) ? "\\p{N}" : "\\p{N}+";
        return tok_pipeline_add_split(p, c->path, re, strlen(re), TOK_SPLIT_ISOLATED, false);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        c->byte_level = true;
        kiln_status s = KILN_OK;
        if (json_bool(c, n, "add_prefix_space", true)) s = tok_pipeline_add_prefix_space(p);
        if (s == KILN_OK && json_bool(c, n, "use_regex", true))
            s = tok_pipeline_add_split(p, c->path, HF_BYTELEVEL_RE, strlen(HF_BYTELEVEL_RE), TOK_SPLIT_ISOLATED, false);
        return s;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *repl = json_str(n, "replacement");
        if (!repl) repl = "\xE2\x96\x81";
        const char *scheme = json_str(n, "prepend_scheme");
        tok_prepend_scheme ps = TOK_PREPEND_ALWAYS;
        if (scheme && strcmp(scheme, "first") == 0) ps = TOK_PREPEND_FIRST;
        else if (scheme && strcmp(scheme, "never") == 0) ps = TOK_PREPEND_NEVER;
        else if (!scheme && !json_bool(c, n, "add_prefix_space", true)) ps = TOK_PREPEND_NEVER; // older files
        if (ps != TOK_PREPEND_NEVER) c->tok->strip_leading_space = true;
        return tok_pipeline_add_metaspace(p, repl, strlen(repl), ps, json_bool(c, n, "split", true));
    }
    return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported", c->path, type);
}

static kiln_status load_merges(hf_ctx *c, const cJSON *merges) {
    kiln_tokenizer *tok = c->tok;
    int n = cJSON_GetArraySize(merges);
    if (!tok_pairmap_init(&tok->merges, (size_t)(n > 0 ? n : 0)))
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    char *joined = NULL;
    size_t cap = 0;
    int32_t rank = 0;
    kiln_status s = KILN_OK;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        const char *l, *r;
        size_t llen, rlen;
        if (cJSON_IsString(m)) {
            // "left right": exactly one space (tokens in this form have none).
            l = m->valuestring;
            const char *sp = strchr(l, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                s = kiln_fail(KILN_ERR_FORMAT, "%s: merge %d is not \"left right\"", c->path, (int)rank);
                break;
            }
            llen = (size_t)(sp - l);
            r = sp + 1;
            rlen = strlen(r);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            l = cJSON_GetArrayItem(m, 0)->valuestring;
            r = cJSON_GetArrayItem(m, 1)->valuestring;
            llen = strlen(l);
            rlen = strlen(r);
        } else {
            s = kiln_fail(KILN_ERR_FORMAT, "%s: merge %d is neither a string nor a pair of strings", c->path, (int)rank);
            break;
        }
        if (llen + rlen > cap) {
            cap = (llen + rlen) * 2;
            char *grown = realloc(joined, cap);
            if (!grown) {
                s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
                break;
            }
            joined = grown;
        }
        memcpy(joined, l, llen);
        memcpy(joined + llen, r, rlen);
        int32_t li = tok_strmap_get(&tok->vocab, l, llen), ri = tok_strmap_get(&tok->vocab, r, rlen);
        int32_t res = tok_strmap_get(&tok->vocab, joined, llen + rlen);
        if (li < 0 || ri < 0 || res < 0) {
            // Hugging Face refuses such files too.
            s = kiln_fail(KILN_ERR_FORMAT, "%s: merge %d uses a token that is not in the vocabulary", c->path, (int)rank);
            break;
        }
        tok_pairmap_put(&tok->merges, li, ri, rank, res);
        rank++;
    }
    free(joined);
    return s;
}

// bos_token / eos_token in tokenizer_config.json: "text" or {"content": "text"},
// or absent / null (*id untouched). A token that is not in the vocabulary, or
// a value of another shape, is an error naming the key.
static kiln_status config_token(const hf_ctx *c, const cJSON *cfg, const char *key, int32_t *id) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) return KILN_OK;
    const char *text = cJSON_IsString(v) ? v->valuestring : json_str(v, "content");
    if (!text)
        return kiln_fail(KILN_ERR_FORMAT, "%s: \"%s\" must be a string or {\"content\": string}", c->cfg_path, key);
    int32_t found = kiln_tokenizer_find(c->tok, text);
    if (found < 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: \"%s\" is \"%.64s\", which is not a token of %s", c->cfg_path, key,
                         text, c->path);
    *id = found;
    return KILN_OK;
}

// chat_template: a string, or a list of {"name", "template"} (prefer
// "default", else the first), or absent / null.
static kiln_status set_template(const hf_ctx *c, kiln_tokenizer *tok, const cJSON *cfg) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    const char *text = NULL;
    if (!t || cJSON_IsNull(t)) return KILN_OK;
    if (cJSON_IsString(t)) {
        text = t->valuestring;
    } else if (cJSON_IsArray(t)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, t) {
            const char *name = json_str(it, "name"), *body = json_str(it, "template");
            if (!body)
                return kiln_fail(KILN_ERR_FORMAT, "%s: a \"chat_template\" entry without a \"template\" string",
                                 c->cfg_path);
            if (!text || (name && strcmp(name, "default") == 0)) text = body;
        }
    } else {
        return kiln_fail(KILN_ERR_FORMAT, "%s: \"chat_template\" must be a string or a list of named templates",
                         c->cfg_path);
    }
    if (text && !(tok->chat_template = strdup(text))) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    return KILN_OK;
}

// BOS that the post-processor puts in front of every sequence, or -1.
static int32_t post_processor_bos(const kiln_tokenizer *tok, const cJSON *root) {
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const char *type = json_str(pp, "type");
    if (!type || strcmp(type, "TemplateProcessing") != 0) return -1;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const char *id = json_str(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
    return id ? kiln_tokenizer_find(tok, id) : -1;
}

static int32_t first_present(const kiln_tokenizer *tok, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = kiln_tokenizer_find(tok, names[i]);
        if (id >= 0 && tok->type[id] == TOK_TYPE_CONTROL) return id;
    }
    return -1;
}

static kiln_status load(hf_ctx *c, const cJSON *root, const cJSON *cfg, kiln_tokenizer **out) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = json_str(model, "type");
    if (!cJSON_IsObject(model)) return kiln_fail(KILN_ERR_FORMAT, "%s: no \"model\" object", c->path);
    if (mtype && strcmp(mtype, "BPE") != 0)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", c->path, mtype);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return kiln_fail(KILN_ERR_FORMAT, "%s: BPE model without vocab object and merges array", c->path);
    // The vocabulary size is the largest id + 1; ids far beyond the number of
    // entries would only waste memory, so they are refused.
    int64_t max_id = -1, entries = 0, id;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!json_id(it, &id)) return kiln_fail(KILN_ERR_FORMAT, "%s: vocab entry with a bad id", c->path);
        if (id > max_id) max_id = id;
        entries++;
    }
    cJSON_ArrayForEach(it, added) {
        if (!json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id) || !json_str(it, "content"))
            return kiln_fail(KILN_ERR_FORMAT, "%s: added_tokens entry without id/content", c->path);
        if (id > max_id) max_id = id;
        entries++;
    }
    if (max_id < 0) return kiln_fail(KILN_ERR_FORMAT, "%s: empty vocabulary", c->path);
    if (max_id >= 2 * entries + 1024)
        return kiln_fail(KILN_ERR_FORMAT, "%s: token id %lld is far beyond the %lld vocabulary entries", c->path,
                         (long long)max_id, (long long)entries);
    kiln_status s = tok_alloc((int32_t)(max_id + 1), out);
    if (s != KILN_OK) return s;
    kiln_tokenizer *tok = c->tok = *out;
    bool *has_text = calloc((size_t)max_id + 1, sizeof *has_text);
    if (!has_text) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    cJSON_ArrayForEach(it, added) {
        json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id);
        const char *content = json_str(it, "content");
        if (!has_text[id] && (s = tok_set_text(tok, (int32_t)id, content, strlen(content))) != KILN_OK) break;
        has_text[id] = true;
        tok->type[id] = json_bool(c, it, "special", false) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
    }
    cJSON_ArrayForEach(it, vocab) {
        if (s != KILN_OK) break;
        json_id(it, &id);
        if (!has_text[id]) s = tok_set_text(tok, (int32_t)id, it->string, strlen(it->string));
        has_text[id] = true;
    }
    for (int64_t i = 0; i <= max_id; i++)
        if (!has_text[i]) tok->type[i] = TOK_TYPE_UNUSED;
    free(has_text);
    if (s != KILN_OK) return s;
    if ((s = add_normalizer(c, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), 0)) != KILN_OK ||
        (s = add_pre_tokenizer(c, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), 0)) != KILN_OK)
        return s;
    tok->kind = c->byte_level ? KILN_TOKENIZER_BYTE_BPE : KILN_TOKENIZER_SPM;
    tok->ignore_merges = json_bool(c, model, "ignore_merges", false);
    if (!c->byte_level && json_bool(c, model, "byte_fallback", false)) {
        for (int32_t i = 0; i < tok->n_vocab; i++) {
            size_t len;
            const char *t = tok_text(tok, i, &len);
            if (tok->type[i] == TOK_TYPE_NORMAL && tok_parse_byte_token(t, len) >= 0)
                tok->type[i] = TOK_TYPE_BYTE;
        }
    }
    if (!(tok->pre_name = strdup("tokenizer.json"))) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    tok->pre_known = true;
    if ((s = tok_finish(tok, c->path)) != KILN_OK) return s;
    if (!json_bool(c, model, "byte_fallback", false))
        for (int b = 0; b < 256 && !c->byte_level; b++) tok->byte_token[b] = -1;
    if ((s = load_merges(c, merges)) != KILN_OK) return s;
    const char *unk = json_str(model, "unk_token");
    tok->unk = unk ? kiln_tokenizer_find(tok, unk) : -1;

    int32_t pp_bos = post_processor_bos(tok, root);
    tok->bos = pp_bos;
    tok->add_bos = pp_bos >= 0;
    static const char *const bos_names[] = {"<s>", "<bos>", "<|begin_of_text|>"};
    static const char *const eos_names[] = {"</s>", "<eos>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>"};
    if (tok->bos < 0) tok->bos = first_present(tok, bos_names, 3);
    tok->eos = first_present(tok, eos_names, 5);
    if (c->bad_bool) return kiln_fail(KILN_ERR_FORMAT, "%s: \"%s\" must be true or false", c->path, c->bad_bool);
    if (cfg) {
        if ((s = config_token(c, cfg, "bos_token", &tok->bos)) != KILN_OK ||
            (s = config_token(c, cfg, "eos_token", &tok->eos)) != KILN_OK)
            return s;
        tok->add_bos = json_bool(c, cfg, "add_bos_token", tok->add_bos);
        if (c->bad_bool) return kiln_fail(KILN_ERR_FORMAT, "%s: \"%s\" must be true or false", c->cfg_path, c->bad_bool);
        if ((s = set_template(c, tok, cfg)) != KILN_OK) return s;
    }
    if (tok->eos >= 0) tok->eog[tok->eos] = true;
    return KILN_OK;
}

static kiln_status parse_json(const char *text, size_t len, const char *name, cJSON **json) {
    *json = cJSON_ParseWithLength(text, len);
    if (!*json || !cJSON_IsObject(*json)) return kiln_fail(KILN_ERR_FORMAT, "%s: not a JSON object", name);
    return KILN_OK;
}

kiln_status kiln_tokenizer_from_hf_text(const char *tokenizer_json, size_t len, const char *name,
                                        const char *config_json, size_t config_len, const char *config_name,
                                        kiln_tokenizer **out) {
    *out = NULL;
    cJSON *root = NULL, *cfg = NULL;
    kiln_tokenizer *tok = NULL;
    hf_ctx c = {.path = name ? name : "tokenizer.json", .cfg_path = config_name ? config_name : "tokenizer_config.json"};
    kiln_status s = parse_json(tokenizer_json, len, c.path, &root);
    if (s == KILN_OK && config_json) s = parse_json(config_json, config_len, c.cfg_path, &cfg);
    if (s == KILN_OK) s = load(&c, root, cfg, &tok);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (s != KILN_OK) {
        kiln_tokenizer_free(tok);
        return s;
    }
    *out = tok;
    return KILN_OK;
}

kiln_status kiln_tokenizer_from_hf(const char *tokenizer_json, const char *tokenizer_config_json,
                                   kiln_tokenizer **out) {
    *out = NULL;
    char *text = NULL, *cfg_text = NULL;
    size_t len = 0, cfg_len = 0;
    kiln_status s = kiln_file_read_all(tokenizer_json, MAX_JSON_BYTES, &text, &len);
    if (s == KILN_OK && tokenizer_config_json)
        s = kiln_file_read_all(tokenizer_config_json, MAX_JSON_BYTES, &cfg_text, &cfg_len);
    if (s == KILN_OK)
        s = kiln_tokenizer_from_hf_text(text, len, tokenizer_json, cfg_text, cfg_len, tokenizer_config_json, out);
    free(text);
    free(cfg_text);
    return s;
}
