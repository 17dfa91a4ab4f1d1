use rpcx_core::service::ServiceError;

#[rpcx_macros::service]
trait Arith {
    async fn mul(args: i64) -> Result<i64, ServiceError>;
}

fn main() {}
