;; Hostile, for tests only: wants a host function plateau never grants (a raw socket). Loading must fail.
(module
  (import "env" "open_socket" (func $open_socket (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 1024)
  (func (export "init") (param i32 i32) (result i32) (drop (call $open_socket (i32.const 80))) i32.const 0)
  (func (export "generate") (param i64 i32 i32 i64) (result i32) i32.const 0))
