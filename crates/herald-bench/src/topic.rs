//! Topic names as Herald takes them, and the floor with it: `namespace:id`, the namespace 1–32
//! lowercase letters, digits, '_' or '-' starting with a letter, the id 1–128 letters, digits or
//! '.', '_', ':', '-'. Such a name sits in a URL path and a JSON string without escaping.

pub fn is_valid(name: &str) -> bool {
    let Some((ns, id)) = name.split_once(':') else { return false };
    let ns_ok = ns.len() <= 32
        && ns.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    let id_ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ns_ok && id_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_only() {
        assert!(is_valid("news:eu-1_a.b"));
        assert!(!is_valid(""));
        assert!(!is_valid("news"));
        assert!(!is_valid("News:1"));
        assert!(!is_valid("a:b/c"));
        assert!(!is_valid("a:b\"c"));
    }
}
