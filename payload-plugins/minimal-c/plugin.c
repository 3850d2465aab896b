// The smallest plugin in C: a freestanding core module that exports the plateau:payload world under the
// canonical ABI by hand (no libc, no wit-bindgen). plateau wraps such a module into a component when it loads it.
//
// Build (Debian: apt-get install clang-14 lld-14):
//   clang-14 --target=wasm32 -O2 -mbulk-memory -nostdlib -Wl,--no-entry -Wl,--export-dynamic \
//       -Wl,--strip-all -o minimal-c.wasm plugin.c
#include <stdint.h>

#define EXPORT(name) __attribute__((export_name(name)))

// A bump allocator is enough: plateau copies results out after each call, and `generate` resets the heap.
extern unsigned char __heap_base;
static uintptr_t heap_top = (uintptr_t)&__heap_base;
static uintptr_t heap_mark;

EXPORT("cabi_realloc")
void *cabi_realloc(void *old, uint32_t old_size, uint32_t align, uint32_t new_size) {
    uintptr_t at = (heap_top + align - 1) & ~(uintptr_t)(align - 1);
    uintptr_t end = at + new_size;
    uintptr_t pages_needed = (end + 65535) / 65536;
    uintptr_t pages_now = __builtin_wasm_memory_size(0);
    if (pages_needed > pages_now && __builtin_wasm_memory_grow(0, pages_needed - pages_now) == (uintptr_t)-1) {
        __builtin_trap();
    }
    unsigned char *to = (unsigned char *)at;
    for (uint32_t i = 0; old && i < old_size && i < new_size; i++) to[i] = ((unsigned char *)old)[i];
    heap_top = end;
    return to;
}

// result<_, string>: tag byte, then the error string (pointer, length) at offset 4.
static uint32_t init_result[3];

EXPORT("init")
uint32_t *init(const char *config, uint32_t config_len) {
    (void)config;
    (void)config_len;
    heap_mark = heap_top;  // Everything allocated so far (the config) stays; later requests reuse the rest.
    init_result[0] = 0;    // ok
    return init_result;
}

// result<request, string>: tag at 0; request at 4: body list (ptr, len), content-type option<string> (tag, ptr,
// len), headers list (ptr, len), path-suffix option<string> (tag, ptr, len): 44 bytes in all.
static uint32_t generate_result[11];

static uint32_t write_decimal(char *to, uint64_t value) {
    char digits[20];
    uint32_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (uint32_t i = 0; i < n; i++) to[i] = digits[n - 1 - i];
    return n;
}

EXPORT("generate")
uint32_t *generate(uint64_t sequence, const char *configuration, uint32_t configuration_len, uint64_t seed) {
    (void)configuration;
    (void)configuration_len;
    heap_top = heap_mark;
    char *body = cabi_realloc(0, 0, 1, 64);
    const char *prefix = "{\"inputs\": [";
    uint32_t len = 0;
    while (prefix[len]) { body[len] = prefix[len]; len++; }
    len += write_decimal(body + len, sequence);
    body[len++] = ',';
    body[len++] = ' ';
    len += write_decimal(body + len, seed % 1000);
    body[len++] = ']';
    body[len++] = '}';
    for (int i = 0; i < 11; i++) generate_result[i] = 0;
    generate_result[1] = (uint32_t)(uintptr_t)body;
    generate_result[2] = len;
    return generate_result;
}
