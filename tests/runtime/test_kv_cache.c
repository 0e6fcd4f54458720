// Paged KV cache bookkeeping: blocks are handed out, never shared between
// live sequences, returned on release, and exhaustion is an error.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/kv_cache.h"

static void test_blocks_are_private_and_recycled(void **state) {
    (void)state;
    kiln_backend *be;
    assert_int_equal(kiln_backend_cpu_create(1, false, &be), KILN_OK);
    kiln_hparams hp = {.n_layers = 2, .n_kv_heads = 2, .head_dim = 8};
    kiln_kv_cache *c;
    // 100 tokens -> 7 blocks of 16 shared by 3 sequences.
    assert_int_equal(kiln_kv_cache_create(be, &hp, 100, 3, 100, KILN_F16, &c), KILN_OK);
    assert_int_equal(c->n_blocks, 7);
    assert_int_equal(kiln_kv_cache_reserve(c, 0, 33), KILN_OK); // 3 blocks
    assert_int_equal(kiln_kv_cache_reserve(c, 1, 16), KILN_OK); // 1 block
    assert_int_equal(kiln_kv_cache_reserve(c, 0, 48), KILN_OK); // still 3
    assert_int_equal(c->n_free, 3);
    int used[7] = {0};
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < c->seq_blocks[s]; b++) {
            int32_t id = c->tables[s * c->view.max_blocks_per_seq + b];
            assert_true(id >= 0 && id < 7);
            assert_int_equal(used[id]++, 0);
        }
    assert_int_equal(kiln_kv_cache_reserve(c, 2, 64), KILN_ERR_CONTEXT_FULL); // needs 4, 3 free
    assert_int_equal(kiln_kv_cache_reserve(c, 2, 200), KILN_ERR_CONTEXT_FULL);
    assert_int_equal(kiln_kv_cache_reserve(c, 3, 1), KILN_ERR_INVALID_ARG);
    kiln_kv_cache_release(c, 0);
    assert_int_equal(c->n_free, 6);
    assert_int_equal(kiln_kv_cache_reserve(c, 2, 64), KILN_OK);
    kiln_kv_cache_free(c);
    kiln_backend_destroy(be);
}

// A batch pool: each sequence's table row covers its own longest context, not
// the pool (decode attention's grid follows the row length).
static void test_sequence_cap(void **state) {
    (void)state;
    kiln_backend *be;
    assert_int_equal(kiln_backend_cpu_create(1, false, &be), KILN_OK);
    kiln_hparams hp = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 8};
    kiln_kv_cache *c;
    assert_int_equal(kiln_kv_cache_create(be, &hp, 4 * 40, 4, 40, KILN_F16, &c), KILN_OK);
    assert_int_equal(c->n_blocks, 10);
    assert_int_equal(c->view.max_blocks_per_seq, 3);
    assert_int_equal(kiln_kv_cache_reserve(c, 3, 48), KILN_OK);            // 3 blocks: the row's end
    assert_int_equal(kiln_kv_cache_reserve(c, 3, 49), KILN_ERR_CONTEXT_FULL); // a 4th would leave the row
    for (int s = 0; s < 2; s++) assert_int_equal(kiln_kv_cache_reserve(c, s, 40), KILN_OK);
    assert_int_equal(c->n_free, 1);
    kiln_kv_cache_free(c);
    assert_int_equal(kiln_kv_cache_create(be, &hp, 100, 2, 101, KILN_F16, &c), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_kv_cache_create(be, &hp, 100, 2, 0, KILN_F16, &c), KILN_ERR_INVALID_ARG);
    kiln_backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_blocks_are_private_and_recycled),
                                       cmocka_unit_test(test_sequence_cap)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
