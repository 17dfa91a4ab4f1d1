#[rpcx_macros::service]
trait Arith {
    async fn mul(&self, args: i64) -> i64;
}

fn main() {}
