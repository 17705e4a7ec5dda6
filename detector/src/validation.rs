//! Configuration problems: one [`ConfigError`] per wrong key, collected section by section by [`Problems`] so
//! that every detector kind validates its own section and the top-level check reports them all at once.

/// One configuration problem, naming the key path (e.g. `detector.rate.window_packets`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {problem}")]
pub struct ConfigError {
    /// Full key path, e.g. `detector.rate.window_packets`.
    pub key: String,
    /// What is wrong with it, with the value found.
    pub problem: String,
}

/// The problems found in one section (`detector.<section>`), in the order checked.
#[derive(Debug)]
pub struct Problems {
    prefix: String,
    found: Vec<ConfigError>,
}

impl Problems {
    /// Problems of the keys under `detector.<section>`; an empty `section` means the keys of `[detector]`.
    pub fn new(section: &str) -> Self {
        let prefix = if section.is_empty() { "detector.".to_string() } else { format!("detector.{section}.") };
        Self { prefix, found: Vec::new() }
    }

    /// Records `problem` for `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, problem: impl FnOnce() -> String) {
        if !ok {
            self.found.push(ConfigError { key: format!("{}{key}", self.prefix), problem: problem() });
        }
    }

    /// Every problem recorded.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_full_key_in_order() {
        let mut p = Problems::new("rate");
        p.check(true, "cooldown", || unreachable!("not evaluated when the value is fine"));
        p.check(false, "window_packets", || "must be in 2..=100000, got 1".into());
        p.check(false, "threshold_per_sec", || "must be a positive number, got 0".into());
        let text: Vec<String> = p.into_vec().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "detector.rate.window_packets must be in 2..=100000, got 1",
                "detector.rate.threshold_per_sec must be a positive number, got 0"
            ]
        );
        let mut top = Problems::new("");
        top.check(false, "group_id", || "must not be empty".into());
        assert_eq!(top.into_vec()[0].key, "detector.group_id");
    }
}
