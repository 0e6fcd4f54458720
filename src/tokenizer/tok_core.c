// Construction shared by the GGUF and tokenizer.json loaders, and the simple
// accessors.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_utf8.h"

kiln_status tok_alloc(int32_t n_vocab, kiln_tokenizer **out) {
    *out = NULL;
    if (n_vocab <= 0) return kiln_fail(KILN_ERR_FORMAT, "tokenizer: empty vocabulary");
    kiln_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    size_t n = (size_t)n_vocab;
    tok->n_vocab = n_vocab;
    tok->text_off = calloc(n, sizeof *tok->text_off);
    tok->bytes_off = calloc(n, sizeof *tok->bytes_off);
    tok->text_len = calloc(n, sizeof *tok->text_len);
    tok->bytes_len = calloc(n, sizeof *tok->bytes_len);
    tok->type = malloc(n);
    tok->eog = calloc(n, sizeof *tok->eog);
    tok->unk = tok->bos = tok->eos = tok->eot = -1;
    if (!tok->text_off || !tok->bytes_off || !tok->text_len || !tok->bytes_len || !tok->type || !tok->eog) {
        kiln_tokenizer_free(tok);
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    memset(tok->type, TOK_TYPE_NORMAL, n);
    // The arena exists even if every token is empty, so that a token's text
    // is never a NULL pointer (memcmp and friends must not see one).
    tok->arena_cap = 4096;
    if (!(tok->arena = malloc(tok->arena_cap))) {
        kiln_tokenizer_free(tok);
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    *out = tok;
    return KILN_OK;
}

static bool arena_append(kiln_tokenizer *tok, const char *s, size_t len, size_t *off) {
    if (len > SIZE_MAX / 4 - tok->arena_len) return false;
    size_t need = tok->arena_len + len;
    if (need > tok->arena_cap) {
        size_t cap = tok->arena_cap;
        while (cap < need) cap *= 2;
        char *grown = realloc(tok->arena, cap);
        if (!grown) return false;
        tok->arena = grown;
        tok->arena_cap = cap;
    }
    if (len) memcpy(tok->arena + tok->arena_len, s, len);
    *off = tok->arena_len;
    tok->arena_len += len;
    return true;
}

kiln_status tok_set_text(kiln_tokenizer *tok, int32_t id, const char *text, size_t len) {
    if (len > UINT32_MAX) return kiln_fail(KILN_ERR_FORMAT, "tokenizer: token %d is too long", (int)id);
    if (!arena_append(tok, text, len, &tok->text_off[id])) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    tok->text_len[id] = (uint32_t)len;
    return KILN_OK;
}

const char *tok_text(const kiln_tokenizer *tok, int32_t id, size_t *len) {
    *len = tok->text_len[id];
    return tok->arena + tok->text_off[id];
}

// <0xXX> with two hex digits, as SentencePiece names its byte tokens.
int tok_parse_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// The bytes a token stands for once decoded.
static kiln_status decode_token(kiln_tokenizer *tok, int32_t id, char *scratch, const char *where) {
    size_t len;
    const char *text = tok_text(tok, id, &len);
    size_t off = tok->text_off[id], n = 0;
    uint8_t type = tok->type[id];
    bool raw = type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER_DEFINED || type == TOK_TYPE_UNKNOWN;
    const int byte = tok->kind == KILN_TOKENIZER_SPM ? tok_parse_byte_token(text, len) : -1;
    // A token declared a byte that names none would be read as text, and
    // byte fallback would silently lose the byte it was meant for.
    if (tok->kind == KILN_TOKENIZER_SPM && type == TOK_TYPE_BYTE && byte < 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: token %d (\"%.*s\") has type BYTE but is not <0xHH> (two hex digits)",
                         where, (int)id, (int)(len > 32 ? 32 : len), text);
    if (!raw && byte >= 0) {
        scratch[0] = (char)byte;
        n = 1;
    } else if (!raw && tok->kind == KILN_TOKENIZER_SPM) {
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
                scratch[n++] = ' ';
                i += 3;
            } else {
                scratch[n++] = text[i++];
            }
        }
    } else if (!raw && tok->kind == KILN_TOKENIZER_BYTE_BPE) {
        for (size_t i = 0; i < len;) {
            size_t cl = tok_utf8_char_len((const uint8_t *)text + i, len - i);
            uint32_t cp = 0;
            if (cl == 2) cp = ((uint32_t)(text[i] & 0x1F) << 6) | (uint32_t)(text[i + 1] & 0x3F);
            else if (cl == 1) cp = (uint8_t)text[i];
            int b = cl <= 2 ? tok_cp_to_byte(cp) : -1;
            if (b >= 0) {
                scratch[n++] = (char)b;
            } else {
                memcpy(scratch + n, text + i, cl); // not a stand-in: keep as is
                n += cl;
            }
            i += cl;
        }
    } else {
        tok->bytes_off[id] = off; // same bytes as the text
        tok->bytes_len[id] = (uint32_t)len;
        return KILN_OK;
    }
    if (n == len && memcmp(scratch, text, n) == 0) {
        tok->bytes_off[id] = off;
    } else {
        size_t boff;
        if (!arena_append(tok, scratch, n, &boff)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        tok->bytes_off[id] = boff;
    }
    tok->bytes_len[id] = (uint32_t)n;
    return KILN_OK;
}

static int cmp_len_desc(const void *a, const void *b) {
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return (x < y) - (x > y);
}

static kiln_status index_specials(kiln_tokenizer *tok) {
    size_t count = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        uint8_t t = tok->type[id];
        if ((t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN) && tok->text_len[id] > 0 &&
            tok->text_len[id] <= UINT16_MAX)
            count++;
    }
    tok->specials = calloc(count ? count : 1, sizeof *tok->specials);
    if (!tok->specials || !tok_strmap_init(&tok->special_map, count))
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        uint8_t t = tok->type[id];
        size_t len;
        const char *text = tok_text(tok, id, &len);
        if (!(t == TOK_TYPE_CONTROL || t == TOK_TYPE_USER_DEFINED || t == TOK_TYPE_UNKNOWN) || len == 0 ||
            len > UINT16_MAX)
            continue;
        int32_t slot = tok_strmap_get(&tok->special_map, text, len);
        if (slot < 0) {
            slot = (int32_t)tok->n_specials++;
            tok_strmap_put(&tok->special_map, text, len, slot);
            // Record this length for the first byte if new.
            uint8_t b = (uint8_t)text[0];
            bool seen = false;
            for (size_t i = 0; i < tok->n_special_lens[b]; i++) seen |= tok->special_lens[b][i] == len;
            if (!seen) {
                uint16_t *grown = realloc(tok->special_lens[b], (tok->n_special_lens[b] + 1) * sizeof *grown);
                if (!grown) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
                tok->special_lens[b] = grown;
                grown[tok->n_special_lens[b]++] = (uint16_t)len;
            }
        }
        tok->specials[slot] = (tok_special){id, t != TOK_TYPE_USER_DEFINED};
    }
    for (int b = 0; b < 256; b++)
        if (tok->n_special_lens[b] > 1)
            qsort(tok->special_lens[b], tok->n_special_lens[b], sizeof(uint16_t), cmp_len_desc);
    return KILN_OK;
}

