;; Hostile, for tests only: `generate` never returns. plateau must stop it at payload.limits.call_timeout.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "init") (param i32 i32) (result i32) i32.const 0)
  (func (export "generate") (param i64 i32 i32 i64) (result i32)
    (loop $forever (br $forever))
    i32.const 0))
