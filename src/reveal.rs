//! `netanom reveal`: for an authorised operator holding the key, the alerts of a pseudonymizing producer
//! (`[producer.pseudonymize]`) with the original addresses. Reads JSON lines (an `--alerts-out` file, the alerts
//! topic, a webhook log) from a file or stdin and writes each line back with every address in it — `host`,
//! `target`, the `id`, the `reason` and `sample` texts — replaced by the address it stands for; nothing else in
//! the line changes. The key comes from `--key-file` or, without it, from the configuration, and is never printed.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use netanom_schemas::pseudonym::{Cipher, reveal_text};

use crate::config::Config;

/// `netanom reveal`.
#[derive(Debug, clap::Args)]
pub struct RevealArgs {
    /// File holding the pseudonymization key (64 hexadecimal digits). Default: the configured key
    /// (`producer.pseudonymize.key` or `key_file`, e.g. from `NETANOM_PRODUCER__PSEUDONYMIZE__KEY`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Alerts as JSON lines; `-` or none: standard input.
    pub alerts: Option<PathBuf>,
}

/// Runs `netanom reveal`: every line of the input, revealed, on stdout.
pub fn command(args: &RevealArgs, cfg: &Config) -> anyhow::Result<()> {
    let key = match &args.key_file {
        Some(path) => netanom_producer::pseudonymize::read_key_file(path)?,
        None => cfg.producer.pseudonymize.load_key()?.context(
            "no key: pass --key-file, or set producer.pseudonymize.key_file or producer.pseudonymize.key \
             (NETANOM_PRODUCER__PSEUDONYMIZE__KEY)",
        )?,
    };
    let cipher = Cipher::new(&key);
    let input: Box<dyn BufRead> = match args.alerts.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    reveal_lines(&cipher, input, &mut out)?;
    out.flush().context("cannot write to stdout")
}

/// Writes each JSON line of `input` to `out` with its addresses revealed; blank lines are skipped, a line that is
/// not JSON stops with its number.
fn reveal_lines(cipher: &Cipher, input: impl BufRead, out: &mut impl Write) -> anyhow::Result<()> {
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        serde_json::from_str::<serde::de::IgnoredAny>(&line)
            .with_context(|| format!("line {} is not a JSON alert", n + 1))?;
        // Addresses are written without any character JSON escapes, so they are replaced in the text as it is:
        // key order, numbers and spacing stay exactly as they were.
        writeln!(out, "{}", reveal_text(cipher, &line)).context("cannot write to stdout")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use netanom_schemas::pseudonym::{IpKey, Pseudonymizer, replace_addresses};

    use super::*;

    const KEY: &str = "8f4b7e2a91c3d6057ab2e9f1c4d8a3b6e1f5c9d2a7b4e8f3c6d1a9b5e2f7c4d8";

    #[test]
    fn every_address_of_an_alert_line_is_revealed_and_nothing_else_changes() {
        let key = IpKey::parse(KEY).unwrap();
        let original = r#"{"id":"10.1.2.3-fanout-1718000000","host":"10.1.2.3","kind":"fanout","score":412.0,"target":"2001:db8::5","reason":"10.1.2.3 contacted 412 ports of 10.1.2.9","sample":"TCP 10.1.2.3:51000 -> 10.1.2.9:22 [S]"}"#;
        let mut p = Pseudonymizer::new(&key);
        let published = replace_addresses(original, |a| p.pseudonym(a));
        assert!(!published.contains("10.1.2.3") && !published.contains("2001:db8::5"), "{published}");
        let mut out = Vec::new();
        reveal_lines(&Cipher::new(&key), format!("{published}\n\n{published}\n").as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{original}\n{original}\n"));
        let err = reveal_lines(&Cipher::new(&key), "{}\nnot json\n".as_bytes(), &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
