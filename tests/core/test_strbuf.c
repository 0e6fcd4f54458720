// The growable text buffer keeps its bytes and its terminator through appends
// and partial consumption.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/strbuf.h"

static void test_append_and_consume(void **state) {
    (void)state;
    kiln_strbuf b = {0};
    assert_true(kiln_strbuf_append(&b, "", 0));
    assert_string_equal(b.data, "");
    for (int i = 0; i < 1000; i++) assert_true(kiln_strbuf_append(&b, "abc", 3));
    assert_int_equal(b.len, 3000);
    assert_int_equal(strlen(b.data), 3000);
    kiln_strbuf_consume(&b, 2998);
    assert_string_equal(b.data, "bc");
    assert_true(kiln_strbuf_append(&b, "d\0e", 3)); // embedded NUL kept by length
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "bcd\0e", 6);
    kiln_strbuf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");
    kiln_strbuf_free(&b);
    assert_null(b.data);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_append_and_consume)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
