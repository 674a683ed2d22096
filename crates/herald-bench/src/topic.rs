//! Topic names, as both the bench and the floor accept them: letters, digits, '.', '_' and
//! '-', so that a name can sit in a URL path and a JSON string without escaping.

pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_only() {
        assert!(is_valid("news.eu-1_a"));
        assert!(!is_valid(""));
        assert!(!is_valid("a/b"));
        assert!(!is_valid("a\"b"));
    }
}
