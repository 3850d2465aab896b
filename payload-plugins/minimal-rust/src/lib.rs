//! The smallest useful plugin: a JSON body that carries the request's sequence number and a seeded value.

wit_bindgen::generate!({ path: "../wit", world: "batch-generator" });

struct Minimal;

impl Guest for Minimal {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn generate(ctx: Context) -> Result<Request, String> {
        let body = format!("{{\"inputs\": [{}, {}]}}", ctx.sequence, ctx.seed % 1000);
        Ok(Request { body: body.into_bytes(), content_type: None, headers: Vec::new(), path_suffix: None })
    }

    /// Batches save the host's per-call cost; each request is exactly what `generate` makes for its context.
    fn generate_batch(contexts: Vec<Context>) -> Result<Vec<Request>, String> {
        contexts.into_iter().map(Self::generate).collect()
    }
}

export!(Minimal);
