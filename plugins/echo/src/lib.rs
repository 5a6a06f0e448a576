//! Answers every request with its inputs, unchanged.
//!
//! External tests rely on this exact behaviour and on the name `echo`.

use optech_sdk::{Data, Error, Request};

fn handle(request: Request) -> Result<Data, Error> {
    Ok(Data::from(request.into_inputs()))
}

optech_sdk::export!(handle);
