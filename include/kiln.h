// libkiln: load a model (GGUF file or Hugging Face folder), tokenize, and
// generate text. Every fallible call returns a kiln_status; on failure
// kiln_last_error() gives a message that names the file and the problem.
#ifndef KILN_H
#define KILN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_IO,
    KILN_ERR_FORMAT,
    KILN_ERR_UNSUPPORTED,
    KILN_ERR_NOMEM,
    KILN_ERR_INVALID_ARG,
    KILN_ERR_CONTEXT_FULL,
} kiln_status;

const char *kiln_last_error(void);
const char *kiln_status_name(kiln_status status);
const char *kiln_version(void);

typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;

typedef enum kiln_device {
    KILN_DEVICE_AUTO = 0, // the environment variable KILN_DEVICE (cpu, cuda) if set, else cuda when a GPU is present
    KILN_DEVICE_CPU,
    KILN_DEVICE_CUDA,
} kiln_device;

typedef struct kiln_model_params {
    int n_threads; // CPU threads; 0: all cores
    // CPU: float activations in matrix products instead of 8-bit quantized
    // ones: slower, and equal to a float reference up to summation order.
    bool precise;
    kiln_device device;
    int gpu;       // CUDA device index
    // Called as the weights load (fraction done in [0, 1]); may be NULL.
    void (*progress)(double fraction, void *user);
    void *progress_user;
    // Metadata and tokenizer only, for any architecture: no weights are
    // bound and no backend is made. Such a model answers the tokenizer,
    // chat-template and model-information calls; it cannot make sessions.
    bool vocab_only;
} kiln_model_params;

// Where memory goes, in bytes (device memory on a GPU, host memory on the CPU).
typedef struct kiln_memory_info {
    uint64_t weights;      // the model's weights as the device holds them (0 on the CPU: the file is mapped)
    uint64_t kv_cache;     // KV cache of the given context
    uint64_t workspace;    // activations and scratch of one session
    uint64_t device_free;  // free device memory now (0: not known)
    uint64_t device_total; // (0: not known)
} kiln_memory_info;

typedef struct kiln_sampling_params {
    float temperature;        // 0: greedy
    int top_k;                // 0: off
    float top_p;              // 1: off
    float min_p;              // 0: off
    float repetition_penalty; // 1: off (divides positive logits, multiplies negative)
    float frequency_penalty;  // 0: off
    float presence_penalty;   // 0: off
    int penalty_last_n;       // window of past tokens the penalties look at
    uint64_t seed;
} kiln_sampling_params;

kiln_sampling_params kiln_sampling_default(void);

kiln_status kiln_model_load(const char *path, const kiln_model_params *params, kiln_model **out);
void kiln_model_free(kiln_model *model);
int kiln_model_vocab_size(const kiln_model *model);
int kiln_model_context_length(const kiln_model *model);
// "cpu" or "cuda"
const char *kiln_model_device(const kiln_model *model);
// The device in words: "2 threads, avx512-vnni kernels", "NVIDIA H200".
const char *kiln_model_device_info(const kiln_model *model);
// Memory the model takes and one session of n_ctx tokens (0: the default) would take.
void kiln_model_memory(const kiln_model *model, int n_ctx, kiln_memory_info *out);

// Tokenizes text. *ids is malloc'd; the caller frees it.
kiln_status kiln_tokenize(const kiln_model *model, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t **ids, size_t *n_ids);
// Bytes of one token as the model stores them (may be part of a UTF-8 sequence).
kiln_status kiln_token_bytes(const kiln_model *model, int32_t id, const char **bytes, size_t *len);
bool kiln_token_is_end_of_generation(const kiln_model *model, int32_t id);

kiln_status kiln_session_create(kiln_model *model, int n_ctx, kiln_session **out);
void kiln_session_free(kiln_session *session);
// Feeds tokens (prompt or previous output). If logits is not NULL it receives
// the logits of the last token, owned by the session, kiln_model_vocab_size()
// floats (on a GPU this copies them to the host; pass NULL when only sampling).
// With logits NULL a GPU session may return before the work is done: the next
// sample (or an eval that asks for logits) waits for it and reports its errors.
kiln_status kiln_session_eval(kiln_session *session, const int32_t *ids, size_t n, const float **logits);
kiln_status kiln_session_sample(kiln_session *session, const kiln_sampling_params *params, int32_t *id);
int kiln_session_position(const kiln_session *session);
// Forgets all tokens: the session starts again at position 0.
void kiln_session_reset(kiln_session *session);
// Drops tokens from position n on (n <= position), keeping the prefix cached.
kiln_status kiln_session_truncate(kiln_session *session, int n);


