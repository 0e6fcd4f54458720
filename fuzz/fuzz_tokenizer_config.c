// libFuzzer harness for tokenizer_config.json, loaded beside a small fixed
// tokenizer.json (SentencePiece style, no regex: the time goes to the config).
// Any byte string must load or fail cleanly; what loads has its chat template
// recognised and, if it is a known family, a conversation rendered, and its
// BOS/EOS used.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/chat_template.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char tokenizer_json[] =
    "{\"added_tokens\":["
    "{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"
    "{\"id\":2,\"content\":\"</s>\",\"special\":true},{\"id\":3,\"content\":\"<|im_start|>\",\"special\":true},"
    "{\"id\":4,\"content\":\"<|im_end|>\",\"special\":true},{\"id\":5,\"content\":\"<end_of_turn>\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"
    "\"pre_tokenizer\":null,"
    "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{"
    "\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<|im_start|>\":3,\"<|im_end|>\":4,\"<end_of_turn>\":5,"
    "\"\xE2\x96\x81\":6,\"h\":7,\"i\":8,\"hi\":9,\"\xE2\x96\x81hi\":10,\"<0x0A>\":11},"
    "\"merges\":[\"h i\",\"\xE2\x96\x81 hi\"]}}";

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_tokenizer *tok;
    if (kiln_tokenizer_from_hf_text(tokenizer_json, sizeof tokenizer_json - 1, "tokenizer.json", (const char *)data,
                                    size, "tokenizer_config.json", &tok) != KILN_OK)
        return 0;
    const int32_t bos = kiln_tokenizer_bos(tok), eos = kiln_tokenizer_eos(tok);
    if (bos < -1 || bos >= kiln_tokenizer_vocab_size(tok) || eos < -1 || eos >= kiln_tokenizer_vocab_size(tok))
        abort();
    int32_t *ids;
    size_t n;
    if (kiln_tokenizer_encode(tok, "hi\nhi", 5, true, true, &ids, &n) == KILN_OK) {
        sink += n;
        free(ids);
    }
    const char *tmpl = kiln_tokenizer_chat_template(tok);
    kiln_chat_format fmt = kiln_chat_detect(tmpl);
    sink += strlen(kiln_chat_format_name(fmt));
    if (fmt != KILN_CHAT_UNKNOWN) {
        const kiln_chat_message msgs[] = {{"system", " be brief "}, {"user", "hi"}, {"assistant", "hi"}, {"user", "?"}};
        char bos_text[64] = "";
        const char *bytes;
        size_t len;
        if (bos >= 0 && kiln_tokenizer_token_bytes(tok, bos, &bytes, &len) && len < sizeof bos_text) {
            memcpy(bos_text, bytes, len);
            bos_text[len] = '\0';
        }
        for (int k = 1; k <= 4; k++) {
            char *out = NULL;
            if (kiln_chat_render(fmt, msgs + (k == 4 ? 1 : 0), k == 4 ? 3 : k, k % 2, bos_text, &out) == KILN_OK)
                sink += strlen(out);
            free(out);
        }
    }
    kiln_tokenizer_free(tok);
    return 0;
}
