//! Prices an order: `quantity` units of `sku` at the unit price from the
//! plugin's config, with an optional bulk discount.
//!
//! Shows the parts of the SDK a real handler uses: required and typed inputs,
//! config values from `optech.toml`, logging, and both kinds of error.
//!
//! ```toml
//! [plugins.quote.config]
//! currency = "EUR"
//! "price.widget" = "2.50"        # unit price per sku
//! bulk_threshold = "100"         # optional: from this quantity on...
//! bulk_discount_percent = "10"   # ...this discount applies
//! ```

use optech_sdk::{Data, Error, Request, config, log};

const MAX_QUANTITY: u32 = 100_000;

fn handle(request: Request) -> Result<Data, Error> {
    let inputs = request.inputs();
    let sku = inputs.require("sku")?.trim();
    let quantity: u32 = inputs.parse("quantity")?;
    if quantity == 0 || quantity > MAX_QUANTITY {
        return Err(Error::invalid_input(format!(
            "input `quantity` must be between 1 and {MAX_QUANTITY}, got {quantity}"
        )));
    }

    // An unknown sku is the caller's mistake; a price that does not parse is ours.
    let price = config(&format!("price.{sku}"))
        .ok_or_else(|| Error::invalid_input(format!("unknown sku `{sku}`")))?;
    let unit_cents = parse_cents(&price).ok_or_else(|| {
        Error::failed(format!("config `price.{sku}` = {price:?} is not a price"))
    })?;
    let currency = config("currency").unwrap_or_else(|| "EUR".to_string());

    let mut discount_percent = 0u64;
    if let (Some(threshold), Some(percent)) =
        (config("bulk_threshold"), config("bulk_discount_percent"))
    {
        let threshold: u32 = threshold
            .parse()
            .map_err(|_| Error::failed("config `bulk_threshold` is not a number"))?;
        let percent: u64 = percent
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| Error::failed("config `bulk_discount_percent` is not 0..=100"))?;
        if quantity >= threshold {
            discount_percent = percent;
        }
    }

    let gross = unit_cents * u64::from(quantity);
    let total = gross - gross * discount_percent / 100;
    log::debug(&format!("quoted {quantity} x {sku} = {total} cents"));

    Ok(Data::new()
        .with("sku", sku)
        .with("quantity", quantity)
        .with("unit_price", format_cents(unit_cents))
        .with("discount_percent", discount_percent)
        .with("total", format_cents(total))
        .with("currency", currency))
}

/// "2.5" -> 250, "3" -> 300; None for anything that is not a plain amount.
fn parse_cents(text: &str) -> Option<u64> {
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() || frac.len() > 2 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac: u64 = format!("{frac:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(frac)
}

fn format_cents(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

optech_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_round_trip() {
        assert_eq!(parse_cents("2.5"), Some(250));
        assert_eq!(parse_cents("3"), Some(300));
        assert_eq!(parse_cents("0.07"), Some(7));
        assert_eq!(parse_cents("1.234"), None);
        assert_eq!(parse_cents("abc"), None);
        assert_eq!(format_cents(1205), "12.05");
    }
}
