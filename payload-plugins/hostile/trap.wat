;; Hostile, for tests only: `generate` traps at sequence 200, after 200 good requests.
(module
  (memory (export "memory") 1)
  (data (i32.const 256) "{\"ok\": true}")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "init") (param i32 i32) (result i32) i32.const 0)
  (func (export "generate") (param $sequence i64) (param i32 i32 i64) (result i32)
    (if (i64.ge_u (local.get $sequence) (i64.const 200)) (then unreachable))
    ;; result at 0: tag 0 (ok), body = (256, 12); everything else zero (no options, no headers).
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 256))
    (i32.store (i32.const 8) (i32.const 12))
    i32.const 0))
