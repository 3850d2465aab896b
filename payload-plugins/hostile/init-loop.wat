;; Hostile, for tests only: `init` never returns. plateau must stop it at init's time limit (10 calls' worth), or
;; at once when the run is interrupted, and fail the run before any load is sent.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "init") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    i32.const 0)
  (func (export "generate") (param i64 i32 i32 i64) (result i32) i32.const 0))
