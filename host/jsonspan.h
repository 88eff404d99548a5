/* jsonspan: where a member or the elements of a JSON text are, as byte spans.
 *
 * The front door (http.lua) and the RPC pool pass ids, results and errors
 * through byte for byte, so no decode/encode round trip loses a u64 or turns
 * [] into {}: they find the span of what they need and copy it. The text is
 * one a JSON parser has already accepted (a decoded request, a classified
 * answer), so the scanner only tracks strings and nesting. Lua face:
 * lib/thorp/jsonspan.lua.
 *
 *   thorp_json_member(s, len, "id", 2, &a, &b)      1 found, 2 found more than once (a, b:
 *                                                   the last, as decoders keep), 0 absent,
 *                                                   -1 not an object; escaped keys ("\u0069d")
 *                                                   match what they decode to
 *   thorp_json_elements(s, len, starts, ends, max)  element count (spans of the first
 *                                                   max filled), -1 not an array
 * Spans are byte offsets [a, b) into s.
 */
#ifndef THORP_JSONSPAN_H
#define THORP_JSONSPAN_H

#include <stddef.h>

/* ffi:begin */
int thorp_json_member(const char *s, size_t len, const char *key, size_t keylen, size_t *start, size_t *end);
int thorp_json_elements(const char *s, size_t len, size_t *starts, size_t *ends, int max);
/* ffi:end */

#endif
