//! Interactive prompts: `[firma init] <label> [<default>]: `. An empty answer takes the default;
//! an answer the validator rejects is explained and asked again; end of input is an error, so a
//! prompt can never spin.

use std::io::{BufRead, Write};

use crate::error::Hinted;

/// Ask until `validate` accepts an answer.
pub fn ask<T>(
    input: &mut impl BufRead,
    label: &str,
    default: &str,
    validate: impl Fn(&str) -> Result<T, Hinted>,
) -> Result<T, Hinted> {
    loop {
        eprint!("[firma init] {label} [{default}]: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let read = input
            .read_line(&mut line)
            .map_err(|err| Hinted::new(format!("cannot read the answer to {label:?}: {err}")))?;
        if read == 0 {
            eprintln!();
            return Err(
                Hinted::new(format!("input closed while asking for {label}"))
                    .hint("answer the prompts, or pass the values as flags with --yes"),
            );
        }
        let answer = line.trim();
        let answer = if answer.is_empty() { default } else { answer };
        match validate(answer) {
            Ok(value) => return Ok(value),
            Err(err) => {
                eprintln!("  {err}");
                if let Some(hint) = err.hint_text() {
                    eprintln!("  hint: {hint}");
                }
            }
        }
    }
}