// Tokens that end a turn in the chat formats of the supported families.
static const char *const eog_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>",   "<end_of_turn>",   "<|endoftext|>",
    "<|eom_id|>", "<EOT>",      "<|end_of_text|>", "<end_of_utterance>",
};

kiln_status tok_finish(kiln_tokenizer *tok, const char *where) {
    for (int b = 0; b < 256; b++) {
        char utf8[4];
        tok->gpt2_byte_len[b] = (uint8_t)tok_utf8_encode(tok_byte_to_cp((uint8_t)b), utf8);
        memcpy(tok->gpt2_byte_utf8[b], utf8, tok->gpt2_byte_len[b]);
    }
    // Room for a few extra keys (aliases) besides one per token.
    if (!tok_strmap_init(&tok->vocab, (size_t)tok->n_vocab + (size_t)tok->n_vocab / 4 + 64)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    // Decoded bytes may be appended to the arena, which can move it: compute
    // them first, then point the hash keys into the final arena.
    size_t longest = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->text_len[id] > longest) longest = tok->text_len[id];
    // Nothing could ever be encoded (or decoded to any text).
    if (longest == 0) return kiln_fail(KILN_ERR_FORMAT, "%s: every token of the vocabulary is an empty string", where);
    char *scratch = malloc(longest ? longest : 1);
    if (!scratch) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        kiln_status s = decode_token(tok, id, scratch, where);
        if (s != KILN_OK) {
            free(scratch);
            return s;
        }
    }
    free(scratch);
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        size_t len;
        const char *text = tok_text(tok, id, &len);
        if (len == 0) continue;
        // With duplicates the later id wins, as in llama.cpp.
        if (!tok_strmap_put(&tok->vocab, text, len, id)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int b = 0; b < 256; b++) {
        if (tok->kind == KILN_TOKENIZER_BYTE_BPE) {
            tok->byte_token[b] = tok_strmap_get(&tok->vocab, tok->gpt2_byte_utf8[b], tok->gpt2_byte_len[b]);
        } else {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            tok->byte_token[b] = tok_strmap_get(&tok->vocab, name, 6);
        }
    }
    kiln_status s = index_specials(tok);
    if (s != KILN_OK) return s;
    if (tok->eos >= 0) tok->eog[tok->eos] = true;
    if (tok->eot >= 0) tok->eog[tok->eot] = true;
    for (size_t i = 0; i < sizeof eog_names / sizeof eog_names[0]; i++) {
        int32_t id = tok_strmap_get(&tok->vocab, eog_names[i], strlen(eog_names[i]));
        if (id >= 0 && tok->type[id] == TOK_TYPE_CONTROL) tok->eog[id] = true;
    }
    return KILN_OK;
}

