//! Text that a person reads on a screen: what may not hide in it.

/// Whether `c` would change what a reader sees without being seen itself: a control
/// character, a zero-width character or a direction override.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_found() {
        for c in [
            '\n', '\u{1b}', '\u{200B}', '\u{202E}', '\u{2066}', '\u{FEFF}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', 'é', '€', ' ', '-'] {
            assert!(!is_hidden(c), "{c:?}");
        }
    }
}
