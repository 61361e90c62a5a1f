//! Text a host or an agent controls (argv, paths, reasons, names), made safe to show a person
//! on any channel: it must read as what it is. Control characters (newlines, tabs, escapes)
//! would let a value fake extra lines or fields ("*Rule*\nread-only") and become visible
//! marks; invisible formatting characters (bidirectional overrides, zero-width characters)
//! would make a value read differently from what runs (a right-to-left override makes `…/txt.jpg` of `…/gpj.txt`) and become U+FFFD.
//! Escaping for the channel's markup (HTML, mrkdwn, Markdown) comes after, in each channel.

/// `s` with control and invisible formatting characters replaced: `\n` → `⏎`, `\t` → space,
/// other controls and [`is_hidden`] characters → `�`.
pub fn shown(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' => '⏎',
            '\t' => ' ',
            c if c.is_control() || is_hidden(c) => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Characters that change how text around them displays without showing themselves
/// (Unicode format characters used for spoofing): bidirectional embeddings, overrides and
/// isolates, zero-width spaces and joiners, word joiners, the byte-order mark, soft hyphen.
pub fn is_hidden(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_cannot_fake_lines_or_read_backwards() {
        assert_eq!(shown("a\nb\tc"), "a⏎b c");
        assert_eq!(shown("rm -rf /\u{202E}gpj.txt"), "rm -rf /\u{FFFD}gpj.txt");
        assert_eq!(shown("x\u{200B}y\u{1b}[2J"), "x\u{FFFD}y\u{FFFD}[2J");
        assert_eq!(shown("/etc/hosts ünïcödé"), "/etc/hosts ünïcödé");
    }
}