// ---- The engine ---------------------------------------------------------------
// One engine serves many sequences from one paged KV pool: each call of
// kiln_engine_step runs one forward pass over a batch of tokens that may
// belong to several sequences at different positions (prompt chunks and
// decode steps mixed). Sessions (below) are a thin client of it.

typedef struct kiln_engine kiln_engine;

typedef enum kiln_kv_type {
    KILN_KV_AUTO = 0, // the backend's own: F32 on the CPU, F16 on CUDA
    KILN_KV_F16,
    KILN_KV_F32,
} kiln_kv_type;

// One-token matrix-vector products on CUDA: which form (both give
// bitwise-identical results; the faster depends on the card).
typedef enum kiln_matvec_form {
    KILN_MATVEC_TIMED = 0, // each shape timed once at its first use, the faster kept
    KILN_MATVEC_PLAIN,
    KILN_MATVEC_PIPELINED,
} kiln_matvec_form;

// Kernel choices of the backend. Zero means the default; those marked timed
// are decided by timing on the card at first use until the engine builder
// records them. They apply to the model's backend, which every engine of the
// model shares: the last engine created sets them.
typedef struct kiln_kernel_options {
    kiln_matvec_form matvec_form;
    int gemm_trial_rounds;       // cuBLASLt candidates timed in this many interleaved rounds (0: 1)
    int matvec_max_input_bytes;  // 2 to 8 tokens take the matrix-vector kernel while their float inputs total at most this (0: 16384)
    bool portable;               // CUDA: none of the Hopper-only paths (what Ampere and Ada run)
} kiln_kernel_options;

typedef struct kiln_engine_options {
    int max_seqs;        // sequences, ids 0..max_seqs-1 (0: 1)
    int max_seq_len;     // tokens of the longest sequence (0: min(trained context, 4096))
    int max_step_tokens; // tokens in one step (0: 512 on the CPU, 2048 on CUDA; never more than the pool)
    int kv_pool_tokens;  // token slots of the KV pool, shared by every sequence (0: max_seqs * max_seq_len)
    int max_logit_rows;  // tokens of one step whose logits may be asked for (0: max_seqs)
    kiln_kv_type kv_type;
    kiln_kernel_options kernels;
} kiln_engine_options;

// A step's tokens. The tokens of one sequence are contiguous and at
// consecutive positions; the first may start anywhere up to the sequence's
// length (earlier: the positions from there on are replaced).
typedef struct kiln_batch {
    int n_tokens;
    const int32_t *tokens; // [n_tokens]
    const int32_t *pos;    // [n_tokens] position of each token in its sequence
    const int32_t *seq;    // [n_tokens] sequence of each token
    const bool *logits;    // [n_tokens] which tokens' logits to compute; NULL: the last token's only
} kiln_batch;

// Memory an engine of these options takes on the model's device, in bytes:
// the KV pool and the work space (activations, logits).
void kiln_engine_memory(const kiln_model *model, const kiln_engine_options *options, uint64_t *kv_pool,
                        uint64_t *workspace);
// options NULL: every default. Refused before anything is allocated when the
// KV pool and work space do not fit the device's free memory (or, on the
// CPU, the memory the machine has available), with the numbers and the
// largest sequence length that would fit.
kiln_status kiln_engine_create(kiln_model *model, const kiln_engine_options *options, kiln_engine **out);
void kiln_engine_free(kiln_engine *engine);
// The options in force, with every default filled in.
void kiln_engine_get_options(const kiln_engine *engine, kiln_engine_options *out);
// Runs one forward pass. On a GPU it may return before the work is done;
// kiln_engine_logits, kiln_engine_sync and sampling wait for it.
kiln_status kiln_engine_step(kiln_engine *engine, const kiln_batch *batch);
// The logits of the i-th token that asked for them in the last step, in
// batch order: vocab floats owned by the engine, valid until its next step.
kiln_status kiln_engine_logits(kiln_engine *engine, int i, const float **logits);
kiln_status kiln_engine_sync(kiln_engine *engine);
// Tokens the sequence holds (0 for an unused one).
int kiln_engine_seq_length(const kiln_engine *engine, int seq);
// Keeps positions [0, n) of seq (0: empties it); its other blocks go back to the pool.
kiln_status kiln_engine_seq_truncate(kiln_engine *engine, int seq, int n);
// dst (emptied first) takes src's first n positions by sharing their KV
// blocks (a shared prompt is stored once); each copies a shared block only
// when it writes into it.
kiln_status kiln_engine_seq_share(kiln_engine *engine, int src, int dst, int n);
// Free token slots in the KV pool.
int kiln_engine_free_slots(const kiln_engine *engine);

