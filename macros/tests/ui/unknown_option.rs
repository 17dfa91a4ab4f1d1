use rpcx_core::service::ServiceError;

#[rpcx_macros::service(name = "Arith")]
trait Arith {
    #[rpcx(rename = "Times")]
    async fn mul(&self, args: i64) -> Result<i64, ServiceError>;
}

fn main() {}
