/* C unit tests of the JSON span scanner (jsonspan.c). */
#include <stdio.h>
#include <string.h>
#include "jsonspan.h"

static int passed, failed;
#define CHECK(cond, name) do { if (cond) { passed++; printf("ok   - %s\n", name); } \
    else { failed++; printf("FAIL - %s (%s:%d)\n", name, __FILE__, __LINE__); } } while (0)

static int member_is(const char *s, const char *key, const char *want)
{
    size_t a = 0, b = 0;
    int r = thorp_json_member(s, strlen(s), key, strlen(key), &a, &b);
    if (!want) return r == 0;
    return r == 1 && b - a == strlen(want) && memcmp(s + a, want, b - a) == 0;
}

int main(void)
{
    CHECK(member_is("{\"id\":18446744073709551615,\"x\":1}", "id", "18446744073709551615"),
          "a u64 id comes back as its exact text");
    CHECK(member_is(" { \"a\" : {\"id\":1}, \"id\" : [ {}, \"}\" ] } ", "id", "[ {}, \"}\" ]"),
          "only top-level members match; nesting and braces in strings are skipped");
    CHECK(member_is("{\"k\\\"ey\":1,\"key\":\"v\\\"\"}", "key", "\"v\\\"\""), "escaped quotes in keys and values");
    CHECK(member_is("{\"a\":1}", "id", NULL), "an absent member is 0");
    size_t a, b;
    CHECK(thorp_json_member("[1]", 3, "id", 2, &a, &b) == -1, "not an object is -1");
    size_t st[2], en[2];
    const char *arr = "[1, {\"a\":[2,3]}, \"x,y\"]";
    int n = thorp_json_elements(arr, strlen(arr), st, en, 2);
    CHECK(n == 3, "elements counts every element, also past max");
    CHECK(st[1] == 4 && en[1] == 15, "element spans are [start, end) byte offsets");
    CHECK(thorp_json_elements("[]", 2, st, en, 2) == 0, "an empty array has no elements");
    CHECK(thorp_json_elements("{}", 2, st, en, 2) == -1, "not an array is -1");
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
