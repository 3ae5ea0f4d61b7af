//! Plain-text tables with aligned columns, and escaping of text for the terminal.

/// `text` with control characters (other than newline and tab) and bidirectional
/// overrides written as escapes (`\u{1b}`), so that a hostile manifest id, file name
/// or error message cannot move the cursor, recolour or rewrite the user's terminal.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// One table cell or line: [`escape_controls`], newlines and tabs included.
pub(crate) fn escape_cell(text: &str) -> String {
    escape_controls(text)
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

/// Renders `header` and `rows` as lines of columns separated by two spaces, each padded
/// to its widest cell (the last column is not padded).
pub(crate) fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Vec<String> {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|row| row.each_ref().map(|cell| escape_cell(cell)))
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut lines = vec![line(header)];
    lines.extend(
        rows.iter()
            .map(|row| line(row.each_ref().map(String::as_str))),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("a\x1b[31mb\nc\td"), "a\\u{1b}[31mb\nc\td");
        assert_eq!(escape_controls("x\u{202e}y\u{7f}"), "x\\u{202e}y\\u{7f}");
        assert_eq!(escape_cell("a\nb"), "a\\nb");
        let rows = [["\x1b]0;pwned\x07".to_string()]];
        assert_eq!(render(["ID"], &rows)[1], "\\u{1b}]0;pwned\\u{7}");
    }

    #[test]
    fn columns_are_aligned() {
        let rows = [["a".to_string(), "1".to_string(), "x".to_string()]];
        assert_eq!(
            render(["LONG", "B", "C"], &rows),
            vec!["LONG  B  C", "a     1  x"]
        );
    }
}
