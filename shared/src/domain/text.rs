//! Characters that have no place in text people read and compare, such as
//! labels and email addresses: control characters, and Unicode's invisible
//! format characters — bidirectional overrides and isolates, zero-width
//! spaces and joiners, the byte order mark. Text holding one can show as
//! other text (the "Trojan Source" trick, CVE-2021-42574): `xunil` after a
//! right-to-left override (U+202E) reads as `linux`, and `li`, a zero-width
//! space, `nux` looks like `linux` and is not.

/// Whether `c` is a control character or a format character (Unicode's
/// general category Cf, as of Unicode 15.1).
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            u32::from(c),
            0xAD | 0x600..=0x605
                | 0x61C
                | 0x6DD
                | 0x70F
                | 0x890..=0x891
                | 0x8E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x202A..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

#[cfg(test)]
mod tests {
    use super::is_invisible;

    #[test]
    fn controls_and_format_characters_are_invisible_letters_and_symbols_are_not() {
        for c in [
            '\0',
            '\u{1b}',
            '\r',
            '\u{7f}',
            '\u{202e}',
            '\u{2066}',
            '\u{200b}',
            '\u{200d}',
            '\u{feff}',
            '\u{ad}',
            '\u{e0041}',
        ] {
            assert!(is_invisible(c), "{:?}", c);
        }
        for c in [
            'a', 'Z', '7', '-', ' ', '€', 'é', 'ß', '中', '🦀', '\u{2070}',
        ] {
            assert!(!is_invisible(c), "{c:?}");
        }
    }
}
