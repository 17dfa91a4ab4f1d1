use rpcx_core::service::{Context, ServiceError};

#[rpcx_macros::service]
trait Arith {
    async fn mul(&self, ctx: &Context, a: i64, b: i64) -> Result<i64, ServiceError>;
}

fn main() {}