// ---- What the model's files say --------------------------------------------

int32_t kiln_model_bos(const kiln_model *model); // -1: the model has none
int32_t kiln_model_eos(const kiln_model *model); // -1: the model has none
// Whether prompts should start with BOS (the model files say so).
bool kiln_model_adds_bos(const kiln_model *model);
// The chat template text from the model files, or NULL.
const char *kiln_model_chat_template(const kiln_model *model);

// ---- Chat templates ----------------------------------------------------------
// kiln renders the well-known template families (ChatML, Llama 3, Llama 2,
// Mistral, Gemma, Phi-3) byte for byte as transformers does, without Jinja.

// role is "system", "user" or "assistant".
typedef struct kiln_chat_message {
    const char *role;
    const char *content;
} kiln_chat_message;

// The family of the model's template ("chatml", "llama3", "llama2",
// "mistral", "gemma", "phi3"), or NULL when it has none kiln recognises.
const char *kiln_chat_template_family(const kiln_model *model);
// Renders a conversation into *out (malloc'd, NUL-terminated; the caller
// frees it). family NULL: the model's own template; else one of the names
// above. With the model's own template and no system message first, the
// template's default system prompt (if any) is included. add_assistant ends
// the text with the assistant's turn opening, for generation.
kiln_status kiln_chat_apply_template(const kiln_model *model, const char *family, const kiln_chat_message *msgs,
                                     size_t n, bool add_assistant, char **out);

// ---- Streaming detokenizer ---------------------------------------------------
// Push generated ids one at a time; only complete UTF-8 comes out (a token
// that ends inside a character waits for the next one; invalid bytes become
// U+FFFD).
typedef struct kiln_detokenizer kiln_detokenizer;
kiln_status kiln_detokenizer_create(const kiln_model *model, kiln_detokenizer **out);
void kiln_detokenizer_free(kiln_detokenizer *d);
// The text this id completes (*len bytes, NUL-terminated), owned by d and
// valid until its next call; "" when the id completes no character yet.
const char *kiln_detokenizer_push(kiln_detokenizer *d, int32_t id, size_t *len);
// What is still pending at the end of a generation (as U+FFFD), likewise.
const char *kiln_detokenizer_flush(kiln_detokenizer *d, size_t *len);

// ---- Sessions: more --------------------------------------------------------

// The tokens the session holds (prompt and output so far): *tokens points
// into the session, valid until its next call; returns their count.
int kiln_session_tokens(const kiln_session *session, const int32_t **tokens);
// Waits for the session's queued work and reports its errors.
kiln_status kiln_session_sync(kiln_session *session);
int kiln_session_context(const kiln_session *session); // its context length in tokens

// ---- Generation ----------------------------------------------------------------

// Receives text as it becomes final; return false to stop generating.
typedef bool (*kiln_text_callback)(const char *text, size_t len, void *user);

typedef struct kiln_generate_params {
    int max_new_tokens;      // < 0: until end of generation or a full context; 0: none
    const char *const *stop; // stop strings (not emitted), or NULL
    int n_stop;
    bool ignore_eos;         // keep going past end-of-generation tokens
} kiln_generate_params;

typedef struct kiln_generate_stats {
    int n_prompt;            // tokens evaluated for the prompt
    int n_generated;
    double prefill_seconds;
    double decode_seconds;
    const char *stop_reason; // "eog", "stop string", "length", "context", "callback"
} kiln_generate_stats;

// Evaluates the prompt in the session (after what it holds), then samples and
// streams text until an end-of-generation token, a stop string, the token
// limit, a full context, or the callback returning false.
kiln_status kiln_generate(kiln_session *session, const int32_t *prompt, size_t n_prompt,
                          const kiln_sampling_params *sampling, const kiln_generate_params *params,
                          kiln_text_callback on_text, void *user, kiln_generate_stats *stats);

