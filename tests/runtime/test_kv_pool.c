// The paged KV pool's allocator: blocks are handed out, private to one
// sequence unless shared on purpose, counted by reference, copied before a
// write to a shared one, returned on truncation, and exhaustion is an error
// that loses nothing.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/kv_pool.h"

static kiln_backend *cpu(void) {
    kiln_backend *be;
    assert_int_equal(kiln_backend_cpu_create(1, false, &be), KILN_OK);
    return be;
}

static const int32_t *row(const kiln_kv_pool *p, int seq) { return p->tables + (size_t)seq * p->view.max_blocks_per_seq; }

static void test_blocks_are_private_and_recycled(void **state) {
    (void)state;
    kiln_backend *be = cpu();
    kiln_hparams hp = {.n_layers = 2, .n_kv_heads = 2, .head_dim = 8};
    kiln_kv_pool *p;
    // 100 tokens -> 7 blocks of 16 shared by 3 sequences.
    assert_int_equal(kiln_kv_pool_create(be, &hp, 100, 3, 100, KILN_F16, &p), KILN_OK);
    assert_int_equal(p->n_blocks, 7);
    assert_int_equal(kiln_kv_pool_prepare(p, 0, 0, 33), KILN_OK); // 3 blocks
    assert_int_equal(kiln_kv_pool_prepare(p, 1, 0, 16), KILN_OK); // 1 block
    assert_int_equal(kiln_kv_pool_prepare(p, 0, 33, 48), KILN_OK); // still 3
    assert_int_equal(kiln_kv_pool_free_blocks(p), 3);
    int used[7] = {0};
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < p->seq_blocks[s]; b++) {
            int32_t id = row(p, s)[b];
            assert_true(id >= 0 && id < 7);
            assert_int_equal(used[id]++, 0);
            assert_int_equal(p->refs[id], 1);
        }
    assert_int_equal(kiln_kv_pool_prepare(p, 2, 0, 64), KILN_ERR_CONTEXT_FULL); // needs 4, 3 free
    assert_int_equal(kiln_kv_pool_free_blocks(p), 3);                           // nothing taken
    assert_int_equal(kiln_kv_pool_prepare(p, 2, 0, 200), KILN_ERR_CONTEXT_FULL);
    assert_int_equal(kiln_kv_pool_prepare(p, 3, 0, 1), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_kv_pool_prepare(p, 2, 5, 5), KILN_ERR_INVALID_ARG);
    kiln_kv_pool_truncate(p, 0, 17); // keeps 2 blocks
    assert_int_equal(kiln_kv_pool_free_blocks(p), 4);
    kiln_kv_pool_truncate(p, 0, 0);
    assert_int_equal(kiln_kv_pool_free_blocks(p), 6);
    assert_int_equal(kiln_kv_pool_prepare(p, 2, 0, 64), KILN_OK);
    kiln_kv_pool_free(p);
    kiln_backend_destroy(be);
}

// A batch pool: each sequence's table row covers its own longest context, not
// the pool (decode attention's grid follows the row length).
static void test_sequence_cap(void **state) {
    (void)state;
    kiln_backend *be = cpu();
    kiln_hparams hp = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 8};
    kiln_kv_pool *p;
    assert_int_equal(kiln_kv_pool_create(be, &hp, 4 * 40, 4, 40, KILN_F16, &p), KILN_OK);
    assert_int_equal(p->n_blocks, 10);
    assert_int_equal(p->view.max_blocks_per_seq, 3);
    assert_int_equal(kiln_kv_pool_prepare(p, 3, 0, 48), KILN_OK);            // 3 blocks: the row's end
    assert_int_equal(kiln_kv_pool_prepare(p, 3, 48, 49), KILN_ERR_CONTEXT_FULL); // a 4th would leave the row
    for (int s = 0; s < 2; s++) assert_int_equal(kiln_kv_pool_prepare(p, s, 0, 40), KILN_OK);
    assert_int_equal(kiln_kv_pool_free_blocks(p), 1);
    kiln_kv_pool_free(p);
    assert_int_equal(kiln_kv_pool_create(be, &hp, 100, 2, 101, KILN_F16, &p), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_kv_pool_create(be, &hp, 100, 2, 0, KILN_F16, &p), KILN_ERR_INVALID_ARG);
    kiln_backend_destroy(be);
}

// Fills every slot of block b in every layer with `value`.
static void paint(kiln_kv_pool *p, int32_t b, float value) {
    const size_t n = p->block_bytes / sizeof(float);
    for (int l = 0; l < p->n_layers; l++)
        for (size_t i = 0; i < n; i++) {
            ((float *)p->layers[l].k)[(size_t)b * n + i] = value;
            ((float *)p->layers[l].v)[(size_t)b * n + i] = -value;
        }
}

