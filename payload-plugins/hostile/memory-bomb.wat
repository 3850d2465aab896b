;; Hostile, for tests only: `generate` grows its memory a page at a time until something stops it.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "init") (param i32 i32) (result i32) i32.const 0)
  (func (export "generate") (param i64 i32 i32 i64) (result i32)
    (loop $more
      (drop (memory.grow (i32.const 16)))
      (br $more))
    i32.const 0))
