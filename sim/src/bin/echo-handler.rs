//! The benchmark baseline: a `lambda_runtime` function that returns its
//! event unchanged. `cargo bench -p sim --bench runtime_api` compares one
//! invocation of the edge with one of this.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

fn main() -> Result<(), Error> {
    edge::default_lambda_env();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(lambda_runtime::run(service_fn(
            |event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) },
        )))
}