static void expect_painted(const kiln_kv_pool *p, int32_t b, float value) {
    const size_t n = p->block_bytes / sizeof(float);
    for (int l = 0; l < p->n_layers; l++)
        for (size_t i = 0; i < n; i++) {
            assert_true(((const float *)p->layers[l].k)[(size_t)b * n + i] == value);
            assert_true(((const float *)p->layers[l].v)[(size_t)b * n + i] == -value);
        }
}

// Sharing counts references; a write into a shared block copies it first
// (every layer, K and V), and only the blocks the write touches.
static void test_share_and_copy_on_write(void **state) {
    (void)state;
    kiln_backend *be = cpu();
    kiln_hparams hp = {.n_layers = 2, .n_kv_heads = 1, .head_dim = 4};
    kiln_kv_pool *p;
    assert_int_equal(kiln_kv_pool_create(be, &hp, 8 * 16, 3, 64, KILN_F32, &p), KILN_OK);
    assert_int_equal(kiln_kv_pool_prepare(p, 0, 0, 40), KILN_OK); // blocks for 0..39: 3
    for (int b = 0; b < 3; b++) paint(p, row(p, 0)[b], (float)(b + 1));
    assert_int_equal(kiln_kv_pool_share(p, 0, 1, 40), KILN_OK);
    assert_int_equal(kiln_kv_pool_share(p, 0, 2, 20), KILN_OK); // two blocks
    assert_int_equal(kiln_kv_pool_free_blocks(p), 5);
    assert_int_equal(p->refs[row(p, 0)[0]], 3);
    assert_int_equal(p->refs[row(p, 0)[2]], 2);
    assert_memory_equal(row(p, 0), row(p, 1), 3 * sizeof(int32_t));
    // Sequence 1 writes positions 40..49: block 2 is shared, so it is copied;
    // block 3 is new.
    const int32_t before = row(p, 1)[2];
    assert_int_equal(kiln_kv_pool_prepare(p, 1, 40, 50), KILN_OK);
    assert_int_not_equal(row(p, 1)[2], before);
    assert_int_equal(row(p, 0)[2], before);
    expect_painted(p, row(p, 1)[2], 3.0f);
    assert_int_equal(p->refs[before], 1);
    assert_int_equal(p->refs[row(p, 1)[2]], 1);
    assert_int_equal(row(p, 1)[0], row(p, 0)[0]); // untouched blocks stay shared
    assert_int_equal(kiln_kv_pool_free_blocks(p), 3);
    // Sequence 2 rewrites from position 5: block 0 is copied, block 1 too (both shared).
    assert_int_equal(kiln_kv_pool_prepare(p, 2, 5, 20), KILN_OK);
    assert_int_not_equal(row(p, 2)[0], row(p, 0)[0]);
    expect_painted(p, row(p, 2)[1], 2.0f);
    assert_int_equal(p->refs[row(p, 0)[0]], 2);
    assert_int_equal(kiln_kv_pool_free_blocks(p), 1);
    // Not enough room for a copy: refused, nothing taken or lost.
    assert_int_equal(kiln_kv_pool_share(p, 0, 2, 40), KILN_OK); // sequence 2 back to sharing all three
    assert_int_equal(kiln_kv_pool_free_blocks(p), 3);
    assert_int_equal(kiln_kv_pool_prepare(p, 2, 0, 64), KILN_ERR_CONTEXT_FULL); // 3 copies + 1 new > 3
    assert_int_equal(p->refs[row(p, 0)[0]], 3);
    assert_int_equal(kiln_kv_pool_free_blocks(p), 3);
    // Releasing every sequence frees every block.
    for (int s = 0; s < 3; s++) kiln_kv_pool_truncate(p, s, 0);
    assert_int_equal(kiln_kv_pool_free_blocks(p), 8);
    for (int b = 0; b < 8; b++) assert_int_equal(p->refs[b], 0);
    assert_int_equal(kiln_kv_pool_share(p, 0, 0, 1), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_kv_pool_share(p, 0, 1, 1), KILN_ERR_INVALID_ARG); // sequence 0 holds nothing now
    kiln_kv_pool_free(p);
    kiln_backend_destroy(be);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_blocks_are_private_and_recycled),
                                       cmocka_unit_test(test_sequence_cap),
                                       cmocka_unit_test(test_share_and_copy_on_write)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
