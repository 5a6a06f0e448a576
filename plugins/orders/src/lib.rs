//! Answers "order status" from a REST back end: `GET {base_url}/orders/{id}`
//! with a bearer token, and the order's fields as data.
//!
//! Shows a handler calling its own back end: the host lets it reach only the
//! hosts in its `allowed_hosts`, and the token comes from the environment, not
//! the config file.
//!
//! ```toml
//! [plugins.orders]
//! allowed_hosts = ["https://api.example.com"]
//!
//! [plugins.orders.config]
//! base_url = "https://api.example.com"
//! token = { env = "ORDERS_API_TOKEN" }
//! ```

use optech_sdk::{Data, Error, Request, config, http};

fn handle(req: Request) -> Result<Data, Error> {
    let id = req.inputs().require("order_id")?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid_input(format!(
            "`order_id` {id:?} is not an order id"
        )));
    }
    let base = config("base_url").ok_or_else(|| Error::failed("base_url is not set"))?;
    let token = config("token").unwrap_or_default();
    let resp = http::get(&format!("{}/orders/{id}", base.trim_end_matches('/')))
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "application/json")
        .send()?;
    match resp.status() {
        200 => order_data(id, &resp.text()?),
        404 => Err(Error::invalid_input(format!("no order {id}"))),
        s => Err(Error::failed(format!("the orders back end answered {s}"))),
    }
}

/// The order's top-level strings, numbers and booleans, as data.
fn order_data(id: &str, body: &str) -> Result<Data, Error> {
    let order: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::failed(format!("the back end's answer is not JSON: {e}")))?;
    let fields = order
        .as_object()
        .ok_or_else(|| Error::failed("the back end's answer is not a JSON object"))?;
    let mut data = Data::new().with("order_id", id);
    for (name, value) in fields {
        match value {
            serde_json::Value::String(text) => data.insert(name.as_str(), text),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                data.insert(name.as_str(), value)
            }
            _ => {}
        }
    }
    Ok(data)
}

optech_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_becomes_flat_data() {
        let data = order_data(
            "A-17",
            r#"{"status":"shipped","items":3,"paid":true,"lines":[1]}"#,
        )
        .unwrap();
        assert_eq!(data.get("order_id"), Some("A-17"));
        assert_eq!(data.get("status"), Some("shipped"));
        assert_eq!(data.get("items"), Some("3"));
        assert_eq!(data.get("paid"), Some("true"));
        assert_eq!(data.get("lines"), None);
        assert!(order_data("A-17", "not json").is_err());
    }

    #[test]
    fn an_id_that_could_leave_the_orders_path_is_refused() {
        let inputs = optech_sdk::Inputs::from_pairs([("order_id", "../admin")]);
        let err = handle(Request::new("order status", inputs)).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }
}