// ---- Model information (kiln inspect) ----------------------------------------

// What the model's files say and how kiln holds the model. Strings belong to
// the model and live as long as it. Numbers the files do not give are 0.
typedef struct kiln_model_info {
    const char *path;
    const char *format;       // "gguf" or "safetensors" (a Hugging Face folder)
    uint32_t gguf_version;    // 0 unless GGUF
    uint64_t n_metadata;      // GGUF metadata keys (0 unless GGUF)
    uint64_t n_tensors;
    const char *arch;         // "llama", "qwen2", "gemma3", ...; "" when the files name none
    // Whether kiln can run this architecture and its hyperparameters; when it
    // cannot (only a vocab_only load succeeds), unsupported says why.
    bool supported;
    const char *unsupported;  // NULL when supported
    bool vocab_only;          // loaded with kiln_model_params.vocab_only
    int n_layers;
    int dim;                  // hidden size
    int ffn_dim;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab;                // rows of the embedding table
    int ctx_train;            // context the model was trained for
    int sliding_window;       // 0: none
    float rope_theta;
    int rope_dims;
    bool rope_interleaved;    // RoPE rotates adjacent pairs (else halves); meaningful when supported
    bool rope_llama3;         // Llama 3 frequency scaling
    float norm_eps;
    bool qkv_bias;
    bool tied_embeddings;     // the output projection is the token embedding
    const char *tokenizer;    // "byte-level BPE" or "SentencePiece BPE"
    int tokenizer_vocab;
    const char *pre_tokenizer; // the pre-tokenizer's name, or NULL
    bool pre_tokenizer_known;  // false: a name kiln does not know, run with the GPT-2 rule
    int32_t bos, eos;          // -1: none
    bool adds_bos;
    const char *chat_template_family; // as kiln_chat_template_family(), or NULL
    bool has_chat_template;
    uint64_t weight_bytes;    // every tensor as stored in the files
    const char *device;       // "cpu" or "cuda"; NULL with vocab_only
    const char *kv_dtype;     // what a session's KV cache stores ("f32", "f16"); NULL with vocab_only
} kiln_model_info;

void kiln_model_get_info(const kiln_model *model, kiln_model_info *out);

// One tensor of the model's files, in the files' order.
typedef struct kiln_tensor_info {
    const char *name;
    const char *dtype; // "F32", "BF16", "Q4_1", ...
    int n_dims;
    int64_t ne[4];     // ne[0] varies fastest (GGUF's order); unused dimensions are 1
    uint64_t bytes;
} kiln_tensor_info;

uint64_t kiln_model_tensor_count(const kiln_model *model);
kiln_status kiln_model_tensor_info(const kiln_model *model, uint64_t i, kiln_tensor_info *out);

// Checks the ranges of sampling parameters (temperature >= 0, 0 < top_p <= 1,
// 0 <= min_p <= 1, ...) as kiln_session_sample would; the message names the
// parameter and its range.
kiln_status kiln_sampling_params_check(const kiln_sampling_params *params);

// ---- Measuring (kiln bench) ------------------------------------------------------

// Seconds on a monotonic clock, for timing work (wait for it first:
// kiln_session_sync, kiln_engine_sync).
double kiln_now_seconds(void);
// CPU threads the model's backend runs on (0 on a GPU), and the CPU kernel
// set it picked from the processor's features ("avx512-vnni", "avx2", "scalar").
int kiln_model_threads(const kiln_model *model);
const char *kiln_cpu_kernels(void);

// What the model's device can do at best, measured now: the ceilings kiln's
// own kernels are compared with. KILN_ERR_UNSUPPORTED off a GPU.
typedef struct kiln_device_ceilings {
    double read_gbps;        // streaming read (bytes read / time), 1e9 bytes a second
    double copy_gbps;        // device-to-device copy ((bytes read + written) / time)
    double gemm_bf16_tflops; // cuBLASLt 8192^3 BF16 GEMM on random data
} kiln_device_ceilings;
kiln_status kiln_device_measure_ceilings(const kiln_model *model, kiln_device_ceilings *out);
// Bytes of the weights one decode step reads on the model's device: every
// matrix once and one row of the embedding table.
uint64_t kiln_model_decode_read_bytes(const kiln_model *model);

#ifdef __cplusplus
}
#endif
#endif
