;; Hostile, for tests only: `generate` returns a 1 GiB body (its memory grown to hold it; the test grants the
;; memory so that the body limit, not the memory limit, is what stops it).
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "init") (param i32 i32) (result i32) i32.const 0)
  (func (export "generate") (param i64 i32 i32 i64) (result i32)
    (if (i32.lt_s (memory.grow (i32.const 16384)) (i32.const 0)) (then unreachable))
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 65536))
    (i32.store (i32.const 8) (i32.const 1073741824))
    i32.const 0))