void kiln_tokenizer_free(kiln_tokenizer *tok) {
    if (!tok) return;
    free(tok->arena);
    free(tok->text_off);
    free(tok->bytes_off);
    free(tok->text_len);
    free(tok->bytes_len);
    free(tok->type);
    free(tok->scores);
    free(tok->eog);
    tok_strmap_free(&tok->vocab);
    tok_pairmap_free(&tok->merges);
    tok_strmap_free(&tok->special_map);
    free(tok->specials);
    for (int b = 0; b < 256; b++) free(tok->special_lens[b]);
    tok_pipeline_free(&tok->pipe);
    free(tok->pre_name);
    free(tok->chat_template);
    free(tok->alias_buf);
    free(tok);
}

kiln_tokenizer_kind kiln_tokenizer_get_kind(const kiln_tokenizer *tok) { return tok->kind; }
int32_t kiln_tokenizer_vocab_size(const kiln_tokenizer *tok) { return tok->n_vocab; }
int32_t kiln_tokenizer_bos(const kiln_tokenizer *tok) { return tok->bos; }
int32_t kiln_tokenizer_eos(const kiln_tokenizer *tok) { return tok->eos; }
bool kiln_tokenizer_add_bos_default(const kiln_tokenizer *tok) { return tok->add_bos && tok->bos >= 0; }
const char *kiln_tokenizer_chat_template(const kiln_tokenizer *tok) { return tok->chat_template; }
const char *kiln_tokenizer_pre_name(const kiln_tokenizer *tok) { return tok->pre_name; }
bool kiln_tokenizer_pre_known(const kiln_tokenizer *tok) { return tok->pre_known; }

bool kiln_tokenizer_is_eog(const kiln_tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab && tok->eog[id];
}

int32_t kiln_tokenizer_find(const kiln_tokenizer *tok, const char *text) {
    return text ? tok_strmap_get(&tok->vocab, text, strlen(text)) : -1;
}

bool kiln_tokenizer_token_bytes(const kiln_tokenizer *tok, int32_t id, const char **bytes, size_t *len) {
    if (id < 0 || id >= tok->n_vocab) return false;
    *bytes = tok->arena + tok->bytes_off[id];
    *len = tok->bytes_len[id];
    return true;
}

size_t kiln_tokenizer_max_token_bytes(const kiln_tokenizer *tok) {
    size_t longest = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++)
        if (tok->bytes_len[id] > longest) longest = tok->bytes_len[id];
    return longest;
}
