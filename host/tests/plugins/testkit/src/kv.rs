//! `kv`: one store call, described by the inputs, for the store's tests.
//! `op` is get, set, delete, exists, incr, keys or cas; `bucket` and `key`
//! name the key; `value`, `ttl` (seconds), `by` and `expected` (`-` for
//! absent) are the call's arguments. A refusal is an answer, not a failure:
//! `error` holds the host's message, so a test can read it.

use std::time::Duration;

use optech_sdk::store::{self, StoreError};
use optech_sdk::{Data, Error, Inputs};

pub fn kv(inputs: &Inputs) -> Result<Data, Error> {
    let op = inputs.require("op")?;
    let bucket = inputs.require("bucket")?;
    let key = inputs.get("key").unwrap_or("k");
    match call(op, bucket, key, inputs)? {
        Ok(data) => Ok(data),
        Err(e) => Ok(Data::new().with("error", e.message())),
    }
}

fn call(
    op: &str,
    bucket: &str,
    key: &str,
    inputs: &Inputs,
) -> Result<Result<Data, StoreError>, Error> {
    let value = inputs.get("value").unwrap_or("");
    let ttl: Option<u64> = inputs.parse_opt("ttl")?;
    let by: Option<i64> = inputs.parse_opt("by")?;
    let expected = inputs.get("expected").filter(|e| *e != "-");
    const OPS: [&str; 7] = ["get", "set", "delete", "exists", "incr", "keys", "cas"];
    if !OPS.contains(&op) {
        return Err(Error::invalid_input(format!("no op {op:?}")));
    }
    let run = || -> Result<Data, StoreError> {
        let b = store::open(bucket)?;
        Ok(match op {
            "get" => match b.get(key)? {
                Some(v) => Data::new().with("value", v),
                None => Data::new().with("found", "false"),
            },
            "set" => {
                match ttl {
                    Some(ttl) => b.set_with_ttl(key, value, Duration::from_secs(ttl))?,
                    None => b.set(key, value)?,
                }
                Data::new().with("ok", "true")
            }
            "delete" => {
                b.delete(key)?;
                Data::new().with("ok", "true")
            }
            "exists" => Data::new().with("exists", b.exists(key)?.to_string()),
            "incr" => Data::new().with("value", b.increment(key, by.unwrap_or(1))?),
            "keys" => Data::new().with(
                "keys",
                b.keys(inputs.get("prefix").unwrap_or(""))?.join(","),
            ),
            _ => Data::new().with(
                "swapped",
                b.compare_and_swap(key, expected, value)?.to_string(),
            ),
        })
    };
    Ok(run())
}
